"""DhanHQ v2 market-feed codec: layouts checked against reference/dhanhq-api.md §1.5–1.8."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.dhan import codec
from shared.dhan.codec import (
    DepthLevel,
    Disconnect,
    Full,
    IndexPacket,
    MarketStatus,
    OpenInterest,
    PrevClose,
    Quote,
    Ticker,
    decode_header,
    decode_message,
    decode_message_lenient,
    decode_messages,
    decode_packet,
    encode,
    encode_message,
)
from shared.errors import DecodeError, PacketError

# First 14 bytes of a real Full packet from the live feed (reference §1.8, ISSUE90).
CAPTURE_PREFIX = bytes.fromhex("08 a2 00 02 f4 d9 00 00 cd 4c 18 43 4b 00")
CAPTURE = CAPTURE_PREFIX + bytes(162 - len(CAPTURE_PREFIX))

DEPTH = tuple(
    DepthLevel(
        bid_qty=1000 + i,
        ask_qty=2000 + i,
        bid_orders=10 + i,
        ask_orders=20 + i,
        bid_price=152.25 - 0.25 * i,  # float32-exact, so samples compare equal
        ask_price=152.5 + 0.25 * i,
    )
    for i in range(5)
)
FULL = Full(
    segment_code=2,
    security_id=55796,
    ltp=152.25,
    ltq=75,
    ltt=1_752_480_000,
    atp=150.5,
    volume=1_234_500,
    total_sell_qty=45_000,
    total_buy_qty=52_500,
    oi=3_000_000,
    oi_day_high=3_100_000,
    oi_day_low=2_900_000,
    day_open=140.0,
    day_close=0.0,
    day_high=160.75,
    day_low=138.5,
    depth=DEPTH,
)
QUOTE = Quote(
    1, 1333, 1612.5, 12, 1_752_480_001, 1610.25, 987_654, 1000, 2000, 1600.0, 0.0, 1620.0, 1598.5
)
SAMPLES: dict[str, tuple[codec.Packet, int]] = {
    "ticker": (Ticker(0, 13, 24_850.5, 1_752_480_002), 16),
    "quote": (QUOTE, 50),
    "oi": (OpenInterest(2, 55796, 3_000_000), 12),
    "prev_close": (PrevClose(2, 55796, 148.75, 2_950_000), 16),
    "market_status": (MarketStatus(0, 0), 8),
    "index": (IndexPacket(0, 13), 8),
    "full": (FULL, 162),
    "disconnect": (Disconnect(0, 0, 807), 10),
}


# --------------------------------------------------------------------------- real capture


def test_real_capture_decodes_to_nse_fno_option_at_152_30_for_one_lot():
    header = decode_header(CAPTURE)
    assert header == (8, 162, 2, 55796)

    [packet] = decode_message(CAPTURE)
    assert isinstance(packet, Full)
    assert packet.segment_code == 2
    assert packet.segment == "NSE_FNO"
    assert packet.security_id == 55796
    assert packet.ltp == pytest.approx(152.30, abs=1e-4)
    assert packet.ltq == 75
    assert len(packet.depth) == 5


def test_real_capture_reencodes_to_the_same_bytes():
    assert encode(decode_packet(CAPTURE)) == CAPTURE


# --------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_packet_type_round_trips_at_its_documented_size(name):
    packet, size = SAMPLES[name]
    wire = encode(packet)
    assert len(wire) == size
    header = decode_header(wire)
    assert header.code == type(packet).CODE
    assert header.length == size  # LENGTH_INCLUDES_HEADER
    assert decode_packet(wire) == packet


def test_full_fields_sit_at_the_reference_offsets():
    buf = bytearray(162)
    struct.pack_into("<BHBI", buf, 0, 8, 162, 8, 1_150_001)
    struct.pack_into("<f", buf, 8, 101.5)  # LTP
    struct.pack_into("<H", buf, 12, 20)  # LTQ
    struct.pack_into("<I", buf, 14, 1_752_480_000)  # LTT
    struct.pack_into("<f", buf, 18, 100.25)  # ATP
    for off, value in ((22, 7), (26, 8), (30, 9), (34, 10), (38, 11), (42, 12)):
        struct.pack_into("<I", buf, off, value)  # volume, sell, buy, OI, OI high, OI low
    for off, value in ((46, 1.5), (50, 2.5), (54, 3.5), (58, 4.5)):
        struct.pack_into("<f", buf, off, value)  # open, close, high, low
    for i in range(5):
        struct.pack_into(
            "<IIHHff", buf, 62 + 20 * i, 100 + i, 200 + i, i, 9 - i, 10.0 + i, 20.0 + i
        )

    p = decode_packet(bytes(buf))

    assert isinstance(p, Full)
    assert (p.segment, p.security_id, p.ltp, p.ltq, p.ltt, p.atp) == (
        "BSE_FNO",
        1_150_001,
        101.5,
        20,
        1_752_480_000,
        100.25,
    )
    assert (p.volume, p.total_sell_qty, p.total_buy_qty) == (7, 8, 9)
    assert (p.oi, p.oi_day_high, p.oi_day_low) == (10, 11, 12)
    assert (p.day_open, p.day_close, p.day_high, p.day_low) == (1.5, 2.5, 3.5, 4.5)
    assert p.depth[0] == DepthLevel(100, 200, 0, 9, 10.0, 20.0)
    assert p.depth[4] == DepthLevel(104, 204, 4, 5, 14.0, 24.0)
    assert p.depth[-1] == p.depth[4]
    # The lazily decoded depth behaves as the tuple of its five levels.
    levels = tuple(DepthLevel(100 + i, 200 + i, i, 9 - i, 10.0 + i, 20.0 + i) for i in range(5))
    assert list(p.depth) == list(levels)
    assert p.depth == levels and levels == p.depth
    assert p.depth[1:3] == levels[1:3]
    assert hash(p.depth) == hash(levels)
    assert p == Full(**{**_fields(p), "depth": levels})
    with pytest.raises(IndexError):
        p.depth[5]


def test_quote_fields_sit_at_the_reference_offsets():
    buf = bytearray(50)
    struct.pack_into("<BHBI", buf, 0, 4, 50, 1, 1333)
    struct.pack_into("<fHIf", buf, 8, 1612.5, 12, 1_752_480_001, 1610.25)  # 8, 12, 14, 18
    struct.pack_into("<III", buf, 22, 987_654, 1000, 2000)  # volume, sell, buy
    struct.pack_into("<ffff", buf, 34, 1600.0, 0.0, 1620.0, 1598.5)  # open, close, high, low
    assert decode_packet(bytes(buf)) == QUOTE


def test_disconnect_packet_carries_its_reason_code():
    wire = struct.pack("<BHBIH", 50, 10, 0, 0, 807)
    [packet] = decode_message(wire)
    assert packet == Disconnect(segment_code=0, security_id=0, reason_code=807)


def test_market_status_is_header_only_and_keeps_unexpected_payload_raw():
    assert decode_packet(struct.pack("<BHBI", 7, 8, 0, 0)) == MarketStatus(0, 0, b"")
    wire = struct.pack("<BHBI", 7, 10, 0, 0) + b"\x01\x02"
    packet = decode_packet(wire)
    assert packet == MarketStatus(0, 0, b"\x01\x02")
    assert encode(packet) == wire


def test_index_code_1_decodes_as_opaque_packet_not_error():
    wire = struct.pack("<BHBI", 1, 12, 0, 13) + b"abcd"
    assert decode_message(wire) == [IndexPacket(0, 13, b"abcd")]


def test_longer_length_field_than_layout_skips_the_extra_bytes():
    ticker = SAMPLES["ticker"][0]
    wire = bytearray(encode(ticker) + b"\xff\xff")
    struct.pack_into("<H", wire, 1, 18)
    assert decode_message(bytes(wire) + encode(FULL)) == [ticker, FULL]


# --------------------------------------------------------------------------- splitting


def test_several_packets_in_one_message_split_by_length_field():
    packets = [SAMPLES[name][0] for name in ("prev_close", "full", "ticker", "quote", "oi")]
    message = encode_message(packets)
    assert len(message) == 16 + 162 + 16 + 50 + 12
    assert decode_message(message) == packets
    assert decode_message(memoryview(message)) == packets


def test_batch_decode_flattens_messages_in_order():
    ticker, quote = SAMPLES["ticker"][0], SAMPLES["quote"][0]
    messages = [encode(FULL), encode_message([ticker, quote]), CAPTURE]
    assert decode_messages(messages) == [FULL, ticker, quote, decode_packet(CAPTURE)]


def test_truncated_packet_raises_packet_error():
    with pytest.raises(PacketError, match="truncated packet"):
        decode_message(encode(FULL)[:161])
    with pytest.raises(PacketError, match="truncated header"):
        decode_message(encode(FULL) + b"\x08\xa2")


def test_unknown_code_raises_packet_error_which_is_a_decode_error():
    wire = struct.pack("<BHBI", 3, 8, 1, 1)
    with pytest.raises(PacketError, match="unknown response code 3") as info:
        decode_message(wire)
    assert isinstance(info.value, DecodeError)


def test_length_field_shorter_than_layout_raises_packet_error():
    wire = bytearray(encode(FULL))
    struct.pack_into("<H", wire, 1, 100)
    with pytest.raises(PacketError, match="shorter than its 162-byte layout"):
        decode_message(bytes(wire))


def test_zero_length_field_raises_instead_of_looping():
    with pytest.raises(PacketError):
        decode_message(struct.pack("<BHBI", 7, 0, 0, 0) * 2)


def test_empty_message_and_trailing_bytes_raise_packet_error():
    with pytest.raises(PacketError, match="empty"):
        decode_message(b"")
    with pytest.raises(PacketError, match="empty"):
        decode_messages([b""])
    with pytest.raises(PacketError, match="after the packet"):
        decode_packet(encode(FULL) + b"\x00")


def test_lenient_decode_skips_unknown_packets_and_stops_at_truncation():
    ticker = SAMPLES["ticker"][0]
    unknown = struct.pack("<BHBI", 99, 12, 0, 0) + b"\x00" * 4
    message = encode(ticker) + unknown + encode(FULL) + encode(QUOTE)[:20]

    packets, errors = decode_message_lenient(message)

    assert packets == [ticker, FULL]
    assert [type(e) for e in errors] == [PacketError, PacketError]
    assert "unknown response code 99" in str(errors[0])
    assert "truncated" in str(errors[1])


def test_lenient_decode_of_clean_message_reports_no_errors():
    assert decode_message_lenient(encode(FULL)) == ([FULL], [])
    assert decode_message_lenient(b"")[0] == []


# --------------------------------------------------------------------------- encoding errors


def test_encoding_a_value_that_does_not_fit_its_wire_type_raises_packet_error():
    with pytest.raises(PacketError, match="cannot encode"):
        encode(Quote(1, 1333, 1.0, 70_000, 0, 1.0, 0, 0, 0, 1.0, 1.0, 1.0, 1.0))  # LTQ is uint16
    with pytest.raises(PacketError, match="cannot encode"):
        encode(Ticker(1, -1, 1.0, 0))
    with pytest.raises(PacketError, match="5 depth levels"):
        encode(Full(**{**_fields(FULL), "depth": DEPTH[:4]}))


def _fields(packet: Full) -> dict:
    return {name: getattr(packet, name) for name in packet.__struct_fields__}


# --------------------------------------------------------------------------- segment, time


def test_segment_maps_numeric_code_to_json_name_and_rejects_unknown_code():
    assert Ticker(8, 1, 1.0, 0).segment == "BSE_FNO"
    assert Ticker(0, 13, 1.0, 0).segment == "IDX_I"
    with pytest.raises(PacketError, match="segment code 6"):
        _ = Ticker(6, 1, 1.0, 0).segment


def test_ltt_to_utc_s_removes_the_ist_shift():
    assert codec.LTT_IS_IST_SHIFTED is True
    # 2025-07-14 09:15:00 IST is 03:45:00 UTC = 1752464700; the feed sends it as 09:15 "UTC".
    assert codec.ltt_to_utc_s(1_752_484_500) == 1_752_464_700
    assert codec.utc_s_to_ltt(1_752_464_700) == 1_752_484_500
    assert codec.ltt_to_utc_s(0) == 0


# --------------------------------------------------------------------------- requests, URL


def test_subscribe_messages_batch_100_instruments_per_message():
    instruments = [("NSE_FNO", 40_000 + i) for i in range(250)]

    frames = [json.loads(m) for m in codec.subscribe_messages("full", instruments)]

    assert [f["RequestCode"] for f in frames] == [21, 21, 21]
    assert [f["InstrumentCount"] for f in frames] == [100, 100, 50]
    assert [len(f["InstrumentList"]) for f in frames] == [100, 100, 50]
    assert frames[0]["InstrumentList"][0] == {"ExchangeSegment": "NSE_FNO", "SecurityId": "40000"}
    assert frames[2]["InstrumentList"][-1]["SecurityId"] == "40249"


def test_subscribe_message_is_compact_json_in_documented_key_order():
    [frame] = codec.subscribe_messages("ticker", [("IDX_I", "13"), (2, 55796)])
    assert frame == (
        '{"RequestCode":15,"InstrumentCount":2,"InstrumentList":['
        '{"ExchangeSegment":"IDX_I","SecurityId":"13"},'
        '{"ExchangeSegment":"NSE_FNO","SecurityId":"55796"}]}'
    )


@pytest.mark.parametrize(
    ("mode", "sub", "unsub"), [("ticker", 15, 16), ("quote", 17, 18), ("full", 21, 22)]
)
def test_request_codes_per_mode(mode, sub, unsub):
    [s] = codec.subscribe_messages(mode, [("NSE_EQ", 1333)])
    [u] = codec.unsubscribe_messages(mode, [("NSE_EQ", 1333)])
    assert json.loads(s)["RequestCode"] == sub
    assert json.loads(u)["RequestCode"] == unsub


def test_subscribe_rejects_unknown_mode_and_segment_and_sends_nothing_for_no_instruments():
    assert codec.subscribe_messages("full", []) == []
    with pytest.raises(ValueError, match="feed mode"):
        codec.subscribe_messages("depth", [("NSE_EQ", 1)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NSE_XYZ"):
        codec.subscribe_messages("full", [("NSE_XYZ", 1)])
    with pytest.raises(ValueError, match="code 6"):
        codec.subscribe_messages("full", [(6, 1)])


def test_disconnect_request_and_feed_url():
    assert codec.disconnect_message() == '{"RequestCode":12}'
    assert codec.feed_url("wss://api-feed.dhan.co", "eyJ.abc-_", "1100003626") == (
        "wss://api-feed.dhan.co?version=2&token=eyJ.abc-_&clientId=1100003626&authType=2"
    )


# --------------------------------------------------------------------------- properties

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
f32 = st.floats(width=32, allow_nan=False)

depth_levels = st.builds(DepthLevel, u32, u32, u16, u16, f32, f32)
packets = st.one_of(
    st.builds(Ticker, u8, u32, f32, u32),
    st.builds(Quote, u8, u32, f32, u16, u32, f32, u32, u32, u32, f32, f32, f32, f32),
    st.builds(OpenInterest, u8, u32, u32),
    st.builds(PrevClose, u8, u32, f32, u32),
    st.builds(MarketStatus, u8, u32, st.binary(max_size=8)),
    st.builds(IndexPacket, u8, u32, st.binary(max_size=40)),
    st.builds(
        Full,
        u8,
        u32,
        f32,
        u16,
        u32,
        f32,
        u32,
        u32,
        u32,
        u32,
        u32,
        u32,
        f32,
        f32,
        f32,
        f32,
        st.tuples(*[depth_levels] * 5),
    ),
    st.builds(Disconnect, u8, u32, u16),
)


@settings(derandomize=True, max_examples=300)
@given(st.lists(packets, min_size=1, max_size=6))
def test_encode_then_decode_round_trips_any_field_values(batch):
    assert decode_message(encode_message(batch)) == batch
    assert decode_message_lenient(encode_message(batch)) == (batch, [])


@settings(derandomize=True, max_examples=500)
@given(st.binary(max_size=400))
def test_random_bytes_raise_nothing_but_packet_error(data):
    try:
        decode_message(data)
    except PacketError:
        pass
    _, errors = decode_message_lenient(data)
    assert all(isinstance(e, PacketError) for e in errors)


@settings(derandomize=True, max_examples=500)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 50, 255]),
            st.integers(0, 200),
            st.binary(max_size=200),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_plausible_headers_with_random_bodies_raise_nothing_but_packet_error(parts):
    data = b"".join(struct.pack("<BH", code, length) + body for code, length, body in parts)
    try:
        decode_message(data)
    except PacketError:
        pass
    _, errors = decode_message_lenient(data)
    assert all(isinstance(e, PacketError) for e in errors)
