"""Live mode: LTPs fetched over REST, reused by the signals that follow while they are current.

DhanHQ allows one quote request a second for the account. A signal whose picks have no fresh
tick fetches their LTP over REST; without this cache a burst of such signals (a stream of
signals queued at the start of the day, before the option window's ticks flow) paid one second
each. A fetched LTP is held as if it were a tick at the event time of the signal that fetched it,
so a later signal uses it under the same rule as a tick: at most ``entries.ltp_max_age_ms`` older
than the signal (event time), never from the signal's future.
"""

from __future__ import annotations

from shared.types import NS_PER_MS


class RestLtpCache:
    def __init__(self, max_age_ms: int) -> None:
        self.max_age_ns = max_age_ms * NS_PER_MS
        self._held: dict[int, tuple[int, int]] = {}  # security id -> (LTP paise, ts_event)

    def split(self, wanted: list[int], ts_event: int) -> tuple[dict[int, int], list[int]]:
        """(LTPs held and current for a signal at ``ts_event``, the security ids still to fetch)."""
        have: dict[int, int] = {}
        missing: list[int] = []
        for sid in wanted:
            held = self._held.get(sid)
            if held is not None and 0 <= ts_event - held[1] <= self.max_age_ns:
                have[sid] = held[0]
            else:
                missing.append(sid)
        return have, missing

    def store(self, ltps: dict[int, int], ts_event: int) -> None:
        for sid, paise in ltps.items():
            if paise > 0:
                self._held[sid] = (paise, ts_event)
