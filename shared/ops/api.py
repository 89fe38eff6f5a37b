"""The read-only HTTP API of a deployment (``scalper api``).

    GET /api/health     mode, feed connected, tick age, service heartbeats, positions count,
                        trading state, sample index LTPs (IDX_I 13, 25, 27, 51)
    GET /api/positions  open positions with their live PnL
    GET /metrics        Prometheus text format (see :mod:`shared.ops.metrics`)

It binds 127.0.0.1 by default. When ``SCALPER_API_TOKEN`` is set every request needs
``Authorization: Bearer <token>`` (401 otherwise); binding any non-loopback address without a
token is refused before anything listens. Responses never contain the DhanHQ access token or
the API token (every body passes through :class:`shared.logs.RedactSecrets`).

Plain ``http.server`` (threaded) is enough for a handful of operator and Prometheus requests;
each request reads Redis through one thread-safe client and the ledger through one connection
behind a lock (reopened after PostgreSQL comes back).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import msgspec
import orjson
import redis

from shared.errors import ScalperError, StoreError
from shared.keys import Keys
from shared.logs import RedactSecrets
from shared.ops import metrics, status
from shared.store.ledger import Ledger

log = logging.getLogger("scalper.api")

SAMPLE_INDICES = (("IDX_I", 13), ("IDX_I", 25), ("IDX_I", 27), ("IDX_I", 51))
"""NIFTY, BANKNIFTY, FINNIFTY, SENSEX: the index LTPs /api/health shows."""
MIN_TOKEN_CHARS = 16
JSON = "application/json"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); False for any other
    name or address, wildcard binds (0.0.0.0, ::) included."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str) -> None:
    """Refuse (ScalperError) a non-loopback bind without a token, and any too-short token."""
    if token and len(token) < MIN_TOKEN_CHARS:
        raise ScalperError(f"SCALPER_API_TOKEN is too short: use at least {MIN_TOKEN_CHARS} characters")
    if not token and not is_loopback(host):
        raise ScalperError(
            f"refusing to serve on {host} without a token: set SCALPER_API_TOKEN "
            "(clients send 'Authorization: Bearer <token>') or bind 127.0.0.1"
        )


class LedgerHandle:
    """One ledger connection shared by request threads, reopened when it broke."""

    def __init__(self, connect: Callable[[], Ledger]) -> None:
        self._connect = connect
        self._ledger: Ledger | None = None
        self._lock = threading.Lock()

    @contextmanager
    def use(self) -> Iterator[tuple[Ledger | None, str | None]]:
        """Yield (ledger, None), or (None, why) when PostgreSQL cannot be reached."""
        with self._lock:
            led, err = self._ledger, None
            if led is not None and (led.conn.closed or led.conn.broken):
                led.close()
                led = self._ledger = None
            if led is None:
                try:
                    led = self._ledger = self._connect()
                except StoreError as exc:
                    err = str(exc)
            yield led, err

    def close(self) -> None:
        with self._lock:
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None


class Response(msgspec.Struct, frozen=True):
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = msgspec.field(default_factory=dict)


class OpsApi:
    """Routing, authentication and the three endpoints, independent of the HTTP server."""

    def __init__(self, *, r: redis.Redis, keys: Keys, ledger: LedgerHandle, mode: str,
                 schema: str, replay: bool = False, token: str = "",
                 secrets: list[str] | None = None, now_ns: Callable[[], int] = time.time_ns) -> None:
        self.r = r
        self.keys = keys
        self.ledger = ledger
        self.mode = mode
        self.schema = schema
        self.replay = replay
        self.token = token
        self.now_ns = now_ns
        self._redactor = RedactSecrets([*(secrets or []), token])
        self._tick_rate = metrics.TickRate()
        self._rate_lock = threading.Lock()
        self._routes: dict[str, Callable[[], Response]] = {
            "/api/health": self.health, "/api/positions": self.positions, "/metrics": self.metrics,
        }

    # -- dispatch ---------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str]) -> Response:
        if self.token and not self._authorized(headers.get("Authorization", "")):
            return self._json(401, {"error": "missing or wrong bearer token"},
                              {"WWW-Authenticate": 'Bearer realm="scalper"'})
        route = self._routes.get(urlsplit(target).path.rstrip("/") or "/")
        if route is None:
            return self._json(404, {"error": "not found", "endpoints": sorted(self._routes)})
        if method != "GET":
            return self._json(405, {"error": "method not allowed"}, {"Allow": "GET"})
        try:
            resp = route()
        except redis.RedisError as exc:
            log.warning("redis unavailable: %s", exc)
            return self._json(503, {"error": "redis unavailable"})
        return msgspec.structs.replace(resp, body=self._redact(resp.body))

    def _authorized(self, header: str) -> bool:
        scheme, _, cred = header.strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            cred.strip().encode(), self.token.encode())

    def _redact(self, body: bytes) -> bytes:
        return self._redactor.redact(body.decode("utf-8", "replace")).encode()

    @staticmethod
    def _json(code: int, doc: Any, headers: dict[str, str] | None = None) -> Response:
        body = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
        return Response(code, JSON, body, headers or {})

    # -- endpoints --------------------------------------------------------------------------

    def health(self) -> Response:
        now = self.now_ns()
        hbs = status.heartbeats(self.r, self.keys, now)
        svcs = status.services(hbs, None)
        feed = svcs.get("feed", {})
        feed_flags = [i["info"].get("connected") for i in feed.get("instances", [])]
        tick = status.latest_tick(self.r, self.keys)
        errors: list[str] = []
        n_positions = state = None
        with self.ledger.use() as (led, err):
            if led is None:
                errors.append(f"ledger: {err}")
            else:
                try:
                    n_positions = len(led.active_trackers())
                    state = led.get_trading_state().state
                except StoreError as exc:
                    errors.append(f"ledger: {exc}")
        doc = {
            "ok": bool(feed.get("alive")) and not errors,
            "ts": now,
            "namespace": self.keys.namespace,
            "schema": self.schema,
            "mode": self.mode,
            "replay": self.replay,
            "feed_connected": bool(feed.get("alive")) and False not in feed_flags,
            "tick_age_s": None if tick is None else round((now - tick.ts_event) / 1e9, 3),
            "last_tick_id": None if tick is None else tick.tick_id,
            "services": {
                name: {k: s[k] for k in ("alive", "heartbeat_age_s", "handled")}
                for name, s in svcs.items()
            },
            "positions": n_positions,
            "trading_state": state or status.as_str(self.r.get(self.keys.trading_state())),
            "tick_cache_size": sum(
                1 for _ in self.r.scan_iter(match=f"{self.keys.prefix}:tick:*", count=1000)),
            "sample_ltps": status.instrument_ltps(self.r, self.keys, SAMPLE_INDICES, now),
            "errors": errors,
        }
        return self._json(200, doc)

    def positions(self) -> Response:
        with self.ledger.use() as (led, err):
            if led is None:
                return self._json(503, {"error": f"ledger unavailable: {err}"})
            try:
                rows = status.open_positions(self.r, self.keys, led)
            except StoreError as exc:
                return self._json(503, {"error": f"ledger: {exc}"})
        return self._json(200, {
            "count": len(rows),
            "open_pnl_paise": sum(p["pnl_paise"] or 0 for p in rows),
            "positions": rows,
        })

    def metrics(self) -> Response:
        now = self.now_ns()
        orders = None
        with self.ledger.use() as (led, err):
            snap = status.collect(self.r, self.keys, led, now_ns=now, mode=self.mode,
                                  schema=self.schema, supervisor=False, ledger_error=err)
            if led is not None:
                try:
                    orders = metrics.order_counts(led)
                except StoreError as exc:
                    log.warning("order counts: %s", exc)
        tick = status.latest_tick(self.r, self.keys)
        with self._rate_lock:
            rate = self._tick_rate.update(now, snap["streams"]["ticks"]["entries_added"])
        hists, invalid = metrics.read_histograms(self.r, self.keys)
        text = metrics.render(
            snap, tick_rate_per_s=rate,
            tick_age_s=None if tick is None else (now - tick.ts_event) / 1e9,
            orders=orders, histograms=hists, invalid_histograms=invalid,
        )
        return Response(200, metrics.CONTENT_TYPE, text.encode())


# --------------------------------------------------------------------------- HTTP server


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"
    server_version = "scalper-api"
    sys_version = ""

    def _serve(self, method: str) -> None:
        try:
            auth = {"Authorization": self.headers.get("Authorization", "")}
            resp = self.server.api.handle(method, self.path, auth)
        except Exception:  # noqa: BLE001 - one failed request must not kill the server
            log.exception("request %s %s failed", method, self.path)
            resp = Response(500, JSON, b'{"error": "internal error"}')
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(resp.body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._serve("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("DELETE")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        log.info("%s %s", self.address_string(), format % args)


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: OpsApi) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.api = api
        super().__init__(address, _Handler)


def make_server(api: OpsApi, host: str, port: int) -> ApiServer:
    """Bind (port 0 picks a free one: ``server.server_address[1]``); serve with
    ``serve_forever()``. Raises ScalperError if the address cannot be bound."""
    check_bind(host, api.token)
    try:
        return ApiServer((host.strip("[]"), port), api)
    except OSError as exc:
        raise ScalperError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def build(env: Any, token: str) -> OpsApi:
    """The API of the deployment ``env`` (:class:`shared.config.EnvConfig`)."""
    return OpsApi(
        r=redis.Redis.from_url(env.redis_url, socket_timeout=5, socket_connect_timeout=5),
        keys=Keys(env.namespace),
        ledger=LedgerHandle(
            lambda: status.connect_readonly(env.database_url, env.db_schema, "scalper-api")),
        mode=env.mode, schema=env.db_schema, replay=env.replay, token=token,
        secrets=[env.access_token],
    )


def serve(env: Any, host: str, port: int, token: str) -> int:
    """``scalper api``: serve until interrupted."""
    check_bind(host, token)
    api = build(env, token)
    server = make_server(api, host, port)
    bound = server.server_address
    print(f"scalper api on http://{host}:{bound[1]} (namespace {env.namespace}, schema "
          f"{env.db_schema}){' with bearer token' if token else ''}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        api.ledger.close()
        api.r.close()
    return 0
