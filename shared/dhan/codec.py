"""DhanHQ v2 live market feed codec: binary packets in both directions, JSON requests, URL.

Pure functions, no I/O. Layouts follow ``reference/dhanhq-api.md`` §1.5–1.6 byte for byte:
little-endian, every packet starts with the 8-byte header ``<BHBI`` (response code, message
length, exchange segment numeric code, security id), fields follow from offset 8.

Units of decoded fields:

- prices (``ltp``, ``atp``, ``day_*``, ``prev_close``, depth prices) are rupees, the float32
  value exactly as sent (the feed rounds to the instrument's tick size later);
- quantities, volumes and open interest are units (shares or contracts), unsigned as in the SDK;
- ``ltt`` is the last trade time in epoch seconds *as sent*; see :func:`ltt_to_utc_s`.

Decisions on the reference's UNCONFIRMED points (§8) are named constants below:
:data:`LENGTH_INCLUDES_HEADER`, :data:`LTT_IS_IST_SHIFTED`, and the handling of codes 1 and 7
(:data:`OPAQUE_CODES`). A message may hold several packets; :func:`decode_message` splits it by
the length field.

Every malformed input raises :class:`shared.errors.PacketError`;
:func:`decode_message_lenient` returns what it could decode together with the errors.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar, Literal, NamedTuple
from urllib.parse import urlencode

import msgspec
from msgspec.structs import astuple

from shared.errors import PacketError
from shared.types import SEGMENT_CODES, SEGMENT_NAMES

# --------------------------------------------------------------------------- decisions

LENGTH_INCLUDES_HEADER = True
"""The header's message-length field counts the whole packet, the 8-byte header included.

Confirmed only for Full packets (a real capture carries 162 = total size). For the other codes it
is UNCONFIRMED (reference §8 item 2); we assume the same, so Ticker carries 16, Quote 50, OI 12,
Prev Close 16, Disconnect 10, Market Status 8. If that turns out wrong, flip this constant: the
splitter then reads ``length + 8`` bytes per packet and the encoder writes ``size - 8``.
"""

LTT_IS_IST_SHIFTED = True
"""Whether the feed's last-trade time is IST wall-clock encoded as if it were UTC.

UNCONFIRMED (reference §1.10 and §8 item 4): several independent clients subtract 19,800 s to
get true UTC, and the SDK's UTC formatting printing IST wall-clock time is consistent with that.
Decoded packets keep the raw value (``ltt``); :func:`ltt_to_utc_s` applies the shift.
"""

IST_OFFSET_S = 19_800
"""IST is UTC+05:30."""

HEADER_SIZE = 8

CODE_INDEX = 1
CODE_TICKER = 2
CODE_QUOTE = 4
CODE_OI = 5
CODE_PREV_CLOSE = 6
CODE_MARKET_STATUS = 7
CODE_FULL = 8
CODE_DISCONNECT = 50

OPAQUE_CODES = frozenset({CODE_INDEX, CODE_MARKET_STATUS})
"""Codes whose payload layout is undocumented (reference §8 item 3).

They decode to :class:`IndexPacket` / :class:`MarketStatus` holding the header fields and the
raw bytes after the header (usually none), so the feed can count and ignore them without treating
them as errors; the encoder writes those bytes back unchanged. Code 1 (Index) is listed in the
Annexure but never described, and the SDK drops it; code 7 is header-only in the SDK.
"""

# --------------------------------------------------------------------------- packets


class DepthLevel(msgspec.Struct, frozen=True, gc=False):
    """One level of the Full packet's five-level book: both sides of the level together."""

    bid_qty: int
    ask_qty: int
    bid_orders: int
    ask_orders: int
    bid_price: float
    ask_price: float


