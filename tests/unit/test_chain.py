"""Option-chain view: expiry, window, quotes (IV/delta from ticks), ATM and scored selection."""

from __future__ import annotations

from datetime import date

import pytest

from services.entries.chain import (
    ChainView,
    atm_strike_paise,
    iv_floor_pct100,
    min_abs_delta,
    score_strike,
    spread_pct100,
    target_strikes,
)
from shared.blackscholes import bs_delta, bs_price, years_to_expiry
from shared.clock import ist_to_ns
from shared.config import IndexConfig, OptionChainConfig
from shared.messages import Tick
from shared.models import Instrument

# --------------------------------------------------------------------------- helpers (also used
# by test_entries_core)

NIFTY = IndexConfig(
    key="NIFTY", security_id=13, options_segment="NSE_FNO", exchange="NSE", strike_step_paise=5000
)
RATE = 0.065


def make_instruments(
    index: IndexConfig = NIFTY,
    expiries: tuple[str, ...] = ("2026-03-10",),
    lo_rupees: int = 24700,
    hi_rupees: int = 25300,
    lot_size: int = 65,
) -> list[Instrument]:
    """CE and PE contracts for every strike step in [lo, hi] and every expiry."""
    out = []
    step = index.strike_step_paise // 100
    for e_ix, expiry in enumerate(expiries):
        for strike in range(lo_rupees, hi_rupees + 1, step):
            for t_ix, ot in enumerate(("CE", "PE")):
                out.append(
                    Instrument(
                        security_id=100_000 + e_ix * 10_000 + (strike // step) % 1000 * 2 + t_ix,
                        exchange=index.exchange,
                        segment=index.options_segment,
                        instrument="OPTIDX",
                        underlying=index.key,
                        symbol=f"{index.key}-{expiry}-{strike}-{ot}",
                        expiry=expiry,
                        strike_paise=strike * 100,
                        option_type=ot,
                        lot_size=lot_size,
                    )
                )
    return out


def find(instruments: list[Instrument], expiry: str, strike_rupees: int, ot: str) -> Instrument:
    return next(
        i
        for i in instruments
        if i.expiry == expiry and i.strike_paise == strike_rupees * 100 and i.option_type == ot
    )


_seq = iter(range(1, 10**9))


def tick(
    security_id: int,
    ltp_paise: int,
    ts: int,
    *,
    segment: str = "NSE_FNO",
    oi: int = 0,
    bid_paise: int = 0,
    ask_paise: int = 0,
) -> Tick:
    n = next(_seq)
    return Tick(
        msg_id=f"tick-{n}",
        ts_event=ts,
        ts_init=ts,
        tick_id=f"{ts // 1_000_000}-{n}",
        segment=segment,
        security_id=security_id,
        ltp_paise=ltp_paise,
        oi=oi,
        bid_paise=bid_paise,
        ask_paise=ask_paise,
    )


def spot_tick(index: IndexConfig, spot_paise: int, ts: int) -> Tick:
    return tick(index.security_id, spot_paise, ts, segment=index.segment)


def bs_ltp_paise(inst: Instrument, spot_rupees: float, vol: float, ts: int) -> int:
    """A 5-paise-rounded Black-Scholes premium for ``inst`` at ``ts``."""
    t = years_to_expiry(ts, inst.expiry)
    price = bs_price(inst.option_type, spot_rupees, inst.strike_paise / 100, t, vol, rate=RATE)
    return round(price * 20) * 5


def option_tick(
    inst: Instrument,
    spot_rupees: float,
    vol: float,
    ts: int,
    *,
    oi: int = 1_000_000,
    spread_pct: float = 0.5,
) -> Tick:
    """A tick at the BS premium with a book of ``spread_pct`` ((ask-bid)/bid)."""
    ltp = bs_ltp_paise(inst, spot_rupees, vol, ts)
    bid = ltp
    ask = round(bid * (1 + spread_pct / 100))
    return tick(inst.security_id, ltp, ts, oi=oi, bid_paise=bid, ask_paise=ask)


def at(day: date, hhmm: str, seconds: float = 0.0) -> int:
    return ist_to_ns(day, hhmm, seconds)


D = date(2026, 3, 5)  # a Thursday; NIFTY weekly expiry Tue 2026-03-10
EXP = "2026-03-10"


# --------------------------------------------------------------------------- pure rules


def test_atm_rounds_spot_half_up_to_the_strike_step():
    assert atm_strike_paise(2_502_499, 5000) == 2_500_000
    assert atm_strike_paise(2_502_500, 5000) == 2_505_000  # exactly half a step rounds up
    assert atm_strike_paise(2_497_500, 5000) == 2_500_000
    assert atm_strike_paise(5_123_456, 10000) == 5_120_000


def test_targets_are_atm_and_otm_side_first_three_listed():
    listed = [s * 100 for s in range(24850, 25201, 50)]
    atm = 2_500_000
    assert target_strikes(atm, 5000, "CE", listed) == [2_500_000, 2_505_000, 2_510_000]
    assert target_strikes(atm, 5000, "PE", listed) == [2_500_000, 2_495_000, 2_490_000]
    # a gap at ATM+1 lets ATM+3 in; nothing beyond 3 steps is ever taken
    holed = [s for s in listed if s != 2_505_000]
    assert target_strikes(atm, 5000, "CE", holed) == [2_500_000, 2_510_000, 2_515_000]
    assert target_strikes(atm, 5000, "CE", [2_500_000, 2_520_000]) == [2_500_000]


def test_iv_floor_is_relaxed_at_atm_and_one_step_away():
    atm, step = 2_500_000, 5000
    assert iv_floor_pct100(atm, atm, step, 10.0) == 6.0  # max(5, 0.6 x 10)
    assert iv_floor_pct100(atm + step, atm, step, 10.0) == 8.0  # max(7, 0.8 x 10)
    assert iv_floor_pct100(atm - step, atm, step, 10.0) == 8.0
    assert iv_floor_pct100(atm + 2 * step, atm, step, 10.0) == 10.0
    assert iv_floor_pct100(atm, atm, step, 5.0) == 5.0  # the 5 % floor wins
    assert iv_floor_pct100(atm + step, atm, step, 5.0) == 7.0


@pytest.mark.parametrize(
    ("hhmm", "floor"),
    [
        ("09:20", 0.08),
        ("10:59", 0.08),
        ("11:00", 0.10),
        ("12:59", 0.10),
        ("13:00", 0.12),
        ("14:00", 0.15),
        ("15:10", 0.15),
    ],
)
def test_delta_floor_rises_through_the_day_in_ist_event_time(hhmm, floor):
    assert min_abs_delta(at(D, hhmm)) == floor


def test_spread_is_ask_minus_bid_over_bid_in_percent():
    assert spread_pct100(10000, 10200) == pytest.approx(2.0)
    assert spread_pct100(0, 10200) is None
    assert spread_pct100(10000, 0) is None


def _score(**kw):
    base = dict(
        strike=2_500_000,
        atm=2_500_000,
        option_type="CE",
        ltp_paise=12000,
        iv_pct100=16.0,
        oi=1_200_000,
        spread=0.5,
        abs_delta=0.52,
    )
    base.update(kw)
    return score_strike(**base)


def test_score_of_a_liquid_atm_call_by_hand():
    s = _score()
    # ATM 100 + OI >= 1M 50 + delta >= 0.5 30 + IV in 15-25 20 + 120/0.52 = 230.8 -> 8
    assert (s.atm, s.liquidity, s.delta, s.iv, s.efficiency) == (100, 50, 30, 20, 8)
    assert s.total == 208


def test_score_of_an_otm_call_with_moderate_spread_by_hand():
    s = _score(
        strike=2_510_000, ltp_paise=6000, iv_pct100=12.0, oi=600_000, spread=1.5, abs_delta=0.35
    )
    # 100 points away <= 0.3 x 375 -> 80; OI 40 x 0.9; delta 20; IV 10-30 15; 60/0.35=171 -> 10
    assert (s.atm, s.liquidity, s.delta, s.iv, s.efficiency) == (80, 36, 20, 15, 10)
    assert s.total == pytest.approx(161)


def test_score_of_a_poor_far_call_by_hand():
    s = _score(
        strike=2_515_000, ltp_paise=15000, iv_pct100=45.0, oi=80_000, spread=2.5, abs_delta=0.25
    )
    # 150 away <= 225 -> 50; OI 20 x 0.8 = 16; delta 10; IV outside 5-40 -> 5; 150/0.25=600 -> 4
    assert (s.atm, s.liquidity, s.delta, s.iv, s.efficiency) == (50, 16, 10, 5, 4)
    assert s.total == pytest.approx(85)


def test_score_atm_bands_are_exact_in_paise_at_1_5_percent_of_atm():
    # 1.5 % of 25000 = 375 rupees; bands at 37.50, 112.50, 225.00
    assert _score(strike=2_503_750).atm == 100
    assert _score(strike=2_503_755).atm == 80
    assert _score(strike=2_511_250).atm == 80
    assert _score(strike=2_511_255).atm == 50
    assert _score(strike=2_522_500).atm == 50
    assert _score(strike=2_522_505).atm == 20


def test_score_penalises_itm_strikes_by_30_percent():
    assert _score(option_type="PE", strike=2_505_000).atm == pytest.approx(56)  # 80 x 0.7
    assert _score(option_type="CE", strike=2_495_000).atm == pytest.approx(56)
    assert _score(option_type="PE", strike=2_495_000).atm == 80  # OTM put: no penalty


def test_score_spread_penalty_thresholds_are_strictly_above_1_and_2_percent():
    assert _score(spread=1.0).liquidity == 50
    assert _score(spread=1.01).liquidity == pytest.approx(45)
    assert _score(spread=2.0).liquidity == pytest.approx(45)
    assert _score(spread=2.01).liquidity == pytest.approx(40)
    assert _score(spread=None).liquidity == 50


def test_score_iv_bonus_for_low_iv_near_atm_only():
    assert _score(iv_pct100=8.0).iv == 15  # 10 + 5: within 0.5 % (125) of ATM
    assert _score(iv_pct100=8.0, strike=2_512_500).iv == 15  # exactly 125 away
    assert _score(iv_pct100=8.0, strike=2_515_000).iv == 10  # 150 away: no bonus
    assert _score(iv_pct100=10.0).iv == 15  # bonus needs IV below 10


def test_score_delta_and_price_efficiency_boundaries():
    assert _score(abs_delta=0.5).delta == 30
    assert _score(abs_delta=0.4999).delta == 25
    assert _score(abs_delta=0.3).delta == 20
    assert _score(ltp_paise=10000, abs_delta=0.5).efficiency == 10  # 200
    assert _score(ltp_paise=15000, abs_delta=0.5).efficiency == 8  # 300
    assert _score(ltp_paise=25000, abs_delta=0.5).efficiency == 6  # 500
    assert _score(ltp_paise=25005, abs_delta=0.5).efficiency == 4


# --------------------------------------------------------------------------- expiry and window


def _expiry_view(cutoff: str = "14:30") -> ChainView:
    # NIFTY weekly expiries: Tue 2026-03-03 is Holi, so that contract expires Mon 2026-03-02.
    insts = make_instruments(expiries=("2026-03-02", "2026-03-10", "2026-03-17"))
    return ChainView(NIFTY, insts, OptionChainConfig(expiry_day_cutoff_hhmm=cutoff))


def test_expiry_is_the_holiday_shifted_monday_from_the_instrument_data():
    view = _expiry_view()
    assert view.expiry_for(at(date(2026, 2, 27), "10:00")) == "2026-03-02"  # Friday before
    assert view.expiry_for(at(date(2026, 3, 2), "09:15")) == "2026-03-02"  # expiry day itself
    assert view.expiry_for(at(date(2026, 3, 3), "10:00")) == "2026-03-10"  # the holiday


def test_expiry_moves_to_the_next_one_from_the_cutoff_on_expiry_day():
    view = _expiry_view("14:30")
    assert view.expiry_for(at(date(2026, 3, 2), "14:29", 59)) == "2026-03-02"
    assert view.expiry_for(at(date(2026, 3, 2), "14:30")) == "2026-03-10"
    late = _expiry_view("15:30")
    assert late.expiry_for(at(date(2026, 3, 2), "15:00")) == "2026-03-02"


def test_expiry_uses_the_ist_trading_day_not_the_utc_date():
    view = _expiry_view()
    # 2026-03-01 20:00 UTC is 2026-03-02 01:30 IST: already expiry day (before the cutoff)
    ts = at(date(2026, 3, 2), "01:30")
    assert view.expiry_for(ts) == "2026-03-02"


def test_no_expiry_after_the_last_listed_one():
    view = _expiry_view()
    assert view.expiry_for(at(date(2026, 3, 17), "14:30")) == ""
    assert view.expiry_for(at(date(2026, 3, 18), "10:00")) == ""


def test_window_lists_ce_and_pe_of_n_strikes_each_side_of_atm_for_the_selected_expiry():
    insts = make_instruments(expiries=("2026-03-02", EXP))
    view = ChainView(NIFTY, insts, OptionChainConfig(window_strikes=2))
    ids = view.window(2_501_000, at(D, "10:00"))
    want = sorted(
        find(insts, EXP, k, ot).security_id
        for k in (24900, 24950, 25000, 25050, 25100)
        for ot in ("CE", "PE")
    )
    assert ids == want


def test_window_is_cut_at_the_edge_of_the_listed_strikes():
    insts = make_instruments(lo_rupees=24900, hi_rupees=25100)
    view = ChainView(NIFTY, insts, OptionChainConfig(window_strikes=3))
    assert len(view.window(2_490_000, at(D, "10:00"))) == 2 * 4  # 24900 .. 25050


def test_window_defaults_to_the_latest_tick_time_and_is_empty_before_any_tick():
    insts = make_instruments(expiries=("2026-03-02", EXP))
    view = ChainView(NIFTY, insts, OptionChainConfig(window_strikes=1))
    assert view.window(2_500_000) == []
    view.on_tick(spot_tick(NIFTY, 2_500_000, at(date(2026, 3, 2), "15:00")))  # after cutoff
    assert {view.instrument(s).expiry for s in view.window(2_500_000)} == {EXP}


# --------------------------------------------------------------------------- ticks and quotes


def test_view_keeps_the_latest_tick_per_option_and_ignores_other_instruments():
    insts = make_instruments()
    view = ChainView(NIFTY, insts, OptionChainConfig())
    ce = find(insts, EXP, 25000, "CE")
    assert view.on_tick(tick(ce.security_id, 20000, at(D, "10:00")))
    assert not view.on_tick(tick(ce.security_id, 1, at(D, "10:01"), segment="BSE_FNO"))
    assert not view.on_tick(tick(999_999, 1, at(D, "10:01")))
    assert view.on_tick(tick(ce.security_id, 19000, at(D, "09:59")))  # late, out of order
    assert view.latest_tick(ce.security_id).ltp_paise == 20000
    assert view.on_tick(spot_tick(NIFTY, 2_501_000, at(D, "10:00")))
    assert view.spot.ltp_paise == 2_501_000


def test_quote_derives_iv_and_delta_from_the_recorded_prices():
    insts = make_instruments()
    cfg = OptionChainConfig(risk_free_rate=RATE)
    view = ChainView(NIFTY, insts, cfg)
    ts = at(D, "10:00")
    pe = find(insts, EXP, 24950, "PE")
    view.on_tick(spot_tick(NIFTY, 2_501_000, ts))
    view.on_tick(option_tick(pe, 25010, 0.16, ts))
    q = view.quote(pe.security_id, ts)
    assert q.iv_pct100 == pytest.approx(16.0, abs=0.01)  # premium rounded to 5 paise
    t = years_to_expiry(ts, EXP)
    assert q.delta == pytest.approx(bs_delta("PE", 25010, 24950, t, 0.16, rate=RATE), abs=1e-3)
    assert q.spread_pct100 == pytest.approx(0.5, abs=0.01)


def test_quote_has_no_greeks_without_an_index_tick():
    insts = make_instruments()
    view = ChainView(NIFTY, insts, OptionChainConfig())
    ce = find(insts, EXP, 25000, "CE")
    view.on_tick(tick(ce.security_id, 20000, at(D, "10:00")))
    q = view.quote(ce.security_id, at(D, "10:00"))
    assert q.ltp_paise == 20000 and q.iv_pct100 is None and q.delta is None


# --------------------------------------------------------------------------- selection


def test_atm_selection_picks_the_atm_call_for_a_bullish_signal():
    insts = make_instruments()
    view = ChainView(NIFTY, insts, OptionChainConfig(selection="atm"))
    sel = view.select("bullish", at(D, "10:00"), spot_paise=2_502_400)
    assert [p.instrument for p in sel.picks] == [find(insts, EXP, 25000, "CE")]


def test_atm_selection_picks_the_atm_put_for_a_bearish_signal():
    insts = make_instruments()
    view = ChainView(NIFTY, insts, OptionChainConfig(selection="atm"))
    sel = view.select("bearish", at(D, "10:00"), spot_paise=2_503_000)
    assert [p.instrument for p in sel.picks] == [find(insts, EXP, 25050, "PE")]


def test_atm_selection_falls_back_to_the_nearest_listed_strike():
    insts = [i for i in make_instruments() if i.strike_paise != 2_500_000]
    view = ChainView(NIFTY, insts, OptionChainConfig(selection="atm"))
    sel = view.select("bullish", at(D, "10:00"), spot_paise=2_501_000)
    assert sel.picks[0].instrument.strike_paise == 2_495_000  # tie 24950/25050: the lower


def test_selection_refuses_without_spot_or_expiry():
    view = ChainView(NIFTY, make_instruments(), OptionChainConfig())
    assert view.select("bullish", at(D, "10:00")).rule == "no_spot"
    sel = view.select("bullish", at(date(2026, 3, 11), "10:00"), spot_paise=2_500_000)
    assert sel.rule == "no_expiry" and sel.picks == []


def _scored_view(**cfg) -> tuple[ChainView, list[Instrument]]:
    insts = make_instruments()
    base = dict(selection="scored", max_picks=2, risk_free_rate=RATE)
    base.update(cfg)
    return ChainView(NIFTY, insts, OptionChainConfig(**base)), insts


def test_scored_selection_ranks_by_score_not_by_distance():
    view, insts = _scored_view()
    ts = at(D, "10:00")
    view.on_tick(spot_tick(NIFTY, 2_501_000, ts))
    # ATM 25000: 100 + 50 (OI 1.2M) + 30 (delta .53) + 20 (IV 16) + 6 (208/.53=391) = 206
    view.on_tick(option_tick(find(insts, EXP, 25000, "CE"), 25010, 0.16, ts, oi=1_200_000))
    # 25050: 80 + 40 x 0.9 (OI 600k, spread 1.5 %) + 25 (delta .49) + 20 + 6 (373) = 167
    view.on_tick(
        option_tick(find(insts, EXP, 25050, "CE"), 25010, 0.16, ts, oi=600_000, spread_pct=1.5)
    )
    # 25100: 80 + 50 (OI 2M) + 25 (delta .45) + 20 + 6 (356) = 181
    view.on_tick(option_tick(find(insts, EXP, 25100, "CE"), 25010, 0.16, ts, oi=2_000_000))
    sel = view.select("bullish", ts)
    strikes = [p.instrument.strike_paise // 100 for p in sel.picks]
    totals = [round(p.score.total, 6) for p in sel.picks]
    assert strikes == [25000, 25100]  # max_picks = 2; 25050 (167) is third
    assert totals == [206, 181]
    assert "score 206.0" in sel.picks[0].describe()


def test_scored_selection_filters_low_oi_wide_spread_and_high_iv_with_their_numbers():
    view, insts = _scored_view()
    ts = at(D, "10:00")
    view.on_tick(spot_tick(NIFTY, 2_501_000, ts))
    view.on_tick(option_tick(find(insts, EXP, 25000, "CE"), 25010, 0.70, ts))
    view.on_tick(option_tick(find(insts, EXP, 25050, "CE"), 25010, 0.16, ts, oi=30_000))
    view.on_tick(option_tick(find(insts, EXP, 25100, "CE"), 25010, 0.16, ts, spread_pct=4.0))
    sel = view.select("bullish", ts)
    assert sel.picks == [] and sel.rule == "no_strike"
    assert "25000.00 CE: iv 70.0" in sel.reason and "outside [6, 60]" in sel.reason
    assert "25050.00 CE: oi 30000 < min 50000" in sel.reason
    assert "25100.00 CE: spread 4.00% > max 3%" in sel.reason


def test_scored_selection_applies_the_iv_floor_by_distance_from_atm():
    view, insts = _scored_view()
    ts = at(D, "10:00")
    view.on_tick(spot_tick(NIFTY, 2_501_000, ts))
    view.on_tick(option_tick(find(insts, EXP, 25000, "PE"), 25010, 0.055, ts))  # < 6: out
    view.on_tick(option_tick(find(insts, EXP, 24950, "PE"), 25010, 0.09, ts))  # >= 8: in
    view.on_tick(option_tick(find(insts, EXP, 24900, "PE"), 25010, 0.09, ts))  # < 10: out
    sel = view.select("bearish", ts)
    assert [p.instrument.strike_paise // 100 for p in sel.picks] == [24950]
    assert any(r.startswith("25000.00 PE: iv 5.5") for r in sel.rejected)
    assert any(r.startswith("24900.00 PE: iv 9.0") for r in sel.rejected)


def test_scored_selection_rejects_legs_without_ticks():
    view, insts = _scored_view()
    ts = at(D, "10:00")
    view.on_tick(spot_tick(NIFTY, 2_501_000, ts))
    view.on_tick(option_tick(find(insts, EXP, 25050, "CE"), 25010, 0.16, ts))
    sel = view.select("bullish", ts)
    assert [p.instrument.strike_paise // 100 for p in sel.picks] == [25050]
    assert "25000.00 CE: no LTP" in sel.rejected


def test_scored_selection_delta_floor_depends_on_time_of_day():
    bank = IndexConfig(
        key="BANKNIFTY",
        security_id=25,
        options_segment="NSE_FNO",
        exchange="NSE",
        strike_step_paise=10000,
    )
    insts = make_instruments(bank, lo_rupees=24800, hi_rupees=25400)
    cfg = OptionChainConfig(selection="scored", max_picks=3, risk_free_rate=RATE)
    day = date(2026, 3, 9)
    far = find(insts, EXP, 25200, "CE")
    picked = {}
    for hhmm in ("10:00", "14:00"):
        view = ChainView(bank, insts, cfg)
        ts = at(day, hhmm)
        view.on_tick(spot_tick(bank, 2_500_000, ts))
        view.on_tick(option_tick(far, 25000, 0.12, ts))  # |delta| 0.134 at 10:00, 0.115 at 14:00
        sel = view.select("bullish", ts)
        picked[hhmm] = [p.instrument for p in sel.picks]
        if hhmm == "14:00":
            assert "25200.00 CE: |delta| 0.115 < floor 0.15" in sel.rejected
    assert picked == {"10:00": [far], "14:00": []}
