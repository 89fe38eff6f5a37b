"""The session clock: which recorded ticks have "happened" and what the simulated time is.

Ticks are released in file order (``ts_recv_ns``). Releasing tick ``i`` calls every listener
with ``i``, synchronously, in registration order (market state, then order matching, then the
feed), so a REST request always sees one consistent instant.

Speeds:

- ``N > 0`` — N× real time: simulated time runs at N ns per wall ns from the first tick; a driver
  task releases ticks as their time comes, and every REST request first catches up
  (:meth:`SessionClock.sync`), so an order that arrives at simulated time *t* sees exactly the
  ticks with ``ts <= t``;
- ``inf`` (``max``) — as fast as the feed consumers read: the driver releases ticks while at
  least one feed connection has a subscription, in batches of at most ``MAX_BATCH_TICKS``
  ticks and :data:`dhansim.feed.MAX_UNACKED_PACKETS` packets per connection; after a batch it
  waits until every connection has sent its packets and answered a ping (the pong proves the
  client's WebSocket library has read everything before it — kernel buffers alone would let
  the clock run thousands of packets ahead). With no subscribed consumer the clock stands still;
- ``0`` (paused) — only :meth:`SessionClock.advance` (``POST /__sim/advance``) moves it.

Simulated "now" is the continuous N× time in timed mode (clamped to the last tick once the
file is exhausted) and the time of the last released tick otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from shared.clock import NS_PER_S

log = logging.getLogger("dhansim.clock")

SPEED_MAX = math.inf
SPEED_PAUSED = 0.0
MAX_BATCH_TICKS = 256
"""In ``max`` mode, ticks released between two checks of the consumers' backlog."""
MAX_IDLE_WAIT_S = 0.5


class Backpressure(Protocol):
    """What the ``max`` speed waits on: the feed's consumers."""

    def active(self) -> bool:
        """True when at least one feed connection has a subscription."""
        ...

    def backlogged(self) -> bool:
        """True when some connection has packets the client has not yet been seen to read."""
        ...

    def saturated(self) -> bool:
        """True when some connection has a full batch of unacknowledged packets."""
        ...

    async def drained(self) -> None:
        """Return once every connection has sent its packets and the client read them."""
        ...


def parse_speed(text: str | float | int) -> float:
    """``"max"`` → inf, ``"paused"``/0 → 0, otherwise a positive multiple of real time."""
    if isinstance(text, str):
        lowered = text.strip().lower()
        if lowered == "max":
            return SPEED_MAX
        if lowered in ("paused", "pause"):
            return SPEED_PAUSED
        text = float(lowered)
    speed = float(text)
    if math.isnan(speed) or speed < 0:
        raise ValueError(f"speed must be 'max', 'paused' or a number >= 0, got {text!r}")
    return speed


def speed_label(speed: float) -> str | float:
    if speed == SPEED_MAX:
        return "max"
    if speed == SPEED_PAUSED:
        return "paused"
    return speed