class _Base(msgspec.Struct, frozen=True, gc=False):
    """Header fields common to every packet."""

    CODE: ClassVar[int]

    segment_code: int
    """Exchange segment numeric code from the header (reference §2)."""
    security_id: int

    @property
    def segment(self) -> str:
        """The segment as DhanHQ spells it in JSON (``"NSE_FNO"``); PacketError if unknown."""
        try:
            return SEGMENT_NAMES[self.segment_code]
        except KeyError:
            raise PacketError(f"unknown exchange segment code {self.segment_code}") from None


class Ticker(_Base, frozen=True, gc=False):
    """Code 2, 16 bytes: last traded price (rupees) and last trade time (raw epoch s)."""

    CODE: ClassVar[int] = CODE_TICKER

    ltp: float
    ltt: int


class Quote(_Base, frozen=True, gc=False):
    """Code 4, 50 bytes. ``day_close`` is only meaningful after the market closes."""

    CODE: ClassVar[int] = CODE_QUOTE

    ltp: float
    ltq: int
    ltt: int
    atp: float
    volume: int
    total_sell_qty: int
    total_buy_qty: int
    day_open: float
    day_close: float
    day_high: float
    day_low: float


class OpenInterest(_Base, frozen=True, gc=False):
    """Code 5, 12 bytes: open interest (contracts); sent with Quote subscriptions."""

    CODE: ClassVar[int] = CODE_OI

    oi: int


class PrevClose(_Base, frozen=True, gc=False):
    """Code 6, 16 bytes: previous day's close (rupees) and open interest; sent on subscribe."""

    CODE: ClassVar[int] = CODE_PREV_CLOSE

    prev_close: float
    prev_oi: int


class MarketStatus(_Base, frozen=True, gc=False):
    """Code 7: header only; any bytes after the header are kept raw (layout undocumented)."""

    CODE: ClassVar[int] = CODE_MARKET_STATUS

    payload: bytes = b""


class IndexPacket(_Base, frozen=True, gc=False):
    """Code 1: undocumented; header fields plus the raw bytes after the header."""

    CODE: ClassVar[int] = CODE_INDEX

    payload: bytes = b""


class Depth(Sequence[DepthLevel]):
    """The Full packet's five levels, decoded from the wire bytes on first use.

    Decoding the 30 depth values into five objects is two thirds of a Full packet's decode
    cost, and the feed reads only the best level of a few packets; so the decoder keeps the
    80 raw bytes and unpacks them when indexed or iterated. Equal to (and hashed like) the
    tuple of its levels, so a decoded packet compares equal to one built with a tuple.
    """

    __slots__ = ("_raw", "_levels")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._levels: tuple[DepthLevel, ...] | None = None

    def levels(self) -> tuple[DepthLevel, ...]:
        if self._levels is None:
            v = _DEPTH.unpack(self._raw)
            self._levels = tuple(DepthLevel(*v[i : i + 6]) for i in range(0, 6 * DEPTH_LEVELS, 6))
        return self._levels

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        if self._levels is None and type(i) is int and -DEPTH_LEVELS <= i < DEPTH_LEVELS:
            return DepthLevel(*_LEVEL.unpack_from(self._raw, (i % DEPTH_LEVELS) * _LEVEL.size))
        return self.levels()[i]

    def __len__(self) -> int:
        return DEPTH_LEVELS

    def __iter__(self) -> Iterator[DepthLevel]:
        return iter(self.levels())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Depth):
            return self._raw == other._raw or self.levels() == other.levels()
        if isinstance(other, tuple | list):
            return self.levels() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.levels())

    def __repr__(self) -> str:
        return repr(self.levels())


class Full(_Base, frozen=True, gc=False):
    """Code 8, 162 bytes. The three OI fields sit before the OHLC block, unlike Quote.

    ``depth`` is a tuple of five :class:`DepthLevel` when built by hand and a lazy
    :class:`Depth` (same values, same equality) when decoded from the wire.
    """

    CODE: ClassVar[int] = CODE_FULL

    ltp: float
    ltq: int
    ltt: int
    atp: float
    volume: int
    total_sell_qty: int
    total_buy_qty: int
    oi: int
    oi_day_high: int
    oi_day_low: int
    day_open: float
    day_close: float
    day_high: float
    day_low: float
    depth: Sequence[DepthLevel]
    """Five levels, best first."""


