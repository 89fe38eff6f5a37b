"""Recorded session files (Parquet written by the recorder or ``scalper synth``): loading one,
planning several days back to back, and reading the feed's replay progress.

The feed writes its progress to the ``replay:status`` key as JSON (see :func:`progress_line`
for the fields); ``scalper replay`` reads it to show progress and to know the feed is done.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import polars as pl

from services.feed.core import NS_PER_MS, Recorded
from shared import streamids
from shared.clock import (
    IST_OFFSET_NS,
    NS_PER_DAY,
    NS_PER_MIN,
    NS_PER_S,
    fmt_ist,
    hhmm_to_minutes,
    ist_day,
)


def read_metadata(path: str | Path) -> dict[str, str]:
    try:
        return dict(pl.read_parquet_metadata(path))
    except Exception:  # noqa: BLE001 - metadata is optional
        return {}


def _in_window(df: pl.DataFrame | pl.LazyFrame, from_hhmm: str | None, to_hhmm: str | None) -> Any:
    """Rows whose receive time is in [from, to) IST (minute resolution, like the CLI's flags)."""
    if not (from_hhmm or to_hhmm):
        return df
    lo = hhmm_to_minutes(from_hhmm) if from_hhmm else 0
    hi = hhmm_to_minutes(to_hhmm) if to_hhmm else 24 * 60
    minute = ((pl.col("ts_recv_ns") + IST_OFFSET_NS) % NS_PER_DAY) // NS_PER_MIN
    return df.filter((minute >= lo) & (minute < hi))


def _trading_day(path: str | Path, first_ts_ns: int) -> str:
    return read_metadata(path).get("trading_day") or ist_day(first_ts_ns).isoformat()


class FileRows:
    """Rows ``[start, stop)`` of a session file, read from the file a slice at a time: what
    :class:`Recorded` uses of a frame (``columns``, ``height``, ``slice``, a column by name),
    so a replay holds one chunk of the day, not the day (the whole frame took +54 MiB)."""

    def __init__(self, path: str | Path, start: int, stop: int) -> None:
        self._scan = pl.scan_parquet(path).select(Recorded.COLUMNS)
        self._start = start
        self.columns = list(Recorded.COLUMNS)
        self.height = stop - start

    def slice(self, offset: int, length: int) -> pl.DataFrame:
        length = max(0, min(length, self.height - offset))
        return self._scan.slice(self._start + offset, length).collect()

    def __getitem__(self, column: str) -> pl.Series:
        return self._scan.select(column).slice(self._start, self.height).collect().to_series()


class FileSession(Recorded):
    """A session replayed straight from its file (:class:`FileRows`), in smaller chunks: two
    chunks of Python values are alive at a time, ~9 MiB per 10,000 rows."""

    CHUNK_ROWS = 10_000


def load_session(path: str | Path, *, from_hhmm: str | None = None, to_hhmm: str | None = None) -> Recorded:
    """Read a session file, optionally keeping only ticks between two IST times.

    Memory: only the receive times are read up front. When the window's rows are one run of the
    file in receive order (recorded and generated files are) the replay reads and converts them
    a chunk at a time (:class:`FileRows`, ``Recorded.chunks``); otherwise the window is loaded,
    filtered while read, and sorted.
    """
    ts = pl.read_parquet(path, columns=["ts_recv_ns"]).with_row_index("row")
    if ts.height == 0:
        raise ValueError(f"{path}: the session file has no ticks")
    day = _trading_day(path, int(ts["ts_recv_ns"].min()))  # type: ignore[arg-type]
    rows = _in_window(ts, from_hhmm, to_hhmm)["row"]
    if rows.len() == 0:
        raise ValueError(f"{path}: no ticks between {from_hhmm} and {to_hhmm} IST")
    start, stop = int(rows[0]), int(rows[-1]) + 1
    if stop - start == rows.len() and ts["ts_recv_ns"].slice(start, stop - start).is_sorted():
        return FileSession(None, day, frame=FileRows(path, start, stop))
    df = _in_window(pl.scan_parquet(path).select(Recorded.COLUMNS), from_hhmm, to_hhmm).collect()
    return Recorded(None, day, frame=df.sort("ts_recv_ns", maintain_order=True))


class DayPlan(msgspec.Struct, frozen=True, kw_only=True):
    """One session file of a replay: its day, tick count and event-time span within the window."""

    path: str
    trading_day: str
    ticks: int
    ts_first: int  # UTC ns of its first tick in the window
    ts_last: int  # UTC ns of its last tick in the window


def scan_session(path: str | Path, *, from_hhmm: str | None = None, to_hhmm: str | None = None) -> DayPlan:
    """A session's plan entry, reading only its receive times (cheap: no full load)."""
    df = pl.read_parquet(path, columns=["ts_recv_ns"])
    if df.height == 0:
        raise ValueError(f"{path}: the session file has no ticks")
    day = _trading_day(path, _span(df)[0])
    df = _in_window(df, from_hhmm, to_hhmm)
    if df.height == 0:
        raise ValueError(f"{path}: no ticks between {from_hhmm} and {to_hhmm} IST")
    first, last = _span(df)
    return DayPlan(path=str(path), trading_day=day, ticks=df.height, ts_first=first, ts_last=last)


def _span(df: pl.DataFrame) -> tuple[int, int]:
    ts = pl.col("ts_recv_ns")
    lo, hi = df.select(ts.min().alias("lo"), ts.max().alias("hi")).row(0)
    return int(lo), int(hi)


def order_days(days: Sequence[DayPlan]) -> list[DayPlan]:
    """The days in replay order (by first tick), or ValueError when two days overlap.

    Each day must start in a later millisecond than the previous day's SessionEnd (its last tick
    + 1 ns), so tick ids, derived from event time, increase strictly across the days.
    """
    out = sorted(days, key=lambda d: d.ts_first)
    for prev, nxt in zip(out, out[1:], strict=False):
        if prev.trading_day == nxt.trading_day:
            raise ValueError(f"{Path(prev.path).name} and {Path(nxt.path).name}: both are "
                             f"trading day {prev.trading_day}")
        if nxt.ts_first // NS_PER_MS <= (prev.ts_last + 1) // NS_PER_MS:
            raise ValueError(f"{Path(nxt.path).name} starts before {Path(prev.path).name} ends "
                             f"({fmt_ist(nxt.ts_first, True)} <= {fmt_ist(prev.ts_last, True)} IST)")
    return out


def plan_days(paths: Sequence[str | Path], *, from_hhmm: str | None = None,
              to_hhmm: str | None = None) -> list[DayPlan]:
    """Scan and order several session files (one trading day each); ValueError names the bad one."""
    seen: set[str] = set()
    for p in paths:
        r = str(Path(p).resolve())
        if r in seen:
            raise ValueError(f"{p}: given twice")
        seen.add(r)
    return order_days([scan_session(p, from_hhmm=from_hhmm, to_hhmm=to_hhmm) for p in paths])


def remaining_event_s(days: Sequence[DayPlan], day_index: int, ts_event: int) -> float:
    """Event-time seconds still to replay: the rest of day ``day_index`` (0-based) from
    ``ts_event`` on, plus every later day's span (the nights between days are not replayed)."""
    if day_index >= len(days):
        return 0.0
    rest = max(0, days[day_index].ts_last - ts_event)
    rest += sum(d.ts_last - d.ts_first for d in days[day_index + 1:])
    return rest / NS_PER_S


def event_done_s(days: Sequence[DayPlan], ts_event: int) -> float:
    """Event-time seconds of the plan replayed up to ``ts_event`` (nights excluded)."""
    done = 0
    for d in days:
        if ts_event <= d.ts_first:
            break
        done += min(ts_event, d.ts_last) - d.ts_first
    return done / NS_PER_S


def event_total_s(days: Sequence[DayPlan]) -> float:
    return sum(d.ts_last - d.ts_first for d in days) / NS_PER_S


# --------------------------------------------------------------------------- progress


def eta_s(status: dict[str, Any]) -> float | None:
    """Seconds of wall time until the feed has published everything, or None when unknown.

    Paced replay (``speed`` > 0): the event time left divided by the speed. As fast as possible
    (``speed`` 0): the ticks left divided by the current rate.
    """
    if status.get("state") == "done":
        return 0.0
    speed = float(status.get("speed") or 0.0)
    if speed > 0 and status.get("remaining_event_s") is not None:
        return float(status["remaining_event_s"]) / speed
    rate = float(status.get("rate") or 0.0)
    left = int(status.get("total") or 0) - int(status.get("ticks") or 0)
    if rate <= 0 or left < 0:
        return None
    return left / rate


def fmt_duration(seconds: float | None) -> str:
    """``1:02:03`` / ``2:03``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def slowest_frontier_ns(frontiers: Sequence[str | bytes | None]) -> int | None:
    """Event time (UTC ns, ms resolution) the slowest stage has reached, from the stages'
    frontier ids (``<ms>-<seq>``, exclusive); None while any stage has none yet."""
    if not frontiers or any(not f for f in frontiers):
        return None
    return min(streamids.parse(f)[0] for f in frontiers if f) * NS_PER_MS


def progress_line(status: dict[str, Any], *, pipeline_ts: int | None = None,
                  pipeline_eta_s: float | None = None) -> str:
    """One line for the operator from the feed's status JSON (and, when known, the event time
    the slowest stage has reached and its own ETA; the ETA shown is the later of the two).

    Fields read: ``state`` (running/done), ``day`` (trading day), ``day_index`` (1-based) and
    ``days``, ``ts_event`` (UTC ns of the last published message), ``ticks`` (ticks done,
    including those a restarted feed found already published) of ``total``, ``rate`` (ticks per
    wall second, recent), ``speed`` (0 = max) and ``remaining_event_s``.
    """
    if not status:
        return "feed: starting"
    total = int(status.get("total") or 0)
    ticks = int(status.get("ticks") or 0)
    days = int(status.get("days") or 1)
    parts = []
    if days > 1:
        parts.append(f"day {status.get('day_index', '?')}/{days}")
    when = status.get("ts_event")
    if when:
        parts.append(f"{status.get('day') or ''} {fmt_ist(int(when))} IST".strip())
    pct = f" {100 * ticks / total:.0f}%" if total else ""
    parts.append(f"{ticks:,}/{total:,} ticks{pct}")
    done = status.get("state") == "done"
    parts.append("feed done" if done else f"{float(status.get('rate') or 0.0):,.0f} ticks/s")
    if pipeline_ts is not None:
        parts.append(f"pipeline at {fmt_ist(pipeline_ts, with_date=days > 1)} IST")
    etas = [e for e in (eta_s(status), pipeline_eta_s) if e is not None]
    if not done or pipeline_eta_s is not None:
        parts.append(f"ETA {fmt_duration(max(etas) if etas else None)}")
    return "  ".join(parts)
