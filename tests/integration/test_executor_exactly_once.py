"""Exactly-once orders against the DhanHQ simulator: the live executor is killed with SIGKILL
before the order row is written, after the row but before the HTTP call, after the call, and
after the fill is recorded but before the intent is acknowledged. After a restart there is
exactly one broker order per intent, one fill, and one ``order.filled`` event."""

from __future__ import annotations

import asyncio
import signal

import httpx
import pytest
import redis

from shared import bus as busmod
from shared import wire
from shared.instruments import parse_scrip_master
from shared.keys import Keys
from shared.messages import OrderIntent
from shared.simrun import SIM_CLIENT, SIM_TOKEN, live_env, start_simulator
from tests.helpers import eventually
from tests.integration.procs import ROOT, Proc, service_env

pytestmark = pytest.mark.integration
SAMPLE = ROOT / "data" / "sample"
PE_26150 = 51647  # NIFTY-Dec2026-26150-PE in the sample instruments


@pytest.fixture(scope="module")
def simulator(tmp_path_factory):
    log = tmp_path_factory.mktemp("sim") / "dhansim.log"
    proc, ready = start_simulator(SAMPLE / "session.parquet", SAMPLE / "instruments.csv", log,
                                  speed="5", from_hhmm="09:20", to_hhmm="10:30")
    yield ready
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)


def broker_orders(ready: dict, correlation_id: str) -> list[dict]:
    h = {"access-token": SIM_TOKEN, "client-id": SIM_CLIENT}
    book = httpx.get(f"{ready['rest_url']}/orders", headers=h, timeout=10).json()
    return [o for o in book if o.get("correlationId") == correlation_id]


@pytest.mark.parametrize("point", ["before_row", "after_row", "after_call", "before_ack"])
def test_killed_executor_places_exactly_one_broker_order_per_intent(
    point, simulator, pg_schema, namespace, redis_url, tmp_path
):
    keys = Keys(namespace)
    led = pg_schema.ledger()
    led.upsert_instruments(parse_scrip_master(SAMPLE / "instruments.csv"))
    cid = f"E-ONCE-{point.replace('_', '')}"[:30]
    intent = OrderIntent(
        msg_id=f"intent-{cid}", ts_event=1, ts_init=1, tick_id="1-0", kind="entry", correlation_id=cid,
        position_id=f"P-{cid}", index="NIFTY", segment="NSE_FNO", security_id=PE_26150,
        symbol="NIFTY-Dec2026-26150-PE", side="BUY", quantity=65, lot_size=65, ref_price_paise=9000,
        reason="exactly-once test",
    )

    async def put() -> None:
        c = busmod.connect(redis_url)
        await busmod.Bus(c, keys, {}).publish("orders.requests", [intent])
        await c.aclose()

    asyncio.run(put())
    env = service_env(namespace, pg_schema.schema, redis_url, pg_schema.url, **live_env(simulator),
                      SCALPER_TEST_CRASH_AT=point, SCALPER_TEST_CRASH_ONCE=str(tmp_path / "crashed"))
    first = Proc("services.executor", env, tmp_path, name="executor1")
    try:
        assert first.p.wait(60) == -signal.SIGKILL, first.log()[-2000:]
        assert (tmp_path / "crashed").exists()
        second = Proc("services.executor", env, tmp_path, name="executor2")
        try:
            order = eventually(lambda: (o := led.get_order(cid)) and o.status == "traded" and o, 60,
                               message="order traded after restart")
            r = redis.Redis.from_url(redis_url)
            dec = wire.StreamDecoder("orders.events")
            eventually(lambda: any(dec.decode(f).msg_id.startswith("fill-") for _, f in
                                   r.xrange(keys.stream("orders.events"))), 30, message="fill published")
            assert len(broker_orders(simulator, cid)) == 1, "the intent produced more or less than one broker order"
            assert order.broker_order_id == broker_orders(simulator, cid)[0]["orderId"]
            assert len(led.fills_for(cid)) == 1
            filled = [m for m in (dec.decode(f) for _, f in r.xrange(keys.stream("orders.events")))
                      if type(m).__name__ == "OrderFilled"]
            assert len(filled) == 1 and filled[0].correlation_id == cid
            tr = led.get_tracker(f"P-{cid}")
            assert tr is not None and tr.status == "active" and tr.paper is False
            r.close()
        finally:
            second.kill()
    finally:
        first.kill()
        led.close()