class Disconnect(_Base, frozen=True, gc=False):
    """Code 50, 10 bytes: the server is closing the feed; reason per reference §4.3 (e.g. 807)."""

    CODE: ClassVar[int] = CODE_DISCONNECT

    reason_code: int


Packet = Ticker | Quote | OpenInterest | PrevClose | MarketStatus | IndexPacket | Full | Disconnect


class PacketHeader(NamedTuple):
    """The 8-byte header as sent."""

    code: int
    length: int
    segment_code: int
    security_id: int


# --------------------------------------------------------------------------- layouts

DEPTH_LEVELS = 5
_HEADER = struct.Struct("<BHBI")
_CODE_LENGTH = struct.Struct("<BH")
_TICKER = struct.Struct("<BHBIfI")
_QUOTE = struct.Struct("<BHBIfHIfIIIffff")
_OI = struct.Struct("<BHBII")
_PREV_CLOSE = struct.Struct("<BHBIfI")
_FULL = struct.Struct("<BHBIfHIfIIIIIIffff" + "IIHHff" * DEPTH_LEVELS)
_LEVEL = struct.Struct("<IIHHff")
_DEPTH = struct.Struct("<" + "IIHHff" * DEPTH_LEVELS)
_FULL_HEAD = struct.Struct("<BHBIfHIfIIIIIIffff")
"""The Full packet up to its depth block (62 bytes); the depth (100 bytes) follows."""
_DISCONNECT = struct.Struct("<BHBIH")

PACKET_SIZES: dict[int, int] = {
    CODE_TICKER: _TICKER.size,
    CODE_QUOTE: _QUOTE.size,
    CODE_OI: _OI.size,
    CODE_PREV_CLOSE: _PREV_CLOSE.size,
    CODE_MARKET_STATUS: HEADER_SIZE,
    CODE_INDEX: HEADER_SIZE,
    CODE_FULL: _FULL.size,
    CODE_DISCONNECT: _DISCONNECT.size,
}
"""Minimum total size of each packet type in bytes, header included."""

assert _FULL.size == 162 and _QUOTE.size == 50 and _TICKER.size == 16  # reference §1.6
assert _FULL_HEAD.size + _DEPTH.size == _FULL.size


def _length_field(total: int) -> int:
    return total if LENGTH_INCLUDES_HEADER else total - HEADER_SIZE


_LENGTH_EXTRA = 0 if LENGTH_INCLUDES_HEADER else HEADER_SIZE

# --------------------------------------------------------------------------- decoding

Buffer = bytes | bytearray | memoryview
"""Anything the decoders accept: a WebSocket frame's bytes or a view into a larger buffer."""

_Decoder = Callable[[Buffer, int, int], Packet]


def _decode_ticker(buf: Buffer, off: int, total: int) -> Packet:
    _, _, seg, sid, ltp, ltt = _TICKER.unpack_from(buf, off)
    return Ticker(seg, sid, ltp, ltt)


def _decode_quote(buf: Buffer, off: int, total: int) -> Packet:
    return Quote(*_QUOTE.unpack_from(buf, off)[2:])


def _decode_oi(buf: Buffer, off: int, total: int) -> Packet:
    _, _, seg, sid, oi = _OI.unpack_from(buf, off)
    return OpenInterest(seg, sid, oi)


def _decode_prev_close(buf: Buffer, off: int, total: int) -> Packet:
    _, _, seg, sid, close, oi = _PREV_CLOSE.unpack_from(buf, off)
    return PrevClose(seg, sid, close, oi)


def _decode_market_status(buf: Buffer, off: int, total: int) -> Packet:
    _, _, seg, sid = _HEADER.unpack_from(buf, off)
    return MarketStatus(seg, sid, bytes(buf[off + HEADER_SIZE : off + total]))


