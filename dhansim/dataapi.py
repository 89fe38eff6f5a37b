"""Market quote, option chain and intraday chart answers, as of the session clock.

Shapes follow reference §3.10–3.12. Nothing here looks past the released ticks: the chain and
quotes show the latest released values, the chart only bars of released ticks.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

from shared.blackscholes import bs_delta, implied_vol, years_to_expiry
from shared.clock import (
    IST,
    NS_PER_S,
    hhmm_to_minutes,
    ist_datetime,
    ist_midnight_ns,
    ist_to_ns,
)
from shared.types import SEGMENT_CODES

from .decisions import CHAIN_IV_IN_PERCENT, DIVIDEND_YIELD, RATE_PER_YEAR
from .fields import ApiError, get_bool, get_int, get_str
from .market import InstrumentState, Market

MAX_QUOTE_INSTRUMENTS = 1000
CHART_INTERVALS_MIN = (1, 5, 15, 25, 60)
SESSION_OPEN_HHMM = "09:15"


def _r(x: float, digits: int = 2) -> float:
    return round(float(x), digits)


def _requested(body: dict[str, Any]) -> list[tuple[str, int]]:
    """``{"NSE_FNO": [49081, "49082"], "dhanClientId": …}`` → ``[(segment, id), …]``."""
    wanted: list[tuple[str, int]] = []
    for segment, ids in body.items():
        if segment not in SEGMENT_CODES:
            continue  # dhanClientId and anything else the SDK adds
        if not isinstance(ids, list):
            raise ApiError("814", f"{segment}: expected a list of security ids")
        for raw in ids:
            try:
                wanted.append((segment, int(str(raw).strip())))
            except ValueError:
                raise ApiError("813", f"Invalid SecurityId {raw!r}") from None
    if len(wanted) > MAX_QUOTE_INSTRUMENTS:
        raise ApiError("804", "Requested number of instruments exceeds limit")
    return wanted


def _ltt_text(state: InstrumentState) -> str:
    if not state.ltt_s:
        return "01/01/1980 00:00:00"
    return ist_datetime(state.ltt_s * NS_PER_S).strftime("%d/%m/%Y %H:%M:%S")


def _ohlc(state: InstrumentState) -> dict[str, float]:
    return {"open": state.open, "close": state.prev_close, "high": state.high, "low": state.low}


def _quote(state: InstrumentState, kind: str) -> dict[str, Any]:
    if kind == "ltp":
        return {"last_price": state.ltp}
    if kind == "ohlc":
        return {"last_price": state.ltp, "ohlc": _ohlc(state)}
    levels = state.depth()
    return {
        "average_price": _r(state.atp),
        "buy_quantity": state.bid_qty,
        "depth": {
            "buy": [
                {"quantity": lv.bid_qty, "orders": lv.bid_orders, "price": lv.bid_price}
                for lv in levels
            ],
            "sell": [
                {"quantity": lv.ask_qty, "orders": lv.ask_orders, "price": lv.ask_price}
                for lv in levels
            ],
        },
        "last_price": state.ltp,
        "last_quantity": state.ltq,
        "last_trade_time": _ltt_text(state),
        "lower_circuit_limit": 0.0,
        "upper_circuit_limit": 0.0,
        "net_change": _r(state.ltp - state.prev_close) if state.has_data else 0.0,
        "oi": state.oi,
        "oi_day_high": state.oi_high,
        "oi_day_low": state.oi_low,
        "ohlc": _ohlc(state),
        "sell_quantity": state.ask_qty,
        "volume": state.volume,
    }


def market_quote(market: Market, body: dict[str, Any], kind: str) -> dict[str, Any]:
    """``POST /marketfeed/{ltp,ohlc,quote}``; unknown instruments are left out."""
    data: dict[str, dict[str, Any]] = {}
    for segment, sid in _requested(body):
        state = market.state(segment, sid)
        if state is None:
            continue
        data.setdefault(segment, {})[str(sid)] = _quote(state, kind)
    return {"data": data, "status": "success"}


# ------------------------------------------------------------------------------ option chain


def _underlying(market: Market, body: dict[str, Any]) -> tuple[str, InstrumentState | None]:
    scrip = get_int(body, "UnderlyingScrip", required=True)
    segment = get_str(body, "UnderlyingSeg", required=True)
    inst = market.instrument(segment, scrip)
    if inst is None or segment != "IDX_I":
        raise ApiError("813", f"Invalid SecurityId {scrip} in {segment}")
    return inst.underlying, market.state(segment, scrip)


def expiry_list(market: Market, body: dict[str, Any], today: str) -> dict[str, Any]:
    """``POST /optionchain/expirylist``: the underlying's unexpired option expiries, ascending."""
    name, _ = _underlying(market, body)
    expiries = sorted(
        {
            i.expiry
            for i in market.instruments.values()
            if i.instrument == "OPTIDX" and i.underlying == name and i.expiry >= today
        }
    )
    return {"data": expiries, "status": "success"}


