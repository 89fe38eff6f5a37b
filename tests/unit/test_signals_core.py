"""Signals core: signals on Supertrend flips, filters with reasons, scaling, restart, partitioning."""

from __future__ import annotations

import random
from datetime import date
from typing import Any

import msgspec
import pytest

from services.signals.core import SignalsCore
from shared.candles import Candle
from shared.clock import NS_PER_MIN, NS_PER_S, FakeClock, ist_to_ns
from shared.config import IndexConfig, SignalsConfig
from shared.errors import ConfigError, DecodeError
from shared.indicators import BULLISH, Supertrend
from shared.messages import Clock, Signal, SignalSkipped, Tick, make_msg_id

DAY = date(2025, 1, 6)  # a Monday
SESSION_START = ist_to_ns(DAY, "09:15")
SESSION_END = ist_to_ns(DAY, "15:30")


def index(key: str, sid: int, *, enabled: bool = True) -> IndexConfig:
    raw = {"key": key, "security_id": sid, "options_segment": "NSE_FNO", "exchange": "NSE"}
    return msgspec.convert({**raw, "enabled": enabled}, IndexConfig)


NIFTY = index("NIFTY", 13)
BANKNIFTY = index("BANKNIFTY", 25)
FINNIFTY = index("FINNIFTY", 27)


def config(**raw: Any) -> SignalsConfig:
    return msgspec.convert(raw, SignalsConfig)


class Ids:
    """Stream ids as the feed makes them: ``<ms>-<seq>`` from event time."""

    def __init__(self) -> None:
        self.ms, self.seq = 0, -1

    def __call__(self, ts: int) -> str:
        ms = ts // 1_000_000
        if ms > self.ms:
            self.ms, self.seq = ms, 0
        else:
            self.seq += 1
        return f"{self.ms}-{self.seq}"


