"""Pure reconciliation: compare the books with the broker's reports; list differences and actions.

No I/O. The shell reads the broker's four reports (order book first, then trade book, positions,
funds) and *then* the books, and passes both here with the pass's wall time and tick marker.
Reading the books last means every broker position was built by orders the books already show
(the executor writes an order row before it sends the order).

Live rules (:func:`reconcile_live`), in this order:

0. **A failed or missing report is never read as flat.** If any report is missing, or the reports
   contradict each other (trade book net quantity of an instrument differs from the positions'
   day net), or the broker shows nothing at all while the books hold open positions, the pass
   fails: no action, one ``broker_report_failed`` difference, ``ok`` false.
1. **Orders.** An order open in the books (``submitting`` .. ``part_traded``) whose last change is
   older than ``rules.order_grace_s`` and which is final at the broker is settled the way the
   executor settles it (same fill id and msg_ids, so a late executor duplicates nothing):
   TRADED → traded, fill recorded, entry tracker activated / exit tracker closed (or reduced),
   ``OrderFilled`` + ``PositionOpened``/``PositionClosed``; REJECTED → ``OrderRejected``;
   CANCELLED / EXPIRED → ``OrderCancelled`` (plus the fill if partly traded); an entry that did
   not trade cancels its pending tracker. A fill missed while the order-update socket was down
   is exactly this case. Younger orders are the executor's (it may be waiting on them).
2. **Positions**, per instrument, on the books as they will be after step 1, skipping any
   instrument with an order still in flight (non-final in the books or at the broker) or settled
   in this pass (the next pass sees it settled):
   - a broker LONG option position with no tracker is adopted (``external`` tracker, entry at the
     broker's buy average, ``PositionOpened(external=True)`` and a ``FeedSubscribe``);
   - an active tracker whose instrument the broker shows flat or absent is closed with the
     reason ``closed outside``, at the trade book's sell price when known (else the broker's sell
     average, else the entry price), ``PositionClosed``;
   - a quantity that differs from the broker's net quantity is set to the broker's
     (``PositionAdjusted``); with several trackers on one instrument the newest absorbs it;
   - a SHORT broker position (this engine only buys) is reported for a human, no action.

Each :class:`Action` is a list of ledger :data:`Change`\\ s and the events to publish, applied by
the shell in one transaction with the events in the outbox. Paper mode keeps
:func:`reconcile_paper` (the books' internal consistency). Prices in paise, times UTC ns.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from services.sync.model import (
    Action,
    ActivateTracker,
    Books,
    BrokerFunds,
    BrokerOrder,
    BrokerPosition,
    BrokerReports,
    BrokerTrade,
    CancelTracker,
    Change,
    CloseTracker,
    Difference,
    Emit,
    MoveOrder,
    OpenTracker,
    RecordFill,
    SetQuantity,
    SyncResult,
    SyncRules,
)
from shared.calendar import is_trading_day as _calendar_trading_day
from shared.charges import charges_for_round_trip
from shared.clock import IST, hhmm_to_minutes, ist_datetime, ist_day, ist_to_ns
from shared.messages import (
    FeedSubscribe,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    PositionAdjusted,
    PositionClosed,
    PositionOpened,
    make_msg_id,
)
from shared.store.rows import ORDER_TRANSITIONS, OrderRow, TrackerRow
from shared.types import NS_PER_S, paise_to_rupees_str

__all__ = [
    "Action", "Books", "BrokerFunds", "BrokerOrder", "BrokerPosition", "BrokerReports",
    "BrokerTrade", "Difference", "MarketHours", "SyncResult", "SyncRules", "market_hours",
    "reconcile_live", "reconcile_paper",
]  # fmt: skip

MARKET_OPEN_HHMM = "09:15"
MARKET_CLOSE_HHMM = "15:30"
CLOSED_OUTSIDE = "closed outside"
OPTION_SEGMENTS = frozenset({"NSE_FNO", "BSE_FNO"})
RECONCILABLE = frozenset({"submitting", "in_doubt", "transit", "pending", "part_traded"})
"""Book statuses an order may be settled from (``new`` was never sent; the rest are final)."""
BROKER_FINAL = {"TRADED": "traded", "REJECTED": "rejected", "CANCELLED": "cancelled",
                "EXPIRED": "expired"}
OPTION_TYPES = {"CALL": "CE", "PUT": "PE", "CE": "CE", "PE": "PE"}

Key = tuple[str, int]  # (segment, security_id)


# --------------------------------------------------------------------------- market hours


class MarketHours(msgspec.Struct, frozen=True, kw_only=True):
    open: bool
    state: str  # "open", "outside market hours" or "not a trading day"
    reason: str
    seconds_to_open: float = 0.0


def market_hours(
    now_ns: int, is_trading_day: Callable[[dt.date], bool] = _calendar_trading_day
) -> MarketHours:
    """Whether ``now_ns`` (wall time) is within IST 09:15–15:30 of a trading day, and if not,
    how long until the next opening."""
    local = ist_datetime(now_ns)
    minute, day = local.hour * 60 + local.minute, local.date()
    open_min, close_min = hhmm_to_minutes(MARKET_OPEN_HHMM), hhmm_to_minutes(MARKET_CLOSE_HHMM)
    shown = f"IST {local:%Y-%m-%d %H:%M} ({local:%A})"
    trading = is_trading_day(day)
    if trading and open_min <= minute < close_min:
        return MarketHours(open=True, state="open", reason=f"market open: {shown}")
    nxt: dt.date | None = day if trading and minute < open_min else None
    probe = day
    while nxt is None and probe < day + dt.timedelta(days=15):
        probe += dt.timedelta(days=1)
        nxt = probe if is_trading_day(probe) else None
    wait_s = (ist_to_ns(nxt, MARKET_OPEN_HHMM) - now_ns) / NS_PER_S if nxt else 3600.0
    why = "outside market hours" if trading else "not a trading day"
    reason = f"{why}: {shown}; sync runs {MARKET_OPEN_HHMM}-{MARKET_CLOSE_HHMM} IST"
    return MarketHours(
        open=False,
        state=why,
        reason=reason + (f", next at {nxt} {MARKET_OPEN_HHMM}" if nxt else ""),
        seconds_to_open=max(wait_s, 0.0),
    )


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


def _rupees(paise: int) -> str:
    return "₹" + paise_to_rupees_str(paise)


def _vwap(trades: Iterable[BrokerTrade]) -> tuple[int, int]:
    """(quantity, volume-weighted price in paise rounded half up) of ``trades``."""
    qty = value = 0
    for t in trades:
        qty += t.quantity
        value += t.quantity * t.price_paise
    return qty, ((2 * value + qty) // (2 * qty) if qty else 0)


def _charges(segment: str, ts_exit: int, entry_paise: int, exit_paise: int, qty: int) -> int:
    return charges_for_round_trip(
        segment, ist_day(ts_exit), entry_paise * qty, exit_paise * qty
    ).total_rounded_paise


def _index_of(symbol: str) -> str:
    """``NIFTY-Dec2026-26000-CE`` -> ``NIFTY`` (DhanHQ trading symbols lead with the index)."""
    return symbol.split("-", 1)[0].split(" ", 1)[0].upper() or "UNKNOWN"


def _age_s(order: OrderRow, now_ns: int) -> float:
    return now_ns / NS_PER_S - order.updated_at.timestamp()


def _failed(why: list[str], info: dict[str, Any]) -> SyncResult:
    detail = "; ".join(why) + " — nothing changed (a missing report is never read as flat)"
    return SyncResult(
        differences=[Difference(kind="broker_report_failed", detail=detail)],
        actions=[], failures=list(why), info=info,
    )  # fmt: skip


def _disagreements(positions: Sequence[BrokerPosition], trades: Sequence[BrokerTrade]) -> list[str]:
    """Instruments whose trade-book net quantity differs from the positions' day net."""
    by_trades: dict[Key, int] = {}
    for t in trades:
        k = (t.segment, t.security_id)
        by_trades[k] = by_trades.get(k, 0) + (t.quantity if t.side == "BUY" else -t.quantity)
    by_positions: dict[Key, int] = {}
    for p in positions:
        k = (p.segment, p.security_id)
        by_positions[k] = by_positions.get(k, 0) + p.day_buy_qty - p.day_sell_qty
    return [
        f"{seg}:{sid} trade book net {by_trades.get((seg, sid), 0):+d} vs positions day net "
        f"{by_positions.get((seg, sid), 0):+d}"
        for seg, sid in sorted(set(by_trades) | set(by_positions))
        if by_trades.get((seg, sid), 0) != by_positions.get((seg, sid), 0)
    ]


