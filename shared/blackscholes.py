"""Black-Scholes-Merton for European index options: price, delta and implied volatility.

Units: prices, spot and strike in one currency unit (rupees here, as floats — these numbers
feed filters and scores, never orders); volatility and rates as annual fractions (0.18 = 18 %);
time in years (ACT/365). ``rate`` is the continuously compounded risk-free rate and
``dividend`` the continuous dividend yield, both taken from ``OptionChainConfig``
(``risk_free_rate``, ``dividend_yield``).

Implied volatility is solved with Brent's method on a bracket, after the price has been checked
against the no-arbitrage bounds, so it never diverges the way a bare Newton iteration can far
from the money or close to expiry.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date

from shared.clock import NS_PER_S, ist_to_ns

SECONDS_PER_YEAR = 365 * 86_400
EXPIRY_TIME_HHMM = "15:30"
"""Index options stop trading (and settle) at the close on expiry day, 15:30 IST."""

IV_LOW = 1e-4
IV_HIGH = 5.0


def norm_cdf(x: float) -> float:
    """Standard normal cumulative distribution; ``erfc`` keeps the far left tail accurate."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _is_call(option_type: str) -> bool:
    if option_type == "CE":
        return True
    if option_type == "PE":
        return False
    raise ValueError(f"option_type must be 'CE' or 'PE', got {option_type!r}")


def _d1_d2(
    spot: float, strike: float, t_years: float, vol: float, rate: float, dividend: float
) -> tuple[float, float]:
    sig_sqrt_t = vol * math.sqrt(t_years)
    d1 = (math.log(spot / strike) + (rate - dividend + 0.5 * vol * vol) * t_years) / sig_sqrt_t
    return d1, d1 - sig_sqrt_t


def bs_price(
    option_type: str,
    spot: float,
    strike: float,
    t_years: float,
    vol: float,
    *,
    rate: float,
    dividend: float = 0.0,
) -> float:
    """Premium of a European call (``CE``) or put (``PE``).

    At or after expiry (``t_years <= 0``) or with zero volatility this is the intrinsic value
    of the forward, discounted.
    """
    call = _is_call(option_type)
    if t_years <= 0.0:
        return max(spot - strike, 0.0) if call else max(strike - spot, 0.0)
    df_q = math.exp(-dividend * t_years)
    df_r = math.exp(-rate * t_years)
    if vol <= 0.0:
        fwd = spot * df_q - strike * df_r
        return max(fwd, 0.0) if call else max(-fwd, 0.0)
    d1, d2 = _d1_d2(spot, strike, t_years, vol, rate, dividend)
    if call:
        return spot * df_q * norm_cdf(d1) - strike * df_r * norm_cdf(d2)
    return strike * df_r * norm_cdf(-d2) - spot * df_q * norm_cdf(-d1)


def bs_delta(
    option_type: str,
    spot: float,
    strike: float,
    t_years: float,
    vol: float,
    *,
    rate: float,
    dividend: float = 0.0,
) -> float:
    """dPremium/dSpot: in (0, 1) for calls, (-1, 0) for puts."""
    call = _is_call(option_type)
    if t_years <= 0.0 or vol <= 0.0:
        itm = spot > strike if call else spot < strike
        return (1.0 if call else -1.0) if itm else 0.0
    d1, _ = _d1_d2(spot, strike, t_years, vol, rate, dividend)
    df_q = math.exp(-dividend * t_years)
    return df_q * norm_cdf(d1) if call else df_q * (norm_cdf(d1) - 1.0)


def price_bounds(
    option_type: str, spot: float, strike: float, t_years: float, *, rate: float, dividend: float
) -> tuple[float, float]:
    """No-arbitrage (lower, upper) bounds on a European premium."""
    fwd_s = spot * math.exp(-dividend * t_years)
    pv_k = strike * math.exp(-rate * t_years)
    if _is_call(option_type):
        return max(fwd_s - pv_k, 0.0), fwd_s
    return max(pv_k - fwd_s, 0.0), pv_k


def implied_vol(
    option_type: str,
    price: float,
    spot: float,
    strike: float,
    t_years: float,
    *,
    rate: float,
    dividend: float = 0.0,
    tol: float = 1e-10,
    max_iter: int = 200,
) -> float | None:
    """The volatility that reproduces ``price``, or ``None`` when none exists in
    [``IV_LOW``, ``IV_HIGH``] (price outside the no-arbitrage bounds, expired, bad inputs).
    """
    if not (price > 0.0 and spot > 0.0 and strike > 0.0 and t_years > 0.0):
        return None
    lower, upper = price_bounds(option_type, spot, strike, t_years, rate=rate, dividend=dividend)
    if price <= lower or price >= upper:
        return None

    def f(vol: float) -> float:
        return (
            bs_price(option_type, spot, strike, t_years, vol, rate=rate, dividend=dividend) - price
        )

    return _brent(f, IV_LOW, IV_HIGH, tol, max_iter)


def _brent(
    f: Callable[[float], float], a: float, b: float, tol: float, max_iter: int
) -> float | None:
    """Root of ``f`` in [a, b] by Brent's method (inverse quadratic / secant / bisection)."""
    fa, fb = f(a), f(b)
    if fa == 0.0:
        return a
    if fb == 0.0:
        return b
    if (fa > 0.0) == (fb > 0.0):
        return None
    c, fc = a, fa
    d = e = b - a
    for _ in range(max_iter):
        if (fb > 0.0) == (fc > 0.0):
            c, fc = a, fa
            d = e = b - a
        if abs(fc) < abs(fb):
            a, b, c = b, c, b
            fa, fb, fc = fb, fc, fb
        tol1 = 2.0 * 2.2e-16 * abs(b) + 0.5 * tol
        xm = 0.5 * (c - b)
        if abs(xm) <= tol1 or fb == 0.0:
            return b
        if abs(e) >= tol1 and abs(fa) > abs(fb):
            s = fb / fa
            if a == c:
                p, q = 2.0 * xm * s, 1.0 - s
            else:
                q, r = fa / fc, fb / fc
                p = s * (2.0 * xm * q * (q - r) - (b - a) * (r - 1.0))
                q = (q - 1.0) * (r - 1.0) * (s - 1.0)
            if p > 0.0:
                q = -q
            p = abs(p)
            if 2.0 * p < min(3.0 * xm * q - abs(tol1 * q), abs(e * q)):
                e, d = d, p / q
            else:
                d = e = xm
        else:
            d = e = xm
        a, fa = b, fb
        b += d if abs(d) > tol1 else math.copysign(tol1, xm)
        fb = f(b)
    return b


def years_to_expiry(ts_ns: int, expiry: str) -> float:
    """Years (ACT/365) from ``ts_ns`` to 15:30 IST on ``expiry`` (ISO date); negative after."""
    close_ns = ist_to_ns(date.fromisoformat(expiry), EXPIRY_TIME_HHMM)
    return (close_ns - ts_ns) / NS_PER_S / SECONDS_PER_YEAR
