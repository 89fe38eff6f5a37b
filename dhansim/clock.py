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
- ``R/s`` (e.g. ``"2000/s"``, a :class:`TicksPerSecond`) — a steady load rather than a speed:
  the ticks some feed connection is subscribed to are released at R per wall second, evenly
  spaced (the k-th at ``start + k / R``), whatever their timestamps; ticks nobody subscribed to
  are released on the way, unpaced. The pace starts when the first consumer subscribes and
  starts again after every change of speed, ``advance`` or spell without subscribers. It does
  not wait for slow consumers (a load generator, not a replay), and when the simulator itself
  falls more than ``PACE_MAX_DEBT_S`` behind it drops the debt (the pace starts again from
  now) rather than catch up in a burst. Its progress — how far releases fell behind, the
  restarts (the latest with its wall time), the feed's queue — is logged every
  ``PACE_LOG_INTERVAL_S``, and each start with its wall time;
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
PACE_LOG_INTERVAL_S = 5.0
"""``R/s`` pace: how often the pace's progress is logged."""
PACE_MAX_DEBT_S = 0.1
"""``R/s`` pace: how far behind its schedule the release may fall before the pace restarts."""


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

    def wanted(self, i: int) -> bool:
        """True when tick ``i`` would be sent on at least one connection (``R/s`` pace)."""
        ...

    def queued(self) -> int:
        """Packets queued on every connection and not yet sent (``R/s`` pace, logged)."""
        ...


class TicksPerSecond(float):
    """A pace, not a speed: release the subscribed ticks at this many per wall second."""


def pace_due(elapsed_s: float, rate_per_s: float) -> int:
    """How many paced ticks are due ``elapsed_s`` after the pace started: the k-th (k = 0, 1, …)
    is due at ``k / rate_per_s``, so one at 0 s and ``floor(elapsed_s * rate_per_s) + 1`` after."""
    if elapsed_s < 0:
        return 0
    # The epsilon keeps an exact multiple (0.5 ms at 2000/s) from flooring to one less.
    return math.floor(elapsed_s * rate_per_s + 1e-9) + 1


def parse_speed(text: str | float | int) -> float:
    """``"max"`` → inf, ``"paused"``/0 → 0, ``"R/s"`` → a :class:`TicksPerSecond` pace,
    otherwise a positive multiple of real time."""
    if isinstance(text, TicksPerSecond):
        return text
    if isinstance(text, str):
        lowered = text.strip().lower()
        if lowered == "max":
            return SPEED_MAX
        if lowered in ("paused", "pause"):
            return SPEED_PAUSED
        if lowered.endswith("/s"):
            rate = float(lowered[:-2])
            if not (math.isfinite(rate) and rate > 0):
                raise ValueError(
                    f"a pace must be a finite number > 0 of ticks per second: {text!r}"
                )
            return TicksPerSecond(rate)
        text = float(lowered)
    speed = float(text)
    if math.isnan(speed) or speed < 0:
        raise ValueError(f"speed must be 'max', 'paused' or a number >= 0, got {text!r}")
    return speed


