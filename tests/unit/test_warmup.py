"""Indicator warm-up from the previous day's session: valid indicators at 09:15."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import msgspec

from services.signals.core import SignalsCore, Snapshot
from shared.clock import ist_to_ns
from shared.config import load_algo
from shared.warmup import candles_from_charts, candles_from_session

ROOT = Path(__file__).resolve().parents[2]
PREVIOUS = ROOT / "data" / "sample" / "previous.parquet"


def _core() -> SignalsCore:
    cfg = load_algo(ROOT / "config" / "algo.yml")
    return SignalsCore(cfg.signals, cfg.indices, lambda: 0)


def _nifty_frame(core: SignalsCore):
    snap = msgspec.msgpack.decode(core.snapshot(), type=Snapshot)
    state = next(s for s in snap.indices if s.key == "NIFTY")
    return state.frames[1]


def test_previous_session_gives_a_full_day_of_0915_aligned_minute_candles():
    candles = candles_from_session(PREVIOUS, 13)
    assert len(candles) == 375
    assert candles[0].ts_start == ist_to_ns(date(2026, 11, 30), "09:15")
    assert candles[-1].ts_start == ist_to_ns(date(2026, 11, 30), "15:29")
    assert all(c.low_paise <= min(c.open_paise, c.close_paise) <= max(c.open_paise, c.close_paise) <= c.high_paise
               for c in candles)


def test_warmed_up_core_has_valid_indicators_before_the_first_candle_and_a_cold_one_does_not():
    cold = _core()
    assert not _nifty_frame(cold).trend.ready
    warm = _core()
    assert warm.warm_up("NIFTY", candles_from_session(PREVIOUS, 13)) == 375
    frame = _nifty_frame(warm)
    assert frame.trend.ready and frame.trend.direction in (1, -1)
    assert frame.adx.value is not None


def test_candles_from_the_charts_endpoint_columns():
    t0 = ist_to_ns(date(2026, 11, 30), "09:15")
    cs = candles_from_charts([t0, t0 + 60_000_000_000], [100, 101], [102, 103], [99, 100], [101, 102])
    assert [c.close_paise for c in cs] == [101, 102] and cs[1].ts_end == t0 + 120_000_000_000