# --------------------------------------------------------------------------- live rules


def reconcile_live(
    books: Books,
    broker: BrokerReports,
    *,
    now_ns: int,
    tick_id: str,
    rules: SyncRules | None = None,
) -> SyncResult:
    """Differences between ``books`` and ``broker`` and the actions that resolve them.

    ``now_ns`` is the pass's wall time (grace ages, ``ts_init``, fallback event times);
    ``tick_id`` the latest ``ticks`` entry, stamped on what this pass opens or closes.
    """
    rules = rules or SyncRules()
    info: dict[str, Any] = {}
    if broker.funds is not None:
        info["funds_available_paise"] = broker.funds.available_paise
    missing = [name for name, rep in (("order book", broker.orders), ("trade book", broker.trades),
                                      ("positions", broker.positions), ("funds", broker.funds))
               if rep is None]  # fmt: skip
    if broker.failures or missing:
        return _failed(broker.failures or [f"{m} missing" for m in missing], info)
    assert broker.positions is not None and broker.orders is not None and broker.trades is not None
    positions, orders, trades = broker.positions, broker.orders, broker.trades
    contradictions = _disagreements(positions, trades)
    if contradictions:
        return _failed([f"broker reports disagree: {c}" for c in contradictions], info)
    active = [t for t in books.trackers if t.status == "active"]
    if active and not positions and not orders and not trades:
        return _failed([f"broker shows no position, order or trade at all while the books hold "
                        f"{len(active)} open position(s)"], info)  # fmt: skip
    return _Pass(books, positions, orders, trades, now_ns, tick_id, rules, info).run()


