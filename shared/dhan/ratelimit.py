"""Client-side DhanHQ rate limits: multi-window token buckets over an injected clock and sleep.

Every documented limit (``reference/dhanhq-api.md`` §3.10, §3.11, §4.4) is a :class:`Window`;
a :class:`Limiter` holds the windows of one API class and :meth:`Limiter.acquire` waits until
*all* of them have a token, then takes one from each. :data:`DHAN_LIMITS` is the table of
windows per bucket; :class:`DhanLimits` holds one limiter per bucket.

Each sub-day window is a bucket of ``limit`` tokens in which a token taken at ``t`` comes back
at exactly ``t + period`` (a sliding-window log). That is the strictest reading: it never lets
more than ``limit`` requests into *any* interval of length ``period``, so it stays within the
broker's limit whether the broker counts fixed or sliding windows. A classic refill-at-a-rate
bucket of capacity ``limit`` would let close to ``2 * limit`` through in one period.

Daily windows: see :data:`DAILY_LIMIT_RESETS_AT_IST_MIDNIGHT`.

Time comes from ``clock.now_ns()`` (UTC ns) and waiting goes through ``sleep(seconds)``, so tests
use :class:`shared.clock.FakeClock` and a sleep that advances it: pure and instant.

The broker counts per account, these buckets per process: if several processes call DhanHQ with
one account, hand each a reduced table (``DhanLimits(windows=...)``) so the sum stays within.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final

import msgspec

from shared.clock import NS_PER_DAY, Clock, ist_midnight_ns
from shared.types import NS_PER_S

Sleep = Callable[[float], Awaitable[None]]
"""``await sleep(seconds)``; :func:`asyncio.sleep` in production."""

DAILY_LIMIT_RESETS_AT_IST_MIDNIGHT: Final = True
"""UNCONFIRMED: how DhanHQ counts "per day" (§4.4 gives only the numbers).

Chosen: a fixed window per IST calendar day (00:00 IST to 00:00 IST). A rolling 24 h window would
be stricter, but after a busy afternoon it would block the next morning's session, which a
per-day quota almost certainly does not. Set ``False`` to count a rolling 24 h instead.
"""

# Bucket names: one per API class in §4.4, plus the option chain's own limit (§3.11).
ORDER: Final = "order"
QUOTE: Final = "quote"
DATA: Final = "data"
NON_TRADING: Final = "non_trading"
OPTION_CHAIN: Final = "option_chain"


class Window(msgspec.Struct, frozen=True):
    """At most ``limit`` requests per ``period_s`` seconds; ``daily`` marks a per-day quota."""

    limit: int
    period_s: int
    daily: bool = False

    @classmethod
    def per_day(cls, limit: int) -> Window:
        return cls(limit, 86_400, daily=True)


DHAN_LIMITS: Final[Mapping[str, tuple[Window, ...]]] = {
    # Order APIs (place / modify / cancel): 10/s per release v2.3 (§8 item 10), 250/min,
    # 1000/h, 7000/day.
    ORDER: (Window(10, 1), Window(250, 60), Window(1000, 3600), Window.per_day(7000)),
    # Market quote snapshots (/marketfeed/*): 1/s.
    QUOTE: (Window(1, 1),),
    # Data APIs (charts, option chain): 5/s, 100000/day.
    DATA: (Window(5, 1), Window.per_day(100_000)),
    # Everything else (order book, trades, positions, funds, profile): 20/s.
    NON_TRADING: (Window(20, 1),),
    # Option chain and its expiry list: one request per 3 s, shared by all underlyings
    # (the "per unique request" reading of §3.11 is UNCONFIRMED; the shared one is stricter).
    OPTION_CHAIN: (Window(1, 3),),
}
"""The documented limits, per bucket. Which endpoint draws on which bucket is in ``rest.py``."""


class _Sliding:
    """The last ``limit`` take times; the oldest decides when the next token is free."""

    def __init__(self, limit: int, period_ns: int) -> None:
        self.period_ns = period_ns
        self.taken: deque[int] = deque(maxlen=limit)

    def wait_ns(self, now_ns: int) -> int:
        if len(self.taken) < (self.taken.maxlen or 0):
            return 0
        return max(0, self.taken[0] + self.period_ns - now_ns)

    def take(self, now_ns: int) -> None:
        self.taken.append(now_ns)


class _IstDay:
    """A counter that resets at every IST midnight."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.day_start_ns = 0
        self.count = 0

    def _roll(self, now_ns: int) -> None:
        start = ist_midnight_ns(now_ns)
        if start != self.day_start_ns:
            self.day_start_ns = start
            self.count = 0

    def wait_ns(self, now_ns: int) -> int:
        self._roll(now_ns)
        if self.count < self.limit:
            return 0
        return self.day_start_ns + NS_PER_DAY - now_ns

    def take(self, now_ns: int) -> None:
        self._roll(now_ns)
        self.count += 1


def _state(window: Window) -> _Sliding | _IstDay:
    if window.limit < 1 or window.period_s < 1:
        raise ValueError(f"rate window needs limit >= 1 and period_s >= 1, got {window}")
    if window.daily and DAILY_LIMIT_RESETS_AT_IST_MIDNIGHT:
        return _IstDay(window.limit)
    return _Sliding(window.limit, window.period_s * NS_PER_S)


class Limiter:
    """One bucket: several windows that must all allow a request before it goes out."""

    def __init__(self, name: str, windows: Sequence[Window], *, clock: Clock, sleep: Sleep) -> None:
        self.name = name
        self.windows = tuple(windows)
        self._states = [_state(w) for w in self.windows]
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()

    def delay_s(self) -> float:
        """Seconds until every window has a token (0.0 when one could be taken now)."""
        return self._wait_ns(self._clock.now_ns()) / NS_PER_S

    def try_acquire(self) -> bool:
        """Take a token from every window if all have one now; never waits."""
        now = self._clock.now_ns()
        if self._wait_ns(now) > 0:
            return False
        self._take(now)
        return True

    async def acquire(self) -> float:
        """Wait until every window allows, take a token from each; return the seconds waited.

        Waiters are served one at a time in arrival order (the lock is FIFO).
        """
        start = self._clock.now_ns()
        async with self._lock:
            while True:
                now = self._clock.now_ns()
                wait = self._wait_ns(now)
                if wait <= 0:
                    break
                await self._sleep(wait / NS_PER_S)
            self._take(now)
        return max(0, now - start) / NS_PER_S

    def _wait_ns(self, now_ns: int) -> int:
        return max(s.wait_ns(now_ns) for s in self._states)

    def _take(self, now_ns: int) -> None:
        for s in self._states:
            s.take(now_ns)


class DhanLimits:
    """One :class:`Limiter` per bucket of ``windows`` (default :data:`DHAN_LIMITS`)."""

    def __init__(
        self,
        *,
        clock: Clock,
        sleep: Sleep,
        windows: Mapping[str, Sequence[Window]] = DHAN_LIMITS,
    ) -> None:
        self.limiters = {
            name: Limiter(name, ws, clock=clock, sleep=sleep) for name, ws in windows.items()
        }

    def __getitem__(self, bucket: str) -> Limiter:
        return self.limiters[bucket]

    async def acquire(self, *buckets: str) -> float:
        """Acquire from each named bucket in turn; return the total seconds waited."""
        waited = 0.0
        for bucket in buckets:
            waited += await self.limiters[bucket].acquire()
        return waited
