"""DhanHQ v2 live market feed client: asyncio WebSockets, no Redis (the feed service wires it).

Follows ``reference/dhanhq-api.md`` §1 and §4.3 (see :mod:`shared.dhan.codec` for the frames):

- the subscription set is spread over up to :data:`MAX_CONNECTIONS` sockets, each filled to
  5000 instruments before the next opens; each socket resubscribes its whole set on reconnect;
- a dropped socket, a failed handshake, a non-fatal Disconnect (e.g. 800) or a socket silent for
  ``idle_timeout_s`` reconnects after a :class:`Backoff` delay (exponential, jittered, capped);
- Disconnect 805–810 or HTTP 401/403 at the handshake halts the client: :meth:`FeedClient.run`
  raises :class:`FeedHalted` and nothing reconnects;
- malformed packets are counted in ``FeedClient.stats`` and logged (throttled), never fatal;
- the access token (it is in the URL) never reaches a log line or an exception message.

Also here, pure: :func:`packet_to_fields` (packet -> ``Tick`` fields) and :class:`LatestTicks`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException

from shared.clock import Clock
from shared.dhan import codec
from shared.dhan.codec import Disconnect, FeedMode, Full, OpenInterest, Packet, Quote, Ticker
from shared.errors import BrokerAuthError, ConfigError, PacketError
from shared.logs import Throttle
from shared.types import SEGMENT_CODES, SEGMENT_NAMES, round_to_tick

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 5
"""Market-feed sockets per user (reference §1.3); a 6th makes the server drop the oldest (805)."""

DISCONNECT_REASONS: dict[int, str] = {
    800: "internal server error",
    804: "requested number of instruments exceeds limit",
    805: "too many requests or connections",
    806: "data APIs not subscribed",
    807: "access token expired",
    808: "authentication failed: client id or token invalid",
    809: "access token invalid",
    810: "client id invalid",
    811: "invalid expiry date",
    812: "invalid date format",
    813: "invalid security id",
    814: "invalid request",
}
"""Data API / WebSocket disconnect codes (reference §4.3, Annexure meanings)."""

HALT_REASONS = frozenset(range(805, 811))
"""Disconnect reasons that retrying cannot fix: the client halts instead of reconnecting."""

_AUTH_HTTP = frozenset({401, 403})

Instrument = tuple[str, int]
"""``(segment, security_id)``, segment as DhanHQ spells it in JSON (``"NSE_FNO"``)."""

OnPackets = Callable[[list[Packet], int], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]


class FeedHalted(BrokerAuthError):
    """The feed server refused us for a reason retrying cannot fix; nothing reconnects.

    ``reason_code`` is the Disconnect reason (805–810) or 0 when the handshake itself was refused
    (then ``http_status`` is set); ``meaning`` is the reason in words.
    """

    def __init__(self, reason_code: int, meaning: str, *, http_status: int = 0) -> None:
        what = f"disconnect {reason_code}" if reason_code else f"handshake HTTP {http_status}"
        super().__init__(
            f"market feed halted: {what} ({meaning}); not reconnecting",
            code=str(reason_code) if reason_code else "",
            http_status=http_status,
        )
        self.reason_code = reason_code
        self.meaning = meaning


# --------------------------------------------------------------------------- shared helpers


class Backoff(msgspec.Struct, frozen=True, kw_only=True):
    """Reconnect delays: ``initial_s * factor**attempt`` capped at ``cap_s``, minus up to
    ``jitter`` of it at random; never below ``rate_limited_s`` after an HTTP 429 handshake."""

    initial_s: float = 0.5
    factor: float = 2.0
    cap_s: float = 30.0
    jitter: float = 0.2
    rate_limited_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.initial_s > 0:
            raise ConfigError(f"backoff.initial_s: must be > 0, got {self.initial_s}")
        if not self.factor >= 1:
            raise ConfigError(f"backoff.factor: must be >= 1, got {self.factor}")
        if not self.cap_s >= self.initial_s:
            raise ConfigError(f"backoff.cap_s: must be >= initial_s, got {self.cap_s}")
        if not 0 <= self.jitter < 1:
            raise ConfigError(f"backoff.jitter: must be in [0, 1), got {self.jitter}")

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        """Delay before reconnect number ``attempt`` (0-based) of a failure streak, seconds."""
        base = min(self.cap_s, self.initial_s * self.factor ** min(attempt, 64))
        return base * (1.0 - self.jitter * rng.random())


def redact(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` (as given or stripped) replaced by ``***``."""
    for form in sorted({secret, secret.strip()}, key=len, reverse=True):
        if len(form) >= 4:
            text = text.replace(form, "***")
    return text