def _decode_index(buf: Buffer, off: int, total: int) -> Packet:
    _, _, seg, sid = _HEADER.unpack_from(buf, off)
    return IndexPacket(seg, sid, bytes(buf[off + HEADER_SIZE : off + total]))


def _decode_full(
    buf: Buffer,
    off: int,
    total: int,
    _unpack: Callable[[Buffer, int], tuple[Any, ...]] = _FULL_HEAD.unpack_from,
    _full: type[Full] = Full,
    _depth: type[Depth] = Depth,
    _head: int = _FULL_HEAD.size,
    _size: int = _FULL.size,
) -> Packet:
    # The hot path: one unpack of the 18 leading values into locals, positional construction,
    # and the depth block kept as bytes (decoded on first use, see Depth).
    (
        _, _, seg, sid, ltp, ltq, ltt, atp, vol, sell, buy, oi, oi_hi, oi_lo, op, cl, hi, lo,
    ) = _unpack(buf, off)  # fmt: skip
    return _full(
        seg, sid, ltp, ltq, ltt, atp, vol, sell, buy, oi, oi_hi, oi_lo, op, cl, hi, lo,
        _depth(bytes(buf[off + _head : off + _size])),
    )  # fmt: skip


def _decode_disconnect(buf: Buffer, off: int, total: int) -> Packet:
    _, _, seg, sid, reason = _DISCONNECT.unpack_from(buf, off)
    return Disconnect(seg, sid, reason)


_DECODERS: dict[int, tuple[int, _Decoder]] = {
    code: (PACKET_SIZES[code], decoder)
    for code, decoder in (
        (CODE_TICKER, _decode_ticker),
        (CODE_QUOTE, _decode_quote),
        (CODE_OI, _decode_oi),
        (CODE_PREV_CLOSE, _decode_prev_close),
        (CODE_MARKET_STATUS, _decode_market_status),
        (CODE_INDEX, _decode_index),
        (CODE_FULL, _decode_full),
        (CODE_DISCONNECT, _decode_disconnect),
    )
}

_FULL_PREFIX = _CODE_LENGTH.pack(CODE_FULL, _length_field(_FULL.size))
"""Code and length field of a Full packet: lets a lone Full packet skip the generic splitter."""


def _decode_at(buf: Buffer, off: int, end: int) -> tuple[Packet, int]:
    """Decode the packet at ``off``; return it and the offset of the next one."""
    if end - off < HEADER_SIZE:
        raise PacketError(f"truncated header: {end - off} bytes at offset {off}, need 8")
    code, length = _CODE_LENGTH.unpack_from(buf, off)
    total = length + _LENGTH_EXTRA
    entry = _DECODERS.get(code)
    if entry is None:
        raise PacketError(f"unknown response code {code} at offset {off} (length field {length})")
    size, decoder = entry
    if total < size:
        raise PacketError(
            f"code {code} at offset {off}: length field {length} is shorter than its "
            f"{size}-byte layout"
        )
    if off + total > end:
        raise PacketError(
            f"truncated packet: code {code} at offset {off} needs {total} bytes, {end - off} left"
        )
    return decoder(buf, off, total), off + total


def decode_header(buf: Buffer, offset: int = 0) -> PacketHeader:
    """The raw 8-byte header at ``offset`` (no validation beyond its size)."""
    if len(buf) - offset < HEADER_SIZE:
        raise PacketError(f"truncated header: {len(buf) - offset} bytes at offset {offset}, need 8")
    return PacketHeader(*_HEADER.unpack_from(buf, offset))


def decode_packet(buf: Buffer) -> Packet:
    """Decode a buffer that holds exactly one packet."""
    packet, end = _decode_at(buf, 0, len(buf))
    if end != len(buf):
        raise PacketError(f"{len(buf) - end} bytes after the packet (length field says {end})")
    return packet


