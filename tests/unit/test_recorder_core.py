"""Recorder core: IST day partitioning, flush decisions, part naming, merge/dedupe, paise exactness,
the raw capture format; and the file layer on a temporary directory (no servers)."""

from __future__ import annotations

import os
import zlib
from datetime import datetime

import polars as pl
import pytest

from services.feed.replay import load_session, read_metadata
from services.recorder import core
from services.recorder.service import (
    RawRecorder,
    Recordings,
    flush_policy,
    iter_raw,
    record_dir,
    source_metadata,
)
from shared.clock import IST, NS_PER_S
from shared.config import load_env
from shared.errors import ConfigError
from shared.keys import Keys
from shared.messages import Tick
from shared.types import round_to_tick


def ist_ns(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, s, tzinfo=IST).timestamp()) * NS_PER_S


MIDNIGHT = ist_ns(2026, 1, 6)  # IST midnight starting Tuesday 2026-01-06 (18:30 UTC the day before)


def tick(i: int, ts: int, ltp_paise: int = 15230, **kw) -> tuple[str, Tick]:
    tid = f"{ts // 1_000_000}-{i}"
    fields = dict(segment="NSE_FNO", security_id=40001, ltp_paise=ltp_paise, ltq=75, ltt_s=ts // NS_PER_S,
                  volume=1000 + i, oi=5000, bid_paise=ltp_paise - 5, ask_paise=ltp_paise + 5,
                  bid_qty=300, ask_qty=450, kind="full")
    fields.update(kw)
    return tid, Tick(msg_id=f"tick-{tid}", ts_event=ts, ts_init=ts + 1000, tick_id=tid, **fields)


# --------------------------------------------------------------------------- days


def test_trading_day_changes_exactly_at_ist_midnight_not_utc_midnight():
    assert core.trading_day(MIDNIGHT) == "2026-01-06"
    assert core.trading_day(MIDNIGHT - 1) == "2026-01-05"  # one nanosecond before
    utc_midnight = int(datetime.fromisoformat("2026-01-06T00:00:00+00:00").timestamp()) * NS_PER_S
    assert core.trading_day(utc_midnight - 1) == "2026-01-06"  # 05:29:59 IST, already the 6th
    assert core.trading_day(ist_ns(2026, 1, 6, 15, 30)) == "2026-01-06"


def test_buffer_splits_rows_of_a_session_crossing_ist_midnight_into_two_days():
    buf = core.RowBuffer()
    for i, ts in enumerate([MIDNIGHT - 2, MIDNIGHT - 1, MIDNIGHT, MIDNIGHT + 1]):
        eid, t = tick(i, ts)
        buf.add_tick(eid, t, 0.0)
    fl = buf.take()
    assert sorted(fl.days) == ["2026-01-05", "2026-01-06"]
    assert list(fl.days["2026-01-05"]["ts_recv_ns"]) == [MIDNIGHT - 2, MIDNIGHT - 1]
    assert list(fl.days["2026-01-06"]["ts_recv_ns"]) == [MIDNIGHT, MIDNIGHT + 1]
    assert fl.rows == 4 and len(fl.acks) == 4
    assert buf.latest_day == "2026-01-06"


def test_days_before_the_latest_seen_day_are_ready_for_compaction():
    assert core.days_to_compact({"2026-01-06", "2026-01-02", "2026-01-05"}, "2026-01-06") == [
        "2026-01-02", "2026-01-05"]
    assert core.days_to_compact({"2026-01-06"}, "2026-01-06") == []


# --------------------------------------------------------------------------- flushing


def test_flush_is_due_after_the_interval_since_the_oldest_buffered_entry():
    buf = core.RowBuffer(core.FlushPolicy(flush_interval_s=5.0, flush_rows=1000))
    assert not buf.due(100.0)  # nothing buffered
    eid, t = tick(0, MIDNIGHT)
    buf.add_tick(eid, t, 10.0)
    eid, t = tick(1, MIDNIGHT + 1)
    buf.add_tick(eid, t, 14.0)  # a later entry does not move the deadline
    assert not buf.due(14.999)
    assert buf.due(15.0)
    buf.take()
    assert not buf.due(1000.0) and len(buf) == 0 and buf.since_s is None


def test_flush_is_due_as_soon_as_flush_rows_rows_are_buffered():
    buf = core.RowBuffer(core.FlushPolicy(flush_interval_s=3600, flush_rows=3))
    for i in range(2):
        buf.add_tick(*tick(i, MIDNIGHT + i), 0.0)
    assert not buf.due(0.0)
    buf.add_tick(*tick(2, MIDNIGHT + 2), 0.0)
    assert buf.due(0.0)


