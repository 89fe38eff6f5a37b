"""The DhanHQ access token never appears in a log line, a stream entry, an exception or the database.

One live run against the simulator (``scalper simrun``, 09:15–09:35 so that orders are placed
and filled, orders enabled, DEBUG logs so the REST and WebSocket request traces are written too) with a fresh token, namespace ``tok_<hex>`` and
schema ``tok_<hex>``; then every file under ``run/tok_<hex>/`` (service, supervisord and simulator
logs, recordings), every key and stream entry of the namespace (XRANGE of every stream, GET /
HGETALL / SMEMBERS / ZRANGE / LRANGE of the rest, consumer names) and every column of every table
of the schema are searched for the token. The namespace, schema and run directory are removed
afterwards.

The simulator's own log: ``dhansim.log`` in the run directory only gets its stderr (its JSON log
lines go to a pipe that ``shared/simrun.py`` stops reading once it is ready), and it holds no
token; nothing is excluded from the search.

Exception paths: the REST client against a closed port and against a server that echoes the
token in its error body, ``scalper preopen`` and ``scalper sync --force`` pointed at a dead REST
endpoint, and the live feed service pointed at a dead and at an invalid WebSocket URL.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import traceback
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import orjson
import psycopg
import pytest
import redis
from psycopg import sql

from shared.dhan.rest import DhanRest
from shared.dhan.retry import RetryPolicy
from shared.keys import Keys
from tests.helpers import eventually
from tests.integration.pg import database_url
from tests.integration.procs import ROOT

pytestmark = pytest.mark.integration

SESSION = ROOT / "data" / "sample" / "session.parquet"
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CLIENT_ID = "1100000001"


class LiveRun:
    def __init__(self, token: str, name: str, output: str) -> None:
        self.token, self.name, self.output = token, name, output
        self.run_dir = ROOT / "run" / name


def _cleanup(name: str) -> None:
    r = redis.Redis.from_url(REDIS_URL)
    for k in r.scan_iter(match=Keys(name).all_pattern(), count=2000):
        r.delete(k)
    r.close()
    with psycopg.connect(database_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
    shutil.rmtree(ROOT / "run" / name, ignore_errors=True)


@pytest.fixture(scope="module")
def live_run() -> Iterator[LiveRun]:
    hexid = uuid.uuid4().hex[:12]
    name = f"tok_{hexid}"
    token = f"secret-{uuid.uuid4().hex}"
    print(f"namespace/schema {name}; token {token[:10]}...")
    env = {
        **os.environ,
        "SCALPER_SIM_TOKEN": token,
        "SCALPER_LOG_LEVEL": "DEBUG",
        "DATABASE_URL": database_url(),
        "REDIS_URL": REDIS_URL,
        "PYTHONPATH": str(ROOT),
    }
    cmd = [
        sys.executable,
        "-m",
        "shared.cli",
        "simrun",
        str(SESSION),
        "--speed",
        "40",
        "--from",
        "09:15",
        "--to",
        "09:35",
        "--namespace",
        name,
        "--schema",
        name,
    ]
    try:
        cp = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert cp.returncode == 0, cp.stderr[-3000:]
        yield LiveRun(token, name, cp.stdout + cp.stderr)
    finally:
        _cleanup(name)


def _holds(blob: bytes, token: str) -> bool:
    return token.encode() in blob


# ----------------------------------------------------------------------------- the live run


def test_token_is_in_no_file_of_the_run_directory(live_run):
    files = [p for p in live_run.run_dir.rglob("*") if p.is_file() and not p.is_socket()]
    names = {p.name for p in files}
    assert {
        "feed.log",
        "executor.log",
        "entries.log",
        "sync.log",
        "supervisord.log",
        "dhansim.log",
    } <= names
    assert (live_run.run_dir / "executor.log").stat().st_size > 0
    leaks = [str(p) for p in files if _holds(p.read_bytes(), live_run.token)]
    assert leaks == []


def test_token_is_in_no_output_of_the_command(live_run):
    assert "Live run against the simulator" in live_run.output
    assert live_run.token not in live_run.output


def _redis_values(r: redis.Redis, key: bytes) -> list[bytes]:
    kind = r.type(key)
    if kind == b"stream":
        out = [
            orjson.dumps({k.decode(): v.decode() for k, v in f.items()}) for _, f in r.xrange(key)
        ]
        for g in r.xinfo_groups(key):
            out.append(g["name"])
            out += [c["name"] for c in r.xinfo_consumers(key, g["name"])]
        return out
    if kind == b"string":
        return [r.get(key) or b""]
    if kind == b"hash":
        return [k + b"=" + v for k, v in r.hgetall(key).items()]
    if kind == b"set":
        return list(r.smembers(key))
    if kind == b"zset":
        return [m for m, _ in r.zrange(key, 0, -1, withscores=True)]
    if kind == b"list":
        return r.lrange(key, 0, -1)
    raise AssertionError(f"unexpected key type {kind!r} of {key!r}")


def test_token_is_in_no_redis_key_or_stream_entry(live_run):
    r = redis.Redis.from_url(REDIS_URL)
    keys = Keys(live_run.name)
    try:
        names = list(r.scan_iter(match=keys.all_pattern(), count=2000))
        assert r.xlen(keys.stream("ticks")) > 0 and len(names) > 10
        leaks = []
        for key in names:
            if _holds(key, live_run.token):
                leaks.append(key)
            leaks += [key for v in _redis_values(r, key) if _holds(v, live_run.token)]
    finally:
        r.close()
    assert leaks == []


def test_token_is_in_no_column_of_any_table(live_run):
    leaks, rows_seen = [], 0
    with psycopg.connect(database_url(), autocommit=True) as conn:
        tables = [
            t
            for (t,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (live_run.name,),
            ).fetchall()
        ]
        assert {"orders", "instruments", "position_trackers", "outbox"} <= set(tables)
        for table in tables:
            cur = conn.execute(
                sql.SQL("SELECT * FROM {}.{}").format(
                    sql.Identifier(live_run.name), sql.Identifier(table)
                )
            )
            cols = [d.name for d in cur.description or ()]
            for row in cur:
                rows_seen += 1
                for col, value in zip(cols, row, strict=True):
                    blob = (
                        value
                        if isinstance(value, bytes | bytearray | memoryview)
                        else (orjson.dumps(value, default=str) if value is not None else b"")
                    )
                    if _holds(bytes(blob), live_run.token):
                        leaks.append(f"{table}.{col}")
    print(f"rows searched: {rows_seen}")
    assert rows_seen > 0 and leaks == []


# ----------------------------------------------------------------------------- exceptions

TOKEN = f"secret-{uuid.uuid4().hex}"


def _all_text(exc: BaseException) -> str:
    """Everything an exception can show: str, repr, args and the formatted chain."""
    return "\n".join(
        [str(exc), repr(exc), repr(exc.args), "".join(traceback.format_exception(exc))]
    )


async def _profile_error(url: str, token: str) -> BaseException:
    async with DhanRest(url, CLIENT_ID, token, retry=RetryPolicy(attempts=1), timeout_s=3) as rest:
        try:
            await rest.profile()
        except Exception as exc:  # noqa: BLE001 - the exception is the result
            return exc
    raise AssertionError("GET /profile unexpectedly succeeded")


class _EchoingBroker(BaseHTTPRequestHandler):
    """Refuses every request with an error body that repeats the token it was sent."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = {
            "errorType": "Invalid_Authentication",
            "errorCode": "DH-901",
            "errorMessage": f"token {self.headers.get('access-token')} is invalid",
        }
        data = orjson.dumps(body)
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def echoing_broker() -> Iterator[str]:
    srv = HTTPServer(("127.0.0.1", 0), _EchoingBroker)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}/v2"
    srv.shutdown()


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/v2", "not a url", "http://bad host/v2"])
def test_rest_errors_for_bad_urls_hold_no_token(url):
    exc = asyncio.run(_profile_error(url, TOKEN))
    assert type(exc).__name__ == "BrokerUnavailable"
    assert TOKEN not in _all_text(exc)