def decode_message(buf: Buffer) -> list[Packet]:
    """Split one WebSocket binary message into its packets by the length field and decode them.

    Raises :class:`PacketError` at the first empty, truncated or unknown packet.
    """
    end = len(buf)
    if end == _FULL.size and buf[:3] == _FULL_PREFIX:  # the common case: one Full packet
        return [_decode_full(buf, 0, end)]
    if end == 0:
        raise PacketError("empty message")
    packets: list[Packet] = []
    off = 0
    while off < end:
        packet, off = _decode_at(buf, off, end)
        packets.append(packet)
    return packets


def decode_messages(messages: Iterable[Buffer]) -> list[Packet]:
    """Batch form of :func:`decode_message`: the packets of many messages, in order."""
    packets: list[Packet] = []
    append = packets.append
    decode_at = _decode_at
    decode_full = _decode_full
    for buf in messages:
        end = len(buf)
        if end == _FULL.size and buf[:3] == _FULL_PREFIX:
            append(decode_full(buf, 0, end))
            continue
        if end == 0:
            raise PacketError("empty message")
        off = 0
        while off < end:
            packet, off = decode_at(buf, off, end)
            append(packet)
    return packets


def decode_message_lenient(buf: Buffer) -> tuple[list[Packet], list[PacketError]]:
    """Decode what can be decoded; return ``(packets, errors)`` instead of raising.

    An unknown code or a too-short length field skips that packet and goes on (its length field
    still marks where the next packet starts); a truncated packet or header ends the message.
    """
    end = len(buf)
    if end == _FULL.size and buf[:3] == _FULL_PREFIX:
        return [_decode_full(buf, 0, end)], []
    if end == 0:
        return [], [PacketError("empty message")]
    packets: list[Packet] = []
    errors: list[PacketError] = []
    off = 0
    while off < end:
        try:
            packet, off = _decode_at(buf, off, end)
        except PacketError as exc:
            errors.append(exc)
            if end - off < HEADER_SIZE:
                break
            total = _CODE_LENGTH.unpack_from(buf, off)[1] + _LENGTH_EXTRA
            if total < HEADER_SIZE or off + total > end:
                break
            off += total
        else:
            packets.append(packet)
    return packets, errors


def ltt_to_utc_s(ltt: int) -> int:
    """A feed last-trade time (raw ``ltt``) as true UTC epoch seconds.

    Subtracts :data:`IST_OFFSET_S` when :data:`LTT_IS_IST_SHIFTED`. Zero (no trade time) stays 0.
    """
    if LTT_IS_IST_SHIFTED and ltt:
        return ltt - IST_OFFSET_S
    return ltt


def utc_s_to_ltt(utc_s: int) -> int:
    """Inverse of :func:`ltt_to_utc_s`: the value the feed would send for a UTC epoch second."""
    if LTT_IS_IST_SHIFTED and utc_s:
        return utc_s + IST_OFFSET_S
    return utc_s


# --------------------------------------------------------------------------- encoding

# Packet types whose struct fields are exactly the wire fields after code and length, in order.
_FLAT_LAYOUTS: dict[type, struct.Struct] = {
    Ticker: _TICKER,
    Quote: _QUOTE,
    OpenInterest: _OI,
    PrevClose: _PREV_CLOSE,
    Disconnect: _DISCONNECT,
}


def _encode_full(p: Full) -> bytes:
    if len(p.depth) != DEPTH_LEVELS:
        raise PacketError(f"Full packet needs {DEPTH_LEVELS} depth levels, got {len(p.depth)}")
    head = astuple(p)[:-1]
    depth = [value for level in p.depth for value in astuple(level)]
    return _FULL.pack(CODE_FULL, _length_field(_FULL.size), *head, *depth)


