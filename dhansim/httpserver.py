"""A small HTTP/1.1 server (asyncio streams + h11) with keep-alive, for the REST side.

Why not an ASGI server: the fault switches need to drop a connection after a request was
handled, or hold a response beyond the client's timeout, which is direct here. h11 does the
protocol parsing (it is already in the environment as httpx's dependency).

The handler takes an :class:`HttpRequest` and returns an :class:`HttpResponse` or :data:`DROP`
(close the TCP connection without answering).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

import h11

log = logging.getLogger("dhansim.http")

MAX_BODY_BYTES = 1 << 20
READ_CHUNK = 65_536


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-case names; the last value wins."""
    body: bytes


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)


DROP = object()
"""Returned by a handler: abort the connection without a response."""

Handler = Callable[[HttpRequest], Awaitable["HttpResponse | object"]]


class HttpServer:
    """Serves ``handler`` on ``host:port`` (port 0 picks a free one; see :attr:`port`)."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port)
        return self.port

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._handlers):  # e.g. an answer held back by a fault
            task.cancel()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY_BYTES)
        try:
            while True:
                request = await self._read_request(conn, reader)
                if request is None:
                    break
                result = await self._handler(request)
                if result is DROP or not isinstance(result, HttpResponse):
                    writer.transport.abort()
                    return
                writer.write(_encode(conn, result))
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    break
                conn.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                body = b'{"errorType":"Input_Exception","errorCode":"DH-905","errorMessage":"bad HTTP request"}'
                writer.write(_encode(conn, HttpResponse(exc.error_status_hint, body)))
        except (ConnectionError, asyncio.IncompleteReadError, h11.LocalProtocolError):
            pass
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._handlers.discard(task)
            try:
                writer.close()
            except RuntimeError:  # loop shutting down
                pass

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> HttpRequest | None:
        head: h11.Request | None = None
        chunks: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(READ_CHUNK))
                continue
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY_BYTES:
                    raise h11.RemoteProtocolError("body too large", error_status_hint=413)
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                target = urlsplit(head.target.decode("latin-1"))
                return HttpRequest(
                    method=head.method.decode("ascii").upper(),
                    path=unquote(target.path),
                    query=dict(parse_qsl(target.query)),
                    headers={
                        k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers
                    },
                    body=b"".join(chunks),
                )


def _encode(conn: h11.Connection, response: HttpResponse) -> bytes:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        ("server", "dhansim"),
        ("date", email.utils.formatdate(usegmt=True)),
        *response.headers,
    ]
    return (
        conn.send(h11.Response(status_code=response.status, headers=headers))
        + conn.send(h11.Data(data=response.body))
        + conn.send(h11.EndOfMessage())
    )
