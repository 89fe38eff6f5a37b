"""DhanHQ REST client against httpx.MockTransport fakes: requests, parsing, errors, retries,
orders in doubt, rate limits and token hygiene. Fake clock and sleep, seeded RNG: pure and instant."""

from __future__ import annotations

import asyncio
import logging
import random
import traceback
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any

import httpx
import msgspec
import pytest

from shared.clock import FakeClock, ist_to_ns
from shared.dhan.rest import (
    ORDER_DOUBT_SETTLE_S,
    DhanRest,
    OrderAck,
    OrderInDoubt,
    is_order_not_found,
    order_payload,
)
from shared.dhan.retry import Retrier, RetryPolicy, backoff_s
from shared.errors import (
    BrokerAuthError,
    BrokerError,
    BrokerRateLimited,
    BrokerRejected,
    BrokerUnavailable,
)
from shared.logs import JsonFormatter
from shared.types import NS_PER_S
from tests.conftest import SEED

TOKEN = "eyJhbGciOiJIUzUxMiJ9.secret-token-7f3a9c"
CLIENT = "1100003626"
BASE = "https://api.dhan.co/v2"
CID = "e1-20260302-0001"
START_NS = ist_to_ns(date(2026, 3, 2), "09:20")
HEADERS = {
    "access-token": TOKEN,
    "client-id": CLIENT,
    "content-type": "application/json",
    "accept": "application/json",
}

ORDER_JSON: dict[str, Any] = {
    "dhanClientId": CLIENT,
    "orderId": "112111182198",
    "exchangeOrderId": "1200000012345678",
    "correlationId": CID,
    "orderStatus": "TRADED",
    "transactionType": "BUY",
    "exchangeSegment": "NSE_FNO",
    "productType": "INTRADAY",
    "orderType": "MARKET",
    "validity": "DAY",
    "tradingSymbol": "NIFTY-Mar2026-25000-CE",
    "securityId": "52175",
    "quantity": 75,
    "disclosedQuantity": 0,
    "price": 0.0,
    "triggerPrice": 0.0,
    "afterMarketOrder": False,
    "boProfitValue": 0.0,
    "boStopLossValue": 0.0,
    "legName": "",
    "createTime": "2026-03-02 09:20:01",
    "updateTime": "2026-03-02 09:20:02",
    "exchangeTime": "2026-03-02 09:20:02",
    "drvExpiryDate": "2026-03-05",
    "drvOptionType": "CALL",
    "drvStrikePrice": 25000.0,
    "omsErrorCode": "",
    "omsErrorDescription": "",
    "algoId": "",
    "remainingQuantity": 0,
    "averageTradedPrice": 152.35,
    "filledQty": 75,
}


def err(code: str, message: str = "something", kind: str = "Error") -> dict[str, str]:
    return {"errorType": kind, "errorCode": code, "errorMessage": message}


def data_err(code: str, message: str) -> dict[str, Any]:
    return {"data": {code: message}, "status": "failed"}


def reply(status: int, body: Any = None) -> httpx.Response:
    if body is None:
        return httpx.Response(status)
    if isinstance(body, str):
        return httpx.Response(status, text=body)
    return httpx.Response(status, content=msgspec.json.encode(body))


def body_of(request: httpx.Request) -> Any:
    return msgspec.json.decode(request.content) if request.content else None


class FakeTime:
    def __init__(self) -> None:
        self.clock = FakeClock(START_NS)
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(round(seconds * NS_PER_S))
        await asyncio.sleep(0)


