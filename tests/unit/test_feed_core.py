"""Feed core and replay planning: tick ids across several days, the IST window, the order of the
day files, the progress/ETA arithmetic the CLI shows; and what the other stages' cores do at a
day boundary of a multi-day replay (their per-day state must not leak into the next day)."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from services.entries.guard import EntryContext, EntryGuard
from services.feed.core import RateMeter, Recorded, TickIdAllocator, session_messages
from services.feed.replay import (
    DayPlan,
    FileSession,
    eta_s,
    event_done_s,
    event_total_s,
    fmt_duration,
    load_session,
    order_days,
    plan_days,
    progress_line,
    remaining_event_s,
    scan_session,
    slowest_frontier_ns,
)
from shared import streamids
from shared.clock import NS_PER_S, ist_minute_of_day, ist_to_ns
from shared.config import CapitalConfig, EntriesConfig, IndexConfig, RiskConfig
from shared.messages import Clock, SessionEnd, Signal, Tick

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "session.parquet"
D1, D2 = date(2026, 12, 1), date(2026, 12, 2)
NIFTY = IndexConfig(key="NIFTY", security_id=13, options_segment="NSE_FNO", exchange="NSE")


def recorded(day: date, offsets_s: list[float], *, security_id: int = 13) -> Recorded:
    """A tiny recorded session: one index tick at each offset (seconds after 09:15 IST)."""
    ts = [ist_to_ns(day, "09:15", s) for s in offsets_s]
    n = len(ts)
    cols = {
        "ts_recv_ns": ts, "segment": ["IDX_I"] * n, "security_id": [security_id] * n,
        "ltp": [26000.0 + i for i in range(n)], "ltq": [0] * n, "ltt_s": [t // NS_PER_S for t in ts],
        "volume": [0] * n, "oi": [0] * n, "bid": [0.0] * n, "ask": [0.0] * n, "bid_qty": [0] * n,
        "ask_qty": [0] * n, "kind": ["ticker"] * n,
    }
    return Recorded(cols, day.isoformat())


def plan(day: date, first: str, last: str, ticks: int = 100, path: str | None = None) -> DayPlan:
    return DayPlan(path=path or f"/x/{day}.parquet", trading_day=day.isoformat(), ticks=ticks,
                   ts_first=ist_to_ns(day, first), ts_last=ist_to_ns(day, last))


# --------------------------------------------------------------------------- tick ids across days


def test_tick_ids_increase_strictly_across_days_and_each_day_ends_with_its_session_end():
    ids = TickIdAllocator()
    out = []
    for day in (D1, D2):
        out += list(session_messages(recorded(day, [0.1, 0.1004, 2.5, 2.5]), lambda: 0, ids=ids))
    keys = [streamids.parse(tid) for tid, _ in out]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert all(m.tick_id == tid for tid, m in out)
    ends = [(i, m) for i, (_, m) in enumerate(out) if isinstance(m, SessionEnd)]
    assert [m.trading_day for _, m in ends] == ["2026-12-01", "2026-12-02"]
    assert ends[-1][0] == len(out) - 1
    # the end of day 1 comes right after its last tick, before any message of day 2
    i1 = ends[0][0]
    assert isinstance(out[i1 - 1][1], Tick) and out[i1 + 1][1].ts_event >= ist_to_ns(D2, "09:15")


def test_no_clock_heartbeats_are_made_up_for_the_night_between_two_days():
    ids = TickIdAllocator()
    msgs = []
    for day in (D1, D2):
        msgs += [m for _, m in session_messages(recorded(day, [0.5, 3.5]), lambda: 0, ids=ids)]
    clocks = [m for m in msgs if isinstance(m, Clock)]
    # 09:15:01, :02, :03 on each day (interval 1 s), nothing overnight
    assert [ist_minute_of_day(c.ts_event) for c in clocks] == [555] * 6
    assert len(clocks) == 6


def test_a_day_gets_the_same_ids_after_a_previous_day_as_when_replayed_alone():
    """So day N's msg_ids (and the ledger derived from them) do not depend on what came before."""
    ids = TickIdAllocator()
    list(session_messages(recorded(D1, [0.1, 9.0]), lambda: 0, ids=ids))
    after = [tid for tid, _ in session_messages(recorded(D2, [0.2, 0.2, 7.0]), lambda: 0, ids=ids)]
    alone = [tid for tid, _ in session_messages(recorded(D2, [0.2, 0.2, 7.0]), lambda: 0)]
    assert after == alone


# --------------------------------------------------------------------------- the window and the plan


def test_load_session_keeps_exactly_the_ticks_inside_the_ist_window():
    rec = load_session(SAMPLE, from_hhmm="09:20", to_hhmm="09:25")
    every = pl.read_parquet(SAMPLE, columns=["ts_recv_ns"])["ts_recv_ns"].to_list()
    expected = sorted(t for t in every if 560 <= ist_minute_of_day(t) < 565)
    assert rec.c["ts_recv_ns"] == expected and rec.n == len(expected) > 0
    assert rec.trading_day == "2026-12-01"


