"""The live market feed WebSocket (reference §1): JSON requests in, binary packets out.

Connect to ``ws://HOST:PORT/?version=2&token=…&clientId=…&authType=2``. Client text frames are
subscribe (15/17/21), unsubscribe (16/18/22) and disconnect (12) requests; binary frames (the
SDK's legacy 83-byte header on disconnect) are ignored. Every released tick of a subscribed
instrument becomes that mode's packets (one packet per WebSocket message), encoded by
:mod:`shared.dhan.codec`. Failure answers (Disconnect packets 804/805/808/814) are listed in
:mod:`dhansim.decisions`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from shared.dhan.codec import (
    MAX_INSTRUMENTS_PER_CONNECTION,
    MAX_INSTRUMENTS_PER_MESSAGE,
    REQUEST_DISCONNECT,
    SUBSCRIBE_CODES,
    UNSUBSCRIBE_CODES,
    Disconnect,
    encode,
)
from shared.types import SEGMENT_CODES, SEGMENT_NAMES

from .decisions import (
    FEED_AUTH_FAILED_REASON,
    FEED_BAD_REQUEST_REASON,
    FEED_EVICT_REASON,
    FEED_MAX_CONNECTIONS,
    FEED_PING_INTERVAL_S,
    FEED_PING_TIMEOUT_S,
    FEED_SNAPSHOT_ON_SUBSCRIBE,
    FEED_TOO_MANY_INSTRUMENTS_REASON,
)
from .faults import Faults
from .market import Key, Market

log = logging.getLogger("dhansim.feed")

MAX_UNACKED_PACKETS = 100
"""``max`` speed: packets a connection may have in flight before the clock waits for a pong."""

_MODE_OF_CODE = {code: mode for mode, code in SUBSCRIBE_CODES.items()}
_MODE_OF_UNSUB = {code: mode for mode, code in UNSUBSCRIBE_CODES.items()}


def disconnect_packet(reason: int) -> bytes:
    return encode(Disconnect(0, 0, reason))


class _Refused(Exception):
    def __init__(self, reason: int, why: str) -> None:
        super().__init__(why)
        self.reason = reason


class FeedConnection:
    """One client socket: its subscriptions and its queue of encoded packets."""

    def __init__(self, ws: ServerConnection, seq: int) -> None:
        self.ws = ws
        self.seq = seq
        self.subs: dict[Key, set[str]] = {}
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.unacked = 0
        """Packets queued since the client last answered a ping (``max`` speed pacing)."""
        self.held: bytes | None = None
        """A packet held back by the ``feed_reorder`` fault, sent after the next one."""
        self.closed = False

    def enqueue(self, packet: bytes) -> None:
        if not self.closed:
            self.queue.put_nowait(packet)
            self.unacked += 1

    async def acknowledged(self) -> None:
        """Wait until the queue is sent and a ping sent after it is answered."""
        await self.queue.join()
        try:
            pong = await self.ws.ping()
            await pong
        except ConnectionClosed:
            pass
        self.unacked = 0

    async def sender(self) -> None:
        try:
            while True:
                packet = await self.queue.get()
                try:
                    await self.ws.send(packet)
                finally:
                    self.queue.task_done()
        except ConnectionClosed:
            pass
        finally:
            self.discard_queue()

    def discard_queue(self) -> None:
        self.closed = True
        self.unacked = 0
        while not self.queue.empty():
            self.queue.get_nowait()
            self.queue.task_done()

    async def kill(self, reason: int | None) -> None:
        """Send Disconnect(reason) and close normally; ``None`` aborts the TCP connection."""
        self.discard_queue()
        if reason is None:
            self.ws.transport.abort()
            return
        try:
            await self.ws.send(disconnect_packet(reason))
            await self.ws.close(1000, f"disconnect {reason}")
        except ConnectionClosed:
            pass


class FeedHub:
    """All feed connections; the clock's ``max`` speed waits on their queues (backpressure)."""

    def __init__(
        self,
        market: Market,
        faults: Faults,
        *,
        token: str,
        client_id: str,
        on_change: Callable[[], None],
        ping_interval_s: float = FEED_PING_INTERVAL_S,
    ) -> None:
        self.market = market
        self.faults = faults
        self.token = token
        self.client_id = client_id
        self.on_change = on_change
        self.ping_interval_s = ping_interval_s
        self.conns: list[FeedConnection] = []
        self._by_key: dict[Key, set[FeedConnection]] = {}
        self._seq = 0
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -------------------------------------------------------------------- server

    async def start(self, host: str, port: int) -> int:
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            ping_interval=self.ping_interval_s,
            ping_timeout=FEED_PING_TIMEOUT_S,
            max_size=1 << 20,
        )
        return int(next(iter(self._server.sockets)).getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path not in ("", "/"):
            return ws.respond(404, "Not Found\n")
        if self.faults.take("feed_handshake_429"):
            return ws.respond(429, "Too Many Requests\n")
        return None

    def _check_query(self, path: str) -> None:
        query = {k: v[-1] for k, v in parse_qs(urlsplit(path).query).items()}
        if any(k not in query for k in ("version", "token", "clientId", "authType")):
            raise _Refused(FEED_BAD_REQUEST_REASON, "missing query parameters")
        if query["version"] != "2" or query["authType"] != "2":
            raise _Refused(FEED_BAD_REQUEST_REASON, "version and authType must be 2")
        if query["token"] != self.token or query["clientId"] != self.client_id:
            raise _Refused(FEED_AUTH_FAILED_REASON, "token or clientId mismatch")

    async def _handle(self, ws: ServerConnection) -> None:
        self._seq += 1
        conn = FeedConnection(ws, self._seq)
        try:
            self._check_query(ws.request.path if ws.request else "")
        except _Refused as refused:
            log.info("feed connection %d refused: %s (%d)", conn.seq, refused, refused.reason)
            await conn.kill(refused.reason)
            return
        if len(self.conns) >= FEED_MAX_CONNECTIONS:
            oldest = self.conns[0]
            self._unregister(oldest)
            log.info("feed connection %d evicted (805) by %d", oldest.seq, conn.seq)
            self._spawn(oldest.kill(FEED_EVICT_REASON))
        self.conns.append(conn)
        log.info("feed connection %d open (%d open)", conn.seq, len(self.conns))
        sender = asyncio.create_task(conn.sender())
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    continue  # the SDK's legacy binary disconnect header
                if not self._on_request(conn, message):
                    break
        except ConnectionClosed:
            pass
        except _Refused as refused:
            log.info("feed connection %d: %s (%d)", conn.seq, refused, refused.reason)
            self._unregister(conn)
            sender.cancel()
            await conn.kill(refused.reason)
        finally:
            closed_by_us = conn.closed
            self._unregister(conn)
            sender.cancel()
            if not closed_by_us:
                await ws.close(1000)
            log.info("feed connection %d closed", conn.seq)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _unregister(self, conn: FeedConnection) -> None:
        if conn in self.conns:
            self.conns.remove(conn)
        for key in conn.subs:
            self._by_key.get(key, set()).discard(conn)
        conn.subs.clear()
        conn.discard_queue()
        self.on_change()

    # -------------------------------------------------------------------- requests

    def _on_request(self, conn: FeedConnection, text: str) -> bool:
        """Apply one JSON request; False when the client asked to disconnect."""
        try:
            request = orjson.loads(text)
            code = int(request["RequestCode"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise _Refused(FEED_BAD_REQUEST_REASON, "undecodable request") from None
        if code == REQUEST_DISCONNECT:
            return False
        mode = _MODE_OF_CODE.get(code) or _MODE_OF_UNSUB.get(code)
        if mode is None:
            raise _Refused(FEED_BAD_REQUEST_REASON, f"unknown RequestCode {code}")
        items = request.get("InstrumentList") or []
        if not isinstance(items, list):
            raise _Refused(FEED_BAD_REQUEST_REASON, "InstrumentList is not a list")
        if len(items) > MAX_INSTRUMENTS_PER_MESSAGE:
            raise _Refused(FEED_TOO_MANY_INSTRUMENTS_REASON, f"{len(items)} instruments")
        keys = [k for k in (_key(item) for item in items) if k is not None]
        if code in _MODE_OF_CODE:
            self._subscribe(conn, mode, keys)
        else:
            self._unsubscribe(conn, mode, keys)
        return True

    def _subscribe(self, conn: FeedConnection, mode: str, keys: list[Key]) -> None:
        if len(set(conn.subs) | set(keys)) > MAX_INSTRUMENTS_PER_CONNECTION:
            raise _Refused(FEED_TOO_MANY_INSTRUMENTS_REASON, "over 5000 instruments")
        for key in keys:
            conn.subs.setdefault(key, set()).add(mode)
            self._by_key.setdefault(key, set()).add(conn)
            state = self.market.states.get(key)
            if state is None:
                continue  # unknown instrument: subscribed, but no data will ever come
            conn.enqueue(state.prev_close_packet())
            if FEED_SNAPSHOT_ON_SUBSCRIBE and state.has_data:
                for packet in state.packets(mode):
                    conn.enqueue(encode(packet))
        self.on_change()

    def _unsubscribe(self, conn: FeedConnection, mode: str, keys: list[Key]) -> None:
        for key in keys:
            modes = conn.subs.get(key)
            if modes is None:
                continue
            modes.discard(mode)
            if not modes:
                del conn.subs[key]
                self._by_key.get(key, set()).discard(conn)
        self.on_change()

    # -------------------------------------------------------------------- ticks

    def on_tick(self, i: int) -> None:
        key = self.market.tick_keys[i]
        conns = self._by_key.get(key)
        if not conns:
            return
        state = self.market.states[key]
        encoded: dict[str, list[bytes]] = {}
        for conn in sorted(conns, key=lambda c: c.seq):
            for mode in sorted(conn.subs.get(key, ())):
                packets = encoded.get(mode)
                if packets is None:
                    packets = encoded[mode] = [encode(p) for p in state.packets(mode)]
                for packet in packets:
                    self._send_data(conn, packet)

    def _send_data(self, conn: FeedConnection, packet: bytes) -> None:
        """Queue one market-data packet, applying the duplicate / reorder faults."""
        if conn.held is None and self.faults.take("feed_reorder"):
            conn.held = packet
            return
        conn.enqueue(packet)
        if self.faults.take("feed_duplicate"):
            conn.enqueue(packet)
        if conn.held is not None:
            held, conn.held = conn.held, None
            conn.enqueue(held)

    # -------------------------------------------------------------------- backpressure

    def active(self) -> bool:
        return any(c.subs for c in self.conns)

    def backlogged(self) -> bool:
        return any(c.unacked for c in self.conns)

    def saturated(self) -> bool:
        return any(c.unacked >= MAX_UNACKED_PACKETS for c in self.conns)

    async def drained(self) -> None:
        await asyncio.gather(*(c.acknowledged() for c in list(self.conns) if c.unacked))

    def wanted(self, i: int) -> bool:
        return bool(self._by_key.get(self.market.tick_keys[i]))

    def queued(self) -> int:
        return sum(c.queue.qsize() for c in self.conns)

    # -------------------------------------------------------------------- faults

    async def disconnect_all(self, reason: int | None) -> int:
        """Disconnect(reason) and close every connection (``None``: abort the sockets)."""
        conns = list(self.conns)
        for conn in conns:
            self._unregister(conn)
        await asyncio.gather(*(c.kill(reason) for c in conns))
        return len(conns)


def _key(item: object) -> Key | None:
    """``{"ExchangeSegment": "NSE_FNO", "SecurityId": "49081"}`` → key; None when unusable."""
    if not isinstance(item, dict):
        return None
    segment = item.get("ExchangeSegment")
    if isinstance(segment, int):
        segment = SEGMENT_NAMES.get(segment)
    if segment not in SEGMENT_CODES:
        return None
    try:
        return (str(segment), int(str(item.get("SecurityId")).strip()))
    except ValueError:
        return None
