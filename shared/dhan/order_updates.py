"""DhanHQ v2 live order-update WebSocket client (reference ``dhanhq-api.md`` §5), no Redis.

The socket (``wss://api-order-update.dhan.co``, no query parameters) takes one login message,
byte for byte as the reference shows it::

    {"LoginReq": {"MsgCode": 42, "ClientId": "<id>", "Token": "<JWT>"}, "UserType": "SELF"}

and then pushes JSON text ``{"Data": {...}, "Type": "order_alert"}`` for every order of the
account. :func:`parse_order_update` turns one such message into an :class:`OrderUpdate`; the
server's reply to the login is undocumented, so any other ``Type`` is counted and ignored.

:class:`OrderUpdateClient` reconnects with backoff and jitter and exposes ``connected`` so the
executor can poll the REST order book while the socket is down. HTTP 401/403 at the handshake
ends :meth:`OrderUpdateClient.run` with ``BrokerAuthError``. The token never reaches a log line
or an exception message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException

from shared.clock import IST, NS_PER_S, Clock
from shared.dhan.feed_client import Backoff, redact, wire_logger
from shared.errors import BrokerAuthError, ConfigError, DecodeError
from shared.logs import Throttle
from shared.types import rupees_to_paise

log = logging.getLogger(__name__)

ORDER_ALERT = "order_alert"
LOGIN_MSG_CODE = 42
HEALTHY_AFTER_S = 30.0
"""A session that lasted this long counts as healthy even without an order update."""


def login_message(client_id: str, access_token: str) -> str:
    """The individual (``SELF``) login frame, exactly as in the reference. Holds the token."""
    return json.dumps(
        {
            "LoginReq": {"MsgCode": LOGIN_MSG_CODE, "ClientId": client_id, "Token": access_token},
            "UserType": "SELF",
        }
    )


class OrderUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """One order-update push. Prices in paise (exact), quantities in units.

    ``status`` is upper-case with ``_`` separators (``"Cancelled"`` -> ``"CANCELLED"``,
    ``"Part Traded"`` -> ``"PART_TRADED"``). ``last_updated_time`` is the IST wall-clock text as
    sent; ``ts_last_updated`` the same instant as UTC ns (0 if absent or unparsable).
    """

    order_no: str
    exch_order_no: str = ""
    correlation_id: str = ""
    security_id: int = 0
    exchange: str = ""
    """``NSE`` / ``BSE`` / ``MCX``."""
    segment: str = ""
    """Segment letter: ``E`` equity, ``D`` derivatives, ``C`` currency, ``M`` commodity."""
    txn_type: str = ""
    """``B`` buy / ``S`` sell."""
    product: str = ""
    order_type: str = ""
    quantity: int = 0
    traded_qty: int = 0
    remaining_qty: int = 0
    price_paise: int = 0
    trigger_price_paise: int = 0
    traded_price_paise: int = 0
    avg_traded_price_paise: int = 0
    status: str = ""
    reason_description: str = ""
    last_updated_time: str = ""
    ts_last_updated: int = 0
    leg_no: int = 0
    remarks: str = ""
    source: str = ""
    """``P`` for orders placed through the API."""


class _Envelope(msgspec.Struct):
    Data: dict[str, Any] | None = None
    Type: str = ""


_decoder = msgspec.json.Decoder(_Envelope)
_SEPARATORS = re.compile(r"[\s\-]+")


def normalize_status(status: str) -> str:
    """``"Cancelled"`` -> ``"CANCELLED"``, ``"part traded"`` -> ``"PART_TRADED"``."""
    return _SEPARATORS.sub("_", status.strip()).upper()


def _get(data: dict[str, Any], key: str) -> Any:
    # PascalCase per the docs; the camelCase spelling as a fallback (the SDK reads "orderNo").
    value = data.get(key)
    return data.get(key[0].lower() + key[1:]) if value is None else value


def _text(data: dict[str, Any], key: str) -> str:
    value = _get(data, key)
    return "" if value is None else str(value).strip()


def _int(data: dict[str, Any], key: str) -> int:
    value = _get(data, key)
    if value is None or value == "":
        return 0
    try:
        number = Decimal(str(value).strip())
        if number != number.to_integral_value():
            raise InvalidOperation
        return int(number)
    except (InvalidOperation, ValueError):
        raise DecodeError(f"order update: $.Data.{key} is not an integer: {value!r}") from None


def _price_paise(data: dict[str, Any], key: str) -> int:
    value = _get(data, key)
    if value is None or value == "":
        return 0
    try:
        return rupees_to_paise(value)
    except (InvalidOperation, ValueError):
        raise DecodeError(f"order update: $.Data.{key} is not a price: {value!r}") from None


def _ist_to_ns(text: str) -> int:
    try:
        moment = datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=IST)
    except ValueError:
        return 0
    return int(moment.timestamp()) * NS_PER_S


def parse_order_update(raw: str | bytes) -> OrderUpdate | None:
    """The :class:`OrderUpdate` in one socket message; None if it is not an ``order_alert``.

    Unknown fields are ignored. Raises :class:`DecodeError`, naming the field, for bad JSON, a
    missing ``OrderNo`` or a non-numeric quantity or price.
    """
    try:
        envelope = _decoder.decode(raw)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise DecodeError(f"order update: {exc}") from None
    if envelope.Type.lower() != ORDER_ALERT:
        return None
    data = envelope.Data
    if data is None:
        raise DecodeError("order update: $.Data missing")
    order_no = _text(data, "OrderNo")
    if not order_no:
        raise DecodeError("order update: $.Data.OrderNo missing")
    updated = _text(data, "LastUpdatedTime")
    return OrderUpdate(
        order_no=order_no,
        exch_order_no=_text(data, "ExchOrderNo"),
        correlation_id=_text(data, "CorrelationId"),
        security_id=_int(data, "SecurityId"),
        exchange=_text(data, "Exchange").upper(),
        segment=_text(data, "Segment").upper(),
        txn_type=_text(data, "TxnType").upper(),
        product=_text(data, "Product").upper(),
        order_type=_text(data, "OrderType").upper(),
        quantity=_int(data, "Quantity"),
        traded_qty=_int(data, "TradedQty"),
        remaining_qty=_int(data, "RemainingQuantity"),
        price_paise=_price_paise(data, "Price"),
        trigger_price_paise=_price_paise(data, "TriggerPrice"),
        traded_price_paise=_price_paise(data, "TradedPrice"),
        avg_traded_price_paise=_price_paise(data, "AvgTradedPrice"),
        status=normalize_status(_text(data, "Status")),
        reason_description=_text(data, "ReasonDescription"),
        last_updated_time=updated,
        ts_last_updated=_ist_to_ns(updated),
        leg_no=_int(data, "LegNo"),
        remarks=_text(data, "Remarks"),
        source=_text(data, "Source").upper(),
    )


@dataclass
class OrderUpdateStats:
    """Counters since construction."""

    connects: int = 0
    connect_failures: int = 0
    messages: int = 0
    updates: int = 0
    ignored: int = 0
    decode_errors: int = 0


class OrderUpdateClient:
    """Order-update socket: login, parse, ``await on_update(update)``; reconnect until stop().

    ``connected`` is True from the login frame being sent until the socket closes;
    ``down_since_ns`` is the clock time it last went down (0 while connected). An exception
    raised by ``on_update`` ends :meth:`run` with that exception.
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        access_token: str,
        *,
        on_update: Callable[[OrderUpdate], Awaitable[None]],
        connect: Callable[..., Awaitable[Any]] = websockets.connect,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._url = url
        self._client_id = client_id
        self._token = access_token
        self._on_update = on_update
        self._connect = connect
        self._clock = clock or Clock()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._backoff = backoff or Backoff()
        self._wire_log = wire_logger(f"{__name__}.ws", access_token)
        self._throttle = Throttle(10.0)
        self._ws: Any = None
        self._stopping = False
        self._stopped = asyncio.Event()
        self.connected = False
        self.down_since_ns = self._clock.now_ns()
        self.stats = OrderUpdateStats()

    async def run(self) -> None:
        """Connect, log in and deliver updates until :meth:`stop`; reconnect on any drop."""
        self._stopping = False
        self._stopped.clear()
        failures = 0
        ended: tuple[bool, float] | None = None
        while not self._stopping:
            if ended is not None:
                delay_s = max(self._backoff.delay_s(failures, self._rng), ended[1])
                failures += 1
                log.info(
                    "order updates reconnecting",
                    extra={"fields": {"delay_s": round(delay_s, 3), "failures": failures}},
                )
                await self._pause(delay_s)
                if self._stopping:
                    break
            ended = await self._session()
            if ended[0]:
                failures = 0

    async def stop(self) -> None:
        """Close the socket and end :meth:`run`."""
        self._stopping = True
        self._stopped.set()
        ws = self._ws
        if ws is not None:
            await self._close(ws)

    async def _pause(self, delay_s: float) -> None:
        """``sleep(delay_s)``, cut short by :meth:`stop`."""
        sleeper = asyncio.ensure_future(self._sleep(delay_s))
        stopper = asyncio.ensure_future(self._stopped.wait())
        _, pending = await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _open(self) -> tuple[Any, float]:
        try:
            return await self._connect(self._url, logger=self._wire_log), 0.0
        except InvalidURI:
            raise ConfigError(
                f"order-update URL is invalid: {redact(self._url, self._token)}"
            ) from None
        except InvalidStatus as exc:
            status = exc.response.status_code
            self.stats.connect_failures += 1
            if status in (401, 403):
                raise BrokerAuthError(
                    f"order-update handshake refused with HTTP {status}", http_status=status
                ) from None
            log.warning("order-update handshake refused", extra={"fields": {"http_status": status}})
            return None, self._backoff.rate_limited_s if status == 429 else 0.0
        except (OSError, TimeoutError, WebSocketException) as exc:
            self.stats.connect_failures += 1
            log.warning(
                "order-update connect failed",
                extra={
                    "fields": {"error": type(exc).__name__, "detail": redact(str(exc), self._token)}
                },
            )
            return None, 0.0

    async def _session(self) -> tuple[bool, float]:
        """One socket: log in, then read. Returns (healthy, minimum delay before the next)."""
        ws, min_delay_s = await self._open()
        if ws is None:
            return False, min_delay_s
        if self._stopping:  # stop() came during the handshake
            await self._close(ws)
            return False, 0.0
        self.stats.connects += 1
        self._ws = ws
        opened_ns = self._clock.now_ns()
        updates = 0
        try:
            await ws.send(login_message(self._client_id, self._token))
            self.connected = True
            self.down_since_ns = 0
            log.info("order updates connected")
            while True:
                frame = await ws.recv()
                updates += await self._handle(frame)
        except (ConnectionClosed, OSError) as exc:
            if not self._stopping:
                log.warning(
                    "order-update socket closed",
                    extra={
                        "fields": {
                            "error": type(exc).__name__,
                            "detail": redact(str(exc), self._token),
                        }
                    },
                )
        finally:
            self.connected = False
            self.down_since_ns = self._clock.now_ns()
            self._ws = None
            await self._close(ws)
        lived_s = (self._clock.now_ns() - opened_ns) / NS_PER_S
        return updates > 0 or lived_s >= HEALTHY_AFTER_S, 0.0

    async def _handle(self, frame: str | bytes) -> int:
        """Parse one message and deliver it; 1 if it was an order update, else 0."""
        self.stats.messages += 1
        try:
            update = parse_order_update(frame)
        except DecodeError as exc:
            self.stats.decode_errors += 1
            self._warn("decode", "undecodable order update", error=redact(str(exc), self._token))
            return 0
        if update is None:
            self.stats.ignored += 1
            text = frame.decode(errors="replace") if isinstance(frame, bytes) else frame
            # The login reply is undocumented: keep a sample of whatever else arrives.
            self._warn(
                "other", "order-update message ignored", sample=redact(text, self._token)[:200]
            )
            return 0
        self.stats.updates += 1
        log.info(
            "order update",
            extra={
                "fields": {
                    "order_no": update.order_no,
                    "correlation_id": update.correlation_id,
                    "status": update.status,
                    "traded_qty": update.traded_qty,
                }
            },
        )
        await self._on_update(update)
        return 1

    def _warn(self, key: str, msg: str, **fields: Any) -> None:
        if self._throttle.ok(key):
            suppressed = self._throttle.suppressed.pop(key, 0)
            log.warning(msg, extra={"fields": {"suppressed": suppressed, **fields}})

    async def _close(self, ws: Any) -> None:
        try:
            await ws.close()
        except Exception as exc:  # closing a dead socket may fail any way; nothing to recover
            log.debug("close failed", extra={"fields": {"error": type(exc).__name__}})
