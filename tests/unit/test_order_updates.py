"""DhanHQ order-update socket client against a scripted fake socket (reference §5)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import traceback
from typing import Any

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.http11 import Response

from shared.clock import FakeClock
from shared.dhan.feed_client import Backoff
from shared.dhan.order_updates import (
    OrderUpdate,
    OrderUpdateClient,
    login_message,
    normalize_status,
    parse_order_update,
)
from shared.errors import BrokerAuthError, DecodeError
from shared.logs import JsonFormatter
from tests.unit.test_feed_client import FakeServer, FakeSleep, until

TOKEN = "eyJhbGciOiJIUzUxMiJ9.SECRET-order-token.sig"
CLIENT_ID = "1000000001"
URL = "wss://api-order-update.dhan.co"
T0_NS = 1_764_050_000_000_000_000
DROP = ConnectionClosedError(None, None)

# The documented sample (reference §5): title-case status, a duplicated "Remarks" key and the
# lowercase duplicates the docs sample carries.
DOC_SAMPLE = """{
    "Data": {
        "Exchange": "NSE", "Segment": "E", "Source": "N", "SecurityId": "14366",
        "ClientId": "1000000001", "ExchOrderNo": "1400000000404591", "OrderNo": "1124091136546",
        "Product": "C", "TxnType": "B", "OrderType": "LMT", "Validity": "DAY",
        "DiscQuantity": 1, "DiscQtyRem": 1, "RemainingQuantity": 1, "Quantity": 1, "TradedQty": 0,
        "Price": 13, "TriggerPrice": 0, "TradedPrice": 0, "AvgTradedPrice": 0, "AlgoOrdNo": "",
        "OffMktFlag": "0", "OrderDateTime": "2024-09-11 14:39:29",
        "ExchOrderTime": "2024-09-11 14:39:29", "LastUpdatedTime": "2024-09-11 14:39:29",
        "Remarks": "NR", "MktType": "NL", "ReasonDescription": "CONFIRMED", "LegNo": 1,
        "Instrument": "EQUITY", "Symbol": "IDEA", "ProductName": "CNC", "Status": "Cancelled",
        "LotSize": 1, "StrikePrice": 0, "ExpiryDate": "0001-01-01 00:00:00", "OptType": "XX",
        "DisplayName": "Vodafone Idea", "Isin": "INE669E01016", "Series": "EQ",
        "GoodTillDaysDate": "2024-09-11", "RefLtp": 13.21, "TickSize": 0.01, "AlgoId": "0",
        "Multiplier": 1, "CorrelationId": "", "Remarks": "Super Order",
        "series": "EQ", "goodTillDaysDate": "2024-09-11", "instrumentType": "EQUITY",
        "refLtp": 13.21, "tickSize": 0.01, "algoId": "0", "multiplier": 1
    },
    "Type": "order_alert"
}"""


def option_fill(status: str = "Traded", **overrides: Any) -> str:
    data = {
        "Exchange": "NSE",
        "Segment": "D",
        "Source": "P",
        "SecurityId": "55796",
        "OrderNo": "5224112512345",
        "ExchOrderNo": "1100000012345678",
        "TxnType": "B",
        "OrderType": "MKT",
        "Product": "I",
        "Quantity": 75,
        "TradedQty": 75,
        "RemainingQuantity": 0,
        "Price": 0,
        "TriggerPrice": 0,
        "TradedPrice": 152.35,
        "AvgTradedPrice": 152.35,
        "Status": status,
        "ReasonDescription": "TRADE CONFIRMED",
        "LastUpdatedTime": "2025-11-25 09:20:01",
        "LegNo": 1,
        "CorrelationId": "ent-8f3a2c",
        "UnknownFutureField": {"nested": True},
    }
    data.update(overrides)
    return json.dumps({"Data": data, "Type": "order_alert"})


# --------------------------------------------------------------------------- parsing


def test_login_message_is_byte_exact_as_in_the_reference() -> None:
    assert login_message("1000000001", "JWT") == (
        '{"LoginReq": {"MsgCode": 42, "ClientId": "1000000001", "Token": "JWT"}, "UserType": "SELF"}'
    )


def test_doc_sample_with_title_case_status_parses_to_upper_case() -> None:
    update = parse_order_update(DOC_SAMPLE)
    assert update == OrderUpdate(
        order_no="1124091136546",
        exch_order_no="1400000000404591",
        correlation_id="",
        security_id=14366,
        exchange="NSE",
        segment="E",
        txn_type="B",
        product="C",
        order_type="LMT",
        quantity=1,
        traded_qty=0,
        remaining_qty=1,
        price_paise=1300,
        trigger_price_paise=0,
        traded_price_paise=0,
        avg_traded_price_paise=0,
        status="CANCELLED",
        reason_description="CONFIRMED",
        last_updated_time="2024-09-11 14:39:29",
        ts_last_updated=1_726_045_769_000_000_000,  # 14:39:29 IST = 09:09:29 UTC
        leg_no=1,
        remarks="Super Order",
        source="N",
    )


def test_option_fill_prices_are_exact_paise() -> None:
    update = parse_order_update(option_fill(AvgTradedPrice=152.3, TradedPrice="152.35"))
    assert update is not None
    assert update.status == "TRADED"
    assert (update.traded_price_paise, update.avg_traded_price_paise) == (15_235, 15_230)
    assert (update.quantity, update.traded_qty, update.remaining_qty) == (75, 75, 0)
    assert (update.correlation_id, update.security_id, update.segment) == ("ent-8f3a2c", 55796, "D")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Cancelled", "CANCELLED"),
        ("Traded", "TRADED"),
        ("traded", "TRADED"),
        ("Part Traded", "PART_TRADED"),
        ("PART_TRADED", "PART_TRADED"),
        (" Pending ", "PENDING"),
        ("TRANSIT", "TRANSIT"),
    ],
)
def test_status_is_compared_case_insensitively(raw: str, expected: str) -> None:
    assert normalize_status(raw) == expected
    assert parse_order_update(option_fill(raw)).status == expected  # type: ignore[union-attr]


def test_camel_case_keys_are_accepted_as_a_fallback() -> None:
    raw = json.dumps(
        {
            "Type": "order_alert",
            "Data": {"orderNo": "77", "status": "Rejected", "reasonDescription": "RMS: margin"},
        }
    )
    update = parse_order_update(raw)
    assert update is not None
    assert (update.order_no, update.status, update.reason_description) == (
        "77",
        "REJECTED",
        "RMS: margin",
    )


def test_other_message_types_are_not_updates() -> None:
    assert parse_order_update('{"Type": "login_ack", "Data": {"Status": "OK"}}') is None
    assert parse_order_update('{"status": "failed"}') is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not json", "order update"),
        (option_fill(Quantity="seventy five"), r"\$\.Data\.Quantity"),
        (option_fill(AvgTradedPrice="n/a"), r"\$\.Data\.AvgTradedPrice"),
        (option_fill(OrderNo=""), r"\$\.Data\.OrderNo missing"),
        ('{"Type": "order_alert", "Data": [1, 2]}', r"\$\.Data"),
    ],
)
def test_malformed_updates_raise_decode_error_naming_the_field(raw: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        parse_order_update(raw)


# --------------------------------------------------------------------------- client


class Harness:
    def __init__(self, server: FakeServer, rng: random.Random, **kwargs: Any) -> None:
        self.server = server
        self.clock = FakeClock(T0_NS)
        self.sleep = FakeSleep(self.clock, kwargs.pop("hook", None))
        self.updates: list[OrderUpdate] = []
        self.client = OrderUpdateClient(
            URL,
            CLIENT_ID,
            TOKEN,
            on_update=kwargs.pop("on_update", self._collect),
            connect=server.connect,
            clock=self.clock,
            sleep=self.sleep,
            rng=rng,
            **kwargs,
        )
        self.task: asyncio.Task[None] | None = None

    async def _collect(self, update: OrderUpdate) -> None:
        self.updates.append(update)

    def start(self) -> None:
        self.task = asyncio.create_task(self.client.run())

    async def stop(self) -> None:
        await self.client.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)


def test_client_logs_in_first_and_delivers_updates(rng: random.Random) -> None:
    async def scenario() -> None:
        h = Harness(FakeServer([option_fill("Pending", TradedQty=0), option_fill("Traded")]), rng)
        assert h.client.connected is False and h.client.down_since_ns == T0_NS
        h.start()
        await until(lambda: len(h.updates) == 2, "two updates")
        assert h.client.connected and h.client.down_since_ns == 0
        await h.stop()
        assert h.server.urls == [URL]
        assert h.server.sockets[0].sent == [
            '{"LoginReq": {"MsgCode": 42, "ClientId": "1000000001", "Token": "'
            + TOKEN
            + '"}, "UserType": "SELF"}'
        ]
        assert [u.status for u in h.updates] == ["PENDING", "TRADED"]
        assert h.client.connected is False and h.client.stats.updates == 2

    asyncio.run(scenario())


def test_client_reconnects_after_a_drop_and_logs_in_again(rng: random.Random) -> None:
    async def scenario() -> None:
        h = Harness(
            FakeServer([option_fill(), DROP], OSError("refused"), [option_fill("Traded")]), rng
        )
        h.start()
        await until(lambda: len(h.updates) == 2, "update after reconnect")
        await h.stop()
        assert len(h.server.urls) == 3
        assert [ws.sent[0] for ws in h.server.sockets] == [login_message(CLIENT_ID, TOKEN)] * 2
        # healthy first session -> base delay; the failed connect then doubles it
        assert len(h.sleep.delays) == 2
        assert 0.4 <= h.sleep.delays[0] <= 0.5 and 0.8 <= h.sleep.delays[1] <= 1.0

    asyncio.run(scenario())


def test_connected_is_false_while_the_socket_is_down(rng: random.Random) -> None:
    async def scenario() -> None:
        seen: list[tuple[bool, int]] = []

        async def hook(delays: list[float]) -> None:
            seen.append((h.client.connected, h.client.down_since_ns))
            if len(delays) == 3:
                await h.client.stop()

        h = Harness(
            FakeServer([DROP], *[OSError("down")] * 5),
            rng,
            hook=hook,
            backoff=Backoff(initial_s=1.0, cap_s=4.0),
        )
        await asyncio.wait_for(h.client.run(), 5)
        assert [c for c, _ in seen] == [False, False, False]
        assert seen[0][1] == T0_NS  # went down at the (fake) time of the drop
        assert h.sleep.delays[1] < h.sleep.delays[2] <= 4.0

    asyncio.run(scenario())


def test_bad_and_foreign_messages_are_counted_not_fatal(
    rng: random.Random, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="shared.dhan.order_updates")

    async def scenario() -> Harness:
        script = [
            "{oops",
            option_fill(Quantity="x"),
            '{"Type": "login", "Status": "ok"}',
            b'{"Type": "other"}',
            option_fill(),
        ]
        h = Harness(FakeServer(script), rng)
        h.start()
        await until(lambda: h.updates, "the good update")
        await h.stop()
        return h

    h = asyncio.run(scenario())
    stats = h.client.stats
    assert (stats.messages, stats.decode_errors, stats.ignored, stats.updates) == (5, 2, 2, 1)
    assert stats.connects == 1
    assert len([r for r in caplog.records if r.getMessage() == "undecodable order update"]) == 1


def test_handshake_401_raises_broker_auth_error(rng: random.Random) -> None:
    async def scenario() -> None:
        h = Harness(FakeServer(InvalidStatus(Response(401, "Unauthorized", Headers()))), rng)
        with pytest.raises(BrokerAuthError, match="HTTP 401"):
            await asyncio.wait_for(h.client.run(), 5)
        assert h.sleep.delays == []

    asyncio.run(scenario())


def test_the_token_never_appears_in_logs_or_exception_text(
    rng: random.Random, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    def wire_traces(url: str, kwargs: dict[str, Any]) -> None:
        logger = kwargs["logger"]
        logger.debug("> %s", f'TEXT \'{{"LoginReq": {{"Token": "{TOKEN[:16]}...\' [120 bytes]')
        logger.info("sent login %s", login_message(CLIENT_ID, TOKEN))

    async def scenario() -> None:
        # An ignored message is logged as a 200-character sample; here the token spans the cut.
        echo = json.dumps({"Type": "login_reply", "Pad": "p" * 120, "Token": TOKEN})
        server = FakeServer(
            OSError(f"refused for token {TOKEN}"),
            [echo, DROP],
            InvalidStatus(Response(403, "Forbidden", Headers())),
            on_connect=wire_traces,
        )
        h = Harness(server, rng)
        with pytest.raises(BrokerAuthError) as caught:
            await asyncio.wait_for(h.client.run(), 5)
        assert TOKEN not in "".join(traceback.format_exception(caught.value))

    asyncio.run(scenario())
    json_lines = JsonFormatter("executor")
    text = "\n".join(json_lines.format(r) for r in caplog.records)
    assert "refused for token" in text and "login_reply" in text and "sent login" in text
    assert TOKEN not in text and TOKEN[:16] not in text


def test_stop_cuts_a_long_backoff_wait_short(rng: random.Random) -> None:
    async def scenario() -> None:
        server = FakeServer(*[OSError("down")] * 3)
        client = OrderUpdateClient(
            URL,
            CLIENT_ID,
            TOKEN,
            on_update=_ignore,
            connect=server.connect,
            rng=rng,
            backoff=Backoff(initial_s=600.0, cap_s=600.0),
        )  # real asyncio.sleep: without the cut, run() would wait ten minutes
        task = asyncio.create_task(client.run())
        await until(lambda: client.stats.connect_failures == 1, "first failure")
        await client.stop()
        await asyncio.wait_for(task, 2)
        assert len(server.urls) == 1

    asyncio.run(scenario())


async def _ignore(update: OrderUpdate) -> None:
    return None