class SessionClock:
    """Releases the recorded ticks (their ``ts_recv_ns`` list) at the configured speed."""

    def __init__(
        self,
        ts_ns: list[int],
        speed: float,
        *,
        wall_s: Callable[[], float] = time.monotonic,
    ) -> None:
        if not ts_ns:
            raise ValueError("the session has no ticks")
        self.ts_ns = ts_ns
        self.n = len(ts_ns)
        self.cursor = 0
        """Number of ticks released; tick ``cursor`` is the next one."""
        self._listeners: list[Callable[[int], None]] = []
        self._wall_s = wall_s
        self._speed = speed
        self._anchor_sim_ns = ts_ns[0]
        self._anchor_wall_s = wall_s()
        self._wake = asyncio.Event()
        self.backpressure: Backpressure | None = None
        self._stopped = False

    # -------------------------------------------------------------------- reading

    @property
    def speed(self) -> float:
        return self._speed

    @property
    def finished(self) -> bool:
        return self.cursor >= self.n

    def now_ns(self) -> int:
        """The current simulated time, UTC ns."""
        last = self.ts_ns[self.cursor - 1] if self.cursor else self.ts_ns[0]
        if self._timed():
            elapsed_s = self._wall_s() - self._anchor_wall_s
            now = self._anchor_sim_ns + int(elapsed_s * self._speed * NS_PER_S)
            if self.finished:
                now = min(now, self.ts_ns[-1])
            return max(now, last)
        return last

    def _timed(self) -> bool:
        return 0 < self._speed < SPEED_MAX

    # -------------------------------------------------------------------- moving

    def add_listener(self, fn: Callable[[int], None]) -> None:
        self._listeners.append(fn)

    def _release_one(self) -> None:
        i = self.cursor
        self.cursor = i + 1
        for fn in self._listeners:
            fn(i)

    def release_until(self, ts_ns: int) -> int:
        """Release every tick with ``ts <= ts_ns``; return how many."""
        start = self.cursor
        while self.cursor < self.n and self.ts_ns[self.cursor] <= ts_ns:
            self._release_one()
        return self.cursor - start

    def sync(self) -> None:
        """In timed mode, release the ticks whose time has come (called before each request)."""
        if self._timed():
            self.release_until(self.now_ns())

    def advance(
        self, *, ticks: int | None = None, seconds: float | None = None, until_ns: int | None = None
    ) -> int:
        """Move the clock forward by a tick count, simulated seconds or to an instant.

        Returns how many ticks were released. The timed mode continues from the new time.
        """
        self.sync()
        start = self.cursor
        if ticks is not None:
            for _ in range(max(0, ticks)):
                if self.finished:
                    break
                self._release_one()
            target = self.ts_ns[self.cursor - 1] if self.cursor else self.ts_ns[0]
        else:
            if until_ns is None:
                until_ns = self.now_ns() + int((seconds or 0.0) * NS_PER_S)
            self.release_until(until_ns)
            target = until_ns
        self._reanchor(max(target, self.now_ns()))
        self._wake.set()
        return self.cursor - start

    def set_speed(self, speed: float) -> None:
        now = self.now_ns()
        self._speed = speed
        self._reanchor(now)
        self._wake.set()

    def _reanchor(self, sim_ns: int) -> None:
        self._anchor_sim_ns = sim_ns
        self._anchor_wall_s = self._wall_s()

    def stop(self) -> None:
        """End :meth:`run` at its next wake-up."""
        self._stopped = True
        self._wake.set()

    def poke(self) -> None:
        """Wake the driver (a consumer subscribed or drained)."""
        self._wake.set()

    # -------------------------------------------------------------------- driver

    async def run(self) -> None:
        """The driver task: releases ticks according to the speed until :meth:`stop`."""
        while not self._stopped:
            if self.finished or self._speed == SPEED_PAUSED:
                await self._sleep(None)
            elif self._speed == SPEED_MAX:
                await self._run_max_step()
            else:
                self.sync()
                if self.finished:
                    continue
                wait_s = (self.ts_ns[self.cursor] - self.now_ns()) / NS_PER_S / self._speed
                await self._sleep(max(0.0, wait_s))

    async def _run_max_step(self) -> None:
        bp = self.backpressure
        if bp is None or not bp.active():
            await self._sleep(None)
            return
        if bp.backlogged():
            await _race(bp.drained(), self._wake)
            return
        released = 0
        while released < MAX_BATCH_TICKS and not self.finished and not bp.saturated():
            self._release_one()
            released += 1
        await asyncio.sleep(0)  # let REST requests and sockets run between batches

    async def _sleep(self, timeout_s: float | None) -> None:
        cap = MAX_IDLE_WAIT_S if timeout_s is None else min(timeout_s, MAX_IDLE_WAIT_S)
        self._wake.clear()
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that
        # arrives as the event fires, and this loop would then never stop.
        try:
            async with asyncio.timeout(cap):
                await self._wake.wait()
        except TimeoutError:
            pass


async def _race(awaitable: Awaitable[None], event: asyncio.Event) -> None:
    """Wait for ``awaitable`` or ``event`` (a control change), whichever comes first."""
    event.clear()
    tasks = [asyncio.ensure_future(awaitable), asyncio.ensure_future(event.wait())]
    try:
        await asyncio.wait(tasks, timeout=MAX_IDLE_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
