"""Pure recorder logic: tick rows, IST trading-day partitioning, file names, flush decisions,
merging parts, and the raw-capture record format. No Redis, no asyncio, no file I/O.

Layout under the recording directory (``SCALPER_RECORD_DIR``)::

    <day>/part-00000.parquet   one file per flush (rows of that IST day, in stream order)
    <day>/.part-00001.parquet.tmp-<pid>   a part being written (renamed when complete)
    <day>.parquet              the compacted day: all parts merged, sorted, deduped by tick_id
    raw/<day>.dhanraw          raw DhanHQ frames (see "Raw capture format" below)

A part and a compacted day use the replay schema (:data:`SCHEMA`): the columns
``services.feed.replay.load_session`` reads, prices in rupees as float64 (``paise / 100``, which
converts back exactly with ``round(rupees * 100)``), plus ``tick_id`` (the ``ticks`` entry id)
and ``ts_init`` (when the feed built the tick). ``ts_recv_ns`` is the tick's ``ts_event``: the
feed's receive time. The trading day of a row is the IST calendar date of its receive time.

Raw capture format (``*.dhanraw``), little-endian::

    file   := MAGIC record*
    MAGIC  := b"DHANRAW1"                      8 bytes
    record := recv_ns:u64 length:u32 crc32:u32 frame:bytes[length]

``recv_ns`` is the UTC ns receive time of the WebSocket binary message, ``frame`` its bytes
exactly as received (one or more DhanHQ packets), ``crc32`` the zlib CRC-32 of ``frame``. A file
is only ever appended to; a crash can leave a torn (or zero-filled) last record, which readers stop
at and the writer cuts off before appending again. Frames are never empty.
"""

from __future__ import annotations

import re
import struct
import sys
import zlib
from array import array
from collections.abc import Iterable, Iterator, Mapping, MutableSequence, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import msgspec
import polars as pl

from shared import streamids
from shared.keys import Keys
from shared.messages import Tick
from shared.sessionfile import SESSION_SCHEMA

RECORDER_VERSION = "1"
"""Written into every file's metadata as ``recorder``; bump when the schema changes."""

NS_PER_DAY = 86_400 * 1_000_000_000
IST_OFFSET_NS = 19_800 * 1_000_000_000
_EPOCH = date(1970, 1, 1)

SCHEMA: dict[str, Any] = {**SESSION_SCHEMA, "tick_id": pl.String, "ts_init": pl.Int64}
"""Column -> polars type of every recorded file (the replay schema plus tick_id and ts_init)."""


def status_key(keys: Keys) -> str:
    """``scalper:{ns}:recorder:status``: the recorder's JSON status (to move into shared/keys)."""
    return keys.recorder_status()


# --------------------------------------------------------------------------- days and names


