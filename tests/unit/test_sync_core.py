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
from shared.store.rows import OrderRow, TrackerRow

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


def run(trackers: list[TrackerRow] = (), open_orders: list[OrderRow] = (),  # type: ignore[assignment]
        broker: BrokerReports | None = None, now: int = NOW) -> SyncResult:
    books = Books(trackers=list(trackers), open_orders=list(open_orders))
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
    assert isinstance(fill, RecordFill) and fill.quantity == LOT
    assert isinstance(activate, ActivateTracker) and activate.quantity == LOT
    assert [type(m).__name__ for _, m in events(result)] == ["OrderFilled", "PositionOpened", "OrderCancelled"]


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