class _WireLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Logger handed to ``websockets``: drops wire traces (request line, headers and frames,
    whose text may hold the token, even truncated) and redacts the token everywhere else."""

    def __init__(self, logger: logging.Logger, secret: str) -> None:
        super().__init__(logger, {})
        self._secret = secret

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        template = str(msg)
        if template.startswith((">", "<")) or not self.isEnabledFor(level):
            return
        text = template % args if args else template
        exc_info = kwargs.pop("exc_info", None)
        if exc_info:
            exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
            if exc is not None:
                text += f": {type(exc).__name__}: {exc}"
        kwargs.pop("stack_info", None)
        self.logger.log(level, redact(text, self._secret), **kwargs)


def wire_logger(name: str, secret: str) -> logging.LoggerAdapter:  # type: ignore[type-arg]
    """The logger to pass to ``websockets.connect`` for a connection that carries ``secret``."""
    return _WireLogger(logging.getLogger(name), secret)


# --------------------------------------------------------------------------- pure mapping

DEFAULT_TICK_PAISE = 5


def _paise(price_rupees: float, tick_paise: int) -> int:
    # Empty depth levels carry -0.01 and garbage books can hold NaN: both mean "no price".
    if not math.isfinite(price_rupees) or price_rupees <= 0:
        return 0
    return round_to_tick(price_rupees, tick_paise)


def packet_to_fields(
    packet: Packet, recv_ns: int, tick_paise: int = DEFAULT_TICK_PAISE
) -> dict[str, Any] | None:
    """The ``shared.messages.Tick`` fields of a price packet, or None for any other packet.

    ``recv_ns`` (UTC ns) becomes ``ts_event``; prices are rounded to ``tick_paise`` and are 0
    when absent or not positive; ``ltt_s`` is true UTC seconds (``codec.ltt_to_utc_s``); a
    Full packet's bid/ask come from depth level 0. OI, Prev Close, Market Status, Index and
    Disconnect packets give None. The caller adds ``msg_id``, ``ts_init`` and ``tick_id``.
    Raises ``PacketError`` for an unknown segment code (the client never passes one on).
    """
    if not isinstance(packet, Ticker | Quote | Full):
        return None
    fields: dict[str, Any] = {
        "ts_event": recv_ns,
        "segment": packet.segment,
        "security_id": packet.security_id,
        "ltp_paise": _paise(packet.ltp, tick_paise),
        "ltt_s": codec.ltt_to_utc_s(packet.ltt),
        "kind": "ticker",
    }
    if isinstance(packet, Quote | Full):
        fields.update(ltq=packet.ltq, volume=packet.volume, kind="quote")
    if isinstance(packet, Full):
        top = packet.depth[0]
        fields.update(
            oi=packet.oi,
            bid_paise=_paise(top.bid_price, tick_paise),
            ask_paise=_paise(top.ask_price, tick_paise),
            bid_qty=top.bid_qty,
            ask_qty=top.ask_qty,
            kind="full",
        )
    return fields


class LatestTicks:
    """Latest tick fields per instrument, under the original system's rule: only a tick with a
    positive LTP replaces the entry; a zero or negative LTP leaves the previous one in place."""

    def __init__(self) -> None:
        self._latest: dict[Instrument, dict[str, Any]] = {}

    def put(self, fields: Mapping[str, Any]) -> bool:
        """Store ``fields`` (``packet_to_fields`` output) if ``ltp_paise > 0``; True if stored."""
        if fields.get("ltp_paise", 0) <= 0:
            return False
        self._latest[(fields["segment"], int(fields["security_id"]))] = dict(fields)
        return True

    def get(self, segment: str, security_id: int) -> dict[str, Any] | None:
        return self._latest.get((segment, security_id))

    def __len__(self) -> int:
        return len(self._latest)


# --------------------------------------------------------------------------- the client


@dataclass
class FeedStats:
    """Counters since construction (for health and logs)."""

    connects: int = 0
    connect_failures: int = 0
    reconnect_waits: int = 0
    messages: int = 0
    packets: int = 0
    packet_errors: int = 0
    text_frames: int = 0
    idle_timeouts: int = 0
    disconnects: dict[int, int] = field(default_factory=dict)
    """Disconnect packets received, by reason code."""


_LIVE = (Ticker, Quote, Full, OpenInterest)
"""Packets that prove a socket is healthy (Prev Close alone arrives on every subscribe)."""


class _Ended(NamedTuple):
    healthy: bool
    min_delay_s: float = 0.0


class _Conn:
    """One socket's state: the set it should carry and what the current socket has been sent."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.wanted: dict[Instrument, None] = {}  # insertion-ordered set
        self.sent: dict[Instrument, None] = {}
        self.ws: Any = None
        self.lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None