def test_a_session_file_in_receive_order_replays_from_the_file_a_chunk_at_a_time():
    rec = load_session(SAMPLE, from_hhmm="09:20", to_hhmm="09:40")
    assert isinstance(rec, FileSession)
    df = pl.read_parquet(SAMPLE)
    df = df[[i for i, t in enumerate(df["ts_recv_ns"]) if 560 <= ist_minute_of_day(t) < 580]]
    whole = Recorded({c: df[c].to_list() for c in Recorded.COLUMNS}, rec.trading_day)
    chunks = list(rec.chunks())
    assert len(chunks) > 1 and all(len(c["ts_recv_ns"]) <= FileSession.CHUNK_ROWS for c in chunks)
    assert list(session_messages(rec, lambda: 7)) == list(session_messages(whole, lambda: 7))


def test_a_session_file_out_of_receive_order_is_sorted_before_replay(tmp_path, rng):
    df = pl.read_parquet(SAMPLE, n_rows=3000)
    order = list(range(df.height))
    rng.shuffle(order)
    shuffled = tmp_path / "shuffled.parquet"
    df[order].write_parquet(shuffled, metadata={"trading_day": "2026-12-01"})
    rec = load_session(shuffled)
    assert not isinstance(rec, FileSession)
    assert rec.c["ts_recv_ns"] == sorted(df["ts_recv_ns"].to_list())
    assert rec.n == 3000 and rec.trading_day == "2026-12-01"


def test_scan_session_agrees_with_load_session_without_loading_the_rows():
    p = scan_session(SAMPLE, from_hhmm="09:15", to_hhmm="09:50")
    rec = load_session(SAMPLE, from_hhmm="09:15", to_hhmm="09:50")
    assert (p.trading_day, p.ticks) == ("2026-12-01", rec.n)
    assert (p.ts_first, p.ts_last) == (rec.c["ts_recv_ns"][0], rec.c["ts_recv_ns"][-1])


def test_an_empty_window_is_an_error_naming_the_file():
    with pytest.raises(ValueError, match=r"session.parquet: no ticks between 03:00 and 04:00"):
        scan_session(SAMPLE, from_hhmm="03:00", to_hhmm="04:00")


def test_days_are_ordered_by_date_whatever_order_they_are_given_in():
    d3 = plan(date(2026, 12, 3), "09:15", "15:29")
    d1, d2 = plan(D1, "09:15", "15:29"), plan(D2, "09:15", "15:29")
    assert order_days([d3, d1, d2]) == [d1, d2, d3]


def test_two_files_of_one_trading_day_are_refused():
    a = plan(D1, "09:15", "11:00", path="/x/a.parquet")
    b = plan(D1, "12:00", "15:29", path="/x/b.parquet")
    with pytest.raises(ValueError, match="a.parquet and b.parquet: both are trading day 2026-12-01"):
        order_days([b, a])


def test_overlapping_days_are_refused_because_tick_ids_would_go_back():
    a = DayPlan(path="/x/a.parquet", trading_day="2026-12-01", ticks=1, ts_first=ist_to_ns(D1, "09:15"),
                ts_last=ist_to_ns(D2, "09:20"))  # a recording running past midnight
    b = plan(D2, "09:15", "15:29", path="/x/b.parquet")
    with pytest.raises(ValueError, match="b.parquet starts before a.parquet ends"):
        order_days([a, b])


def test_the_same_file_given_twice_is_refused():
    with pytest.raises(ValueError, match="given twice"):
        plan_days([SAMPLE, SAMPLE.parent / ".." / "sample" / "session.parquet"])


def test_event_time_left_and_done_skip_the_nights_between_days():
    days = [plan(D1, "09:15", "10:15"), plan(D2, "09:15", "09:45")]
    assert event_total_s(days) == 5400
    at = ist_to_ns(D1, "09:45")
    assert remaining_event_s(days, 0, at) == 1800 + 1800
    assert event_done_s(days, at) == 1800
    assert event_done_s(days, ist_to_ns(D1, "20:00")) == 3600  # the night: day 1 done, day 2 not begun
    assert event_done_s(days, ist_to_ns(D2, "09:25")) == 3600 + 600
    assert remaining_event_s(days, 1, ist_to_ns(D2, "09:45")) == 0
    assert remaining_event_s(days, 2, 0) == 0


def test_replay_cli_refuses_bad_day_sets_and_speeds_before_starting_anything(tmp_path, capsys):
    from shared.cli import main

    shutil.copy(SAMPLE, tmp_path / "copy.parquet")
    assert main(["replay", str(SAMPLE), str(tmp_path / "copy.parquet")]) == 2
    assert "both are trading day 2026-12-01" in capsys.readouterr().err
    for speed in ("0", "-2", "fast", "nan"):
        assert main(["replay", str(SAMPLE), "--speed", speed]) == 2
        assert f"--speed {speed}: use max or a positive multiple" in capsys.readouterr().err


