"""Pure executor logic: paper fill rule, event construction, intent validation (freeze-limit
slicing in ``slicing``, fill arithmetic in ``fills``).

Paper fill rule (DESIGN §4): an intent fills at the first tick of its instrument whose id is
after the intent's tick and whose event time is at least the intent's event time plus
``paper.fill_latency_ms``. The fill price is that tick's LTP moved ``slippage_ticks`` tick sizes
against us (up for a buy, down for a sell). So a paper fill is a pure function of the intent and
the ticks stream, the same at any replay speed.
"""

from __future__ import annotations

from services.executor.fills import CloseNumbers
from shared import streamids
from shared.messages import (
    OrderAccepted,
    OrderCancelled,
    OrderDryRun,
    OrderFilled,
    OrderIntent,
    OrderRejected,
    PositionAdjusted,
    PositionClosed,
    PositionOpened,
    Tick,
    make_msg_id,
)

NS_PER_MS = 1_000_000


def fill_due_ns(intent: OrderIntent, latency_ms: int) -> int:
    return intent.ts_event + latency_ms * NS_PER_MS


def is_fill_tick(tick: Tick, intent: OrderIntent, latency_ms: int) -> bool:
    return (
        tick.security_id == intent.security_id
        and tick.segment == intent.segment
        and tick.ltp_paise > 0
        and tick.ts_event >= fill_due_ns(intent, latency_ms)
        and streamids.less(intent.tick_id, tick.tick_id)
    )


def paper_fill_price(tick: Tick, side: str, slippage_ticks: int, tick_paise: int = 5) -> int:
    slip = slippage_ticks * tick_paise
    return tick.ltp_paise + slip if side == "BUY" else max(tick.ltp_paise - slip, tick_paise)


def filled_event(intent: OrderIntent, tick: Tick, price_paise: int, broker_order_id: str, ts_init: int,
                 *, parent: str = "", quantity: int = 0, msg_id: str = "", filled_qty: int = 0) -> OrderFilled:
    """The fill of ``intent``'s order (``intent`` as seen by that order, see ``slicing``): the
    whole order by default, else ``quantity`` units up to a cumulative ``filled_qty``."""
    return OrderFilled(
        msg_id=msg_id or make_msg_id("fill", intent.correlation_id),
        ts_event=tick.ts_event, ts_init=ts_init, tick_id=tick.tick_id,
        correlation_id=intent.correlation_id, position_id=intent.position_id, kind=intent.kind,
        security_id=intent.security_id, parent_correlation_id=parent, broker_order_id=broker_order_id,
        side=intent.side, quantity=quantity or intent.quantity, price_paise=price_paise,
        fill_tick_id=tick.tick_id, order_quantity=intent.quantity,
        filled_qty=filled_qty or quantity or intent.quantity,
    )


def accepted_event(intent: OrderIntent, broker_order_id: str, status: str, ts_init: int,
                   parent: str = "") -> OrderAccepted:
    return OrderAccepted(
        msg_id=make_msg_id("acc", intent.correlation_id),
        ts_event=intent.ts_event, ts_init=ts_init, tick_id=intent.tick_id,
        correlation_id=intent.correlation_id, position_id=intent.position_id, kind=intent.kind,
        security_id=intent.security_id, parent_correlation_id=parent,
        broker_order_id=broker_order_id, status=status,
    )


def dry_run_event(intent: OrderIntent, payload: dict[str, object], ts_init: int,
                  parent: str = "") -> OrderDryRun:
    return OrderDryRun(
        msg_id=make_msg_id("dry", intent.correlation_id),
        ts_event=intent.ts_event, ts_init=ts_init, tick_id=intent.tick_id,
        correlation_id=intent.correlation_id, position_id=intent.position_id, kind=intent.kind,
        security_id=intent.security_id, parent_correlation_id=parent, payload=payload,
    )


def rejected_event(intent: OrderIntent, reason: str, ts_init: int, parent: str = "") -> OrderRejected:
    return OrderRejected(
        msg_id=make_msg_id("rej", intent.correlation_id),
        ts_event=intent.ts_event, ts_init=ts_init, tick_id=intent.tick_id,
        correlation_id=intent.correlation_id, position_id=intent.position_id, kind=intent.kind,
        security_id=intent.security_id, parent_correlation_id=parent, reason=reason,
    )


def cancelled_event(intent: OrderIntent, reason: str, ts_event: int, tick_id: str, ts_init: int,
                    parent: str = "") -> OrderCancelled:
    return OrderCancelled(
        msg_id=make_msg_id("cxl", intent.correlation_id),
        ts_event=ts_event, ts_init=ts_init, tick_id=tick_id,
        correlation_id=intent.correlation_id, position_id=intent.position_id, kind=intent.kind,
        security_id=intent.security_id, parent_correlation_id=parent, reason=reason,
    )


def opened_event(intent: OrderIntent, tick_id: str, ts_entry: int, price_paise: int, quantity: int,
                 ts_init: int) -> PositionOpened:
    """The position of an entry intent, opened with the ``quantity`` its orders filled at their
    quantity-weighted average ``price_paise``."""
    return PositionOpened(
        msg_id=make_msg_id("open", intent.position_id),
        ts_event=ts_entry, ts_init=ts_init, tick_id=tick_id,
        position_id=intent.position_id, index=intent.index, segment=intent.segment,
        security_id=intent.security_id, symbol=intent.symbol, quantity=quantity,
        entry_price_paise=price_paise, entry_tick_id=tick_id, ts_entry=ts_entry,
        lot_size=intent.lot_size,
    )


def closed_event(intent: OrderIntent, tick_id: str, ts_exit: int, entry_price_paise: int,
                 numbers: CloseNumbers, ts_init: int) -> PositionClosed:
    """The position of an exit intent, closed as ``numbers`` (see ``fills.close_numbers``) say."""
    return PositionClosed(
        msg_id=make_msg_id("close", intent.position_id),
        ts_event=ts_exit, ts_init=ts_init, tick_id=tick_id,
        position_id=intent.position_id, index=intent.index, security_id=intent.security_id,
        quantity=numbers.quantity, entry_price_paise=entry_price_paise,
        exit_price_paise=numbers.exit_price_paise, exit_tick_id=tick_id, ts_exit=ts_exit,
        reason=intent.reason, pnl_paise=numbers.pnl_paise, charges_paise=numbers.charges_paise,
    )


def adjusted_event(intent: OrderIntent, quantity: int, reason: str, tick_id: str, ts_event: int,
                   ts_init: int) -> PositionAdjusted:
    """An exit that filled in part: the position stays open with ``quantity``."""
    return PositionAdjusted(
        msg_id=make_msg_id("adj", intent.position_id, intent.correlation_id, quantity),
        ts_event=ts_event, ts_init=ts_init, tick_id=tick_id, position_id=intent.position_id,
        security_id=intent.security_id, quantity=quantity, reason=reason,
    )


def validate_intent(intent: OrderIntent) -> str | None:
    """A readable reason if the intent is malformed, else None."""
    if intent.quantity <= 0:
        return f"quantity {intent.quantity} is not positive"
    if intent.lot_size > 0 and intent.quantity % intent.lot_size:
        return f"quantity {intent.quantity} is not a multiple of lot size {intent.lot_size}"
    if not intent.correlation_id or len(intent.correlation_id) > 30:
        return "correlation id must be 1-30 characters"
    if (intent.kind == "entry") != (intent.side == "BUY"):
        return f"{intent.kind} intent with side {intent.side}: this engine only buys options"
    return None
