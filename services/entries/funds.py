"""Live mode: the broker's available balance, fetched between signals so a signal seldom waits.

Only entry orders lower the available balance (exits sell what was bought and release it), and
every entry order is this service's own intent. So a balance fetched after the last intent is
current, and one fetched before it may be too high. The rules, on a monotonic clock:

- a balance is used by a signal when it was fetched (the call *started*) at most ``max_age_s``
  ago and after the last intent was sent; otherwise the signal fetches it on its path, as
  before (after its upstream gate, so the executor has settled the earlier order by then);
- between signals a balance is fetched when the one held is older than half of ``max_age_s``,
  but not within ``max_age_s`` of an intent: the order may not be filled yet, and a balance read
  before its fill would be too high;
- ``max_age_s`` 0 turns the cache off (every signal fetches).
"""

from __future__ import annotations

from collections.abc import Callable


class FundsCache:
    def __init__(self, max_age_s: float, now_s: Callable[[], float]) -> None:
        self.max_age_s = max_age_s
        self._now = now_s
        self._value: int | None = None
        self._started = float("-inf")
        self._intent_at = float("-inf")

    def usable(self) -> int | None:
        """The balance in paise a signal may use now, or None (fetch it)."""
        if self._value is None or self.max_age_s <= 0:
            return None
        if self._now() - self._started > self.max_age_s or self._started < self._intent_at:
            return None
        return self._value

    def due(self) -> bool:
        """Should the idle loop fetch a balance now?"""
        if self.max_age_s <= 0:
            return False
        now = self._now()
        if now - self._intent_at < self.max_age_s:
            return False
        return self._value is None or now - self._started >= self.max_age_s / 2

    def started(self) -> float:
        """Stamp for a fetch about to start; pass it to :meth:`store`."""
        return self._now()

    def store(self, balance_paise: int, started: float) -> None:
        """Keep a fetched balance, unless an intent was sent after its call started."""
        if started >= self._intent_at and started >= self._started:
            self._value, self._started = balance_paise, started

    def intent_sent(self) -> None:
        self._intent_at = self._now()
