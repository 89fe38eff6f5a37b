"""Rule 1 of the live reconciliation (:mod:`services.sync.core`): orders open in the books but
final at the broker, settled the way the executor settles them (:mod:`services.executor.books`,
same fill ids and msg_ids), so that a late executor duplicates nothing. Pure.

Per broker order (an unsliced intent's one order, or one freeze-limit slice ``<intent>-N``):

- **the missed fill is what the books lack**: the broker's traded quantity less the order's fill
  rows, priced so that the order's traded value comes to the broker's average × traded quantity
  (to the paisa), under the executor's ids (:func:`services.executor.fills.next_increment`:
  ``F-<cid>`` when the order filled whole in one step, else ``F-<cid>-<cumulative qty>``). Nothing
  is recorded when the books already hold the broker's quantity; when they hold more, the order is
  not settled at all but reported for a human;
- the order moves to the broker's final status, with its ``order.rejected`` /
  ``order.cancelled`` event; a slice's events name the intent in ``parent_correlation_id``.

Per intent, once every one of its orders is final (in the books, or settled in this pass), the
position follows from the fills of all its orders, as ``ExecutorBooks.settle`` does: an entry
opens its pending tracker with the quantity filled at the quantity-weighted average price (nothing
filled cancels it); an exit closes the tracker (PnL and charges over the position's fills, see
:func:`~services.executor.fills.close_numbers`) or, filled in part, leaves it open with the rest;
a sliced intent that did not fill completely also gets one ``order.rejected`` /
``order.cancelled`` under its own id. While some of its orders are still open, the tracker only
follows the quantity filled so far. One intent's settlement is one :class:`Action`.

Prices in integer paise, times UTC ns.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import msgspec

from services.executor.fills import close_numbers, next_increment, weighted_avg_paise
from services.sync.model import (
    Action,
    ActivateTracker,
    Books,
    BrokerOrder,
    BrokerTrade,
    CancelTracker,
    Change,
    CloseTracker,
    Difference,
    Emit,
    MoveOrder,
    RecordFill,
    SetQuantity,
    SyncRules,
)
from shared import streamids
from shared.clock import IST
from shared.messages import (
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    PositionAdjusted,
    PositionClosed,
    PositionOpened,
    make_msg_id,
)
from shared.store.rows import ORDER_TRANSITIONS, TERMINAL_ORDER_STATUSES, OrderRow, TrackerRow
from shared.types import NS_PER_S, paise_to_rupees_str

RECONCILABLE = frozenset({"submitting", "in_doubt", "transit", "pending", "part_traded"})
"""Book statuses an order may be settled from (``new`` was never sent; the rest are final)."""
BROKER_FINAL = {
    "TRADED": "traded",
    "REJECTED": "rejected",
    "CANCELLED": "cancelled",
    "EXPIRED": "expired",
}

Key = tuple[str, int]  # (segment, security_id)


# --------------------------------------------------------------------------- helpers


def ist_text_to_ns(text: str) -> int | None:
    """DhanHQ's IST ``YYYY-MM-DD HH:MM:SS`` (or ``DD/MM/YYYY ..``) as UTC ns; None if absent."""
    for fmt in ("%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M:%S"):
        try:
            local = dt.datetime.strptime(text.strip(), fmt)
        except (ValueError, AttributeError):
            continue
        if local.year < 2000:  # placeholders: 0001-01-01, 01/01/1980
            return None
        return int(local.replace(tzinfo=IST).timestamp()) * NS_PER_S
    return None


def rupees(paise: int) -> str:
    return "₹" + paise_to_rupees_str(paise)


