"""Pure executor logic: paper fill rule, event construction, intent validation.

Paper fill rule (DESIGN §4): an intent fills at the first tick of its instrument whose id is
after the intent's tick and whose event time is at least the intent's event time plus
``paper.fill_latency_ms``. The fill price is that tick's LTP moved ``slippage_ticks`` tick sizes
against us (up for a buy, down for a sell). So a paper fill is a pure function of the intent and
the ticks stream, the same at any replay speed.
"""

from __future__ import annotations

from shared import streamids
from shared.charges import charges_for_round_trip
from shared.clock import ist_day
from shared.messages import (
    OrderAccepted,
    OrderCancelled,
    OrderDryRun,
    OrderFilled,
    OrderIntent,
    OrderRejected,
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


def filled_event(intent: OrderIntent, tick: Tick, price_paise: int, broker_order_id: str, ts_init: int) -> OrderFilled:
    return OrderFilled(
        msg_id=make_msg_id("fill", intent.correlation_id),
        ts_event=tick.ts_event, ts_init=ts_init, tick_id=tick.tick_id,
        correlation_id=intent.correlation_id, position_id=intent.position_id, kind=intent.kind,
        security_id=intent.security_id, broker_order_id=broker_order_id, side=intent.side,
        quantity=intent.quantity, price_paise=price_paise, fill_tick_id=tick.tick_id,
    )


def accepted_event(intent: OrderIntent, broker_order_id: str, status: str, ts_init: int) -> OrderAccepted:
    return OrderAccepted(
        msg_id=make_msg_id("acc", intent.correlation_id),
        ts_event=intent.ts_event, ts_init=ts_init, tick_id=intent.tick_id,
        correlation_id=intent.correlation_id, position_id=intent.position_id, kind=intent.kind,
        security_id=intent.security_id, broker_order_id=broker_order_id, status=status,
    )


def dry_run_event(intent: OrderIntent, payload: dict[str, object], ts_init: int) -> OrderDryRun:
    return OrderDryRun(
        msg_id=make_msg_id("dry", intent.correlation_id),
        ts_event=intent.ts_event, ts_init=ts_init, tick_id=intent.tick_id,
        correlation_id=intent.correlation_id, position_id=intent.position_id, kind=intent.kind,
        security_id=intent.security_id, payload=payload,
    )


def rejected_event(intent: OrderIntent, reason: str, ts_init: int) -> OrderRejected:
    return OrderRejected(
        msg_id=make_msg_id("rej", intent.correlation_id),
        ts_event=intent.ts_event, ts_init=ts_init, tick_id=intent.tick_id,
        correlation_id=intent.correlation_id, position_id=intent.position_id, kind=intent.kind,
        security_id=intent.security_id, reason=reason,
    )


def cancelled_event(intent: OrderIntent, reason: str, ts_event: int, tick_id: str, ts_init: int) -> OrderCancelled:
    return OrderCancelled(
        msg_id=make_msg_id("cxl", intent.correlation_id),
        ts_event=ts_event, ts_init=ts_init, tick_id=tick_id,
        correlation_id=intent.correlation_id, position_id=intent.position_id, kind=intent.kind,
        security_id=intent.security_id, reason=reason,
    )


def opened_event(intent: OrderIntent, tick: Tick, price_paise: int, ts_init: int) -> PositionOpened:
    return PositionOpened(
        msg_id=make_msg_id("open", intent.position_id),
        ts_event=tick.ts_event, ts_init=ts_init, tick_id=tick.tick_id,
        position_id=intent.position_id, index=intent.index, segment=intent.segment,
        security_id=intent.security_id, symbol=intent.symbol, quantity=intent.quantity,
        entry_price_paise=price_paise, entry_tick_id=tick.tick_id, ts_entry=tick.ts_event,
        lot_size=intent.lot_size,
    )


def round_trip_charges_paise(segment: str, ts_exit: int, entry_price_paise: int, exit_price_paise: int,
                             quantity: int) -> int:
    """Charges on a paper round trip (two executed orders), rates from ``config/charges.yml``."""
    day = ist_day(ts_exit)
    return charges_for_round_trip(segment, day, entry_price_paise * quantity,
                                  exit_price_paise * quantity).total_rounded_paise


def closed_event(
    intent: OrderIntent, tick: Tick, entry_price_paise: int, exit_price_paise: int, quantity: int,
    ts_init: int,
) -> PositionClosed:
    return PositionClosed(
        msg_id=make_msg_id("close", intent.position_id),
        ts_event=tick.ts_event, ts_init=ts_init, tick_id=tick.tick_id,
        position_id=intent.position_id, index=intent.index, security_id=intent.security_id,
        quantity=quantity, entry_price_paise=entry_price_paise, exit_price_paise=exit_price_paise,
        exit_tick_id=tick.tick_id, ts_exit=tick.ts_event, reason=intent.reason,
        pnl_paise=(exit_price_paise - entry_price_paise) * quantity,
        charges_paise=round_trip_charges_paise(intent.segment, tick.ts_event, entry_price_paise,
                                               exit_price_paise, quantity),
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