class FeedClient:
    """Market-feed client over up to five sockets; ``run()`` until ``stop()`` or a halt.

    ``on_packets(packets, recv_ns)`` is awaited for every binary message that held data packets
    (Disconnect packets are handled here and not passed on; every passed packet has a known
    segment); ``recv_ns`` is ``clock.now_ns()`` at receipt. An exception it raises ends
    :meth:`run` with that exception. ``idle_timeout_s=None`` disables idle detection.
    """

    def __init__(
        self,
        base_url: str,
        client_id: str,
        access_token: str,
        *,
        on_packets: OnPackets,
        mode: FeedMode = "full",
        connect: Callable[..., Awaitable[Any]] = websockets.connect,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        idle_timeout_s: float | None = 30.0,
        backoff: Backoff | None = None,
    ) -> None:
        codec.subscribe_messages(mode, [])  # ValueError now for an unknown mode
        self._url = codec.feed_url(base_url, access_token, client_id)
        self._token = access_token
        self._on_packets = on_packets
        self._mode: FeedMode = mode
        self._connect = connect
        self._clock = clock or Clock()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._idle_timeout_s = idle_timeout_s
        self._backoff = backoff or Backoff()
        self._conns = [_Conn(i) for i in range(MAX_CONNECTIONS)]
        self._wire_log = wire_logger(f"{__name__}.ws", access_token)
        self._throttle = Throttle(10.0)
        self._done: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._stopping = False
        self.stats = FeedStats()
        self.halted: FeedHalted | None = None

    # ----------------------------------------------------------------- queries

    @property
    def url_redacted(self) -> str:
        return redact(self._url, self._token)

    @property
    def subscriptions(self) -> frozenset[Instrument]:
        """Every instrument currently subscribed (or to be, once connected)."""
        return frozenset(i for c in self._conns for i in c.wanted)

    @property
    def connection_sizes(self) -> tuple[int, ...]:
        """Instruments assigned to each of the five connection slots."""
        return tuple(len(c.wanted) for c in self._conns)

    @property
    def connected_count(self) -> int:
        """Sockets open right now."""
        return sum(c.ws is not None for c in self._conns)

    # ----------------------------------------------------------------- subscriptions

    async def subscribe(self, instruments: Iterable[tuple[str | int, int | str]]) -> int:
        """Add instruments to the current set; returns how many were new.

        New ones go to the first connection with room; connected sockets are sent the
        subscribe frames now, the others on connect. ValueError (and no change) for an unknown
        segment, a non-numeric security id, or more than 5 x 5000 instruments in all.
        """
        current = self.subscriptions
        new = list(dict.fromkeys(i for i in map(_instrument, instruments) if i not in current))
        room = MAX_CONNECTIONS * codec.MAX_INSTRUMENTS_PER_CONNECTION - len(current)
        if len(new) > room:
            raise ValueError(
                f"cannot subscribe {len(new)} more instruments: {len(current)} already, limit "
                f"{MAX_CONNECTIONS} connections x {codec.MAX_INSTRUMENTS_PER_CONNECTION}"
            )
        touched: list[_Conn] = []
        pos = 0
        for conn in self._conns:
            free = codec.MAX_INSTRUMENTS_PER_CONNECTION - len(conn.wanted)
            chunk = new[pos : pos + max(free, 0)]
            if chunk:
                conn.wanted.update(dict.fromkeys(chunk))
                touched.append(conn)
                pos += len(chunk)
        for conn in touched:
            await self._apply(conn)
        return len(new)

    async def unsubscribe(self, instruments: Iterable[tuple[str | int, int | str]]) -> int:
        """Remove instruments from the current set (unknown ones are ignored); returns how many
        were removed. Connected sockets are sent the unsubscribe frames now."""
        touched: dict[int, _Conn] = {}
        removed = 0
        for inst in map(_instrument, instruments):
            for conn in self._conns:
                if inst in conn.wanted:
                    del conn.wanted[inst]
                    touched[conn.index] = conn
                    removed += 1
                    break
        for conn in touched.values():
            await self._apply(conn)
        return removed

    async def _apply(self, conn: _Conn) -> None:
        if self._done is None or self._stopping:
            return  # not running: run() connects and subscribes the whole set
        if conn.task is None:
            self._start(conn)
        else:
            await self._sync(conn)

    async def _sync(self, conn: _Conn) -> None:
        """Bring the socket's server-side set in line with ``conn.wanted``."""
        async with conn.lock:
            ws, sent = conn.ws, conn.sent
            if ws is None:
                return
            gone = [i for i in sent if i not in conn.wanted]
            new = [i for i in conn.wanted if i not in sent]
            try:
                for text in codec.unsubscribe_messages(self._mode, gone):
                    await ws.send(text)
                for inst in gone:
                    del sent[inst]
                for text in codec.subscribe_messages(self._mode, new):
                    await ws.send(text)
                sent.update(dict.fromkeys(new))
            except (ConnectionClosed, OSError) as exc:
                # The reader sees the same closure and reconnects; the new socket gets the set.
                _log(logging.DEBUG, "subscription send failed", conn=conn.index, **self._exc(exc))

    # ----------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        """Connect every connection that has instruments and keep them up until :meth:`stop`.

        Raises :class:`FeedHalted` on a fatal disconnect, or what ``on_packets`` raised.
        """
        if self._done is not None:
            raise RuntimeError("FeedClient.run() is already running")
        self._done = asyncio.Event()
        self._failure = None
        self._stopping = False
        try:
            for conn in self._conns:
                if conn.wanted:
                    self._start(conn)
            await self._done.wait()
        finally:
            tasks = [c.task for c in self._conns if c.task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for conn in self._conns:
                conn.task = None
            self._done = None
        if self._failure is not None:
            raise self._failure

    async def stop(self) -> None:
        """Send the disconnect request (code 12) on open sockets, close them, end :meth:`run`."""
        self._stopping = True
        open_ws = [c.ws for c in self._conns if c.ws is not None]
        await asyncio.gather(*(self._close(ws, goodbye=True) for ws in open_ws))
        if self._done is not None:
            self._done.set()

    def _start(self, conn: _Conn) -> None:
        conn.task = asyncio.create_task(self._conn_main(conn), name=f"feed-conn-{conn.index}")

    async def _conn_main(self, conn: _Conn) -> None:
        try:
            await self._conn_loop(conn)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, FeedHalted):
                self.halted = exc
                _log(logging.ERROR, str(exc), conn=conn.index)
            if self._failure is None:
                self._failure = exc
            if self._done is not None:
                self._done.set()

    async def _conn_loop(self, conn: _Conn) -> None:
        failures = 0
        ended: _Ended | None = None
        while not self._stopping:
            if ended is not None:
                delay_s = max(self._backoff.delay_s(failures, self._rng), ended.min_delay_s)
                failures += 1
                self.stats.reconnect_waits += 1
                _log(logging.INFO, "feed reconnecting", conn=conn.index, delay_s=round(delay_s, 3),
                     failures=failures)  # fmt: skip
                await self._sleep(delay_s)
                if self._stopping:
                    return
            ended = await self._session(conn)
            if ended.healthy:
                failures = 0

    async def _open(self, conn: _Conn) -> tuple[Any, _Ended | None]:
        """Connect; return the socket, or None and how the attempt ended."""
        try:
            ws = await self._connect(self._url, logger=self._wire_log)
        except InvalidURI:
            raise ConfigError(f"market feed URL is invalid: {self.url_redacted}") from None
        except InvalidStatus as exc:
            status = exc.response.status_code
            self.stats.connect_failures += 1
            if status in _AUTH_HTTP:
                raise FeedHalted(0, "handshake refused", http_status=status) from None
            _log(logging.WARNING, "feed handshake refused", conn=conn.index, http_status=status)
            return None, _Ended(False, self._backoff.rate_limited_s if status == 429 else 0.0)
        except (OSError, TimeoutError, WebSocketException) as exc:
            self.stats.connect_failures += 1
            _log(logging.WARNING, "feed connect failed", conn=conn.index, **self._exc(exc))
            return None, _Ended(False)
        return ws, None

    async def _session(self, conn: _Conn) -> _Ended:
        """One socket from connect to close: subscribe the whole set, then read."""
        ws, failed = await self._open(conn)
        if failed is not None:
            return failed
        self.stats.connects += 1
        healthy = False
        try:
            async with conn.lock:
                conn.ws, conn.sent = ws, {}
            _log(logging.INFO, "feed connected", conn=conn.index, instruments=len(conn.wanted))
            await self._sync(conn)
            while True:
                timeout_s = self._idle_timeout_s if conn.wanted else None
                try:
                    async with asyncio.timeout(timeout_s):
                        frame = await ws.recv()
                except TimeoutError:
                    self.stats.idle_timeouts += 1
                    _log(logging.WARNING, "feed idle; reconnecting", conn=conn.index,
                         idle_timeout_s=timeout_s)  # fmt: skip
                    return _Ended(healthy)
                except (ConnectionClosed, OSError) as exc:
                    if not self._stopping:
                        _log(logging.WARNING, "feed socket closed", conn=conn.index,
                             **self._exc(exc))  # fmt: skip
                    return _Ended(healthy)
                live, reason = await self._handle(conn, frame)
                healthy = healthy or live
                if reason is not None:
                    self._on_disconnect(conn, reason)  # raises FeedHalted for 805-810
                    return _Ended(healthy)
        finally:
            async with conn.lock:
                conn.ws, conn.sent = None, {}
            await self._close(ws, goodbye=False)

    async def _handle(self, conn: _Conn, frame: bytes | str) -> tuple[bool, int | None]:
        """Decode one message and pass its data packets on.

        Returns whether any was a live packet, and the reason of a Disconnect packet, if any.
        """
        recv_ns = self._clock.now_ns()
        stats = self.stats
        stats.messages += 1
        if isinstance(frame, str):
            stats.text_frames += 1
            self._warn(
                "text_frame", "unexpected text frame on the market feed", conn, chars=len(frame)
            )
            return False, None
        packets, errors = codec.decode_message_lenient(frame)
        data: list[Packet] = []
        disconnect: Disconnect | None = None
        for packet in packets:
            if isinstance(packet, Disconnect):
                disconnect = disconnect or packet
            elif packet.segment_code in SEGMENT_NAMES:
                data.append(packet)
            else:
                errors.append(PacketError(f"unknown exchange segment code {packet.segment_code}"))
        if errors:
            stats.packet_errors += len(errors)
            self._warn(
                "packet_error",
                "malformed feed packet",
                conn,
                error=str(errors[0]),
                errors_total=stats.packet_errors,
            )
        if data:
            stats.packets += len(data)
            await self._on_packets(data, recv_ns)
        live = any(isinstance(p, _LIVE) for p in data)
        return live, None if disconnect is None else disconnect.reason_code

    def _on_disconnect(self, conn: _Conn, reason: int) -> None:
        self.stats.disconnects[reason] = self.stats.disconnects.get(reason, 0) + 1
        meaning = DISCONNECT_REASONS.get(reason, "unknown reason")
        if reason in HALT_REASONS:
            raise FeedHalted(reason, meaning)
        _log(logging.WARNING, "feed disconnect from server; reconnecting", conn=conn.index,
             reason_code=reason, reason=meaning)  # fmt: skip

    def _exc(self, exc: BaseException) -> dict[str, str]:
        return {"error": type(exc).__name__, "detail": redact(str(exc), self._token)}

    def _warn(self, key: str, msg: str, conn: _Conn, **fields: Any) -> None:
        if self._throttle.ok(key):
            suppressed = self._throttle.suppressed.pop(key, 0)
            _log(logging.WARNING, msg, conn=conn.index, suppressed=suppressed, **fields)

    async def _close(self, ws: Any, *, goodbye: bool) -> None:
        try:
            if goodbye:
                await ws.send(codec.disconnect_message())
            await ws.close()
        except Exception as exc:  # closing a dead socket may fail any way; nothing to recover
            _log(logging.DEBUG, "close failed", error=type(exc).__name__)


def _log(level: int, msg: str, **fields: Any) -> None:
    log.log(level, msg, extra={"fields": fields})


def _instrument(item: tuple[str | int, int | str]) -> Instrument:
    segment, security_id = item
    if isinstance(segment, int):
        name = SEGMENT_NAMES.get(segment)
        if name is None:
            raise ValueError(f"unknown exchange segment code {segment}")
        segment = name
    elif segment not in SEGMENT_CODES:
        raise ValueError(f"unknown exchange segment {segment!r}")
    try:
        return segment, int(security_id)
    except (TypeError, ValueError):
        raise ValueError(f"security id must be numeric, got {security_id!r}") from None
