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
1. **Orders** (:mod:`services.sync.settle`). An order open in the books (``submitting`` ..
   ``part_traded``) whose last change is older than ``rules.order_grace_s`` and which is final at
   the broker is settled the way the executor settles it (same fill ids and msg_ids, so a late
   executor duplicates nothing): the order moves to the broker's status with its event, the fill
   recorded is only the quantity its fill rows lack (partial fills the executor recorded before
   it died are not counted twice), and once every order of the intent (every freeze-limit slice
   ``<cid>-N``) is final, the position follows from all their fills: an entry opens (nothing
   filled cancels its pending tracker), an exit closes or reduces the position,
   ``OrderFilled`` + ``PositionOpened``/``PositionClosed``/``PositionAdjusted``. A fill missed
   while the order-update socket was down is exactly this case. Younger orders are the
   executor's (it may be waiting on them).
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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from services.sync.model import (
    Action,
    Books,
    BrokerFunds,
    BrokerOrder,
    BrokerPosition,
    BrokerReports,
    BrokerTrade,
    CloseTracker,
    Difference,
    Emit,
    OpenTracker,
    SetQuantity,
    SyncResult,
    SyncRules,
)
from services.sync.settle import Key, OrderRule, ist_text_to_ns, vwap
from services.sync.settle import rupees as _rupees
from shared.calendar import is_trading_day as _calendar_trading_day
from shared.charges import charges_for_round_trip
from shared.clock import hhmm_to_minutes, ist_datetime, ist_day, ist_to_ns
from shared.messages import (
    FeedSubscribe,
    PositionAdjusted,
    PositionClosed,
    PositionOpened,
    make_msg_id,
)
from shared.store.rows import TrackerRow
from shared.types import NS_PER_S

__all__ = [
    "Action", "Books", "BrokerFunds", "BrokerOrder", "BrokerPosition", "BrokerReports",
    "BrokerTrade", "Difference", "MarketHours", "SyncResult", "SyncRules", "ist_text_to_ns",
    "market_hours", "reconcile_live", "reconcile_paper",
]  # fmt: skip

MARKET_OPEN_HHMM = "09:15"
MARKET_CLOSE_HHMM = "15:30"
CLOSED_OUTSIDE = "closed outside"
OPTION_SEGMENTS = frozenset({"NSE_FNO", "BSE_FNO"})
OPTION_TYPES = {"CALL": "CE", "PUT": "PE", "CE": "CE", "PE": "PE"}


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


def _charges(segment: str, ts_exit: int, entry_paise: int, exit_paise: int, qty: int) -> int:
    return charges_for_round_trip(
        segment, ist_day(ts_exit), entry_paise * qty, exit_paise * qty
    ).total_rounded_paise


def _index_of(symbol: str) -> str:
    """``NIFTY-Dec2026-26000-CE`` -> ``NIFTY`` (DhanHQ trading symbols lead with the index)."""
    return symbol.split("-", 1)[0].split(" ", 1)[0].upper() or "UNKNOWN"


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
        orders = OrderRule(self.books, self.orders, self.trades, self.now, self.tick_id,
                           self.rules, self.trackers).run()  # fmt: skip
        self.diffs.extend(orders.diffs)
        self.actions.extend(orders.actions)
        self.in_flight, self.touched = orders.in_flight, orders.touched
        self._positions()
        return SyncResult(differences=self.diffs, actions=self.actions, info=self.info)

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
        price = p.buy_avg_paise or vwap(buys)[1]
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
            return vwap(chosen)[1], ts, f"trade book (trade {ids})"
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
