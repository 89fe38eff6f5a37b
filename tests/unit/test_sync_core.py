"""The sync core's rules, one by one, on hand-built books and broker reports (no servers)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest

from services.sync import core
from services.sync.model import (
    ActivateTracker,
    Books,
    BrokerFunds,
    BrokerOrder,
    BrokerPosition,
    BrokerReports,
    BrokerTrade,
    CancelTracker,
    CloseTracker,
    MoveOrder,
    OpenTracker,
    RecordFill,
    SetQuantity,
    SyncResult,
)
from shared import streamids
from shared.clock import ist_to_ns
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
from shared.store.rows import FillRow, OrderRow, TrackerRow

DAY = dt.date(2026, 12, 1)  # a Tuesday
NOW = ist_to_ns(DAY, "10:00")
NOW_DT = dt.datetime.fromtimestamp(NOW / 1e9, tz=dt.UTC)
TICK = "1796097780412-0"
SEG, SID, SYM = "NSE_FNO", 52000, "NIFTY-Dec2026-26000-CE"
OTHER_SID, OTHER_SYM = 52001, "NIFTY-Dec2026-26000-PE"
LOT = 65


def tracker(pid: str = "P1", *, status: str = "active", qty: int = LOT, sid: int = SID,
            entry: int | None = 10_000, ts_entry: int | None = None, external: bool = False) -> TrackerRow:
    active = status in ("active", "exited")
    return TrackerRow(
        position_id=pid, index_key="NIFTY", segment=SEG, security_id=sid, symbol=SYM,
        option_type="CE", status=status, quantity=qty,  # type: ignore[arg-type]
        entry_price_paise=entry if active else None, exit_price_paise=None,
        entry_tick_id=TICK if active else None, entry_tick_key=1 if active else None,
        exit_tick_id=None, exit_tick_key=None,
        ts_entry=(ts_entry if ts_entry is not None else ist_to_ns(DAY, "09:30")) if active else None,
        ts_exit=None, exit_reason=None, pnl_paise=None, charges_paise=None, hwm_pnl_paise=0,
        trailing_state={}, external=external, paper=False, signal_id="", meta={},
        created_at=NOW_DT, updated_at=NOW_DT,
    )  # fmt: skip


def order(cid: str = "E-1", *, kind: str = "entry", status: str = "transit", qty: int = LOT,
          pid: str = "P1", age_s: float = 600, broker_order_id: str | None = "OID1",
          reason: str = "", sid: int = SID) -> OrderRow:
    return OrderRow(
        correlation_id=cid, intent_msg_id=f"intent-{cid}", position_id=pid, kind=kind,
        side="BUY" if kind == "entry" else "SELL", segment=SEG, security_id=sid, symbol=SYM,
        quantity=qty, order_type="MARKET", limit_price_paise=0,
        status=status,  # type: ignore[arg-type]
        broker_order_id=broker_order_id, filled_qty=0, avg_price_paise=0, reason=reason,
        ts_intent=NOW, intent_tick_id=TICK, intent_tick_key=1, payload={"lot_size": LOT},
        created_at=NOW_DT - dt.timedelta(seconds=age_s), updated_at=NOW_DT - dt.timedelta(seconds=age_s),
    )  # fmt: skip


def bpos(net: int, *, buy: int | None = None, sell: int = 0, buy_avg: int = 10_000,
         sell_avg: int = 0, sid: int = SID, symbol: str = SYM, segment: str = SEG,
         option: str = "CE") -> BrokerPosition:
    buy = net + sell if buy is None else buy
    return BrokerPosition(segment=segment, security_id=sid, symbol=symbol, option_type=option,
                          product_type="INTRADAY", net_qty=net, buy_avg_paise=buy_avg,
                          sell_avg_paise=sell_avg, day_buy_qty=buy, day_sell_qty=sell)


def border(oid: str = "OID1", cid: str = "E-1", *, status: str = "TRADED", side: str = "BUY",
           qty: int = LOT, filled: int | None = None, avg: int = 10_500, sid: int = SID,
           time: str = "2026-12-01 09:58:00", reason: str = "") -> BrokerOrder:
    if filled is None:
        filled = qty if status == "TRADED" else 0
    return BrokerOrder(order_id=oid, correlation_id=cid, status=status, side=side, segment=SEG,
                       security_id=sid, quantity=qty, filled_qty=filled,
                       avg_price_paise=avg if filled else 0, reason=reason, time=time)


def btrade(oid: str = "OID1", tid: str = "T1", *, side: str = "BUY", qty: int = LOT,
           price: int = 10_500, sid: int = SID, time: str = "2026-12-01 09:58:00") -> BrokerTrade:
    return BrokerTrade(order_id=oid, trade_id=tid, side=side, segment=SEG, security_id=sid,
                       quantity=qty, price_paise=price, time=time)


def reports(positions: list[BrokerPosition] | None = None, orders: list[BrokerOrder] | None = None,
            trades: list[BrokerTrade] | None = None, **kw: Any) -> BrokerReports:
    return BrokerReports(positions=positions if positions is not None else [],
                         orders=orders if orders is not None else [],
                         trades=trades if trades is not None else [],
                         funds=kw.pop("funds", BrokerFunds(available_paise=100_000_00)), **kw)


def fill_row(cid: str, qty: int, price: int, fill_id: str = "", *, tick: str = "1796097700000-0",
             hhmm: str = "09:50") -> FillRow:
    """A fill row as the executor writes it (``F-<cid>-<cumulative qty>`` for a part)."""
    return FillRow(fill_id=fill_id or f"F-{cid}", correlation_id=cid, broker_order_id="OID1",
                   side="BUY" if cid.startswith("E") else "SELL", quantity=qty, price_paise=price,
                   ts_event=ist_to_ns(DAY, hhmm), tick_id=tick, tick_key=streamids.key(tick),
                   created_at=NOW_DT)  # fmt: skip


def sliced(o: OrderRow, parent: str, slice_no: int) -> OrderRow:
    return msgspec.structs.replace(o, parent_id=parent, slice_no=slice_no)


def filled(o: OrderRow, qty: int, avg: int) -> OrderRow:
    return msgspec.structs.replace(o, filled_qty=qty, avg_price_paise=avg)


def run(trackers: list[TrackerRow] = (), open_orders: list[OrderRow] = (),  # type: ignore[assignment]
        broker: BrokerReports | None = None, now: int = NOW, *,
        orders: list[OrderRow] = (), fills: list[FillRow] = ()) -> SyncResult:  # type: ignore[assignment]
    by_order: dict[str, list[FillRow]] = {}
    for f in fills:
        by_order.setdefault(f.correlation_id, []).append(f)
    books = Books(trackers=list(trackers), open_orders=list(open_orders), orders=list(orders),
                  fills=by_order)
    return core.reconcile_live(books, broker or reports(), now_ns=now, tick_id=TICK)


def events(result: SyncResult) -> list[tuple[str, Any]]:
    return [(e.stream, e.msg) for a in result.actions for e in a.events]


# ----------------------------------------------------------------------------- adopt


def test_broker_position_without_tracker_is_adopted_as_external_with_feed_subscription():
    broker = reports([bpos(LOT, buy_avg=12_345)], [border("X9", "", avg=12_345)],
                     [btrade("X9", "T9", price=12_345)])
    result = run(broker=broker)
    (action,) = result.actions
    assert action.kind == "adopt_position" and result.ok
    (change,) = action.changes
    assert isinstance(change, OpenTracker)
    assert (change.quantity, change.entry_price_paise, change.security_id) == (LOT, 12_345, SID)
    assert (change.index_key, change.option_type, change.entry_tick_id) == ("NIFTY", "CE", TICK)
    assert change.ts_entry == ist_to_ns(DAY, "09:58")
    assert change.position_id == make_msg_id("ext", SEG, SID, DAY, "X9")
    (s1, opened), (s2, sub) = events(result)
    assert s1 == "positions" and isinstance(opened, PositionOpened) and opened.external
    assert opened.msg_id == make_msg_id("open", change.position_id) and opened.quantity == LOT
    assert s2 == "feed.control" and isinstance(sub, FeedSubscribe)
    assert (sub.segment, sub.security_ids, sub.requester) == (SEG, [SID], "sync")
    assert "adopted as external" in action.reason and SYM in action.reason
    (diff,) = result.differences
    assert diff.kind == "untracked_broker_position" and diff.resolved


def test_adopted_position_id_changes_only_with_the_broker_orders_behind_it():
    def adopt_id(*order_ids: str) -> str:
        trades = [btrade(o, f"T{i}", qty=LOT) for i, o in enumerate(order_ids)]
        broker = reports([bpos(LOT * len(order_ids))], [], trades)
        return run(broker=broker).actions[0].position_id

    assert adopt_id("A") == adopt_id("A")
    assert adopt_id("A") != adopt_id("B")
    assert adopt_id("A", "B") == adopt_id("B", "A")


def test_positions_that_are_not_long_options_are_not_adopted():
    equity = bpos(10, sid=1333, symbol="HDFCBANK", segment="NSE_EQ", option="")
    future = bpos(LOT, sid=60000, symbol="NIFTY-Dec2026-FUT", option="")
    broker = reports([equity, future], [], [
        BrokerTrade(order_id="E", trade_id="t1", side="BUY", segment="NSE_EQ", security_id=1333,
                    quantity=10, price_paise=1000, time=""),
        btrade("F", "t2", sid=60000)])  # fmt: skip
    result = run(broker=broker)
    assert result.actions == [] and result.differences == [] and result.ok


def test_second_pass_after_adoption_finds_nothing():
    broker = reports([bpos(LOT)], [border("X9", "")], [btrade("X9")])
    first = run(broker=broker)
    (change,) = first.actions[0].changes
    assert isinstance(change, OpenTracker)
    adopted = msgspec.structs.replace(
        tracker(change.position_id, external=True), ts_entry=change.ts_entry,
        entry_price_paise=change.entry_price_paise)  # fmt: skip
    second = run([adopted], broker=broker)
    assert second.actions == [] and second.differences == [] and second.ok


# ----------------------------------------------------------------------------- closed outside


def test_tracker_the_broker_shows_closed_is_closed_outside_at_the_trade_book_price():
    t = tracker(entry=10_000, ts_entry=ist_to_ns(DAY, "09:30"))
    broker = reports(
        [bpos(0, buy=LOT, sell=LOT, buy_avg=10_000, sell_avg=11_111)],
        [border("B1", "E-1", avg=10_000, time="2026-12-01 09:30:00"),
         border("S1", "", side="SELL", avg=11_200, time="2026-12-01 09:50:00")],
        [btrade("B1", "T1", price=10_000, time="2026-12-01 09:30:00"),
         btrade("S1", "T2", side="SELL", price=11_200, time="2026-12-01 09:50:00")])  # fmt: skip
    result = run([t], broker=broker)
    (action,) = result.actions
    assert action.kind == "close_outside"
    (close,) = action.changes
    assert isinstance(close, CloseTracker)
    assert (close.exit_price_paise, close.reason) == (11_200, "closed outside")
    assert close.pnl_paise == 1_200 * LOT and close.ts_exit == ist_to_ns(DAY, "09:50")
    assert close.charges_paise > 0
    ((stream, closed),) = events(result)
    assert stream == "positions" and isinstance(closed, PositionClosed)
    assert (closed.reason, closed.exit_price_paise, closed.pnl_paise) == ("closed outside", 11_200, 1_200 * LOT)
    assert closed.msg_id == make_msg_id("close", "P1")
    assert "shows the position closed" in action.reason and "trade book (trade T2)" in action.reason
    assert result.ok


def test_tracker_absent_at_broker_without_any_sell_closes_at_entry_price_and_says_so():
    other = bpos(LOT, sid=OTHER_SID, symbol=OTHER_SYM)
    broker = reports([other], [border("X", "", sid=OTHER_SID)], [btrade("X", sid=OTHER_SID)])
    t = tracker(entry=9_000)
    result = run([t, tracker("P2", sid=OTHER_SID)], broker=broker)
    (action,) = result.actions
    (close,) = action.changes
    assert isinstance(close, CloseTracker) and close.position_id == "P1"
    assert (close.exit_price_paise, close.pnl_paise, close.ts_exit) == (9_000, 0, NOW)
    assert "has no such position" in action.reason and "exit price unknown" in action.reason


def test_exit_price_falls_back_to_the_broker_sell_average_without_trades_after_entry():
    t = tracker(entry=10_000, ts_entry=ist_to_ns(DAY, "09:30"))
    # day fields zero (a carry-forward position closed yesterday's way): no trades today
    pos = msgspec.structs.replace(bpos(0, buy=0, sell=0, sell_avg=10_750), day_buy_qty=0, day_sell_qty=0)
    other = bpos(LOT, sid=OTHER_SID, symbol=OTHER_SYM)
    broker = reports([pos, other], [], [btrade("X", sid=OTHER_SID)])
    (action,) = run([t, tracker("P2", sid=OTHER_SID)], broker=broker).actions
    assert action.changes[0].exit_price_paise == 10_750  # type: ignore[union-attr]
    assert "sell average" in action.reason


# ----------------------------------------------------------------------------- quantity


def test_quantity_mismatch_sets_the_tracker_to_the_broker_quantity():
    broker = reports([bpos(2 * LOT)], [border("B1", "E-1", qty=2 * LOT)], [btrade("B1", qty=2 * LOT)])
    result = run([tracker(qty=LOT)], broker=broker)
    (action,) = result.actions
    assert action.kind == "adjust_quantity"
    assert action.changes == [SetQuantity(position_id="P1", from_quantity=LOT, quantity=2 * LOT)]
    ((stream, adjusted),) = events(result)
    assert stream == "positions" and isinstance(adjusted, PositionAdjusted)
    assert (adjusted.position_id, adjusted.quantity) == ("P1", 2 * LOT)
    assert "books hold 65" in action.reason and "the broker 130" in action.reason
    assert result.differences[0].kind == "quantity_mismatch" and result.ok


def test_smaller_broker_quantity_is_taken_from_the_newest_tracker_first():
    old = tracker("P-old", qty=LOT, ts_entry=ist_to_ns(DAY, "09:20"))
    new = tracker("P-new", qty=2 * LOT, ts_entry=ist_to_ns(DAY, "09:40"))
    broker = reports([bpos(2 * LOT, buy=3 * LOT, sell=LOT, sell_avg=10_100)], [],
                     [btrade("B1", "T1", qty=3 * LOT), btrade("S1", "T2", side="SELL", price=10_100)])
    (action,) = run([old, new], broker=broker).actions
    assert action.changes == [SetQuantity(position_id="P-new", from_quantity=2 * LOT, quantity=LOT)]

    gone = reports([bpos(LOT, buy=3 * LOT, sell=2 * LOT, sell_avg=10_100)], [],
                   [btrade("B1", "T1", qty=3 * LOT), btrade("S1", "T2", side="SELL", qty=2 * LOT, price=10_100)])
    (closed,) = run([old, new], broker=gone).actions
    assert closed.kind == "close_outside" and closed.position_id == "P-new"


def test_short_broker_position_is_reported_for_a_human_and_not_adopted():
    broker = reports([bpos(-LOT, buy=0, sell=LOT, sell_avg=9_000)], [],
                     [btrade("S", side="SELL", price=9_000)])
    result = run(broker=broker)
    assert result.actions == []
    (diff,) = result.differences
    assert diff.kind == "short_position" and not diff.resolved and not result.ok


# ----------------------------------------------------------------------------- orders


def test_entry_order_traded_at_broker_records_the_fill_and_opens_the_position_like_the_executor():
    o = order("E-1", status="transit")
    t = tracker("P1", status="pending")
    broker = reports([bpos(LOT, buy_avg=10_500)], [border("OID1", "E-1", avg=10_500)], [btrade("OID1")])
    result = run([t], [o], broker)
    (action,) = result.actions
    assert action.kind == "settle_order" and action.correlation_id == "E-1"
    move, fill, activate = action.changes
    assert move == MoveOrder(correlation_id="E-1", from_status="transit", status="traded",
                             broker_order_id="OID1", filled_qty=LOT, avg_price_paise=10_500)
    assert isinstance(fill, RecordFill) and fill.fill_id == "F-E-1" and fill.price_paise == 10_500
    assert activate == ActivateTracker(position_id="P1", entry_price_paise=10_500, quantity=LOT,
                                       entry_tick_id=TICK, ts_entry=ist_to_ns(DAY, "09:58"))
    (s1, filled), (s2, opened) = events(result)
    assert (s1, s2) == ("orders.events", "positions")
    assert isinstance(filled, OrderFilled) and filled.msg_id == make_msg_id("fill", "E-1")
    assert (filled.quantity, filled.price_paise, filled.broker_order_id) == (LOT, 10_500, "OID1")
    assert isinstance(opened, PositionOpened) and opened.msg_id == make_msg_id("open", "P1")
    assert not opened.external and opened.lot_size == LOT
    # the new position matches the broker's: no adoption, no second action
    assert [d.kind for d in result.differences] == ["order_final_at_broker"] and result.ok


def test_exit_fill_missed_while_the_socket_was_down_closes_the_position_with_the_exit_reason():
    t = tracker("P1", entry=10_000)
    exit_order = order("X-1", kind="exit", status="pending", broker_order_id="OID2",
                       reason="stop_loss: -3.10%")
    broker = reports(
        [bpos(0, buy=LOT, sell=LOT, sell_avg=9_690)],
        [border("OID1", "E-1", avg=10_000), border("OID2", "X-1", side="SELL", avg=9_690)],
        [btrade("OID1", "T1", price=10_000), btrade("OID2", "T2", side="SELL", price=9_690)])  # fmt: skip
    result = run([t], [exit_order], broker)
    (action,) = result.actions  # the settlement alone: no "closed outside" on top
    assert action.kind == "settle_order"
    close = action.changes[-1]
    assert isinstance(close, CloseTracker)
    assert (close.exit_price_paise, close.reason, close.pnl_paise) == (9_690, "stop_loss: -3.10%", -310 * LOT)
    kinds = [type(m).__name__ for _, m in events(result)]
    assert kinds == ["OrderFilled", "PositionClosed"]
    assert events(result)[1][1].msg_id == make_msg_id("close", "P1")


def test_order_rejected_at_broker_cancels_the_pending_tracker_and_emits_the_rejection():
    result = run([tracker("P1", status="pending")], [order("E-1", status="transit")],
                 reports([], [border("OID1", "E-1", status="REJECTED", reason="RMS:Margin Exceeds")]))
    (action,) = result.actions
    move, cancel = action.changes
    assert isinstance(move, MoveOrder) and move.status == "rejected"
    assert move.reason == "broker rejected: RMS:Margin Exceeds"
    assert isinstance(cancel, CancelTracker) and cancel.position_id == "P1"
    ((stream, rejected),) = events(result)
    assert stream == "orders.events" and isinstance(rejected, OrderRejected)
    assert rejected.msg_id == make_msg_id("rej", "E-1") and "Margin" in rejected.reason


@pytest.mark.parametrize("broker_status,target", [("CANCELLED", "cancelled"), ("EXPIRED", "expired")])
def test_order_cancelled_or_expired_at_broker_emits_the_cancellation(broker_status, target):
    exit_order = order("X-1", kind="exit", status="pending", broker_order_id="OID2")
    broker = reports([bpos(LOT)], [border("OID1", "E-1"), border("OID2", "X-1", status=broker_status, side="SELL")],
                     [btrade("OID1")])
    result = run([tracker()], [exit_order], broker)
    (action,) = result.actions
    assert [type(c).__name__ for c in action.changes] == ["MoveOrder"]
    assert action.changes[0].status == target  # type: ignore[union-attr]
    ((_, cancelled),) = events(result)
    assert isinstance(cancelled, OrderCancelled) and cancelled.msg_id == make_msg_id("cxl", "X-1")


def test_entry_cancelled_after_a_partial_fill_opens_the_filled_part():
    broker = reports([bpos(LOT)], [border("OID1", "E-1", status="CANCELLED", qty=2 * LOT, filled=LOT, avg=10_200)],
                     [btrade("OID1", price=10_200)])
    result = run([tracker("P1", status="pending", qty=2 * LOT)], [order("E-1", status="pending", qty=2 * LOT)], broker)
    (action,) = result.actions
    move, fill, activate = action.changes
    assert isinstance(move, MoveOrder) and (move.status, move.filled_qty) == ("cancelled", LOT)
    assert isinstance(fill, RecordFill) and (fill.fill_id, fill.quantity) == (f"F-E-1-{LOT}", LOT)
    assert isinstance(activate, ActivateTracker) and activate.quantity == LOT
    # the executor's order: the order's own events, then the position's
    assert [type(m).__name__ for _, m in events(result)] == ["OrderFilled", "OrderCancelled", "PositionOpened"]


def test_young_open_order_is_left_to_the_executor_and_its_position_not_adopted():
    broker = reports([bpos(LOT)], [border("OID1", "E-1")], [btrade("OID1")])
    result = run([tracker("P1", status="pending")], [order("E-1", age_s=5)], broker)
    assert result.actions == [] and result.differences == []


def test_order_still_open_at_the_broker_holds_back_the_position_rules():
    # The broker shows the exit order pending and no fill yet; books say the position is open.
    # A manual order pending at the broker on another instrument blocks that instrument too.
    broker = reports([bpos(LOT)], [border("OID1", "E-1"), border("OID2", "X-1", status="PENDING", side="SELL"),
                                   border("M1", "", status="PENDING", sid=OTHER_SID)], [btrade("OID1")])
    result = run([tracker(), tracker("P2", sid=OTHER_SID)],
                 [order("X-1", kind="exit", status="pending", broker_order_id="OID2")], broker)
    assert result.actions == [] and result.differences == []


def test_order_unknown_at_the_broker_is_reported_unresolved():
    result = run([tracker("P1", status="pending")], [order("E-1", status="transit")], reports([], [], []))
    assert result.actions == []
    (diff,) = result.differences
    assert diff.kind == "order_unknown_at_broker" and not diff.resolved and not result.ok


def test_order_the_books_cannot_move_is_reported_not_forced():
    result = run([tracker("P1", status="pending")], [order("E-1", status="part_traded")],
                 reports([], [border("OID1", "E-1", status="REJECTED")]))
    # part_traded -> rejected is not a legal move; the nearest legal one is cancelled
    assert result.actions[0].changes[0].status == "cancelled"  # type: ignore[union-attr]


# ----------------------------------------------------------------------------- partial fills


def test_remainder_of_an_order_whose_partial_fill_is_recorded_is_the_only_fill_added():
    # The executor recorded 65 of 195 (F-E-1-65) and died; the broker then traded the rest.
    o = filled(order("E-1", status="part_traded", qty=3 * LOT), LOT, 10_000)
    broker = reports([bpos(3 * LOT, buy_avg=10_101)],
                     [border("OID1", "E-1", qty=3 * LOT, avg=10_101)],
                     [btrade("OID1", "T1", price=10_000), btrade("OID1", "T2", qty=2 * LOT, price=10_152)])  # fmt: skip
    result = run([tracker("P1", status="pending", qty=LOT)], [o], broker,
                 fills=[fill_row("E-1", LOT, 10_000, f"F-E-1-{LOT}")])  # fmt: skip
    (action,) = result.actions
    move, fill, activate = action.changes
    assert move == MoveOrder(correlation_id="E-1", from_status="part_traded", status="traded",
                             broker_order_id="OID1", filled_qty=3 * LOT, avg_price_paise=10_101)
    # 130 more, priced so that 65 @ 100.00 + 130 @ p comes to the broker's 195 @ 101.01:
    # p = (195 × 10101 − 65 × 10000) / 130 = 10151.5 → 10152 paise (half up, as the executor)
    assert fill == RecordFill(fill_id=f"F-E-1-{3 * LOT}", correlation_id="E-1", broker_order_id="OID1",
                              side="BUY", quantity=2 * LOT, price_paise=10_152,
                              ts_event=ist_to_ns(DAY, "09:58"), tick_id=TICK, recorded_qty=LOT)
    value = LOT * 10_000 + 2 * LOT * 10_152
    assert 2 * abs(value - 3 * LOT * 10_101) <= 3 * LOT  # the broker's average, to the paisa
    assert activate == ActivateTracker(position_id="P1", entry_price_paise=10_101, quantity=3 * LOT,
                                       entry_tick_id=TICK, ts_entry=ist_to_ns(DAY, "09:58"))
    (s1, fill_event), (s2, opened) = events(result)
    assert s1 == "orders.events" and isinstance(fill_event, OrderFilled)
    assert fill_event.msg_id == make_msg_id("fill", "E-1", 3 * LOT)  # the executor's id for it
    assert (fill_event.quantity, fill_event.filled_qty, fill_event.order_quantity) == (2 * LOT, 3 * LOT, 3 * LOT)
    assert s2 == "positions" and isinstance(opened, PositionOpened)
    assert (opened.quantity, opened.entry_price_paise) == (3 * LOT, 10_101)
    assert "the books held 65 of the broker's 195" in action.reason
    assert [d.kind for d in result.differences] == ["order_final_at_broker"] and result.ok


def test_recorded_fills_equal_to_the_broker_quantity_add_no_fill_and_the_next_pass_nothing():
    # 65 of 130 recorded, then the rest cancelled at the broker: the order and position settle,
    # but the fill is in the books already.
    o = filled(order("E-1", status="part_traded", qty=2 * LOT), LOT, 10_000)
    broker = reports([bpos(LOT)], [border("OID1", "E-1", status="CANCELLED", qty=2 * LOT, filled=LOT, avg=10_000)],
                     [btrade("OID1", price=10_000)])  # fmt: skip
    recorded = fill_row("E-1", LOT, 10_000, f"F-E-1-{LOT}")
    result = run([tracker("P1", status="pending", qty=LOT)], [o], broker, fills=[recorded])
    (action,) = result.actions
    assert [type(c).__name__ for c in action.changes] == ["MoveOrder", "ActivateTracker"]
    assert action.changes[1] == ActivateTracker(position_id="P1", entry_price_paise=10_000, quantity=LOT,
                                                entry_tick_id=recorded.tick_id, ts_entry=recorded.ts_event)
    assert [type(m).__name__ for _, m in events(result)] == ["OrderCancelled", "PositionOpened"]
    assert "its fills of 65 are in the books already" in action.reason and result.ok

    # once settled, the order is final in the books and the broker agrees: nothing at all
    settled = msgspec.structs.replace(o, status="cancelled")
    opened = tracker("P1", qty=LOT, entry=10_000)
    again = run([opened], [], broker, orders=[settled], fills=[recorded])
    assert again.actions == [] and again.differences == [] and again.ok


def test_books_holding_more_fills_than_the_broker_traded_are_left_for_a_human():
    o = filled(order("E-1", status="part_traded", qty=2 * LOT), 2 * LOT, 10_000)
    broker = reports([bpos(LOT)], [border("OID1", "E-1", status="CANCELLED", qty=2 * LOT, filled=LOT, avg=10_000)],
                     [btrade("OID1", price=10_000)])  # fmt: skip
    result = run([tracker("P1", status="pending", qty=2 * LOT)], [o], broker,
                 fills=[fill_row("E-1", LOT, 10_000, "F-E-1-65"), fill_row("E-1", LOT, 10_000, "F-E-1-130")])
    assert result.actions == [] and not result.ok
    (diff,) = result.differences
    assert diff.kind == "order_final_at_broker" and not diff.resolved
    assert "more than the broker's traded 65" in diff.detail


def test_exit_completed_after_a_recorded_partial_closes_over_all_the_position_fills():
    # Entry 130 @ 100.00 settled; the exit sold 65 @ 110.00 (recorded, the tracker down to the
    # 65 still open), then the executor died and the rest sold at the broker.
    entry = filled(order("E-1", status="traded", qty=2 * LOT), 2 * LOT, 10_000)
    exit_order = filled(order("X-1", kind="exit", status="part_traded", qty=2 * LOT,
                              broker_order_id="OID2", reason="stop_loss: -3.10%"), LOT, 11_000)
    broker = reports(
        [bpos(0, buy=2 * LOT, sell=2 * LOT, sell_avg=11_050)],
        [border("OID1", "E-1", qty=2 * LOT, avg=10_000),
         border("OID2", "X-1", side="SELL", qty=2 * LOT, avg=11_050)],
        [btrade("OID1", "T1", qty=2 * LOT, price=10_000),
         btrade("OID2", "T2", side="SELL", price=11_000), btrade("OID2", "T3", side="SELL", price=11_100)])  # fmt: skip
    result = run([tracker("P1", qty=LOT, entry=10_000)], [exit_order], broker, orders=[entry, exit_order],
                 fills=[fill_row("E-1", 2 * LOT, 10_000), fill_row("X-1", LOT, 11_000, "F-X-1-65")])
    (action,) = result.actions  # no "closed outside" on top
    move, fill, close = action.changes
    assert isinstance(move, MoveOrder) and (move.status, move.filled_qty) == ("traded", 2 * LOT)
    assert isinstance(fill, RecordFill)
    assert (fill.fill_id, fill.quantity, fill.price_paise) == ("F-X-1-130", LOT, 11_100)
    assert isinstance(close, CloseTracker)
    assert (close.quantity, close.exit_price_paise, close.reason) == (2 * LOT, 11_050, "stop_loss: -3.10%")
    assert close.pnl_paise == LOT * 11_000 + LOT * 11_100 - 2 * LOT * 10_000
    (_, f), (_, closed) = events(result)
    assert isinstance(f, OrderFilled) and f.msg_id == make_msg_id("fill", "X-1", 2 * LOT)
    assert isinstance(closed, PositionClosed) and closed.msg_id == make_msg_id("close", "P1")
    assert (closed.quantity, closed.pnl_paise) == (2 * LOT, close.pnl_paise) and result.ok


# ----------------------------------------------------------------------------- slices


def test_sliced_entry_settles_each_slice_and_opens_the_position_once_on_all_their_fills():
    s1 = sliced(order("E-1-1", qty=2 * LOT, broker_order_id="OID1"), "E-1", 1)
    s2 = sliced(order("E-1-2", qty=LOT, broker_order_id="OID2"), "E-1", 2)
    broker = reports([bpos(3 * LOT, buy_avg=10_100)],
                     [border("OID1", "E-1-1", qty=2 * LOT, avg=10_000),
                      border("OID2", "E-1-2", qty=LOT, avg=10_300)],
                     [btrade("OID1", "T1", qty=2 * LOT, price=10_000),
                      btrade("OID2", "T2", price=10_300)])  # fmt: skip
    result = run([tracker("P1", status="pending", qty=3 * LOT)], [s1, s2], broker, orders=[s1, s2])
    (action,) = result.actions  # one intent, one transaction; no adoption of the broker's 195
    assert action.kind == "settle_order" and action.correlation_id == "E-1"
    kinds = [type(c).__name__ for c in action.changes]
    assert kinds == ["MoveOrder", "RecordFill", "MoveOrder", "RecordFill", "ActivateTracker"]
    fills = [c for c in action.changes if isinstance(c, RecordFill)]
    assert [(f.fill_id, f.quantity, f.price_paise) for f in fills] == [
        ("F-E-1-1", 2 * LOT, 10_000), ("F-E-1-2", LOT, 10_300)]
    assert action.changes[-1] == ActivateTracker(position_id="P1", entry_price_paise=10_100,
                                                 quantity=3 * LOT, entry_tick_id=TICK,
                                                 ts_entry=ist_to_ns(DAY, "09:58"))
    msgs = [m for _, m in events(result)]
    assert [type(m).__name__ for m in msgs] == ["OrderFilled", "OrderFilled", "PositionOpened"]
    assert [m.parent_correlation_id for m in msgs[:2]] == ["E-1", "E-1"]  # type: ignore[union-attr]
    assert [m.msg_id for m in msgs[:2]] == [make_msg_id("fill", "E-1-1"), make_msg_id("fill", "E-1-2")]
    assert msgs[2].quantity == 3 * LOT  # type: ignore[union-attr]
    assert [d.kind for d in result.differences] == ["order_final_at_broker"] * 2 and result.ok


def test_last_slice_settled_by_sync_opens_the_position_with_the_slices_the_executor_recorded():
    s1 = filled(sliced(order("E-1-1", status="traded", qty=2 * LOT), "E-1", 1), 2 * LOT, 10_000)
    s2 = sliced(order("E-1-2", qty=LOT, broker_order_id="OID2"), "E-1", 2)
    broker = reports([bpos(3 * LOT, buy_avg=10_100)],
                     [border("OID1", "E-1-1", qty=2 * LOT, avg=10_000),
                      border("OID2", "E-1-2", qty=LOT, avg=10_300)],
                     [btrade("OID1", "T1", qty=2 * LOT, price=10_000),
                      btrade("OID2", "T2", price=10_300)])  # fmt: skip
    result = run([tracker("P1", status="pending", qty=2 * LOT)], [s2], broker, orders=[s1, s2],
                 fills=[fill_row("E-1-1", 2 * LOT, 10_000)])
    (action,) = result.actions
    assert [type(c).__name__ for c in action.changes] == ["MoveOrder", "RecordFill", "ActivateTracker"]
    activate = action.changes[-1]
    assert isinstance(activate, ActivateTracker)
    assert (activate.quantity, activate.entry_price_paise) == (3 * LOT, 10_100) and result.ok


def test_slice_final_while_its_sibling_is_open_only_follows_the_quantity_filled():
    s1 = sliced(order("E-1-1", qty=2 * LOT, broker_order_id="OID1"), "E-1", 1)
    s2 = sliced(order("E-1-2", qty=LOT, broker_order_id="OID2", age_s=5), "E-1", 2)
    broker = reports([bpos(2 * LOT)],
                     [border("OID1", "E-1-1", qty=2 * LOT, avg=10_000),
                      border("OID2", "E-1-2", status="PENDING", qty=LOT)],
                     [btrade("OID1", "T1", qty=2 * LOT, price=10_000)])  # fmt: skip
    result = run([tracker("P1", status="pending", qty=3 * LOT)], [s1, s2], broker, orders=[s1, s2])
    (action,) = result.actions  # the broker's 130 is neither adopted nor opened yet
    assert [type(c).__name__ for c in action.changes] == ["MoveOrder", "RecordFill", "SetQuantity"]
    assert action.changes[-1] == SetQuantity(position_id="P1", from_quantity=3 * LOT, quantity=2 * LOT)
    assert [type(m).__name__ for _, m in events(result)] == ["OrderFilled"]
    assert "intent E-1 waits for E-1-2" in action.reason and result.ok


def test_sliced_exit_with_a_cancelled_slice_reduces_the_position_and_reports_under_the_intent():
    x1 = sliced(order("X-1-1", kind="exit", qty=2 * LOT, broker_order_id="OID2"), "X-1", 1)
    x2 = sliced(order("X-1-2", kind="exit", qty=LOT, broker_order_id="OID3"), "X-1", 2)
    broker = reports([bpos(LOT, buy=3 * LOT, sell=2 * LOT, sell_avg=11_000)],
                     [border("OID1", "E-1", qty=3 * LOT, avg=10_000),
                      border("OID2", "X-1-1", side="SELL", qty=2 * LOT, avg=11_000),
                      border("OID3", "X-1-2", status="CANCELLED", side="SELL", qty=LOT, reason="IOC")],
                     [btrade("OID1", "T1", qty=3 * LOT, price=10_000),
                      btrade("OID2", "T2", side="SELL", qty=2 * LOT, price=11_000)])  # fmt: skip
    result = run([tracker("P1", qty=3 * LOT)], [x1, x2], broker, orders=[x1, x2])
    (action,) = result.actions
    assert action.changes[-1] == SetQuantity(position_id="P1", from_quantity=3 * LOT, quantity=LOT)
    msgs = [m for _, m in events(result)]
    assert [type(m).__name__ for m in msgs] == ["OrderFilled", "OrderCancelled", "PositionAdjusted", "OrderCancelled"]
    assert msgs[1].msg_id == make_msg_id("cxl", "X-1-2") and msgs[1].parent_correlation_id == "X-1"  # type: ignore[union-attr]
    assert msgs[2].msg_id == make_msg_id("adj", "P1", "X-1", LOT)
    summary = msgs[3]
    assert isinstance(summary, OrderCancelled) and summary.msg_id == make_msg_id("cxl", "X-1")
    assert summary.reason.startswith("130 of 195 filled over 2 slices: slice 1 traded; slice 2 cancelled")
    assert result.ok


# ----------------------------------------------------------------------------- never flat


@pytest.mark.parametrize("missing", ["positions", "orders", "trades", "funds"])
def test_a_missing_report_is_never_read_as_flat(missing):
    full = dict(positions=[bpos(LOT)], orders=[border("X", "")], trades=[btrade("X")],
                funds=BrokerFunds(available_paise=1))
    broker = BrokerReports(**{**full, missing: None})
    result = run([tracker("P1", sid=OTHER_SID)], broker=broker)
    assert result.actions == [] and not result.ok
    (diff,) = result.differences
    assert diff.kind == "broker_report_failed" and "never read as flat" in diff.detail


def test_a_failed_report_changes_nothing_and_is_reported():
    broker = BrokerReports(positions=None, orders=[], trades=[], funds=None,
                           failures=["positions: BrokerUnavailable DH-908: HTTP 500"])
    result = run([tracker()], [order("E-2", status="transit")], broker)
    assert result.actions == [] and result.failures == ["positions: BrokerUnavailable DH-908: HTTP 500"]
    assert not result.ok and "HTTP 500" in result.differences[0].detail


def test_positions_contradicting_the_trade_book_fail_the_pass():
    broker = reports([], [border("B1", "E-1")], [btrade("B1")])  # a buy of 65 but no position
    result = run([tracker()], broker=broker)
    assert result.actions == [] and not result.ok
    assert "trade book net +65 vs positions day net +0" in result.failures[0]


def test_an_empty_broker_with_open_positions_in_the_books_is_not_read_as_flat():
    result = run([tracker()], broker=reports([], [], []))
    assert result.actions == [] and not result.ok
    assert "no position, order or trade at all" in result.failures[0]


def test_empty_broker_and_empty_books_agree():
    result = run(broker=reports([], [], []))
    assert result.ok and result.differences == [] and result.info["funds_available_paise"] == 100_000_00


# ----------------------------------------------------------------------------- hours, paper


@pytest.mark.parametrize("day,hhmm,is_open", [
    (DAY, "09:14", False), (DAY, "09:15", True), (DAY, "15:29", True), (DAY, "15:30", False),
    (dt.date(2026, 12, 5), "10:00", False),   # Saturday
    (dt.date(2026, 12, 25), "10:00", False),  # Christmas, an exchange holiday
])  # fmt: skip
def test_market_hours_are_ist_0915_to_1530_on_trading_days(day, hhmm, is_open):
    hours = core.market_hours(ist_to_ns(day, hhmm))
    assert hours.open is is_open
    assert ("market open" if is_open else "sync runs 09:15-15:30 IST") in hours.reason


def test_outside_market_hours_says_when_it_opens_next():
    friday_evening = ist_to_ns(dt.date(2026, 12, 4), "16:00")
    hours = core.market_hours(friday_evening)
    assert not hours.open and "next at 2026-12-07 09:15" in hours.reason
    assert hours.seconds_to_open == (ist_to_ns(dt.date(2026, 12, 7), "09:15") - friday_evening) / 1e9
    early = core.market_hours(ist_to_ns(DAY, "08:15"))
    assert early.seconds_to_open == 3600.0


def test_paper_checks_flag_trackers_inconsistent_with_their_orders():
    traded_exit = msgspec.structs.replace(order("X-1", kind="exit", status="traded"), filled_qty=LOT)
    traded_entry = msgspec.structs.replace(order("E-1", status="traded"), filled_qty=LOT)
    result = core.reconcile_paper([tracker("P1", qty=2 * LOT), tracker("P2", external=True)],
                                  {"P1": [traded_entry, traded_exit]})
    assert sorted(d.kind for d in result.differences) == ["active_with_exit_fill", "quantity_mismatch"]
    assert result.actions == [] and not result.ok
    assert core.reconcile_paper([], {}).ok
