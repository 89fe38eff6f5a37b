"""REST: the DhanHQ ``/v2`` endpoints the project uses, plus the ``/__sim`` control API.

Each ``/v2`` request goes through, in order: the ``delay_ms`` fault; authentication
(``access-token`` everywhere, ``client-id`` where the docs require it and wherever it is sent
→ DH-901); the ``http_5xx`` / ``http_429`` faults; the rate limits (DH-904); the clock catching up
(timed speeds); the route. ``POST /orders`` may then lose its answer (``timeout_after_accept``).

Control API (no auth, never faulted or rate limited; JSON in and out):

- ``GET /__sim/state`` — clock, counts (also ``/v2`` requests and DH-904 refusals per
  rate-limit category: ``requests``, ``rate_limited``), ports and faults;
- ``POST /__sim/advance`` — ``{"ticks": n}`` | ``{"seconds": s}`` | ``{"until_ist": "HH:MM:SS"}``
  | ``{"until_ns": t}``: release ticks now, whatever the speed;
- ``POST /__sim/clock`` — ``{"speed": "max" | "paused" | N}``;
- ``GET /__sim/faults``, ``POST /__sim/faults`` (merge settings, run actions — see
  :mod:`dhansim.faults`), ``DELETE /__sim/faults`` (all off).
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from shared.clock import ist_to_ns

from . import dataapi
from .clock import parse_speed
from .decisions import BODY_CLIENT_ID_MISMATCH_ERROR, CLIENT_ID_HEADER_REQUIRED_PREFIXES
from .fields import ApiError
from .httpserver import DROP, HttpRequest, HttpResponse
from .ratelimit import category
from .views import funds_json, order_json, position_json, trade_json

if TYPE_CHECKING:
    from .server import Simulator

log = logging.getLogger("dhansim.rest")

_ORDER_ID = re.compile(r"/v2/orders/([^/]+)")
_EXTERNAL = re.compile(r"/v2/orders/external/(.+)")
_TRADES_OF = re.compile(r"/v2/trades/([^/]+)")


def _json(status: int, payload: Any) -> HttpResponse:
    return HttpResponse(status, orjson.dumps(payload))


def _error(err: ApiError) -> HttpResponse:
    return _json(err.status, err.body())


class RestApp:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.cfg = sim.config

    async def handle(self, req: HttpRequest) -> HttpResponse | object:
        path = req.path.rstrip("/") or "/"
        try:
            if path.startswith("/__sim/"):
                return await self._control(req, path)
            if path == "/v2" or path.startswith("/v2/"):
                return await self._v2(req, path)
            raise ApiError("DH-905", f"Unknown endpoint {req.method} {req.path}", status=404)
        except ApiError as err:
            log.debug("%s %s -> %d %s", req.method, path, err.status, err.code)
            return _error(err)
        except Exception:  # noqa: BLE001 - a simulator bug must not kill the connection
            log.exception("error handling %s %s", req.method, path)
            return _error(ApiError("DH-908"))

    # ------------------------------------------------------------------------------ /v2

    async def _v2(self, req: HttpRequest, path: str) -> HttpResponse | object:
        sim = self.sim
        faults = sim.faults
        faulted = faults.applies_to(path + "/", req.method)
        if faulted and faults.settings.delay_ms > 0:
            await asyncio.sleep(faults.settings.delay_ms / 1000)
        self._authenticate(req, path)
        if faulted and faults.take("http_5xx"):
            raise ApiError("DH-908")
        if faulted and faults.take("http_429"):
            raise ApiError("DH-904")
        if not sim.limiter.allow(category(req.method, path)):
            raise ApiError("DH-904")
        sim.clock.sync()
        body = self._body(req)
        if req.method == "POST" and path == "/v2/orders":
            return await self._place(body)
        status, payload = self._route(req.method, path, body)
        log.debug("%s %s -> %d", req.method, path, status)
        return _json(status, payload)

    def _authenticate(self, req: HttpRequest, path: str) -> None:
        token_ok = req.headers.get("access-token") == self.cfg.token
        client = req.headers.get("client-id")
        needs_client = path.startswith(CLIENT_ID_HEADER_REQUIRED_PREFIXES)
        client_ok = client == self.cfg.client_id if (client is not None or needs_client) else True
        if not (token_ok and client_ok):
            raise ApiError("DH-901")

    def _body(self, req: HttpRequest) -> dict[str, Any]:
        if req.method not in ("POST", "PUT") or not req.body.strip():
            return {}
        try:
            body = orjson.loads(req.body)
        except orjson.JSONDecodeError:
            raise ApiError("DH-905", "Request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError("DH-905", "Request body must be a JSON object")
        sent = body.pop("dhanClientId", None)
        if sent not in (None, "") and str(sent) != self.cfg.client_id:
            raise ApiError(BODY_CLIENT_ID_MISMATCH_ERROR, "dhanClientId does not match")
        return body

    async def _place(self, body: dict[str, Any]) -> HttpResponse | object:
        sim = self.sim
        faults = sim.faults
        reject = faults.settings.reject_reason if faults.take("reject_orders") else None
        lots = faults.settings.partial_fill_lots if faults.settings.partial_fills > 0 else 0
        order = sim.book.place(body, forced_reject=reject, partial_lots=lots,
                               partial_then=faults.settings.partial_remainder)
        if order.partial is not None:
            faults.take("partial_fills")
        asyncio.get_running_loop().call_soon(sim.book.acknowledge, order.order_id)
        response = _json(200, {"orderId": order.order_id, "orderStatus": order.status})
        log.info("order %s placed (correlationId=%r)", order.order_id, order.correlation_id)
        if faults.take("timeout_after_accept"):
            if faults.settings.timeout_mode == "drop":
                log.info("order %s: answer dropped (fault)", order.order_id)
                return DROP
            await asyncio.sleep(faults.settings.timeout_delay_ms / 1000)
        return response

    def _route(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        sim, cid = self.sim, self.cfg.client_id
        book, market = sim.book, sim.market
        if method == "GET":
            if path == "/v2/orders":
                return 200, [order_json(o, cid) for o in book.orders.values()]
            if m := _EXTERNAL.fullmatch(path):
                return 200, order_json(book.by_correlation(m.group(1)), cid)
            if m := _ORDER_ID.fullmatch(path):
                return 200, order_json(book.get(m.group(1)), cid)
            if path == "/v2/trades":
                return 200, [trade_json(t, cid) for t in book.trades]
            if m := _TRADES_OF.fullmatch(path):
                order = book.get(m.group(1))
                return 200, [trade_json(t, cid) for t in book.trades if t.order is order]
            if path == "/v2/positions":
                return 200, [position_json(p, market, cid) for p in book.positions.values()]
            if path == "/v2/fundlimit":
                return 200, funds_json(book, cid)
            if path == "/v2/profile":
                return 200, self._profile()
        elif method == "PUT" and (m := _ORDER_ID.fullmatch(path)):
            order = book.modify(m.group(1), body)
            return 200, {"orderId": order.order_id, "orderStatus": order.status}
        elif method == "DELETE" and (m := _ORDER_ID.fullmatch(path)):
            order = book.cancel(m.group(1))
            return 202, {"orderId": order.order_id, "orderStatus": order.status}
        elif method == "POST":
            if path in ("/v2/marketfeed/ltp", "/v2/marketfeed/ohlc", "/v2/marketfeed/quote"):
                return 200, dataapi.market_quote(market, body, path.rsplit("/", 1)[1])
            if path == "/v2/optionchain":
                return 200, dataapi.option_chain(market, body, sim.clock.now_ns())
            if path == "/v2/optionchain/expirylist":
                return 200, dataapi.expiry_list(market, body, sim.trading_day)
            if path == "/v2/charts/intraday":
                return 200, dataapi.intraday(market, body, sim.clock.cursor)
        raise ApiError("DH-905", f"Unknown endpoint {method} {path}", status=404)

    def _profile(self) -> dict[str, Any]:
        valid = date.fromisoformat(self.sim.trading_day) + timedelta(days=1)
        return {
            "dhanClientId": self.cfg.client_id,
            "tokenValidity": f"{valid:%d/%m/%Y} 09:00",
            "activeSegment": "Equity, Derivative, Currency, Commodity",
            "ddpi": "Active",
            "mtf": "Active",
            "dataPlan": "Active",
            "dataValidity": f"{valid + timedelta(days=29):%Y-%m-%d} 23:59:59.0",
        }

    # ------------------------------------------------------------------------------ control

    async def _control(self, req: HttpRequest, path: str) -> HttpResponse:
        sim = self.sim
        try:
            body = orjson.loads(req.body) if req.body.strip() else {}
        except orjson.JSONDecodeError:
            return _json(400, {"error": "body is not valid JSON"})
        if not isinstance(body, dict):
            return _json(400, {"error": "body must be a JSON object"})
        try:
            if path == "/__sim/state" and req.method == "GET":
                return _json(200, sim.state())
            if path == "/__sim/advance" and req.method == "POST":
                released = self._advance(body)
                return _json(200, {"released": released, **sim.state()})
            if path == "/__sim/clock" and req.method == "POST":
                sim.clock.set_speed(parse_speed(body["speed"]))
                return _json(200, sim.state())
            if path == "/__sim/faults":
                if req.method == "GET":
                    return _json(200, {"faults": sim.faults.snapshot()})
                if req.method == "DELETE":
                    sim.faults.reset()
                    return _json(200, {"faults": sim.faults.snapshot()})
                if req.method == "POST":
                    done = await sim.apply_faults(body)
                    return _json(200, {"faults": sim.faults.snapshot(), "actions": done})
        except (KeyError, TypeError, ValueError) as exc:
            return _json(400, {"error": f"{type(exc).__name__}: {exc}"})
        return _json(404, {"error": f"unknown control endpoint {req.method} {path}"})

    def _advance(self, body: dict[str, Any]) -> int:
        clock = self.sim.clock
        if "ticks" in body:
            return clock.advance(ticks=int(body["ticks"]))
        if "seconds" in body:
            return clock.advance(seconds=float(body["seconds"]))
        if "until_ns" in body:
            return clock.advance(until_ns=int(body["until_ns"]))
        if "until_ist" in body:
            hh, mm, *rest = str(body["until_ist"]).split(":")
            day = date.fromisoformat(self.sim.trading_day)
            until = ist_to_ns(day, f"{hh}:{mm}", float(rest[0]) if rest else 0.0)
            return clock.advance(until_ns=until)
        raise ValueError("expected one of ticks, seconds, until_ns, until_ist")