def encode(packet: Packet) -> bytes:
    """The wire bytes of one packet; PacketError if a field does not fit its wire type."""
    cls = type(packet)
    try:
        layout = _FLAT_LAYOUTS.get(cls)
        if layout is not None:
            return layout.pack(cls.CODE, _length_field(layout.size), *astuple(packet))
        if isinstance(packet, Full):
            return _encode_full(packet)
        if isinstance(packet, MarketStatus | IndexPacket):
            size = HEADER_SIZE + len(packet.payload)
            head = _HEADER.pack(
                cls.CODE, _length_field(size), packet.segment_code, packet.security_id
            )
            return head + packet.payload
    except (struct.error, OverflowError) as exc:
        raise PacketError(f"cannot encode {packet!r}: {exc}") from exc
    raise PacketError(f"cannot encode {cls.__name__}: not a feed packet")


def encode_message(packets: Iterable[Packet]) -> bytes:
    """Several packets concatenated into one WebSocket binary message."""
    return b"".join(encode(p) for p in packets)


# --------------------------------------------------------------------------- requests

FeedMode = Literal["ticker", "quote", "full"]

SUBSCRIBE_CODES: dict[str, int] = {"ticker": 15, "quote": 17, "full": 21}
UNSUBSCRIBE_CODES: dict[str, int] = {"ticker": 16, "quote": 18, "full": 22}
REQUEST_DISCONNECT = 12
MAX_INSTRUMENTS_PER_MESSAGE = 100
MAX_INSTRUMENTS_PER_CONNECTION = 5000
FEED_URL = "wss://api-feed.dhan.co"

Instrument = tuple[str | int, int | str]
"""``(segment, security_id)``; segment as its JSON string (``"NSE_FNO"``) or numeric code."""

_json = msgspec.json.Encoder()


def _instrument_json(segment: str | int, security_id: int | str) -> dict[str, str]:
    if isinstance(segment, int):
        name = SEGMENT_NAMES.get(segment)
        if name is None:
            raise ValueError(f"unknown exchange segment code {segment}")
    elif segment in SEGMENT_CODES:
        name = segment
    else:
        raise ValueError(f"unknown exchange segment {segment!r}")
    return {"ExchangeSegment": name, "SecurityId": str(security_id)}


def _request_messages(code: int, instruments: Iterable[Instrument]) -> list[str]:
    items = [_instrument_json(seg, sid) for seg, sid in instruments]
    step = MAX_INSTRUMENTS_PER_MESSAGE
    return [
        _json.encode(
            {"RequestCode": code, "InstrumentCount": len(chunk), "InstrumentList": chunk}
        ).decode()
        for chunk in (items[i : i + step] for i in range(0, len(items), step))
    ]


def _mode_code(codes: dict[str, int], mode: str) -> int:
    try:
        return codes[mode]
    except KeyError:
        raise ValueError(f"unknown feed mode {mode!r}; expected one of {sorted(codes)}") from None


def subscribe_messages(mode: FeedMode, instruments: Iterable[Instrument]) -> list[str]:
    """JSON text frames subscribing ``instruments`` in ``mode`` (RequestCode 15/17/21).

    At most :data:`MAX_INSTRUMENTS_PER_MESSAGE` instruments per frame; no frame for no
    instruments. The per-connection limit (5000) is the caller's to enforce.
    """
    return _request_messages(_mode_code(SUBSCRIBE_CODES, mode), instruments)


def unsubscribe_messages(mode: FeedMode, instruments: Iterable[Instrument]) -> list[str]:
    """JSON text frames unsubscribing ``instruments`` from ``mode`` (RequestCode 16/18/22)."""
    return _request_messages(_mode_code(UNSUBSCRIBE_CODES, mode), instruments)


def disconnect_message() -> str:
    """The JSON text frame asking the server to close the feed: ``{"RequestCode":12}``."""
    return _json.encode({"RequestCode": REQUEST_DISCONNECT}).decode()


def feed_url(base: str, token: str, client_id: str) -> str:
    """The v2 feed URL, e.g. ``wss://api-feed.dhan.co?version=2&token=…&clientId=…&authType=2``.

    The result contains the access token: never log it.
    """
    query = urlencode({"version": 2, "token": token, "clientId": client_id, "authType": 2})
    return f"{base}{'&' if '?' in base else '?'}{query}"
