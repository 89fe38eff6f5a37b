"""Operating a deployment against real Redis, PostgreSQL and supervisord: ``scalper status``,
``scalper tail``, the HTTP API (health, positions, metrics, token) and secret redaction.

Each test fills a fresh namespace and schema with a small, known state (streams with encoded
messages, a consumer group with lag and a pending entry, heartbeats, latest-tick and PnL hashes,
trackers and orders in the ledger) and checks what the operator sees.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest
import redis

from shared import wire
from shared.clock import ist_day, ist_to_ns
from shared.config import load_env
from shared.keys import Keys
from shared.messages import Clock, OrderIntent, Signal, Tick
from shared.ops import api, metrics
from shared.store.base import ist_day_bounds_ns
from shared.supervise import start_supervisord, stop_supervisord
from tests.helpers import eventually

if TYPE_CHECKING:
    from tests.integration.pg import PgSchema

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NS = 1_000_000_000
DHAN_TOKEN = "DHAN-SECRET-eyJhbGciOiJIUzUxMiJ9.c2NhbHBlcg.TOKEN-7f3a9"
API_TOKEN = "api-token-0123456789abcdef"
INTENT_TS = ist_to_ns(date(2026, 12, 1), "09:43", 0.25)


class Deployment:
    def __init__(self, ns: str, pg: PgSchema, redis_url: str) -> None:
        self.ns, self.pg, self.redis_url = ns, pg, redis_url
        self.keys = Keys(ns)

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("SCALPER_API_TOKEN", None)
        env.update({
            "SCALPER_NAMESPACE": self.ns, "SCALPER_DB_SCHEMA": self.pg.schema,
            "REDIS_URL": self.redis_url, "DATABASE_URL": self.pg.url, "SCALPER_MODE": "paper",
            "DHAN_ACCESS_TOKEN": DHAN_TOKEN, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
        })
        env.update(extra)
        return env

    def cli(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "shared.cli", *args], cwd=ROOT,
                              env=self.env(**extra), capture_output=True, text=True, timeout=60)


def _tick(segment: str, sid: int, ltp_paise: int, ts: int, n: int) -> Tick:
    return Tick(msg_id=f"tick-{n}", ts_event=ts, ts_init=ts, tick_id=f"{ts // 1_000_000}-{n}",
                segment=segment, security_id=sid, ltp_paise=ltp_paise, bid_paise=ltp_paise - 5,
                ask_paise=ltp_paise + 5)


def _intent(n: int = 1) -> OrderIntent:
    return OrderIntent(
        msg_id=f"intent-{n}", ts_event=INTENT_TS, ts_init=INTENT_TS, tick_id="1796097780000-0",
        kind="entry", correlation_id=f"E-TEST{n}", position_id=f"pos-{n}", index="NIFTY",
        segment="NSE_FNO", security_id=43210, symbol="NIFTY-Dec2026-26200-CE", side="BUY",
        quantity=65, lot_size=65, ref_price_paise=8125, reason="st_bullish adx 31",
    )  # fmt: skip


@pytest.fixture
def dep(namespace: str, pg_schema: PgSchema, redis_url: str, sync_redis: redis.Redis) -> Deployment:
    d = Deployment(namespace, pg_schema, redis_url)
    k, r = d.keys, sync_redis
    now = time.time_ns()
    # ticks: three ticks and a clock; group "signals" has read one (pending 1) and lags by 3.
    for m in (_tick("IDX_I", 13, 2_615_015, now - 3 * NS, 1), _tick("NSE_FNO", 43210, 15_230, now - 2 * NS, 2),
              _tick("IDX_I", 25, 5_901_020, now - 2 * NS, 3),
              Clock(msg_id="clock-1", ts_event=now - NS, ts_init=now, tick_id="1-0")):
        r.xadd(k.stream("ticks"), wire.encode(m))
    r.xgroup_create(k.stream("ticks"), "signals", id="0")
    r.xreadgroup("signals", "signals-test", {k.stream("ticks"): ">"}, count=1)
    sig = Signal(msg_id="sig-1", ts_event=INTENT_TS, ts_init=INTENT_TS, tick_id="1-0", index="NIFTY",
                 direction="bullish", timeframe_min=1, candle_ts=INTENT_TS, close_paise=2_618_120,
                 supertrend_paise=2_613_088, adx=20.9, confidence=0.8, multiplier=1, reason="flip")
    r.xadd(k.stream("signals"), wire.encode(sig))
    r.xadd(k.stream("signals"), {"type": "signal", "data": '{"type":"signal","msg_id":'})
    r.xadd(k.stream("orders.requests"), wire.encode(_intent()))
    # heartbeats: feed fresh (with the token planted in an extra field), exits 3 s old
    r.set(k.heartbeat("feed", "host-1"), orjson.dumps({
        "service": "feed", "instance": "host-1", "ts": now, "handled": 10, "published": 3,
        "note": f"url?token={DHAN_TOKEN} raw {DHAN_TOKEN}"}), ex=60)
    r.set(k.heartbeat("exits", "host-2"), orjson.dumps({
        "service": "exits", "instance": "host-2", "ts": now - 3 * NS, "handled": 5}), ex=60)
    for seg, sid, ltp in (("IDX_I", 13, 2_615_015), ("IDX_I", 25, 5_901_020), ("NSE_FNO", 43210, 15_230)):
        r.hset(k.latest_tick(seg, sid), mapping={"ltp_paise": ltp, "ts_event": now - 2 * NS,
                                                 "tick_id": "1-0"})
    r.hset(k.pnl("pos-open"), mapping={
        "pnl_paise": 45_500, "pnl_pct": repr(0.0862), "ltp_paise": 15_230, "hwm_pnl_paise": 50_000,
        "hwm_pnl_pct": repr(0.0947), "ts_event": now - 2 * NS})
    r.set(k.trading_state(), "ACTIVE")
    # ledger: one open position, two trades closed today (IST), one yesterday, three orders
    start, _ = ist_day_bounds_ns(ist_day(now))
    led = pg_schema.ledger()
    try:
        common: dict[str, Any] = dict(index_key="NIFTY", segment="NSE_FNO", security_id=43210,
                                      symbol="NIFTY-Dec2026-26200-CE", option_type="CE", quantity=65)
        led.open_tracker(position_id="pos-open", status="active", entry_price_paise=14_530,
                         entry_tick_id="1-0", ts_entry=now - 60 * NS, **common)
        for pid, ts_exit, pnl, charges in (("pos-a", start + NS, 5000, 600),
                                           ("pos-b", start + 2 * NS, -2000, 500),
                                           ("pos-old", start - 3600 * NS, 99_999, 0)):
            led.open_tracker(position_id=pid, status="active", entry_price_paise=10_000,
                             entry_tick_id="1-0", ts_entry=ts_exit - NS, **common)
            led.close_tracker(pid, exit_price_paise=10_000, exit_tick_id="2-0", ts_exit=ts_exit,
                              reason="test", pnl_paise=pnl, charges_paise=charges)
        for cid, status in (("c1", "traded"), ("c2", "rejected"), ("c3", "new")):
            led.create_order(correlation_id=cid, intent_msg_id=f"i-{cid}", position_id=f"p-{cid}",
                             kind="entry", side="BUY", segment="NSE_FNO", security_id=43210,
                             symbol="X", quantity=65, ts_intent=now, intent_tick_id="1-0")
            if status != "new":
                led.set_order_status(cid, status)
        led.set_trading_state("HALTED", "ops test")
    finally:
        led.close()
    return d


def _no_secret(text: str) -> None:
    assert DHAN_TOKEN not in text and API_TOKEN not in text
    assert "DHAN-SECRET" not in text


# -- scalper status ------------------------------------------------------------------------


def test_status_json_reports_services_streams_state_positions_and_today(dep: Deployment) -> None:
    cp = dep.cli("status", "--json", "--namespace", dep.ns, "--schema", dep.pg.schema,
                 "--run-dir", str(Path(tempfile.gettempdir()) / f"nosuch-{dep.ns}"))
    assert cp.returncode == 0, cp.stderr
    _no_secret(cp.stdout + cp.stderr)
    s = orjson.loads(cp.stdout)
    assert (s["namespace"], s["schema"], s["mode"]) == (dep.ns, dep.pg.schema, "paper")
    feed, exits, signals = s["services"]["feed"], s["services"]["exits"], s["services"]["signals"]
    assert feed["supervisor"] == "unknown" and feed["alive"] and 0 <= feed["heartbeat_age_s"] < 10
    assert feed["handled"] == 10 and feed["instances"][0]["info"]["published"] == 3
    assert "***" in feed["instances"][0]["info"]["note"]  # the planted token, redacted
    assert 3 <= exits["heartbeat_age_s"] < 15 and exits["handled"] == 5
    assert signals["heartbeat_age_s"] is None and not signals["alive"]
    ticks = s["streams"]["ticks"]
    assert ticks["length"] == 4 and ticks["groups"] == {"signals": {"lag": 3, "pending": 1}}
    assert s["streams"]["signals"]["length"] == 2 and s["streams"]["deadletter"]["length"] == 0
    assert s["trading_state"]["ledger"]["state"] == "HALTED"
    assert s["trading_state"]["ledger"]["reason"] == "ops test"
    assert s["trading_state"]["redis"] == "ACTIVE"
    [p] = s["positions"]
    assert (p["position_id"], p["quantity"], p["entry_price_paise"]) == ("pos-open", 65, 14_530)
    assert (p["pnl_paise"], p["ltp_paise"], p["hwm_pnl_paise"]) == (45_500, 15_230, 50_000)
    assert p["pnl_pct"] == pytest.approx(0.0862)
    assert s["open_pnl_paise"] == 45_500
    t = s["today"]
    assert (t["trades"], t["winners"], t["gross_pnl_paise"], t["charges_paise"], t["net_pnl_paise"]) == (
        2, 1, 3000, 1100, 1900)
    assert s["errors"] == []
    # Stable: same keys, in the same (sorted) order, on a second run.
    again = orjson.loads(dep.cli("status", "--json", "--namespace", dep.ns,
                                 "--schema", dep.pg.schema).stdout)
    assert list(again) == list(s) == sorted(s)


def test_status_table_is_readable_and_survives_a_missing_schema(dep: Deployment) -> None:
    cp = dep.cli("status", "--namespace", dep.ns, "--schema", dep.pg.schema)
    assert cp.returncode == 0, cp.stderr
    out = cp.stdout
    _no_secret(out)
    assert re.search(r"^feed\s+unknown\s+\d+\.\ds\s+10", out, re.M)
    assert re.search(r"^ticks\s+4\s+signals\s+3\s+1$", out, re.M)
    assert "Trading state: HALTED (ops test" in out and "Redis key: ACTIVE" in out
    assert re.search(r"pos-open\s+NIFTY-Dec2026-26200-CE\s+65\s+145\.30\s+152\.30\s+455\.00\s+\+8\.62%", out)
    assert "2 trades, 1 winners, realised gross ₹30.00, charges ₹11.00, net ₹19.00" in out
    # Without the schema, Redis's half is still shown and the failure is named; nothing created.
    cp = dep.cli("status", "--namespace", dep.ns, "--schema", "no_such_schema_ops")
    assert cp.returncode == 0, cp.stderr
    assert "ledger: schema no_such_schema_ops does not exist" in cp.stdout
    assert re.search(r"^ticks\s+4", cp.stdout, re.M)


def test_status_reads_service_states_from_the_run_dirs_supervisord(dep: Deployment) -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="ops-sv-", dir="/tmp"))  # short: a unix socket path
    conf = run_dir / "test-supervisord.conf"
    conf.write_text("\n".join([
        "[unix_http_server]", "file=%(ENV_SCALPER_RUN_DIR)s/supervisor.sock",
        "[supervisord]", "logfile=%(ENV_SCALPER_RUN_DIR)s/supervisord.log",
        "pidfile=%(ENV_SCALPER_RUN_DIR)s/supervisord.pid", "childlogdir=%(ENV_SCALPER_RUN_DIR)s",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "[supervisorctl]", "serverurl=unix://%(ENV_SCALPER_RUN_DIR)s/supervisor.sock",
        "[program:feed]", "command=/bin/sleep 600", "startsecs=0",
        "[program:exits]", "command=/bin/sleep 600", "autostart=false",
        "[group:scalper]", "programs=feed,exits", "",
    ]))
    proc = start_supervisord(run_dir, {}, conf=conf)
    try:
        def states() -> dict[str, Any] | None:
            cp = dep.cli("status", "--json", "--namespace", dep.ns, "--schema", dep.pg.schema,
                         "--run-dir", str(run_dir))
            svc = orjson.loads(cp.stdout)["services"]
            return svc if svc["feed"]["supervisor"] == "RUNNING" else None

        svc = eventually(states, timeout=30, interval=0.2, message="feed RUNNING under supervisord")
        assert "pid" in svc["feed"]["supervisor_detail"]
        assert svc["exits"]["supervisor"] == "STOPPED"
        assert svc["signals"]["supervisor"] == "absent"
    finally:
        stop_supervisord(proc)
        shutil.rmtree(run_dir, ignore_errors=True)


# -- scalper tail --------------------------------------------------------------------------


def test_tail_from_start_prints_decoded_entries_and_marks_malformed_ones(dep: Deployment) -> None:
    cp = dep.cli("tail", "signals", "--namespace", dep.ns, "--from-start", "--count", "2")
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    assert len(lines) == 2
    assert re.match(r"^\d+-\d+  09:43:00\.250  signal\s+NIFTY bullish 1m close ₹26181\.20", lines[0])
    assert re.match(r"^\d+-\d+  !! MALFORMED \(malformed JSON in signals entry.*\)  raw \{'type': 'signal'",
                    lines[1])
    cp = dep.cli("tail", "ticks", "--namespace", dep.ns, "--from-start", "--count", "4")
    lines = cp.stdout.splitlines()
    assert re.search(r"  tick\s+IDX_I:13 ltp ₹26150\.15 bid 26150\.10 ask 26150\.20$", lines[0])
    assert re.search(r"  tick\s+NSE_FNO:43210 ltp ₹152\.30", lines[1])
    assert re.search(r"  clock$", lines[3])
    cp = dep.cli("tail", "nosuch", "--namespace", dep.ns, "--count", "1")
    assert cp.returncode == 2 and "unknown stream 'nosuch'" in cp.stderr


def test_tail_prints_entries_as_they_arrive(dep: Deployment, sync_redis: redis.Redis,
                                           tmp_path: Path) -> None:
    err = tmp_path / "tail.err"
    with open(err, "w") as ferr:
        p = subprocess.Popen([sys.executable, "-m", "shared.cli", "tail", "orders.requests",
                              "--namespace", dep.ns, "--count", "1"], cwd=ROOT, env=dep.env(),
                             stdout=subprocess.PIPE, stderr=ferr, text=True)
    try:
        eventually(lambda: "tailing" in err.read_text(), timeout=20, message="tail started")
        sync_redis.xadd(dep.keys.stream("orders.requests"), wire.encode(_intent(2)))
        out, _ = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    assert p.returncode == 0, err.read_text()
    [line] = out.splitlines()  # the entry published before tail started is not printed
    assert re.match(r"^\d+-\d+  09:43:00\.250  order\.intent\s+entry BUY 65 "
                    r"NIFTY-Dec2026-26200-CE ref ₹81\.25 \(E-TEST2\)  st_bullish adx 31$", line)


# -- the HTTP API --------------------------------------------------------------------------


@pytest.fixture
def serve(dep: Deployment) -> Iterator[Any]:
    """Start the API in-process on a free loopback port: ``serve(token="", schema=None)``."""
    servers: list[api.ApiServer] = []

    def start(token: str = "", schema: str | None = None) -> str:
        env = load_env(dep.env(SCALPER_DB_SCHEMA=schema or dep.pg.schema))
        server = api.make_server(api.build(env, token), "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()
        s.api.ledger.close()
        s.api.r.close()


def _metric_samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def test_api_health_positions_and_metrics(dep: Deployment, serve: Any,
                                          sync_redis: redis.Redis) -> None:
    hist = metrics.LatencyHistograms(buckets_ms=[5, 50])
    for ms in (1, 20, 80):
        hist.observe("tick_to_exit_intent", ms)
    sync_redis.set(metrics.metrics_key(dep.keys, "exits"), hist.to_json("exits", time.time_ns()), ex=60)
    # A writer that leaks the token into a label: the exposition must still not show it.
    sync_redis.set(metrics.metrics_key(dep.keys, "sync", "x"),
                   hist.to_json("sync", time.time_ns(), instance=f"leak-{DHAN_TOKEN}"), ex=60)
    base = serve()
    with httpx.Client(base_url=base, timeout=10) as c:
        h = c.get("/api/health")
        assert h.status_code == 200 and h.headers["content-type"] == "application/json"
        body = h.json()
        assert (body["mode"], body["namespace"], body["replay"]) == ("paper", dep.ns, False)
        assert body["feed_connected"] is True and body["ok"] is True
        assert 1.5 < body["tick_age_s"] < 60  # newest tick (IDX_I 25) is ~2 s old; the clock is skipped
        assert body["services"]["feed"]["alive"] and not body["services"]["sync"]["alive"]
        assert body["positions"] == 1 and body["trading_state"] == "HALTED"
        assert body["tick_cache_size"] == 3
        ltps = body["sample_ltps"]
        assert list(ltps) == ["IDX_I:13", "IDX_I:25", "IDX_I:27", "IDX_I:51"]
        assert ltps["IDX_I:13"]["ltp_paise"] == 2_615_015 and ltps["IDX_I:13"]["ltp_rupees"] == "26150.15"
        assert ltps["IDX_I:27"] is None and ltps["IDX_I:51"] is None

        pos = c.get("/api/positions").json()
        assert pos["count"] == 1 and pos["open_pnl_paise"] == 45_500
        assert pos["positions"][0]["position_id"] == "pos-open"
        assert pos["positions"][0]["hwm_pnl_pct"] == pytest.approx(0.0947)

        m1 = c.get("/metrics")
        assert m1.status_code == 200 and m1.headers["content-type"].startswith("text/plain; version=0.0.4")
        s = _metric_samples(m1.text)
        assert s['scalper_stream_length{stream="ticks"}'] == 4
        assert s['scalper_consumer_group_lag{stream="ticks",group="signals"}'] == 3
        assert s['scalper_consumer_group_pending{stream="ticks",group="signals"}'] == 1
        assert s['scalper_orders{kind="entry",status="rejected"}'] == 1
        assert s["scalper_order_rejections"] == 1 and s["scalper_open_positions"] == 1
        assert s["scalper_open_pnl_rupees"] == 455.0
        assert s['scalper_realised_pnl_rupees{basis="gross"}'] == 30.0
        assert s['scalper_realised_pnl_rupees{basis="net"}'] == 19.0
        assert s["scalper_trades_today"] == 2
        assert s['scalper_service_heartbeat_age_seconds{service="exits",instance="host-2"}'] >= 3
        assert s['scalper_service_handled_total{service="feed",instance="host-1"}'] == 10
        lat = 'scalper_stage_latency_seconds_bucket{service="exits",stage="tick_to_exit_intent",le='
        assert (s[lat + '"0.005"}'], s[lat + '"0.05"}'], s[lat + '"+Inf"}']) == (1, 2, 3)
        assert "scalper_tick_rate_per_second" not in s  # needs two scrapes
        assert 'instance="leak-***"' in m1.text
        now = time.time_ns()
        for n in range(5):
            sync_redis.xadd(dep.keys.stream("ticks"), wire.encode(_tick("IDX_I", 13, 2_615_100, now, 10 + n)))
        s2 = _metric_samples(c.get("/metrics").text)
        assert s2['scalper_stream_entries_added_total{stream="ticks"}'] == 9
        assert s2["scalper_tick_rate_per_second"] > 0

        assert c.get("/nope").status_code == 404
        assert c.post("/api/health").status_code == 405
        for r in (h, m1):
            _no_secret(r.text)
        _no_secret(c.get("/api/positions").text)


def test_api_requires_the_bearer_token_when_one_is_set(dep: Deployment, serve: Any) -> None:
    base = serve(token=API_TOKEN)
    with httpx.Client(base_url=base, timeout=10) as c:
        for path in ("/api/health", "/api/positions", "/metrics", "/nope"):
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert c.get("/api/health", headers={"Authorization": "Bearer wrong-token-000000000"}).status_code == 401
        assert c.get("/api/health", headers={"Authorization": API_TOKEN}).status_code == 401
        for path in ("/api/health", "/api/positions", "/metrics"):
            r = c.get(path, headers={"Authorization": f"Bearer {API_TOKEN}"})
            assert r.status_code == 200
            _no_secret(r.text)


def test_api_without_the_ledger_still_answers_health_and_says_why(dep: Deployment, serve: Any) -> None:
    base = serve(schema="no_such_schema_api")
    with httpx.Client(base_url=base, timeout=10) as c:
        body = c.get("/api/health").json()
        assert body["ok"] is False and body["positions"] is None
        assert any("no_such_schema_api does not exist" in e for e in body["errors"])
        assert body["trading_state"] == "ACTIVE"  # the Redis key, when the ledger is unreachable
        assert c.get("/api/positions").status_code == 503
        assert "scalper_open_positions" not in _metric_samples(c.get("/metrics").text)


def test_api_refuses_a_non_loopback_bind_without_a_token(dep: Deployment) -> None:
    for host in ("0.0.0.0", "192.0.2.10", "::", "example.org"):
        cp = dep.cli("api", "--host", host, "--port", "8787", "--namespace", dep.ns)
        assert cp.returncode == 2, (host, cp.stdout, cp.stderr)
        assert "refusing to serve" in cp.stderr and "SCALPER_API_TOKEN" in cp.stderr
    cp = dep.cli("api", "--host", "0.0.0.0", "--port", "8787", SCALPER_API_TOKEN="short")
    assert cp.returncode == 2 and "too short" in cp.stderr
    assert api.is_loopback("127.0.0.1") and api.is_loopback("::1") and api.is_loopback("localhost")
    assert api.is_loopback("127.5.0.1") and not api.is_loopback("0.0.0.0")
    api.check_bind("0.0.0.0", API_TOKEN)  # with a token it may bind anywhere
    api.check_bind("127.0.0.1", "")


def test_api_command_serves_on_loopback_and_never_shows_the_access_token(
        dep: Deployment, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = tmp_path / "api.err"
    with open(err, "w") as ferr:
        p = subprocess.Popen([sys.executable, "-m", "shared.cli", "api", "--port", str(port),
                              "--namespace", dep.ns, "--schema", dep.pg.schema],
                             cwd=ROOT, env=dep.env(SCALPER_API_TOKEN=API_TOKEN),
                             stdout=ferr, stderr=subprocess.STDOUT)
    try:
        def health() -> httpx.Response | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5,
                                 headers={"Authorization": f"Bearer {API_TOKEN}"})
            except httpx.TransportError:
                assert p.poll() is None, err.read_text()
                return None

        r = eventually(health, timeout=30, interval=0.1, message="scalper api answers")
        assert r.status_code == 200 and r.json()["namespace"] == dep.ns
        _no_secret(r.text)
        _no_secret(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5,
                             headers={"Authorization": f"Bearer {API_TOKEN}"}).text)
    finally:
        p.terminate()
        p.wait(20)
    log = err.read_text()
    assert f"scalper api on http://127.0.0.1:{port}" in log
    _no_secret(log)


# -- scalper report --html / --png -----------------------------------------------------------


def test_report_writes_html_with_embedded_equity_png_and_the_png_alone(
        dep: Deployment, tmp_path: Path) -> None:
    html_path, png_path = tmp_path / "report.html", tmp_path / "equity.png"
    cp = dep.cli("report", "--namespace", dep.ns, "--schema", dep.pg.schema,
                 "--html", str(html_path), "--png", str(png_path))
    assert cp.returncode == 0, cp.stderr
    # Closed in exit order: pos-old (+999.99), pos-a (net +44.00), pos-b (net -25.00).
    assert "trades 3   winners 2 (66.7%)   gross PnL ₹1029.99   net PnL ₹1018.99" in cp.stdout
    assert "max drawdown (net, closed-trade equity) ₹25.00" in cp.stdout
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = html_path.read_text()
    assert 'src="data:image/png;base64,' in page and "₹1018.99" in page and "₹-25.00" in page
    assert page.count("NIFTY-Dec2026-26200-CE") == 3
