"""DhanHQ's REST rate limits (reference §4.4), enforced in wall time with sliding windows.

A request over any window of its category answers HTTP 429 / DH-904 and is not counted
against the windows. :attr:`RateLimiter.allowed` and :attr:`RateLimiter.refused` count requests
per category (also with limits off), for ``GET /__sim/state``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from .decisions import OPTION_CHAIN_RATE_WINDOW_S

LIMITS: dict[str, tuple[tuple[float, int], ...]] = {
    # category: ((window_s, max requests), ...)
    "order": ((1.0, 10), (60.0, 250), (3600.0, 1000), (86_400.0, 7000)),
    "data": ((1.0, 5), (86_400.0, 100_000)),
    "quote": ((1.0, 1),),
    "optionchain": ((OPTION_CHAIN_RATE_WINDOW_S, 1),),
    "nontrading": ((1.0, 20),),
}
"""Order APIs 10/s (release v2.3), 250/min, 1000/h, 7000/day; Data APIs (charts) 5/s and
100 000/day; Quote APIs 1/s; option chain 1 per 3 s; everything else 20/s."""


def category(method: str, path: str) -> str:
    """The rate-limit category of a ``/v2`` request."""
    if path.startswith("/v2/orders") and method in ("POST", "PUT", "DELETE"):
        return "order"
    if path.startswith("/v2/marketfeed/"):
        return "quote"
    if path == "/v2/optionchain":
        return "optionchain"
    if path.startswith("/v2/charts/"):
        return "data"
    return "nontrading"


class RateLimiter:
    def __init__(self, *, enabled: bool = True, now_s: Callable[[], float] = time.monotonic):
        self.enabled = enabled
        self._now_s = now_s
        self._hits: dict[str, deque[float]] = {name: deque() for name in LIMITS}
        self.allowed: dict[str, int] = dict.fromkeys(LIMITS, 0)
        self.refused: dict[str, int] = dict.fromkeys(LIMITS, 0)

    def allow(self, name: str) -> bool:
        """Record a request of category ``name``; False (not recorded) when over a limit."""
        if not self._allow(name):
            self.refused[name] += 1
            return False
        self.allowed[name] += 1
        return True

    def _allow(self, name: str) -> bool:
        if not self.enabled:
            return True
        now = self._now_s()
        hits = self._hits[name]
        windows = LIMITS[name]
        longest = max(w for w, _ in windows)
        while hits and hits[0] <= now - longest:
            hits.popleft()
        for window_s, limit in windows:
            if window_s == longest:
                count = len(hits)
            else:
                count = 0
                for t in reversed(hits):  # newest first: stop at the window's edge
                    if t <= now - window_s:
                        break
                    count += 1
            if count >= limit:
                return False
        hits.append(now)
        return True
