"""JSON shapes of the order book for REST (reference §3.5–3.9) and the order-update socket (§5).

Prices are rupee floats; times are IST ``YYYY-MM-DD HH:MM:SS`` strings of the simulated clock.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from shared.clock import fmt_ist
from shared.models import Instrument
from shared.types import rupees_to_paise

from .decisions import (
    DERIVATIVE_EXPIRY_TIME,
    EXCHANGE_TIME_PLACEHOLDER,
    ORDER_WS_STATUS_TITLE_CASE,
)
from .fields import rupees
from .market import Market
from .orders import Order, OrderBook, Position, Trade

_OPTION_NAMES = {"CE": "CALL", "PE": "PUT"}
_WS_ORDER_TYPES = {"LIMIT": "LMT", "MARKET": "MKT", "STOP_LOSS": "SL", "STOP_LOSS_MARKET": "SLM"}
_WS_PRODUCTS = {"CNC": "C", "INTRADAY": "I", "MARGIN": "M", "MTF": "F", "CO": "V", "BO": "B"}
_WS_SEGMENTS = {
    "NSE_FNO": "D",
    "BSE_FNO": "D",
    "NSE_EQ": "E",
    "BSE_EQ": "E",
    "NSE_CURRENCY": "C",
    "BSE_CURRENCY": "C",
    "MCX_COMM": "M",
}


def ist(ts_ns: int) -> str:
    return fmt_ist(ts_ns, with_date=True) if ts_ns else EXCHANGE_TIME_PLACEHOLDER


def _frac_rupees(paise: Fraction) -> float:
    return round(float(paise) / 100, 6)


def _drv(inst: Instrument) -> dict[str, Any]:
    return {
        "drvExpiryDate": inst.expiry or "0001-01-01",
        "drvOptionType": _OPTION_NAMES.get(inst.option_type),
        "drvStrikePrice": rupees(inst.strike_paise),
    }


def order_json(order: Order, client_id: str) -> dict[str, Any]:
    """One entry of ``GET /orders`` (also by id and by correlation id)."""
    inst = order.instrument
    return {
        "dhanClientId": client_id,
        "orderId": order.order_id,
        "exchangeOrderId": order.exchange_order_id,
        "correlationId": order.correlation_id,
        "orderStatus": order.status,
        "transactionType": order.transaction_type,
        "exchangeSegment": order.segment,
        "productType": order.product_type,
        "orderType": order.order_type,
        "validity": order.validity,
        "tradingSymbol": inst.symbol,
        "securityId": str(order.security_id),
        "quantity": order.quantity,
        "disclosedQuantity": order.disclosed_qty,
        "price": rupees(order.price_paise),
        "triggerPrice": rupees(order.trigger_paise),
        "afterMarketOrder": order.after_market,
        "boProfitValue": 0.0,
        "boStopLossValue": 0.0,
        "legName": None,
        "createTime": ist(order.created_ns),
        "updateTime": ist(order.updated_ns),
        "exchangeTime": ist(order.exchange_ns),
        **_drv(inst),
        "omsErrorCode": order.oms_error_code,
        "omsErrorDescription": order.oms_error_description,
        "algoId": "0",
        "remainingQuantity": order.quantity - order.filled_qty,
        "averageTradedPrice": _frac_rupees(order.avg_price_paise),
        "filledQty": order.filled_qty,
    }


def trade_json(trade: Trade, client_id: str) -> dict[str, Any]:
    """One entry of ``GET /trades``."""
    order = trade.order
    inst = order.instrument
    return {
        "dhanClientId": client_id,
        "orderId": order.order_id,
        "exchangeOrderId": order.exchange_order_id,
        "exchangeTradeId": trade.trade_id,
        "transactionType": order.transaction_type,
        "exchangeSegment": order.segment,
        "productType": order.product_type,
        "orderType": order.order_type,
        "tradingSymbol": inst.symbol,
        "customSymbol": inst.display_name,
        "securityId": str(order.security_id),
        "tradedQuantity": trade.quantity,
        "tradedPrice": rupees(trade.price_paise),
        "createTime": ist(trade.ts_ns),
        "updateTime": ist(trade.ts_ns),
        "exchangeTime": ist(trade.ts_ns),
        **_drv(inst),
    }


def position_json(pos: Position, market: Market, client_id: str) -> dict[str, Any]:
    """One entry of ``GET /positions``."""
    net = pos.net_qty
    state = market.state(pos.segment, pos.security_id)
    ltp = rupees_to_paise(state.ltp) if state and state.has_data else 0
    cost = pos.buy_avg if net > 0 else pos.sell_avg if net < 0 else Fraction(0)
    return {
        "dhanClientId": client_id,
        "tradingSymbol": pos.instrument.symbol,
        "securityId": str(pos.security_id),
        "positionType": "LONG" if net > 0 else "SHORT" if net < 0 else "CLOSED",
        "exchangeSegment": pos.segment,
        "productType": pos.product_type,
        "buyAvg": _frac_rupees(pos.buy_avg),
        "buyQty": pos.buy_qty,
        "costPrice": _frac_rupees(cost),
        "sellAvg": _frac_rupees(pos.sell_avg),
        "sellQty": pos.sell_qty,
        "netQty": net,
        "realizedProfit": _frac_rupees(pos.realized),
        "unrealizedProfit": _frac_rupees(pos.unrealized(ltp)) if ltp else 0.0,
        "rbiReferenceRate": 1.0,
        "multiplier": 1,
        "carryForwardBuyQty": 0,
        "carryForwardSellQty": 0,
        "carryForwardBuyValue": 0.0,
        "carryForwardSellValue": 0.0,
        "dayBuyQty": pos.buy_qty,
        "daySellQty": pos.sell_qty,
        "dayBuyValue": rupees(pos.buy_value),
        "daySellValue": rupees(pos.sell_value),
        **_drv(pos.instrument),
        "crossCurrency": False,
    }


def funds_json(book: OrderBook, client_id: str) -> dict[str, Any]:
    """``GET /fundlimit``, with the API's own spellings (``availabelBalance``, ``receiveable``)."""
    available = _frac_rupees(book.available_paise())
    return {
        "dhanClientId": client_id,
        "availabelBalance": available,
        "sodLimit": rupees(book.sod_paise),
        "collateralAmount": 0.0,
        "receiveableAmount": 0.0,
        "utilizedAmount": _frac_rupees(book.utilized_paise()),
        "blockedPayoutAmount": 0.0,
        "withdrawableBalance": available,
    }


