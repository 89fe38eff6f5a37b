"""``scalper tail STREAM``: one readable line per stream entry, as entries arrive.

    1796097780412-0  09:43:00.412  tick             NSE_FNO:43210 ltp ₹152.30 bid 152.25 ask 152.35
    1796097780500-0  09:43:00.250  order.intent     entry BUY 65 NIFTY-Dec2026-26200-CE  st_bullish ...
    1796097780600-0  !! MALFORMED (invalid ticks message: ...)  raw {'type': 'tick', 'data': '{...'}

The time is the message's ``ts_event`` in IST. An entry that does not decode with the stream's
decoder is printed raw after ``!! MALFORMED`` and tailing goes on.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

import redis

from shared import wire
from shared.clock import ist_datetime
from shared.errors import DecodeError, ScalperError
from shared.keys import LOGICAL_STREAMS, Keys
from shared.messages import (
    Clock,
    DeadLetter,
    EntryDecision,
    FeedSubscribe,
    FeedUnsubscribe,
    Message,
    OrderAccepted,
    OrderCancelled,
    OrderDryRun,
    OrderFilled,
    OrderIntent,
    OrderRejected,
    PositionAdjusted,
    PositionClosed,
    PositionOpened,
    SessionEnd,
    Signal,
    SignalSkipped,
    Tick,
)
from shared.types import paise_to_rupees_str as rs

MALFORMED = "!! MALFORMED"
RAW_MAX_CHARS = 500
MAX_IDS = 8


def ist_time(ts_ns: int) -> str:
    """``HH:MM:SS.mmm`` in IST."""
    d = ist_datetime(ts_ns)
    return d.strftime("%H:%M:%S.") + f"{d.microsecond // 1000:03d}"


def describe(msg: Message) -> str:
    """The key fields of a message, one line (prices in rupees)."""
    match msg:
        case Tick():
            extra = f" bid {rs(msg.bid_paise)} ask {rs(msg.ask_paise)}" if msg.bid_paise or msg.ask_paise else ""
            return f"{msg.segment}:{msg.security_id} ltp ₹{rs(msg.ltp_paise)}{extra}"
        case Clock():
            return ""
        case SessionEnd():
            return f"trading day {msg.trading_day}"
        case Signal():
            return (f"{msg.index} {msg.direction} {msg.timeframe_min}m close ₹{rs(msg.close_paise)} "
                    f"adx {msg.adx:.1f} conf {msg.confidence:.2f}  {msg.reason}")
        case SignalSkipped():
            return f"{msg.index} {msg.timeframe_min}m  {msg.reason}"
        case EntryDecision():
            verdict = "ACCEPTED" if msg.accepted else "rejected"
            return f"{msg.index} {verdict} [{msg.rule}]  {msg.reason}"
        case OrderIntent():
            return (f"{msg.kind} {msg.side} {msg.quantity} {msg.symbol} ref ₹{rs(msg.ref_price_paise)}"
                    f" ({msg.correlation_id})  {msg.reason}")
        case OrderAccepted():
            return f"{msg.correlation_id} broker {msg.broker_order_id} {msg.status}"
        case OrderFilled():
            return (f"{msg.kind} {msg.side} {msg.quantity} @ ₹{rs(msg.price_paise)} "
                    f"{msg.correlation_id} ({msg.position_id})")
        case OrderRejected() | OrderCancelled():
            return f"{msg.kind} {msg.correlation_id}  {msg.reason}"
        case OrderDryRun():
            return f"{msg.kind} {msg.correlation_id} (orders disabled: not sent)"
        case PositionOpened():
            return (f"{msg.position_id} {msg.symbol} qty {msg.quantity} @ ₹{rs(msg.entry_price_paise)}"
                    + (" external" if msg.external else ""))
        case PositionClosed():
            return (f"{msg.position_id} qty {msg.quantity} ₹{rs(msg.entry_price_paise)} -> "
                    f"₹{rs(msg.exit_price_paise)} pnl ₹{rs(msg.pnl_paise)} "
                    f"charges ₹{rs(msg.charges_paise)}  {msg.reason}")
        case PositionAdjusted():
            return f"{msg.position_id} qty {msg.quantity}  {msg.reason}"
        case FeedSubscribe() | FeedUnsubscribe():
            ids = ",".join(str(i) for i in msg.security_ids[:MAX_IDS])
            more = f",...(+{len(msg.security_ids) - MAX_IDS})" if len(msg.security_ids) > MAX_IDS else ""
            return f"{msg.segment} [{ids}{more}] by {msg.requester}"
        case DeadLetter():
            return f"{msg.service} {msg.source_stream} {msg.entry_id}  {msg.error}"
    return ""


def _raw(fields: dict[bytes, bytes]) -> str:
    text = repr({k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in fields.items()})
    return text if len(text) <= RAW_MAX_CHARS else text[:RAW_MAX_CHARS] + "...(truncated)"


def format_entry(decoder: wire.StreamDecoder, entry_id: str, fields: dict[bytes, bytes]) -> str:
    """One output line for a stream entry (a malformed one printed raw after the marker)."""
    try:
        msg = decoder.decode(fields)
    except DecodeError as exc:
        return f"{entry_id}  {MALFORMED} ({exc})  raw {_raw(fields)}"
    tag = type(msg).__struct_config__.tag
    return f"{entry_id}  {ist_time(msg.ts_event)}  {tag!s:<16} {describe(msg)}".rstrip()


def start_id(r: redis.Redis, stream_key: str, from_start: bool) -> str:
    """The id after which to print: "0-0", or the stream's current last id (a concrete id, so
    nothing added between this call and the first read is missed)."""
    if from_start:
        return "0-0"
    last = r.xrevrange(stream_key, count=1)
    if not last:
        return "0-0"
    eid = last[0][0]
    return eid.decode() if isinstance(eid, bytes) else str(eid)


def tail(r: redis.Redis, keys: Keys, logical: str, *, from_start: bool = False,
         count: int | None = None, out: TextIO = sys.stdout, block_ms: int = 1000,
         redact: Callable[[str], str] = lambda s: s) -> int:
    """Print entries of ``logical`` as they arrive (``XREAD BLOCK``); stop after ``count``
    entries if given. Returns the number printed."""
    if logical not in LOGICAL_STREAMS:
        raise ScalperError(f"unknown stream {logical!r}; one of: {', '.join(LOGICAL_STREAMS)}")
    key = keys.stream(logical)
    decoder = wire.StreamDecoder(logical)
    last = start_id(r, key, from_start)
    print(f"tailing {key} after {last}", file=sys.stderr, flush=True)
    printed = 0
    while count is None or printed < count:
        want = 100 if count is None else min(100, count - printed)
        resp: Any = r.xread({key: last}, count=want, block=block_ms)
        for _, entries in resp or []:
            for eid_b, fields in entries:
                last = eid_b.decode() if isinstance(eid_b, bytes) else str(eid_b)
                print(redact(format_entry(decoder, last, fields)), file=out, flush=True)
                printed += 1
    return printed
