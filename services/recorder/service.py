"""Recorder shell: every tick of the ``ticks`` stream into Parquet files, one directory per IST day.

It reads through its own consumer group ``recorder``, so it sees every tick the stream held
whatever other services do. Rows are buffered (:class:`services.recorder.core.RowBuffer`) and
flushed at most every ``flush_interval_s`` or ``flush_rows`` rows into a new part file, written
under a temporary name, fsynced and renamed; only then are the part's entries acknowledged, in
one ``Bus.commit`` that also stores the status key. So an acknowledged tick is always on disk, a
crash loses at most the unflushed buffer (those entries stay pending and are re-read on restart),
and a crash between rename and ack writes some ticks twice, which compaction removes (one row
per ``tick_id``).

Compaction merges a day's parts into ``<day>.parquet``: on ``SessionEnd``, when the first tick of
a later day arrives, or by hand (``python -m services.recorder --compact DAY``).

Settings (environment): ``SCALPER_RECORD_DIR`` (default ``$SCALPER_RUN_DIR/recordings`` when
``SCALPER_RUN_DIR`` is set, as under supervisord, else ``run/<namespace>/recordings``),
``SCALPER_RECORD_FLUSH_S`` (5), ``SCALPER_RECORD_FLUSH_ROWS`` (10000). Test-only fault
injection: ``SCALPER_RECORD_FAULT=exit_after_write`` exits the process right after the first part
is renamed and before its acknowledgement.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import polars as pl
from redis.exceptions import RedisError, ResponseError

from services.feed.core import TickIdAllocator
from services.feed.replay import read_metadata
from services.recorder import core
from shared import streamids
from shared.bus import Batch, Commit
from shared.config import EnvConfig
from shared.dhan.codec import Disconnect, decode_message_lenient
from shared.dhan.feed_client import packet_to_fields
from shared.errors import BusError, ConfigError, PacketError
from shared.messages import SessionEnd, Tick
from shared.runtime import Context, Service
from shared.types import SEGMENT_NAMES

log = logging.getLogger("recorder")

STATUS_INTERVAL_S = 1.0
MAX_TRIM_GAPS = 20
COMPACT_ZSTD_LEVEL = 9
COMPACT_ROW_GROUP_ROWS = 10_000
COMPACT_PAGE_BYTES = 64 * 1024
"""Compacted files in row groups of 10k rows and 64 KiB pages: the streaming writer holds a row
group, and zstd sizes its tables to the page, so these bound what compaction holds (+12 MiB on
the sample day, where polars' default 512k-row groups and 1 MiB pages took +45 MiB at level 9)."""


# --------------------------------------------------------------------------- files


def _fsync(path: Path) -> None:
    """fsync a file or a directory (a directory after a rename in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_parquet_durably(
    df: pl.DataFrame | pl.LazyFrame, final: Path, metadata: dict[str, str], *, replace: bool,
    compact: bool = False,
) -> None:
    """Write ``df`` to ``final`` so that ``final`` is either absent or complete and on disk:
    a hidden temporary file, fsync, rename (``replace=False``: FileExistsError if ``final``
    exists), fsync of the directory. A LazyFrame is streamed (never held whole in memory).
    ``compact``: a day file, compressed harder in small row groups (``COMPACT_*``)."""
    tmp = final.with_name(core.tmp_name(final.name, os.getpid()))
    opts: dict[str, Any] = {"compression": "zstd", "metadata": metadata}
    if compact:
        opts.update(compression_level=COMPACT_ZSTD_LEVEL, row_group_size=COMPACT_ROW_GROUP_ROWS,
                    data_page_size=COMPACT_PAGE_BYTES)
    try:
        if isinstance(df, pl.LazyFrame):
            df.sink_parquet(tmp, engine="streaming", **opts)
        else:
            df.write_parquet(tmp, **opts)
        _fsync(tmp)
        if replace:
            os.replace(tmp, final)
        else:
            os.link(tmp, final)  # atomic and never overwrites
            tmp.unlink()
    finally:
        tmp.unlink(missing_ok=True)
    _fsync(final.parent)


@dataclass(slots=True)
class Compaction:
    path: Path
    rows: int
    parts: int
    duplicates: int


class Recordings:
    """The recording directory: part files per day, compacted day files (layout in ``core``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._next_part: dict[str, int] = {}

    def day_dir(self, day: str) -> Path:
        return self.root / day

    def day_file(self, day: str) -> Path:
        return self.root / core.day_file_name(day)

    def parts(self, day: str) -> list[Path]:
        """The day's part files in number order."""
        d = self.day_dir(day)
        if not d.is_dir():
            return []
        numbered = [(core.part_number(p.name), p) for p in d.iterdir()]
        return [p for n, p in sorted((n, p) for n, p in numbered if n is not None)]

    def days_with_parts(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and core.is_day(p.name) and self.parts(p.name))

    def remove_tmp(self) -> int:
        """Delete temporary files a crashed writer left behind; how many."""
        if not self.root.is_dir():
            return 0
        n = 0
        for d in [self.root, *(p for p in self.root.iterdir() if p.is_dir())]:
            for p in d.iterdir():
                if p.is_file() and core.is_tmp_name(p.name):
                    p.unlink(missing_ok=True)
                    n += 1
        return n

    def write_part(self, day: str, df: pl.DataFrame, metadata: dict[str, str]) -> Path:
        """Write the next part of ``day`` durably; returns its path."""
        d = self.day_dir(day)
        if not d.is_dir():
            d.mkdir(parents=True, exist_ok=True)
            _fsync(d.parent)
        n = self._next_part.get(day)
        if n is None:
            existing = [core.part_number(p.name) for p in self.parts(day)]
            n = max((x for x in existing if x is not None), default=-1) + 1
        while True:
            final = d / core.part_name(n)
            try:
                write_parquet_durably(df, final, {**metadata, "part": str(n)}, replace=False)
            except FileExistsError:
                n += 1
                continue
            self._next_part[day] = n + 1
            return final

    def compact(self, day: str) -> Compaction:
        """Merge the day's parts (and an earlier compacted file) into ``<day>.parquet``, sorted
        by receive time, one row per tick_id; then delete the merged parts."""
        parts = self.parts(day)
        target = self.day_file(day)
        inputs = ([target] if target.exists() else []) + parts
        if not inputs:
            raise FileNotFoundError(f"no recording of {day} in {self.root}")
        for p in inputs:
            missing = [c for c in core.SCHEMA if c not in pl.read_parquet_schema(p)]
            if missing:
                raise ValueError(f"{p}: not a recorder file (lacks {', '.join(missing)})")
        scans = [pl.scan_parquet(p).select(list(core.SCHEMA)).cast(core.SCHEMA) for p in inputs]  # type: ignore[arg-type]
        metas = [read_metadata(p) for p in inputs]
        spans: list[tuple[core.Key, core.Key] | None] = []
        total = 0
        for scan, m in zip(scans, metas, strict=True):
            # What the writer recorded, else read back (each query type also maps more of
            # polars' code into memory: ~10 MiB for these two).
            known = core.span_of_metadata(m)
            if known is None:
                spans.append(core.key_span(scan))
                total += scan.select(pl.len()).collect().item()
            else:
                spans.append(known[0])
                total += known[1]
        meta = metas[0]
        for k in ("part", "key_first", "key_last"):
            meta.pop(k, None)
        meta.update(core.file_metadata(day, synthetic=meta.get("synthetic", "false")))
        if core.concatenable(spans):
            # Parts written in stream order: concatenating them *is* the merge, and the
            # streaming engine writes it without holding the day in memory.
            merged: pl.DataFrame | pl.LazyFrame = pl.concat(scans, how="vertical")
            rows = total
            first, last = spans[0], spans[-1]
            assert first is not None and last is not None  # concatenable: every span known
            meta.update(core.span_metadata((first[0], last[1]), rows))
        else:  # overlapping parts (a re-read after a crash): sort and deduplicate in memory
            merged = core.merge(s.collect() for s in scans)
            rows = merged.height
        meta.update({"rows": str(rows), "compacted": "true"})
        if parts:
            write_parquet_durably(merged, target, meta, replace=True, compact=True)
        for p in parts:  # a crash here leaves parts the next compaction merges again (deduped)
            p.unlink()
        d = self.day_dir(day)
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
        self._next_part.pop(day, None)
        return Compaction(path=target, rows=rows, parts=len(parts), duplicates=total - rows)


# --------------------------------------------------------------------------- raw capture


class RawRecorder:
    """Appends raw DhanHQ feed frames to ``<root>/raw/<day>.dhanraw`` (format in ``core``).

    Call :meth:`append` with each binary WebSocket message and its receive time, before
    decoding it. Each record goes to the OS in one ``write`` on an ``O_APPEND`` descriptor, so
    killing the process loses nothing; the file is fsynced at most every ``fsync_interval_s``
    (what a power loss can cost). The day follows the receive time (IST). Reopening a file a
    crash left with a torn last record cuts that record off first. Synchronous and cheap
    (a few microseconds per frame); not thread-safe.
    """

    def __init__(self, root: Path, *, fsync_interval_s: float = 1.0,
                 now_s: Callable[[], float] = time.monotonic) -> None:
        self.dir = Path(root) / "raw"
        self.fsync_interval_s = fsync_interval_s
        self._now_s = now_s
        self._fd: int | None = None
        self.day = ""
        self.frames = 0
        self.bytes = 0
        self.torn_bytes_cut = 0
        self._last_sync = now_s()
        self._dirty = False

    def path(self, day: str) -> Path:
        return self.dir / core.raw_file_name(day)

    def append(self, frame: bytes, recv_ns: int) -> None:
        """Record one frame received at ``recv_ns`` (UTC ns)."""
        day = core.trading_day(recv_ns)
        if day != self.day or self._fd is None:
            self._open(day)
        assert self._fd is not None
        rec = core.pack_raw(bytes(frame), recv_ns)
        os.write(self._fd, rec)
        self.frames += 1
        self.bytes += len(rec)
        self._dirty = True
        if self._now_s() - self._last_sync >= self.fsync_interval_s:
            self.sync()

    def sync(self) -> None:
        """fsync the current file."""
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
            self._dirty = False
        self._last_sync = self._now_s()

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RawRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, day: str) -> None:
        self.close()
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path(day)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                reader = core.RawReader(mm)
                for _ in reader:
                    pass
                good_end, error = reader.good_end, reader.error
                reader.release()
            if good_end < size:
                os.ftruncate(fd, good_end)
                self.torn_bytes_cut += size - good_end
                log.warning("raw capture had a torn tail; cut it off", extra={"fields": {
                    "file": str(path), "bytes_cut": size - good_end, "error": error}})
        if os.fstat(fd).st_size == 0:
            os.write(fd, core.RAW_MAGIC)
            _fsync(self.dir)
        self._fd, self.day = fd, day


def iter_raw(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """``(recv_ns, frame)`` for each record of a raw capture, in file order. A torn or corrupt
    tail ends the iteration with a warning; a file that is not a raw capture raises
    :class:`services.recorder.core.RawFormatError`."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            reader = core.RawReader(mm)
            try:
                yield from reader
            finally:
                reader.release()
            if reader.error:
                log.warning("raw capture ends in a bad record", extra={"fields": {
                    "file": str(path), "error": reader.error, "bytes_skipped": reader.torn}})


TickPaise = Callable[[str, int], int]
"""``(segment, security_id) -> tick size in paise``, as the live feed rounds prices."""


def raw_to_ticks(
    path: str | Path, *, tick_paise: TickPaise | None = None,
    on_error: Callable[[PacketError], None] | None = None,
) -> Iterator[Tick]:
    """The ticks a raw capture holds, decoded exactly as the live feed does: each frame through
    ``shared.dhan.codec.decode_message_lenient``, each price packet through
    ``shared.dhan.feed_client.packet_to_fields``; tick ids from receive times as the feed assigns
    them (``ts_init`` is the receive time, so the output is deterministic). Malformed packets go
    to ``on_error`` and are skipped."""
    ids = TickIdAllocator()
    for recv_ns, frame in iter_raw(path):
        packets, errors = decode_message_lenient(frame)
        for p in packets:
            if isinstance(p, Disconnect):
                continue
            if p.segment_code not in SEGMENT_NAMES:
                errors.append(PacketError(f"unknown exchange segment code {p.segment_code}"))
                continue
            tp = tick_paise(SEGMENT_NAMES[p.segment_code], p.security_id) if tick_paise else None
            fields = (packet_to_fields(p, recv_ns) if tp is None
                      else packet_to_fields(p, recv_ns, tp))
            if fields is None:
                continue
            tid = ids.next_id(recv_ns)
            yield Tick(msg_id=f"tick-{tid}", ts_init=recv_ns, tick_id=tid, **fields)
        if on_error is not None:
            for err in errors:
                on_error(err)


@dataclass(slots=True)
class RawConversion:
    path: Path
    rows: int
    packet_errors: int


def raw_to_parquet(
    raw_path: str | Path, out_path: str | Path, *, tick_paise: TickPaise | None = None,
) -> RawConversion:
    """Convert a raw capture into a session file ``load_session`` replays (the recorder schema)."""
    errors: list[PacketError] = []
    buf = core.RowBuffer()
    for t in raw_to_ticks(raw_path, tick_paise=tick_paise, on_error=errors.append):
        buf.add_tick(t.tick_id, t, 0.0)
    fl = buf.take()
    if not fl.days:
        raise ValueError(f"{raw_path}: no price packets in the raw capture")
    day = min(fl.days)
    df = core.merge(core.frame(cols) for cols in fl.days.values())
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = core.file_metadata(day, source_file=Path(raw_path).name, source="raw",
                              packet_errors=str(len(errors)))
    write_parquet_durably(df, out, meta, replace=True, compact=True)
    return RawConversion(path=out, rows=df.height, packet_errors=len(errors))


# --------------------------------------------------------------------------- settings


def record_dir(env: EnvConfig, environ: Mapping[str, str] | None = None) -> Path:
    """Where recordings go (see the module docstring)."""
    e = os.environ if environ is None else environ
    if e.get("SCALPER_RECORD_DIR"):
        return Path(e["SCALPER_RECORD_DIR"])
    if e.get("SCALPER_RUN_DIR"):
        return Path(e["SCALPER_RUN_DIR"]) / "recordings"
    return Path("run") / env.namespace / "recordings"


def flush_policy(environ: Mapping[str, str] | None = None) -> core.FlushPolicy:
    """The flush policy from ``SCALPER_RECORD_FLUSH_S`` / ``SCALPER_RECORD_FLUSH_ROWS``."""
    e = os.environ if environ is None else environ
    try:
        interval_s = float(e.get("SCALPER_RECORD_FLUSH_S", "5"))
    except ValueError:
        raise ConfigError(f"env SCALPER_RECORD_FLUSH_S: not a number: {e['SCALPER_RECORD_FLUSH_S']!r}") from None
    try:
        rows = int(e.get("SCALPER_RECORD_FLUSH_ROWS", "10000"))
    except ValueError:
        raise ConfigError(f"env SCALPER_RECORD_FLUSH_ROWS: not an integer: {e['SCALPER_RECORD_FLUSH_ROWS']!r}") from None
    if not 0 < interval_s <= 3600:
        raise ConfigError(f"env SCALPER_RECORD_FLUSH_S: must be in (0, 3600], got {interval_s}")
    if rows < 1:
        raise ConfigError(f"env SCALPER_RECORD_FLUSH_ROWS: must be >= 1, got {rows}")
    return core.FlushPolicy(flush_interval_s=interval_s, flush_rows=rows)


def source_metadata(environ: Mapping[str, str]) -> dict[str, str]:
    """What recorded files carry over from the session file being replayed, if any
    (``SCALPER_REPLAY_FILE``): its ``synthetic`` flag and ``label``. Live ticks: synthetic=false."""
    src = environ.get("SCALPER_REPLAY_FILE", "")
    if not src or not Path(src).exists():
        return {"synthetic": "false"}
    meta = read_metadata(src)
    out = {"synthetic": meta.get("synthetic", "false"), "source_file": Path(src).name}
    if meta.get("label"):
        out["label"] = meta["label"]
    return out


class RecorderService(Service):
    name = "recorder"
    inputs = ("ticks",)

    def __init__(
        self, ctx: Context, *, root: Path | None = None, policy: core.FlushPolicy | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(ctx)
        e = dict(os.environ if environ is None else environ)
        self.store = Recordings(root or record_dir(ctx.config.env, e))
        self.buffer = core.RowBuffer(policy or flush_policy(e))
        self.meta = source_metadata(e)
        self.fault = e.get("SCALPER_RECORD_FAULT", "")
        self.status_key = core.status_key(ctx.keys)
        self.days_with_parts: set[str] = set()
        self.written_rows = 0
        self.parts_written = 0
        self.last_written_tick_id = ""
        self.compacted: dict[str, int] = {}
        self.lag = 0
        self.pending = 0
        self.trim_gaps: dict[str, dict[str, Any]] = {}
        """Gaps of ticks trimmed before being read, keyed by the id they start after."""
        self._last_status = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        removed = await asyncio.to_thread(self.store.remove_tmp)
        self.days_with_parts = set(await asyncio.to_thread(self.store.days_with_parts))
        log.info("recording", extra={"fields": {
            "dir": str(self.store.root), "flush_interval_s": self.buffer.policy.flush_interval_s,
            "flush_rows": self.buffer.policy.flush_rows, "stale_tmp_removed": removed,
            "uncompacted_days": sorted(self.days_with_parts), **self.meta}})
        claim_idle_s = self.ctx.config.algo.runtime.claim_idle_ms / 1000
        if self.buffer.policy.flush_interval_s >= claim_idle_s:
            # Buffered entries idle past claim_idle_ms get re-claimed (kept once in the buffer,
            # but another recorder instance would write them too: duplicates until compaction).
            log.warning("flush interval is not below runtime.claim_idle_ms", extra={"fields": {
                "flush_interval_s": self.buffer.policy.flush_interval_s,
                "claim_idle_s": claim_idle_s}})
        await self._refresh(force=True)

    async def handle(self, batch: Batch) -> Commit:
        now = time.monotonic()
        ends: list[tuple[str, SessionEnd]] = []
        for e in batch.entries:
            m = e.msg
            if isinstance(m, Tick):
                self.buffer.add_tick(e.entry_id, m, now)
            elif isinstance(m, SessionEnd):
                ends.append((e.entry_id, m))
            else:
                self.buffer.add_other(e.entry_id, now)
        if ends or self.buffer.due(now):
            await self._flush()
        for entry_id, end in ends:
            # Acked only once the day is compacted: a crash before re-runs the compaction.
            await self._compact(end.trading_day)
            c = Commit()
            c.ack("ticks", entry_id)
            await self.ctx.bus.commit(self.name, c)
        await self._refresh()
        return Commit()

    async def idle(self) -> None:
        # In burst mode an empty read means the stream is drained: write what is buffered now.
        if len(self.buffer) and (self.ctx.burst or self.buffer.due(time.monotonic())):
            await self._flush()
        await self._refresh()

    def drained(self) -> bool:
        return len(self.buffer) == 0

    def info(self) -> dict[str, Any]:
        return {
            "buffered_rows": self.buffer.rows,
            "buffered_entries": len(self.buffer),
            "last_written_tick_id": self.last_written_tick_id,
            "written_rows": self.written_rows,
            "parts_written": self.parts_written,
            "lag": self.lag,
            "pending": self.pending,
            "trimmed_unread": sum(max(0, g["count"]) for g in self.trim_gaps.values()),
        }

    async def stop(self) -> None:
        entries = len(self.buffer)
        if not entries:
            return
        try:  # graceful stop: write and acknowledge what is buffered
            await self._flush()
        except Exception as exc:  # noqa: BLE001 - the entries stay pending and are re-read
            log.warning("final flush failed; buffered entries stay pending",
                        extra={"fields": {"error": str(exc), "entries": entries}})

    # -- writing -----------------------------------------------------------------------------

    async def _flush(self) -> None:
        fl = self.buffer.take()
        written: list[tuple[str, Path, int]] = []
        if fl.rows:
            written = await asyncio.to_thread(self._write_parts, fl)
            self.days_with_parts.update(day for day, _, _ in written)
        if self.fault == "exit_after_write" and written:
            log.warning("fault injection: exiting after the part rename, before the ack")
            os._exit(70)
        if fl.rows:
            self.written_rows += fl.rows
            self.parts_written += len(written)
            self.last_written_tick_id = fl.last_tick_id
        c = Commit()
        for eid in fl.acks:
            c.ack("ticks", eid)
        c.sets[self.status_key] = self._status_json()
        await self.ctx.bus.commit(self.name, c)
        for day, path, rows in written:
            log.info("part written", extra={"fields": {
                "day": day, "part": path.name, "rows": rows, "acked": len(fl.acks),
                "last_tick_id": fl.last_tick_id}})
        if self.buffer.latest_day:
            for day in core.days_to_compact(self.days_with_parts, self.buffer.latest_day):
                await self._compact(day)

    def _write_parts(self, fl: core.Flush) -> list[tuple[str, Path, int]]:
        out = []
        for day, cols in sorted(fl.days.items()):
            df = core.frame(cols)
            meta = {**core.file_metadata(day, **self.meta),
                    **core.span_metadata(fl.spans.get(day), df.height)}
            path = self.store.write_part(day, df, meta)
            out.append((day, path, df.height))
        return out

    async def _compact(self, day: str) -> None:
        if day not in self.days_with_parts and not self.store.parts(day):
            return
        res = await asyncio.to_thread(self.store.compact, day)
        self.days_with_parts.discard(day)
        self.compacted[day] = res.rows
        log.info("day compacted", extra={"fields": {
            "day": day, "file": str(res.path), "rows": res.rows, "parts": res.parts,
            "duplicates_removed": res.duplicates}})

    # -- status ------------------------------------------------------------------------------

    def _status_json(self) -> bytes:
        return orjson.dumps({
            "service": self.name, "instance": self.ctx.instance, "ts": time.time_ns(),
            "dir": str(self.store.root), **self.info(),
            "uncompacted_days": sorted(self.days_with_parts), "compacted": self.compacted,
            "trim_gaps": list(self.trim_gaps.values()),
        })

    async def _refresh(self, force: bool = False) -> None:
        """At most once a second: the group's lag, pending count and trim loss, and the status key."""
        now = time.monotonic()
        if not force and now - self._last_status < STATUS_INTERVAL_S:
            return
        self._last_status = now
        r = self.ctx.redis
        key = self.ctx.keys.stream("ticks")
        try:  # one MULTI, so the stream's and the group's counters agree
            pipe = r.pipeline(transaction=True)
            pipe.xinfo_stream(key)
            pipe.xinfo_groups(key)
            stream, groups = await pipe.execute()
        except ResponseError:
            return  # no stream yet
        except RedisError as exc:
            raise BusError(f"recorder status read failed: {exc}") from exc
        group = next((g for g in groups if _s(g.get("name")) == self.name), None)
        if group is None:
            return
        lag = group.get("lag")
        self.lag = -1 if lag is None else int(lag)
        self.pending = int(group.get("pending") or 0)
        first = stream.get("first-entry")
        after = _s(group.get("last-delivered-id")) or streamids.ZERO
        first_id = _s(first[0]) if first else None
        n = core.trimmed_unread(last_delivered=after, first_entry=first_id,
                                length=int(stream.get("length") or 0),
                                lag=None if lag is None else int(lag))
        if n and self.trim_gaps.get(after, {}).get("count") != n:
            # Keyed by the id the gap starts after: a gap keeps growing while trimming goes on.
            self.trim_gaps[after] = {"after_id": after, "first_remaining_id": first_id, "count": n}
            while len(self.trim_gaps) > MAX_TRIM_GAPS:
                self.trim_gaps.pop(next(iter(self.trim_gaps)))
            log.warning("ticks were trimmed from the stream before the recorder read them",
                        extra={"fields": self.trim_gaps[after]})
        try:
            await r.set(self.status_key, self._status_json())
        except RedisError as exc:
            raise BusError(f"recorder status write failed: {exc}") from exc


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else ("" if v is None else str(v))
