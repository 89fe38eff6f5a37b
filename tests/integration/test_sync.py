"""Sync against the DhanHQ simulator, with divergences injected between the broker and the books.

Each test runs the simulator in-process (paused clock, advanced through ``/__sim/advance``) over
one short synthetic session (09:15–09:30, seed printed), a fresh Postgres schema and Redis
namespace, and no other service: orders are placed at the simulator by hand (HTTP, the right
headers) and the books are written directly, so the only thing that can reconcile them is sync.
Passes are forced with the code path of ``scalper sync --force`` (:func:`run_once`); one test runs
that command itself.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import yaml

from dhansim import SPEED_PAUSED, run_simulator
from services.executor.books import ExecutorBooks
from services.executor.fills import weighted_avg_paise
from services.executor.live import BrokerOrderState
from services.executor.slicing import Slice
from services.feed.replay import load_session
from services.sync.service import PassReport, SyncService, run_once
from shared import bus as busmod
from shared import wire
from shared.clock import FakeClock, ist_to_ns
from shared.config import Config, load
from shared.dhan.rest import DhanRest
from shared.dhan.retry import RetryPolicy
from shared.instruments import parse_scrip_master
from shared.keys import Keys
from shared.messages import Message, OrderIntent, make_msg_id
from shared.runtime import Context, run
from shared.store.ledger import Ledger
from shared.types import rupees_to_paise
from tests.integration.pg import PgSchema
from tests.integration.procs import ROOT

pytestmark = pytest.mark.integration

SESSION_SEED = 20261201
DAY = dt.date(2026, 12, 1)
TOKEN = "sync-test-token-123"
CLIENT_ID = "1100220099"
LOT = 65


class Session:
    def __init__(self, parquet: Path, csv: Path) -> None:
        self.parquet, self.csv = parquet, csv
        rec = load_session(parquet)
        self.sids = [int(s) for s in rec.c["security_id"]]
        self.ltp = list(rec.c["ltp"])
        busy = Counter(s for s, seg in zip(self.sids, rec.c["segment"], strict=True) if seg == "NSE_FNO")
        self.busy = [sid for sid, _ in busy.most_common(3)]
        self.instruments = {i.security_id: i for i in parse_scrip_master(csv)}

    def next_tick(self, sid: int, cursor: int) -> int:
        return next(i for i in range(cursor, len(self.sids)) if self.sids[i] == sid)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    from shared.synth import generate_session

    out = tmp_path_factory.mktemp("sync")
    print(f"sync session seed: {SESSION_SEED}")
    generate_session(trading_day=DAY, seed=SESSION_SEED, out_parquet=out / "session.parquet",
                     out_instruments_csv=out / "instruments.csv", start_hhmm="09:15", end_hhmm="09:30")
    return Session(out / "session.parquet", out / "instruments.csv")


class Broker:
    """The simulator seen from outside: hand orders over REST, the clock over ``/__sim``."""

    def __init__(self, sim: Any, session: Session) -> None:
        self.sim, self.session = sim, session
        self.rest = httpx.AsyncClient(base_url=sim.rest_url, timeout=5.0,
                                      headers={"access-token": TOKEN, "client-id": CLIENT_ID})
        self.control = httpx.AsyncClient(base_url=sim.control_url, timeout=5.0)

    async def aclose(self) -> None:
        await self.rest.aclose()
        await self.control.aclose()

    async def advance(self, **body: Any) -> dict[str, Any]:
        return (await self.control.post("/advance", json=body)).raise_for_status().json()

    async def faults(self, **body: Any) -> None:
        (await self.control.post("/faults", json=body)).raise_for_status()

    async def clear_faults(self) -> None:
        (await self.control.delete("/faults")).raise_for_status()

    async def order(self, order_id: str) -> dict[str, Any]:
        return (await self.rest.get(f"/orders/{order_id}")).raise_for_status().json()

    async def place(self, sid: int, quantity: int, correlation_id: str, side: str = "BUY") -> str:
        """Place a MARKET order by hand (it fills at the instrument's next released tick)."""
        body = {"dhanClientId": CLIENT_ID, "transactionType": side, "exchangeSegment": "NSE_FNO",
                "productType": "INTRADAY", "orderType": "MARKET", "validity": "DAY",
                "securityId": str(sid), "quantity": quantity, "price": 0,
                "correlationId": correlation_id}
        return (await self.rest.post("/orders", json=body)).raise_for_status().json()["orderId"]

    async def step_until(self, order_id: str, status: str) -> dict[str, Any]:
        """Release ticks one by one until the order has ``status``; the order then."""
        for _ in range(2000):
            o = await self.order(order_id)
            if o["orderStatus"] == status:
                return o
            await self.advance(ticks=1)
        raise AssertionError(f"order {order_id} never reached {status}: {o}")

    async def trade(self, sid: int, side: str = "BUY", correlation_id: str = "") -> tuple[str, int]:
        """Place a MARKET order by hand and let it fill at the next tick: (order id, price)."""
        body = {"dhanClientId": CLIENT_ID, "transactionType": side, "exchangeSegment": "NSE_FNO",
                "productType": "INTRADAY", "orderType": "MARKET", "validity": "DAY",
                "securityId": str(sid), "quantity": LOT, "price": 0}
        if correlation_id:
            body["correlationId"] = correlation_id
        placed = (await self.rest.post("/orders", json=body)).raise_for_status().json()
        order_id = placed["orderId"]
        cursor = (await self.control.get("/state")).json()["cursor"]
        j = self.session.next_tick(sid, cursor)
        await self.advance(ticks=j - cursor + 1)
        for _ in range(200):
            o = await self.order(order_id)
            if o["orderStatus"] == "TRADED":
                assert rupees_to_paise(o["averageTradedPrice"]) == rupees_to_paise(self.session.ltp[j])
                return order_id, rupees_to_paise(o["averageTradedPrice"])
            await asyncio.sleep(0.01)
        raise AssertionError(f"order {order_id} did not trade: {o}")


@asynccontextmanager
async def simulator(session: Session) -> AsyncIterator[Broker]:
    async with run_simulator(session=str(session.parquet), instruments=str(session.csv),
                             speed=SPEED_PAUSED, token=TOKEN, client_id=CLIENT_ID,
                             rate_limits=False) as sim:  # fmt: skip
        broker = Broker(sim, session)
        await broker.advance(ticks=300)  # every instrument has prices
        try:
            yield broker
        finally:
            await broker.aclose()


def live_env(broker: Broker, pg: PgSchema, namespace: str, redis_url: str, **extra: str) -> dict[str, str]:
    return {"SCALPER_MODE": "live", "SCALPER_NAMESPACE": namespace, "SCALPER_DB_SCHEMA": pg.schema,
            "DATABASE_URL": pg.url, "REDIS_URL": redis_url, "DHAN_REST_URL": broker.sim.rest_url,
            "DHAN_CLIENT_ID": CLIENT_ID, "DHAN_ACCESS_TOKEN": TOKEN, **extra}


def stream(r: redis.Redis, keys: Keys, logical: str) -> list[Message]:
    dec = wire.StreamDecoder(logical)
    return [dec.decode(f) for _, f in r.xrange(keys.stream(logical))]


def reports(led: Ledger) -> list[dict[str, Any]]:
    rows = led.conn.execute("SELECT differences, actions, ok FROM sync_reports ORDER BY id").fetchall()
    return [{"differences": d, "actions": a, "ok": ok} for d, a, ok in rows]


def fast_rest(broker: Broker) -> DhanRest:
    """A client that gives up quickly (timeouts and 5xx are retried once)."""
    return DhanRest(broker.sim.rest_url, CLIENT_ID, TOKEN, timeout_s=0.3,
                    retry=RetryPolicy(attempts=2, base_s=0.01, cap_s=0.02))


def book_order(led: Ledger, cid: str, pid: str, sid: int, symbol: str, *, kind: str = "entry",
               status: str = "transit", broker_order_id: str = "", reason: str = "") -> None:
    """An order row as the executor writes it before sending the order."""
    led.create_order(correlation_id=cid, intent_msg_id=f"intent-{cid}", position_id=pid, kind=kind,
                     side="BUY" if kind == "entry" else "SELL", segment="NSE_FNO", security_id=sid,
                     symbol=symbol, quantity=LOT, ts_intent=ist_to_ns(DAY, "09:20"),
                     intent_tick_id="0-0", reason=reason,
                     payload={"lot_size": LOT, "index": "NIFTY"})  # fmt: skip
    led.set_order_status(cid, "submitting")
    if status != "submitting":
        led.set_order_status(cid, status, broker_order_id=broker_order_id)


def age_orders(led: Ledger, minutes: int = 10) -> None:
    """Make every order's last change ``minutes`` old: the executor is long gone."""
    led.conn.execute("UPDATE orders SET updated_at = now() - make_interval(mins => %s)", (minutes,))


def entry_intent(cid: str, pid: str, sid: int, symbol: str, quantity: int) -> OrderIntent:
    return OrderIntent(msg_id=f"intent-{cid}", ts_event=ist_to_ns(DAY, "09:20"), ts_init=0,
                       tick_id="1-0", kind="entry", correlation_id=cid, position_id=pid,
                       index="NIFTY", segment="NSE_FNO", security_id=sid, symbol=symbol, side="BUY",
                       quantity=quantity, lot_size=LOT, ref_price_paise=10_000, reason="sync test")  # fmt: skip


def state_of(o: dict[str, Any]) -> BrokerOrderState:
    """The broker's order as the executor reads it over REST."""
    return BrokerOrderState(o["orderStatus"], o["orderId"], int(o["filledQty"]),
                            rupees_to_paise(o["averageTradedPrice"]), "", "")  # fmt: skip


FILL_TICK = "1796097700000-0"  # the tick the executor stamps its fills with in these tests


# ----------------------------------------------------------------------------- the tests


def test_trade_placed_at_the_broker_by_hand_is_adopted_by_scalper_sync_force(
    session, pg_schema, namespace, redis_url, sync_redis
):
    keys = Keys(namespace)
    sid = session.busy[0]
    symbol = session.instruments[sid].symbol
    led = pg_schema.ledger()

    async def scenario() -> tuple[int, str, str, int, PassReport]:
        async with simulator(session) as broker:
            order_id, price = await broker.trade(sid)  # no correlation id: not ours
            env = live_env(broker, pg_schema, namespace, redis_url)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "shared.cli", "sync", "--force", cwd=ROOT,
                env={**_base_env(), **env}, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            again = await run_once(load(environ=env), force=True)
            assert proc.returncode is not None
            return proc.returncode, out.decode(), err.decode(), price, again

    try:
        rc, out, err, price, again = asyncio.run(scenario())
        print(out, err)
        assert rc == 0
        assert "action  adopt_position [applied]" in out and symbol in out
        assert "difference  untracked_broker_position" in out and "adopted as external" in out
        logged = [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert any(e["msg"] == "sync action" and e["kind"] == "adopt_position" for e in logged)
        assert TOKEN not in out + err

        (t,) = led.active_trackers()
        assert (t.external, t.paper, t.security_id, t.quantity, t.entry_price_paise) == (True, False, sid, LOT, price)
        assert (t.symbol, t.index_key, t.option_type) == (symbol, "NIFTY", session.instruments[sid].option_type)
        (opened,) = stream(sync_redis, keys, "positions")
        assert opened.position_id == t.position_id and opened.external  # type: ignore[attr-defined]
        assert opened.msg_id == make_msg_id("open", t.position_id)
        (sub,) = stream(sync_redis, keys, "feed.control")
        assert (sub.security_ids, sub.requester) == ([sid], "sync")  # type: ignore[attr-defined]
        assert led.unpublished_outbox() == []
        first, second = reports(led)
        assert first["ok"] and [a["kind"] for a in first["actions"]] == ["adopt_position"]
        assert first["actions"][0]["outcome"] == "applied"
        # the next pass finds the books and the broker agreeing
        assert again.ok and again.result is not None and again.result.differences == []
        assert second["ok"] and second["actions"] == []
        assert len(stream(sync_redis, keys, "positions")) == 1
    finally:
        led.close()


def test_fill_missed_with_no_executor_running_is_recorded_with_its_events(
    session, pg_schema, namespace, redis_url, sync_redis
):
    keys = Keys(namespace)
    sid = session.busy[1]
    symbol = session.instruments[sid].symbol
    led = pg_schema.ledger()
    cid, xid, pid = "E-missed-1", "X-missed-1", "P-missed-1"

    async def scenario() -> dict[str, Any]:
        async with simulator(session) as broker:
            config = load(environ=live_env(broker, pg_schema, namespace, redis_url))
            # The executor recorded the entry and sent it, then died; the order then filled.
            book_order(led, cid, pid, sid, symbol, status="submitting")
            led.open_tracker(position_id=pid, index_key="NIFTY", segment="NSE_FNO", security_id=sid,
                             symbol=symbol, option_type=symbol[-2:], quantity=LOT, paper=False)
            order_id, buy = await broker.trade(sid, correlation_id=cid)
            led.set_order_status(cid, "transit", broker_order_id=order_id)
            young = await run_once(config, force=True)
            tracker_after_young = led.get_tracker(pid)
            age_orders(led)
            settled = await run_once(config, force=True)
            # Then the exit: sent, filled at the broker while nobody listened.
            book_order(led, xid, pid, sid, symbol, kind="exit", status="submitting",
                       reason="take_profit: +4.00%")
            exit_id, sell = await broker.trade(sid, "SELL", correlation_id=xid)
            led.set_order_status(xid, "pending", broker_order_id=exit_id)
            age_orders(led)
            closed = await run_once(config, force=True)
            quiet = await run_once(config, force=True)
            return dict(young=young, tracker_after_young=tracker_after_young, settled=settled,
                        closed=closed, quiet=quiet, buy=buy, sell=sell, order_id=order_id,
                        exit_id=exit_id)

    try:
        r = asyncio.run(scenario())
        # a young order is the executor's: nothing happens, and its position is not adopted
        assert r["young"].ok and r["young"].result.actions == []
        assert r["tracker_after_young"].status == "pending"

        (action,) = r["settled"].outcomes
        assert action["kind"] == "settle_order" and action["outcome"] == "applied"
        order = led.get_order(cid)
        assert (order.status, order.filled_qty, order.avg_price_paise) == ("traded", LOT, r["buy"])
        assert order.broker_order_id == r["order_id"]
        (fill,) = led.fills_for(cid)
        assert (fill.fill_id, fill.quantity, fill.price_paise) == (f"F-{cid}", LOT, r["buy"])

        closed_tracker = led.get_tracker(pid)
        assert closed_tracker.status == "exited" and closed_tracker.entry_price_paise == r["buy"]
        assert (closed_tracker.exit_price_paise, closed_tracker.exit_reason) == (r["sell"], "take_profit: +4.00%")
        assert closed_tracker.pnl_paise == (r["sell"] - r["buy"]) * LOT
        assert led.get_order(xid).status == "traded"
        assert [a["kind"] for a in r["closed"].outcomes] == ["settle_order"]

        events = stream(sync_redis, keys, "orders.events")
        assert [type(e).__name__ for e in events] == ["OrderFilled", "OrderFilled"]
        assert [e.msg_id for e in events] == [make_msg_id("fill", cid), make_msg_id("fill", xid)]
        positions = stream(sync_redis, keys, "positions")
        assert [type(m).__name__ for m in positions] == ["PositionOpened", "PositionClosed"]
        assert [m.msg_id for m in positions] == [make_msg_id("open", pid), make_msg_id("close", pid)]
        assert not positions[0].external  # type: ignore[attr-defined]
        assert positions[1].reason == "take_profit: +4.00%"  # type: ignore[attr-defined]
        assert r["quiet"].ok and r["quiet"].result.actions == []
        assert led.active_trackers() == []
    finally:
        led.close()


def test_partial_fill_recorded_before_the_executor_died_is_not_counted_twice(
    session, pg_schema, namespace, redis_url, sync_redis
):
    keys = Keys(namespace)
    sid = session.busy[0]
    symbol = session.instruments[sid].symbol
    led = pg_schema.ledger()
    books = ExecutorBooks(led, time.time_ns, paper=False)
    cid, pid = "E-part-1", "P-part-1"
    intent = entry_intent(cid, pid, sid, symbol, 2 * LOT)

    async def scenario() -> dict[str, Any]:
        async with simulator(session) as broker:
            config = load(environ=live_env(broker, pg_schema, namespace, redis_url))
            # The executor sends 2 lots; the broker fills one, the executor records that part
            # (F-<cid>-65, tracker pending at 65) and dies; then the broker fills the rest.
            (row,) = books.record_intent(intent, [Slice(correlation_id=cid, slice_no=0,
                                                        quantity=2 * LOT)], None, {})  # fmt: skip
            books.submitting(row, {"lot_size": LOT})
            await broker.faults(partial_fills=1, partial_fill_lots=1)
            order_id = await broker.place(sid, 2 * LOT, cid)
            books.accepted(intent, row, order_id, "PENDING")
            part = await broker.step_until(order_id, "PART_TRADED")
            books.apply_state(intent, row, state_of(part), FILL_TICK, ist_to_ns(DAY, "09:21"))
            done = await broker.step_until(order_id, "TRADED")
            trades = (await broker.rest.get(f"/trades/{order_id}")).raise_for_status().json()
            age_orders(led)
            settled = await run_once(config, force=True)
            # The executor comes back and sees the order: nothing is added.
            outbox = led.conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
            again = books.apply_state(intent, row, state_of(done), FILL_TICK, ist_to_ns(DAY, "09:30"))
            after = dict(inc=again, settle=books.settle(intent), fills=led.fills_for(cid),
                         outbox=led.conn.execute("SELECT count(*) FROM outbox").fetchone()[0] - outbox)
            quiet = await run_once(config, force=True)
            return dict(part=part, done=done, trades=trades, settled=settled, after=after, quiet=quiet)

    try:
        r = asyncio.run(scenario())
        assert r["part"]["filledQty"] == LOT and r["done"]["filledQty"] == 2 * LOT
        (action,) = r["settled"].outcomes
        assert action["kind"] == "settle_order" and action["outcome"] == "applied"
        fills = sorted(led.fills_for(cid), key=lambda f: int(f.fill_id.rsplit("-", 1)[1]))
        assert [(f.fill_id, f.quantity) for f in fills] == [(f"F-{cid}-{LOT}", LOT), (f"F-{cid}-{2 * LOT}", LOT)]
        avg = rupees_to_paise(r["done"]["averageTradedPrice"])
        value = sum(f.quantity * f.price_paise for f in fills)
        assert 2 * abs(value - avg * 2 * LOT) <= 2 * LOT  # the broker's average × 130, to the paisa
        traded = [rupees_to_paise(t["tradedPrice"]) for t in r["trades"]]
        assert len(traded) == 2 and abs(fills[1].price_paise - traded[1]) <= 1
        order = led.get_order(cid)
        assert (order.status, order.filled_qty, order.avg_price_paise) == ("traded", 2 * LOT, avg)
        t = led.get_tracker(pid)
        price = weighted_avg_paise((f.quantity, f.price_paise) for f in fills)
        assert (t.status, t.quantity, t.entry_price_paise) == ("active", 2 * LOT, price)
        filled = [e for e in stream(sync_redis, keys, "orders.events") if type(e).__name__ == "OrderFilled"]
        assert [(e.msg_id, e.quantity, e.filled_qty) for e in filled] == [  # type: ignore[attr-defined]
            (make_msg_id("fill", cid, LOT), LOT, LOT), (make_msg_id("fill", cid, 2 * LOT), LOT, 2 * LOT)]
        (opened,) = stream(sync_redis, keys, "positions")
        assert (opened.quantity, opened.entry_price_paise) == (2 * LOT, price)  # type: ignore[attr-defined]
        # a restarted executor adds nothing, and the next pass finds the books and broker agreeing
        assert r["after"]["inc"] is None and r["after"]["settle"] == "done"
        assert sorted(r["after"]["fills"], key=lambda f: f.fill_id) == sorted(fills, key=lambda f: f.fill_id)
        assert r["after"]["outbox"] == 0
        assert r["quiet"].ok and r["quiet"].result.differences == []
    finally:
        led.close()


def test_slice_filled_after_the_executor_died_opens_the_position_on_all_slices(
    session, pg_schema, namespace, redis_url, sync_redis
):
    keys = Keys(namespace)
    sid = session.busy[1]
    symbol = session.instruments[sid].symbol
    led = pg_schema.ledger()
    books = ExecutorBooks(led, time.time_ns, paper=False)
    cid, pid = "E-slice-1", "P-slice-1"
    intent = entry_intent(cid, pid, sid, symbol, 2 * LOT)
    slices = [Slice(correlation_id=f"{cid}-{n}", slice_no=n, quantity=LOT) for n in (1, 2)]

    async def scenario() -> dict[str, Any]:
        async with simulator(session) as broker:
            config = load(environ=live_env(broker, pg_schema, namespace, redis_url))
            # Two slices sent; the executor records the first one's fill and dies before the
            # second's: the broker holds 130, the books one traded slice and one pending.
            rows = books.record_intent(intent, slices, None, {})
            for row in rows:
                books.submitting(row, {"lot_size": LOT})
            first, _ = await broker.trade(sid, correlation_id=rows[0].correlation_id)
            books.accepted(intent, rows[0], first, "PENDING")
            books.apply_state(intent, rows[0], state_of(await broker.order(first)), FILL_TICK,
                              ist_to_ns(DAY, "09:21"))  # fmt: skip
            second, _ = await broker.trade(sid, correlation_id=rows[1].correlation_id)
            books.accepted(intent, rows[1], second, "PENDING")
            age_orders(led)
            settled = await run_once(config, force=True)
            quiet = await run_once(config, force=True)
            return dict(settled=settled, quiet=quiet)

    try:
        r = asyncio.run(scenario())
        # the slices are the executor's orders: settled, not adopted as an outside position
        assert [a["kind"] for a in r["settled"].outcomes] == ["settle_order"]
        assert r["settled"].outcomes[0]["correlation_id"] == cid and r["settled"].ok
        fills = [f for n in (1, 2) for f in led.fills_for(f"{cid}-{n}")]
        assert [(f.fill_id, f.quantity) for f in fills] == [(f"F-{cid}-1", LOT), (f"F-{cid}-2", LOT)]
        assert [o.status for o in led.orders_for_intent(cid)] == ["traded", "traded"]
        t = led.get_tracker(pid)
        price = weighted_avg_paise((f.quantity, f.price_paise) for f in fills)
        assert (t.status, t.quantity, t.entry_price_paise, t.external) == ("active", 2 * LOT, price, False)
        filled = [e for e in stream(sync_redis, keys, "orders.events") if type(e).__name__ == "OrderFilled"]
        assert [(e.correlation_id, e.parent_correlation_id) for e in filled] == [  # type: ignore[attr-defined]
            (f"{cid}-1", cid), (f"{cid}-2", cid)]
        (opened,) = stream(sync_redis, keys, "positions")
        assert (opened.position_id, opened.quantity) == (pid, 2 * LOT)  # type: ignore[attr-defined]
        assert r["quiet"].ok and r["quiet"].result.differences == []
    finally:
        led.close()


def test_position_closed_outside_the_project_is_closed_at_the_trade_book_price(
    session, pg_schema, namespace, redis_url, sync_redis
):
    keys = Keys(namespace)
    sid = session.busy[2]
    symbol = session.instruments[sid].symbol
    led = pg_schema.ledger()
    pid = "P-out-1"

    async def scenario() -> dict[str, Any]:
        async with simulator(session) as broker:
            config = load(environ=live_env(broker, pg_schema, namespace, redis_url))
            _, buy = await broker.trade(sid, correlation_id="E-out-1")
            led.open_tracker(position_id=pid, index_key="NIFTY", segment="NSE_FNO", security_id=sid,
                             symbol=symbol, option_type=symbol[-2:], quantity=LOT, status="active",
                             entry_price_paise=buy, entry_tick_id="0-0",
                             ts_entry=ist_to_ns(DAY, "09:15"), paper=False)  # fmt: skip
            agree = await run_once(config, force=True)
            _, sell = await broker.trade(sid, "SELL")  # someone sold it on the broker's app
            closed = await run_once(config, force=True)
            return dict(agree=agree, closed=closed, buy=buy, sell=sell)

    try:
        r = asyncio.run(scenario())
        assert r["agree"].ok and r["agree"].result.differences == []
        (action,) = r["closed"].outcomes
        assert action["kind"] == "close_outside" and action["outcome"] == "applied"
        assert "shows the position closed" in action["reason"] and "trade book" in action["reason"]
        t = led.get_tracker(pid)
        assert (t.status, t.exit_reason, t.exit_price_paise) == ("exited", "closed outside", r["sell"])
        assert t.pnl_paise == (r["sell"] - r["buy"]) * LOT and t.charges_paise > 0
        (closed,) = stream(sync_redis, keys, "positions")
        assert type(closed).__name__ == "PositionClosed"
        assert (closed.reason, closed.exit_price_paise) == ("closed outside", r["sell"])  # type: ignore[attr-defined]
        assert reports(led)[-1]["ok"]
    finally:
        led.close()


@pytest.mark.parametrize("fault", [{"http_5xx": 1000}, {"delay_ms": 1500}], ids=["http_5xx", "delay"])
def test_broker_outage_during_sync_changes_nothing_and_reports_not_ok(
    fault, session, pg_schema, namespace, redis_url, sync_redis, caplog
):
    caplog.set_level(logging.INFO, logger="sync")
    keys = Keys(namespace)
    held, orphan = session.busy[0], session.busy[1]
    led = pg_schema.ledger()
    led.open_tracker(position_id="P-orphan", index_key="NIFTY", segment="NSE_FNO", security_id=orphan,
                     symbol=session.instruments[orphan].symbol, option_type="CE", quantity=LOT,
                     status="active", entry_price_paise=12_000, entry_tick_id="0-0",
                     ts_entry=ist_to_ns(DAY, "09:15"), paper=False)  # fmt: skip

    async def scenario() -> tuple[PassReport, PassReport]:
        async with simulator(session) as broker:
            config = load(environ=live_env(broker, pg_schema, namespace, redis_url))
            await broker.trade(held)  # a broker position the books do not have
            rest = fast_rest(broker)
            try:
                await broker.faults(**fault)
                down = await run_once(config, force=True, rest=rest)
                await broker.clear_faults()
                up = await run_once(config, force=True, rest=rest)
            finally:
                await rest.aclose()
            return down, up

    try:
        down, up = asyncio.run(scenario())
        assert not down.ok and down.result is not None and down.result.actions == []
        assert down.outcomes == [] and down.result.failures[0].startswith("order book:")
        assert ("DH-908" if "http_5xx" in fault else "TIMEOUT") in down.result.failures[0]
        failed = next(r for r in caplog.records if r.msg.startswith("sync pass failed"))
        assert failed.levelno == logging.ERROR
        first = reports(led)[0]
        assert not first["ok"] and first["actions"] == []
        assert [d["kind"] for d in first["differences"]] == ["broker_report_failed"]
        # nothing was read as flat: the orphan stayed open until the broker answered again
        assert sorted(a["kind"] for a in up.outcomes) == ["adopt_position", "close_outside"]
        assert up.ok and led.get_tracker("P-orphan").exit_reason == "closed outside"
        assert len(stream(sync_redis, keys, "positions")) == 2
    finally:
        led.close()


def test_sync_idles_outside_market_hours_and_passes_on_start_and_every_interval(
    session, pg_schema, namespace, redis_url, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="sync")
    cfg = yaml.safe_load((ROOT / "config" / "algo.yml").read_text())
    cfg["sync"]["interval_s"] = 1
    (tmp_path / "algo.yml").write_text(yaml.safe_dump(cfg))
    led = pg_schema.ledger()
    calls: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(500)

    async def service(config: Config, clock: FakeClock, rest: DhanRest, *, burst: bool) -> SyncService:
        r = busmod.connect(redis_url)
        svc = SyncService(Context(config, r, "sync", clock=clock), rest=rest)
        try:
            if burst:
                await run(svc, burst=True, install_signals=False)
            else:
                task = asyncio.create_task(run(svc, install_signals=False))
                while len(reports(led)) < 2 and not task.done():
                    await asyncio.sleep(0.05)
                svc.ctx.stop_event.set()
                await asyncio.wait_for(task, 10)
        finally:
            await r.aclose()
        return svc

    async def scenario() -> tuple[SyncService, SyncService]:
        async with simulator(session) as broker:
            config = load(tmp_path / "algo.yml", environ=live_env(broker, pg_schema, namespace, redis_url))
            saturday = FakeClock(ist_to_ns(dt.date(2026, 12, 5), "10:00"))
            idle = await service(config, saturday, DhanRest(broker.sim.rest_url, CLIENT_ID, TOKEN,
                                 transport=httpx.MockTransport(refuse)), burst=True)  # fmt: skip
            tuesday = FakeClock(ist_to_ns(DAY, "10:00"))
            async with DhanRest(broker.sim.rest_url, CLIENT_ID, TOKEN) as rest:
                busy = await service(config, tuesday, rest, burst=False)
            return idle, busy

    try:
        idle, busy = asyncio.run(scenario())
        assert calls == [] and idle.passes == 0 and idle.gate == "not a trading day"
        said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sync idle")]
        assert said and "not a trading day" in said[0] and "next at 2026-12-07 09:15" in said[0]
        assert busy.passes >= 2 and busy.gate == "open"
        assert all(r["ok"] for r in reports(led))
    finally:
        led.close()


def _base_env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    return env
