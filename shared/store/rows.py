"""Rows read from the ledger, and the lifecycles of orders and position trackers.

Amounts are integer paise, market times UTC ns (``ts_*``), tick ids stream ids ``"ms-seq"``;
``*_at`` fields are the database's wall-clock bookkeeping.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import msgspec

OrderStatus = Literal[
    "new", "submitting", "in_doubt", "transit", "pending", "part_traded",
    "traded", "rejected", "cancelled", "expired", "dry_run",
]  # fmt: skip
TrackerStatus = Literal["pending", "active", "exited", "cancelled"]
TradingStateName = Literal["ACTIVE", "REDUCING", "HALTED"]

ORDER_TRANSITIONS: dict[str, frozenset[str]] = {
    # "traded" straight from "new" is a paper fill; "dry_run" is live mode with orders disabled.
    "new": frozenset({"submitting", "rejected", "dry_run", "traded"}),
    "submitting": frozenset(
        {"transit", "pending", "part_traded", "traded", "rejected", "in_doubt", "cancelled"}
    ),
    # in_doubt -> new only once the broker says it has no order with this correlation id.
    "in_doubt": frozenset(
        {"transit", "pending", "part_traded", "traded", "rejected", "cancelled", "new"}
    ),
    "transit": frozenset({"pending", "part_traded", "traded", "rejected", "cancelled", "expired"}),
    "pending": frozenset({"part_traded", "traded", "cancelled", "rejected", "expired"}),
    # part_traded -> part_traded carries a new filled quantity / average price.
    "part_traded": frozenset({"part_traded", "traded", "cancelled", "expired"}),
    "traded": frozenset(),
    "rejected": frozenset(),
    "cancelled": frozenset(),
    "expired": frozenset(),
    "dry_run": frozenset(),
}
"""Order status -> the statuses it may move to. Anything else raises StoreError."""

ORDER_STATUSES: frozenset[str] = frozenset(ORDER_TRANSITIONS)
TERMINAL_ORDER_STATUSES: frozenset[str] = frozenset(
    s for s, nxt in ORDER_TRANSITIONS.items() if not nxt
)

TRACKER_TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"active", "cancelled"}),
    "active": frozenset({"exited"}),
    "exited": frozenset(),
    "cancelled": frozenset(),
}
"""Position tracker status -> the statuses it may move to."""

TRADING_STATES: frozenset[str] = frozenset({"ACTIVE", "REDUCING", "HALTED"})


def sources_of(transitions: dict[str, frozenset[str]], target: str) -> list[str]:
    """The statuses from which ``target`` may be reached."""
    return sorted(s for s, nxt in transitions.items() if target in nxt)


class OrderRow(msgspec.Struct, frozen=True, kw_only=True):
    correlation_id: str
    intent_msg_id: str
    position_id: str
    kind: str  # entry / exit
    side: str  # BUY / SELL
    segment: str
    security_id: int
    symbol: str
    quantity: int
    order_type: str
    limit_price_paise: int
    status: OrderStatus
    broker_order_id: str | None
    filled_qty: int
    avg_price_paise: int
    reason: str
    ts_intent: int
    intent_tick_id: str
    intent_tick_key: int
    payload: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime
    parent_id: str = ""
    """The intent's correlation id when this order is one of its freeze-limit slices, else ""."""
    slice_no: int = 0
    """1-based slice number (0 when unsliced)."""


class FillRow(msgspec.Struct, frozen=True, kw_only=True):
    fill_id: str
    correlation_id: str
    broker_order_id: str
    side: str
    quantity: int
    price_paise: int
    ts_event: int
    tick_id: str
    tick_key: int
    created_at: dt.datetime


class TrackerRow(msgspec.Struct, frozen=True, kw_only=True):
    position_id: str
    index_key: str
    segment: str
    security_id: int
    symbol: str
    option_type: str
    status: TrackerStatus
    quantity: int
    entry_price_paise: int | None
    exit_price_paise: int | None
    entry_tick_id: str | None
    entry_tick_key: int | None
    exit_tick_id: str | None
    exit_tick_key: int | None
    ts_entry: int | None
    ts_exit: int | None
    exit_reason: str | None
    pnl_paise: int | None
    charges_paise: int | None
    hwm_pnl_paise: int
    trailing_state: dict[str, Any]
    external: bool
    paper: bool
    signal_id: str
    meta: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime


class OutboxRow(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    stream: str
    msg_id: str
    type: str
    data: bytes
    created_at: dt.datetime
    published_at: dt.datetime | None


class TradingStateRow(msgspec.Struct, frozen=True, kw_only=True):
    state: TradingStateName
    reason: str
    updated_at: dt.datetime


class DailyRiskRow(msgspec.Struct, frozen=True, kw_only=True):
    trading_day: dt.date
    scope: str  # "global" or an index key
    realized_pnl_paise: int
    trades: int
    starting_capital_paise: int
    state: str
    updated_at: dt.datetime


class SyncReportRow(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    ts: int
    mode: str
    differences: Any
    actions: Any
    ok: bool
    created_at: dt.datetime
