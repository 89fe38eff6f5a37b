"""The live code path end to end against the DhanHQ simulator (``scalper simrun``).

- Over 30 minutes of the sample session the live run takes the same trades as a paper replay of
  the same span: same instruments, sides, quantities and exit reasons. Fill prices differ by a
  documented rule: paper fills at the first tick at or after the deciding tick plus
  ``paper.fill_latency_ms``; live fills at the simulator's first tick after the order *arrives*,
  which trails the deciding tick by the pipeline's wall latency times the replay speed. So each
  live fill price must lie within the option's price range between the deciding tick and the
  simulator's fill time. The simulator's trade book matches the project's fills.
- With orders disabled no order reaches the simulator and the would-be payloads are logged.
- With faults switched on one after another (429 bursts, slow answers, 5xx, a dropped feed and
  order-update socket, duplicated and reordered packets, a rejected order, an order whose answer
  is lost, and
  finally a disconnect 807), the run finishes with no duplicate order, no lost fill, and every
  failure in a readable log line.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest
import redis

from shared.cli import _env, reset_deployment
from shared.clock import hhmm_to_minutes, ist_minute_of_day
from shared.simrun import SimRun
from tests.integration.procs import ROOT

pytestmark = pytest.mark.integration
SAMPLE = ROOT / "data" / "sample"
DB_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
SPAN = ("09:15", "09:45")


@pytest.fixture
def deployments(redis_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", DB_URL)
    monkeypatch.setenv("REDIS_URL", redis_url)
    names: list[str] = []

    def make(prefix: str):
        n = f"{prefix}_{uuid.uuid4().hex[:8]}"
        names.append(n)
        return _env(n, n)

    yield make
    r = redis.Redis.from_url(redis_url)
    with psycopg.connect(DB_URL, autocommit=True) as c:
        for n in names:
            c.execute(f"DROP SCHEMA IF EXISTS {n} CASCADE")
            for k in r.scan_iter(match=f"scalper:{{{n}}}:*", count=2000):
                r.delete(k)
    r.close()


def trades(schema: str) -> list[tuple]:
    with psycopg.connect(DB_URL) as c:
        c.execute(f"SET search_path = {schema}")
        return c.execute(
            "SELECT security_id, symbol, status, quantity, entry_price_paise, exit_price_paise, ts_entry, ts_exit,"
            " exit_reason, position_id FROM position_trackers WHERE status IN ('active','exited') ORDER BY ts_entry"
        ).fetchall()


def rows(schema: str, sql: str) -> list[tuple]:
    with psycopg.connect(DB_URL) as c:
        c.execute(f"SET search_path = {schema}")
        return c.execute(sql).fetchall()


def ltp_range(ticks: list[tuple[int, int, int]], sid: int, t0: int, t1: int) -> tuple[int, int]:
    px = [p for ts, s, p in ticks if s == sid and t0 <= ts <= t1]
    return min(px), max(px)


def session_ticks() -> list[tuple[int, int, int]]:
    import polars as pl

    df = pl.read_parquet(SAMPLE / "session.parquet", columns=["ts_recv_ns", "security_id", "ltp"])
    return [(t, s, round(p * 100)) for t, s, p in df.iter_rows()]


def rule(reason: str) -> str:
    return reason.split(":", 1)[0]


def test_live_run_takes_the_same_trades_as_paper_and_matches_the_broker(deployments, tmp_path):
    import subprocess
    import sys

    paper = deployments("lpaper")
    out = subprocess.run(
        [sys.executable, "-m", "shared.cli", "replay", str(SAMPLE / "session.parquet"), "--from", SPAN[0],
         "--to", SPAN[1], "--namespace", paper.namespace, "--schema", paper.db_schema,
         "--run-dir", str(tmp_path / "paper")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0, out.stderr[-3000:]
    live = deployments("llive")
    reset_deployment(live, SAMPLE / "instruments.csv")
    with SimRun(SAMPLE / "session.parquet", SAMPLE / "instruments.csv", env=live, run_dir=tmp_path / "live",
                speed="15", from_hhmm=SPAN[0], to_hhmm=SPAN[1], warmup=SAMPLE / "previous.parquet") as run:
        run.wait_done(600)
        broker_trades = run.broker("/trades")
    p, lv = trades(paper.db_schema), trades(live.db_schema)
    assert p, "the paper span has no trade; nothing is compared"
    assert [(t[0], t[1], t[2], t[3], rule(t[8] or "")) for t in lv] == \
           [(t[0], t[1], t[2], t[3], rule(t[8] or "")) for t in p]
    ticks = session_ticks()
    s = 1_000_000_000  # the broker's times have one-second resolution
    for pt, lt in zip(p, lv, strict=True):
        # entry: between the deciding tick (just before paper's fill) and the simulator's fill
        lo, hi = ltp_range(ticks, lt[0], min(pt[6], lt[6]) - s, lt[6] + s)
        assert lo <= lt[4] <= hi, (lt, lo, hi)
        if lt[2] == "exited":
            lo, hi = ltp_range(ticks, lt[0], min(pt[7], lt[7]) - s, lt[7] + s)
            assert lo <= lt[5] <= hi, (lt, lo, hi)
    # the simulator's trade book is the project's fills
    fills = rows(live.db_schema, "SELECT o.broker_order_id, f.quantity, f.price_paise FROM fills f"
                                 " JOIN orders o USING (correlation_id) ORDER BY 1")
    book = sorted((t["orderId"], int(t["tradedQuantity"]), round(float(t["tradedPrice"]) * 100)) for t in broker_trades)
    assert sorted(fills) == book


def test_orders_disabled_sends_nothing_and_logs_the_payloads(deployments, tmp_path):
    live = deployments("ldry")
    reset_deployment(live, SAMPLE / "instruments.csv")
    with SimRun(SAMPLE / "session.parquet", SAMPLE / "instruments.csv", env=live, run_dir=tmp_path,
                speed="30", from_hhmm="09:15", to_hhmm="09:35", orders_enabled=False,
                warmup=SAMPLE / "previous.parquet") as run:
        run.wait_done(600)
        broker_orders = run.broker("/orders")
    assert broker_orders == [] or broker_orders == {}
    orders = rows(live.db_schema, "SELECT status, payload FROM orders")
    assert orders and all(o[0] == "dry_run" for o in orders)
    log = (tmp_path / "executor.log").read_text()
    dry = [orjson.loads(ln) for ln in log.splitlines() if "dry run: order not sent" in ln]
    assert len(dry) == len(orders)
    assert dry[0]["payload"]["transactionType"] == "BUY" and dry[0]["payload"]["orderType"] == "MARKET"
    assert set(dry[0]["payload"]) == {"dhanClientId", "correlationId", "transactionType", "exchangeSegment",
                                      "productType", "orderType", "validity", "securityId", "quantity", "price"}


class FaultDriver(threading.Thread):
    """Switches simulator faults on at chosen simulated times (and on observed outcomes)."""

    def __init__(self, run: SimRun, schema: str) -> None:
        super().__init__(daemon=True)
        self.sim, self.schema = run, schema
        self.applied: list[str] = []
        self.stop = threading.Event()

    def post(self, body: dict) -> None:
        httpx.post(f"{self.sim.ready['control_url']}/faults", json=body, timeout=10).raise_for_status()
        self.applied.append(",".join(body))

    def run(self) -> None:  # noqa: C901 - a plain schedule
        plan = [
            ("09:16", {"http_429": 2, "http_path_prefix": "/v2/orders", "http_method": "POST",
                       "feed_duplicate": 30, "feed_reorder": 30}),
            ("09:18", {"delay_ms": 400}),
            ("09:19", {"delay_ms": 0}),
            ("09:20", {"drop_feed": True}),
            ("09:22", {"drop_order_ws": True}),
            ("09:27", {"reject_orders": 1, "reject_reason": "RMS: test rejection"}),
            ("09:43", {"feed_disconnect": 807}),
        ]
        timeout_armed = False
        while not self.stop.is_set():
            st = self.sim.sim_state()
            now_min = ist_minute_of_day(st["now_ns"])
            while plan and now_min >= hhmm_to_minutes(plan[0][0]):
                self.post(plan.pop(0)[1])
            if not timeout_armed and rows(self.schema, "SELECT 1 FROM orders WHERE status = 'rejected' AND kind = 'exit'"):
                self.post({"timeout_after_accept": 1, "timeout_mode": "drop", "http_5xx": 1})
                timeout_armed = True
            if st.get("finished"):
                return
            time.sleep(0.05)


def test_faults_one_after_another_lose_no_fill_and_duplicate_no_order(deployments, tmp_path):
    live = deployments("lfault")
    reset_deployment(live, SAMPLE / "instruments.csv")
    with SimRun(SAMPLE / "session.parquet", SAMPLE / "instruments.csv", env=live, run_dir=tmp_path,
                speed="15", from_hhmm=SPAN[0], to_hhmm=SPAN[1], warmup=SAMPLE / "previous.parquet") as run:
        driver = FaultDriver(run, live.db_schema)
        driver.start()
        try:
            run.wait_done(600)
        finally:
            driver.stop.set()
            driver.join(10)
        httpx.delete(f"{run.ready['control_url']}/faults", timeout=10).raise_for_status()
        broker_orders = run.broker("/orders")
        broker_trades = run.broker("/trades")
    print("faults applied:", driver.applied)
    assert len(driver.applied) >= 7
    cids = [o["correlationId"] for o in broker_orders]
    assert len(cids) == len(set(cids)), "a correlation id reached the broker twice"
    ours = rows(live.db_schema, "SELECT correlation_id, status, broker_order_id FROM orders")
    assert {c for c, _, _ in ours} >= set(cids), "the broker has an order we do not know"
    traded_at_broker = {o["orderId"] for o in broker_orders if o["orderStatus"].upper() == "TRADED"}
    fills = {r[0] for r in rows(live.db_schema, "SELECT o.broker_order_id FROM fills f JOIN orders o USING (correlation_id)")}
    assert traded_at_broker == fills, "a broker fill is missing from the books (or the reverse)"
    assert len(broker_trades) == len(fills)
    logs = {p.stem: p.read_text() for p in Path(tmp_path).glob("*.log")}
    assert "order rate limited by the broker; retrying" in logs["executor"]
    assert "RMS: test rejection" in logs["executor"] and "order rejected" in logs["executor"]
    assert "exit rejected" in logs["exits"]
    assert "market feed halted" in logs["feed"] and "807" in logs["feed"]
    assert "reconnect" in logs["feed"].lower()
