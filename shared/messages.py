"""The message contract: every stream carries one closed family of typed messages.

Each message is a frozen, keyword-only ``msgspec.Struct`` with an explicit, stable tag. On the
wire a stream entry has two fields: ``type`` (the tag) and ``data`` (the struct as JSON, tag
included), so ``redis-cli XRANGE`` shows readable JSON.

Common fields (all messages):

- ``msg_id``   deterministic id derived from the message's inputs (see :func:`make_msg_id`);
- ``ts_event`` UTC ns when the thing happened in the market (event time);
- ``ts_init``  UTC ns when this process built the message (wall time; never used for decisions);
- ``tick_id``  the ``ticks`` entry id that caused it (for a tick, its own id).

Prices are integer paise, quantities integer units, times UTC ns. Schema evolution: new fields
go last with defaults; tags and field types never change; decoders ignore unknown fields.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every stream message."""

    msg_id: str
    ts_event: int
    ts_init: int
    tick_id: str


# --------------------------------------------------------------------------- ticks


class Tick(Message, tag="tick", frozen=True, kw_only=True):
    """One decoded market-data update for one instrument.

    ``ts_event`` is the feed's receive time (recorded receive time in replay); ``ltt_s`` is the
    exchange's last-trade time in true UTC epoch seconds (the IST shift already removed).
    """

    segment: str
    security_id: int
    ltp_paise: int
    ltq: int = 0
    ltt_s: int = 0
    volume: int = 0
    oi: int = 0
    bid_paise: int = 0
    ask_paise: int = 0
    bid_qty: int = 0
    ask_qty: int = 0
    kind: str = "full"


class Clock(Message, tag="clock", frozen=True, kw_only=True):
    """Event-time heartbeat from the feed, so time rules fire when no tick arrives."""


class SessionEnd(Message, tag="session.end", frozen=True, kw_only=True):
    """End of a replayed session (or of a live trading day): nothing more for this day."""

    trading_day: str


TickFamily = Tick | Clock | SessionEnd


# --------------------------------------------------------------------------- signals

Direction = Literal["bullish", "bearish"]


class Signal(Message, tag="signal", frozen=True, kw_only=True):
    """A trade direction for one index; bullish buys CE, bearish buys PE."""

    index: str
    direction: Direction
    timeframe_min: int
    candle_ts: int
    close_paise: int
    supertrend_paise: int
    adx: float
    confidence: float
    multiplier: int
    reason: str
    ts_origin: int = 0
    """Wall UTC ns at which the feed built the originating tick (stage latency tracing)."""


class SignalSkipped(Message, tag="signal.skipped", frozen=True, kw_only=True):
    """An evaluation that changed state but produced no signal, with the readable reason."""

    index: str
    timeframe_min: int
    candle_ts: int
    reason: str


SignalFamily = Signal | SignalSkipped


# --------------------------------------------------------------------------- entries.decisions


class EntryDecision(Message, tag="entry.decision", frozen=True, kw_only=True):
    """Why a signal did or did not become an order intent."""

    signal_id: str
    index: str
    accepted: bool
    rule: str
    reason: str
    intent_id: str = ""


DecisionFamily = EntryDecision


# --------------------------------------------------------------------------- orders.requests

Side = Literal["BUY", "SELL"]
IntentKind = Literal["entry", "exit"]


class OrderIntent(Message, tag="order.intent", frozen=True, kw_only=True):
    """A request to the executor to buy (entry) or sell (exit) an option."""

    kind: IntentKind
    correlation_id: str
    position_id: str
    index: str
    segment: str
    security_id: int
    symbol: str
    side: Side
    quantity: int
    lot_size: int
    ref_price_paise: int
    reason: str
    signal_id: str = ""
    order_type: str = "MARKET"
    limit_price_paise: int = 0
    ts_origin: int = 0
    """Wall UTC ns at which the feed built the tick that led to this intent (tick-to-order)."""


RequestFamily = OrderIntent


# --------------------------------------------------------------------------- orders.events


