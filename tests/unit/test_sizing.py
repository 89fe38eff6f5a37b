"""Capital allocation: one lot, the capital bands, lot rounding and the fixed unit error."""

from __future__ import annotations

import math

import pytest

from services.entries.sizing import band_for, paper_available_capital_paise, size_order
from shared.config import CapitalConfig, IndexConfig, PaperConfig, RiskConfig
from shared.models import OpenPosition

NIFTY = IndexConfig(key="NIFTY", security_id=13, options_segment="NSE_FNO", exchange="NSE")
BANDS = CapitalConfig(sizing="bands")


def rupees(r: float) -> int:
    return round(r * 100)


def size(
    premium_rupees: float,
    lot: int,
    capital_rupees: float,
    *,
    sl: float = 0.30,
    capital: CapitalConfig = BANDS,
    index: IndexConfig = NIFTY,
    mult: int = 1,
):
    return size_order(
        premium_paise=rupees(premium_rupees),
        lot_size=lot,
        available_capital_paise=rupees(capital_rupees),
        capital=capital,
        risk=RiskConfig(sl_pct=sl),
        index=index,
        scale_multiplier=mult,
    )


# --------------------------------------------------------------------------- one lot


def test_one_lot_sizing_buys_exactly_one_lot_whatever_the_capital_and_multiplier():
    r = size(120.0, 65, 5_000_000, capital=CapitalConfig(sizing="one_lot"), mult=3)
    assert (r.quantity, r.lots, r.lot_cost_paise) == (65, 1, rupees(120 * 65))


def test_one_lot_sizing_refuses_when_capital_cannot_pay_for_the_lot():
    r = size(120.0, 65, 7_799.99, capital=CapitalConfig(sizing="one_lot"))
    assert r.quantity == 0 and "< one lot 7800.00" in r.reason


def test_zero_premium_or_lot_size_sizes_nothing():
    assert size(0.0, 65, 100_000).quantity == 0
    assert size(100.0, 0, 100_000).quantity == 0


# --------------------------------------------------------------------------- bands


@pytest.mark.parametrize(
    ("capital_rupees", "band"),
    [
        (10_000, 0),
        (75_000, 0),
        (75_000.01, 1),
        (150_000, 1),
        (150_000.01, 2),
        (300_000, 2),
        (300_000.01, 3),
        (10_000_000, 3),
    ],
)
def test_band_upper_bounds_are_inclusive(capital_rupees, band):
    assert band_for(rupees(capital_rupees), BANDS.bands)[0] == band


def test_band_0_up_to_75k_allocates_30pct_and_risks_5pct():
    # lot 75 x 50 = 3,750. alloc 60,000 x 0.30 = 18,000 -> 4 lots.
    # risk 60,000 x 0.05 = 3,000 / (50 x 0.30 x 75 = 1,125) -> 2 lots.
    r = size(50.0, 75, 60_000)
    assert (r.band, r.alloc_pct, r.risk_per_trade_pct, r.daily_max_loss_pct) == (
        0,
        0.30,
        0.05,
        0.05,
    )
    assert (r.lots_by_alloc, r.lots_by_risk, r.lots, r.quantity) == (4, 2, 2, 150)


def test_band_1_up_to_150k_allocates_25pct_and_risks_3_5pct():
    # lot 75 x 100 = 7,500. alloc 25,000 -> 3 lots. risk 3,500 / (100 x 0.30 x 75 = 2,250) -> 1.
    r = size(100.0, 75, 100_000)
    assert (r.band, r.alloc_pct, r.risk_per_trade_pct, r.daily_max_loss_pct) == (
        1,
        0.25,
        0.035,
        0.06,
    )
    assert (r.lots_by_alloc, r.lots_by_risk, r.quantity) == (3, 1, 75)


def test_band_2_up_to_300k_allocates_20pct_and_risks_3pct():
    # lot 75 x 80 = 6,000. alloc 50,000 -> 8 lots. risk 7,500 / (80 x 0.15 x 75 = 900) -> 8.
    r = size(80.0, 75, 250_000, sl=0.15)
    assert (r.band, r.alloc_pct, r.risk_per_trade_pct, r.daily_max_loss_pct) == (
        2,
        0.20,
        0.03,
        0.06,
    )
    assert (r.lots_by_alloc, r.lots_by_risk, r.quantity) == (8, 8, 600)


def test_band_3_above_300k_allocates_20pct_and_risks_2_5pct():
    # lot 30 x 200 = 6,000. alloc 200,000 -> 33 lots. risk 25,000 / (200 x 0.10 x 30 = 600) -> 41.
    r = size(200.0, 30, 1_000_000, sl=0.10)
    assert (r.band, r.alloc_pct, r.risk_per_trade_pct, r.daily_max_loss_pct) == (
        3,
        0.20,
        0.025,
        0.05,
    )
    assert (r.lots_by_alloc, r.lots_by_risk, r.quantity) == (33, 41, 990)


