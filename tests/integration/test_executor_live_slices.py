"""The live executor against the DhanHQ simulator: freeze-limit slices and partial fills.

The simulator serves the sample session through a detailed scrip master in which one option's
freeze quantity is 130 (two lots), so an unsliced order above it would be rejected by RMS; the
others have none (the executor then slices at the NIFTY default, 1800).

- An entry of five lots becomes three broker orders ``<cid>-1..3`` (130, 130, 65), exactly one
  each even when the executor is SIGKILLed between two slices; one position of 325 opens at the
  quantity-weighted average; the exit of that position is sliced the same way and closes it.
- With the simulator's ``partial_fills`` fault (clock paused and stepped by the test), each
  PART_TRADED step is one fill row and one ``order.filled`` event while it happens, and the
  pending tracker shows the quantity filled so far; a cancelled remainder leaves the position
  at the filled quantity; an exit filled in part leaves the rest open and a retry closes it.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis

from services.entries.core import correlation_id_for
from services.executor.fills import weighted_avg_paise
from services.executor.slicing import plan_slices
from services.exits.core import exit_correlation_id
from shared import bus as busmod
from shared import wire
from shared.instruments import parse_scrip_master, write_detailed_csv
from shared.keys import Keys
from shared.messages import Message, OrderIntent
from shared.simrun import SIM_CLIENT, SIM_TOKEN, live_env, start_simulator
from tests.helpers import eventually
from tests.integration.procs import ROOT, Proc, service_env

pytestmark = pytest.mark.integration
SAMPLE = ROOT / "data" / "sample"
PE_26150 = 51647  # NIFTY-Dec2026-26150-PE in the sample instruments: freeze 130 here
CE_26200 = 51648  # NIFTY-Dec2026-26200-CE: no freeze quantity in the master
SYMBOLS = {PE_26150: "NIFTY-Dec2026-26150-PE", CE_26200: "NIFTY-Dec2026-26200-CE"}
LOT = 65
FREEZE = 130
H = {"access-token": SIM_TOKEN, "client-id": SIM_CLIENT}


@pytest.fixture(scope="module")
def instruments(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("slices") / "instruments-detailed.csv"
    insts = [
        msgspec.structs.replace(i, freeze_qty=FREEZE) if i.security_id == PE_26150 else i
        for i in parse_scrip_master(SAMPLE / "instruments.csv")
    ]
    write_detailed_csv(insts, out)
    return out


@pytest.fixture(scope="module")
def simulator(
    tmp_path_factory: pytest.TempPathFactory, instruments: Path
) -> Iterator[dict[str, Any]]:
    log = tmp_path_factory.mktemp("sim") / "dhansim.log"
    proc, ready = start_simulator(
        SAMPLE / "session.parquet", instruments, log, speed="5", from_hhmm="09:20", to_hhmm="11:00"
    )
    yield ready
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)


@pytest.fixture
def sim(simulator: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The simulator at 5x with no fault; whatever a test changes is undone after it."""
    yield simulator
    httpx.delete(f"{simulator['control_url']}/faults", timeout=10).raise_for_status()
    httpx.post(
        f"{simulator['control_url']}/clock", json={"speed": 5}, timeout=10
    ).raise_for_status()


def broker(ready: dict[str, Any], path: str) -> Any:
    return httpx.get(f"{ready['rest_url']}{path}", headers=H, timeout=10).json()