def speed_label(speed: float) -> str | float:
    if isinstance(speed, TicksPerSecond):
        return f"{float(speed):g}/s"
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
        self._pace_start_s: float | None = None
        """``R/s`` pace: wall time the pace (re)started; None until a consumer subscribes."""
        self._paced = 0
        """``R/s`` pace: subscribed ticks released since the pace started."""
        self._pace_log = _PaceLog()

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
        return 0 < self._speed < SPEED_MAX and not self._is_paced()

    def _is_paced(self) -> bool:
        return isinstance(self._speed, TicksPerSecond)

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
        """In timed mode, release the ticks whose time has come; under a pace, the ticks due by
        now (called before each request)."""
        if self._timed():
            self.release_until(self.now_ns())
        elif self._is_paced():
            self._release_paced_due()

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
        self._pace_start_s = None

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
            elif self._is_paced():
                await self._run_paced_step()
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

    def _release_paced_due(self) -> None:
        """Release the paced ticks due by now, and the unsubscribed ticks before them."""
        if self._pace_start_s is None:
            return
        now_s = self._wall_s()
        rate = float(self._speed)
        due = pace_due(now_s - self._pace_start_s, rate)
        if due - self._paced > rate * PACE_MAX_DEBT_S:  # fell behind: no burst, start again
            self._pace_start_s = now_s - self._paced / rate
            due = self._paced + 1
            self._pace_log.restarted(self._paced)
        bp = self.backpressure
        while self._paced < due and not self.finished:
            wanted = bp is None or bp.wanted(self.cursor)
            if wanted:
                # How late this release is against its schedule (logged, see _PaceLog).
                self._pace_log.late(now_s - (self._pace_start_s + self._paced / rate))
                self._paced += 1
            else:
                self._pace_log.unpaced += 1
            self._release_one()

    async def _run_paced_step(self) -> None:
        bp = self.backpressure
        if bp is not None and not bp.active():
            self._pace_start_s = None  # the pace (re)starts with the next subscriber
            await self._sleep(None)
            return
        rate = float(self._speed)
        if self._pace_start_s is None:
            self._pace_start_s = self._wall_s()
            self._paced = 0
            self._pace_log.start(self.cursor, rate, self._pace_start_s)
        self._release_paced_due()
        self._pace_log.maybe_log(self._paced, bp.queued() if bp is not None else 0, self._wall_s())
        next_due_s = self._pace_start_s + self._paced / rate
        await self._sleep(max(0.0, next_due_s - self._wall_s()))

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


class _PaceLog:
    """Progress of an ``R/s`` pace, logged every ``PACE_LOG_INTERVAL_S`` of wall time."""

    def __init__(self) -> None:
        self.unpaced = 0
        self._late_max_s = 0.0
        self._last_s = 0.0
        self._last_paced = 0
        self._restarts = 0
        self._last_restart = (0, 0)  # (paced tick, wall UTC ns) of the latest restart

    def start(self, cursor: int, rate_per_s: float, now_s: float) -> None:
        self.unpaced, self._late_max_s, self._restarts = 0, 0.0, 0
        self._last_s, self._last_paced = now_s, 0
        log.info(
            "pace started at tick %d: %g subscribed ticks per second (wall %d ns)",
            cursor, rate_per_s, time.time_ns(),
        )  # fmt: skip

    def restarted(self, paced: int) -> None:
        """The pace fell behind and starts again from now, at subscribed tick ``paced``."""
        self._restarts += 1
        self._last_restart = (paced, time.time_ns())

    def late(self, behind_s: float) -> None:
        self._late_max_s = max(self._late_max_s, behind_s)

    def maybe_log(self, paced: int, queued: int, now: float) -> None:
        if now - self._last_s < PACE_LOG_INTERVAL_S:
            return
        log.info(
            "pace: %d subscribed ticks in %.1f s (%.0f/s), %d unsubscribed; releases at most "
            "%.1f ms behind schedule; %d packets queued for the feed; %d restarts (the last at "
            "subscribed tick %d, wall %d ns)",
            paced - self._last_paced, now - self._last_s,
            (paced - self._last_paced) / (now - self._last_s), self.unpaced,
            self._late_max_s * 1000, queued, self._restarts, *self._last_restart,
        )  # fmt: skip
        self._last_s, self._last_paced = now, paced
        self.unpaced, self._late_max_s, self._restarts = 0, 0.0, 0


async def _race(awaitable: Awaitable[None], event: asyncio.Event) -> None:
    """Wait for ``awaitable`` or ``event`` (a control change), whichever comes first."""
    event.clear()
    tasks = [asyncio.ensure_future(awaitable), asyncio.ensure_future(event.wait())]
    try:
        await asyncio.wait(tasks, timeout=MAX_IDLE_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
