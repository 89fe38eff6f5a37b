"""Candle builder: 09:15 IST grid, timeframe boundaries, gaps, the late-tick rule, warm-up."""

from __future__ import annotations

from datetime import date

import msgspec
import pytest

from shared.candles import Candle, CandleBuilder, candle_start_ns
from shared.clock import NS_PER_MIN, NS_PER_S, fmt_ist, ist_to_ns

DAY = date(2025, 1, 6)
NS_PER_MS = 1_000_000


def at(hhmm: str, seconds: float = 0.0, day: date = DAY) -> int:
    return ist_to_ns(day, hhmm, seconds)


def hhmm(ts: int) -> str:
    return fmt_ist(ts)[:5]


@pytest.mark.parametrize(
    ("tf", "tick", "start"),
    [
        (1, ("09:15", 0.0), "09:15"),
        (1, ("09:15", 59.999), "09:15"),
        (3, ("09:17", 59.0), "09:15"),
        (3, ("09:18", 0.0), "09:18"),
        (3, ("10:07", 30.0), "10:06"),
        (5, ("10:07", 30.0), "10:05"),
        (15, ("09:29", 59.0), "09:15"),
        (15, ("10:07", 30.0), "10:00"),
        (15, ("15:29", 59.0), "15:15"),
    ],
)
def test_candle_start_is_on_the_0915_ist_grid(tf: int, tick: tuple[str, float], start: str) -> None:
    assert candle_start_ns(at(*tick), tf) == at(start)


def test_first_candles_of_each_timeframe_start_at_0915_and_have_the_right_ohlc() -> None:
    for tf in (1, 3, 5, 15):
        b = CandleBuilder(timeframe_min=tf)
        prices = [2_400_000, 2_400_500, 2_399_000, 2_400_200]
        for i, p in enumerate(prices):
            assert b.on_tick(at("09:15", 10.0 * i), p) == []
        closed = b.on_tick(at("09:15") + tf * NS_PER_MIN, 2_401_000)
        assert closed == [
            Candle(
                ts_start=at("09:15"),
                timeframe_min=tf,
                open_paise=2_400_000,
                high_paise=2_400_500,
                low_paise=2_399_000,
                close_paise=2_400_200,
                ticks=4,
            )
        ]
        assert closed[0].ts_end == at("09:15") + tf * NS_PER_MIN


def test_tick_exactly_at_the_boundary_closes_the_candle_and_opens_the_next() -> None:
    b = CandleBuilder(timeframe_min=1)
    b.on_tick(at("09:15", 1), 100)
    b.on_tick(at("09:16") - 1, 105)
    closed = b.on_tick(at("09:16"), 200)
    assert [(hhmm(c.ts_start), c.close_paise) for c in closed] == [("09:15", 105)]
    closed = b.on_tick(at("09:17"), 300)
    assert [(hhmm(c.ts_start), c.open_paise, c.close_paise) for c in closed] == [
        ("09:16", 200, 200)
    ]


def test_gap_produces_no_fake_candles() -> None:
    b = CandleBuilder(timeframe_min=1)
    b.on_tick(at("09:15", 10), 100)
    closed = b.on_tick(at("09:19", 30), 110)
    assert [hhmm(c.ts_start) for c in closed] == ["09:15"]
    closed = b.advance(at("09:25"))
    assert [hhmm(c.ts_start) for c in closed] == ["09:19"]
    assert b.open == []


def test_clock_closes_a_candle_without_a_tick() -> None:
    b = CandleBuilder(timeframe_min=5)
    b.on_tick(at("09:16"), 100)
    assert b.advance(at("09:19", 59)) == []
    closed = b.advance(at("09:20"))
    assert [hhmm(c.ts_start) for c in closed] == ["09:15"]


def test_late_tick_older_than_the_watermark_is_ignored_and_counted() -> None:
    b = CandleBuilder(timeframe_min=1)
    b.on_tick(at("09:15", 5), 100)
    first = b.on_tick(at("09:16", 1), 200)
    assert first[0].close_paise == 100
    assert b.on_tick(at("09:15", 59), 999) == []  # its candle already closed
    assert b.late_ticks == 1
    closed = b.on_tick(at("09:17"), 300)
    assert [(hhmm(c.ts_start), c.high_paise, c.close_paise, c.ticks) for c in closed] == [
        ("09:16", 200, 200, 1)
    ]