def _original_max_by_risk(capital: float, risk_pct: float, premium: float, lot: int) -> int:
    """The original allocator's risk cap, with its hard-coded 30 % stop (reference §6)."""
    return math.floor(min(capital * risk_pct, capital) / (premium * 0.30)) * lot


def test_risk_cap_counts_lots_not_units_fixing_the_originals_unit_error():
    r = size(100.0, 75, 100_000)
    original_qty = min(3 * 75, _original_max_by_risk(100_000, 0.035, 100.0, 75))
    assert original_qty == 225  # the original's risk cap was 8,700 units: alloc won at 3 lots
    assert r.quantity == 75  # 3,500 at risk buys one 2,250-risk lot, not 116 lots
    # and the rupee risk of the sized position stays within the band's risk budget
    assert r.quantity * 100.0 * 0.30 <= 100_000 * 0.035


def test_index_capital_alloc_pct_overrides_the_band_allocation():
    ix = IndexConfig(
        key="NIFTY",
        security_id=13,
        options_segment="NSE_FNO",
        exchange="NSE",
        capital_alloc_pct=0.10,
    )
    # 100,000 x 0.10 = 10,000 / 7,500 -> 1 lot (band 1 would give 3)
    r = size(100.0, 75, 100_000, sl=0.01, index=ix)
    assert (r.alloc_pct, r.lots_by_alloc, r.quantity) == (0.10, 1, 75)


def test_lots_are_clamped_up_to_min_lots_when_capital_can_pay():
    # alloc 6,000 / 7,500 -> 0 lots, risk 1,000 / 2,250 -> 0 lots: clamped to 1 lot
    r = size(100.0, 75, 20_000)
    assert (r.lots_by_alloc, r.lots_by_risk, r.quantity) == (0, 0, 75)


def test_no_trade_when_capital_cannot_pay_min_lots():
    r = size(100.0, 75, 14_999, capital=CapitalConfig(sizing="bands", min_lots=2))
    assert r.quantity == 0 and "< 2 lot(s)" in r.reason


def test_lots_are_clamped_down_to_max_lots():
    r = size(10.0, 75, 10_000_000, sl=0.01, capital=CapitalConfig(sizing="bands", max_lots=5))
    assert r.lots == 5 and r.quantity == 375


def test_signal_and_index_multipliers_scale_the_lots():
    ix = IndexConfig(
        key="NIFTY", security_id=13, options_segment="NSE_FNO", exchange="NSE", multiplier=2
    )
    r = size(100.0, 75, 100_000, index=ix, mult=3)  # base 1 lot x 3 x 2
    assert r.lots == 6 and r.quantity == 450


def test_multiplied_lots_are_reclamped_to_max_lots_and_to_what_capital_pays():
    ix = IndexConfig(
        key="NIFTY",
        security_id=13,
        options_segment="NSE_FNO",
        exchange="NSE",
        multiplier=2,
        capital_alloc_pct=0.30,
    )
    # base min(4 by alloc, 4 by risk at sl 0.01) = 4 lots x 3 x 2 = 24 > affordable 13
    r = size(100.0, 75, 100_000, sl=0.01, index=ix, mult=3)
    assert r.lots == 13 and "affordable 13" in r.reason
    capped = size(
        100.0,
        75,
        100_000,
        sl=0.01,
        index=ix,
        mult=3,
        capital=CapitalConfig(sizing="bands", max_lots=10),
    )
    assert capped.lots == 10


def test_lot_rounding_is_exact_where_binary_floats_round_down():
    ix = IndexConfig(
        key="NIFTY",
        security_id=13,
        options_segment="NSE_FNO",
        exchange="NSE",
        capital_alloc_pct=1.0,
    )
    # risk 120,000 x 0.035 = 4,200 / (24 x 0.07 x 25 = 42) is exactly 100 lots;
    # floats say 99.999... and floor to 99.
    assert math.floor(120_000 * 0.035 / (24 * 0.07 * 25)) == 99
    r = size(
        24.0, 25, 120_000, sl=0.07, index=ix, capital=CapitalConfig(sizing="bands", max_lots=1000)
    )
    assert (r.lots_by_risk, r.lots, r.quantity) == (100, 100, 2500)


def test_zero_stop_loss_leaves_only_the_allocation_cap():
    r = size(100.0, 75, 100_000, sl=0.0)
    assert r.lots_by_risk is None and r.lots == 3


# --------------------------------------------------------------------------- paper capital


def test_paper_capital_is_the_balance_less_premium_deployed():
    held = [
        OpenPosition(
            position_id="p1",
            index="NIFTY",
            security_id=1,
            option_type="CE",
            quantity=75,
            entry_price_paise=12000,
            ts_entry=0,
        ),
        OpenPosition(
            position_id="p2",
            index="NIFTY",
            security_id=2,
            option_type="PE",
            quantity=30,
            entry_price_paise=8050,
            ts_entry=0,
        ),
    ]
    assert paper_available_capital_paise(PaperConfig(balance_rupees=100_000), held) == (
        10_000_000 - 900_000 - 241_500
    )
