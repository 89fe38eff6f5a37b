"""The live order-update WebSocket (reference §5).

The client's first message must be the login
``{"LoginReq": {"MsgCode": 42, "ClientId": "…", "Token": "…"}, "UserType": "SELF"}`` (MsgCode
as int or ``"42"``). After it, every change of every order of the account — placed (Transit),
acknowledged (Pending), modified, traded, cancelled, rejected — is pushed as a JSON text frame
``{"Data": {…}, "Type": "order_alert"}``. There is no reply to the login and no replay of earlier
changes; a bad or missing login closes the socket (see :mod:`dhansim.decisions`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from .decisions import (
    ORDER_WS_BAD_LOGIN_CLOSE_CODE,
    ORDER_WS_LOGIN_REPLY,
    ORDER_WS_LOGIN_TIMEOUT_S,
)
from .orders import Order
from .views import order_alert

log = logging.getLogger("dhansim.order_ws")


class _Subscriber:
    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    async def sender(self) -> None:
        try:
            while True:
                await self.ws.send(await self.queue.get())
        except ConnectionClosed:
            pass


class OrderUpdateHub:
    def __init__(self, *, token: str, client_id: str) -> None:
        self.token = token
        self.client_id = client_id
        self.subscribers: list[_Subscriber] = []
        self._server: Server | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await serve(self._handle, host, port, max_size=1 << 16)
        return int(next(iter(self._server.sockets)).getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _login_ok(self, message: Any) -> bool:
        try:
            login = orjson.loads(message)
            req = login["LoginReq"]
            return (
                str(req["MsgCode"]) == "42"
                and str(req["ClientId"]) == self.client_id
                and req.get("Token") == self.token
                and login.get("UserType", "SELF") == "SELF"
            )
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return False

    async def _handle(self, ws: ServerConnection) -> None:
        try:
            async with asyncio.timeout(ORDER_WS_LOGIN_TIMEOUT_S):
                first = await ws.recv()
        except (TimeoutError, ConnectionClosed):
            await ws.close(ORDER_WS_BAD_LOGIN_CLOSE_CODE, "login required")
            return
        if not self._login_ok(first):
            log.info("order-update login refused")
            await ws.close(ORDER_WS_BAD_LOGIN_CLOSE_CODE, "invalid login")
            return
        if ORDER_WS_LOGIN_REPLY is not None:
            await ws.send(ORDER_WS_LOGIN_REPLY)
        sub = _Subscriber(ws)
        self.subscribers.append(sub)
        sender = asyncio.create_task(sub.sender())
        try:
            async for _ in ws:
                pass  # nothing else is expected from the client
        except ConnectionClosed:
            pass
        finally:
            self.subscribers.remove(sub)
            sender.cancel()

    def publish(self, order: Order) -> None:
        """Order-book listener: push the order's current state to every logged-in socket."""
        if not self.subscribers:
            return
        text = orjson.dumps(order_alert(order, self.client_id)).decode()
        for sub in self.subscribers:
            sub.queue.put_nowait(text)

    def drop_all(self) -> int:
        """Abort every socket (no close frame), like a network drop."""
        subs = list(self.subscribers)
        for sub in subs:
            sub.ws.transport.abort()
        return len(subs)