def test_grace_holds_the_candle_open_for_a_slightly_late_tick() -> None:
    b = CandleBuilder(timeframe_min=1, grace_ns=500 * NS_PER_MS)
    b.on_tick(at("09:15", 10), 100)
    assert b.on_tick(at("09:16", 0.2), 200) == []  # watermark 09:15:59.7: still open
    assert b.on_tick(at("09:15", 59.9), 150) == []  # late by 300 ms, within grace
    closed = b.on_tick(at("09:16", 0.6), 210)  # watermark 09:16:00.1 closes 09:15
    assert [(c.open_paise, c.high_paise, c.close_paise, c.ticks) for c in closed] == [
        (100, 150, 150, 2)
    ]
    assert b.late_ticks == 0
    assert b.on_tick(at("09:15", 59.95), 1) == []  # now beyond: ignored
    assert b.late_ticks == 1
    closed = b.advance(at("09:17", 0.5))
    assert [(c.open_paise, c.close_paise, c.ticks) for c in closed] == [(200, 210, 2)]


def test_out_of_order_ticks_inside_an_open_candle_use_event_time_for_open_and_close() -> None:
    b = CandleBuilder(timeframe_min=1, grace_ns=2 * NS_PER_S)
    b.on_tick(at("09:15", 30), 130)
    b.on_tick(at("09:15", 29), 129)  # earlier event, within grace: becomes the open
    b.on_tick(at("09:15", 50), 150)
    b.on_tick(at("09:15", 49), 149)  # earlier than the last: not the close
    b.on_tick(at("09:15", 47), 1)  # older than the watermark (09:15:48): late
    closed = b.advance(at("09:16"))
    assert [(c.open_paise, c.low_paise, c.close_paise, c.ticks) for c in closed] == [
        (129, 129, 150, 4)
    ]
    assert b.late_ticks == 1


def test_ticks_outside_the_session_build_nothing_but_close_candles() -> None:
    b = CandleBuilder(timeframe_min=1)
    assert b.on_tick(at("09:14", 59), 100) == []
    assert b.open == []
    b.on_tick(at("15:29", 30), 200)
    closed = b.on_tick(at("15:30"), 300)
    assert [hhmm(c.ts_start) for c in closed] == ["15:29"]
    assert b.open == []
    assert b.outside_session_ticks == 2


def test_candle_of_one_day_closes_on_the_next_days_first_tick() -> None:
    b = CandleBuilder(timeframe_min=15)
    b.on_tick(at("15:20"), 100)
    closed = b.on_tick(at("09:15", 1, day=date(2025, 1, 7)), 200)
    assert [(fmt_ist(c.ts_start, with_date=True), c.close_paise) for c in closed] == [
        ("2025-01-06 15:15:00", 100)
    ]


def one_minute(hhmm_: str, o: int, h: int, lo: int, c: int) -> Candle:
    return Candle(
        ts_start=at(hhmm_),
        timeframe_min=1,
        open_paise=o,
        high_paise=h,
        low_paise=lo,
        close_paise=c,
        ticks=1,
    )


def test_one_minute_candles_aggregate_into_five_minute_candles() -> None:
    b = CandleBuilder(timeframe_min=5)
    mins = [
        one_minute("09:15", 100, 120, 90, 110),
        one_minute("09:16", 110, 130, 105, 125),
        one_minute("09:18", 125, 126, 80, 85),  # 09:17 missing: a gap inside the bucket
        one_minute("09:19", 85, 95, 84, 94),
    ]
    out = []
    for m in mins:
        out.extend(b.on_candle(m))
    assert out == [
        Candle(
            ts_start=at("09:15"),
            timeframe_min=5,
            open_paise=100,
            high_paise=130,
            low_paise=80,
            close_paise=94,
            ticks=4,
        )
    ]
    assert b.on_candle(one_minute("09:20", 94, 99, 93, 98)) == []
    assert [o.ts_start for o in b.open] == [at("09:20")]
    assert b.on_candle(one_minute("09:16", 1, 1, 1, 1)) == []  # time already seen
    assert b.late_ticks == 1


def test_live_ticks_continue_a_bucket_started_by_warm_up() -> None:
    b = CandleBuilder(timeframe_min=5)
    b.on_candle(one_minute("09:20", 100, 110, 95, 105))
    assert b.on_tick(at("09:20", 30), 500) == []  # inside a minute warm-up covered: late
    assert b.late_ticks == 1
    b.on_tick(at("09:21", 30), 120)
    closed = b.on_tick(at("09:25"), 130)
    assert [(c.open_paise, c.high_paise, c.low_paise, c.close_paise) for c in closed] == [
        (100, 120, 95, 120)
    ]


def test_builder_state_survives_a_msgpack_round_trip_mid_candle() -> None:
    a = CandleBuilder(timeframe_min=3, grace_ns=100 * NS_PER_MS)
    a.on_tick(at("09:15", 1), 100)
    a.on_tick(at("09:16", 1), 90)
    b = msgspec.msgpack.decode(msgspec.msgpack.encode(a), type=CandleBuilder)
    assert b == a
    assert a.on_tick(at("09:18", 1), 95) == b.on_tick(at("09:18", 1), 95)
