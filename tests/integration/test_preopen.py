"""``scalper preopen`` end to end: paper mode on a real ledger and Redis, live mode against the
DhanHQ simulator (in a thread of this process, paused clock; the command runs as a subprocess).

The simulator answers without an HTTP ``Date`` header (DhanHQ's servers send one), so the tests
put one on every answer — at a chosen offset from the true time, which is how the clock check is
driven out of tolerance.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import yaml

import dhansim.httpserver
from dhansim import SPEED_PAUSED, run_simulator
from shared.instruments import parse_scrip_master
from shared.keys import Keys
from tests.integration.procs import ROOT

pytestmark = pytest.mark.integration

SAMPLE = ROOT / "data" / "sample"
DAY = "2026-12-01"  # the sample session's day (a NIFTY expiry Tuesday)
TOKEN = "preopen-test-token-5f3a9c"
CLIENT_ID = "1100000077"


class DateHeader:
    """What the patched simulator puts in ``Date``: the true time plus ``offset_s``."""

    def __init__(self) -> None:
        self.offset_s = 0.0


class SimThread:
    """The simulator on its own event loop in a thread, so a test can run the CLI blocking."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.sim: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with run_simulator(
            session=str(SAMPLE / "session.parquet"),
            instruments=str(SAMPLE / "instruments.csv"),
            speed=SPEED_PAUSED,
            token=TOKEN,
            client_id=CLIENT_ID,
            rate_limits=False,
        ) as sim:
            self.sim = sim
            self.ready.set()
            await self._stop.wait()

    def __enter__(self) -> SimThread:
        self._thread.start()
        assert self.ready.wait(60), "simulator did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module")
def date_header() -> Iterator[DateHeader]:
    header = DateHeader()
    original = dhansim.httpserver._encode

    def encode_with_date(conn: Any, response: Any) -> bytes:
        raw = original(conn, response)
        head, sep, body = raw.partition(b"\r\n\r\n")
        lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"date:")]
        date = email.utils.formatdate(time.time() + header.offset_s, usegmt=True)
        lines.insert(1, f"date: {date}".encode())
        return b"\r\n".join(lines) + sep + body

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dhansim.httpserver, "_encode", encode_with_date)
        yield header


@pytest.fixture(scope="module")
def sim(date_header: DateHeader) -> Iterator[Any]:
    with SimThread() as t:
        yield t.sim


@pytest.fixture
def deployment(pg_schema, namespace, redis_url, tmp_path):
    """A migrated schema with the sample's instruments, a namespace, and a config enabling
    NIFTY only (the sample lists NIFTY options only)."""
    led = pg_schema.ledger()
    led.upsert_instruments(parse_scrip_master(SAMPLE / "instruments.csv"))
    led.close()
    cfg = yaml.safe_load((ROOT / "config" / "algo.yml").read_text())
    for ix in cfg["indices"]:
        ix["enabled"] = ix["key"] == "NIFTY"
    path = tmp_path / "algo.yml"
    path.write_text(yaml.safe_dump(cfg))
    env = {
        "DATABASE_URL": pg_schema.url,
        "SCALPER_DB_SCHEMA": pg_schema.schema,
        "SCALPER_NAMESPACE": namespace,
        "REDIS_URL": redis_url,
        "SCALPER_CONFIG": str(path),
        "SCALPER_MODE": "paper",
        "DHAN_ACCESS_TOKEN": "",
        "PYTHONPATH": str(ROOT),
    }
    return pg_schema, namespace, env


def scalper(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    cp = subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        cwd=ROOT,
        text=True,
        env={**os.environ, **env},
        capture_output=True,
        timeout=120,
    )
    print(cp.stdout, cp.stderr)
    return cp


def preopen(env: dict[str, str], *extra: str) -> tuple[int, dict[str, Any], str]:
    cp = scalper(env, "preopen", "--json", "--day", DAY, *extra)
    return cp.returncode, orjson.loads(cp.stdout), cp.stdout + cp.stderr


def statuses(doc: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in doc["checks"]}