def broker_orders(ready: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    return [o for o in broker(ready, "/orders") if o.get("correlationId", "").startswith(prefix)]


def publish(redis_url: str, keys: Keys, *msgs: Message) -> None:
    async def put() -> None:
        c = busmod.connect(redis_url)
        await busmod.Bus(c, keys, {}).publish("orders.requests", list(msgs))
        await c.aclose()

    asyncio.run(put())


def events(r: redis.Redis, keys: Keys, stream: str) -> list[Message]:
    dec = wire.StreamDecoder(stream)
    return [dec.decode(f) for _, f in r.xrange(keys.stream(stream))]


def entry_intent(name: str, lots: int, security_id: int = PE_26150) -> OrderIntent:
    msg_id = f"intent-{name}"
    return OrderIntent(
        msg_id=msg_id,
        ts_event=1,
        ts_init=1,
        tick_id="1-0",
        kind="entry",
        correlation_id=correlation_id_for(msg_id),
        position_id=f"P-{name}",
        index="NIFTY",
        segment="NSE_FNO",
        security_id=security_id,
        symbol=SYMBOLS[security_id],
        side="BUY",
        quantity=lots * LOT,
        lot_size=LOT,
        ref_price_paise=9000,
        reason="slicing test",
    )


def exit_intent(entry: OrderIntent, quantity: int, attempt: int = 1) -> OrderIntent:
    return msgspec.structs.replace(
        entry,
        msg_id=f"exit-{entry.position_id}-{attempt}",
        kind="exit",
        side="SELL",
        quantity=quantity,
        correlation_id=exit_correlation_id(entry.position_id, attempt),
        reason=f"test exit {attempt}",
    )


def advance_until(
    ready: dict[str, Any], cid: str, status: str, timeout: float = 30
) -> dict[str, Any]:
    """Step the paused simulator one tick at a time until the order has ``status``."""

    def step() -> dict[str, Any] | None:
        order = broker(ready, f"/orders/external/{cid}")
        if order.get("orderStatus") == status:
            return order
        httpx.post(
            f"{ready['control_url']}/advance", json={"ticks": 1}, timeout=10
        ).raise_for_status()
        return None

    return eventually(step, timeout, interval=0, message=f"{cid} {status} at the simulator")


@pytest.fixture
def ctx(sim, pg_schema, namespace, redis_url, instruments, tmp_path):
    led = pg_schema.ledger()
    led.upsert_instruments(parse_scrip_master(instruments))
    r = redis.Redis.from_url(redis_url)
    env = service_env(namespace, pg_schema.schema, redis_url, pg_schema.url, **live_env(sim))
    yield {"led": led, "r": r, "keys": Keys(namespace), "env": env, "sim": sim}
    r.close()
    led.close()


@pytest.mark.parametrize("point", ["between_slices", "after_call"])
def test_entry_above_the_freeze_limit_is_sliced_exactly_once_across_a_kill_and_its_exit_too(
    point, ctx, redis_url, tmp_path
):
    led, r, keys, sim = ctx["led"], ctx["r"], ctx["keys"], ctx["sim"]
    entry = entry_intent(f"SLICE-{point}", lots=5)
    cid = entry.correlation_id
    expected = [(f"{cid}-{n}", q) for n, q in ((1, 130), (2, 130), (3, 65))]
    assert [(s.correlation_id, s.quantity) for s in plan_slices(cid, 325, LOT, FREEZE)] == expected
    publish(redis_url, keys, entry)
    env = {
        **ctx["env"],
        "SCALPER_TEST_CRASH_AT": point,
        "SCALPER_TEST_CRASH_ONCE": str(tmp_path / "crashed"),
    }
    first = Proc("services.executor", env, tmp_path, name="executor1")
    second = None
    try:
        assert first.p.wait(60) == -signal.SIGKILL, first.log()[-3000:]
        # killed after the first slice's POST and before the second's row moved on
        assert [o["correlationId"] for o in broker_orders(sim, cid)] == [f"{cid}-1"]
        assert [r_.status for r_ in led.orders_for_intent(cid)][1:] == ["new", "new"]
        second = Proc("services.executor", env, tmp_path, name="executor2")
        tr = eventually(
            lambda: (t := led.get_tracker(entry.position_id)) and t.status == "active" and t,
            60,
            message="position opened after the restart",
        )
        book = broker_orders(sim, cid)
        assert sorted((o["correlationId"], o["quantity"], o["orderStatus"]) for o in book) == [
            (c, q, "TRADED") for c, q in expected
        ], "not exactly one broker order per slice"
        rows = led.orders_for_intent(cid)
        assert [
            (o.correlation_id, o.slice_no, o.parent_id, o.quantity, o.status) for o in rows
        ] == [(c, n, cid, q, "traded") for n, (c, q) in enumerate(expected, start=1)]
        assert {o.broker_order_id for o in rows} == {o["orderId"] for o in book}
        fills = [f for o in rows for f in led.fills_for(o.correlation_id)]
        trades = {
            (t["orderId"], int(t["tradedQuantity"]), round(float(t["tradedPrice"]) * 100))
            for t in broker(sim, "/trades")
        }
        assert {(f.broker_order_id, f.quantity, f.price_paise) for f in fills} <= trades
        assert [f.quantity for f in fills] == [130, 130, 65]
        assert (tr.quantity, tr.entry_price_paise) == (
            325,
            weighted_avg_paise((f.quantity, f.price_paise) for f in fills),
        )
        opened = [m for m in events(r, keys, "positions") if type(m).__name__ == "PositionOpened"]
        assert len(opened) == 1 and opened[0].quantity == 325
        eventually(
            lambda: (
                len(
                    [
                        m
                        for m in events(r, keys, "orders.events")
                        if type(m).__name__ == "OrderFilled"
                    ]
                )
                == 3
            ),
            30,
            message="one fill event per slice",
        )
        filled = [m for m in events(r, keys, "orders.events") if type(m).__name__ == "OrderFilled"]
        assert sorted(m.correlation_id for m in filled) == [c for c, _ in expected]
        assert {m.parent_correlation_id for m in filled} == {cid}

        # the exit of a sliced position is sliced the same way and closes it
        out = exit_intent(entry, 325)
        publish(redis_url, keys, out)
        closed = eventually(
            lambda: (t := led.get_tracker(entry.position_id)) and t.status == "exited" and t,
            60,
            message="position closed",
        )
        xbook = broker_orders(sim, out.correlation_id)
        assert sorted((o["correlationId"], o["quantity"], o["transactionType"]) for o in xbook) == [
            (f"{out.correlation_id}-{n}", q, "SELL") for n, q in ((1, 130), (2, 130), (3, 65))
        ]
        xfills = [
            f
            for o in led.orders_for_intent(out.correlation_id)
            for f in led.fills_for(o.correlation_id)
        ]
        assert closed.quantity == 325
        assert closed.pnl_paise == sum(f.quantity * f.price_paise for f in xfills) - sum(
            f.quantity * f.price_paise for f in fills
        )
        assert closed.exit_price_paise == weighted_avg_paise(
            (f.quantity, f.price_paise) for f in xfills
        )
        assert closed.charges_paise > 0
    finally:
        first.kill()
        if second is not None:
            second.kill()


def test_partial_fills_are_recorded_as_they_happen_and_the_tracker_follows(
    ctx, redis_url, tmp_path
):
    led, r, keys, sim = ctx["led"], ctx["r"], ctx["keys"], ctx["sim"]
    control = sim["control_url"]
    httpx.post(f"{control}/clock", json={"speed": "paused"}, timeout=10).raise_for_status()
    httpx.post(
        f"{control}/faults", json={"partial_fills": 1, "partial_fill_lots": 1}, timeout=10
    ).raise_for_status()
    entry = entry_intent("PARTIAL", lots=2, security_id=CE_26200)
    cid, pid = entry.correlation_id, entry.position_id
    publish(redis_url, keys, entry)
    ex = Proc("services.executor", ctx["env"], tmp_path)
    try:
        eventually(lambda: broker_orders(sim, cid), 30, message="order placed")
        first = advance_until(sim, cid, "PART_TRADED")
        assert first["filledQty"] == 65
        # while the rest is open: one fill row, the order part traded, the pending tracker at 65
        order = eventually(
            lambda: (o := led.get_order(cid)) and o.status == "part_traded" and o,
            30,
            message="part_traded in the ledger",
        )
        assert order.filled_qty == 65
        assert [(f.fill_id, f.quantity) for f in led.fills_for(cid)] == [(f"F-{cid}-65", 65)]
        tr = led.get_tracker(pid)
        assert tr is not None and (tr.status, tr.quantity) == ("pending", 65)
        advance_until(sim, cid, "TRADED")
        tr = eventually(
            lambda: (t := led.get_tracker(pid)) and t.status == "active" and t,
            30,
            message="position opened",
        )
        fills = led.fills_for(cid)
        trades = [
            (int(t["tradedQuantity"]), round(float(t["tradedPrice"]) * 100))
            for t in broker(sim, f"/trades/{order.broker_order_id}")
        ]
        assert [(f.quantity, f.price_paise) for f in fills] == trades  # each trade, its own price
        assert [f.fill_id for f in fills] == [f"F-{cid}-65", f"F-{cid}-130"]
        assert (tr.quantity, tr.entry_price_paise) == (130, weighted_avg_paise(trades))
        assert led.get_order(cid).status == "traded"
        eventually(
            lambda: (
                len(
                    [
                        m
                        for m in events(r, keys, "orders.events")
                        if type(m).__name__ == "OrderFilled"
                    ]
                )
                == 2
            ),
            30,
            message="two fill events",
        )
        filled = [m for m in events(r, keys, "orders.events") if type(m).__name__ == "OrderFilled"]
        assert [(m.quantity, m.filled_qty, m.order_quantity) for m in filled] == [
            (65, 65, 130),
            (65, 130, 130),
        ]
        opened = [m for m in events(r, keys, "positions") if type(m).__name__ == "PositionOpened"]
        assert [(m.quantity, m.entry_price_paise) for m in opened] == [(130, tr.entry_price_paise)]
    finally:
        ex.kill()


def test_cancelled_remainders_leave_the_position_at_the_filled_quantity_and_an_exit_retry_closes_it(
    ctx, redis_url, tmp_path
):
    led, r, keys, sim = ctx["led"], ctx["r"], ctx["keys"], ctx["sim"]
    control = sim["control_url"]
    httpx.post(
        f"{control}/faults",
        json={"partial_fills": 1, "partial_fill_lots": 2, "partial_remainder": "cancel"},
        timeout=10,
    ).raise_for_status()
    entry = entry_intent("REMAINDER", lots=4, security_id=CE_26200)
    pid = entry.position_id
    publish(redis_url, keys, entry)
    ex = Proc("services.executor", ctx["env"], tmp_path)
    try:
        tr = eventually(
            lambda: (t := led.get_tracker(pid)) and t.status == "active" and t,
            60,
            message="position opened with what filled",
        )
        order = led.get_order(entry.correlation_id)
        assert (order.status, order.quantity, order.filled_qty) == ("cancelled", 260, 130)
        assert tr.quantity == 130
        # the exit of 130 fills one lot, the rest is cancelled: 65 stay open
        httpx.post(
            f"{control}/faults",
            json={"partial_fills": 1, "partial_fill_lots": 1, "partial_remainder": "expire"},
            timeout=10,
        ).raise_for_status()
        out = exit_intent(entry, 130)
        publish(redis_url, keys, out)
        eventually(
            lambda: (o := led.get_order(out.correlation_id)) and o.status == "expired",
            60,
            message="exit expired in part",
        )
        tr = eventually(
            lambda: (t := led.get_tracker(pid)) and t.quantity == 65 and t,
            30,
            message="the rest open",
        )
        assert tr.status == "active"
        adjusted = eventually(
            lambda: [
                m for m in events(r, keys, "positions") if type(m).__name__ == "PositionAdjusted"
            ],
            30,
            message="position.adjusted",
        )
        assert [m.quantity for m in adjusted] == [65]
        ev = eventually(
            lambda: [
                m
                for m in events(r, keys, "orders.events")
                if type(m).__name__ == "OrderCancelled" and m.correlation_id == out.correlation_id
            ],
            30,
            message="exit cancelled event",
        )
        assert "EXPIRED" in ev[0].reason
        retry = exit_intent(entry, 65, attempt=2)
        publish(redis_url, keys, retry)
        closed = eventually(
            lambda: (t := led.get_tracker(pid)) and t.status == "exited" and t,
            60,
            message="retry closed the position",
        )
        entry_fills = led.fills_for_position(pid, "entry")
        exit_fills = led.fills_for_position(pid, "exit")
        assert [f.quantity for f in entry_fills] == [130] and [f.quantity for f in exit_fills] == [
            65,
            65,
        ]
        assert closed.quantity == 130
        assert (
            closed.pnl_paise
            == sum(f.quantity * f.price_paise for f in exit_fills) - 130 * tr.entry_price_paise
        )
    finally:
        ex.kill()