def _greeks(kind: str, price: float, spot: float, strike: float, t: float) -> dict[str, Any]:
    iv = implied_vol(kind, price, spot, strike, t, rate=RATE_PER_YEAR, dividend=DIVIDEND_YIELD)
    if iv is None or t <= 0:
        zero = {"delta": 0.0, "theta": 0.0, "gamma": 0.0, "vega": 0.0}
        return {"greeks": zero, "implied_volatility": 0.0}
    r, q = RATE_PER_YEAR, DIVIDEND_YIELD
    delta = bs_delta(kind, spot, strike, t, iv, rate=r, dividend=q)
    sqrt_t = math.sqrt(t)
    d1 = (math.log(spot / strike) + (r - q + 0.5 * iv * iv) * t) / (iv * sqrt_t)
    d2 = d1 - iv * sqrt_t
    pdf = math.exp(-0.5 * d1 * d1) / math.sqrt(2 * math.pi)
    df_q, df_r = math.exp(-q * t), math.exp(-r * t)
    gamma = df_q * pdf / (spot * iv * sqrt_t)
    vega = spot * df_q * pdf * sqrt_t / 100  # per vol point
    ncdf = _norm_cdf
    decay = -spot * df_q * pdf * iv / (2 * sqrt_t)
    if kind == "CE":
        theta = decay - r * strike * df_r * ncdf(d2) + q * spot * df_q * ncdf(d1)
    else:
        theta = decay + r * strike * df_r * ncdf(-d2) - q * spot * df_q * ncdf(-d1)
    return {
        "greeks": {
            "delta": _r(delta, 5),
            "theta": _r(theta / 365, 5),
            "gamma": _r(gamma, 6),
            "vega": _r(vega, 5),
        },
        "implied_volatility": _r(iv * 100 if CHAIN_IV_IN_PERCENT else iv, 4),
    }


def _norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def option_chain(market: Market, body: dict[str, Any], now_ns: int) -> dict[str, Any]:
    """``POST /optionchain``: every strike of the expiry, ``ce``/``pe`` as of the clock."""
    name, spot_state = _underlying(market, body)
    expiry = get_str(body, "Expiry", required=True)
    contracts = [
        i
        for i in market.instruments.values()
        if i.instrument == "OPTIDX" and i.underlying == name and i.expiry == expiry
    ]
    if not contracts:
        raise ApiError("811", f"Invalid Expiry Date {expiry!r}")
    spot = spot_state.ltp if spot_state and spot_state.has_data else 0.0
    t = years_to_expiry(now_ns, expiry)
    chain: dict[str, dict[str, Any]] = {}
    for inst in sorted(contracts, key=lambda i: (i.strike_paise, i.option_type)):
        state = market.state(inst.segment, inst.security_id)
        if state is None or inst.option_type not in ("CE", "PE"):
            continue
        strike = inst.strike_paise / 100
        side: dict[str, Any] = {
            "average_price": _r(state.atp),
            "last_price": state.ltp,
            "oi": state.oi,
            "previous_close_price": state.prev_close,
            "previous_oi": state.prev_oi,
            "previous_volume": 0,
            "security_id": inst.security_id,
            "top_ask_price": state.ask,
            "top_ask_quantity": state.ask_qty,
            "top_bid_price": state.bid,
            "top_bid_quantity": state.bid_qty,
            "volume": state.volume,
        }
        if state.has_data and spot > 0:
            side.update(_greeks(inst.option_type, state.ltp, spot, strike, t))
        else:
            side.update(_greeks(inst.option_type, 0.0, spot, strike, t))
        chain.setdefault(f"{strike:.6f}", {})[inst.option_type.lower()] = side
    return {"data": {"last_price": spot, "oc": chain}, "status": "success"}


