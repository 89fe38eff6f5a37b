"""DhanHQ market-feed client against a scripted fake socket (reference/dhanhq-api.md §1, §4.3).

No network: ``connect`` is a plain function returning a fake websocket that plays scripted
incoming frames and records sent ones; sleep and clock are fakes; randomness is seeded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import traceback
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import (
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidStatus,
    InvalidURI,
)
from websockets.http11 import Response

from shared.clock import FakeClock
from shared.dhan.codec import (
    DepthLevel,
    Disconnect,
    Full,
    MarketStatus,
    OpenInterest,
    PrevClose,
    Quote,
    Ticker,
    decode_message,
    encode,
    utc_s_to_ltt,
)
from shared.dhan.feed_client import (
    Backoff,
    FeedClient,
    FeedHalted,
    LatestTicks,
    packet_to_fields,
)
from shared.errors import BrokerAuthError, ConfigError
from shared.logs import JsonFormatter
from shared.messages import Tick

TOKEN = "eyJhbGciOiJIUzUxMiJ9.SECRET-feed-token.sig"
CLIENT_ID = "1100000001"
BASE = "wss://api-feed.dhan.co"
T0_NS = 1_764_050_000_000_000_000
DROP = ConnectionClosedError(None, None)


def nifty_options(n: int, start: int = 40_000) -> list[tuple[str, int]]:
    return [("NSE_FNO", start + i) for i in range(n)]


def ticker(security_id: int = 13, ltp: float = 24_500.5, segment_code: int = 0) -> bytes:
    return encode(Ticker(segment_code=segment_code, security_id=security_id, ltp=ltp, ltt=0))


def disconnect(reason: int) -> bytes:
    return encode(Disconnect(segment_code=2, security_id=0, reason_code=reason))


# --------------------------------------------------------------------------- fakes


class FakeWS:
    """A websocket that returns scripted frames, raises scripted exceptions, then stays silent."""

    def __init__(self, script: list[Any]) -> None:
        self.incoming = list(script)
        self.sent: list[str] = []
        self.closed = False
        self._wake = asyncio.Event()

    def push(self, item: Any) -> None:
        self.incoming.append(item)
        self._wake.set()

    async def send(self, text: str) -> None:
        if self.closed:
            raise ConnectionClosedOK(None, None)
        self.sent.append(text)

    async def recv(self) -> Any:
        while True:
            if self.closed:
                raise ConnectionClosedOK(None, None)
            if self.incoming:
                item = self.incoming.pop(0)
                if isinstance(item, BaseException):
                    raise item
                return item
            self._wake.clear()
            await self._wake.wait()

    async def close(self) -> None:
        self.closed = True
        self._wake.set()

    def requests(self) -> list[dict[str, Any]]:
        return [json.loads(t) for t in self.sent]


class FakeServer:
    """``connect`` for the clients: each call takes the next session script (a list of frames) or
    raises the next exception; past the end, every connect gets a silent socket."""

    def __init__(
        self, *sessions: Any, on_connect: Callable[[str, dict[str, Any]], None] | None = None
    ) -> None:
        self.sessions = list(sessions)
        self.sockets: list[FakeWS] = []
        self.urls: list[str] = []
        self.on_connect = on_connect

    async def connect(self, url: str, **kwargs: Any) -> FakeWS:
        self.urls.append(url)
        if self.on_connect:
            self.on_connect(url, kwargs)
        script = self.sessions.pop(0) if self.sessions else []
        if isinstance(script, BaseException):
            raise script
        ws = FakeWS(script)
        self.sockets.append(ws)
        return ws


class FakeSleep:
    """Records delays, advances the fake clock, yields once; runs ``hook`` after each call."""

    def __init__(self, clock: FakeClock, hook: Callable[[list[float]], Any] | None = None) -> None:
        self.clock = clock
        self.delays: list[float] = []
        self.hook = hook

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.clock.advance(int(seconds * 1e9))
        if self.hook:
            await self.hook(self.delays)
        await asyncio.sleep(0)


async def until(predicate: Callable[[], Any], what: str = "") -> None:
    """Yield to the loop until ``predicate()`` holds (no wall-clock sleeps)."""
    for _ in range(5000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


def instruments_sent(ws: FakeWS, code: int) -> list[tuple[str, int]]:
    return [
        (i["ExchangeSegment"], int(i["SecurityId"]))
        for r in ws.requests()
        if r["RequestCode"] == code
        for i in r["InstrumentList"]
    ]


class Harness:
    def __init__(self, server: FakeServer, rng: random.Random, **kwargs: Any) -> None:
        self.server = server
        self.clock = FakeClock(T0_NS)
        self.sleep = FakeSleep(self.clock, kwargs.pop("hook", None))
        self.received: list[tuple[list[Any], int]] = []
        on_packets = kwargs.pop("on_packets", None) or self._collect
        kwargs.setdefault("idle_timeout_s", None)
        self.client = FeedClient(
            BASE,
            CLIENT_ID,
            TOKEN,
            on_packets=on_packets,
            connect=server.connect,
            clock=self.clock,
            sleep=self.sleep,
            rng=rng,
            **kwargs,
        )
        self.task: asyncio.Task[None] | None = None

    async def _collect(self, packets: list[Any], recv_ns: int) -> None:
        self.received.append((packets, recv_ns))

    def start(self) -> None:
        self.task = asyncio.create_task(self.client.run())

    async def stop(self) -> None:
        await self.client.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)


# --------------------------------------------------------------------------- connection, requests


def test_url_has_version_token_client_id_and_auth_type_and_is_redacted(rng: random.Random) -> None:
    async def scenario() -> None:
        h = Harness(FakeServer(), rng)
        await h.client.subscribe([("IDX_I", 13)])
        h.start()
        await until(lambda: h.server.sockets and h.server.sockets[0].sent, "subscribed")
        await h.stop()
        url = urlsplit(h.server.urls[0])
        assert f"{url.scheme}://{url.netloc}" == BASE
        assert parse_qs(url.query) == {
            "version": ["2"],
            "token": [TOKEN],
            "clientId": [CLIENT_ID],
            "authType": ["2"],
        }
        assert TOKEN not in h.client.url_redacted and "clientId=1100000001" in h.client.url_redacted

    asyncio.run(scenario())


def test_subscribe_250_instruments_sends_100_100_50_with_request_code_21(
    rng: random.Random,
) -> None:
    async def scenario() -> None:
        h = Harness(FakeServer(), rng)
        wanted = nifty_options(250)
        assert await h.client.subscribe(wanted) == 250
        h.start()
        await until(lambda: h.server.sockets and len(h.server.sockets[0].sent) == 3, "3 frames")
        requests = h.server.sockets[0].requests()
        await h.stop()
        assert [r["RequestCode"] for r in requests] == [21, 21, 21]
        assert [r["InstrumentCount"] for r in requests] == [100, 100, 50]
        assert [len(r["InstrumentList"]) for r in requests] == [100, 100, 50]
        assert requests[0]["InstrumentList"][0] == {
            "ExchangeSegment": "NSE_FNO",
            "SecurityId": "40000",
        }
        assert instruments_sent(h.server.sockets[0], 21) == wanted
        assert len(h.server.urls) == 1

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("mode", "sub", "unsub"), [("ticker", 15, 16), ("quote", 17, 18), ("full", 21, 22)]
)
def test_dynamic_subscribe_and_unsubscribe_use_the_mode_request_codes(
    rng: random.Random, mode: str, sub: int, unsub: int
) -> None:
    async def scenario() -> None:
        h = Harness(FakeServer(), rng, mode=mode)
        await h.client.subscribe([("IDX_I", 13)])
        h.start()
        await until(lambda: h.server.sockets and h.server.sockets[0].sent, "initial subscribe")
        ws = h.server.sockets[0]
        assert await h.client.subscribe([("NSE_FNO", 1), ("IDX_I", 13), (2, "2")]) == 2
        assert await h.client.unsubscribe([("NSE_FNO", 1), ("BSE_FNO", 999)]) == 1
        await h.stop()
        requests = ws.requests()
        assert requests[:3] == [
            {
                "RequestCode": sub,
                "InstrumentCount": 1,
                "InstrumentList": [{"ExchangeSegment": "IDX_I", "SecurityId": "13"}],
            },
            {
                "RequestCode": sub,
                "InstrumentCount": 2,
                "InstrumentList": [
                    {"ExchangeSegment": "NSE_FNO", "SecurityId": "1"},
                    {"ExchangeSegment": "NSE_FNO", "SecurityId": "2"},
                ],
            },
            {
                "RequestCode": unsub,
                "InstrumentCount": 1,
                "InstrumentList": [{"ExchangeSegment": "NSE_FNO", "SecurityId": "1"}],
            },
        ]
        assert requests[3] == {"RequestCode": 12}  # stop() says goodbye
        assert h.client.subscriptions == {("IDX_I", 13), ("NSE_FNO", 2)}

    asyncio.run(scenario())


def test_more_than_5000_instruments_are_spread_over_connections_of_at_most_5000(
    rng: random.Random,
) -> None:
    async def scenario() -> None:
        h = Harness(FakeServer(), rng)
        wanted = nifty_options(12_000)
        await h.client.subscribe(wanted)
        assert h.client.connection_sizes == (5000, 5000, 2000, 0, 0)
        h.start()
        await until(
            lambda: (
                len(h.server.sockets) == 3 and sum(len(ws.sent) for ws in h.server.sockets) == 120
            ),
            "all subscribed",
        )
        assert h.client.connected_count == 3
        per_socket = [instruments_sent(ws, 21) for ws in h.server.sockets]
        await h.stop()
        assert [len(s) for s in per_socket] == [5000, 5000, 2000]
        assert [i for s in per_socket for i in s] == wanted
        assert all(
            len(r["InstrumentList"]) == r["InstrumentCount"] <= 100
            for ws in h.server.sockets
            for r in ws.requests()[:-1]
        )
        assert all(ws.requests()[-1] == {"RequestCode": 12} for ws in h.server.sockets)
        assert len(h.server.urls) == 3

    asyncio.run(scenario())


def test_subscribing_past_5_connections_of_5000_is_refused_without_change(
    rng: random.Random,
) -> None:
    async def scenario() -> None:
        h = Harness(FakeServer(), rng)
        await h.client.subscribe(nifty_options(24_990))
        with pytest.raises(ValueError, match="limit 5 connections x 5000"):
            await h.client.subscribe(nifty_options(11, start=100_000))
        assert len(h.client.subscriptions) == 24_990
        assert await h.client.subscribe(nifty_options(10, start=100_000)) == 10
        assert h.client.connection_sizes == (5000,) * 5
        with pytest.raises(ValueError, match="unknown exchange segment"):
            await h.client.subscribe([("NFO", 1)])

    asyncio.run(scenario())


def test_unsubscribed_slots_are_reused_by_later_subscriptions(rng: random.Random) -> None:
    async def scenario() -> None:
        h = Harness(FakeServer(), rng)
        await h.client.subscribe(nifty_options(5001))
        await h.client.unsubscribe(nifty_options(1))
        await h.client.subscribe([("NSE_FNO", 1)])
        assert h.client.connection_sizes == (5000, 1, 0, 0, 0)

    asyncio.run(scenario())


# --------------------------------------------------------------------------- reconnects


def test_reconnect_after_a_drop_resubscribes_the_full_current_set_after_a_short_delay(
    rng: random.Random,
) -> None:
    async def scenario() -> None:
        h = Harness(FakeServer([ticker()]), rng)
        await h.client.subscribe(nifty_options(150))
        h.start()
        await until(lambda: h.received, "first tick")
        first = h.server.sockets[0]
        await h.client.unsubscribe(nifty_options(10))
        await h.client.subscribe(nifty_options(5, start=90_000))
        first.push(DROP)
        await until(
            lambda: len(h.server.sockets) == 2 and len(h.server.sockets[1].sent) == 2, "resub"
        )
        second = h.server.sockets[1]
        await h.stop()
        current = nifty_options(140, start=40_010) + nifty_options(5, start=90_000)
        assert instruments_sent(second, 21) == current
        assert [r["InstrumentCount"] for r in second.requests()[:2]] == [100, 45]
        assert instruments_sent(second, 22) == []
        # the dropped session had delivered live data, so the first reconnect uses the base delay
        assert len(h.sleep.delays) == 1 and 0.4 <= h.sleep.delays[0] <= 0.5

    asyncio.run(scenario())


def test_backoff_delays_grow_and_are_capped_and_follow_the_seed() -> None:
    backoff = Backoff(initial_s=0.5, factor=2.0, cap_s=8.0, jitter=0.2)

    async def delays_for(seed: int) -> list[float]:
        async def hook(delays: list[float]) -> None:
            if len(delays) == 10:
                await h.client.stop()

        h = Harness(
            FakeServer(*[OSError("connection refused")] * 20),
            random.Random(seed),
            backoff=backoff,
            hook=hook,
        )
        await h.client.subscribe([("IDX_I", 13)])
        await asyncio.wait_for(h.client.run(), 5)
        assert h.client.stats.connect_failures == 10 and h.client.stats.connects == 0
        return h.sleep.delays

    delays = asyncio.run(delays_for(7))
    print("delays", delays)
    growing = delays[:5]  # bases 0.5, 1, 2, 4, 8(cap)
    assert all(a < b for a, b in zip(growing, growing[1:], strict=False))
    assert all(6.4 <= d <= 8.0 for d in delays[4:])
    assert 0.4 <= delays[0] <= 0.5
    assert delays == asyncio.run(delays_for(7))
    assert delays != asyncio.run(delays_for(8))


def test_backoff_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="backoff.jitter"):
        Backoff(jitter=1.0)
    with pytest.raises(ConfigError, match="backoff.cap_s"):
        Backoff(initial_s=5, cap_s=1)
    assert Backoff(cap_s=30).delay_s(10_000, random.Random(1)) <= 30


def test_http_429_at_handshake_waits_at_least_the_rate_limit_cooloff(rng: random.Random) -> None:
    async def scenario() -> None:
        refused = InvalidStatus(Response(429, "Too Many Requests", Headers()))
        h = Harness(FakeServer(refused), rng)
        await h.client.subscribe([("IDX_I", 13)])
        h.start()
        await until(lambda: h.server.sockets and h.server.sockets[0].sent, "second connect")
        await h.stop()
        assert h.sleep.delays == [60.0]

    asyncio.run(scenario())


def test_a_silent_open_socket_is_reconnected_after_the_idle_timeout(rng: random.Random) -> None:
    async def scenario() -> None:
        h = Harness(FakeServer([], [ticker()]), rng, idle_timeout_s=0.02)
        await h.client.subscribe([("IDX_I", 13)])
        h.start()
        await asyncio.wait_for(_wait_for(lambda: len(h.received) == 1), 5)
        await h.stop()
        assert h.client.stats.idle_timeouts == 1
        assert len(h.server.sockets) == 2 and h.server.sockets[0].closed
        assert instruments_sent(h.server.sockets[1], 21) == [("IDX_I", 13)]

    asyncio.run(scenario())


async def _wait_for(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.005)


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        (805, "too many"),
        (806, "not subscribed"),
        (807, "expired"),
        (808, "authentication failed"),
        (809, "token invalid"),
        (810, "client id invalid"),
    ],
)
def test_disconnect_805_to_810_halts_without_reconnecting(
    rng: random.Random, reason: int, words: str
) -> None:
    async def scenario() -> None:
        h = Harness(FakeServer([ticker(), disconnect(reason)]), rng)
        await h.client.subscribe(nifty_options(3))
        with pytest.raises(FeedHalted) as caught:
            await asyncio.wait_for(h.client.run(), 5)
        exc = caught.value
        assert isinstance(exc, BrokerAuthError)
        assert exc.reason_code == reason and exc.code == str(reason)
        assert words in str(exc) and str(reason) in str(exc)
        assert h.client.halted is exc
        assert len(h.server.urls) == 1 and h.sleep.delays == []
        assert len(h.received) == 1  # the tick before the disconnect was delivered
        assert h.client.stats.disconnects == {reason: 1}

    asyncio.run(scenario())


def test_disconnect_800_reconnects_with_backoff(rng: random.Random) -> None:
    async def scenario() -> None:
        h = Harness(FakeServer([disconnect(800)], [ticker()]), rng)
        await h.client.subscribe([("IDX_I", 13)])
        h.start()
        await until(lambda: h.received, "tick on the second socket")
        await h.stop()
        assert len(h.server.urls) == 2 and h.client.halted is None
        assert h.client.stats.disconnects == {800: 1}
        assert len(h.sleep.delays) == 1
        assert instruments_sent(h.server.sockets[1], 21) == [("IDX_I", 13)]

    asyncio.run(scenario())


def test_http_401_at_handshake_halts(rng: random.Random) -> None:
    async def scenario() -> None:
        h = Harness(FakeServer(InvalidStatus(Response(401, "Unauthorized", Headers()))), rng)
        await h.client.subscribe([("IDX_I", 13)])
        with pytest.raises(FeedHalted, match="HTTP 401") as caught:
            await asyncio.wait_for(h.client.run(), 5)
        assert caught.value.http_status == 401 and h.sleep.delays == []

    asyncio.run(scenario())


# --------------------------------------------------------------------------- packets


def test_malformed_packets_are_counted_and_logged_throttled_not_fatal(
    rng: random.Random, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="shared.dhan.feed_client")
    unknown_code = bytes([99]) + (16).to_bytes(2, "little") + bytes(13)
    truncated = ticker()[:12]
    unknown_segment = ticker(segment_code=6)

    async def scenario() -> Harness:
        h = Harness(
            FakeServer([b"", unknown_code, truncated, unknown_segment + ticker(25), ticker(13)]),
            rng,
        )
        await h.client.subscribe([("IDX_I", 13), ("IDX_I", 25)])
        h.start()
        await until(lambda: len(h.received) == 2, "the two good ticks")
        await h.stop()
        return h

    h = asyncio.run(scenario())
    assert [[p.security_id for p in packets] for packets, _ in h.received] == [[25], [13]]
    assert h.client.stats.packet_errors == 4
    assert h.client.stats.connects == 1 and h.client.stats.packets == 2
    assert len([r for r in caplog.records if r.getMessage() == "malformed feed packet"]) == 1


def test_packets_are_delivered_with_the_receive_time_and_without_disconnects(
    rng: random.Random,
) -> None:
    async def scenario() -> Harness:
        h = Harness(
            FakeServer(
                [
                    ticker(13)
                    + encode(
                        PrevClose(segment_code=0, security_id=13, prev_close=24_000.0, prev_oi=0)
                    )
                ]
            ),
            rng,
        )
        await h.client.subscribe([("IDX_I", 13)])
        h.start()
        await until(lambda: h.received, "packets")
        await h.stop()
        return h

    h = asyncio.run(scenario())
    packets, recv_ns = h.received[0]
    assert recv_ns == T0_NS
    assert [type(p) for p in packets] == [Ticker, PrevClose]


def test_an_exception_in_on_packets_ends_run_with_it(rng: random.Random) -> None:
    async def boom(packets: list[Any], recv_ns: int) -> None:
        raise RuntimeError("consumer bug")

    async def scenario() -> None:
        h = Harness(FakeServer([ticker()]), rng, on_packets=boom)
        await h.client.subscribe([("IDX_I", 13)])
        with pytest.raises(RuntimeError, match="consumer bug"):
            await asyncio.wait_for(h.client.run(), 5)
        assert len(h.server.urls) == 1 and h.server.sockets[0].closed

    asyncio.run(scenario())


def test_stop_sends_the_disconnect_request_and_closes(rng: random.Random) -> None:
    async def scenario() -> None:
        h = Harness(FakeServer(), rng)
        await h.client.subscribe([("IDX_I", 13)])
        h.start()
        await until(lambda: h.server.sockets and h.server.sockets[0].sent, "subscribed")
        await h.stop()
        ws = h.server.sockets[0]
        assert ws.sent[-1] == '{"RequestCode":12}' and ws.closed
        assert h.client.connected_count == 0 and h.sleep.delays == []

    asyncio.run(scenario())


def test_stop_during_a_long_backoff_wait_ends_run_promptly(rng: random.Random) -> None:
    async def scenario() -> None:
        server = FakeServer(*[OSError("down")] * 3)

        async def ignore(packets: list[Any], recv_ns: int) -> None:
            return None

        client = FeedClient(
            BASE,
            CLIENT_ID,
            TOKEN,
            on_packets=ignore,
            connect=server.connect,
            rng=rng,
            backoff=Backoff(initial_s=600.0, cap_s=600.0),
        )  # real asyncio.sleep: without the cancel, run() would wait ten minutes
        await client.subscribe([("IDX_I", 13)])
        task = asyncio.create_task(client.run())
        await until(lambda: client.stats.connect_failures == 1, "first failure")
        await client.stop()
        await asyncio.wait_for(task, 2)
        assert len(server.urls) == 1

    asyncio.run(scenario())


# --------------------------------------------------------------------------- secrets


def test_the_token_never_appears_in_logs_or_exception_text(
    rng: random.Random, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    def wire_traces(url: str, kwargs: dict[str, Any]) -> None:
        # What websockets itself logs through the logger it is given (request line, errors).
        logger = kwargs["logger"]
        path = url[len(BASE) :]
        logger.debug("> GET %s HTTP/1.1", path)
        logger.debug("> %s", f'TEXT \'{{"Token": "{TOKEN[:16]}...\' [90 bytes]')  # truncated frame
        logger.info("connection to %s", url)
        try:
            raise OSError(f"keepalive failed for {url}")
        except OSError:
            logger.error("keepalive ping failed", exc_info=True)

    async def scenario() -> FeedHalted:
        server = FakeServer(
            OSError(f"cannot connect to {BASE}?token={TOKEN}"),
            [DROP],
            [disconnect(807)],
            on_connect=wire_traces,
        )
        h = Harness(server, rng)
        await h.client.subscribe([("IDX_I", 13)])
        with pytest.raises(FeedHalted) as caught:
            await asyncio.wait_for(h.client.run(), 5)
        assert len(server.urls) == 3
        return caught.value

    exc = asyncio.run(scenario())
    json_lines = JsonFormatter("feed")
    text = "\n".join(json_lines.format(r) for r in caplog.records)  # message, fields and exc
    assert "keepalive ping failed" in text and "cannot connect" in text
    assert TOKEN not in text and TOKEN[:16] not in text
    assert TOKEN not in "".join(traceback.format_exception(exc)) and TOKEN not in repr(exc)

    async def bad_uri() -> None:
        server = FakeServer(InvalidURI(f"{BASE}?token={TOKEN}", "bad"))
        h = Harness(server, rng)
        await h.client.subscribe([("IDX_I", 13)])
        await h.client.run()

    with pytest.raises(ConfigError) as caught:
        asyncio.run(bad_uri())
    assert TOKEN not in "".join(traceback.format_exception(caught.value))


# --------------------------------------------------------------------------- pure mapping

IST_SHIFT_S = 19_800


def _roundtrip(packet: Any) -> Any:
    # Through the wire format, so prices are the float32 values the feed really sends.
    (decoded,) = decode_message(encode(packet))
    return decoded


def test_ticker_maps_to_tick_fields_in_paise_with_utc_ltt() -> None:
    utc_s = 1_764_050_000
    packet = _roundtrip(
        Ticker(segment_code=0, security_id=13, ltp=24_512.35, ltt=utc_s_to_ltt(utc_s))
    )
    fields = packet_to_fields(packet, T0_NS)
    assert fields == {
        "ts_event": T0_NS,
        "segment": "IDX_I",
        "security_id": 13,
        "ltp_paise": 2_451_235,
        "ltt_s": utc_s,
        "kind": "ticker",
    }
    assert packet.ltt - fields["ltt_s"] == IST_SHIFT_S
    tick = Tick(msg_id="tick-1", ts_init=T0_NS, tick_id="1-0", **fields)
    assert tick.ltp_paise == 2_451_235 and tick.bid_paise == 0


def test_quote_maps_ltq_volume_and_rounds_to_the_tick_size() -> None:
    packet = _roundtrip(
        Quote(
            segment_code=2,
            security_id=55796,
            ltp=152.32,
            ltq=75,
            ltt=utc_s_to_ltt(1_764_050_001),
            atp=150.1,
            volume=1_234_500,
            total_sell_qty=1,
            total_buy_qty=2,
            day_open=140.0,
            day_close=0.0,
            day_high=160.0,
            day_low=139.0,
        )
    )
    fields = packet_to_fields(packet, T0_NS, tick_paise=5)
    assert fields is not None
    assert fields["ltp_paise"] == 15_230  # 152.32 is not a multiple of 0.05: nearest tick
    assert (fields["ltq"], fields["volume"], fields["ltt_s"], fields["kind"]) == (
        75,
        1_234_500,
        1_764_050_001,
        "quote",
    )
    assert packet_to_fields(packet, T0_NS, tick_paise=1)["ltp_paise"] == 15_232  # type: ignore[index]


def test_full_takes_bid_and_ask_from_depth_level_0_and_zeroes_empty_levels() -> None:
    depth = (
        DepthLevel(
            bid_qty=750,
            ask_qty=1125,
            bid_orders=3,
            ask_orders=4,
            bid_price=152.25,
            ask_price=152.45,
        ),
    ) + tuple(
        DepthLevel(
            bid_qty=0, ask_qty=0, bid_orders=0, ask_orders=0, bid_price=-0.01, ask_price=-0.01
        )
        for _ in range(4)
    )
    packet = _roundtrip(
        Full(
            segment_code=2,
            security_id=55796,
            ltp=152.3,
            ltq=75,
            ltt=utc_s_to_ltt(1_764_050_002),
            atp=150.5,
            volume=9_000,
            total_sell_qty=1,
            total_buy_qty=2,
            oi=3_000_000,
            oi_day_high=3_100_000,
            oi_day_low=2_900_000,
            day_open=140.0,
            day_close=0.0,
            day_high=160.0,
            day_low=139.0,
            depth=depth,
        )
    )
    fields = packet_to_fields(packet, T0_NS)
    assert fields == {
        "ts_event": T0_NS,
        "segment": "NSE_FNO",
        "security_id": 55796,
        "ltp_paise": 15_230,
        "ltq": 75,
        "ltt_s": 1_764_050_002,
        "volume": 9_000,
        "oi": 3_000_000,
        "bid_paise": 15_225,
        "ask_paise": 15_245,
        "bid_qty": 750,
        "ask_qty": 1125,
        "kind": "full",
    }
    empty_book = _roundtrip(
        Full(
            **{
                **{f: getattr(packet, f) for f in packet.__struct_fields__},
                "depth": depth[1:] + depth[:1],
            }
        )
    )
    assert packet_to_fields(empty_book, T0_NS)["bid_paise"] == 0  # type: ignore[index]


def test_non_price_packets_map_to_none() -> None:
    for packet in (
        OpenInterest(segment_code=2, security_id=1, oi=10),
        PrevClose(segment_code=2, security_id=1, prev_close=100.0, prev_oi=5),
        MarketStatus(segment_code=0, security_id=0),
        Disconnect(segment_code=0, security_id=0, reason_code=800),
    ):
        assert packet_to_fields(packet, T0_NS) is None


def test_latest_tick_is_only_replaced_by_a_positive_ltp() -> None:
    latest = LatestTicks()
    first = packet_to_fields(Ticker(segment_code=2, security_id=7, ltp=101.0, ltt=0), 1)
    zero = packet_to_fields(Ticker(segment_code=2, security_id=7, ltp=0.0, ltt=0), 2)
    later = packet_to_fields(Ticker(segment_code=2, security_id=7, ltp=102.5, ltt=0), 3)
    assert first and zero and later
    assert latest.put(first) is True
    assert latest.put(zero) is False
    assert latest.get("NSE_FNO", 7) == first
    assert latest.put(later) is True
    assert latest.get("NSE_FNO", 7)["ltp_paise"] == 10_250  # type: ignore[index]
    assert latest.get("NSE_FNO", 8) is None and len(latest) == 1
