"""The sync service's data: the broker's reports and the books going in, differences and
actions coming out. Plain frozen structs (see :mod:`services.sync.core` for the rules).

Prices in integer paise, times UTC ns (IST text only where DhanHQ sends it).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from shared.messages import (
    FeedSubscribe,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    PositionAdjusted,
    PositionClosed,
    PositionOpened,
)
from shared.store.rows import FillRow, OrderRow, TrackerRow

# --------------------------------------------------------------------------- inputs


class BrokerPosition(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the broker's positions (``net_qty`` = buy − sell, day fields of today)."""

    segment: str
    security_id: int
    symbol: str
    option_type: str  # CE / PE / "" (from drvOptionType)
    product_type: str
    net_qty: int
    buy_avg_paise: int
    sell_avg_paise: int
    day_buy_qty: int
    day_sell_qty: int


class BrokerOrder(msgspec.Struct, frozen=True, kw_only=True):
    """One order of the broker's order book; ``status`` upper case as DhanHQ sends it."""

    order_id: str
    correlation_id: str
    status: str
    side: str
    segment: str
    security_id: int
    quantity: int
    filled_qty: int
    avg_price_paise: int
    reason: str = ""
    time: str = ""  # IST "YYYY-MM-DD HH:MM:SS" of the last change


class BrokerTrade(msgspec.Struct, frozen=True, kw_only=True):
    """One fill of the broker's trade book."""

    order_id: str
    trade_id: str
    side: str
    segment: str
    security_id: int
    quantity: int
    price_paise: int
    time: str = ""  # IST "YYYY-MM-DD HH:MM:SS"


class BrokerFunds(msgspec.Struct, frozen=True, kw_only=True):
    available_paise: int
    utilized_paise: int = 0


class BrokerReports(msgspec.Struct, frozen=True, kw_only=True):
    """What the broker said. ``None`` means the report is missing (failed): never "empty"."""

    positions: list[BrokerPosition] | None
    orders: list[BrokerOrder] | None
    trades: list[BrokerTrade] | None
    funds: BrokerFunds | None
    failures: list[str] = msgspec.field(default_factory=list)


class Books(msgspec.Struct, frozen=True, kw_only=True):
    """The ledger as read after the broker's reports: pending and active trackers, every order
    not in a final status, and around those the rest of their positions' orders and fills."""

    trackers: list[TrackerRow]
    open_orders: list[OrderRow]
    orders: list[OrderRow] = msgspec.field(default_factory=list)
    """Every order, final ones too, of each position with an open order: an intent's other
    freeze-limit slices, and the position's entry and exit orders (the open ones may repeat)."""
    fills: dict[str, list[FillRow]] = msgspec.field(default_factory=dict)
    """The fill rows of those orders by correlation id (an order without fills may be absent)."""


class SyncRules(msgspec.Struct, frozen=True, kw_only=True):
    order_grace_s: float = 180.0
    """An open order is settled by sync only once its last change in the books is this old.
    Above the executor's 120 s fill timeout, so a running executor has settled it or given up."""


# --------------------------------------------------------------------------- outputs


class OpenTracker(msgspec.Struct, frozen=True, kw_only=True, tag="open_tracker"):
    """Insert an active, external tracker."""

    position_id: str
    index_key: str
    segment: str
    security_id: int
    symbol: str
    option_type: str
    quantity: int
    entry_price_paise: int
    entry_tick_id: str
    ts_entry: int
    meta: dict[str, Any]


class ActivateTracker(msgspec.Struct, frozen=True, kw_only=True, tag="activate_tracker"):
    position_id: str
    entry_price_paise: int
    quantity: int
    entry_tick_id: str
    ts_entry: int


class CloseTracker(msgspec.Struct, frozen=True, kw_only=True, tag="close_tracker"):
    position_id: str
    exit_price_paise: int
    exit_tick_id: str
    ts_exit: int
    reason: str
    pnl_paise: int
    charges_paise: int
    quantity: int | None = None
    """The quantity closed, replacing the tracker's (partial exit fills lower it on the way);
    None keeps it."""


class SetQuantity(msgspec.Struct, frozen=True, kw_only=True, tag="set_quantity"):
    position_id: str
    from_quantity: int
    quantity: int


class CancelTracker(msgspec.Struct, frozen=True, kw_only=True, tag="cancel_tracker"):
    position_id: str
    reason: str


class MoveOrder(msgspec.Struct, frozen=True, kw_only=True, tag="move_order"):
    correlation_id: str
    from_status: str
    status: str
    broker_order_id: str
    filled_qty: int
    avg_price_paise: int
    reason: str = ""


class RecordFill(msgspec.Struct, frozen=True, kw_only=True, tag="record_fill"):
    fill_id: str
    correlation_id: str
    broker_order_id: str
    side: str
    quantity: int
    price_paise: int
    ts_event: int
    tick_id: str
    recorded_qty: int = 0
    """The order's fill quantity in the books this fill was computed against: if it has changed
    meanwhile (a live executor), the shell records nothing and fails the action."""


Change = (
    OpenTracker | ActivateTracker | CloseTracker | SetQuantity | CancelTracker | MoveOrder
    | RecordFill
)  # fmt: skip
"""One ledger write; the shell maps each to one Ledger method."""

Event = (
    PositionOpened | PositionClosed | PositionAdjusted | OrderFilled | OrderRejected
    | OrderCancelled | FeedSubscribe
)  # fmt: skip


class Emit(msgspec.Struct, frozen=True, kw_only=True):
    stream: str
    msg: Event


ActionKind = Literal["adopt_position", "close_outside", "adjust_quantity", "settle_order"]


class Action(msgspec.Struct, frozen=True, kw_only=True):
    """What to change (atomically) and publish, and why in words."""

    kind: ActionKind
    reason: str
    changes: list[Change]
    events: list[Emit]
    position_id: str = ""
    correlation_id: str = ""
    security_id: int = 0

    def summary(self) -> dict[str, Any]:
        """The report's view: kind, ids, reason, the ledger ops and the events' msg_ids."""
        return {
            "kind": self.kind, "reason": self.reason, "position_id": self.position_id,
            "correlation_id": self.correlation_id, "security_id": self.security_id,
            "changes": [type(c).__struct_config__.tag for c in self.changes],
            "events": [f"{e.stream}:{e.msg.msg_id}" for e in self.events],
        }  # fmt: skip


class Difference(msgspec.Struct, frozen=True, kw_only=True):
    """Something the books and the broker disagree on; ``resolved`` when an action fixes it."""

    kind: str
    position_id: str = ""
    correlation_id: str = ""
    security_id: int = 0
    detail: str = ""
    resolved: bool = False


class SyncResult(msgspec.Struct, frozen=True, kw_only=True):
    differences: list[Difference]
    actions: list[Action]
    failures: list[str] = msgspec.field(default_factory=list)
    info: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Reports complete and every difference resolved by an action."""
        return not self.failures and all(d.resolved for d in self.differences)
