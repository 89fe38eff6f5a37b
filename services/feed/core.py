"""Pure feed logic: deterministic tick ids, tick messages from recorded rows, event-time clock.

Tick ids are assigned by the feed, not by Redis: ``<ms>-<seq>`` from the tick's receive time, so
a replay of the same session always yields the same ids, and every downstream ``msg_id`` derived
from them is the same too. Clock messages are interleaved at every ``interval_ms`` boundary of
event time, so time rules (candle close, square-off) fire even when no tick arrives.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from shared.messages import Clock, Message, SessionEnd, Tick, make_msg_id
from shared.sessionfile import SESSION_SCHEMA
from shared.types import round_to_tick

NS_PER_MS = 1_000_000
DEFAULT_TICK_PAISE = 5


class TickIdAllocator:
    """Monotonic stream ids from event times: same ms -> next sequence number."""

    def __init__(self) -> None:
        self.last_ms = 0
        self.seq = -1

    def next_id(self, ts_ns: int) -> str:
        ms = ts_ns // NS_PER_MS
        if ms > self.last_ms:
            self.last_ms, self.seq = ms, 0
        else:
            self.seq += 1
        return f"{self.last_ms}-{self.seq}"


class Recorded:
    """A recorded session (see ``shared.sessionfile`` for the schema), iterated in row chunks.

    Built from a polars frame (``load_session``) it converts ``CHUNK_ROWS`` rows at a time to
    Python values, so a whole day is never held as Python objects (a 276k-tick day as lists
    took ~200 MB of the feed's RSS); built from column lists (tests), it is one chunk.
    """

    COLUMNS = tuple(SESSION_SCHEMA)
    CHUNK_ROWS = 20_000

    def __init__(self, columns: dict[str, list[Any]] | None, trading_day: str, *, frame: Any = None) -> None:
        names = frame.columns if frame is not None else list(columns or {})
        missing = [c for c in self.COLUMNS if c not in names]
        if missing:
            raise ValueError(f"recorded session lacks columns: {', '.join(missing)}")
        self._columns = columns
        self._frame = frame
        self.n = frame.height if frame is not None else len(columns["ts_recv_ns"])  # type: ignore[index]
        self.trading_day = trading_day

    @property
    def c(self) -> dict[str, list[Any]]:
        """Every column as one Python list (the whole session in memory: tools and tests)."""
        if self._columns is None:
            self._columns = {c: self._frame[c].to_list() for c in self.COLUMNS}
        return self._columns

    def chunks(self) -> Iterator[dict[str, list[Any]]]:
        """The columns as Python lists, ``CHUNK_ROWS`` rows at a time, in row order."""
        if self._frame is None:
            yield self.c
            return
        for start in range(0, self.n, self.CHUNK_ROWS):
            part = self._frame.slice(start, self.CHUNK_ROWS)
            yield {c: part[c].to_list() for c in self.COLUMNS}


def session_messages(
    rec: Recorded,
    now_ns: Callable[[], int],
    *,
    clock_interval_ms: int = 1000,
    tick_paise: Callable[[str, int], int] | None = None,
    ids: TickIdAllocator | None = None,
) -> Iterator[tuple[str, Message]]:
    """Yield ``(tick_id, message)`` for a whole recorded session, in order, ending with SessionEnd.

    ``ids``: the allocator to continue (several days replayed back to back share one, so their
    ids increase strictly across the days too); a fresh one by default.
    """
    ids = ids if ids is not None else TickIdAllocator()
    interval_ns = clock_interval_ms * NS_PER_MS
    next_clock = None
    last_ts = 0
    for c in rec.chunks():
        ts_col, seg_col, sid_col, ltp_col = c["ts_recv_ns"], c["segment"], c["security_id"], c["ltp"]
        ltq, ltt, vol, oi = c["ltq"], c["ltt_s"], c["volume"], c["oi"]
        bid, ask, bq, aq, kind = c["bid"], c["ask"], c["bid_qty"], c["ask_qty"], c["kind"]
        for i in range(len(ts_col)):
            ts = int(ts_col[i])
            if next_clock is None:
                next_clock = (ts // interval_ns + 1) * interval_ns
            while ts >= next_clock:
                cid = ids.next_id(next_clock)
                yield cid, Clock(msg_id=f"clk-{cid}", ts_event=next_clock, ts_init=now_ns(), tick_id=cid)
                next_clock += interval_ns
            seg = seg_col[i]
            sid = int(sid_col[i])
            tp = tick_paise(seg, sid) if tick_paise else DEFAULT_TICK_PAISE
            tid = ids.next_id(ts)
            yield tid, Tick(
                msg_id=f"tick-{tid}", ts_event=ts, ts_init=now_ns(), tick_id=tid,
                segment=seg, security_id=sid, ltp_paise=round_to_tick(float(ltp_col[i]), tp),
                ltq=int(ltq[i]), ltt_s=int(ltt[i]), volume=int(vol[i]), oi=int(oi[i]),
                bid_paise=round_to_tick(float(bid[i]), tp), ask_paise=round_to_tick(float(ask[i]), tp),
                bid_qty=int(bq[i]), ask_qty=int(aq[i]), kind=str(kind[i]),
            )
            last_ts = ts
    end_ts = last_ts + 1
    eid = ids.next_id(end_ts)
    yield eid, SessionEnd(
        msg_id=make_msg_id("end", rec.trading_day), ts_event=end_ts, ts_init=now_ns(), tick_id=eid,
        trading_day=rec.trading_day,
    )


class RateMeter:
    """Events per second of wall time over a sliding window (the feed's progress rate).

    ``add(t_s, count)`` records that ``count`` events had happened by monotonic time ``t_s``;
    ``rate()`` is the slope between the oldest sample still inside ``window_s`` and the newest.
    """

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, t_s: float, count: int) -> None:
        self.samples.append((t_s, count))
        while len(self.samples) > 2 and t_s - self.samples[1][0] >= self.window_s:
            self.samples.popleft()

    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