def trading_day(ts_ns: int) -> str:
    """The IST calendar date (``YYYY-MM-DD``) of a UTC ns instant, in integer arithmetic."""
    return (_EPOCH + timedelta(days=(ts_ns + IST_OFFSET_NS) // NS_PER_DAY)).isoformat()


_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PART_RE = re.compile(r"^part-(\d{5,})\.parquet$")


def is_day(name: str) -> bool:
    if not _DAY_RE.match(name):
        return False
    try:
        date.fromisoformat(name)
    except ValueError:
        return False
    return True


def part_name(number: int) -> str:
    return f"part-{number:05d}.parquet"


def part_number(name: str) -> int | None:
    """The number of a part file name, or None for any other name."""
    m = _PART_RE.match(name)
    return int(m.group(1)) if m else None


def day_file_name(day: str) -> str:
    return f"{day}.parquet"


def raw_file_name(day: str) -> str:
    return f"{day}.dhanraw"


def tmp_name(final_name: str, pid: int) -> str:
    """Hidden temporary name a file is written under before its atomic rename."""
    return f".{final_name}.tmp-{pid}"


def is_tmp_name(name: str) -> bool:
    return name.startswith(".") and ".tmp-" in name


def days_to_compact(days_with_parts: Iterable[str], latest_day: str) -> list[str]:
    """Days whose parts can be merged: every day before the latest day seen in the stream.

    Ticks arrive in receive-time order, so once a tick of a later day is read nothing more of
    an earlier day will come.
    """
    return sorted(d for d in days_with_parts if d < latest_day)


def file_metadata(day: str, synthetic: str = "false", **extra: str) -> dict[str, str]:
    """Key-value metadata of a recorded file."""
    return {"trading_day": day, "synthetic": synthetic, "recorder": RECORDER_VERSION, **extra}


def trimmed_unread(
    *, last_delivered: str, first_entry: str | None, length: int, lag: int | None
) -> int:
    """How many ``ticks`` entries were trimmed before the recorder's group read them.

    Trimming removes the oldest entries, so undelivered entries were lost exactly when the
    stream's first remaining entry lies after the group's last-delivered id (or the stream is
    empty); then ``lag`` (entries added minus entries read) minus the entries still there is
    the count. -1 when Redis cannot compute the lag.
    """
    if first_entry is not None and not streamids.less(last_delivered, first_entry):
        return 0
    if lag is None:
        return -1
    return max(0, lag - length)


# --------------------------------------------------------------------------- rows


def paise_to_rupees(paise: int) -> float:
    """Rupees as float64; ``round(paise_to_rupees(p) * 100) == p`` for every |p| < 2**53 / 100."""
    return paise / 100


class FlushPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """When buffered rows are written: ``flush_interval_s`` after the oldest buffered entry, or
    as soon as ``flush_rows`` rows are buffered, whichever comes first."""

    flush_interval_s: float = 5.0
    flush_rows: int = 10_000


Key = tuple[int, int, int]
"""The merge order of recorded rows: (receive time ns, tick-id ms, tick-id seq)."""

Columns = dict[str, MutableSequence[Any]]
"""Column name -> values of buffered rows, in :data:`SCHEMA` order (see :func:`empty_columns`)."""


@dataclass(slots=True)
class Flush:
    """What one flush writes and acknowledges."""

    days: dict[str, Columns]
    """IST day -> columns (in :data:`SCHEMA` order) of that day's rows."""
    acks: list[str]
    """Every stream entry id the flush covers (ticks and other entries alike)."""
    rows: int
    last_tick_id: str
    spans: dict[str, tuple[Key, Key] | None] = field(default_factory=dict)
    """IST day -> (first, last) :data:`Key` of that day's rows if they strictly increase, else
    None (an entry re-claimed out of order): what :func:`span_metadata` records in the part."""


_TYPECODES = {pl.Int64: "q", pl.Float64: "d"}


def empty_columns() -> Columns:
    """Empty columns for buffered rows: Int64 and Float64 columns as typed arrays (8 bytes a
    value, where a list costs a slot and a boxed number, ~40 bytes), String columns as lists."""
    return {name: array(_TYPECODES[t]) if t in _TYPECODES else [] for name, t in SCHEMA.items()}


@dataclass(slots=True)
class RowBuffer:
    """Ticks read from the stream but not yet written, grouped by IST day.

    Entries are keyed by stream id: an entry delivered twice (re-claimed while buffered) is
    kept once. ``now_s`` values are any monotonic seconds; only differences matter.
    """

    policy: FlushPolicy = field(default_factory=FlushPolicy)
    days: dict[str, Columns] = field(default_factory=dict)
    spans: dict[str, tuple[Key, Key] | None] = field(default_factory=dict)
    entry_ids: dict[str, None] = field(default_factory=dict)
    rows: int = 0
    since_s: float | None = None
    last_tick_id: str = streamids.ZERO
    latest_day: str = ""

    def __len__(self) -> int:
        return len(self.entry_ids)

    def _take_entry(self, entry_id: str, now_s: float) -> bool:
        if entry_id in self.entry_ids:
            return False
        self.entry_ids[entry_id] = None
        if self.since_s is None:
            self.since_s = now_s
        return True

    def add_tick(self, entry_id: str, tick: Tick, now_s: float) -> bool:
        """Buffer one tick read as stream entry ``entry_id``; False if it is already buffered."""
        if not self._take_entry(entry_id, now_s):
            return False
        day = trading_day(tick.ts_event)
        ms, seq = streamids.parse(entry_id)
        key = (tick.ts_event, ms, seq)
        cols = self.days.get(day)
        if cols is None:
            cols = self.days[day] = empty_columns()
            self.spans[day] = (key, key)
        else:
            span = self.spans[day]
            self.spans[day] = None if span is None or key <= span[1] else (span[0], key)
        cols["ts_recv_ns"].append(tick.ts_event)
        # Interned, so each row holds a reference to one shared string, not its own copy.
        cols["segment"].append(sys.intern(tick.segment))
        cols["security_id"].append(tick.security_id)
        cols["ltp"].append(paise_to_rupees(tick.ltp_paise))
        cols["ltq"].append(tick.ltq)
        cols["ltt_s"].append(tick.ltt_s)
        cols["volume"].append(tick.volume)
        cols["oi"].append(tick.oi)
        cols["bid"].append(paise_to_rupees(tick.bid_paise))
        cols["ask"].append(paise_to_rupees(tick.ask_paise))
        cols["bid_qty"].append(tick.bid_qty)
        cols["ask_qty"].append(tick.ask_qty)
        cols["kind"].append(sys.intern(tick.kind))
        cols["tick_id"].append(entry_id)
        cols["ts_init"].append(tick.ts_init)
        self.rows += 1
        if streamids.less(self.last_tick_id, entry_id):
            self.last_tick_id = entry_id
        if day > self.latest_day:
            self.latest_day = day
        return True

    def add_other(self, entry_id: str, now_s: float) -> bool:
        """Buffer a non-tick entry (a Clock): nothing to write, acknowledged with the next flush."""
        return self._take_entry(entry_id, now_s)

    def due(self, now_s: float) -> bool:
        """Whether a flush is due now."""
        if self.since_s is None:
            return False
        return self.rows >= self.policy.flush_rows or (
            now_s - self.since_s >= self.policy.flush_interval_s
        )

    def take(self) -> Flush:
        """Everything buffered, leaving the buffer empty."""
        out = Flush(days=self.days, acks=list(self.entry_ids), rows=self.rows,
                    last_tick_id=self.last_tick_id, spans=self.spans)
        self.days = {}
        self.spans = {}
        self.entry_ids = {}
        self.rows = 0
        self.since_s = None
        return out


def frame(columns: Mapping[str, Sequence[Any]]) -> pl.DataFrame:
    """A DataFrame of recorded rows with the exact :data:`SCHEMA` types."""
    return pl.DataFrame({name: columns[name] for name in SCHEMA}, schema=SCHEMA)


def merge(frames: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """Merge recorded frames into one day: sorted by receive time (ties in tick-id order), one
    row per ``tick_id`` (a tick written twice, e.g. written then re-read after a crash, is kept
    once)."""
    parts = [f.select(list(SCHEMA)).cast(SCHEMA) for f in frames]  # type: ignore[arg-type]
    if not parts:
        return pl.DataFrame(schema=SCHEMA)
    df = pl.concat(parts, how="vertical")
    ids = pl.col("tick_id").str.split_exact("-", 1)
    df = df.with_columns(
        ids.struct.field("field_0").cast(pl.Int64, strict=False).alias("_ms"),
        ids.struct.field("field_1").cast(pl.Int64, strict=False).alias("_seq"),
    )
    df = df.sort(["ts_recv_ns", "_ms", "_seq"], maintain_order=True)
    df = df.unique(subset=["tick_id"], keep="first", maintain_order=True)
    return df.drop(["_ms", "_seq"])


def _key_columns(lf: pl.LazyFrame) -> pl.LazyFrame:
    ids = pl.col("tick_id").str.split_exact("-", 1)
    return lf.select(
        pl.col("ts_recv_ns"),
        ids.struct.field("field_0").cast(pl.Int64, strict=False).alias("_ms"),
        ids.struct.field("field_1").cast(pl.Int64, strict=False).alias("_seq"),
    )


def key_span(lf: pl.LazyFrame) -> tuple[Key, Key] | None:
    """(first, last) merge key — (receive time, tick-id ms, tick-id seq) — of a recorded file
    whose rows strictly increase in that key, else None (unsorted, a duplicated tick, an
    unparsable tick id, or no rows). Reads only the two key columns."""
    k = _key_columns(lf).collect()
    if k.height == 0 or k.null_count().sum_horizontal().item() > 0:
        return None
    ts, ms, seq = k["ts_recv_ns"], k["_ms"], k["_seq"]
    dts, dms, dseq = ts.diff().slice(1), ms.diff().slice(1), seq.diff().slice(1)
    bad = (dts < 0) | ((dts == 0) & ((dms < 0) | ((dms == 0) & (dseq <= 0))))
    if bad.any():
        return None
    return (ts[0], ms[0], seq[0]), (ts[-1], ms[-1], seq[-1])


def span_metadata(span: tuple[Key, Key] | None, rows: int) -> dict[str, str]:
    """Metadata a writer that knows its rows records, so compaction need not read them back:
    ``rows``, and ``key_first`` / ``key_last`` (``ts,ms,seq``) when the rows strictly increase
    in :data:`Key` (what :func:`key_span` would find)."""
    meta = {"rows": str(rows)}
    if span is not None:
        meta["key_first"], meta["key_last"] = (",".join(map(str, k)) for k in span)
    return meta


def span_of_metadata(meta: Mapping[str, str]) -> tuple[tuple[Key, Key], int] | None:
    """The (key span, row count) a file's :func:`span_metadata` records, or None when it records
    no span (then read the file: :func:`key_span`)."""
    try:
        first, last = (tuple(int(x) for x in meta[k].split(",")) for k in ("key_first", "key_last"))
        rows = int(meta["rows"])
    except (KeyError, ValueError):
        return None
    if len(first) != 3 or len(last) != 3:
        return None
    return (first, last), rows  # type: ignore[return-value]


def concatenable(spans: Iterable[tuple[Key, Key] | None]) -> bool:
    """True when files with these key spans, concatenated in order, are already a merged day
    (each strictly increasing, each starting after the previous one ends): the common case,
    which :func:`merge` would only copy. Then compaction can stream instead of sorting."""
    last: Key | None = None
    for span in spans:
        if span is None or (last is not None and span[0] <= last):
            return False
        last = span[1]
    return True


# --------------------------------------------------------------------------- raw capture

RAW_MAGIC = b"DHANRAW1"
RAW_RECORD = struct.Struct("<QII")
"""Record header: receive time (UTC ns), frame length (bytes), CRC-32 of the frame."""
RAW_MAX_FRAME = 16 * 1024 * 1024
"""Frames above this are refused (a DhanHQ message is at most a few KB)."""


class RawFormatError(ValueError):
    """A raw capture that is not one, or a corrupt record in the middle of one."""


def pack_raw(frame_bytes: bytes, recv_ns: int) -> bytes:
    """One raw record: header and frame."""
    if not 0 < len(frame_bytes) <= RAW_MAX_FRAME:
        raise RawFormatError(f"frame of {len(frame_bytes)} bytes: must be 1..{RAW_MAX_FRAME}")
    return RAW_RECORD.pack(recv_ns, len(frame_bytes), zlib.crc32(frame_bytes)) + frame_bytes


class RawReader:
    """Iterates the records of a raw capture's bytes: ``for recv_ns, frame in RawReader(buf)``.

    Reading stops at the first record that is short, empty or fails its CRC (a crash can leave
    a torn or zero-filled last record); after iteration :attr:`good_end`, :attr:`torn` and
    :attr:`error` say where and why. A bad magic raises :class:`RawFormatError` at once.
    """

    def __init__(self, buf: bytes | memoryview | Any) -> None:
        self._view = memoryview(buf)
        n = min(len(self._view), len(RAW_MAGIC))
        if bytes(self._view[:n]) != RAW_MAGIC[:n]:
            raise RawFormatError(
                f"not a raw capture: magic {bytes(self._view[:8])!r}, expected {RAW_MAGIC!r}"
            )
        self.good_end = 0
        """Offset just after the last valid record: where an appender continues."""
        self.torn = len(self._view)
        """Bytes after ``good_end`` that are not valid records."""
        self.error = "torn magic" if 0 < len(self._view) < len(RAW_MAGIC) else ""
        """Why reading stopped before the end, if it did."""

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        view = self._view
        end = len(view)
        if end < len(RAW_MAGIC):
            return
        off = len(RAW_MAGIC)
        head = RAW_RECORD.size
        self.error = ""
        while off < end:
            if off + head > end:
                self.error = f"torn record header at offset {off}"
                break
            recv_ns, length, crc = RAW_RECORD.unpack_from(view, off)
            if length == 0 or length > RAW_MAX_FRAME:
                self.error = f"bad record length {length} at offset {off}"
                break
            if off + head + length > end:
                self.error = (f"torn record at offset {off}: {length} bytes announced, "
                              f"{end - off - head} left")
                break
            body = bytes(view[off + head : off + head + length])
            if zlib.crc32(body) != crc:
                self.error = f"CRC mismatch in the record at offset {off}"
                break
            off += head + length
            self.good_end, self.torn = off, end - off
            yield recv_ns, body
        self.good_end, self.torn = off, end - off

    def release(self) -> None:
        """Drop the view (needed before closing an mmap it points into)."""
        self._view.release()