def vwap(trades: Iterable[BrokerTrade]) -> tuple[int, int]:
    """(quantity, volume-weighted price in paise rounded half up) of ``trades``."""
    qty = value = 0
    for t in trades:
        qty += t.quantity
        value += t.quantity * t.price_paise
    return qty, ((2 * value + qty) // (2 * qty) if qty else 0)


def intent_of(order: OrderRow) -> str:
    """The correlation id of the intent an order carries out (a slice's parent, else its own)."""
    return order.parent_id or order.correlation_id


def _age_s(order: OrderRow, now_ns: int) -> float:
    return now_ns / NS_PER_S - order.updated_at.timestamp()


class _Fill(NamedTuple):
    """A fill row of the books, or one this pass records."""

    quantity: int
    price_paise: int
    tick_key: int
    ts_event: int
    tick_id: str


class _Settled(NamedTuple):
    """One order settled: its ledger changes, events and the words saying so."""

    order: OrderRow
    changes: list[Change]
    events: list[Emit]
    words: str


# --------------------------------------------------------------------------- the rule


class OrderRule:
    """Rule 1 over one pass's inputs. ``trackers`` (by position id) is updated in place to the
    books as they will be after the actions; the keys of orders in flight or settled are kept
    for the position rules to skip."""

    def __init__(
        self,
        books: Books,
        broker_orders: Sequence[BrokerOrder],
        trades: Sequence[BrokerTrade],
        now_ns: int,
        tick_id: str,
        rules: SyncRules,
        trackers: dict[str, TrackerRow],
    ) -> None:
        self.books, self.broker_orders, self.trades = books, broker_orders, trades
        self.now, self.tick_id, self.rules, self.trackers = now_ns, tick_id, rules, trackers
        self.rows = {o.correlation_id: o for o in [*books.orders, *books.open_orders]}
        self.fills = {
            cid: [_Fill(f.quantity, f.price_paise, f.tick_key, f.ts_event, f.tick_id) for f in rows]
            for cid, rows in books.fills.items()
        }
        self.diffs: list[Difference] = []
        self.actions: list[Action] = []
        self.in_flight: set[Key] = set()
        self.touched: set[Key] = set()
        self._settled: dict[str, list[_Settled]] = {}

    def run(self) -> OrderRule:
        for o in self.broker_orders:
            if o.status.upper() not in BROKER_FINAL:
                self.in_flight.add((o.segment, o.security_id))
        for order in self.books.open_orders:
            self._order(order)
        for intent_id, settled in self._settled.items():
            self._intent(intent_id, settled)
        return self

    # -- one order -------------------------------------------------------------------------

    def _broker_order(self, order: OrderRow) -> BrokerOrder | None:
        same = [
            o
            for o in self.broker_orders
            if order.broker_order_id and o.order_id == order.broker_order_id
        ]
        same = same or [o for o in self.broker_orders if o.correlation_id == order.correlation_id]
        return max(same, key=lambda o: (o.time, o.order_id)) if same else None

    def _order(self, order: OrderRow) -> None:
        key = (order.segment, order.security_id)
        b = self._broker_order(order) if order.status in RECONCILABLE else None
        if (
            order.status not in RECONCILABLE
            or _age_s(order, self.now) < self.rules.order_grace_s
            or (b is not None and b.status.upper() not in BROKER_FINAL)
        ):
            self.in_flight.add(key)  # the executor's (new, young, or still open at the broker)
            return
        if b is None:
            self.in_flight.add(key)
            age_s = _age_s(order, self.now)
            self._diff(
                "order_unknown_at_broker",
                order,
                f"order {order.correlation_id} is {order.status} in the books ({age_s:.0f}s "
                "since its last change) but the broker's order book has no such order: left for "
                "the executor or a human",
            )
            return
        self.touched.add(key)
        settled, why = self._settle(order, b)
        if settled is None:
            self._diff("order_final_at_broker", order, why)
            return
        self._settled.setdefault(intent_of(order), []).append(settled)

    def _settle(self, order: OrderRow, b: BrokerOrder) -> tuple[_Settled | None, str]:
        """The order moved as the broker's final ``b`` says, with the fill the books lack."""
        broker_status = b.status.upper()
        cid = order.correlation_id
        words = (
            f"order {cid} ({order.kind} {order.side} {order.quantity} of {order.symbol}) is "
            f"{order.status} in the books but {broker_status} at the broker (order "
            f"{b.order_id})"
        )
        target = BROKER_FINAL[broker_status]
        allowed = ORDER_TRANSITIONS.get(order.status, frozenset())
        if target not in allowed:  # e.g. part_traded -> rejected, submitting -> expired
            if target == "traded" or "cancelled" not in allowed:
                return None, f"{words}: the books cannot move {order.status} -> {target}"
            target = "cancelled"
        filled = b.filled_qty or (order.quantity if broker_status == "TRADED" else 0)
        recorded = self.fills.get(cid, [])
        rec_qty = sum(f.quantity for f in recorded)
        if rec_qty > filled:
            return None, (
                f"{words}: the books hold fills of {rec_qty}, more than the broker's "
                f"traded {filled}: left for a human"
            )
        price = b.avg_price_paise or vwap(t for t in self.trades if t.order_id == b.order_id)[1]
        if filled > rec_qty and not price:
            return None, f"{words}: no traded price in the order or trade book"
        price = price or weighted_avg_paise((f.quantity, f.price_paise) for f in recorded)
        ts = ist_text_to_ns(b.time) or self.now
        base: dict[str, Any] = dict(
            ts_event=ts,
            ts_init=self.now,
            tick_id=self.tick_id,
            correlation_id=cid,
            position_id=order.position_id,
            kind=order.kind,
            security_id=order.security_id,
            parent_correlation_id=order.parent_id,
        )
        if target == "rejected":  # the executor's wording
            reason = f"broker rejected: {b.reason or 'no reason given'}"
        else:
            reason = f"broker status {broker_status}: {b.reason}"
        kept = (order.reason if target == "traded" else reason)[:500]
        changes: list[Change] = [
            MoveOrder(
                correlation_id=cid,
                from_status=order.status,
                status=target,
                broker_order_id=b.order_id,
                filled_qty=filled,
                avg_price_paise=price if filled else 0,
                reason=kept,
            )
        ]
        events: list[Emit] = []
        inc = next_increment(
            cid, order.quantity, [(f.quantity, f.price_paise) for f in recorded], filled, price
        )
        if inc is not None:
            changes.append(
                RecordFill(
                    fill_id=inc.fill_id,
                    correlation_id=cid,
                    broker_order_id=b.order_id,
                    side=order.side,
                    quantity=inc.quantity,
                    price_paise=inc.price_paise,
                    ts_event=ts,
                    tick_id=self.tick_id,
                    recorded_qty=rec_qty,
                )
            )
            events.append(
                Emit(
                    stream="orders.events",
                    msg=OrderFilled(
                        msg_id=inc.msg_id,
                        **base,
                        broker_order_id=b.order_id,
                        side=order.side,  # type: ignore[arg-type]
                        quantity=inc.quantity,
                        price_paise=inc.price_paise,
                        fill_tick_id=self.tick_id,
                        order_quantity=order.quantity,
                        filled_qty=inc.filled_qty,
                    ),
                )
            )
            new = _Fill(
                inc.quantity, inc.price_paise, streamids.key(self.tick_id), ts, self.tick_id
            )
            self.fills[cid] = [*recorded, new]
            words += f": fill of {inc.quantity} @ {rupees(inc.price_paise)} recorded"
            if rec_qty:
                words += f" (the books held {rec_qty} of the broker's {filled})"
        elif filled:
            words += f": its fills of {filled} are in the books already"
        if target != "traded":
            cls, prefix = (
                (OrderRejected, "rej") if target == "rejected" else (OrderCancelled, "cxl")
            )
            msg = cls(msg_id=make_msg_id(prefix, cid), **base, reason=reason)
            events.append(Emit(stream="orders.events", msg=msg))
            words += f"; order {target} ({reason})"
        self.rows[cid] = msgspec.structs.replace(
            order,
            status=target,
            filled_qty=filled,
            avg_price_paise=price if filled else 0,
            reason=kept,
        )
        return _Settled(order, changes, events, words), words

    # -- one intent ------------------------------------------------------------------------

    def _intent(self, intent_id: str, settled: list[_Settled]) -> None:
        """One action for the intent's orders settled in this pass and its position."""
        rows = sorted(
            (r for r in self.rows.values() if intent_of(r) == intent_id),
            key=lambda r: (r.slice_no, r.correlation_id),
        )
        changes = [c for s in settled for c in s.changes]
        events = [e for s in settled for e in s.events]
        waiting = [r.correlation_id for r in rows if r.status not in TERMINAL_ORDER_STATUSES]
        if waiting:
            words = (
                self._follow(rows, changes) + f"; intent {intent_id} waits for {', '.join(waiting)}"
            )
        else:
            words = self._position(intent_id, rows, changes, events)
        first = settled[0].order
        self.actions.append(
            Action(
                kind="settle_order",
                reason="; ".join(s.words for s in settled) + words,
                changes=changes,
                events=events,
                position_id=first.position_id,
                correlation_id=intent_id,
                security_id=first.security_id,
            )
        )
        for i, s in enumerate(settled):
            last = i == len(settled) - 1
            self._diff("order_final_at_broker", s.order, s.words + (words if last else ""), True)

    def _diff(self, kind: str, order: OrderRow, detail: str, resolved: bool = False) -> None:
        self.diffs.append(
            Difference(
                kind=kind,
                correlation_id=order.correlation_id,
                position_id=order.position_id,
                security_id=order.security_id,
                detail=detail,
                resolved=resolved,
            )
        )

    def _filled(self, rows: Iterable[OrderRow]) -> list[_Fill]:
        return [f for r in rows for f in self.fills.get(r.correlation_id, [])]

    def _follow(self, rows: list[OrderRow], changes: list[Change]) -> str:
        """Some orders still open: the pending entry tracker holds what is filled so far, the
        active one of an exit what is still open (the executor's ``_reflect``)."""
        first = rows[0]
        pid, tracker = first.position_id, self.trackers.get(first.position_id)
        filled = sum(f.quantity for f in self._filled(rows))
        want = 0
        if first.kind == "entry" and tracker is not None and tracker.status == "pending":
            want = filled
        elif first.kind == "exit" and tracker is not None and tracker.status == "active":
            want = sum(r.quantity for r in rows) - filled
        if tracker is None or want <= 0 or want == tracker.quantity:
            return ""
        changes.append(SetQuantity(position_id=pid, from_quantity=tracker.quantity, quantity=want))
        self.trackers[pid] = msgspec.structs.replace(tracker, quantity=want)
        return f"; position {pid} quantity {tracker.quantity} -> {want} meanwhile"

    def _position(
        self, intent_id: str, rows: list[OrderRow], changes: list[Change], events: list[Emit]
    ) -> str:
        """Every order of the intent final: its effect on the position (``ExecutorBooks._settle``)."""
        first = rows[0]
        pid, tracker = first.position_id, self.trackers.get(first.position_id)
        done = self._filled(rows)
        filled, quantity = sum(f.quantity for f in done), sum(r.quantity for r in rows)
        last = max(done, key=lambda f: (f.tick_key, f.ts_event)) if done else None
        want = "pending" if first.kind == "entry" else "active"
        if tracker is None or tracker.status != want:
            return f"; tracker {pid} is {tracker.status if tracker else 'missing'}, left as is"
        if first.kind == "entry" and last is None:
            reason = next(
                (r.reason for r in rows if r.status != "traded" and r.reason), "nothing filled"
            )
            changes.append(CancelTracker(position_id=pid, reason=reason[:200]))
            self.trackers.pop(pid)
            words = f"; pending position {pid} cancelled"
        elif first.kind == "entry":
            assert last is not None
            price = weighted_avg_paise((f.quantity, f.price_paise) for f in done)
            changes.append(
                ActivateTracker(
                    position_id=pid,
                    entry_price_paise=price,
                    quantity=filled,
                    entry_tick_id=last.tick_id,
                    ts_entry=last.ts_event,
                )
            )
            events.append(
                Emit(
                    stream="positions",
                    msg=PositionOpened(
                        msg_id=make_msg_id("open", pid),
                        ts_event=last.ts_event,
                        ts_init=self.now,
                        tick_id=last.tick_id,
                        position_id=pid,
                        index=tracker.index_key,
                        segment=first.segment,
                        security_id=first.security_id,
                        symbol=first.symbol,
                        quantity=filled,
                        entry_price_paise=price,
                        entry_tick_id=last.tick_id,
                        ts_entry=last.ts_event,
                        lot_size=int(first.payload.get("lot_size", 0) or 0),
                    ),
                )
            )
            self.trackers[pid] = msgspec.structs.replace(
                tracker,
                status="active",
                quantity=filled,
                entry_price_paise=price,
                ts_entry=last.ts_event,
            )
            words = f"; position {pid} opened with {filled} @ {rupees(price)}"
        elif last is None:
            words = f"; nothing sold, position {pid} stays open"
        elif filled < quantity:
            left = quantity - filled
            why = f"exit {intent_id} filled {filled} of {quantity}; {left} still open"
            if left != tracker.quantity:
                changes.append(
                    SetQuantity(position_id=pid, from_quantity=tracker.quantity, quantity=left)
                )
            events.append(
                Emit(
                    stream="positions",
                    msg=PositionAdjusted(
                        msg_id=make_msg_id("adj", pid, intent_id, left),
                        ts_event=last.ts_event,
                        ts_init=self.now,
                        tick_id=last.tick_id,
                        position_id=pid,
                        security_id=first.security_id,
                        quantity=left,
                        reason=why,
                    ),
                )
            )
            self.trackers[pid] = msgspec.structs.replace(tracker, quantity=left)
            words = f"; position {pid} reduced to {left}"
        else:
            return self._close(first, tracker, last, changes, events)
        return words + self._summary(intent_id, rows, filled, quantity, events)

    def _close(
        self,
        first: OrderRow,
        tracker: TrackerRow,
        last: _Fill,
        changes: list[Change],
        events: list[Emit],
    ) -> str:
        """Close the position over all its fills, as ``fills.close_numbers`` figures it."""
        pid, entry = first.position_id, tracker.entry_price_paise or 0
        ours = [r for r in self.rows.values() if r.position_id == pid]

        def side(kind: str) -> tuple[list[tuple[int, int]], int]:
            orders = [r for r in ours if r.kind == kind]
            return (
                [(f.quantity, f.price_paise) for f in self._filled(orders)],
                sum(1 for r in orders if r.filled_qty),
            )

        (entry_fills, entry_orders), (exit_fills, exit_orders) = side("entry"), side("exit")
        n = close_numbers(
            first.segment,
            last.ts_event,
            entry,
            entry_fills,
            exit_fills,
            orders=max(entry_orders, 1) + max(exit_orders, 1),
        )
        changes.append(
            CloseTracker(
                position_id=pid,
                exit_price_paise=n.exit_price_paise,
                exit_tick_id=last.tick_id,
                ts_exit=last.ts_event,
                reason=first.reason,
                pnl_paise=n.pnl_paise,
                charges_paise=n.charges_paise,
                quantity=n.quantity,
            )
        )
        events.append(
            Emit(
                stream="positions",
                msg=PositionClosed(
                    msg_id=make_msg_id("close", pid),
                    ts_event=last.ts_event,
                    ts_init=self.now,
                    tick_id=last.tick_id,
                    position_id=pid,
                    index=tracker.index_key,
                    security_id=first.security_id,
                    quantity=n.quantity,
                    entry_price_paise=entry,
                    exit_price_paise=n.exit_price_paise,
                    exit_tick_id=last.tick_id,
                    ts_exit=last.ts_event,
                    reason=first.reason,
                    pnl_paise=n.pnl_paise,
                    charges_paise=n.charges_paise,
                ),
            )
        )
        self.trackers.pop(pid)
        return f"; position {pid} closed ({first.reason})"

    def _summary(
        self, intent_id: str, rows: list[OrderRow], filled: int, quantity: int, events: list[Emit]
    ) -> str:
        """A sliced intent that did not fill completely: one event under its own id (appended
        last to ``events``; the executor's ``_summary``)."""
        if rows[0].slice_no == 0 or filled >= quantity or all(r.status == "dry_run" for r in rows):
            return ""
        outcomes = "; ".join(
            f"slice {r.slice_no} {r.status}"
            + (f" ({r.reason})" if r.status != "traded" and r.reason else "")
            for r in rows
        )
        reason = f"{filled} of {quantity} filled over {len(rows)} slices: {outcomes}"
        first = rows[0]
        base: dict[str, Any] = dict(
            ts_event=first.ts_intent,
            ts_init=self.now,
            tick_id=first.intent_tick_id,
            correlation_id=intent_id,
            position_id=first.position_id,
            kind=first.kind,
            security_id=first.security_id,
            reason=reason,
        )
        refused = any(r.status == "rejected" for r in rows)
        cls, prefix = (OrderRejected, "rej") if refused else (OrderCancelled, "cxl")
        msg = cls(msg_id=make_msg_id(prefix, intent_id), **base)
        events.append(Emit(stream="orders.events", msg=msg))
        return f"; intent {intent_id}: {reason}"