def test_rest_error_echoing_the_token_is_redacted(echoing_broker):
    exc = asyncio.run(_profile_error(echoing_broker, TOKEN))
    assert type(exc).__name__ == "BrokerAuthError" and "***" in str(exc)
    assert TOKEN not in _all_text(exc)


def test_token_with_a_trailing_carriage_return_never_reaches_the_exception(echoing_broker):
    exc = asyncio.run(_profile_error(echoing_broker, TOKEN + "\r"))
    assert TOKEN not in _all_text(exc)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        cwd=ROOT,
        text=True,
        env={**os.environ, **env},
        capture_output=True,
        timeout=120,
    )


@pytest.fixture
def dead_broker_env(pg_schema, namespace, redis_url) -> dict[str, str]:
    return {
        "SCALPER_MODE": "live",
        "DHAN_CLIENT_ID": CLIENT_ID,
        "DHAN_ACCESS_TOKEN": TOKEN,
        "DHAN_REST_URL": "http://127.0.0.1:1/v2",
        "DHAN_FEED_URL": "ws://127.0.0.1:1",
        "DHAN_ORDER_WS_URL": "ws://127.0.0.1:1",
        "SCALPER_NAMESPACE": namespace,
        "SCALPER_DB_SCHEMA": pg_schema.schema,
        "DATABASE_URL": pg_schema.url,
        "REDIS_URL": redis_url,
        "SCALPER_LOG_LEVEL": "DEBUG",
        "PYTHONPATH": str(ROOT),
    }


@pytest.mark.parametrize("command", [["preopen"], ["sync", "--force"]])
def test_cli_commands_failing_against_a_dead_broker_print_no_token(dead_broker_env, command):
    cp = _cli(dead_broker_env, *command)
    out = cp.stdout + cp.stderr
    assert cp.returncode == 1 and "ConnectError: All connection attempts failed" in out, out
    assert TOKEN not in out


@pytest.mark.parametrize(
    ("feed_url", "expect"),
    [("ws://127.0.0.1:1", "feed connect failed"), ("bogus://x y", "market feed URL is invalid")],
)
def test_live_feed_service_with_a_bad_url_logs_no_token(
    dead_broker_env, tmp_path, feed_url, expect
):
    """A refused connection is retried (and logged each time); an invalid URL stops the
    process with a traceback on stderr. Neither shows the token, which is in the feed URL."""
    log = tmp_path / "feed.log"
    with log.open("wb") as fh:
        p = subprocess.Popen(
            [sys.executable, "-m", "services.feed"],
            cwd=ROOT,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **dead_broker_env, "DHAN_FEED_URL": feed_url},
        )
        try:
            eventually(
                lambda: log.read_text(errors="replace").count(expect) >= 2 or p.poll() is not None,
                timeout=30,
            )
        finally:
            if p.poll() is None:
                p.terminate()
                p.wait(20)
    text = log.read_text(errors="replace")
    print(text[-2000:])
    assert expect in text
    if "invalid" in expect:
        assert "token=***" in text  # the URL is shown, with the token replaced
    assert TOKEN not in text