def trading_state(pg, namespace: str, redis_url: str) -> tuple[str, str, str | None]:
    led = pg.ledger()
    row = led.get_trading_state()
    led.close()
    r = redis.Redis.from_url(redis_url)
    raw = r.get(Keys(namespace).trading_state())
    r.close()
    return row.state, row.reason, raw.decode() if raw else None


def live(env: dict[str, str], sim: Any, token: str = TOKEN) -> dict[str, str]:
    return {
        **env,
        "SCALPER_MODE": "live",
        "DHAN_CLIENT_ID": CLIENT_ID,
        "DHAN_ACCESS_TOKEN": token,
        "DHAN_REST_URL": sim.rest_url,
    }


# ----------------------------------------------------------------------------- paper mode


def test_paper_preopen_on_a_ready_deployment_passes_and_leaves_the_state_alone(
    deployment, redis_url
):
    pg, ns, env = deployment
    code, doc, _ = preopen(env)
    assert code == 0 and doc["ok"] is True and doc["halted"] is False
    assert statuses(doc) == {
        "trading_day": "pass",
        "redis": "pass",
        "postgres": "pass",
        "instruments": "pass",
        "access_token": "skip",
        "funds": "pass",
        "clock": "pass",
    }
    assert trading_state(pg, ns, redis_url)[0] == "ACTIVE"


def test_paper_preopen_with_stale_instruments_halts_until_resume(deployment, redis_url):
    pg, ns, env = deployment
    conn = pg.connect()
    conn.execute("UPDATE instruments SET updated_at = now() - interval '30 hours'")
    conn.close()
    code, doc, _ = preopen(env)
    assert code == 1 and doc["halted"] is True and doc["halt_errors"] == []
    assert [n for n, s in statuses(doc).items() if s == "fail"] == ["instruments"]
    state, reason, in_redis = trading_state(pg, ns, redis_url)
    assert (state, in_redis) == ("HALTED", "HALTED")
    assert (
        reason.startswith("preopen failed: instruments: updated ") and "older than 24 h" in reason
    )
    assert scalper(env, "resume").returncode == 0
    assert trading_state(pg, ns, redis_url)[::2] == ("ACTIVE", "ACTIVE")


def test_paper_preopen_on_an_unmigrated_schema_and_a_holiday_lists_every_failure(
    pg_unmigrated, namespace, redis_url, tmp_path
):
    env = {
        "DATABASE_URL": pg_unmigrated.url,
        "SCALPER_DB_SCHEMA": pg_unmigrated.schema,
        "SCALPER_NAMESPACE": namespace,
        "REDIS_URL": redis_url,
        "SCALPER_MODE": "paper",
        "PYTHONPATH": str(ROOT),
    }
    code, doc, _ = preopen(env, "--day", "2026-12-25")  # the later --day wins: Christmas
    failed = {n for n, s in statuses(doc).items() if s == "fail"}
    assert code == 1 and failed == {"trading_day", "postgres", "instruments"}
    # The ledger has no trading_state table to halt; Redis is still halted and the error said.
    assert any(e.startswith("ledger:") for e in doc["halt_errors"])
    r = redis.Redis.from_url(redis_url)
    assert r.get(Keys(namespace).trading_state()) == b"HALTED"
    r.close()


def test_preopen_with_redis_down_fails_that_check_and_halts_in_the_ledger(deployment):
    pg, ns, env = deployment
    code, doc, _ = preopen({**env, "REDIS_URL": "redis://127.0.0.1:1/0"})
    assert code == 1 and [n for n, s in statuses(doc).items() if s == "fail"] == ["redis"]
    led = pg.ledger()
    assert led.get_trading_state().state == "HALTED"
    led.close()
    assert any(e.startswith("redis:") for e in doc["halt_errors"])


# ----------------------------------------------------------------------------- live mode


def test_live_preopen_against_the_simulator_passes(deployment, sim, date_header, redis_url):
    pg, ns, env = deployment
    date_header.offset_s = 0.0
    code, doc, out = preopen(live(env, sim))
    assert code == 0, out
    assert set(statuses(doc).values()) == {"pass"}
    checks = {c["name"]: c["detail"] for c in doc["checks"]}
    assert f"answered for client {CLIENT_ID}" in checks["access_token"]
    assert checks["funds"].endswith("available (GET /fundlimit)")
    assert "of the DhanHQ REST endpoint (127.0.0.1:" in checks["clock"]
    assert TOKEN not in out
    assert trading_state(pg, ns, redis_url)[0] == "ACTIVE"