def ws_status(status: str) -> str:
    """``TRADED`` → ``Traded``, ``PART_TRADED`` → ``Part_Traded`` (the docs sample's case)."""
    if not ORDER_WS_STATUS_TITLE_CASE:
        return status
    return "_".join(part.capitalize() for part in status.split("_"))


def order_alert(order: Order, client_id: str) -> dict[str, Any]:
    """The ``order_alert`` message of the order-update socket for the order's current state."""
    inst = order.instrument
    expiry = f"{inst.expiry} {DERIVATIVE_EXPIRY_TIME}" if inst.expiry else "0001-01-01 00:00:00"
    tick = rupees(inst.tick_size_paise)
    reason = order.oms_error_description if order.status == "REJECTED" else "CONFIRMED"
    data: dict[str, Any] = {
        "Exchange": inst.exchange,
        "Segment": _WS_SEGMENTS.get(order.segment, "D"),
        "Source": "P",
        "SecurityId": str(order.security_id),
        "ClientId": client_id,
        "ExchOrderNo": order.exchange_order_id,
        "OrderNo": order.order_id,
        "Product": _WS_PRODUCTS.get(order.product_type, "I"),
        "TxnType": order.transaction_type[0],
        "OrderType": _WS_ORDER_TYPES[order.order_type],
        "Validity": order.validity,
        "DiscQuantity": order.disclosed_qty,
        "DiscQtyRem": order.disclosed_qty,
        "RemainingQuantity": order.quantity - order.filled_qty,
        "Quantity": order.quantity,
        "TradedQty": order.filled_qty,
        "Price": rupees(order.price_paise),
        "TriggerPrice": rupees(order.trigger_paise),
        "TradedPrice": rupees(order.last_trade_paise),
        "AvgTradedPrice": _frac_rupees(order.avg_price_paise),
        "AlgoOrdNo": "",
        "OffMktFlag": "1" if order.after_market else "0",
        "OrderDateTime": ist(order.created_ns),
        "ExchOrderTime": ist(order.exchange_ns),
        "LastUpdatedTime": ist(order.updated_ns),
        "Remarks": "",
        "MktType": "NL",
        "ReasonDescription": reason,
        "LegNo": 1,
        "Instrument": inst.instrument,
        "Symbol": inst.underlying,
        "ProductName": order.product_type,
        "Status": ws_status(order.status),
        "LotSize": inst.lot_size,
        "StrikePrice": rupees(inst.strike_paise),
        "ExpiryDate": expiry,
        "OptType": inst.option_type or "XX",
        "DisplayName": inst.display_name or inst.symbol,
        "Isin": "NA",
        "Series": "XX",
        "GoodTillDaysDate": "",
        "RefLtp": order.ref_ltp,
        "TickSize": tick,
        "AlgoId": "0",
        "Multiplier": 1,
        "CorrelationId": order.correlation_id,
        # The docs sample carries these lowercase duplicates too (reference §5).
        "series": "XX",
        "goodTillDaysDate": "",
        "instrumentType": inst.instrument,
        "refLtp": order.ref_ltp,
        "tickSize": tick,
        "algoId": "0",
        "multiplier": 1,
    }
    return {"Data": data, "Type": "order_alert"}
