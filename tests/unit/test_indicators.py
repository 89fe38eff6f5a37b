"""Incremental indicators against TA-Lib (EMA, ATR, ADX, +DI, -DI) and plain references."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from shared.indicators import (
    BEARISH,
    BULLISH,
    AdaptiveSupertrend,
    Adx,
    Atr,
    Ema,
    Supertrend,
    kmeans_deterministic,
    true_range,
)

talib = pytest.importorskip("talib")

RTOL = 1e-9


def ohlc(seed: int, n: int, *, paise: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded random index-like OHLC path (rupee floats, or integer paise on a 5-paise tick)."""
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    vol = np.where(np.arange(n) % 700 < 350, 0.0006, 0.0018)  # calm and busy regimes
    close = 24_000.0 * np.exp(np.cumsum(rng.normal(0.0, vol)))
    open_ = np.r_[close[0], close[:-1]] * (1 + rng.normal(0.0, 0.0002, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0.0, 0.0015, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0.0, 0.0015, n))
    if paise:
        high, low, close = (np.round(x * 20.0) * 5.0 for x in (high, low, close))
    return high, low, close


def as_array(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def assert_matches(ours: np.ndarray, ref: np.ndarray) -> None:
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref), err_msg="readiness differs")
    ok = ~np.isnan(ref)
    np.testing.assert_allclose(ours[ok], ref[ok], rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize(
    ("seed", "period", "paise"), [(11, 14, False), (12, 5, True), (13, 30, False)]
)
def test_atr_adx_and_dis_agree_with_talib(seed: int, period: int, paise: bool) -> None:
    high, low, close = ohlc(seed, 6000, paise=paise)
    atr, adx = Atr(period=period), Adx(period=period)
    a_out, adx_out, pdi, mdi = [], [], [], []
    for h, lo, c in zip(high.tolist(), low.tolist(), close.tolist(), strict=True):
        a_out.append(atr.update(h, lo, c))
        adx_out.append(adx.update(h, lo, c))
        pdi.append(adx.plus_di)
        mdi.append(adx.minus_di)
    assert_matches(as_array(a_out), talib.ATR(high, low, close, period))
    assert_matches(as_array(adx_out), talib.ADX(high, low, close, period))
    assert_matches(as_array(pdi), talib.PLUS_DI(high, low, close, period))
    assert_matches(as_array(mdi), talib.MINUS_DI(high, low, close, period))


@pytest.mark.parametrize(("seed", "period"), [(21, 9), (22, 21), (23, 2)])
def test_ema_agrees_with_talib(seed: int, period: int) -> None:
    _, _, close = ohlc(seed, 6000)
    ema = Ema(period=period)
    out = [ema.update(c) for c in close.tolist()]
    assert_matches(as_array(out), talib.EMA(close, period))


def test_adx_on_a_flat_market_stays_defined_like_talib() -> None:
    high, low, close = ohlc(31, 400, paise=True)
    high[100:200] = low[100:200] = close[100:200] = close[99]  # no range at all for 100 bars
    adx = Adx(period=14)
    out, pdi = [], []
    for h, lo, c in zip(high.tolist(), low.tolist(), close.tolist(), strict=True):
        out.append(adx.update(h, lo, c))
        pdi.append(adx.plus_di)
    assert_matches(as_array(out), talib.ADX(high, low, close, 14))
    assert_matches(as_array(pdi), talib.PLUS_DI(high, low, close, 14))


def reference_supertrend(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, atr: np.ndarray, mult: float
) -> tuple[np.ndarray, np.ndarray]:
    """Plain Supertrend (TradingView's ``ta.supertrend`` rules) over a given ATR array.

    Returns (line, direction) with direction +1 bullish / -1 bearish, NaN/0 before the ATR.
    """
    hl2 = (high + low) / 2.0
    basic_upper = hl2 + mult * atr
    basic_lower = hl2 - mult * atr
    n = len(close)
    upper, lower = basic_upper.copy(), basic_lower.copy()
    line = np.full(n, np.nan)
    direction = np.zeros(n, dtype=int)
    first = int(np.argmax(~np.isnan(atr)))
    for i in range(first, n):
        if i == first:
            direction[i] = BEARISH
        else:
            if not (basic_lower[i] > lower[i - 1] or close[i - 1] < lower[i - 1]):
                lower[i] = lower[i - 1]
            if not (basic_upper[i] < upper[i - 1] or close[i - 1] > upper[i - 1]):
                upper[i] = upper[i - 1]
            if line[i - 1] == upper[i - 1]:
                direction[i] = BULLISH if close[i] > upper[i] else BEARISH
            else:
                direction[i] = BEARISH if close[i] < lower[i] else BULLISH
        line[i] = lower[i] if direction[i] == BULLISH else upper[i]
    return line, direction


@pytest.mark.parametrize(("seed", "period", "mult"), [(41, 10, 2.0), (42, 7, 3.0), (43, 14, 1.5)])
def test_supertrend_agrees_with_a_plain_reference(seed: int, period: int, mult: float) -> None:
    high, low, close = ohlc(seed, 5000)
    st = Supertrend.new(period, mult)
    dirs, lines = [], []
    for h, lo, c in zip(high.tolist(), low.tolist(), close.tolist(), strict=True):
        dirs.append(st.update(h, lo, c))
        lines.append(st.value)
    ref_line, ref_dir = reference_supertrend(
        high, low, close, talib.ATR(high, low, close, period), mult
    )
    np.testing.assert_array_equal(np.array(dirs), ref_dir)
    assert_matches(as_array(lines), ref_line)
    flips = int(np.count_nonzero(np.diff(ref_dir[period:])))
    assert flips > 50  # the series really exercises both directions


def reference_adaptive_atr(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int
) -> np.ndarray:
    """The original's adaptive ATR, written out directly (not incrementally)."""
    n = len(close)
    prev = np.r_[np.nan, close[:-1]]
    tr = np.maximum.reduce([high - low, np.abs(high - prev), np.abs(low - prev)])
    rets = np.r_[np.nan, close[1:] / close[:-1] - 1.0]
    atr = np.full(n, np.nan)
    atr[period] = tr[1 : period + 1].mean()
    for i in range(period + 1, n):
        r = rets[max(1, i - 99) : i + 1]
        vf = 1.0
        if len(r) >= 20 and np.sqrt(np.mean(r**2)) > 0:
            vf = np.sqrt(np.mean(r[-20:] ** 2)) / np.sqrt(np.mean(r**2))
        alpha = max(0.05, 0.2 / (1.0 + vf))
        atr[i] = atr[i - 1] + alpha * (tr[i] - atr[i - 1])
    return atr


def adaptive(period: int = 10, candidates: list[float] | None = None) -> AdaptiveSupertrend:
    return AdaptiveSupertrend.new(period, 2.0, 50, 3, 0.1, candidates or [1.5, 2.0, 2.5, 3.0, 3.5])


def test_adaptive_supertrend_with_one_candidate_is_a_supertrend_on_the_adaptive_atr() -> None:
    high, low, close = ohlc(51, 1500)
    ast = adaptive(candidates=[2.0])
    dirs, lines, atrs = [], [], []
    for h, lo, c in zip(high.tolist(), low.tolist(), close.tolist(), strict=True):
        dirs.append(ast.update(h, lo, c))
        lines.append(ast.value)
        atrs.append(ast.atr)
    ref_atr = reference_adaptive_atr(high, low, close, 10)
    assert_matches(as_array(atrs), ref_atr)
    ref_line, ref_dir = reference_supertrend(high, low, close, ref_atr, 2.0)
    ready = 10 + 50 - 1  # features from bar 10 (SMA10 and 10 returns), window of 50 rows
    assert dirs[:ready] == [0] * ready
    np.testing.assert_array_equal(np.array(dirs[ready:]), ref_dir[ready:])
    np.testing.assert_allclose(np.array(lines[ready:], dtype=float), ref_line[ready:], rtol=RTOL)


def test_adaptive_supertrend_is_deterministic_and_restores_from_msgpack() -> None:
    high, low, close = ohlc(52, 1200)
    bars = list(zip(high.tolist(), low.tolist(), close.tolist(), strict=True))
    a, b = adaptive(), adaptive()
    run_a = [(a.update(*x), a.value, a.multiplier) for x in bars]
    half = len(bars) // 2
    for x in bars[:half]:
        b.update(*x)
    c = msgspec.msgpack.decode(msgspec.msgpack.encode(b), type=AdaptiveSupertrend)
    assert c == b
    run_c = [(c.update(*x), c.value, c.multiplier) for x in bars[half:]]
    assert run_c == run_a[half:]
    used = {m for _, _, m in run_a[100:]}
    assert used <= {1.5, 2.0, 2.5, 3.0, 3.5}
    assert len(used) >= 2  # the multiplier really adapts


def test_adaptive_supertrend_picks_wide_multipliers_in_the_busy_regime() -> None:
    rng = np.random.default_rng(53)
    print("seed=53")
    n = 400
    vol = np.where(np.arange(n) < 340, 0.0003, 0.004)  # calm, then a violent last stretch
    close = 24_000.0 * np.exp(np.cumsum(rng.normal(0.0, vol)))
    spread = close * vol
    high, low = close + spread, close - spread
    ast = adaptive()
    regimes, mults = [], []
    for h, lo, c in zip(high.tolist(), low.tolist(), close.tolist(), strict=True):
        ast.update(h, lo, c)
        regimes.append(ast.regime)
        mults.append(ast.multiplier)
    # The first 20 busy bars stand out against a window of calm ones: highest cluster, wide band.
    busy = list(zip(regimes[341:361], mults[341:361], strict=True))
    assert sum(1 for r, _ in busy if r == 2) >= 16
    assert all(m >= 2.5 for r, m in busy if r == 2)
    assert all(m <= 2.5 for r, m in zip(regimes, mults, strict=True) if r == 0)


def test_kmeans_finds_separated_clusters_the_same_way_every_time() -> None:
    rng = np.random.default_rng(54)
    print("seed=54")
    centres = [(-5.0, 0.0), (0.0, 5.0), (5.0, 0.0)]
    pts = [tuple(rng.normal(c, 0.3)) for c in centres for _ in range(20)]
    order = rng.permutation(len(pts))
    pts = [pts[i] for i in order]
    assign, cents = kmeans_deterministic(pts, 3)
    assert (assign, cents) == kmeans_deterministic(pts, 3)
    truth = [int(i // 20) for i in order]
    groups = {tuple(sorted(i for i, t in enumerate(truth) if t == k)) for k in range(3)}
    found = {tuple(sorted(i for i, a in enumerate(assign) if a == k)) for k in range(3)}
    assert found == groups
    assert sorted(round(c[0]) for c in cents) == [-5, 0, 5]


def test_indicator_state_round_trips_through_msgpack() -> None:
    high, low, close = ohlc(61, 300)
    bars = list(zip(high.tolist(), low.tolist(), close.tolist(), strict=True))
    for make in (lambda: Adx(period=14), lambda: Atr(period=14), lambda: Supertrend.new(10, 2.0)):
        a = make()
        for x in bars[:150]:
            a.update(*x)
        b = msgspec.msgpack.decode(msgspec.msgpack.encode(a), type=type(a))
        assert [a.update(*x) for x in bars[150:]] == [b.update(*x) for x in bars[150:]]
    e = Ema(period=9)
    for x in bars[:150]:
        e.update(x[2])
    f = msgspec.msgpack.decode(msgspec.msgpack.encode(e), type=Ema)
    assert [e.update(x[2]) for x in bars[150:]] == [f.update(x[2]) for x in bars[150:]]


def test_true_range_uses_the_previous_close_when_it_gaps() -> None:
    assert true_range(105.0, 100.0, 102.0) == 5.0
    assert true_range(105.0, 100.0, 110.0) == 10.0
    assert true_range(105.0, 100.0, 90.0) == 15.0
    assert not math.isnan(true_range(1.0, 1.0, 1.0))