class OrderEvent(Message, frozen=True, kw_only=True):
    """Base of the order lifecycle events.

    ``correlation_id`` is the broker order's; when the intent was sliced at the exchange's freeze
    limit, each slice's events carry the intent's id in ``parent_correlation_id`` (else "").
    """

    correlation_id: str
    position_id: str
    kind: IntentKind
    security_id: int
    parent_correlation_id: str = ""


class OrderAccepted(OrderEvent, tag="order.accepted", frozen=True, kw_only=True):
    broker_order_id: str
    status: str


class OrderFilled(OrderEvent, tag="order.filled", frozen=True, kw_only=True):
    """One fill: the whole order, or one part of it (``quantity`` < ``order_quantity``)."""

    broker_order_id: str
    side: Side
    quantity: int
    price_paise: int
    fill_tick_id: str
    order_quantity: int = 0
    """The broker order's quantity (0 in events from before partial fills were recorded)."""
    filled_qty: int = 0
    """The order's cumulative filled quantity after this fill."""


class OrderRejected(OrderEvent, tag="order.rejected", frozen=True, kw_only=True):
    reason: str


class OrderCancelled(OrderEvent, tag="order.cancelled", frozen=True, kw_only=True):
    reason: str


class OrderDryRun(OrderEvent, tag="order.dry_run", frozen=True, kw_only=True):
    """Live mode with orders disabled: the exact payload that would have been sent."""

    payload: dict[str, object]


OrderEventFamily = OrderAccepted | OrderFilled | OrderRejected | OrderCancelled | OrderDryRun


# --------------------------------------------------------------------------- positions


class PositionOpened(Message, tag="position.opened", frozen=True, kw_only=True):
    position_id: str
    index: str
    segment: str
    security_id: int
    symbol: str
    quantity: int
    entry_price_paise: int
    entry_tick_id: str
    ts_entry: int
    lot_size: int = 0
    external: bool = False


class PositionClosed(Message, tag="position.closed", frozen=True, kw_only=True):
    position_id: str
    index: str
    security_id: int
    quantity: int
    entry_price_paise: int
    exit_price_paise: int
    exit_tick_id: str
    ts_exit: int
    reason: str
    pnl_paise: int
    charges_paise: int = 0
    """Indian options charges on the round trip (brokerage, STT, exchange, SEBI, stamp, GST)."""


class PositionAdjusted(Message, tag="position.adjusted", frozen=True, kw_only=True):
    """A correction from sync (quantity mismatch and the like)."""

    position_id: str
    security_id: int
    quantity: int
    reason: str


PositionFamily = PositionOpened | PositionClosed | PositionAdjusted


# --------------------------------------------------------------------------- feed.control


class FeedSubscribe(Message, tag="feed.subscribe", frozen=True, kw_only=True):
    segment: str
    security_ids: list[int]
    requester: str
    mode: str = "full"


class FeedUnsubscribe(Message, tag="feed.unsubscribe", frozen=True, kw_only=True):
    segment: str
    security_ids: list[int]
    requester: str


ControlFamily = FeedSubscribe | FeedUnsubscribe


# --------------------------------------------------------------------------- dead letters


class DeadLetter(Message, tag="deadletter", frozen=True, kw_only=True):
    """A stream entry that could not be decoded or validated."""

    error: str
    source_stream: str
    entry_id: str
    fields: dict[str, str]
    service: str


DeadLetterFamily = DeadLetter


FAMILIES: dict[str, object] = {
    "ticks": TickFamily,
    "signals": SignalFamily,
    "entries.decisions": DecisionFamily,
    "orders.requests": RequestFamily,
    "orders.events": OrderEventFamily,
    "positions": PositionFamily,
    "feed.control": ControlFamily,
    "deadletter": DeadLetterFamily,
}
"""Logical stream name -> the union of message types it may carry."""


def make_msg_id(prefix: str, *parts: object) -> str:
    """A deterministic id: ``prefix`` plus the first 20 hex digits of SHA-256 over the parts."""
    h = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:20]
    return f"{prefix}-{h}"