# --------------------------------------------------------------------------- progress and ETA


def test_rate_meter_measures_the_recent_slope_not_the_average_since_the_start():
    m = RateMeter(window_s=5.0)
    assert m.rate() == 0.0
    for t in range(0, 11):  # 100/s for 10 s ...
        m.add(float(t), 100 * t)
    for t in range(11, 21):  # ... then 1000/s
        m.add(float(t), 1000 + 1000 * (t - 10))
    assert m.rate() == pytest.approx(1000, rel=0.01)
    assert len(m.samples) <= 7


def test_eta_of_a_paced_replay_is_the_event_time_left_over_the_speed():
    st = {"state": "running", "speed": 20.0, "remaining_event_s": 1200.0, "rate": 5.0,
          "total": 1000, "ticks": 10}
    assert eta_s(st) == 60.0


def test_eta_at_max_speed_is_the_ticks_left_over_the_current_rate():
    st = {"state": "running", "speed": 0.0, "remaining_event_s": 1200.0, "rate": 2000.0,
          "total": 30_000, "ticks": 10_000}
    assert eta_s(st) == 10.0
    assert eta_s({**st, "rate": 0.0}) is None
    assert eta_s({**st, "state": "done"}) == 0.0


def test_progress_line_shows_day_event_time_in_ist_rate_and_eta():
    st = {"state": "running", "days": 2, "day_index": 2, "day": "2026-12-02",
          "ts_event": ist_to_ns(D2, "09:42", 17.4), "ticks": 12_345, "total": 33_069,
          "rate": 8120.4, "speed": 0.0}
    line = progress_line(st)
    for part in ("day 2/2", "2026-12-02 09:42:17 IST", "12,345/33,069 ticks 37%", "8,120 ticks/s",
                 "ETA 0:03"):
        assert part in line, (part, line)
    # the ETA shown is the later of the feed's and the slowest stage's
    line = progress_line(st, pipeline_ts=ist_to_ns(D1, "15:00"), pipeline_eta_s=75)
    assert "pipeline at 2026-12-01 15:00:00 IST" in line and "ETA 1:15" in line


def test_progress_line_when_the_feed_is_done_or_has_not_started():
    assert progress_line({}) == "feed: starting"
    done = progress_line({"state": "done", "ticks": 5, "total": 5, "ts_event": ist_to_ns(D1, "09:50")})
    assert "feed done" in done and "ETA" not in done and "day " not in done
    assert "ETA 0:09" in progress_line({"state": "done", "ticks": 5, "total": 5}, pipeline_eta_s=9)


def test_durations_are_shown_as_hours_minutes_seconds():
    assert [fmt_duration(x) for x in (None, 0, 59.6, 61, 3725)] == ["?", "0:00", "1:00", "1:01", "1:02:05"]


def test_the_pipeline_is_as_far_as_its_slowest_stage():
    assert slowest_frontier_ns([b"1796097358281-1", "1796097300000-0"]) == 1796097300000 * 1_000_000
    assert slowest_frontier_ns([b"1796097358281-1", None]) is None
    assert slowest_frontier_ns([]) is None


# --------------------------------------------------------------------------- the next day, downstream


def _signal(ts: int) -> Signal:
    return Signal(msg_id="sig-1", ts_event=ts, ts_init=ts, tick_id="1-0", index="NIFTY",
                  direction="bullish", timeframe_min=1, candle_ts=ts, close_paise=2_500_000,
                  supertrend_paise=2_490_000, adx=25.0, confidence=0.8, multiplier=1, reason="test")


def test_entry_cooldowns_and_the_trade_count_do_not_carry_into_the_next_day():
    """Cooldowns run in event time, so an exit late on day 1 no longer blocks day 2's first
    signal; the trades-per-day count starts again at 0."""
    g = EntryGuard(EntriesConfig(max_trades_per_day=1), RiskConfig(), CapitalConfig())
    c = EntryContext(trading_state="ACTIVE", available_capital_paise=10_000_000)
    g.record_entry(ist_to_ns(D1, "14:30"))
    g.record_exit("NIFTY-X-CE", "NIFTY", ist_to_ns(D1, "14:58", 30))
    late = ist_to_ns(D1, "14:59", 30)
    refused = g.check_signal(_signal(late), c, NIFTY, lambda p: 0)
    assert refused is not None and refused.rule == "max_trades_per_day"
    assert g.check_index_cooldown(NIFTY, late) is not None
    assert g.check_symbol_cooldown("NIFTY-X-CE", NIFTY, late) is not None
    nxt = ist_to_ns(D2, "09:20")  # the entry window's first minute
    assert g.check_signal(_signal(nxt), c, NIFTY, lambda p: 0) is None
    assert g.check_index_cooldown(NIFTY, nxt) is None
    assert g.check_symbol_cooldown("NIFTY-X-CE", NIFTY, nxt) is None