def test_clock_entries_are_acked_with_the_next_flush_and_write_no_rows():
    buf = core.RowBuffer(core.FlushPolicy(flush_interval_s=1, flush_rows=10))
    assert buf.add_other("5-0", 0.0)
    assert buf.due(1.0)
    fl = buf.take()
    assert fl.acks == ["5-0"] and fl.rows == 0 and fl.days == {}


def test_an_entry_delivered_twice_while_buffered_is_kept_once():
    buf = core.RowBuffer()
    eid, t = tick(0, MIDNIGHT)
    assert buf.add_tick(eid, t, 0.0)
    assert not buf.add_tick(eid, t, 1.0)  # re-claimed by XAUTOCLAIM before the flush
    fl = buf.take()
    assert fl.rows == 1 and fl.acks == [eid]


def test_flush_policy_comes_from_the_environment_and_rejects_bad_values():
    p = flush_policy({"SCALPER_RECORD_FLUSH_S": "0.5", "SCALPER_RECORD_FLUSH_ROWS": "10"})
    assert (p.flush_interval_s, p.flush_rows) == (0.5, 10)
    assert flush_policy({}) == core.FlushPolicy(flush_interval_s=5.0, flush_rows=10_000)
    with pytest.raises(ConfigError, match="SCALPER_RECORD_FLUSH_S"):
        flush_policy({"SCALPER_RECORD_FLUSH_S": "soon"})
    with pytest.raises(ConfigError, match="SCALPER_RECORD_FLUSH_ROWS"):
        flush_policy({"SCALPER_RECORD_FLUSH_ROWS": "0"})


def test_record_dir_defaults_under_the_namespace_run_dir():
    env = load_env({"SCALPER_NAMESPACE": "paper"})
    assert str(record_dir(env, {})) == "run/paper/recordings"
    assert str(record_dir(env, {"SCALPER_RUN_DIR": "/srv/run/paper"})) == "/srv/run/paper/recordings"
    assert str(record_dir(env, {"SCALPER_RECORD_DIR": "/data/rec", "SCALPER_RUN_DIR": "/x"})) == "/data/rec"


def test_a_replayed_session_s_synthetic_label_is_carried_into_recordings(tmp_path):
    src = tmp_path / "synth.parquet"
    _df([tick(0, MIDNIGHT)]).write_parquet(src, metadata={"synthetic": "true", "label": "SYNTHETIC"})
    assert source_metadata({"SCALPER_REPLAY_FILE": str(src)}) == {
        "synthetic": "true", "label": "SYNTHETIC", "source_file": "synth.parquet"}
    assert source_metadata({}) == {"synthetic": "false"}


def test_status_key_is_namespaced_with_the_hash_tag():
    assert core.status_key(Keys("paper")) == "scalper:{paper}:recorder:status"


# --------------------------------------------------------------------------- names


def test_part_names_sort_by_number_and_temp_names_are_not_parts():
    assert core.part_name(42) == "part-00042.parquet"
    assert core.part_number("part-00042.parquet") == 42
    assert core.part_number("part-123456.parquet") == 123456
    tmp = core.tmp_name("part-00042.parquet", 999)
    assert core.is_tmp_name(tmp) and core.part_number(tmp) is None
    assert core.part_number("2026-01-06.parquet") is None
    assert core.is_day("2026-01-06") and not core.is_day("2026-13-01") and not core.is_day("raw")


# --------------------------------------------------------------------------- paise exactness


def test_paise_to_rupees_round_trips_exactly_for_every_price_up_to_ten_lakh_rupees(rng):
    # Every paise value up to Rs 10,000, then random ones up to Rs 1 crore (and negatives).
    values = list(range(0, 1_000_001)) + [rng.randrange(-10**9, 10**9) for _ in range(200_000)]
    bad = [p for p in values if round(core.paise_to_rupees(p) * 100) != p]
    assert bad == []
    # ... and through the replay's own conversion at a 1-paisa tick.
    assert all(round_to_tick(core.paise_to_rupees(p), 1) == p for p in values[::97])


def test_rupee_columns_survive_a_parquet_write_bit_for_bit(tmp_path, rng):
    paise = [rng.randrange(1, 5_000_000) for _ in range(5000)]
    buf = core.RowBuffer()
    for i, p in enumerate(paise):
        buf.add_tick(*tick(i, MIDNIGHT + i, ltp_paise=p), 0.0)
    df = core.frame(buf.take().days["2026-01-06"])
    df.write_parquet(tmp_path / "x.parquet")
    back = pl.read_parquet(tmp_path / "x.parquet")
    assert back.schema == pl.Schema(core.SCHEMA)
    assert [round(x * 100) for x in back["ltp"].to_list()] == paise
    assert [round(x * 100) for x in back["bid"].to_list()] == [p - 5 for p in paise]


