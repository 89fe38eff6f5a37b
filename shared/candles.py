"""OHLC candles from index ticks, in event time, aligned to the 09:15 IST session start.

A candle of ``timeframe_min`` minutes covers ``[ts_start, ts_start + timeframe)`` where
``ts_start = 09:15 IST of that day + j * timeframe`` (UTC ns). Prices are integer paise. A
candle exists only if at least one tick fell in it: a gap produces no candle, never a copy of
the previous close.

Closing rule (a watermark, as in stream processors): the builder keeps
``watermark = max(ts_event of every message seen) - late_tick_grace_ms``; a candle closes as soon
as ``watermark >= its end``. With the default grace of 0 this is "a candle closes when a tick
or a Clock message with ts_event at or after its end arrives". A grace of g ms holds each
candle open g ms longer so that a slightly out-of-order tick can still land in it.

Late-tick rule: a tick with ``ts_event < watermark`` (older than the newest event time seen by
more than the grace) is ignored and counted in ``late_ticks``. Its candle may have closed
already, and a closed candle is never amended or reopened because signals may have been
derived from it; the rule does not depend on the timeframe, so every timeframe of an index
drops the same ticks. Within the grace, the tick with the smallest ts_event sets the open and
the one with the largest sets the close (ties: first arrival for the open, last arrival for
the close), so a candle does not depend on the arrival order of the ticks it accepted.

Ticks outside the session (before 09:15 or at/after 15:30 IST, configurable) advance the
watermark but build no candle; they are counted in ``outside_session_ticks``.
"""

from __future__ import annotations

import msgspec

from shared.clock import IST_OFFSET_NS, NS_PER_DAY, NS_PER_MIN

SESSION_START_MIN = 9 * 60 + 15
SESSION_END_MIN = 15 * 60 + 30
TIMEFRAMES_MIN = (1, 3, 5, 15)


class Candle(msgspec.Struct, frozen=True, kw_only=True):
    """A closed OHLC candle; ``ts_start`` UTC ns, prices in paise, ``ticks`` = ticks folded in."""

    ts_start: int
    timeframe_min: int
    open_paise: int
    high_paise: int
    low_paise: int
    close_paise: int
    ticks: int = 0

    @property
    def ts_end(self) -> int:
        """End of the candle (exclusive), UTC ns."""
        return self.ts_start + self.timeframe_min * NS_PER_MIN