class _Pass:
    """One reconciliation: order rules, then position rules on the projected books."""

    def __init__(self, books: Books, positions: list[BrokerPosition], orders: list[BrokerOrder],
                 trades: list[BrokerTrade], now_ns: int, tick_id: str, rules: SyncRules,
                 info: dict[str, Any]) -> None:  # fmt: skip
        self.books, self.positions, self.orders, self.trades = books, positions, orders, trades
        self.now, self.tick_id, self.rules, self.info = now_ns, tick_id, rules, info
        self.diffs: list[Difference] = []
        self.actions: list[Action] = []
        self.trackers = {t.position_id: t for t in books.trackers}
        self.in_flight: set[Key] = set()
        self.touched: set[Key] = set()

    def run(self) -> SyncResult:
        for o in self.orders:
            if o.status.upper() not in BROKER_FINAL:
                self.in_flight.add((o.segment, o.security_id))
        for order in self.books.open_orders:
            self._order(order)
        self._positions()
        return SyncResult(differences=self.diffs, actions=self.actions, info=self.info)

    # -- orders ----------------------------------------------------------------------------

    def _broker_order(self, order: OrderRow) -> BrokerOrder | None:
        same = [o for o in self.orders if order.broker_order_id and o.order_id == order.broker_order_id]
        same = same or [o for o in self.orders if o.correlation_id == order.correlation_id]
        return max(same, key=lambda o: (o.time, o.order_id)) if same else None

    def _order(self, order: OrderRow) -> None:
        key = (order.segment, order.security_id)
        b = self._broker_order(order) if order.status in RECONCILABLE else None
        if (order.status not in RECONCILABLE or _age_s(order, self.now) < self.rules.order_grace_s
                or (b is not None and b.status.upper() not in BROKER_FINAL)):  # fmt: skip
            self.in_flight.add(key)  # the executor's (new, young, or still open at the broker)
            return
        if b is None:
            self.in_flight.add(key)
            self.diffs.append(Difference(
                kind="order_unknown_at_broker", correlation_id=order.correlation_id,
                position_id=order.position_id, security_id=order.security_id,
                detail=f"order {order.correlation_id} is {order.status} in the books "
                       f"({_age_s(order, self.now):.0f}s since its last change) but the broker's "
                       "order book has no such order: left for the executor or a human"))
            return
        action, why = self._settle(order, b)
        self.touched.add(key)
        self.diffs.append(Difference(
            kind="order_final_at_broker", correlation_id=order.correlation_id,
            position_id=order.position_id, security_id=order.security_id,
            detail=action.reason if action else why, resolved=action is not None))
        if action is not None:
            self.actions.append(action)

    def _settle(self, order: OrderRow, b: BrokerOrder) -> tuple[Action | None, str]:
        """The action settling ``order`` as the broker's final ``b`` says (or None and why)."""
        broker_status = b.status.upper()
        cid, pid, tracker = order.correlation_id, order.position_id, self.trackers.get(order.position_id)
        words = (f"order {cid} ({order.kind} {order.side} {order.quantity} of {order.symbol}) is "
                 f"{order.status} in the books but {broker_status} at the broker (order "
                 f"{b.order_id})")  # fmt: skip
        target = BROKER_FINAL[broker_status]
        allowed = ORDER_TRANSITIONS.get(order.status, frozenset())
        if target not in allowed:  # e.g. part_traded -> rejected, submitting -> expired
            if target == "traded" or "cancelled" not in allowed:
                return None, f"{words}: the books cannot move {order.status} -> {target}"
            target = "cancelled"
        filled = b.filled_qty or (order.quantity if broker_status == "TRADED" else 0)
        price = b.avg_price_paise or _vwap(t for t in self.trades if t.order_id == b.order_id)[1]
        if filled and not price:
            return None, f"{words}: no traded price in the order or trade book"
        ts = ist_text_to_ns(b.time) or self.now
        base: dict[str, Any] = dict(ts_event=ts, ts_init=self.now, tick_id=self.tick_id, correlation_id=cid,
                    position_id=pid, kind=order.kind, security_id=order.security_id)
        if target == "rejected":  # the executor's wording
            reason = f"broker rejected: {b.reason or 'no reason given'}"
        else:
            reason = f"broker status {broker_status}: {b.reason}"
        changes: list[Change] = [MoveOrder(
            correlation_id=cid, from_status=order.status, status=target, broker_order_id=b.order_id,
            filled_qty=filled, avg_price_paise=price if filled else 0,
            reason=(order.reason if target == "traded" else reason)[:500])]
        events: list[Emit] = []
        if filled:
            words += f": fill of {filled} @ {_rupees(price)} recorded"
            changes.append(RecordFill(
                fill_id=f"F-{cid}", correlation_id=cid, broker_order_id=b.order_id, side=order.side,
                quantity=filled, price_paise=price, ts_event=ts, tick_id=self.tick_id))
            events.append(Emit(stream="orders.events", msg=OrderFilled(
                msg_id=make_msg_id("fill", cid), **base, broker_order_id=b.order_id,
                side=order.side,  # type: ignore[arg-type]
                quantity=filled, price_paise=price, fill_tick_id=self.tick_id)))
            words += self._fill_tracker(order, tracker, filled, price, ts, changes, events)
        if target != "traded":
            cls, prefix = (OrderRejected, "rej") if target == "rejected" else (OrderCancelled, "cxl")
            events.append(Emit(stream="orders.events",
                               msg=cls(msg_id=make_msg_id(prefix, cid), **base, reason=reason)))
            words += f"; order {target} ({reason})"
            if not filled and order.kind == "entry" and tracker is not None and tracker.status == "pending":
                changes.append(CancelTracker(position_id=pid, reason=reason[:200]))
                self.trackers.pop(pid)
                words += f"; pending position {pid} cancelled"
        action = Action(kind="settle_order", reason=words, changes=changes, events=events,
                        position_id=pid, correlation_id=cid, security_id=order.security_id)
        return action, words

    def _fill_tracker(self, order: OrderRow, tracker: TrackerRow | None, filled: int, price: int,
                      ts: int, changes: list[Change], events: list[Emit]) -> str:  # fmt: skip
        """The tracker side of a fill (entry activates, exit closes or reduces); the words."""
        pid = order.position_id
        if order.kind == "entry":
            if tracker is None or tracker.status != "pending":
                return f"; tracker {pid} is {tracker.status if tracker else 'missing'}, left as is"
            changes.append(ActivateTracker(position_id=pid, entry_price_paise=price, quantity=filled,
                                           entry_tick_id=self.tick_id, ts_entry=ts))
            events.append(Emit(stream="positions", msg=PositionOpened(
                msg_id=make_msg_id("open", pid), ts_event=ts, ts_init=self.now, tick_id=self.tick_id,
                position_id=pid, index=tracker.index_key, segment=order.segment,
                security_id=order.security_id, symbol=order.symbol, quantity=filled,
                entry_price_paise=price, entry_tick_id=self.tick_id, ts_entry=ts,
                lot_size=int(order.payload.get("lot_size", 0) or 0))))
            self.trackers[pid] = msgspec.structs.replace(
                tracker, status="active", quantity=filled, entry_price_paise=price, ts_entry=ts)
            return f"; position {pid} opened"
        if tracker is None or tracker.status != "active":
            return f"; tracker {pid} is {tracker.status if tracker else 'missing'}, left as is"
        entry = tracker.entry_price_paise or 0
        if filled < tracker.quantity:
            left = tracker.quantity - filled
            changes.append(SetQuantity(position_id=pid, from_quantity=tracker.quantity, quantity=left))
            events.append(Emit(stream="positions", msg=PositionAdjusted(
                msg_id=make_msg_id("adj", pid, order.correlation_id, left), ts_event=ts,
                ts_init=self.now, tick_id=self.tick_id, position_id=pid,
                security_id=order.security_id, quantity=left,
                reason=f"exit {order.correlation_id} filled {filled} of {tracker.quantity}")))
            self.trackers[pid] = msgspec.structs.replace(tracker, quantity=left)
            return f"; position {pid} reduced to {left}"
        qty = tracker.quantity
        pnl = (price - entry) * qty
        charges = _charges(order.segment, ts, entry, price, qty)
        changes.append(CloseTracker(position_id=pid, exit_price_paise=price, exit_tick_id=self.tick_id,
                                    ts_exit=ts, reason=order.reason, pnl_paise=pnl,
                                    charges_paise=charges))
        events.append(Emit(stream="positions", msg=PositionClosed(
            msg_id=make_msg_id("close", pid), ts_event=ts, ts_init=self.now, tick_id=self.tick_id,
            position_id=pid, index=tracker.index_key, security_id=order.security_id, quantity=qty,
            entry_price_paise=entry, exit_price_paise=price, exit_tick_id=self.tick_id, ts_exit=ts,
            reason=order.reason, pnl_paise=pnl, charges_paise=charges)))
        self.trackers.pop(pid)
        return f"; position {pid} closed ({order.reason})"

    # -- positions -------------------------------------------------------------------------

    def _positions(self) -> None:
        broker: dict[Key, list[BrokerPosition]] = {}
        for p in self.positions:
            broker.setdefault((p.segment, p.security_id), []).append(p)
        ours: dict[Key, list[TrackerRow]] = {}
        for t in self.trackers.values():
            if t.status == "active":
                ours.setdefault((t.segment, t.security_id), []).append(t)
        for key in sorted(set(broker) | set(ours)):
            if key in self.in_flight or key in self.touched:
                continue
            rows, trackers = broker.get(key, []), ours.get(key, [])
            net = sum(p.net_qty for p in rows)
            held = sum(t.quantity for t in trackers)
            if net < 0:
                self.diffs.append(Difference(
                    kind="short_position", security_id=key[1],
                    detail=f"broker is short {-net} of {rows[0].symbol} ({key[0]}:{key[1]}); this "
                           "engine only buys: left for a human"))  # fmt: skip
            if net > 0 and not trackers:
                if key[0] in OPTION_SEGMENTS and rows[0].option_type in OPTION_TYPES:
                    self._adopt(key, rows, net)
            elif net <= 0 and trackers:
                seen = "shows the position closed" if rows else "has no such position"
                for t in trackers:
                    self._close_outside(t, rows, seen)
            elif net > 0 and held != net:
                self._adjust(rows, trackers, net, held)

    def _buy_trades(self, key: Key) -> list[BrokerTrade]:
        return [t for t in self.trades if (t.segment, t.security_id) == key and t.side == "BUY"]

    def _adopt(self, key: Key, rows: list[BrokerPosition], net: int) -> None:
        seg, sid = key
        p = rows[0]
        buys = self._buy_trades(key)
        pid = make_msg_id("ext", seg, sid, ist_day(self.now), *sorted({t.order_id for t in buys}))
        price = p.buy_avg_paise or _vwap(buys)[1]
        ts = max((ist_text_to_ns(t.time) or 0 for t in buys), default=0) or self.now
        option_type = OPTION_TYPES[p.option_type]
        reason = (f"broker holds {net} of {p.symbol} ({seg}:{sid}) at a buy average of "
                  f"{_rupees(price)} and the books have no open position: adopted as external "
                  f"position {pid}")  # fmt: skip
        meta = {"synced_from": "dhan", "reason": reason, "product_type": p.product_type,
                "broker_order_ids": sorted({t.order_id for t in buys})}
        change = OpenTracker(position_id=pid, index_key=_index_of(p.symbol), segment=seg,
                             security_id=sid, symbol=p.symbol, option_type=option_type,
                             quantity=net, entry_price_paise=price, entry_tick_id=self.tick_id,
                             ts_entry=ts, meta=meta)  # fmt: skip
        events = [
            Emit(stream="positions", msg=PositionOpened(
                msg_id=make_msg_id("open", pid), ts_event=ts, ts_init=self.now,
                tick_id=self.tick_id, position_id=pid, index=change.index_key, segment=seg,
                security_id=sid, symbol=p.symbol, quantity=net, entry_price_paise=price,
                entry_tick_id=self.tick_id, ts_entry=ts, external=True)),
            Emit(stream="feed.control", msg=FeedSubscribe(
                msg_id=make_msg_id("sub", "sync", pid), ts_event=ts, ts_init=self.now,
                tick_id=self.tick_id, segment=seg, security_ids=[sid], requester="sync")),
        ]  # fmt: skip
        self.actions.append(Action(kind="adopt_position", reason=reason, changes=[change],
                                   events=events, position_id=pid, security_id=sid))
        self.diffs.append(Difference(kind="untracked_broker_position", position_id=pid,
                                     security_id=sid, detail=reason, resolved=True))

    def _exit_price(self, t: TrackerRow, rows: list[BrokerPosition]) -> tuple[int, int, str]:
        """(price, ts, source): the latest sells after the entry covering the quantity."""
        key = (t.segment, t.security_id)
        sells = [s for s in self.trades if (s.segment, s.security_id) == key and s.side == "SELL"]
        after = [s for s in sells if (ist_text_to_ns(s.time) or 0) >= (t.ts_entry or 0)] or sells
        after.sort(key=lambda s: (s.time, s.trade_id), reverse=True)
        chosen, qty = [], 0
        for s in after:
            if qty >= t.quantity:
                break
            chosen.append(s)
            qty += s.quantity
        if chosen:
            ts = max(ist_text_to_ns(s.time) or 0 for s in chosen) or self.now
            ids = ", ".join(s.trade_id for s in chosen)
            return _vwap(chosen)[1], ts, f"trade book (trade {ids})"
        sell_avg = next((p.sell_avg_paise for p in rows if p.sell_avg_paise), 0)
        if sell_avg:
            return sell_avg, self.now, "the broker's sell average (no sell in the trade book)"
        return (t.entry_price_paise or 0), self.now, "exit price unknown: entry price used, PnL 0"

    def _close_outside(self, t: TrackerRow, rows: list[BrokerPosition], seen: str) -> None:
        price, ts, source = self._exit_price(t, rows)
        entry = t.entry_price_paise or 0
        pnl = (price - entry) * t.quantity
        charges = _charges(t.segment, ts, entry, price, t.quantity)
        reason = (f"books hold {t.quantity} of {t.symbol} ({t.segment}:{t.security_id}) in position "
                  f"{t.position_id} but the broker {seen}: {CLOSED_OUTSIDE} at {_rupees(price)} "
                  f"from {source}")  # fmt: skip
        close = CloseTracker(position_id=t.position_id, exit_price_paise=price,
                             exit_tick_id=self.tick_id, ts_exit=ts, reason=CLOSED_OUTSIDE,
                             pnl_paise=pnl, charges_paise=charges)  # fmt: skip
        event = PositionClosed(
            msg_id=make_msg_id("close", t.position_id), ts_event=ts, ts_init=self.now,
            tick_id=self.tick_id, position_id=t.position_id, index=t.index_key,
            security_id=t.security_id, quantity=t.quantity, entry_price_paise=entry,
            exit_price_paise=price, exit_tick_id=self.tick_id, ts_exit=ts, reason=CLOSED_OUTSIDE,
            pnl_paise=pnl, charges_paise=charges)  # fmt: skip
        self.actions.append(Action(kind="close_outside", reason=reason, changes=[close],
                                   events=[Emit(stream="positions", msg=event)],
                                   position_id=t.position_id, security_id=t.security_id))
        self.diffs.append(Difference(kind="tracker_without_broker_position",
                                     position_id=t.position_id, security_id=t.security_id,
                                     detail=reason, resolved=True))

    def _adjust(self, rows: list[BrokerPosition], trackers: list[TrackerRow], net: int,
                held: int) -> None:  # fmt: skip
        """Bring the trackers' total to the broker's ``net``: the newest absorbs an increase;
        a decrease is taken from the newest first (a tracker taken to zero is closed)."""
        excess = held - net
        for t in sorted(trackers, key=lambda t: (t.ts_entry or 0, t.position_id), reverse=True):
            if excess == 0:
                return
            take = min(excess, t.quantity)
            if take == t.quantity:
                self._close_outside(t, rows, f"holds {net} in all, less than the books' {held}")
                excess -= take
                continue
            new_qty = t.quantity - excess
            reason = (f"books hold {held} of {t.symbol} ({t.segment}:{t.security_id}), the broker "
                      f"{net}: position {t.position_id} set from {t.quantity} to {new_qty}")
            event = PositionAdjusted(
                msg_id=make_msg_id("adj", t.position_id, t.quantity, new_qty), ts_event=self.now,
                ts_init=self.now, tick_id=self.tick_id, position_id=t.position_id,
                security_id=t.security_id, quantity=new_qty, reason=reason[:300])  # fmt: skip
            self.actions.append(Action(
                kind="adjust_quantity", reason=reason,
                changes=[SetQuantity(position_id=t.position_id, from_quantity=t.quantity,
                                     quantity=new_qty)],
                events=[Emit(stream="positions", msg=event)], position_id=t.position_id,
                security_id=t.security_id))  # fmt: skip
            self.diffs.append(Difference(kind="quantity_mismatch", position_id=t.position_id,
                                         security_id=t.security_id, detail=reason, resolved=True))
            return


# --------------------------------------------------------------------------- paper


def reconcile_paper(
    active_trackers: Sequence[Any], orders_by_position: Mapping[str, Sequence[Any]]
) -> SyncResult:
    """Paper mode: the ledger is the broker, so check the books' internal consistency."""
    diffs: list[Difference] = []
    for t in active_trackers:
        orders = orders_by_position.get(t.position_id, [])
        entries = [o for o in orders if o.kind == "entry" and o.status == "traded"]
        exits = [o for o in orders if o.kind == "exit" and o.status == "traded"]
        if not entries and not t.external:
            diffs.append(Difference(kind="active_without_entry_fill", position_id=t.position_id,
                                    detail="active tracker has no traded entry order"))
        if exits:
            diffs.append(Difference(kind="active_with_exit_fill", position_id=t.position_id,
                                    correlation_id=exits[0].correlation_id,
                                    detail="tracker still active although its exit order traded"))
        filled = sum(o.filled_qty for o in entries)
        if entries and filled != t.quantity:
            diffs.append(Difference(kind="quantity_mismatch", position_id=t.position_id,
                                    detail=f"tracker {t.quantity} vs filled {filled}"))
    return SyncResult(differences=diffs, actions=[])