# ------------------------------------------------------------------------------ charts


def _parse_bound(text: str, key: str, *, end: bool) -> int:
    """IST date or date-time text → UTC ns. A date-only end covers that whole day."""
    try:
        if len(text) <= 10:
            day = date.fromisoformat(text)
            start = ist_to_ns(day, "00:00")
            return start + 86_400 * NS_PER_S if end else start
        dt = datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=IST)
        return int(dt.timestamp()) * NS_PER_S
    except ValueError:
        raise ApiError("812", f"Invalid date format for {key}: {text!r}") from None


def intraday(market: Market, body: dict[str, Any], cursor: int) -> dict[str, Any]:
    """``POST /charts/intraday``: OHLCV bars of the released ticks, aligned to 09:15 IST."""
    segment = get_str(body, "exchangeSegment", required=True)
    sid = get_int(body, "securityId", required=True)
    interval = get_int(body, "interval", default=1)
    if interval not in CHART_INTERVALS_MIN:
        raise ApiError("814", f"Invalid interval {interval}; expected one of {CHART_INTERVALS_MIN}")
    with_oi = get_bool(body, "oi")
    lo = _parse_bound(get_str(body, "fromDate", required=True), "fromDate", end=False)
    hi = _parse_bound(get_str(body, "toDate", required=True), "toDate", end=True)
    state = market.state(segment, sid)
    if state is None:
        raise ApiError("813", f"Invalid SecurityId {sid} in {segment}")
    c = market.c
    step_ns = interval * 60 * NS_PER_S
    open_offset_ns = hhmm_to_minutes(SESSION_OPEN_HHMM) * 60 * NS_PER_S
    bars: dict[int, list[float]] = {}  # bar start ns -> [o, h, l, c, vol_end, oi]
    prev_vol_end: dict[int, float] = {}
    last_vol = 0.0
    for i in state.ticks:
        if i >= cursor:
            break
        ts = int(c["ts_recv_ns"][i])
        anchor = ist_midnight_ns(ts) + open_offset_ns
        start = anchor + ((ts - anchor) // step_ns) * step_ns
        if not lo <= start < hi:
            last_vol = float(c["volume"][i])
            continue
        px, vol, oi = float(c["ltp"][i]), float(c["volume"][i]), float(c["oi"][i])
        bar = bars.get(start)
        if bar is None:
            prev_vol_end[start] = last_vol
            bars[start] = [px, px, px, px, vol, oi]
        else:
            bar[1], bar[2], bar[3], bar[4], bar[5] = max(bar[1], px), min(bar[2], px), px, vol, oi
        last_vol = vol
    starts = sorted(bars)
    out: dict[str, Any] = {
        "open": [bars[s][0] for s in starts],
        "high": [bars[s][1] for s in starts],
        "low": [bars[s][2] for s in starts],
        "close": [bars[s][3] for s in starts],
        "volume": [max(0, int(bars[s][4] - prev_vol_end[s])) for s in starts],
        "timestamp": [s // NS_PER_S for s in starts],
    }
    if with_oi:
        out["open_interest"] = [int(bars[s][5]) for s in starts]
    return out
