"""Recorder memory savings that must not change what is recorded: typed-array buffer columns, the
key span a part records so compaction need not read the parts back, and compaction's output
being the same rows whichever way it learns the spans."""

from __future__ import annotations

from array import array
from datetime import datetime

import polars as pl
import pytest

from services.recorder import core
from services.recorder.service import Recordings
from shared.clock import IST, NS_PER_S
from shared.messages import Tick

DAY = "2026-01-06"
T0 = 1_767_671_100 * NS_PER_S  # 09:15 IST on DAY


def random_tick(rng, i: int, ts: int) -> tuple[str, Tick]:
    tid = f"{ts // 1_000_000}-{i}"
    ltp = rng.randrange(-(10**9), 10**9)
    return tid, Tick(
        msg_id=f"tick-{tid}",
        ts_event=ts,
        ts_init=ts + rng.randrange(0, 10**6),
        tick_id=tid,
        segment=rng.choice(["IDX_I", "NSE_FNO"]),
        security_id=rng.randrange(0, 2**63),
        ltp_paise=ltp,
        ltq=rng.randrange(-(2**63), 2**63),
        ltt_s=ts // NS_PER_S,
        volume=rng.randrange(0, 10**12),
        oi=rng.randrange(0, 10**9),
        bid_paise=ltp - 5,
        ask_paise=ltp + 5,
        bid_qty=rng.randrange(0, 5000),
        ask_qty=rng.randrange(0, 5000),
        kind=rng.choice(["full", "quote", "ticker"]),
    )


def stream(rng, n: int) -> list[tuple[str, Tick]]:
    """Ticks in stream order: receive times never go back, several in one millisecond."""
    ts, out = T0, []
    for i in range(n):
        ts += rng.choice([0, 1, 999_999, 3_000_000])
        out.append(random_tick(rng, i, ts))
    return out


def flush_of(ticks: list[tuple[str, Tick]]) -> core.Flush:
    buf = core.RowBuffer()
    for eid, t in ticks:
        buf.add_tick(eid, t, 0.0)
    return buf.take()


def write_parts(
    store: Recordings, ticks: list[tuple[str, Tick]], rows: int, *, spans: bool
) -> None:
    """As the recorder writes them (``spans``) or as an older recorder did (no span metadata)."""
    for off in range(0, len(ticks), rows):
        fl = flush_of(ticks[off : off + rows])
        df = core.frame(fl.days[DAY])
        meta = core.file_metadata(DAY)
        if spans:
            meta.update(core.span_metadata(fl.spans[DAY], df.height))
        store.write_part(DAY, df, meta)


def test_buffered_numbers_are_typed_arrays_and_the_frame_holds_exactly_the_tick_values(rng):
    ticks = stream(rng, 500)
    cols = flush_of(ticks).days[DAY]
    assert {n for n, c in cols.items() if isinstance(c, array)} == {
        n for n, t in core.SCHEMA.items() if t in (pl.Int64, pl.Float64)
    }
    df = core.frame(cols)
    assert df.schema == pl.Schema(core.SCHEMA)
    assert df["ltq"].to_list() == [t.ltq for _, t in ticks]  # the whole int64 range
    assert df["security_id"].to_list() == [t.security_id for _, t in ticks]
    assert [round(x * 100) for x in df["bid"].to_list()] == [t.bid_paise for _, t in ticks]
    assert df["tick_id"].to_list() == [eid for eid, _ in ticks]
    assert df["kind"].to_list() == [t.kind for _, t in ticks]