def test_paper_preopen_with_a_token_checks_it_for_the_live_feed(deployment, sim, date_header):
    _, _, env = deployment
    paper = {**live(env, sim), "SCALPER_MODE": "paper"}
    code, doc, out = preopen(paper)
    details = {c["name"]: c["detail"] for c in doc["checks"]}
    assert code == 0 and statuses(doc)["access_token"] == "pass", out
    assert details["access_token"].endswith("(paper mode: the live market feed uses it)")
    assert details["funds"].startswith("paper balance") and "PostgreSQL now()" in details["clock"]
    code, doc, _ = preopen({**paper, "DHAN_ACCESS_TOKEN": "not-the-token-123"})
    assert code == 1 and [n for n, s in statuses(doc).items() if s == "fail"] == ["access_token"]


def test_live_preopen_with_a_refused_token_halts_and_never_prints_the_token(
    deployment, sim, date_header, redis_url
):
    pg, ns, env = deployment
    date_header.offset_s = 0.0
    bad = "refused-token-" + os.urandom(6).hex()
    code, doc, out = preopen(live(env, sim, token=bad))
    failed = {n for n, s in statuses(doc).items() if s == "fail"}
    assert code == 1 and failed == {"access_token", "funds"}
    assert "DH-901" in {c["name"]: c["detail"] for c in doc["checks"]}["access_token"]
    assert statuses(doc)["clock"] == "pass"  # the 401 answer still carried the broker's Date
    assert bad not in out and TOKEN not in out
    state, reason, in_redis = trading_state(pg, ns, redis_url)
    assert (state, in_redis) == ("HALTED", "HALTED") and "access_token" in reason
    assert bad not in reason


def test_live_preopen_with_a_crlf_token_passes_because_the_token_is_stripped_and_never_shows_it(
    deployment, sim, date_header
):
    """A CRLF .env leaves a trailing '\r': load_env strips it, so the token works."""
    _, _, env = deployment
    date_header.offset_s = 0.0
    code, doc, out = preopen(live(env, sim, token=TOKEN + "\r"))
    assert code == 0 and statuses(doc)["access_token"] == "pass"
    assert TOKEN not in out


def test_live_preopen_with_the_clock_off_by_ten_seconds_fails_the_clock_check(
    deployment, sim, date_header
):
    _, _, env = deployment
    date_header.offset_s = 10.0  # the broker is 10 s ahead: our clock is behind
    try:
        code, doc, _ = preopen(live(env, sim))
    finally:
        date_header.offset_s = 0.0
    assert code == 1 and [n for n, s in statuses(doc).items() if s == "fail"] == ["clock"]
    detail = {c["name"]: c["detail"] for c in doc["checks"]}["clock"]
    assert "behind the DhanHQ REST endpoint" in detail


def test_live_preopen_with_an_unreachable_broker_fails_token_funds_and_clock(deployment):
    _, _, env = deployment
    env = {
        **env,
        "SCALPER_MODE": "live",
        "DHAN_CLIENT_ID": CLIENT_ID,
        "DHAN_ACCESS_TOKEN": TOKEN,
        "DHAN_REST_URL": "http://127.0.0.1:1/v2",
    }
    code, doc, out = preopen(env)
    failed = {n for n, s in statuses(doc).items() if s == "fail"}
    assert code == 1 and failed == {"access_token", "funds", "clock"}
    assert TOKEN not in out


def test_eod_writes_the_day_report(deployment, tmp_path):
    _, _, env = deployment
    cp = scalper(env, "eod", "--day", DAY, "--run-dir", str(tmp_path))
    assert cp.returncode == 0
    assert f"End of day {DAY}" in cp.stdout
    assert Path(tmp_path / "reports" / f"{DAY}.html").read_text().startswith("<!")