def candle_start_ns(
    ts_ns: int, timeframe_min: int, session_start_min: int = SESSION_START_MIN
) -> int:
    """Start (UTC ns) of the ``timeframe_min`` candle holding ``ts_ns``, on the 09:15 IST grid."""
    midnight = ts_ns - ((ts_ns + IST_OFFSET_NS) % NS_PER_DAY)
    anchor = midnight + session_start_min * NS_PER_MIN
    tf = timeframe_min * NS_PER_MIN
    return anchor + ((ts_ns - anchor) // tf) * tf


class OpenCandle(msgspec.Struct, kw_only=True):
    """A candle still collecting ticks (mutable)."""

    ts_start: int
    open_paise: int
    high_paise: int
    low_paise: int
    close_paise: int
    ts_first: int
    ts_last: int
    ticks: int = 1

    def add(self, ts_ns: int, price_paise: int) -> None:
        """Fold in one tick."""
        if price_paise > self.high_paise:
            self.high_paise = price_paise
        elif price_paise < self.low_paise:
            self.low_paise = price_paise
        if ts_ns >= self.ts_last:
            self.ts_last = ts_ns
            self.close_paise = price_paise
        elif ts_ns < self.ts_first:
            self.ts_first = ts_ns
            self.open_paise = price_paise
        self.ticks += 1

    def merge(self, ts_first: int, ts_last: int, o: int, h: int, lo: int, c: int, n: int) -> None:
        """Fold in a sub-candle spanning ``[ts_first, ts_last]``."""
        if h > self.high_paise:
            self.high_paise = h
        if lo < self.low_paise:
            self.low_paise = lo
        if ts_last >= self.ts_last:
            self.ts_last = ts_last
            self.close_paise = c
        if ts_first < self.ts_first:
            self.ts_first = ts_first
            self.open_paise = o
        self.ticks += n


class CandleBuilder(msgspec.Struct, kw_only=True):
    """Candles of one timeframe for one instrument; see the module docstring for the rules.

    State only (a msgspec Struct), so it can be checkpointed with ``msgspec.msgpack``.
    """

    timeframe_min: int
    grace_ns: int = 0
    session_start_min: int = SESSION_START_MIN
    session_end_min: int = SESSION_END_MIN
    watermark_ns: int = 0
    open: list[OpenCandle] = msgspec.field(default_factory=list)
    late_ticks: int = 0
    outside_session_ticks: int = 0

    def on_tick(self, ts_ns: int, price_paise: int) -> list[Candle]:
        """Fold one tick in; returns the candles it closed, oldest first (usually none)."""
        tf_ns = self.timeframe_min * NS_PER_MIN
        opened = self.open
        wm = ts_ns - self.grace_ns
        closed: list[Candle] = []
        if wm > self.watermark_ns:
            self.watermark_ns = wm
            if opened and opened[0].ts_start + tf_ns <= wm:
                closed = self._close_until(wm)
        elif ts_ns < self.watermark_ns:
            self.late_ticks += 1
            return closed
        if opened:
            last = opened[-1]
            if last.ts_start <= ts_ns < last.ts_start + tf_ns:
                last.add(ts_ns, price_paise)
                return closed
        mod = ((ts_ns + IST_OFFSET_NS) % NS_PER_DAY) // NS_PER_MIN
        if mod < self.session_start_min or mod >= self.session_end_min:
            self.outside_session_ticks += 1
            return closed
        start = candle_start_ns(ts_ns, self.timeframe_min, self.session_start_min)
        self._open_at(start, ts_ns, ts_ns, price_paise, price_paise, price_paise, price_paise, 1)
        return closed

    def on_candle(self, c: Candle) -> list[Candle]:
        """Fold in a complete historical candle of a timeframe that divides this one (warm-up).

        The candle counts as all its ticks having arrived: afterwards the watermark is at least
        its end, so a candle of this timeframe that it completes is returned closed. A candle
        starting before the watermark (time already seen) is ignored and counted in
        ``late_ticks``.
        """
        start_ns, end_ns = c.ts_start, c.ts_end
        if start_ns < self.watermark_ns:
            self.late_ticks += 1
            return []
        closed = self.advance(start_ns)
        mod = ((start_ns + IST_OFFSET_NS) % NS_PER_DAY) // NS_PER_MIN
        if mod < self.session_start_min or mod >= self.session_end_min:
            self.outside_session_ticks += 1
        else:
            start = candle_start_ns(start_ns, self.timeframe_min, self.session_start_min)
            self._open_at(
                start,
                start_ns,
                end_ns - 1,
                c.open_paise,
                c.high_paise,
                c.low_paise,
                c.close_paise,
                max(c.ticks, 1),
            )
        if end_ns > self.watermark_ns:
            closed.extend(self.advance(end_ns))
        return closed

    def advance(self, watermark_ns: int) -> list[Candle]:
        """Move the watermark forward (never back); returns the candles that closed."""
        if watermark_ns <= self.watermark_ns:
            return []
        self.watermark_ns = watermark_ns
        opened = self.open
        if not opened or opened[0].ts_start + self.timeframe_min * NS_PER_MIN > watermark_ns:
            return []
        return self._close_until(watermark_ns)

    def _close_until(self, watermark_ns: int) -> list[Candle]:
        tf_ns = self.timeframe_min * NS_PER_MIN
        closed: list[Candle] = []
        while self.open and self.open[0].ts_start + tf_ns <= watermark_ns:
            o = self.open.pop(0)
            closed.append(
                Candle(
                    ts_start=o.ts_start,
                    timeframe_min=self.timeframe_min,
                    open_paise=o.open_paise,
                    high_paise=o.high_paise,
                    low_paise=o.low_paise,
                    close_paise=o.close_paise,
                    ticks=o.ticks,
                )
            )
        return closed

    def _find(self, start: int) -> OpenCandle | None:
        for o in self.open:
            if o.ts_start == start:
                return o
        return None

    def _open_at(
        self, start: int, ts_first: int, ts_last: int, o: int, h: int, lo: int, c: int, n: int
    ) -> None:
        existing = self._find(start)
        if existing is not None:
            existing.merge(ts_first, ts_last, o, h, lo, c, n)
            return
        oc = OpenCandle(
            ts_start=start,
            open_paise=o,
            high_paise=h,
            low_paise=lo,
            close_paise=c,
            ts_first=ts_first,
            ts_last=ts_last,
            ticks=n,
        )
        i = len(self.open)
        while i > 0 and self.open[i - 1].ts_start > start:
            i -= 1
        self.open.insert(i, oc)
