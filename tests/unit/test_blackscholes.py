"""Black-Scholes price, delta and implied volatility against textbook values."""

from __future__ import annotations

import math
from datetime import date

import pytest

from shared.blackscholes import (
    bs_delta,
    bs_price,
    implied_vol,
    norm_cdf,
    price_bounds,
    years_to_expiry,
)
from shared.clock import ist_to_ns


def test_norm_cdf_matches_tabulated_values():
    assert norm_cdf(0.0) == pytest.approx(0.5, abs=1e-15)
    assert norm_cdf(1.96) == pytest.approx(0.9750021, abs=1e-7)
    assert norm_cdf(-1.0) == pytest.approx(0.1586553, abs=1e-7)


def test_hull_example_call_and_put_prices():
    # Hull, Options, Futures and Other Derivatives: S=42, K=40, r=10%, sigma=20%, T=0.5 ->
    # c = 4.76, p = 0.81.
    c = bs_price("CE", 42, 40, 0.5, 0.2, rate=0.10)
    p = bs_price("PE", 42, 40, 0.5, 0.2, rate=0.10)
    assert c == pytest.approx(4.7594, abs=1e-4)
    assert p == pytest.approx(0.8086, abs=1e-4)


def test_hull_delta_example_is_0_522():
    # Hull's delta-hedging example: S=49, K=50, r=5%, sigma=20%, T=20 weeks -> c=2.40, delta=0.522.
    t = 20 / 52
    assert bs_price("CE", 49, 50, t, 0.2, rate=0.05) == pytest.approx(2.40, abs=5e-3)
    assert bs_delta("CE", 49, 50, t, 0.2, rate=0.05) == pytest.approx(0.522, abs=5e-4)


def test_haug_put_with_dividend_yield():
    # Haug, Complete Guide to Option Pricing Formulas (generalised BSM, Merton 1973):
    # S=100, X=95, T=0.5, r=10%, q=5%, sigma=20% -> put 2.4648.
    assert bs_price("PE", 100, 95, 0.5, 0.2, rate=0.10, dividend=0.05) == pytest.approx(
        2.4648, abs=1e-4
    )


@pytest.mark.parametrize("strike", [22000, 24800, 25000, 25300, 28000])
@pytest.mark.parametrize("t_years", [0.5 / 365, 7 / 365, 0.25])
def test_put_call_parity_holds_with_rate_and_dividend(strike, t_years):
    s, r, q, vol = 25000.0, 0.065, 0.012, 0.16
    c = bs_price("CE", s, strike, t_years, vol, rate=r, dividend=q)
    p = bs_price("PE", s, strike, t_years, vol, rate=r, dividend=q)
    parity = s * math.exp(-q * t_years) - strike * math.exp(-r * t_years)
    assert c - p == pytest.approx(parity, abs=1e-7)


def test_put_delta_is_call_delta_minus_discounted_one():
    dc = bs_delta("CE", 25000, 25100, 0.02, 0.15, rate=0.065, dividend=0.01)
    dp = bs_delta("PE", 25000, 25100, 0.02, 0.15, rate=0.065, dividend=0.01)
    assert dc - dp == pytest.approx(math.exp(-0.01 * 0.02), abs=1e-12)
    assert 0 < dc < 1 and -1 < dp < 0


def _iv_cases() -> list[tuple[str, int, float, float]]:
    """Options across moneyness, time and volatility that still carry time value a double can
    resolve (deep in-the-money options two hours from expiry do not)."""
    cases = []
    for option_type in ("CE", "PE"):
        for strike in (23500, 24900, 25000, 25150, 26500):
            for t_years in (2 / (365 * 24), 3 / 365, 30 / 365):
                for vol in (0.06, 0.14, 0.45, 1.5):
                    price = bs_price(option_type, 25000, strike, t_years, vol, rate=0.065)
                    lower, _ = price_bounds(
                        option_type, 25000, strike, t_years, rate=0.065, dividend=0.0
                    )
                    if price - lower > 1e-6:
                        cases.append((option_type, strike, t_years, vol))
    return cases


@pytest.mark.parametrize(("option_type", "strike", "t_years", "vol"), _iv_cases())
def test_implied_vol_recovers_the_volatility_that_made_the_price(option_type, strike, t_years, vol):
    price = bs_price(option_type, 25000, strike, t_years, vol, rate=0.065)
    iv = implied_vol(option_type, price, 25000, strike, t_years, rate=0.065)
    assert iv == pytest.approx(vol, rel=1e-6)


def test_implied_vol_covers_at_least_100_cases_across_the_grid():
    assert len(_iv_cases()) >= 100


def test_implied_vol_refuses_prices_outside_no_arbitrage_bounds():
    # Below intrinsic value: no volatility reproduces it.
    assert implied_vol("CE", 90.0, 25100, 25000, 0.01, rate=0.065) is None
    # At or above the spot: a call can never be worth that much.
    assert implied_vol("CE", 25100.0, 25100, 25000, 0.01, rate=0.065) is None
    # Zero price, zero or negative time.
    assert implied_vol("PE", 0.0, 25000, 25000, 0.01, rate=0.065) is None
    assert implied_vol("PE", 50.0, 25000, 25000, 0.0, rate=0.065) is None


def test_expired_option_is_worth_its_intrinsic_value():
    assert bs_price("CE", 25100, 25000, 0.0, 0.2, rate=0.065) == 100
    assert bs_price("PE", 25100, 25000, -0.01, 0.2, rate=0.065) == 0
    assert bs_delta("CE", 25100, 25000, 0.0, 0.2, rate=0.065) == 1.0
    assert bs_delta("PE", 25100, 25000, 0.0, 0.2, rate=0.065) == 0.0


def test_unknown_option_type_is_an_error():
    with pytest.raises(ValueError):
        bs_price("XX", 100, 100, 0.1, 0.2, rate=0.0)


def test_years_to_expiry_runs_to_1530_ist_on_expiry_day():
    day = date(2026, 3, 10)
    assert years_to_expiry(ist_to_ns(day, "15:30"), "2026-03-10") == 0.0
    one_day_before = ist_to_ns(date(2026, 3, 9), "15:30")
    assert years_to_expiry(one_day_before, "2026-03-10") == pytest.approx(1 / 365, abs=1e-15)
    assert years_to_expiry(ist_to_ns(day, "15:31"), "2026-03-10") < 0