def session(
    seed: int,
    sids: tuple[int, ...] = (13, 25),
    *,
    start: int = SESSION_START,
    end: int = SESSION_END,
    every_ms: int = 2000,
    noise: bool = False,
) -> list[Tick | Clock]:
    """A seeded session: per index a tick about every ``every_ms`` on a trending random walk,
    a Clock at every second boundary, and (``noise``) option ticks that reuse an index's id."""
    print(f"seed={seed}")
    rng = random.Random(seed)
    noise_rng = random.Random(seed + 1)
    events: list[tuple[int, int, int, str]] = []
    for sid in sids:
        price = {13: 2_400_000, 25: 5_100_000, 27: 2_300_000}[sid]
        drift = 0
        ts = start + rng.randrange(every_ms) * 1_000_000
        while ts < end:
            if rng.random() < 0.01:
                drift = rng.choice((-3, 0, 3))
            price += (drift + rng.randint(-12, 12)) * 5
            events.append((ts, sid, price, "IDX_I"))
            if noise and noise_rng.random() < 0.5:
                events.append((ts + 1, sid, noise_rng.randrange(1, 50_000) * 5, "NSE_FNO"))
            ts += rng.randint(every_ms // 2, every_ms * 3 // 2) * 1_000_000
    events.extend((t, 0, 0, "CLOCK") for t in range(start + NS_PER_S, end + 5 * NS_PER_S, NS_PER_S))
    events.sort(key=lambda e: (e[0], e[3] != "CLOCK"))
    ids = Ids()
    out: list[Tick | Clock] = []
    for ts, sid, price, seg in events:
        tid = ids(ts)
        if seg == "CLOCK":
            out.append(Clock(msg_id=f"clk-{tid}", ts_event=ts, ts_init=0, tick_id=tid))
        else:
            out.append(
                Tick(
                    msg_id=f"tick-{tid}",
                    ts_event=ts,
                    ts_init=0,
                    tick_id=tid,
                    segment=seg,
                    security_id=sid,
                    ltp_paise=price,
                )
            )
    return out


def run(core: SignalsCore, msgs: list[Tick | Clock]) -> list[Signal | SignalSkipped]:
    out: list[Signal | SignalSkipped] = []
    for m in msgs:
        out.extend(core.on_tick(m) if isinstance(m, Tick) else core.on_clock(m))
    return out


def plain(msgs: list[Signal | SignalSkipped]) -> list[Signal | SignalSkipped]:
    """Messages without the wall-time stamp, for comparisons."""
    return [msgspec.structs.replace(m, ts_init=0) for m in msgs]


def signals(msgs: list[Signal | SignalSkipped]) -> list[Signal]:
    return [m for m in msgs if isinstance(m, Signal)]


def skips(msgs: list[Signal | SignalSkipped]) -> list[SignalSkipped]:
    return [m for m in msgs if isinstance(m, SignalSkipped)]


def minute_candles(msgs: list[Tick | Clock], sid: int) -> list[Candle]:
    """1-minute candles of one index built independently of shared.candles."""
    buckets: dict[int, list[int]] = {}
    for m in msgs:
        if isinstance(m, Tick) and m.segment == "IDX_I" and m.security_id == sid:
            start = SESSION_START + (m.ts_event - SESSION_START) // NS_PER_MIN * NS_PER_MIN
            buckets.setdefault(start, []).append(m.ltp_paise)
    return [
        Candle(
            ts_start=s,
            timeframe_min=1,
            open_paise=p[0],
            high_paise=max(p),
            low_paise=min(p),
            close_paise=p[-1],
            ticks=len(p),
        )
        for s, p in sorted(buckets.items())
    ]


def flips(
    candles: list[Candle], period: int = 10, mult: float = 2.0
) -> list[tuple[int, str, bool]]:
    """(candle_ts, direction, is_initial) at each change of the classic Supertrend's direction."""
    st = Supertrend.new(period, mult)
    out = []
    for c in candles:
        before = st.direction
        after = st.update(c.high_paise, c.low_paise, c.close_paise)
        if after != before:
            out.append((c.ts_start, "bullish" if after == BULLISH else "bearish", before == 0))
    return out


# --------------------------------------------------------------------------- signals


def test_signals_are_emitted_exactly_on_primary_supertrend_flips() -> None:
    msgs = session(101)
    clock = FakeClock(777)
    out = run(SignalsCore(SignalsConfig(), [NIFTY], clock.now_ns), msgs)
    expected = flips(minute_candles(msgs, 13))
    assert len(expected) > 20
    got = [(m.candle_ts, getattr(m, "direction", None)) for m in out]
    assert got == [(ts, None if initial else d) for ts, d, initial in expected]
    assert "initial direction" in out[0].reason
    by_ts = {m.ts_event: m for m in msgs if isinstance(m, Clock)}
    for s in signals(out):
        assert s.msg_id == make_msg_id("sig", "NIFTY", 1, s.candle_ts, s.direction)
        assert s.index == "NIFTY" and s.timeframe_min == 1 and s.ts_init == 777
        # closed by the Clock at the candle's end: its ts_event and tick id
        assert s.ts_event == s.candle_ts + NS_PER_MIN
        assert s.tick_id == by_ts[s.ts_event].tick_id
        if s.direction == "bullish":
            assert s.close_paise > s.supertrend_paise
        else:
            assert s.close_paise < s.supertrend_paise
        assert s.multiplier >= 1 and "supertrend flipped" in s.reason


def test_signal_from_a_tick_carries_that_ticks_event_time_and_id() -> None:
    msgs = [m for m in session(102) if isinstance(m, Tick)]  # no clocks: ticks close candles
    out = run(SignalsCore(SignalsConfig(), [NIFTY, BANKNIFTY], FakeClock().now_ns), msgs)
    by_id = {m.tick_id: m for m in msgs}
    assert signals(out)
    for s in out:
        tick = by_id[s.tick_id]
        assert tick.ts_event == s.ts_event >= s.candle_ts + NS_PER_MIN
        assert tick.security_id == {"NIFTY": 13, "BANKNIFTY": 25}[s.index]


def test_same_session_gives_the_same_messages_and_ids() -> None:
    msgs = session(103)
    a = run(SignalsCore(SignalsConfig(), [NIFTY, BANKNIFTY], FakeClock(1).now_ns), msgs)
    b = run(SignalsCore(SignalsConfig(), [NIFTY, BANKNIFTY], FakeClock(2).now_ns), msgs)
    assert [m.msg_id for m in a] == [m.msg_id for m in b]
    assert plain(a) == plain(b)


def test_non_index_and_disabled_index_ticks_are_ignored() -> None:
    quiet = session(104, (13, 25))
    noisy = session(104, (13, 25), noise=True)
    cfg = SignalsConfig()
    base = run(
        SignalsCore(cfg, [NIFTY, index("BANKNIFTY", 25, enabled=False)], FakeClock().now_ns), quiet
    )
    out = run(
        SignalsCore(cfg, [NIFTY, index("BANKNIFTY", 25, enabled=False)], FakeClock().now_ns), noisy
    )
    assert plain(out) == plain(base)
    assert {m.index for m in out} == {"NIFTY"}


def test_confidence_follows_the_original_formula() -> None:
    out = run(SignalsCore(SignalsConfig(), [NIFTY], FakeClock().now_ns), session(105))
    for s in signals(out):
        bonus = 0.3 if s.adx >= 30 else 0.2 if s.adx >= 20 else 0.1 if s.adx >= 15 else 0.0
        # no confirmation, no validation; supertrend in rupees / 1000 caps at 0.1
        assert s.confidence == pytest.approx(min(1.0, 0.5 + bonus + 0.1))


# --------------------------------------------------------------------------- restart, partition


@pytest.mark.parametrize("cut_seed", [1, 2, 3])
def test_restart_from_snapshot_continues_with_the_same_signals_and_no_duplicates(
    cut_seed: int,
) -> None:
    cfg = config(enable_confirmation=True, confirmation_timeframe_min=5, late_tick_grace_ms=1500)
    msgs = session(106, noise=True)
    full = run(SignalsCore(cfg, [NIFTY, BANKNIFTY], FakeClock().now_ns), msgs)
    cut = random.Random(cut_seed).randrange(len(msgs) // 4, len(msgs) * 3 // 4)
    first = SignalsCore(cfg, [NIFTY, BANKNIFTY], FakeClock().now_ns)
    before = run(first, msgs[:cut])
    data = first.snapshot()
    second = SignalsCore.restore(cfg, [NIFTY, BANKNIFTY], FakeClock().now_ns, data)
    redelivered = run(second, msgs[cut - 200 : cut])  # entries re-read after the crash
    after = run(second, msgs[cut:])
    assert redelivered == []
    assert plain(before + after) == plain(full)
    assert second.counters()["NIFTY"]["duplicate_ticks"] > 0


def test_two_cores_with_a_subset_each_equal_one_core_with_all() -> None:
    cfg = config(enable_confirmation=True, confirmation_timeframe_min=3, adx={"enabled": True})
    msgs = session(107, (13, 25, 27), noise=True)
    one = run(SignalsCore(cfg, [NIFTY, BANKNIFTY, FINNIFTY], FakeClock().now_ns), msgs)
    left = run(SignalsCore(cfg, [NIFTY], FakeClock().now_ns), msgs)
    right = run(SignalsCore(cfg, [BANKNIFTY, FINNIFTY], FakeClock().now_ns), msgs)
    assert {m.index for m in one} == {"NIFTY", "BANKNIFTY", "FINNIFTY"}
    for key in ("NIFTY", "BANKNIFTY", "FINNIFTY"):
        assert plain([m for m in left + right if m.index == key]) == plain(
            [m for m in one if m.index == key]
        )
    assert sorted(m.msg_id for m in left + right) == sorted(m.msg_id for m in one)


def test_restore_rejects_a_snapshot_built_with_other_indicator_settings() -> None:
    core = SignalsCore(SignalsConfig(), [NIFTY], FakeClock().now_ns)
    run(core, session(108, (13,), end=SESSION_START + 20 * NS_PER_MIN))
    other = config(supertrend={"period": 12})
    with pytest.raises(ConfigError, match="NIFTY"):
        SignalsCore.restore(other, [NIFTY], FakeClock().now_ns, core.snapshot())
    with pytest.raises(DecodeError):
        SignalsCore.restore(SignalsConfig(), [NIFTY], FakeClock().now_ns, b"\x01garbage")
    # indices missing from the snapshot start empty, extra ones are dropped
    fresh = SignalsCore.restore(SignalsConfig(), [BANKNIFTY], FakeClock().now_ns, core.snapshot())
    assert fresh.counters()["BANKNIFTY"]["candles_1m"] == 0


# --------------------------------------------------------------------------- warm-up


def test_warm_up_makes_indicators_valid_at_0915() -> None:
    yesterday = date(2025, 1, 3)
    y_start = ist_to_ns(yesterday, "09:15")
    hist_msgs = session(109, (13,), start=y_start, end=ist_to_ns(yesterday, "15:30"))
    hist = [msgspec.structs.replace(c) for c in _candles_from(hist_msgs, 13, y_start)]
    core = SignalsCore(SignalsConfig(), [NIFTY], FakeClock().now_ns)
    assert core.warm_up("NIFTY", hist) == len(hist) == 375
    out = run(core, session(110, (13,)))
    assert not any("initial direction" in m.reason for m in out)
    first = out[0]
    assert isinstance(first, Signal)
    assert first.candle_ts < SESSION_START + 30 * NS_PER_MIN
    with pytest.raises(KeyError):
        core.warm_up("SENSEX", hist)


def _candles_from(msgs: list[Tick | Clock], sid: int, start: int) -> list[Candle]:
    buckets: dict[int, list[int]] = {}
    for m in msgs:
        if isinstance(m, Tick) and m.security_id == sid:
            buckets.setdefault(start + (m.ts_event - start) // NS_PER_MIN * NS_PER_MIN, []).append(
                m.ltp_paise
            )
    return [
        Candle(
            ts_start=s,
            timeframe_min=1,
            open_paise=p[0],
            high_paise=max(p),
            low_paise=min(p),
            close_paise=p[-1],
            ticks=len(p),
        )
        for s, p in sorted(buckets.items())
    ]


# --------------------------------------------------------------------------- filters


def evaluations(out: list[Signal | SignalSkipped]) -> list[int]:
    """Candle starts of the flip evaluations (everything but the 'initial direction' skip)."""
    return [m.candle_ts for m in out if "initial direction" not in m.reason]


def test_adx_filter_turns_weak_flips_into_skips_with_the_reason() -> None:
    msgs = session(111, (13,))
    base = run(SignalsCore(SignalsConfig(), [NIFTY], FakeClock().now_ns), msgs)
    out = run(
        SignalsCore(config(adx={"enabled": True, "min_strength": 25}), [NIFTY], FakeClock().now_ns),
        msgs,
    )
    assert evaluations(out) == evaluations(base)
    weak = [m for m in skips(out) if "ADX" in m.reason]
    assert weak and all("flip on 1m candle" in m.reason for m in weak)
    assert all("< min 25" in m.reason or "ADX(14) not ready" in m.reason for m in weak)
    assert any("< min 25" in m.reason for m in weak)
    assert signals(out) and all(s.adx >= 25 for s in signals(out))
    assert {s.msg_id for s in signals(out)} < {s.msg_id for s in signals(base)}


def test_ema_filter_skips_flips_against_the_ema_trend() -> None:
    msgs = session(112, (13,))
    base = run(SignalsCore(SignalsConfig(), [NIFTY], FakeClock().now_ns), msgs)
    out = run(
        SignalsCore(
            config(ema={"enabled": True, "fast": 9, "slow": 21}), [NIFTY], FakeClock().now_ns
        ),
        msgs,
    )
    assert evaluations(out) == evaluations(base)
    against = [m for m in skips(out) if "EMA 9/21 against" in m.reason]
    assert against and signals(out)
    for m in against:
        assert ("against bullish (fast" in m.reason) == m.reason.startswith("bullish")


def test_confirmation_timeframe_disagreement_is_skipped_with_the_reason() -> None:
    msgs = session(113, (13,))
    cfg = config(enable_confirmation=True, confirmation_timeframe_min=5)
    out = run(SignalsCore(cfg, [NIFTY], FakeClock().now_ns), msgs)
    disagree = [m for m in skips(out) if "confirmation 5m supertrend is" in m.reason]
    assert disagree and signals(out)
    for m in disagree:
        flipped = m.reason.split()[0]
        assert f"supertrend is {'bearish' if flipped == 'bullish' else 'bullish'}" in m.reason
    # the 5-minute direction each decision saw, from independently built 5-minute candles
    five = _five_minute_directions(msgs)
    for m in out:
        if "initial" in m.reason or "not ready" in m.reason:
            continue
        end = m.candle_ts + NS_PER_MIN
        seen = max(t for t in five if t <= end)
        direction = getattr(m, "direction", None) or m.reason.split()[0]
        assert (five[seen] == direction) == isinstance(m, Signal)
    for s in signals(out):
        assert s.confidence == pytest.approx(min(1.0, 0.5 + _adx_bonus(s.adx) + 0.2 + 0.1))


def _adx_bonus(adx: float) -> float:
    return 0.3 if adx >= 30 else 0.2 if adx >= 20 else 0.1 if adx >= 15 else 0.0


def _five_minute_directions(msgs: list[Tick | Clock]) -> dict[int, str]:
    """Candle end -> 5-minute Supertrend direction after that candle."""
    buckets: dict[int, list[int]] = {}
    for m in msgs:
        if isinstance(m, Tick) and m.security_id == 13:
            start = (
                SESSION_START + (m.ts_event - SESSION_START) // (5 * NS_PER_MIN) * 5 * NS_PER_MIN
            )
            buckets.setdefault(start, []).append(m.ltp_paise)
    st = Supertrend.new(10, 2.0)
    out = {}
    for s, p in sorted(buckets.items()):
        d = st.update(max(p), min(p), p[-1])
        if d:
            out[s + 5 * NS_PER_MIN] = "bullish" if d == BULLISH else "bearish"
    return out


def test_conservative_validation_blocks_flips_after_the_theta_cutoff() -> None:
    msgs = session(114, (13,))
    cutoff = ist_to_ns(DAY, "14:00")
    cons = run(
        SignalsCore(config(validation_mode="conservative"), [NIFTY], FakeClock().now_ns), msgs
    )
    late = [m for m in cons if m.candle_ts + NS_PER_MIN >= cutoff and "initial" not in m.reason]
    assert late and all(isinstance(m, SignalSkipped) for m in late)
    assert all("conservative: theta risk at/after 14:00 IST" in m.reason for m in late)
    aggr = run(SignalsCore(config(validation_mode="aggressive"), [NIFTY], FakeClock().now_ns), msgs)
    assert any(s.candle_ts >= cutoff for s in signals(aggr))  # aggressive has no theta check
    assert not any("theta" in m.reason for m in aggr)
    off = run(SignalsCore(config(validation_mode="off"), [NIFTY], FakeClock().now_ns), msgs)
    assert len(signals(off)) >= len(signals(aggr)) > len(signals(cons)) > 0
    for s in signals(aggr):  # validation passed: +0.1 over the "off" confidence
        assert s.confidence == pytest.approx(min(1.0, 0.5 + _adx_bonus(s.adx) + 0.1 + 0.1))


def balanced(**checks: Any) -> SignalsConfig:
    mode = {
        "adx_min_strength": 18,
        "adx_confirmation_min_strength": 20,
        "iv_rank_min": 0.0,
        "iv_rank_max": 1.0,
        "theta_cutoff_hhmm": "23:59",
        "require_trend_confirmation": False,
        "require_iv_rank_check": False,
        "require_theta_risk_check": False,
    }
    mode.update(checks)
    return config(
        validation_mode="balanced",
        validation_modes={"balanced": mode},
        supertrend={"period": 3, "multiplier": 0.5},
    )


def test_validation_iv_rank_proxy_outside_the_band_skips_with_the_mode_named() -> None:
    msgs = session(115, (13,))
    cfg = balanced(require_iv_rank_check=True, iv_rank_min=0.9)
    out = run(SignalsCore(cfg, [NIFTY], FakeClock().now_ns), msgs)
    evals = [m for m in out if "initial" not in m.reason]
    assert evals and all(isinstance(m, SignalSkipped) for m in evals)  # proxy never reaches 0.9
    assert all(
        "balanced: IV-rank proxy" in m.reason and "outside [0.9, 1]" in m.reason for m in evals
    )


def test_validation_trend_check_skips_a_flip_whose_last_three_closes_disagree() -> None:
    # A downtrend, then: close 24100 near the upper band, a drop to 24000, and a wide bar that
    # closes at its high 24080 above the tightened band: a bullish flip below the close 2 bars back.
    bars = [(24400 - 20 * i, 24405 - 20 * i, 24375 - 20 * i, 24380 - 20 * i) for i in range(14)]
    bars += [
        (24120, 24125, 24095, 24100),
        (24100, 24100, 24000, 24000),
        (24000, 24080, 23960, 24080),
    ]
    out = run(
        SignalsCore(balanced(require_trend_confirmation=True), [NIFTY], FakeClock().now_ns),
        bar_ticks(bars),
    )
    last = out[-1]
    assert isinstance(last, SignalSkipped)
    assert last.reason.startswith("bullish flip on 1m candle 09:31 IST not traded")
    assert "balanced: last 3 closes do not confirm bullish" in last.reason
    plain_cfg = msgspec.structs.replace(balanced(), validation_mode="off")
    unvalidated = run(SignalsCore(plain_cfg, [NIFTY], FakeClock().now_ns), bar_ticks(bars))
    assert isinstance(unvalidated[-1], Signal) and unvalidated[-1].candle_ts == last.candle_ts


# --------------------------------------------------------------------------- scaling


def bar_ticks(
    bars: list[tuple[int, int, int, int]], start: int = SESSION_START
) -> list[Tick | Clock]:
    """Four NIFTY ticks a minute (open, high, low, close; rupees) and a Clock after the last bar."""
    ids = Ids()
    out: list[Tick | Clock] = []
    for i, bar in enumerate(bars):
        for sec, rupees in zip((1, 20, 40, 59), bar, strict=True):
            ts = start + i * NS_PER_MIN + sec * NS_PER_S
            tid = ids(ts)
            out.append(
                Tick(
                    msg_id=f"tick-{tid}",
                    ts_event=ts,
                    ts_init=0,
                    tick_id=tid,
                    segment="IDX_I",
                    security_id=13,
                    ltp_paise=rupees * 100,
                )
            )
    end = start + len(bars) * NS_PER_MIN
    out.append(Clock(msg_id="clk-end", ts_event=end, ts_init=0, tick_id=ids(end)))
    return out


def scripted(steps_rupees: list[int]) -> list[Tick | Clock]:
    """Bars from per-minute close steps: open at the last close, 5 rupees of wick each side."""
    bars, close = [], 24_000
    for step in steps_rupees:
        o, close = close, close + step
        bars.append((o, max(o, close) + 5, min(o, close) - 5, close))
    return bar_ticks(bars)


def test_scale_multiplier_grows_with_repeated_same_direction_signals_and_decays() -> None:
    # An uptrend with sharp dips: each dip flips the Supertrend bearish (skipped: the EMA trend
    # is still up) and the recovery flips it bullish again, a repeated bullish signal.
    dip = [-40, -40, 30, 30, 30, 30, 10, 10]
    steps = [10] * 22 + dip * 5 + [10] * 20 + dip
    cfg = config(
        supertrend={"period": 3, "multiplier": 1.0},
        ema={"enabled": True, "fast": 3, "slow": 20},
        scaling={"enabled": True, "max_multiplier": 3, "decay_s": 900},
    )
    out = run(SignalsCore(cfg, [NIFTY], FakeClock().now_ns), scripted(steps))
    sigs = signals(out)
    assert [s.direction for s in sigs] == ["bullish"] * 6
    assert [s.multiplier for s in sigs] == [1, 2, 3, 3, 3, 1]  # capped at 3; reset after 27 min
    gaps_s = [(b.candle_ts - a.candle_ts) // NS_PER_S for a, b in zip(sigs, sigs[1:], strict=False)]
    assert max(gaps_s[:4]) <= 900 < gaps_s[4]
    assert all(
        "EMA 3/20 against bearish" in m.reason for m in skips(out) if m.reason.startswith("bearish")
    )
    off = config(
        supertrend={"period": 3, "multiplier": 1.0},
        ema={"enabled": True, "fast": 3, "slow": 20},
        scaling={"enabled": False},
    )
    assert [
        s.multiplier
        for s in signals(run(SignalsCore(off, [NIFTY], FakeClock().now_ns), scripted(steps)))
    ] == [1] * 6


def test_adaptive_supertrend_core_is_deterministic_across_restart() -> None:
    cfg = config(supertrend={"adaptive": True})
    msgs = session(116, (13,))
    full = run(SignalsCore(cfg, [NIFTY], FakeClock().now_ns), msgs)
    assert signals(full)
    first = SignalsCore(cfg, [NIFTY], FakeClock().now_ns)
    cut = len(msgs) // 2
    before = run(first, msgs[:cut])
    after = run(SignalsCore.restore(cfg, [NIFTY], FakeClock().now_ns, first.snapshot()), msgs[cut:])
    assert plain(before + after) == plain(full)
