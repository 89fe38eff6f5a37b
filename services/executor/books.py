"""The executor's books: every write of an order, fill or position tracker is one Postgres
transaction together with the events it causes, queued in the outbox (published later by the
service, idempotently by msg_id). No asyncio, Redis or HTTP here.

One intent is carried out by one broker order, or by several *slices* above the freeze limit
(``slicing``). Each order's row is written before it is sent, and each order moves on its own:
``new`` → ``submitting`` → … → ``traded`` / ``rejected`` / ``cancelled`` / ``expired``, every rise
of its traded quantity a fill row and an ``order.filled`` event (``fills``). The intent is
*settled* once all its orders are final (:meth:`ExecutorBooks.settle`, idempotent):

- entry: the tracker opens with the quantity filled, at the quantity-weighted average price
  (``position.opened``); nothing filled cancels it. While fills come in, the pending tracker's
  quantity is the quantity filled so far.
- exit: everything filled closes the tracker (``position.closed``, PnL and charges over all the
  position's fills, one brokerage per executed order); a part leaves it open with the rest
  (``position.adjusted``) so the exits service retries for that. While fills come in, the
  tracker's quantity is what is still open.
- a sliced intent that did not fill completely also gets one ``order.rejected`` (some slice was
  refused) or ``order.cancelled`` event under the intent's own correlation id, the one the
  exits service retries on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from services.executor import core, fills
from services.executor.slicing import Slice, slice_intent
from shared import wire
from shared.messages import Message, OrderIntent, Tick
from shared.store.ledger import Ledger
from shared.store.rows import ORDER_TRANSITIONS, OrderRow

log = logging.getLogger("executor")

FINAL = frozenset({"traded", "rejected", "cancelled", "expired", "dry_run"})
AT_BROKER = frozenset({"transit", "pending", "part_traded"})
STATUS_MAP = {
    "TRANSIT": "transit",
    "PENDING": "pending",
    "PART_TRADED": "part_traded",
    "TRADED": "traded",
    "REJECTED": "rejected",
    "CANCELLED": "cancelled",
    "EXPIRED": "expired",
}
"""DhanHQ order status -> our order status (``shared.store.rows.ORDER_TRANSITIONS``)."""


class BrokerState(Protocol):
    """What the books need of a broker report about one order (see ``live.BrokerOrderState``)."""

    status: str
    order_id: str
    filled_qty: int
    avg_price_paise: int
    last_price_paise: int
    reason: str


class ExecutorBooks:
    """The executor's writes over one :class:`Ledger`; ``now_ns`` stamps ``ts_init``."""

    def __init__(self, ledger: Ledger, now_ns: Callable[[], int], *, paper: bool) -> None:
        self.ledger = ledger
        self.now_ns = now_ns
        self.paper = paper

    def queue(self, stream: str, msg: Message) -> None:
        f = wire.encode(msg)
        self.ledger.add_outbox(stream, msg.msg_id, f["type"].decode(), f["data"])

    def orders(self, intent: OrderIntent) -> list[OrderRow]:
        return self.ledger.orders_for_intent(intent.correlation_id)

    # -- intake --------------------------------------------------------------------------

    def record_intent(
        self,
        intent: OrderIntent,
        slices: Sequence[Slice],
        problem: str | None,
        payload: dict[str, Any],
    ) -> list[OrderRow]:
        """Write the intent's order rows (one per slice) and its pending tracker, or one
        rejected row and an ``order.rejected`` event when ``problem`` says why not."""
        with self.ledger.transaction():
            plan = [
                Slice(correlation_id=intent.correlation_id, slice_no=0, quantity=intent.quantity)
            ]
            for sl in plan if problem else slices:
                self.ledger.create_order(
                    correlation_id=sl.correlation_id,
                    intent_msg_id=intent.msg_id,
                    position_id=intent.position_id,
                    kind=intent.kind,
                    side=intent.side,
                    segment=intent.segment,
                    security_id=intent.security_id,
                    symbol=intent.symbol,
                    quantity=sl.quantity,
                    ts_intent=intent.ts_event,
                    intent_tick_id=intent.tick_id,
                    order_type=intent.order_type,
                    limit_price_paise=intent.limit_price_paise,
                    reason=intent.reason,
                    payload=payload,
                    parent_id=intent.correlation_id if sl.slice_no else "",
                    slice_no=sl.slice_no,
                )
            if problem:
                self.ledger.set_order_status(
                    intent.correlation_id, "rejected", reason=problem[:500]
                )
                self.queue("orders.events", core.rejected_event(intent, problem, self.now_ns()))
            elif intent.kind == "entry":
                self.ledger.open_tracker(
                    position_id=intent.position_id,
                    index_key=intent.index,
                    segment=intent.segment,
                    security_id=intent.security_id,
                    symbol=intent.symbol,
                    option_type=intent.symbol[-2:] if intent.symbol[-2:] in ("CE", "PE") else "",
                    quantity=intent.quantity,
                    signal_id=intent.signal_id,
                    paper=self.paper,
                )
        return self.orders(intent)

    # -- paper -----------------------------------------------------------------------------

    def paper_fill(
        self,
        intent: OrderIntent,
        rows: Sequence[OrderRow],
        tick_id: str,
        ts_event: int,
        price_paise: int,
    ) -> None:
        """Every order of the intent fills whole at the same tick and price; then settle."""
        now = self.now_ns()
        with self.ledger.transaction():
            for row in rows:
                child, parent = self.child(intent, row)
                broker_id = f"PAPER-{row.correlation_id}"
                cur = self.ledger.get_order(row.correlation_id)
                if cur is not None and cur.status != "traded":
                    self.ledger.set_order_status(
                        row.correlation_id,
                        "traded",
                        broker_order_id=broker_id,
                        filled_qty=row.quantity,
                        avg_price_paise=price_paise,
                    )
                self.ledger.record_fill(
                    fill_id=f"F-{row.correlation_id}",
                    correlation_id=row.correlation_id,
                    broker_order_id=broker_id,
                    side=intent.side,
                    quantity=row.quantity,
                    price_paise=price_paise,
                    ts_event=ts_event,
                    tick_id=tick_id,
                )
                self.queue(
                    "orders.events",
                    core.filled_event(
                        child, _mark(tick_id, ts_event), price_paise, broker_id, now, parent=parent
                    ),
                )
            self.settle(intent)

    def cancel_all(
        self,
        intent: OrderIntent,
        rows: Sequence[OrderRow],
        reason: str,
        ts_event: int,
        tick_id: str,
    ) -> None:
        """Paper: no fill is possible (the session ended); every order cancelled, then settle."""
        now = self.now_ns()
        with self.ledger.transaction():
            for row in rows:
                child, parent = self.child(intent, row)
                self.ledger.set_order_status(row.correlation_id, "cancelled", reason=reason)
                self.queue(
                    "orders.events",
                    core.cancelled_event(child, reason, ts_event, tick_id, now, parent),
                )
            self.settle(intent)

    # -- live ------------------------------------------------------------------------------

    def dry_run(
        self, intent: OrderIntent, rows: Sequence[OrderRow], payloads: Sequence[dict[str, Any]]
    ) -> None:
        """Live mode with orders disabled: each order's exact payload, nothing sent."""
        now = self.now_ns()
        with self.ledger.transaction():
            for row, payload in zip(rows, payloads, strict=True):
                child, parent = self.child(intent, row)
                self.ledger.set_order_status(
                    row.correlation_id, "dry_run", payload=payload, reason="orders disabled"
                )
                self.queue("orders.events", core.dry_run_event(child, payload, now, parent))
            tr = self.ledger.get_tracker(intent.position_id)
            if intent.kind == "entry" and tr is not None and tr.status == "pending":
                self.ledger.cancel_tracker(intent.position_id, "dry run: orders disabled")

    def submitting(self, row: OrderRow, payload: dict[str, Any]) -> None:
        self.ledger.set_order_status(row.correlation_id, "submitting", payload=payload)

    def accepted(
        self, intent: OrderIntent, row: OrderRow, order_id: str, broker_status: str
    ) -> None:
        """The broker took the order: its id and status, and an ``order.accepted`` event. A final
        status here (an answer recovered by lookup) is left for :meth:`apply_state`, which
        records its fills: the order is ``pending`` till then."""
        child, parent = self.child(intent, row)
        target = STATUS_MAP.get(broker_status.upper(), "pending")
        with self.ledger.transaction():
            self._move(
                row.correlation_id,
                target if target in AT_BROKER else "pending",
                broker_order_id=order_id,
            )
            self.queue(
                "orders.events",
                core.accepted_event(child, order_id, broker_status, self.now_ns(), parent),
            )

    def in_doubt(self, row: OrderRow, reason: str) -> None:
        self.ledger.set_order_status(row.correlation_id, "in_doubt", reason=reason[:500])

    def reject(self, intent: OrderIntent, row: OrderRow, reason: str, order_id: str = "") -> None:
        """The order is refused (by us, or the broker at submission): rejected, with its event."""
        child, parent = self.child(intent, row)
        with self.ledger.transaction():
            cur = self.ledger.get_order(row.correlation_id)
            if cur is not None and cur.status not in FINAL:
                self.ledger.set_order_status(
                    row.correlation_id,
                    "rejected",
                    reason=reason[:500],
                    **({"broker_order_id": order_id} if order_id else {}),
                )
            self.queue("orders.events", core.rejected_event(child, reason, self.now_ns(), parent))
            self.settle(intent)

    def apply_state(
        self, intent: OrderIntent, row: OrderRow, state: BrokerState, tick_id: str, ts_event: int
    ) -> fills.Increment | None:
        """Record a broker report of one order: a fill for any rise of its traded quantity
        (stamped ``tick_id`` / ``ts_event``), its status, and when final its event and, if it
        was the intent's last open order, the settlement. Returns the fill recorded, if any."""
        cid = row.correlation_id
        child, parent = self.child(intent, row)
        now = self.now_ns()
        with self.ledger.transaction():
            cur = self.ledger.get_order(cid)
            if cur is None or cur.status in FINAL:
                return None  # settled already (by us before a crash, or by sync)
            target = STATUS_MAP.get(state.status, "pending")
            filled = state.filled_qty or (cur.quantity if target == "traded" else 0)
            recorded = [(f.quantity, f.price_paise) for f in self.ledger.fills_for(cid)]
            inc = fills.next_increment(
                cid, cur.quantity, recorded, filled, state.avg_price_paise, state.last_price_paise
            )
            if inc is not None:
                self.ledger.record_fill(
                    fill_id=inc.fill_id,
                    correlation_id=cid,
                    broker_order_id=state.order_id,
                    side=intent.side,
                    quantity=inc.quantity,
                    price_paise=inc.price_paise,
                    ts_event=ts_event,
                    tick_id=tick_id,
                )
                self.queue(
                    "orders.events",
                    core.filled_event(
                        child,
                        _mark(tick_id, ts_event),
                        inc.price_paise,
                        state.order_id,
                        now,
                        parent=parent,
                        quantity=inc.quantity,
                        msg_id=inc.msg_id,
                        filled_qty=inc.filled_qty,
                    ),
                )
            extra: dict[str, Any] = {"broker_order_id": state.order_id}
            if filled:
                extra.update(filled_qty=filled, avg_price_paise=state.avg_price_paise)
            if target == "rejected":
                extra["reason"] = f"broker rejected: {state.reason or 'no reason given'}"[:500]
            elif target in ("cancelled", "expired"):
                extra["reason"] = f"broker status {state.status}: {state.reason}"[:500]
            moved = self._move(cid, target, **extra)
            if moved and target == "rejected":
                self.queue(
                    "orders.events", core.rejected_event(child, extra["reason"], now, parent)
                )
            elif moved and target in ("cancelled", "expired"):
                self.queue(
                    "orders.events",
                    core.cancelled_event(
                        child, extra["reason"], intent.ts_event, intent.tick_id, now, parent
                    ),
                )
            if inc is not None:
                self._reflect(intent)
            if target in FINAL:
                self.settle(intent)
        return inc

    # -- settlement ----------------------------------------------------------------------

    def settle(self, intent: OrderIntent) -> str:
        """Once every order of the intent is final, its effect on the position (see the module
        docstring); a no-op before that or when already done. Returns what it did."""
        rows = self.orders(intent)
        if not rows or any(r.status not in FINAL for r in rows):
            return "open"
        with self.ledger.transaction():
            return self._settle(intent, rows)

    def _settle(self, intent: OrderIntent, rows: list[OrderRow]) -> str:
        pid, now = intent.position_id, self.now_ns()
        done = [f for r in rows for f in self.ledger.fills_for(r.correlation_id)]
        filled = sum(f.quantity for f in done)
        sliced = rows[0].slice_no > 0
        tr = self.ledger.get_tracker(pid)
        fields = {
            "correlation_id": intent.correlation_id,
            "position_id": pid,
            "kind": intent.kind,
            "filled": filled,
            "quantity": intent.quantity,
            "orders": len(rows),
        }
        last = max(done, key=lambda f: (f.tick_key, f.ts_event)) if done else None
        if intent.kind == "entry":
            if tr is None or tr.status != "pending":
                return "done"
            if last is None:
                reason = next(
                    (r.reason for r in rows if r.status != "traded" and r.reason), "nothing filled"
                )
                self.ledger.cancel_tracker(pid, reason[:200])
                self._summary(intent, rows, filled, now)
                return "cancelled"
            price = fills.weighted_avg_paise((f.quantity, f.price_paise) for f in done)
            self.ledger.activate_tracker(
                pid,
                entry_price_paise=price,
                quantity=filled,
                entry_tick_id=last.tick_id,
                ts_entry=last.ts_event,
            )
            self.queue(
                "positions",
                core.opened_event(intent, last.tick_id, last.ts_event, price, filled, now),
            )
            self._summary(intent, rows, filled, now)
            if sliced or filled != intent.quantity:
                log.info("position opened", extra={"fields": {**fields, "price_paise": price}})
            return "opened"
        if tr is None or tr.status != "active":
            if last is not None:
                log.warning(
                    "exit fill for a position no longer active (settled by sync?)",
                    extra={"fields": {**fields, "tracker_status": tr.status if tr else None}},
                )
            return "done"
        if last is None:
            self._summary(intent, rows, filled, now)
            return "unfilled"
        if filled < intent.quantity:
            left = intent.quantity - filled
            why = f"exit {intent.correlation_id} filled {filled} of {intent.quantity}; {left} still open"
            self.ledger.update_tracker_quantity(pid, left)
            self.queue(
                "positions",
                core.adjusted_event(intent, left, why, last.tick_id, last.ts_event, now),
            )
            self._summary(intent, rows, filled, now)
            log.warning("exit filled in part", extra={"fields": {**fields, "left": left}})
            return "reduced"
        assert tr.entry_price_paise is not None
        entry_orders = [
            o for o in self.ledger.orders_for_position(pid) if o.kind == "entry" and o.filled_qty
        ]
        exit_orders = [
            o for o in self.ledger.orders_for_position(pid) if o.kind == "exit" and o.filled_qty
        ]
        numbers = fills.close_numbers(
            intent.segment,
            last.ts_event,
            tr.entry_price_paise,
            [(f.quantity, f.price_paise) for f in self.ledger.fills_for_position(pid, "entry")],
            [(f.quantity, f.price_paise) for f in self.ledger.fills_for_position(pid, "exit")],
            orders=max(len(entry_orders), 1) + max(len(exit_orders), 1),
        )
        self.ledger.close_tracker(
            pid,
            exit_price_paise=numbers.exit_price_paise,
            exit_tick_id=last.tick_id,
            ts_exit=last.ts_event,
            reason=intent.reason,
            pnl_paise=numbers.pnl_paise,
            charges_paise=numbers.charges_paise,
            quantity=numbers.quantity,
        )
        self.queue(
            "positions",
            core.closed_event(
                intent, last.tick_id, last.ts_event, tr.entry_price_paise, numbers, now
            ),
        )
        return "closed"

    def _summary(self, intent: OrderIntent, rows: list[OrderRow], filled: int, now: int) -> None:
        """A sliced intent that did not fill completely: one event under its own id."""
        if (
            rows[0].slice_no == 0
            or filled >= intent.quantity
            or all(r.status == "dry_run" for r in rows)
        ):
            return
        refused = [r for r in rows if r.status == "rejected"]
        outcomes = "; ".join(
            f"slice {r.slice_no} {r.status}"
            + (f" ({r.reason})" if r.status != "traded" and r.reason else "")
            for r in rows
        )
        reason = f"{filled} of {intent.quantity} filled over {len(rows)} slices: {outcomes}"
        if refused:
            self.queue("orders.events", core.rejected_event(intent, reason, now))
        else:
            self.queue(
                "orders.events",
                core.cancelled_event(intent, reason, intent.ts_event, intent.tick_id, now),
            )

    # -- helpers -------------------------------------------------------------------------

    def child(self, intent: OrderIntent, row: OrderRow) -> tuple[OrderIntent, str]:
        """The intent as seen by one of its orders, and the parent id its events carry."""
        return (
            slice_intent(intent, row.correlation_id, row.quantity),
            intent.correlation_id if row.parent_id else "",
        )

    def _move(self, cid: str, target: str, **fields: Any) -> bool:
        """Move an order to ``target`` if its lifecycle allows (a repeated or out-of-order report
        is ignored; ``part_traded`` -> ``part_traded`` carries new figures)."""
        cur = self.ledger.get_order(cid)
        if cur is None or target not in ORDER_TRANSITIONS.get(cur.status, frozenset()):
            return False
        if cur.status == target and target != "part_traded":
            return False
        self.ledger.set_order_status(cid, target, **fields)
        return True

    def _reflect(self, intent: OrderIntent) -> None:
        """While fills come in: the pending entry tracker holds the quantity filled so far, the
        active one of an exit what is still open."""
        filled = sum(
            f.quantity for r in self.orders(intent) for f in self.ledger.fills_for(r.correlation_id)
        )
        tr = self.ledger.get_tracker(intent.position_id)
        if tr is None:
            return
        if intent.kind == "entry" and tr.status == "pending" and 0 < filled != tr.quantity:
            self.ledger.update_tracker_quantity(intent.position_id, filled)
        elif (
            intent.kind == "exit"
            and tr.status == "active"
            and 0 < intent.quantity - filled != tr.quantity
        ):
            self.ledger.update_tracker_quantity(intent.position_id, intent.quantity - filled)


def _mark(tick_id: str, ts_event: int) -> Tick:
    """A stand-in for the tick an event is stamped with (its id and event time)."""
    return Tick(
        msg_id=f"fillmark-{tick_id}",
        ts_event=ts_event,
        ts_init=0,
        tick_id=tick_id,
        segment="",
        security_id=0,
        ltp_paise=0,
    )