# --------------------------------------------------------------------------- merge / compaction


def _df(rows: list[tuple[str, Tick]]) -> pl.DataFrame:
    buf = core.RowBuffer()
    for eid, t in rows:
        buf.add_tick(eid, t, 0.0)
    fl = buf.take()
    return core.frame(next(iter(fl.days.values())))


def test_merge_sorts_by_receive_time_then_tick_id_and_keeps_one_row_per_tick_id():
    a = [tick(i, MIDNIGHT + 10 * i) for i in range(5)]
    same_ms = [("1767637800000-9", a[0][1]), ("1767637800000-10", a[0][1])]  # seq 9 < 10 numerically
    p1 = _df([a[3], a[1], same_ms[1]])
    p2 = _df([a[1], a[0], a[4], same_ms[0]])  # a[1] written twice (crash between write and ack)
    p3 = _df([a[2], a[3]])
    out = core.merge([p1, p2, p3])
    assert out["tick_id"].to_list() == [a[0][0], same_ms[0][0], same_ms[1][0], a[1][0], a[2][0],
                                        a[3][0], a[4][0]]
    assert out.height == 7 and out["tick_id"].n_unique() == 7


def test_compaction_merges_parts_dedupes_by_tick_id_and_removes_the_parts(tmp_path):
    store = Recordings(tmp_path)
    ticks = [tick(i, ist_ns(2026, 1, 6, 9, 15) + i * 1_000_000) for i in range(100)]
    meta = core.file_metadata("2026-01-06")
    p0 = store.write_part("2026-01-06", _df(ticks[:60]), meta)
    p1 = store.write_part("2026-01-06", _df(ticks[40:]), meta)  # 20 ticks written twice
    assert (p0.name, p1.name) == ("part-00000.parquet", "part-00001.parquet")
    res = store.compact("2026-01-06")
    assert (res.rows, res.parts, res.duplicates) == (100, 2, 20)
    assert res.path == tmp_path / "2026-01-06.parquet"
    assert not (tmp_path / "2026-01-06").exists()
    rec = load_session(res.path)
    assert rec.trading_day == "2026-01-06" and rec.n == 100
    assert rec.c["ts_recv_ns"] == [t.ts_event for _, t in ticks]
    md = read_metadata(res.path)
    assert md["synthetic"] == "false" and md["recorder"] == core.RECORDER_VERSION
    # More parts later the same day merge with the compacted file.
    store.write_part("2026-01-06", _df([tick(100, ist_ns(2026, 1, 6, 15, 0))] + ticks[:3]), meta)
    res2 = store.compact("2026-01-06")
    assert (res2.rows, res2.duplicates) == (101, 3)


def test_parts_never_overwrite_and_numbering_continues_after_a_restart(tmp_path):
    meta = core.file_metadata("2026-01-06")
    Recordings(tmp_path).write_part("2026-01-06", _df([tick(0, MIDNIGHT)]), meta)
    Recordings(tmp_path).write_part("2026-01-06", _df([tick(1, MIDNIGHT + 1)]), meta)  # new process
    (tmp_path / "2026-01-06" / core.tmp_name("part-00002.parquet", 1)).write_bytes(b"torn")
    store = Recordings(tmp_path)
    assert [p.name for p in store.parts("2026-01-06")] == ["part-00000.parquet", "part-00001.parquet"]
    assert store.remove_tmp() == 1
    assert store.days_with_parts() == ["2026-01-06"]


def test_compacting_a_day_without_a_recording_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="2026-01-07"):
        Recordings(tmp_path).compact("2026-01-07")


# --------------------------------------------------------------------------- trim accounting


def test_trimmed_unread_counts_entries_trimmed_past_the_groups_last_delivered_id():
    # group read 1..5; stream had 10, trimmed to 9-0..10-0: 6, 7, 8 were never read
    assert core.trimmed_unread(last_delivered="5-0", first_entry="9-0", length=2, lag=5) == 3
    assert core.trimmed_unread(last_delivered="5-0", first_entry="3-0", length=8, lag=5) == 0
    assert core.trimmed_unread(last_delivered="5-0", first_entry=None, length=0, lag=5) == 5
    assert core.trimmed_unread(last_delivered="10-0", first_entry=None, length=0, lag=0) == 0
    assert core.trimmed_unread(last_delivered="5-0", first_entry="9-0", length=2, lag=None) == -1


# --------------------------------------------------------------------------- raw format