def test_a_day_in_stream_order_has_its_first_and_last_key_as_span(rng):
    ticks = [random_tick(rng, i, T0) for i in range(3)]  # one millisecond: seq 0, 1, 2
    fl = flush_of(ticks)
    assert fl.spans == {DAY: ((T0, T0 // 1_000_000, 0), (T0, T0 // 1_000_000, 2))}


def test_a_day_with_an_entry_out_of_order_has_no_span(rng):
    ticks = stream(rng, 10)
    reclaimed = [*ticks[:4], ticks[6], ticks[4], ticks[5], *ticks[7:]]  # re-claimed late
    assert flush_of(reclaimed).spans == {DAY: None}
    assert flush_of(ticks[:1] + ticks[:1]).spans[DAY] is not None  # a duplicate is dropped


def test_a_day_crossing_ist_midnight_gets_one_span_per_day(rng):
    midnight = int(datetime(2026, 1, 7, tzinfo=IST).timestamp()) * NS_PER_S
    ticks = [random_tick(rng, i, midnight - 2 + i) for i in range(4)]
    spans = flush_of(ticks).spans
    assert sorted(spans) == ["2026-01-06", "2026-01-07"]
    assert all(s is not None for s in spans.values())


def test_span_metadata_round_trips_and_anything_else_reads_as_unknown():
    span = ((T0, 5, 0), (T0 + 9, 7, 3))
    assert core.span_of_metadata(core.span_metadata(span, 42)) == (span, 42)
    assert core.span_of_metadata(core.span_metadata(None, 42)) is None  # out of order: read it
    assert core.span_of_metadata({"rows": "42"}) is None  # an older recorder's part
    assert core.span_of_metadata({"rows": "x", "key_first": "1,2,3", "key_last": "4,5,6"}) is None
    assert core.span_of_metadata({"rows": "1", "key_first": "1,2", "key_last": "4,5,6"}) is None


def test_compaction_trusts_recorded_spans_and_writes_the_same_rows_as_when_it_reads_them(
    tmp_path, rng, monkeypatch
):
    ticks = stream(rng, 2_500)
    old, new = Recordings(tmp_path / "old"), Recordings(tmp_path / "new")
    write_parts(old, ticks, 700, spans=False)
    write_parts(new, ticks, 700, spans=True)
    expected = old.compact(DAY)

    def no_reading(lf):
        raise AssertionError("compaction read a part back although its span was recorded")

    monkeypatch.setattr(core, "key_span", no_reading)
    got = new.compact(DAY)
    assert (
        (got.rows, got.parts, got.duplicates) == (expected.rows, expected.parts, 0) == (2_500, 4, 0)
    )
    assert pl.read_parquet(got.path).equals(pl.read_parquet(expected.path))
    meta = pl.read_parquet_metadata(got.path)
    first, last = ticks[0], ticks[-1]
    assert core.span_of_metadata(meta) == (
        (
            (first[1].ts_event, *map(int, first[0].split("-"))),
            (last[1].ts_event, *map(int, last[0].split("-"))),
        ),
        2_500,
    )


def test_a_later_part_merges_with_the_compacted_day_using_its_recorded_span(
    tmp_path, rng, monkeypatch
):
    ticks = stream(rng, 1_000)
    store = Recordings(tmp_path)
    write_parts(store, ticks[:600], 300, spans=True)
    store.compact(DAY)
    write_parts(store, ticks[600:], 300, spans=True)
    monkeypatch.setattr(core, "key_span", lambda lf: pytest.fail("read a part back"))
    res = store.compact(DAY)
    assert (res.rows, res.parts, res.duplicates) == (1_000, 2, 0)
    assert pl.read_parquet(res.path)["tick_id"].to_list() == [eid for eid, _ in ticks]


def test_parts_written_twice_after_a_crash_are_still_deduplicated(tmp_path, rng):
    ticks = stream(rng, 1_000)
    store = Recordings(tmp_path)
    write_parts(store, ticks[:600], 600, spans=True)
    write_parts(store, ticks[400:], 600, spans=True)  # 200 re-read and written again
    res = store.compact(DAY)
    assert (res.rows, res.duplicates) == (1_000, 200)
    assert pl.read_parquet(res.path)["tick_id"].to_list() == [eid for eid, _ in ticks]
    assert core.span_of_metadata(pl.read_parquet_metadata(res.path)) is None  # sorted in memory
