"""The order book: orders, trades, positions and funds of the one simulated account.

Synchronous and deterministic: time comes from the session clock, prices from :class:`Market`.
Life of an order: ``place`` records it TRANSIT; ``acknowledge`` (next event-loop turn) runs the
RMS checks → PENDING or REJECTED; ``on_tick`` fills it at a released tick of its instrument
(reference §3.5, rules in :mod:`dhansim.decisions`). Every change calls the listeners, which the
order-update socket turns into ``order_alert`` messages.

Partial fills (the ``partial_fills`` fault, :class:`PartialPlan`): the first matching tick trades
only the planned first quantity (PART_TRADED); at the next matching tick the rest trades
(TRADED), or is cancelled or expires with the traded part kept.

Money is integer paise inside; averages and P&L are exact :class:`~fractions.Fraction` paise.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from shared.models import Instrument
from shared.types import SEGMENT_CODES, rupees_to_paise

from .clock import SessionClock
from .decisions import (
    CORRELATION_ID_PATTERN,
    MAX_MODIFICATIONS,
    NOT_FOUND_ERROR,
    NOT_MODIFIABLE_ERROR,
    REJECT_DEFAULT_REASON,
    REJECT_OMS_ERROR_CODE,
)
from .fields import ApiError, get_bool, get_enum, get_int, get_paise, get_str
from .market import Key, Market

OPEN = frozenset({"TRANSIT", "PENDING", "PART_TRADED"})
REMAINDER_ACTIONS = ("fill", "cancel", "expire")
TXN_TYPES = ("BUY", "SELL")
PRODUCT_TYPES = ("INTRADAY", "MARGIN", "CNC")
ORDER_TYPES = ("LIMIT", "MARKET", "STOP_LOSS", "STOP_LOSS_MARKET")
VALIDITIES = ("DAY", "IOC")
_CORRELATION_RE = re.compile(CORRELATION_ID_PATTERN)


@dataclass(frozen=True)
class PartialPlan:
    """How one order fills in parts: ``first_qty`` units at the first matching tick, then the
    remainder at the next one (``then`` = ``fill``), or the remainder is ``cancel``-led /
    ``expire``-d there, leaving the order CANCELLED / EXPIRED with the first part traded."""

    first_qty: int
    then: str = "fill"


@dataclass
class Order:
    order_id: str
    correlation_id: str
    transaction_type: str
    segment: str
    product_type: str
    order_type: str
    validity: str
    security_id: int
    quantity: int
    disclosed_qty: int
    price_paise: int
    trigger_paise: int
    after_market: bool
    instrument: Instrument
    arrival_cursor: int
    created_ns: int
    updated_ns: int
    ref_ltp: float
    exchange_order_id: str = ""
    exchange_ns: int = 0
    status: str = "TRANSIT"
    filled_qty: int = 0
    traded_value_paise: int = 0
    last_trade_paise: int = 0
    oms_error_code: str = ""
    oms_error_description: str = ""
    triggered: bool = False
    modifications: int = 0
    forced_reject: str | None = None
    partial: PartialPlan | None = None

    @property
    def key(self) -> Key:
        return (self.segment, self.security_id)

    @property
    def remaining_qty(self) -> int:
        return self.quantity - self.filled_qty

    @property
    def avg_price_paise(self) -> Fraction:
        """Exact average traded price in paise (0 before the first trade)."""
        return Fraction(self.traded_value_paise, self.filled_qty) if self.filled_qty else Fraction(0)


@dataclass
class Trade:
    trade_id: str
    order: Order
    quantity: int
    price_paise: int
    ts_ns: int


@dataclass
class Position:
    segment: str
    security_id: int
    product_type: str
    instrument: Instrument
    buy_qty: int = 0
    sell_qty: int = 0
    buy_value: int = 0  # paise
    sell_value: int = 0

    @property
    def net_qty(self) -> int:
        return self.buy_qty - self.sell_qty

    @property
    def buy_avg(self) -> Fraction:
        return Fraction(self.buy_value, self.buy_qty) if self.buy_qty else Fraction(0)

    @property
    def sell_avg(self) -> Fraction:
        return Fraction(self.sell_value, self.sell_qty) if self.sell_qty else Fraction(0)

    @property
    def realized(self) -> Fraction:
        """Paise: closed quantity × (sell average − buy average)."""
        return min(self.buy_qty, self.sell_qty) * (self.sell_avg - self.buy_avg)

    @property
    def open_cost(self) -> Fraction:
        """Paise tied up by the open quantity: long cost, or the premium of a short."""
        net = self.net_qty
        return net * self.buy_avg if net > 0 else -net * self.sell_avg

    def unrealized(self, ltp_paise: int) -> Fraction:
        net = self.net_qty
        if net > 0:
            return net * (ltp_paise - self.buy_avg)
        if net < 0:
            return net * (ltp_paise - self.sell_avg)
        return Fraction(0)


@dataclass
class OrderBook:
    clock: SessionClock
    market: Market
    sod_paise: int
    trading_day: str
    orders: dict[str, Order] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)
    positions: dict[tuple[str, int, str], Position] = field(default_factory=dict)
    listeners: list[Callable[[Order], None]] = field(default_factory=list)
    _open_by_key: dict[Key, list[str]] = field(default_factory=dict)
    _seq: int = 0
    _trade_seq: int = 0

    # -------------------------------------------------------------------- placing

    def place(
        self,
        body: dict[str, Any],
        *,
        forced_reject: str | None = None,
        partial_lots: int = 0,
        partial_then: str = "fill",
    ) -> Order:
        """Validate a ``POST /orders`` body and record the order TRANSIT (ApiError DH-905 if bad).

        ``forced_reject`` (the ``reject_orders`` fault) makes the RMS step reject it;
        ``partial_lots`` > 0 (the ``partial_fills`` fault) makes it fill in two parts, the first of
        that many lots (see :func:`partial_plan`).
        """
        txn = get_enum(body, "transactionType", TXN_TYPES)
        segment = get_str(body, "exchangeSegment", required=True).upper()
        if segment not in SEGMENT_CODES or segment == "IDX_I":
            raise ApiError("DH-905", f"Invalid exchangeSegment: {segment!r}")
        product = get_enum(body, "productType", PRODUCT_TYPES)
        order_type = get_enum(body, "orderType", ORDER_TYPES)
        validity = get_enum(body, "validity", VALIDITIES, default="DAY")
        security_id = get_int(body, "securityId", required=True, minimum=1)
        instrument = self.market.instrument(segment, security_id)
        if instrument is None:
            raise ApiError("DH-905", f"Invalid SecurityId {security_id} in {segment}")
        quantity = get_int(body, "quantity", required=True, minimum=1)
        price = get_paise(body, "price", required=order_type in ("LIMIT", "STOP_LOSS"))
        trigger = get_paise(body, "triggerPrice", required=order_type.startswith("STOP_LOSS"))
        if order_type in ("LIMIT", "STOP_LOSS") and price <= 0:
            raise ApiError("DH-905", "price must be > 0 for LIMIT and STOP_LOSS orders")
        if order_type.startswith("STOP_LOSS") and trigger <= 0:
            raise ApiError("DH-905", "triggerPrice must be > 0 for stop-loss orders")
        correlation_id = get_str(body, "correlationId")
        if correlation_id and not _CORRELATION_RE.fullmatch(correlation_id):
            raise ApiError("DH-905", f"Invalid correlationId {correlation_id!r}")
        now = self.clock.now_ns()
        state = self.market.state(segment, security_id)
        self._seq += 1
        order = Order(
            order_id=f"{self.trading_day[2:].replace('-', '')}{self._seq:06d}",
            correlation_id=correlation_id,
            transaction_type=txn,
            segment=segment,
            product_type=product,
            order_type=order_type,
            validity=validity,
            security_id=security_id,
            quantity=quantity,
            disclosed_qty=get_int(body, "disclosedQuantity"),
            price_paise=0 if order_type in ("MARKET", "STOP_LOSS_MARKET") else price,
            trigger_paise=trigger if order_type.startswith("STOP_LOSS") else 0,
            after_market=get_bool(body, "afterMarketOrder"),
            instrument=instrument,
            arrival_cursor=self.clock.cursor,
            created_ns=now,
            updated_ns=now,
            ref_ltp=state.ltp if state else 0.0,
            forced_reject=forced_reject,
            partial=partial_plan(quantity, instrument.lot_size, partial_lots, partial_then),
        )
        self.orders[order.order_id] = order
        self._open_by_key.setdefault(order.key, []).append(order.order_id)
        self._emit(order)
        return order

    def acknowledge(self, order_id: str) -> None:
        """The RMS / exchange step: TRANSIT → PENDING, or REJECTED with a reason."""
        order = self.orders[order_id]
        if order.status != "TRANSIT":
            return
        reason = self._rms_reason(order)
        order.updated_ns = self.clock.now_ns()
        if reason is not None:
            order.status = "REJECTED"
            order.oms_error_code = REJECT_OMS_ERROR_CODE
            order.oms_error_description = reason
            self._close(order)
        else:
            order.status = "PENDING"
            order.exchange_order_id = f"{1_100_000_000_000_000 + self._seq_of(order)}"
            order.exchange_ns = order.updated_ns
        self._emit(order)

    def _seq_of(self, order: Order) -> int:
        return int(order.order_id[-6:])

    def _rms_reason(self, order: Order) -> str | None:
        if order.forced_reject is not None:
            return order.forced_reject or REJECT_DEFAULT_REASON
        inst = order.instrument
        if order.after_market:
            return "AMO orders are not supported by the simulator"
        if inst.lot_size > 1 and order.quantity % inst.lot_size:
            return f"RMS:Quantity should be in multiples of lot size {inst.lot_size}"
        if inst.freeze_qty and order.quantity > inst.freeze_qty:
            return f"RMS:Quantity exceeds the freeze limit of {inst.freeze_qty}"
        tick = max(inst.tick_size_paise, 1)
        if order.price_paise % tick or order.trigger_paise % tick:
            return f"Price is not in multiples of tick size {tick / 100:.2f}"
        if order.transaction_type == "BUY":
            need = order.quantity * self._order_price_paise(order)
            available = self.available_paise(excluding=order.order_id)
            if need > available:
                return (
                    f"RMS:Margin Exceeds, Required: {need / 100:.2f}, "
                    f"Available: {float(available) / 100:.2f}"
                )
        return None

    def _order_price_paise(self, order: Order) -> int:
        if order.price_paise:
            return order.price_paise
        if order.trigger_paise:
            return order.trigger_paise
        state = self.market.state(order.segment, order.security_id)
        return rupees_to_paise(state.ltp) if state and state.has_data else 0

    # -------------------------------------------------------------------- modify / cancel

    def get(self, order_id: str) -> Order:
        order = self.orders.get(order_id)
        if order is None:
            raise ApiError(NOT_FOUND_ERROR, f"No order found for order id {order_id}")
        return order

    def by_correlation(self, correlation_id: str) -> Order:
        for order in reversed(self.orders.values()):
            if order.correlation_id == correlation_id:
                return order
        raise ApiError(NOT_FOUND_ERROR, f"No order found for correlation id {correlation_id}")

    def modify(self, order_id: str, body: dict[str, Any]) -> Order:
        order = self.get(order_id)
        if order.status not in OPEN:
            raise ApiError(NOT_MODIFIABLE_ERROR, f"Order {order_id} is {order.status}")
        if order.modifications >= MAX_MODIFICATIONS:
            raise ApiError(NOT_MODIFIABLE_ERROR, f"Order {order_id}: modification limit reached")
        order_type = get_enum(body, "orderType", ORDER_TYPES, default=order.order_type)
        quantity = get_int(body, "quantity", default=order.quantity, minimum=1)
        price = get_paise(body, "price") if "price" in body else order.price_paise
        trigger = get_paise(body, "triggerPrice") if "triggerPrice" in body else order.trigger_paise
        if order_type in ("LIMIT", "STOP_LOSS") and price <= 0:
            raise ApiError("DH-905", "price must be > 0 for LIMIT and STOP_LOSS orders")
        if order_type.startswith("STOP_LOSS") and trigger <= 0:
            raise ApiError("DH-905", "triggerPrice must be > 0 for stop-loss orders")
        tick = max(order.instrument.tick_size_paise, 1)
        if price % tick or trigger % tick:
            raise ApiError("DH-905", f"Price is not in multiples of tick size {tick / 100:.2f}")
        if order.instrument.lot_size > 1 and quantity % order.instrument.lot_size:
            raise ApiError("DH-905", "quantity must be a multiple of the lot size")
        if quantity <= order.filled_qty:
            raise ApiError("DH-905", f"quantity must exceed the traded quantity {order.filled_qty}")
        order.order_type = order_type
        order.quantity = quantity
        order.price_paise = 0 if order_type in ("MARKET", "STOP_LOSS_MARKET") else price
        order.trigger_paise = trigger if order_type.startswith("STOP_LOSS") else 0
        order.validity = get_enum(body, "validity", VALIDITIES, default=order.validity)
        order.disclosed_qty = get_int(body, "disclosedQuantity", default=order.disclosed_qty)
        order.modifications += 1
        order.updated_ns = self.clock.now_ns()
        self._emit(order)
        return order

    def cancel(self, order_id: str) -> Order:
        order = self.get(order_id)
        if order.status not in OPEN:
            raise ApiError(NOT_MODIFIABLE_ERROR, f"Order {order_id} is {order.status}")
        self._finish(order, "CANCELLED")
        return order

    # -------------------------------------------------------------------- matching

    def on_tick(self, i: int) -> None:
        key = self.market.tick_keys[i]
        ids = self._open_by_key.get(key)
        if not ids:
            return
        state = self.market.states[key]
        ltp = rupees_to_paise(state.ltp)
        for order_id in list(ids):
            order = self.orders[order_id]
            if order.arrival_cursor > i:
                continue
            if order.status == "TRANSIT":
                self.acknowledge(order_id)
                if order.status != "PENDING":
                    continue
            self._match(order, ltp)

    def _match(self, order: Order, ltp: int) -> None:
        buy = order.transaction_type == "BUY"
        if order.order_type.startswith("STOP_LOSS") and not order.triggered:
            hit = ltp >= order.trigger_paise if buy else ltp <= order.trigger_paise
            if not hit:
                return
            order.triggered = True
        if order.order_type in ("MARKET", "STOP_LOSS_MARKET"):
            self._fill(order, ltp)
        elif (ltp <= order.price_paise) if buy else (ltp >= order.price_paise):
            self._fill(order, ltp)
        elif order.validity == "IOC":
            self._finish(order, "CANCELLED")

    def _fill(self, order: Order, price_paise: int) -> None:
        """Trade the order's remaining quantity at ``price_paise`` (or, under a partial plan, its
        first part; at the next matching tick the remainder trades, or is cancelled / expires)."""
        qty = order.remaining_qty
        plan = order.partial
        if plan is not None:
            if order.filled_qty == 0:
                qty = min(plan.first_qty, qty)
            elif plan.then != "fill":
                self._finish(order, "CANCELLED" if plan.then == "cancel" else "EXPIRED")
                return
        now = self.clock.now_ns()
        self._trade_seq += 1
        trade = Trade(f"{500_000_000 + self._trade_seq}", order, qty, price_paise, now)
        self.trades.append(trade)
        pkey = (order.segment, order.security_id, order.product_type)
        pos = self.positions.get(pkey)
        if pos is None:
            pos = Position(order.segment, order.security_id, order.product_type, order.instrument)
            self.positions[pkey] = pos
        if order.transaction_type == "BUY":
            pos.buy_qty += qty
            pos.buy_value += qty * price_paise
        else:
            pos.sell_qty += qty
            pos.sell_value += qty * price_paise
        order.filled_qty += qty
        order.traded_value_paise += qty * price_paise
        order.last_trade_paise = price_paise
        if order.remaining_qty:
            order.status = "PART_TRADED"
            order.updated_ns = now
            self._emit(order)
        else:
            self._finish(order, "TRADED", now)

    def _finish(self, order: Order, status: str, now: int | None = None) -> None:
        order.status = status
        order.updated_ns = self.clock.now_ns() if now is None else now
        self._close(order)
        self._emit(order)

    def _close(self, order: Order) -> None:
        ids = self._open_by_key.get(order.key)
        if ids and order.order_id in ids:
            ids.remove(order.order_id)

    def _emit(self, order: Order) -> None:
        for fn in self.listeners:
            fn(order)

    # -------------------------------------------------------------------- funds

    def blocked_paise(self, excluding: str = "") -> int:
        """Paise blocked by open BUY orders (remaining quantity × limit/trigger price or LTP)."""
        return sum(
            o.remaining_qty * self._order_price_paise(o)
            for o in self.orders.values()
            if o.status in OPEN
            and o.transaction_type == "BUY"
            and o.order_id != excluding
            and o.forced_reject is None
        )

    def available_paise(self, excluding: str = "") -> Fraction:
        realized = sum((p.realized for p in self.positions.values()), Fraction(0))
        used = sum((p.open_cost for p in self.positions.values()), Fraction(0))
        return self.sod_paise + realized - used - self.blocked_paise(excluding)

    def utilized_paise(self) -> Fraction:
        used = sum((p.open_cost for p in self.positions.values()), Fraction(0))
        return used + self.blocked_paise()


def partial_plan(quantity: int, lot_size: int, first_lots: int, then: str) -> PartialPlan | None:
    """The plan of an order asked to fill in parts, or None when it cannot be split: the first
    part is ``first_lots`` whole lots, and at least one lot must be left for the second part (an
    order of one lot fills whole)."""
    if then not in REMAINDER_ACTIONS:
        raise ValueError(f"partial remainder must be one of {REMAINDER_ACTIONS}, not {then!r}")
    lot = max(lot_size, 1)
    first = first_lots * lot
    if first_lots <= 0 or first >= quantity:
        return None
    return PartialPlan(first_qty=first, then=then)