def test_raw_records_round_trip_and_a_torn_tail_stops_reading_cleanly(rng):
    frames = [(MIDNIGHT + i, rng.randbytes(rng.randrange(1, 400))) for i in range(50)]
    buf = core.RAW_MAGIC + b"".join(core.pack_raw(f, ts) for ts, f in frames)
    r = core.RawReader(buf)
    assert list(r) == frames and r.error == "" and r.torn == 0 and r.good_end == len(buf)
    last = len(core.pack_raw(frames[-1][1], 0))
    for keep in (1, core.RAW_RECORD.size - 1, core.RAW_RECORD.size, last - 1):
        torn = buf[: len(buf) - last + keep]
        r = core.RawReader(torn)
        assert list(r) == frames[:-1], keep
        assert r.error.startswith("torn") and r.good_end == len(buf) - last and r.torn == keep


def test_a_zero_filled_or_corrupt_last_record_ends_reading_with_a_reason():
    good = core.RAW_MAGIC + core.pack_raw(b"\x08abc", 1)
    r = core.RawReader(good + bytes(64))  # a crash after the size grew but before the data
    assert list(r) == [(1, b"\x08abc")] and "length 0" in r.error and r.torn == 64
    rec = bytearray(core.pack_raw(b"hello", 2))
    rec[-1] ^= 0xFF
    r = core.RawReader(good + bytes(rec))
    assert list(r) == [(1, b"\x08abc")] and "CRC" in r.error
    assert core.RAW_RECORD.unpack_from(core.pack_raw(b"hello", 2))[2] == zlib.crc32(b"hello")


def test_a_file_that_is_not_a_raw_capture_is_refused():
    with pytest.raises(core.RawFormatError, match="not a raw capture"):
        core.RawReader(b"PAR1....")
    with pytest.raises(core.RawFormatError):
        core.pack_raw(b"", 1)


def test_raw_recorder_switches_file_at_ist_midnight_and_cuts_a_torn_tail_on_reopen(tmp_path):
    t = [0.0]
    rec = RawRecorder(tmp_path, fsync_interval_s=10, now_s=lambda: t[0])
    rec.append(b"\x08one", MIDNIGHT - 1)
    rec.append(b"\x08two", MIDNIGHT)
    t[0] = 11.0
    rec.append(b"\x08three", MIDNIGHT + 5)
    rec.close()
    d5, d6 = rec.path("2026-01-05"), rec.path("2026-01-06")
    assert list(iter_raw(d5)) == [(MIDNIGHT - 1, b"\x08one")]
    assert list(iter_raw(d6)) == [(MIDNIGHT, b"\x08two"), (MIDNIGHT + 5, b"\x08three")]
    size = d6.stat().st_size
    with open(d6, "ab") as f:  # a crash mid-write leaves half a record
        f.write(core.pack_raw(b"\x08lost", MIDNIGHT + 6)[:7])
    with RawRecorder(tmp_path) as rec2:
        rec2.append(b"\x08four", MIDNIGHT + 7)
        assert rec2.torn_bytes_cut == 7
    assert [f for _, f in iter_raw(d6)] == [b"\x08two", b"\x08three", b"\x08four"]
    assert d6.stat().st_size == size + len(core.pack_raw(b"\x08four", 0))
    assert os.access(d6, os.R_OK)


# --------------------------------------------------------------------------- compaction fast path


def _keys(rows: list[tuple[int, str]]) -> pl.LazyFrame:
    return pl.DataFrame({"ts_recv_ns": [r[0] for r in rows], "tick_id": [r[1] for r in rows]},
                        schema={"ts_recv_ns": pl.Int64, "tick_id": pl.String}).lazy()


def test_key_span_is_first_and_last_key_of_a_strictly_increasing_file() -> None:
    assert core.key_span(_keys([(10, "5-0"), (10, "5-1"), (11, "5-2"), (20, "9-0")])) == ((10, 5, 0), (20, 9, 0))


@pytest.mark.parametrize("rows", [
    [(10, "5-0"), (9, "5-1")],             # receive time goes back
    [(10, "5-1"), (10, "5-0")],            # same time, tick ids out of order
    [(10, "5-0"), (10, "5-0")],            # a tick written twice
    [(10, "5-0"), (11, "not-an-id")],      # unparsable id
    [],
])
def test_key_span_is_none_unless_strictly_increasing(rows) -> None:
    assert core.key_span(_keys(rows)) is None


def test_concatenable_only_when_each_file_starts_after_the_previous_ends() -> None:
    a, b, c = ((1, 1, 0), (5, 5, 0)), ((6, 6, 0), (9, 9, 0)), ((5, 5, 0), (7, 7, 0))
    assert core.concatenable([a, b])
    assert not core.concatenable([b, a])
    assert not core.concatenable([a, c])  # overlaps at (5, 5, 0): a re-read after a crash
    assert not core.concatenable([a, None])
    assert core.concatenable([])