class Broker:
    """Records requests and answers each from a plain function of the request."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)

    def calls(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r.method == method and r.url.path == path)


def call(
    answer: Callable[[httpx.Request], httpx.Response],
    action: Callable[[DhanRest], Awaitable[Any]],
    *,
    t: FakeTime | None = None,
    **kwargs: Any,
) -> tuple[Any, Broker, FakeTime]:
    """Run ``action`` on a client wired to a fake broker; returns (result, broker, time)."""
    broker, t = Broker(answer), t or FakeTime()

    async def main() -> Any:
        async with DhanRest(
            BASE,
            CLIENT,
            TOKEN,
            transport=httpx.MockTransport(broker),
            clock=t.clock,
            sleep=t.sleep,
            rng=random.Random(SEED),
            **kwargs,
        ) as rest:
            return await action(rest)

    return asyncio.run(main()), broker, t


def fails(
    answer: Callable[[httpx.Request], httpx.Response],
    action: Callable[[DhanRest], Awaitable[Any]],
    **kwargs: Any,
) -> tuple[BrokerError, Broker, FakeTime]:
    holder: list[BrokerError] = []

    async def catching(rest: DhanRest) -> None:
        try:
            await action(rest)
        except BrokerError as exc:
            holder.append(exc)

    _, broker, t = call(answer, catching, **kwargs)
    assert holder, "expected a BrokerError"
    return holder[0], broker, t


def payload(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "client_id": CLIENT,
        "correlation_id": CID,
        "side": "BUY",
        "segment": "NSE_FNO",
        "security_id": 52175,
        "quantity": 75,
    }
    return order_payload(**(args | kw))


# --------------------------------------------------------------------------- requests


def test_market_order_payload_has_exactly_the_documented_keys_and_price_zero() -> None:
    assert payload() == {
        "dhanClientId": CLIENT,
        "correlationId": CID,
        "transactionType": "BUY",
        "exchangeSegment": "NSE_FNO",
        "productType": "INTRADAY",
        "orderType": "MARKET",
        "validity": "DAY",
        "securityId": "52175",
        "quantity": 75,
        "price": 0,
    }


def test_limit_order_payload_sends_rupees_from_paise() -> None:
    p = payload(order_type="LIMIT", price_paise=15235, side="SELL", validity="IOC")
    assert p["price"] == 152.35 and p["orderType"] == "LIMIT" and p["validity"] == "IOC"
    assert msgspec.json.encode(p).count(b'"price":152.35') == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"correlation_id": "x" * 31},
        {"correlation_id": "a/b"},
        {"correlation_id": ""},
        {"side": "buy"},
        {"segment": "NFO"},
        {"quantity": 0},
        {"price_paise": 100},
        {"order_type": "LIMIT"},
        {"order_type": "STOP_LOSS", "price_paise": 5},
    ],
)
def test_order_payload_refuses_malformed_orders(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        payload(**bad)


def fake_broker(request: httpx.Request) -> httpx.Response:
    """A broker that answers every endpoint the client uses with a documented example."""
    route = (request.method, request.url.path.removeprefix("/v2"))
    bodies: dict[tuple[str, str], tuple[int, Any]] = {
        ("POST", "/orders"): (200, {"orderId": "112111182198", "orderStatus": "PENDING"}),
        ("PUT", "/orders/112111182198"): (
            200,
            {"orderId": "112111182198", "orderStatus": "PENDING"},
        ),
        ("DELETE", "/orders/112111182198"): (
            202,
            {"orderId": "112111182198", "orderStatus": "CANCELLED"},
        ),
        ("GET", "/orders/112111182198"): (200, ORDER_JSON),
        ("GET", f"/orders/external/{CID}"): (200, ORDER_JSON),
        ("GET", "/orders"): (200, [ORDER_JSON, ORDER_JSON | {"orderId": "2"}]),
        ("GET", "/trades"): (
            200,
            [
                {
                    "dhanClientId": CLIENT,
                    "orderId": "112111182198",
                    "exchangeOrderId": "120000001",
                    "exchangeTradeId": "15099",
                    "transactionType": "BUY",
                    "exchangeSegment": "NSE_FNO",
                    "productType": "INTRADAY",
                    "orderType": "MARKET",
                    "tradingSymbol": "NIFTY 25000 CE",
                    "customSymbol": "Nifty 5 Mar 25000 Call",
                    "securityId": "52175",
                    "tradedQuantity": 75,
                    "tradedPrice": 152.35,
                    "createTime": "2026-03-02 09:20:02",
                    "updateTime": "2026-03-02 09:20:02",
                    "exchangeTime": "2026-03-02 09:20:02",
                    "drvExpiryDate": "2026-03-05",
                    "drvOptionType": "CALL",
                    "drvStrikePrice": 25000.0,
                }
            ],
        ),
        ("GET", "/positions"): (
            200,
            [
                {
                    "dhanClientId": CLIENT,
                    "tradingSymbol": "NIFTY 25000 CE",
                    "securityId": "52175",
                    "positionType": "LONG",
                    "exchangeSegment": "NSE_FNO",
                    "productType": "INTRADAY",
                    "buyAvg": 152.35,
                    "buyQty": 150,
                    "costPrice": 152.35,
                    "sellAvg": 160.1,
                    "sellQty": 75,
                    "netQty": 75,
                    "realizedProfit": 581.25,
                    "unrealizedProfit": -12.5,
                    "rbiReferenceRate": 1.0,
                    "multiplier": 1,
                    "carryForwardBuyQty": 0,
                    "carryForwardSellQty": 0,
                    "carryForwardBuyValue": 0.0,
                    "carryForwardSellValue": 0.0,
                    "dayBuyQty": 150,
                    "daySellQty": 75,
                    "dayBuyValue": 22852.5,
                    "daySellValue": 12007.5,
                    "drvExpiryDate": "2026-03-05",
                    "drvOptionType": "CALL",
                    "drvStrikePrice": 25000.0,
                    "crossCurrency": False,
                }
            ],
        ),
        ("GET", "/fundlimit"): (
            200,
            {
                "dhanClientId": CLIENT,
                "availabelBalance": 98440.0,
                "sodLimit": 113642.0,
                "collateralAmount": 0.0,
                "receiveableAmount": 0.0,
                "utilizedAmount": 15202.0,
                "blockedPayoutAmount": 0.0,
                "withdrawableBalance": 98310.05,
            },
        ),
        ("GET", "/profile"): (
            200,
            {
                "dhanClientId": CLIENT,
                "tokenValidity": "03/03/2026 09:00",
                "activeSegment": "Equity, Derivative",
                "ddpi": "Active",
                "mtf": "Active",
                "dataPlan": "Active",
                "dataValidity": "2026-04-01 00:00:00.0",
            },
        ),
        ("POST", "/marketfeed/ltp"): (
            200,
            {
                "data": {
                    "NSE_FNO": {"52175": {"last_price": 152.35}, "52176": {"last_price": 98.05}},
                    "IDX_I": {"13": {"last_price": 25012.4}},
                },
                "status": "success",
            },
        ),
        ("POST", "/marketfeed/quote"): (
            200,
            {
                "data": {
                    "NSE_FNO": {
                        "52175": {
                            "average_price": 151.8,
                            "buy_quantity": 36000,
                            "sell_quantity": 41250,
                            "depth": {
                                "buy": [
                                    {"quantity": 750, "orders": 3, "price": 152.3},
                                    {"quantity": 1500, "orders": 9, "price": 152.25},
                                ],
                                "sell": [{"quantity": 675, "orders": 2, "price": 152.4}],
                            },
                            "last_price": 152.35,
                            "last_quantity": 75,
                            "last_trade_time": "02/03/2026 09:20:02",
                            "lower_circuit_limit": 0.05,
                            "upper_circuit_limit": 480.6,
                            "net_change": -3.15,
                            "oi": 5123400,
                            "oi_day_high": 5200000,
                            "oi_day_low": 4900000,
                            "ohlc": {"open": 140.0, "close": 155.5, "high": 160.2, "low": 138.15},
                            "volume": 912300,
                        }
                    }
                },
                "status": "success",
            },
        ),
        ("POST", "/optionchain"): (
            200,
            {
                "data": {
                    "last_price": 25012.4,
                    "oc": {
                        "25000.000000": {
                            "ce": {
                                "greeks": {
                                    "delta": 0.53,
                                    "theta": -15.1,
                                    "gamma": 0.0013,
                                    "vega": 12.2,
                                },
                                "implied_volatility": 11.9,
                                "last_price": 152.35,
                                "oi": 5123400,
                                "previous_close_price": 155.5,
                                "previous_oi": 4000000,
                                "previous_volume": 800000,
                                "top_ask_price": 152.4,
                                "top_ask_quantity": 675,
                                "top_bid_price": 152.3,
                                "top_bid_quantity": 750,
                                "volume": 912300,
                            },
                            "pe": {
                                "greeks": {
                                    "delta": -0.47,
                                    "theta": -14.0,
                                    "gamma": 0.0013,
                                    "vega": 12.1,
                                },
                                "implied_volatility": 12.4,
                                "last_price": 131.9,
                                "oi": 4100000,
                                "previous_close_price": 120.0,
                                "previous_oi": 3900000,
                                "previous_volume": 700000,
                                "top_ask_price": 132.0,
                                "top_ask_quantity": 300,
                                "top_bid_price": 131.85,
                                "top_bid_quantity": 450,
                                "volume": 801000,
                                "average_price": 130.5,
                                "security_id": 52176,
                            },
                        },
                        "24950.500000": {"ce": {"last_price": 180.0}},
                    },
                },
                "status": "success",
            },
        ),
        ("POST", "/optionchain/expirylist"): (
            200,
            {"data": ["2026-03-05", "2026-03-12", "2026-03-26"], "status": "success"},
        ),
        ("POST", "/charts/intraday"): (
            200,
            {
                "open": [25001.5, 25010.0],
                "high": [25020.0, 25015.25],
                "low": [24990.0, 25001.0],
                "close": [25010.0, 25012.4],
                "volume": [0, 0],
                "timestamp": [1772423100, 1772423400.0],
            },
        ),
    }
    status, body = bodies.get(route, (404, err("DH-905", f"no route {route}")))
    return reply(status, body)


ENDPOINTS: dict[str, tuple[Callable[[DhanRest], Awaitable[Any]], str, str, Any]] = {
    "place_order": (lambda r: r.place_order(payload()), "POST", "/v2/orders", payload()),
    "modify_order": (
        lambda r: r.modify_order("112111182198", quantity=75, price_paise=15240),
        "PUT",
        "/v2/orders/112111182198",
        {
            "dhanClientId": CLIENT,
            "orderId": "112111182198",
            "orderType": "LIMIT",
            "quantity": 75,
            "price": 152.4,
            "disclosedQuantity": 0,
            "triggerPrice": 0.0,
            "validity": "DAY",
        },
    ),
    "cancel_order": (
        lambda r: r.cancel_order("112111182198"),
        "DELETE",
        "/v2/orders/112111182198",
        None,
    ),
    "get_order": (lambda r: r.get_order("112111182198"), "GET", "/v2/orders/112111182198", None),
    "get_order_by_correlation": (
        lambda r: r.get_order_by_correlation(CID),
        "GET",
        f"/v2/orders/external/{CID}",
        None,
    ),
    "order_book": (lambda r: r.order_book(), "GET", "/v2/orders", None),
    "trade_book": (lambda r: r.trade_book(), "GET", "/v2/trades", None),
    "positions": (lambda r: r.positions(), "GET", "/v2/positions", None),
    "fund_limit": (lambda r: r.fund_limit(), "GET", "/v2/fundlimit", None),
    "profile": (lambda r: r.profile(), "GET", "/v2/profile", None),
    "ltp": (
        lambda r: r.ltp({"NSE_FNO": [52175, 52176], "IDX_I": [13]}),
        "POST",
        "/v2/marketfeed/ltp",
        {"NSE_FNO": [52175, 52176], "IDX_I": [13]},
    ),
    "quote": (
        lambda r: r.quote({"NSE_FNO": (52175,)}),
        "POST",
        "/v2/marketfeed/quote",
        {"NSE_FNO": [52175]},
    ),
    "option_chain": (
        lambda r: r.option_chain(13, "IDX_I", date(2026, 3, 5)),
        "POST",
        "/v2/optionchain",
        {"UnderlyingScrip": 13, "UnderlyingSeg": "IDX_I", "Expiry": "2026-03-05"},
    ),
    "expiry_list": (
        lambda r: r.expiry_list(13, "IDX_I"),
        "POST",
        "/v2/optionchain/expirylist",
        {"UnderlyingScrip": 13, "UnderlyingSeg": "IDX_I"},
    ),
    "intraday_charts": (
        lambda r: r.intraday_charts(
            13, "IDX_I", "INDEX", 5, datetime(2026, 3, 2, 9, 15), datetime(2026, 3, 2, 15, 30)
        ),
        "POST",
        "/v2/charts/intraday",
        {
            "securityId": "13",
            "exchangeSegment": "IDX_I",
            "instrument": "INDEX",
            "interval": 5,
            "oi": False,
            "fromDate": "2026-03-02 09:15:00",
            "toDate": "2026-03-02 15:30:00",
        },
    ),
}


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_each_endpoint_sends_documented_method_path_headers_and_exact_body(name: str) -> None:
    action, method, path, expected_body = ENDPOINTS[name]
    _, broker, _ = call(fake_broker, action)
    (request,) = broker.requests
    assert (request.method, request.url.path) == (method, path)
    assert {k: request.headers.get(k) for k in HEADERS} == HEADERS
    assert body_of(request) == expected_body
    if expected_body is not None:
        assert list(body_of(request)) == list(expected_body)  # exact keys, nothing extra


def run(action: Callable[[DhanRest], Awaitable[Any]]) -> Any:
    return call(fake_broker, action)[0]


def test_place_modify_cancel_return_the_acknowledgement() -> None:
    assert run(lambda r: r.place_order(payload())) == OrderAck("112111182198", "PENDING")
    assert run(
        lambda r: r.modify_order(
            "112111182198", quantity=75, price_paise=15240, leg_name="ENTRY_LEG"
        )
    ) == OrderAck("112111182198", "PENDING")
    assert run(lambda r: r.cancel_order("112111182198")) == OrderAck("112111182198", "CANCELLED")


def test_modify_sends_leg_name_only_when_given() -> None:
    _, broker, _ = call(
        fake_broker,
        lambda r: r.modify_order(
            "112111182198", quantity=75, price_paise=15240, leg_name="ENTRY_LEG"
        ),
    )
    assert body_of(broker.requests[0])["legName"] == "ENTRY_LEG"


def test_order_parses_prices_to_exact_paise_and_keeps_raw() -> None:
    order = run(lambda r: r.get_order("112111182198"))
    assert order.order_id == "112111182198" and order.correlation_id == CID
    assert order.security_id == 52175 and order.filled_qty == 75 and order.quantity == 75
    assert order.average_traded_price_paise == 15235
    assert order.drv_strike_price_paise == 2_500_000 and order.price_paise == 0
    assert order.order_status == "TRADED" and order.exchange_time == "2026-03-02 09:20:02"
    assert order.raw == ORDER_JSON


def test_order_lookup_accepts_a_one_element_array() -> None:
    order, _, _ = call(
        lambda req: reply(200, [ORDER_JSON]), lambda r: r.get_order_by_correlation(CID)
    )
    assert order.order_id == "112111182198"


def test_correlation_id_is_percent_encoded_in_the_path() -> None:
    _, broker, _ = call(
        lambda req: reply(200, ORDER_JSON), lambda r: r.get_order_by_correlation("e1 abc")
    )
    assert broker.requests[0].url.raw_path == b"/v2/orders/external/e1%20abc"


def test_order_book_and_trade_book() -> None:
    orders = run(lambda r: r.order_book())
    assert [o.order_id for o in orders] == ["112111182198", "2"]
    (trade,) = run(lambda r: r.trade_book())
    assert trade.traded_price_paise == 15235 and trade.traded_quantity == 75
    assert trade.exchange_trade_id == "15099" and trade.raw["customSymbol"]


def test_empty_order_book_is_an_empty_list() -> None:
    assert call(lambda req: reply(200, []), lambda r: r.order_book())[0] == []


def test_positions_parse_money_to_paise_with_sign() -> None:
    (p,) = run(lambda r: r.positions())
    assert (p.security_id, p.position_type, p.net_qty, p.buy_qty, p.sell_qty) == (
        52175,
        "LONG",
        75,
        150,
        75,
    )
    assert p.buy_avg_paise == 15235 and p.sell_avg_paise == 16010
    assert p.realized_profit_paise == 58125 and p.unrealized_profit_paise == -1250
    assert p.day_buy_value_paise == 2_285_250


def test_fund_limit_reads_the_misspelt_availabel_balance() -> None:
    funds = run(lambda r: r.fund_limit())
    assert funds.available_balance_paise == 9_844_000
    assert funds.withdrawable_balance_paise == 9_831_005
    assert funds.utilized_amount_paise == 1_520_200 and funds.sod_limit_paise == 11_364_200
    assert funds.raw["availabelBalance"] == 98440.0


def test_fund_limit_without_a_balance_is_a_bad_response_not_zero() -> None:
    exc, _, _ = fails(
        lambda req: reply(200, {"dhanClientId": CLIENT, "sodLimit": 1.0}), lambda r: r.fund_limit()
    )
    assert type(exc) is BrokerError and exc.code == "BAD_RESPONSE"


def test_profile() -> None:
    prof = run(lambda r: r.profile())
    assert prof.dhan_client_id == CLIENT and prof.token_validity == "03/03/2026 09:00"
    assert prof.data_plan == "Active"


def test_ltp_maps_each_instrument_to_paise() -> None:
    assert run(lambda r: r.ltp({"NSE_FNO": [52175, 52176], "IDX_I": [13]})) == {
        ("NSE_FNO", 52175): 15235,
        ("NSE_FNO", 52176): 9805,
        ("IDX_I", 13): 2_501_240,
    }


def test_quote_parses_depth_ohlc_and_oi() -> None:
    q = run(lambda r: r.quote({"NSE_FNO": [52175]}))[("NSE_FNO", 52175)]
    assert q.last_price_paise == 15235 and q.average_price_paise == 15180
    assert [(lv.price_paise, lv.quantity, lv.orders) for lv in q.bids] == [
        (15230, 750, 3),
        (15225, 1500, 9),
    ]
    assert [lv.price_paise for lv in q.asks] == [15240]
    assert (q.open_paise, q.high_paise, q.low_paise, q.close_paise) == (14000, 16020, 13815, 15550)
    assert q.net_change_paise == -315 and q.oi == 5_123_400 and q.volume == 912_300
    assert q.last_trade_time == "02/03/2026 09:20:02"


def test_quote_refuses_more_than_1000_instruments_without_a_request() -> None:
    broker = Broker(fake_broker)

    async def main() -> None:
        async with DhanRest(BASE, CLIENT, TOKEN, transport=httpx.MockTransport(broker)) as rest:
            with pytest.raises(ValueError, match="1000"):
                await rest.ltp({"NSE_FNO": range(1001)})

    asyncio.run(main())
    assert broker.requests == []


def test_option_chain_keys_strikes_by_paise() -> None:
    chain = run(lambda r: r.option_chain(13, "IDX_I", "2026-03-05"))
    assert chain.underlying_last_price_paise == 2_501_240
    assert list(chain.strikes) == [2_495_050, 2_500_000]
    row = chain.strikes[2_500_000]
    assert row.ce is not None and row.pe is not None
    assert row.ce.last_price_paise == 15235 and row.ce.delta == 0.53 and row.ce.vega == 12.2
    assert row.ce.top_bid_price_paise == 15230 and row.ce.top_ask_quantity == 675
    assert row.ce.implied_volatility == 11.9 and row.ce.security_id == 0
    assert row.pe.security_id == 52176 and row.pe.average_price_paise == 13050
    assert row.pe.previous_close_price_paise == 12000
    assert chain.strikes[2_495_050].pe is None


def test_expiry_list_returns_dates() -> None:
    assert run(lambda r: r.expiry_list(13, "IDX_I")) == [
        date(2026, 3, 5),
        date(2026, 3, 12),
        date(2026, 3, 26),
    ]


def test_intraday_charts_columns_to_paise_and_utc_ns() -> None:
    c = run(ENDPOINTS["intraday_charts"][0])
    assert c.ts_ns == (1772423100 * NS_PER_S, 1772423400 * NS_PER_S)
    assert c.open_paise == (2_500_150, 2_501_000) and c.close_paise == (2_501_000, 2_501_240)
    assert c.high_paise == (2_502_000, 2_501_525) and c.volume == (0, 0)
    assert c.open_interest == ()


def test_intraday_charts_refuses_an_undocumented_interval() -> None:
    with pytest.raises(ValueError, match="interval"):
        call(
            fake_broker,
            lambda r: r.intraday_charts(13, "IDX_I", "INDEX", 3, "2026-03-02", "2026-03-03"),
        )


# --------------------------------------------------------------------------- errors

NO_RETRY = RetryPolicy(attempts=1)


@pytest.mark.parametrize(
    ("status", "body", "cls", "code"),
    [
        (
            401,
            err("DH-901", "Client ID or access token invalid", "Invalid_Authentication"),
            BrokerAuthError,
            "DH-901",
        ),
        (401, data_err("807", "Access token expired"), BrokerAuthError, "807"),
        (401, data_err("808", "Authentication Failed"), BrokerAuthError, "808"),
        (401, data_err("809", "Access token invalid"), BrokerAuthError, "809"),
        (401, data_err("810", "Client ID invalid"), BrokerAuthError, "810"),
        (401, None, BrokerAuthError, ""),
        (429, err("DH-904", "Too many requests", "Rate_Limit"), BrokerRateLimited, "DH-904"),
        (400, err("DH-904", "Too many requests"), BrokerRateLimited, "DH-904"),
        (429, None, BrokerRateLimited, ""),
        (429, data_err("805", "Too many requests"), BrokerRateLimited, "805"),
        (500, err("DH-908", "Internal server error"), BrokerUnavailable, "DH-908"),
        (502, err("DH-909", "Network error"), BrokerUnavailable, "DH-909"),
        (500, err("DH-910", "Others"), BrokerUnavailable, "DH-910"),
        (503, "<html>Service Unavailable</html>", BrokerUnavailable, ""),
        (504, None, BrokerUnavailable, ""),
        (
            400,
            err("DH-905", "Missing required fields", "Input_Exception"),
            BrokerRejected,
            "DH-905",
        ),
        (400, err("DH-906", "Insufficient funds", "Order_Error"), BrokerRejected, "DH-906"),
        (400, err("DH-907", "No data", "Data_Error"), BrokerRejected, "DH-907"),
        (403, err("DH-911", "Invalid IP"), BrokerRejected, "DH-911"),
        (403, err("DH-902", "Not subscribed"), BrokerRejected, "DH-902"),
        (401, data_err("806", "Data APIs not subscribed"), BrokerRejected, "806"),
        (400, data_err("813", "Invalid SecurityId"), BrokerRejected, "813"),
        (404, None, BrokerRejected, ""),
        (200, data_err("806", "Data APIs not subscribed"), BrokerRejected, "806"),
    ],
)
def test_error_answers_translate_into_the_exception_tree(
    status: int, body: Any, cls: type[BrokerError], code: str
) -> None:
    exc, broker, _ = fails(
        lambda req: reply(status, body), lambda r: r.fund_limit(), retry=NO_RETRY
    )
    assert type(exc) is cls
    assert (exc.code, exc.http_status) == (code, status)
    assert str(exc).startswith(f"GET /fundlimit: HTTP {status}")
    if isinstance(body, dict) and "errorMessage" in body:
        assert body["errorMessage"] in str(exc)
    if isinstance(body, dict) and "data" in body:
        assert next(iter(body["data"].values())) in str(exc)


@pytest.mark.parametrize(
    "exc_type", [httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError]
)
def test_transport_errors_become_broker_unavailable_chained(
    exc_type: type[httpx.TransportError],
) -> None:
    def answer(req: httpx.Request) -> httpx.Response:
        raise exc_type("boom", request=req)

    exc, _, _ = fails(answer, lambda r: r.positions(), retry=NO_RETRY)
    assert type(exc) is BrokerUnavailable and exc.code == "NETWORK" and exc.http_status == 0
    assert isinstance(exc.__cause__, exc_type)


def test_timeouts_become_broker_unavailable() -> None:
    def answer(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("read timed out", request=req)

    exc, _, _ = fails(answer, lambda r: r.positions(), retry=NO_RETRY)
    assert type(exc) is BrokerUnavailable and exc.code == "TIMEOUT"


def test_non_json_success_is_unavailable() -> None:
    exc, _, _ = fails(
        lambda req: reply(200, "<html>proxy</html>"), lambda r: r.positions(), retry=NO_RETRY
    )
    assert type(exc) is BrokerUnavailable and exc.code == "BAD_RESPONSE"


# --------------------------------------------------------------------------- retries


def expected_delays(n: int) -> list[float]:
    """The first ``n`` backoff delays the default policy draws from the seeded RNG."""
    rng = random.Random(SEED)
    return [backoff_s(RetryPolicy(), i, rng) for i in range(n)]


def sequence(*answers: httpx.Response | Exception) -> Callable[[httpx.Request], httpx.Response]:
    """Answer the n-th request with the n-th item (the last one repeats)."""
    seen = [0]

    def answer(req: httpx.Request) -> httpx.Response:
        item = answers[min(seen[0], len(answers) - 1)]
        seen[0] += 1
        if isinstance(item, Exception):
            raise item
        return item

    return answer


def test_read_retries_429_then_succeeds_with_jittered_backoff_on_the_fake_clock() -> None:
    answer = sequence(
        reply(429, err("DH-904")), reply(429, err("DH-904")), reply(200, [ORDER_JSON])
    )
    orders, broker, t = call(answer, lambda r: r.order_book())
    assert len(orders) == 1 and broker.calls("GET", "/v2/orders") == 3
    d0, d1 = expected_delays(2)
    assert t.sleeps == [d0, d1]
    assert 0.25 <= d0 <= 0.5 and 0.5 <= d1 <= 1.0
    assert t.clock.now_ns() - START_NS == round(d0 * NS_PER_S) + round(d1 * NS_PER_S)


def test_read_retries_5xx_until_attempts_run_out() -> None:
    exc, broker, t = fails(lambda req: reply(503, err("DH-908")), lambda r: r.positions())
    assert type(exc) is BrokerUnavailable
    assert broker.calls("GET", "/v2/positions") == RetryPolicy().attempts == 4
    assert t.sleeps == expected_delays(3)


def test_read_retries_a_timeout() -> None:
    answer = sequence(httpx.ReadTimeout("slow"), reply(200, []))
    positions, broker, t = call(answer, lambda r: r.positions())
    assert positions == [] and len(broker.requests) == 2 and t.sleeps == expected_delays(1)


@pytest.mark.parametrize(
    ("status", "body"),
    [(401, err("DH-901")), (400, err("DH-905")), (401, data_err("807", "expired"))],
)
def test_auth_errors_and_rejections_are_never_retried(status: int, body: Any) -> None:
    _, broker, t = fails(lambda req: reply(status, body), lambda r: r.positions())
    assert len(broker.requests) == 1 and t.sleeps == []


def test_backoff_grows_to_the_cap_and_stays_within_jitter_bounds() -> None:
    policy = RetryPolicy(attempts=8, base_s=1.0, multiplier=2.0, cap_s=4.0)
    rng = random.Random(SEED)
    for i, ceiling in enumerate([1.0, 2.0, 4.0, 4.0, 4.0, 4.0]):
        assert ceiling / 2 <= backoff_s(policy, i, rng) <= ceiling


def test_retrier_never_repeats_an_order_in_doubt_even_if_asked() -> None:
    calls = []

    async def doubtful() -> None:
        calls.append(1)
        raise OrderInDoubt("in doubt", correlation_id=CID)

    t = FakeTime()
    retrier = Retrier(RetryPolicy(attempts=5), sleep=t.sleep, rng=random.Random(SEED))
    with pytest.raises(OrderInDoubt):
        asyncio.run(retrier.run(doubtful, retry_on=(BrokerUnavailable, OrderInDoubt)))
    assert calls == [1] and t.sleeps == []


def test_retry_policy_needs_one_attempt() -> None:
    with pytest.raises(ValueError, match="attempts"):
        Retrier(RetryPolicy(attempts=0))


# --------------------------------------------------------------------------- orders in doubt


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout("read timed out"),
        httpx.WriteTimeout("write timed out"),
        httpx.ConnectError("connection reset"),
        httpx.RemoteProtocolError("server disconnected"),
        reply(500, err("DH-908", "Internal server error")),
        reply(502, "<html>bad gateway</html>"),
        reply(200, {"status": "success"}),
    ],
)
def test_place_order_is_sent_once_and_raises_order_in_doubt(failure: Any) -> None:
    exc, broker, t = fails(
        sequence(failure, reply(200, {"orderId": "1", "orderStatus": "PENDING"})),
        lambda r: r.place_order(payload()),
    )
    assert isinstance(exc, OrderInDoubt) and isinstance(exc, BrokerUnavailable)
    assert exc.correlation_id == CID and CID in str(exc)
    assert broker.calls("POST", "/v2/orders") == 1 and t.sleeps == []


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (429, err("DH-904"), BrokerRateLimited),
        (400, err("DH-906"), BrokerRejected),
        (401, err("DH-901"), BrokerAuthError),
    ],
)
def test_place_order_definite_refusals_are_not_in_doubt(
    status: int, body: Any, cls: type[BrokerError]
) -> None:
    exc, broker, _ = fails(lambda req: reply(status, body), lambda r: r.place_order(payload()))
    assert type(exc) is cls and not isinstance(exc, OrderInDoubt)
    assert broker.calls("POST", "/v2/orders") == 1


def doubtful_post_then(
    lookup: Callable[[httpx.Request], httpx.Response],
) -> Callable[[httpx.Request], httpx.Response]:
    """POST /orders times out (the broker may have taken it); lookups answer with ``lookup``."""

    def answer(req: httpx.Request) -> httpx.Response:
        if req.method == "POST":
            raise httpx.ReadTimeout("read timed out", request=req)
        return lookup(req)

    return answer


def test_place_order_safely_returns_placed_on_a_clean_answer() -> None:
    outcome, broker, t = call(fake_broker, lambda r: r.place_order_safely(payload()))
    assert (outcome.kind, outcome.order_id, outcome.order_status) == (
        "placed",
        "112111182198",
        "PENDING",
    )
    assert len(broker.requests) == 1 and t.sleeps == []


def test_place_order_safely_finds_a_doubtful_order_by_correlation_id() -> None:
    outcome, broker, t = call(
        doubtful_post_then(lambda req: reply(200, ORDER_JSON)),
        lambda r: r.place_order_safely(payload()),
    )
    assert outcome.kind == "recovered" and outcome.correlation_id == CID
    assert outcome.order_id == "112111182198" and outcome.order_status == "TRADED"
    assert outcome.order is not None and outcome.order.filled_qty == 75
    assert broker.calls("POST", "/v2/orders") == 1
    assert broker.calls("GET", f"/v2/orders/external/{CID}") == 1
    assert t.sleeps == [ORDER_DOUBT_SETTLE_S]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, err("DH-907", "No order found", "Data_Error")),
        (400, err("DH-907", "No data", "Data_Error")),
        (404, err("DH-905", "Order not found")),
        (200, None),
        (200, []),
        (200, {}),
    ],
)
def test_place_order_safely_reports_not_found_without_resubmitting(status: int, body: Any) -> None:
    outcome, broker, _ = call(
        doubtful_post_then(lambda req: reply(status, body)),
        lambda r: r.place_order_safely(payload()),
    )
    assert outcome.kind == "not_found" and outcome.correlation_id == CID
    assert outcome.order is None and outcome.order_id == ""
    assert broker.calls("POST", "/v2/orders") == 1


def test_place_order_safely_retries_the_lookup_then_stays_in_doubt() -> None:
    exc, broker, t = fails(
        doubtful_post_then(lambda req: reply(503, err("DH-908"))),
        lambda r: r.place_order_safely(payload()),
    )
    assert isinstance(exc, OrderInDoubt) and exc.correlation_id == CID and exc.code == "DH-908"
    assert broker.calls("POST", "/v2/orders") == 1
    assert broker.calls("GET", f"/v2/orders/external/{CID}") == RetryPolicy().attempts
    assert t.sleeps == [ORDER_DOUBT_SETTLE_S, *expected_delays(3)]


def test_place_order_safely_recovers_after_a_failed_lookup_attempt() -> None:
    outcome, broker, _ = call(
        doubtful_post_then(sequence(reply(502, None), reply(200, ORDER_JSON))),
        lambda r: r.place_order_safely(payload()),
    )
    assert outcome.kind == "recovered" and broker.calls("POST", "/v2/orders") == 1


def test_an_html_404_on_lookup_does_not_count_as_not_found() -> None:
    exc, broker, _ = fails(
        doubtful_post_then(lambda req: reply(404, "<html>nope</html>")),
        lambda r: r.place_order_safely(payload()),
    )
    assert isinstance(exc, OrderInDoubt) and broker.calls("POST", "/v2/orders") == 1


def test_get_order_returns_none_when_not_found() -> None:
    assert call(lambda req: reply(404, err("DH-907")), lambda r: r.get_order("9"))[0] is None


def test_not_found_rule() -> None:
    assert is_order_not_found(400, "DH-907") and is_order_not_found(404, "DH-905")
    assert not is_order_not_found(404, "") and not is_order_not_found(400, "DH-905")


def test_place_order_safely_needs_a_correlation_id() -> None:
    p = payload() | {"correlationId": ""}
    with pytest.raises(ValueError, match="correlationId"):
        call(fake_broker, lambda r: r.place_order_safely(p))


# --------------------------------------------------------------------------- rate limits


def test_second_quote_in_the_same_second_waits_for_the_next_second() -> None:
    async def twice(rest: DhanRest) -> None:
        await rest.ltp({"IDX_I": [13]})
        await rest.ltp({"IDX_I": [13]})

    _, broker, t = call(fake_broker, twice)
    assert len(broker.requests) == 2 and t.sleeps == [1.0]


def test_option_chain_calls_are_spaced_three_seconds_apart() -> None:
    async def twice(rest: DhanRest) -> None:
        await rest.expiry_list(13, "IDX_I")
        await rest.option_chain(13, "IDX_I", "2026-03-05")

    _, _, t = call(fake_broker, twice)
    assert t.sleeps == [3.0]


def test_eleventh_order_in_a_second_waits_and_each_retry_takes_a_new_token() -> None:
    async def eleven(rest: DhanRest) -> None:
        for _ in range(11):
            await rest.place_order(payload())

    _, broker, t = call(fake_broker, eleven)
    assert broker.calls("POST", "/v2/orders") == 11 and t.sleeps == [1.0]


# --------------------------------------------------------------------------- token hygiene


def raising(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def answer(req: httpx.Request) -> httpx.Response:
        raise exc

    return answer


LEAKS: dict[str, tuple[Callable[[httpx.Request], httpx.Response], Callable[[DhanRest], Any]]] = {
    "error body echoes token": (
        lambda req: reply(400, err("DH-905", f"bad header access-token: {TOKEN}")),
        lambda r: r.positions(),
    ),
    "auth error echoes token": (
        lambda req: reply(401, err("DH-901", f"Invalid token {TOKEN}")),
        lambda r: r.fund_limit(),
    ),
    "data error echoes token": (
        lambda req: reply(401, data_err("807", f"token {TOKEN} expired")),
        lambda r: r.ltp({"IDX_I": [13]}),
    ),
    "html 502 echoes token": (
        lambda req: reply(502, f"<html>upstream {req.url}?access-token={TOKEN}</html>"),
        lambda r: r.order_book(),
    ),
    "token straddles the message cut": (
        lambda req: reply(503, "x" * 180 + TOKEN + "y" * 300),
        lambda r: r.positions(),
    ),
    "connect error url has token": (
        raising(httpx.ConnectError(f"cannot connect to {BASE}/orders?access-token={TOKEN}")),
        lambda r: r.positions(),
    ),
    "timeout text has token": (
        raising(httpx.ReadTimeout(f"timed out; headers access-token={TOKEN}")),
        lambda r: r.place_order(payload()),
    ),
    "order lookup after doubt": (
        doubtful_post_then(lambda req: reply(503, err("DH-908", f"retry {TOKEN}"))),
        lambda r: r.place_order_safely(payload()),
    ),
    "unexpected success shape": (
        lambda req: reply(
            200, {"data": {"NSE_FNO": {TOKEN: {"last_price": 1.0}}}, "status": "success"}
        ),
        lambda r: r.ltp({"NSE_FNO": [1]}),
    ),
}


@pytest.mark.parametrize("name", sorted(LEAKS))
def test_access_token_never_appears_in_errors_or_logs(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    answer, action = LEAKS[name]
    caplog.set_level(logging.DEBUG)
    exc, _, _ = fails(answer, action)
    assert not leaks(str(exc)) and not leaks(repr(exc))
    assert not leaks("".join(traceback.format_exception(exc)))
    assert caplog.records, "the client logs what it does"
    formatter = JsonFormatter("test")
    for record in caplog.records:
        assert not leaks(formatter.format(record))
        assert not leaks(repr(getattr(record, "fields", "")))


def leaks(text: str) -> bool:
    """Whether ``text`` holds the token or any 12-character piece of it."""
    return any(TOKEN[i : i + 12] in text for i in range(len(TOKEN) - 11))


def test_client_repr_hides_the_token() -> None:
    rest = DhanRest(BASE, CLIENT, TOKEN)
    assert TOKEN not in repr(rest) and CLIENT in repr(rest)
    asyncio.run(rest.aclose())


def test_numbers_sent_as_text_are_accepted() -> None:
    texty = ORDER_JSON | {
        "quantity": "75",
        "filledQty": "75",
        "price": "",
        "triggerPrice": None,
        "averageTradedPrice": "152.35",
    }
    order, _, _ = call(lambda req: reply(200, texty), lambda r: r.get_order("112111182198"))
    assert (order.quantity, order.filled_qty, order.price_paise) == (75, 75, 0)
    assert order.trigger_price_paise == 0 and order.average_traded_price_paise == 15235
