"""Async DhanHQ API v2 REST client: the one narrow interface in front of the broker's REST API.

Endpoints, field names and shapes follow ``reference/dhanhq-api.md`` §3 byte for byte. Results
are frozen msgspec structs with prices and money in exact integer paise (``*_paise``), quantities
in units, times as sent (IST text) and the broker's object under ``raw`` where it is useful.

Errors are translated at this boundary into ``shared.errors`` (:func:`error_class`):

    BrokerAuthError     DH-901, 807-810 (and a bare HTTP 401)   halt, never retried
    BrokerRateLimited   DH-904, 805, HTTP 429                   reads retried with backoff
    BrokerUnavailable   DH-908/909/910, 800, 5xx, timeouts,     reads retried with backoff
                        connection errors
      OrderInDoubt      any of the above during POST /orders    never repeated: look it up
    BrokerRejected      DH-902/903/905/906/907/911, 804, 806, 811-814, other 4xx
    BrokerUnavailable   a 2xx answer that is not JSON (code BAD_RESPONSE)
    BrokerError         a 2xx JSON answer of an unexpected shape (code BAD_RESPONSE)

Transport failures carry code ``TIMEOUT`` or ``NETWORK`` and ``http_status`` 0.

Reads (GET, and the POST snapshots: quote, option chain, charts) go through the retry helper;
order placement, modification and cancellation are sent once. Every request first takes a token
from its rate-limit buckets (``ratelimit.py``, :data:`BUCKETS`).

The access token is sent only in the ``access-token`` header; it is removed from every error
message this module builds, and a foreign exception whose text holds it is not chained.

Decisions on UNCONFIRMED points, each in one place:

- what a "no such order" answer looks like: :func:`is_order_not_found`;
- a 401 without a known code is an auth failure: :data:`HTTP_401_IS_AUTH`;
- which failures of POST /orders leave the order in doubt: :func:`DhanRest.place_order`;
- how long to let a doubtful order settle before looking it up: :data:`ORDER_DOUBT_SETTLE_S`;
- which rate-limit buckets each endpoint draws on: :data:`BUCKETS`; how a daily quota is
  counted: ``ratelimit.DAILY_LIMIT_RESETS_AT_IST_MIDNIGHT``.

Tolerances (no decision needed, documented here): a 2xx answer carrying an error body
(``errorCode`` or ``"status": "failed"``) is treated as that error; an order lookup answered
with an array takes its first element; numbers sent as text (``"5"``) are accepted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final, Literal, TypeVar
from urllib.parse import quote as urlquote

import httpx
import msgspec

from shared.clock import IST, Clock
from shared.config import EnvConfig
from shared.dhan.ratelimit import (
    DATA,
    DHAN_LIMITS,
    NON_TRADING,
    OPTION_CHAIN,
    ORDER,
    QUOTE,
    DhanLimits,
    Window,
)
from shared.dhan.retry import Retrier, RetryPolicy
from shared.errors import (
    BrokerAuthError,
    BrokerError,
    BrokerRateLimited,
    BrokerRejected,
    BrokerUnavailable,
)
from shared.types import NS_PER_S, SEGMENT_CODES, CorrelationId, Paise, SecurityId, rupees_to_paise

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- decisions

DEFAULT_TIMEOUT_S: Final = 10.0
"""Per-request timeout (connect, read, write, pool), seconds."""

ORDER_DOUBT_SETTLE_S: Final = 1.0
"""Seconds :meth:`DhanRest.place_order_safely` waits after a doubtful POST /orders before it
looks the order up, so a request still in flight inside the broker has time to land."""

HTTP_401_IS_AUTH: Final = True
"""UNCONFIRMED (§8 item 5): the HTTP status paired with each code. A 401 whose body carries no
known code is taken as an auth failure (halt) rather than an ordinary rejection."""

ORDER_NOT_FOUND_CODES: Final = frozenset({"DH-907"})


def is_order_not_found(http_status: int, code: str) -> bool:
    """Whether an error answer to an order lookup means "no such order".

    UNCONFIRMED: the docs do not show the answer of ``GET /orders/external/{correlation-id}``
    (or ``/orders/{order-id}``) for an unknown id. Chosen: DH-907 ("Data Error: bad parameters
    or no data") with any status, or HTTP 404 with a DhanHQ error body (a ``DH-`` code). A 2xx
    answer with an empty body, ``null``, ``{}`` or ``[]`` also means not found. Anything else
    (an HTML 404 from a proxy, a DH-905) stays an error: it does not prove the order is absent.
    """
    return code in ORDER_NOT_FOUND_CODES or (http_status == 404 and code.startswith("DH-"))


AUTH_CODES: Final = frozenset({"DH-901", "807", "808", "809", "810"})
RATE_LIMIT_CODES: Final = frozenset({"DH-904", "805"})
UNAVAILABLE_CODES: Final = frozenset({"DH-908", "DH-909", "DH-910", "800"})
REJECTED_CODES: Final = frozenset(
    "DH-902 DH-903 DH-905 DH-906 DH-907 DH-911 804 806 811 812 813 814".split()
)

BUCKETS: Final[Mapping[str, tuple[str, ...]]] = {
    "orders": (ORDER,),  # POST /orders, PUT/DELETE /orders/{id}
    "reports": (NON_TRADING,),  # order book, trades, positions, funds, profile
    "quote": (QUOTE,),  # POST /marketfeed/ltp|quote
    "option_chain": (OPTION_CHAIN, DATA),  # POST /optionchain, /optionchain/expirylist
    "charts": (DATA,),  # POST /charts/intraday
}
"""Rate-limit buckets per endpoint group. That the option chain also counts as a Data API and
that its expiry list shares the 1-per-3-s limit is UNCONFIRMED; both are the stricter reading."""

QUOTE_MAX_INSTRUMENTS: Final = 1000
CHART_INTERVALS_MIN: Final = frozenset({1, 5, 15, 25, 60})
CORRELATION_ID_RE: Final = re.compile(r"[A-Za-z0-9 _-]{1,30}")

Side = Literal["BUY", "SELL"]

# --------------------------------------------------------------------------- errors


class OrderInDoubt(BrokerUnavailable):
    """POST /orders failed in a way that leaves open whether the broker took the order.

    Raised on a timeout, a transport error, a 5xx / DH-908..910 answer or an unreadable 2xx
    answer. Never retried (``retry_safe``): look the order up by ``correlation_id`` instead.
    """

    retry_safe = False

    def __init__(
        self, message: str, *, correlation_id: str, code: str = "", http_status: int = 0
    ) -> None:
        super().__init__(message, code=code, http_status=http_status)
        self.correlation_id = correlation_id


def error_class(code: str, http_status: int) -> type[BrokerError]:
    """The exception class for a DhanHQ error code and HTTP status (a known code wins)."""
    if code in AUTH_CODES:
        return BrokerAuthError
    if code in RATE_LIMIT_CODES or http_status == 429:
        return BrokerRateLimited
    if code in UNAVAILABLE_CODES:
        return BrokerUnavailable
    if code in REJECTED_CODES:
        return BrokerRejected
    if http_status == 401 and HTTP_401_IS_AUTH:
        return BrokerAuthError
    if http_status >= 500:
        return BrokerUnavailable
    return BrokerRejected


def error_fields(body: Any) -> tuple[str, str] | None:
    """``(code, text)`` from a trading error body ``{errorType, errorCode, errorMessage}`` or a
    data error body ``{"data": {"806": "..."}, "status": "failed"}``; None for any other body."""
    if not isinstance(body, dict):
        return None
    if "errorCode" in body or "errorMessage" in body:
        code = str(body.get("errorCode") or "")
        text = " ".join(str(body.get(k) or "") for k in ("errorType", "errorMessage")).strip()
        return code, text
    if body.get("status") == "failed":
        data = body.get("data")
        if isinstance(data, dict) and data:
            code, text = next(iter(data.items()))
            return str(code), str(text)
        return "", str(data or "failed")
    return None


# --------------------------------------------------------------------------- results


def _field() -> Any:
    return msgspec.field(default_factory=dict)


class OrderAck(msgspec.Struct, frozen=True):
    """The answer to place / modify / cancel: ``{orderId, orderStatus}``."""

    order_id: str
    order_status: str


class Order(msgspec.Struct, frozen=True, kw_only=True):
    """An order as in the order book, by id or by correlation id (§3.5)."""

    order_id: str
    exchange_order_id: str
    correlation_id: str
    order_status: str
    transaction_type: str
    exchange_segment: str
    product_type: str
    order_type: str
    validity: str
    trading_symbol: str
    security_id: SecurityId
    quantity: int
    disclosed_quantity: int
    filled_qty: int
    remaining_quantity: int
    price_paise: Paise
    trigger_price_paise: Paise
    average_traded_price_paise: Paise
    leg_name: str
    create_time: str
    update_time: str
    exchange_time: str
    drv_expiry_date: str
    drv_option_type: str
    drv_strike_price_paise: Paise
    oms_error_code: str
    oms_error_description: str
    algo_id: str
    raw: dict[str, Any] = _field()


class Trade(msgspec.Struct, frozen=True, kw_only=True):
    """One fill from the trade book, GET /trades (§3.6)."""

    order_id: str
    exchange_order_id: str
    exchange_trade_id: str
    transaction_type: str
    exchange_segment: str
    product_type: str
    order_type: str
    trading_symbol: str
    security_id: SecurityId
    traded_quantity: int
    traded_price_paise: Paise
    create_time: str
    update_time: str
    exchange_time: str
    drv_expiry_date: str
    drv_option_type: str
    drv_strike_price_paise: Paise
    raw: dict[str, Any] = _field()


class Position(msgspec.Struct, frozen=True, kw_only=True):
    """One row of GET /positions (§3.7); ``net_qty`` = buy_qty - sell_qty."""

    trading_symbol: str
    security_id: SecurityId
    position_type: str
    exchange_segment: str
    product_type: str
    buy_avg_paise: Paise
    buy_qty: int
    sell_avg_paise: Paise
    sell_qty: int
    net_qty: int
    cost_price_paise: Paise
    realized_profit_paise: Paise
    unrealized_profit_paise: Paise
    multiplier: int
    day_buy_qty: int
    day_sell_qty: int
    day_buy_value_paise: Paise
    day_sell_value_paise: Paise
    carry_forward_buy_qty: int
    carry_forward_sell_qty: int
    drv_expiry_date: str
    drv_option_type: str
    drv_strike_price_paise: Paise
    raw: dict[str, Any] = _field()


class FundLimit(msgspec.Struct, frozen=True, kw_only=True):
    """GET /fundlimit (§3.9). ``available_balance_paise`` is read from the misspelt
    ``availabelBalance`` (falling back to ``availableBalance`` should DhanHQ ever fix it)."""

    available_balance_paise: Paise
    sod_limit_paise: Paise
    collateral_amount_paise: Paise
    receivable_amount_paise: Paise
    utilized_amount_paise: Paise
    blocked_payout_amount_paise: Paise
    withdrawable_balance_paise: Paise
    raw: dict[str, Any] = _field()


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    """GET /profile: account and token health, values as sent."""

    dhan_client_id: str
    token_validity: str
    active_segment: str
    ddpi: str
    mtf: str
    data_plan: str
    data_validity: str
    raw: dict[str, Any] = _field()


class DepthLevel(msgspec.Struct, frozen=True):
    price_paise: Paise
    quantity: int
    orders: int


class Quote(msgspec.Struct, frozen=True, kw_only=True):
    """One instrument of POST /marketfeed/quote (§3.10); ``bids``/``asks`` best first."""

    last_price_paise: Paise
    last_quantity: int
    last_trade_time: str
    average_price_paise: Paise
    volume: int
    oi: int
    oi_day_high: int
    oi_day_low: int
    buy_quantity: int
    sell_quantity: int
    net_change_paise: Paise
    lower_circuit_limit_paise: Paise
    upper_circuit_limit_paise: Paise
    open_paise: Paise
    high_paise: Paise
    low_paise: Paise
    close_paise: Paise
    bids: tuple[DepthLevel, ...]
    asks: tuple[DepthLevel, ...]
    raw: dict[str, Any] = _field()


class OptionLeg(msgspec.Struct, frozen=True, kw_only=True):
    """One side (``ce`` or ``pe``) of a strike in the option chain (§3.11)."""

    security_id: SecurityId
    last_price_paise: Paise
    average_price_paise: Paise
    previous_close_price_paise: Paise
    oi: int
    previous_oi: int
    volume: int
    previous_volume: int
    implied_volatility: float
    delta: float
    theta: float
    gamma: float
    vega: float
    top_bid_price_paise: Paise
    top_bid_quantity: int
    top_ask_price_paise: Paise
    top_ask_quantity: int
    raw: dict[str, Any] = _field()


class ChainStrike(msgspec.Struct, frozen=True):
    strike_paise: Paise
    ce: OptionLeg | None
    pe: OptionLeg | None


class OptionChain(msgspec.Struct, frozen=True, kw_only=True):
    """POST /optionchain: ``strikes`` keyed by strike in paise (``"25000.000000"`` -> 2500000)."""

    underlying_last_price_paise: Paise
    strikes: dict[int, ChainStrike]
    raw: dict[str, Any] = _field()


class Candles(msgspec.Struct, frozen=True, kw_only=True):
    """POST /charts/intraday, column-oriented as sent; ``ts_ns`` is bar start, UTC ns."""

    ts_ns: tuple[int, ...]
    open_paise: tuple[Paise, ...]
    high_paise: tuple[Paise, ...]
    low_paise: tuple[Paise, ...]
    close_paise: tuple[Paise, ...]
    volume: tuple[int, ...]
    open_interest: tuple[int, ...]


class PlaceOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What :meth:`DhanRest.place_order_safely` established about one order.

    ``placed``     the POST answered; ``order_id``/``order_status`` from the answer.
    ``recovered``  the POST was in doubt and the broker has the order: ``order`` is it.
    ``not_found``  the POST was in doubt and the broker has no order with this correlation id
                   (after :data:`ORDER_DOUBT_SETTLE_S`). Not resubmitted: the caller decides.
    """

    kind: Literal["placed", "recovered", "not_found"]
    correlation_id: str
    order_id: str = ""
    order_status: str = ""
    order: Order | None = None


# --------------------------------------------------------------------------- parsing


def _text(v: Any) -> str:
    return "" if v is None else str(v)


def _int(v: Any) -> int:
    if v is None or v == "":
        return 0
    if isinstance(v, int):
        return v
    return int(Decimal(str(v)))


def _float(v: Any) -> float:
    return 0.0 if v is None or v == "" else float(v)


def _paise(v: Any) -> Paise:
    return 0 if v is None or v == "" else rupees_to_paise(v)


_CONVERT: Final[Mapping[Any, Callable[[Any], Any]]] = {
    str: _text,
    int: _int,
    float: _float,
    SecurityId: _int,
}
_Plan = tuple[tuple[str, str, Callable[[Any], Any]], ...]
S = TypeVar("S", bound=msgspec.Struct)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _plan(
    cls: type[msgspec.Struct],
    *,
    snake: bool = False,
    keys: Mapping[str, str] = {},
    nested: Iterable[str] = (),
) -> _Plan:
    """Field -> (JSON key, converter). ``x_paise`` reads key ``x`` (camelCased unless ``snake``)
    as rupees; ``keys`` overrides a key; ``nested`` fields are built by the caller."""
    skip = {"raw", *nested}
    out = []
    for f in msgspec.structs.fields(cls):
        if f.name in skip:
            continue
        base = f.name.removesuffix("_paise")
        key = keys.get(f.name, base if snake else _camel(base))
        out.append((f.name, key, _paise if f.name != base else _CONVERT[f.type]))
    return tuple(out)


def _build(cls: type[S], plan: _Plan, obj: Any, **given: Any) -> S:
    if not isinstance(obj, dict):
        raise TypeError(f"expected a JSON object, got {type(obj).__name__}")
    values = {name: conv(obj.get(key)) for name, key, conv in plan}
    values.update(given)
    if "raw" in cls.__struct_fields__:
        values["raw"] = obj
    return cls(**values)


_ORDER = _plan(Order)
_TRADE = _plan(Trade)
_POSITION = _plan(Position)
_FUNDS = _plan(
    FundLimit,
    keys={"receivable_amount_paise": "receiveableAmount"},
    nested=("available_balance_paise",),
)
_PROFILE = _plan(Profile)
_DEPTH = _plan(DepthLevel, snake=True)
_QUOTE = _plan(
    Quote,
    snake=True,
    nested=("open_paise", "high_paise", "low_paise", "close_paise", "bids", "asks"),
)
_LEG = _plan(OptionLeg, snake=True, nested=("delta", "theta", "gamma", "vega"))


def _ack(body: Any) -> OrderAck:
    if not isinstance(body, dict) or not body.get("orderId"):
        raise ValueError("no orderId in the answer")
    return OrderAck(str(body["orderId"]), _text(body.get("orderStatus")))


def _maybe_order(body: Any) -> Order | None:
    if isinstance(body, list):
        if len(body) > 1:
            log.warning("several orders for one id", extra={"fields": {"count": len(body)}})
        body = body[0] if body else None
    return _build(Order, _ORDER, body) if body else None


def _funds(body: Any) -> FundLimit:
    balance = body.get("availabelBalance", body.get("availableBalance"))
    if balance is None:
        raise KeyError("availabelBalance")
    return _build(FundLimit, _FUNDS, body, available_balance_paise=_paise(balance))


def _quote(obj: Any) -> Quote:
    ohlc = obj.get("ohlc") or {}
    depth = obj.get("depth") or {}
    return _build(
        Quote,
        _QUOTE,
        obj,
        open_paise=_paise(ohlc.get("open")),
        high_paise=_paise(ohlc.get("high")),
        low_paise=_paise(ohlc.get("low")),
        close_paise=_paise(ohlc.get("close")),
        bids=tuple(_build(DepthLevel, _DEPTH, lv) for lv in depth.get("buy") or ()),
        asks=tuple(_build(DepthLevel, _DEPTH, lv) for lv in depth.get("sell") or ()),
    )


def _leg(obj: Any) -> OptionLeg | None:
    if not obj:
        return None
    greeks = obj.get("greeks") or {}
    return _build(
        OptionLeg,
        _LEG,
        obj,
        **{g: _float(greeks.get(g)) for g in ("delta", "theta", "gamma", "vega")},
    )


def _chain(body: Any) -> OptionChain:
    data = body["data"]
    strikes = {}
    for key, row in (data.get("oc") or {}).items():
        strike = rupees_to_paise(key)
        strikes[strike] = ChainStrike(strike, _leg(row.get("ce")), _leg(row.get("pe")))
    return OptionChain(
        underlying_last_price_paise=_paise(data.get("last_price")),
        strikes=dict(sorted(strikes.items())),
        raw=data,
    )


def _candles(body: Any) -> Candles:
    cols = body["data"] if isinstance(body.get("data"), dict) else body

    def col(name: str, conv: Callable[[Any], int]) -> tuple[int, ...]:
        return tuple(conv(v) for v in cols.get(name) or ())

    return Candles(
        ts_ns=col("timestamp", lambda t: int(Decimal(str(t)) * NS_PER_S)),
        open_paise=col("open", _paise),
        high_paise=col("high", _paise),
        low_paise=col("low", _paise),
        close_paise=col("close", _paise),
        volume=col("volume", _int),
        open_interest=col("open_interest", _int),
    )


def _snapshot(body: Any, conv: Callable[[Any], Any]) -> dict[tuple[str, SecurityId], Any]:
    out = {}
    for segment, by_id in body["data"].items():
        for sid, obj in by_id.items():
            out[(segment, SecurityId(int(sid)))] = conv(obj)
    return out


# --------------------------------------------------------------------------- requests


def order_payload(
    client_id: str,
    correlation_id: CorrelationId | str,
    side: Side,
    segment: str,
    security_id: SecurityId | int,
    quantity: int,
    order_type: Literal["MARKET", "LIMIT"] = "MARKET",
    price_paise: Paise = 0,
    product: str = "INTRADAY",
    validity: Literal["DAY", "IOC"] = "DAY",
) -> dict[str, Any]:
    """The POST /orders body (§3.3): exactly the documented keys, ``price`` in rupees (0 for
    MARKET). Only MARKET and LIMIT orders; raises ValueError on a malformed request."""
    if not CORRELATION_ID_RE.fullmatch(correlation_id):
        raise ValueError(f"correlationId must be 1-30 chars of [A-Za-z0-9 _-]: {correlation_id!r}")
    if side not in ("BUY", "SELL"):
        raise ValueError(f"side must be BUY or SELL, got {side!r}")
    if segment not in SEGMENT_CODES:
        raise ValueError(f"unknown exchange segment {segment!r}")
    if quantity <= 0:
        raise ValueError(f"quantity must be positive, got {quantity}")
    if order_type == "MARKET" and price_paise != 0:
        raise ValueError("a MARKET order carries price 0")
    if order_type == "LIMIT" and price_paise <= 0:
        raise ValueError("a LIMIT order needs a positive price")
    if order_type not in ("MARKET", "LIMIT") or validity not in ("DAY", "IOC"):
        raise ValueError(f"unsupported order type / validity {order_type!r} / {validity!r}")
    return {
        "dhanClientId": client_id,
        "correlationId": correlation_id,
        "transactionType": side,
        "exchangeSegment": segment,
        "productType": product,
        "orderType": order_type,
        "validity": validity,
        "securityId": str(int(security_id)),
        "quantity": int(quantity),
        "price": price_paise / 100,
    }


def _instrument_body(instruments: Mapping[str, Iterable[int]]) -> dict[str, list[int]]:
    body = {seg: [int(i) for i in ids] for seg, ids in instruments.items()}
    unknown = [seg for seg in body if seg not in SEGMENT_CODES]
    if unknown:
        raise ValueError(f"unknown exchange segments {unknown}")
    if sum(len(ids) for ids in body.values()) > QUOTE_MAX_INSTRUMENTS:
        raise ValueError(f"at most {QUOTE_MAX_INSTRUMENTS} instruments per quote request")
    return body


def _date_text(v: date | datetime | str) -> str:
    """``YYYY-MM-DD`` for a date, ``YYYY-MM-DD HH:MM:SS`` IST for a datetime (naive = IST)."""
    if isinstance(v, datetime):
        return (v.astimezone(IST) if v.tzinfo else v).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, date):
        return v.isoformat()
    return v


# --------------------------------------------------------------------------- client

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()
_UNREADABLE = object()
T = TypeVar("T")


class DhanRest:
    """DhanHQ v2 REST over one ``httpx.AsyncClient``; pass ``transport`` to fake the broker.

    ``clock`` and ``sleep`` drive the rate limiters and the retry backoff; ``rng`` seeds the
    backoff jitter; ``limits`` replaces the rate-limit table (e.g. a share of the account's
    budget per process). Use as ``async with DhanRest(...) as rest:`` or call :meth:`aclose`.
    """

    def __init__(
        self,
        base_url: str,
        client_id: str,
        access_token: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        limits: Mapping[str, tuple[Window, ...]] = DHAN_LIMITS,
    ) -> None:
        self.client_id = client_id
        self._token = access_token
        self._clock = clock or Clock()
        self._sleep = sleep or asyncio.sleep
        self.limits = DhanLimits(clock=self._clock, sleep=self._sleep, windows=limits)
        self._retrier = Retrier(retry, sleep=self._sleep, rng=rng)
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={
                "access-token": access_token,
                "client-id": client_id,
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            transport=transport,
            timeout=httpx.Timeout(timeout_s),
        )

    @classmethod
    def from_env(cls, env: EnvConfig, **kwargs: Any) -> DhanRest:
        return cls(env.dhan_rest_url, env.dhan_client_id, env.access_token, **kwargs)

    def __repr__(self) -> str:
        return f"DhanRest(base_url={str(self._http.base_url)!r}, client_id={self.client_id!r})"

    async def __aenter__(self) -> DhanRest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ----------------------------------------------------------------- orders

    async def place_order(self, payload: Mapping[str, Any]) -> OrderAck:
        """POST /orders once (build ``payload`` with :func:`order_payload`).

        BrokerAuthError / BrokerRateLimited / BrokerRejected mean the broker did not take the
        order. Any failure that leaves it open (timeout, transport error, 5xx, DH-908..910,
        an unreadable 2xx) raises :class:`OrderInDoubt` with the correlation id. Never retried.
        """
        cid = _text(payload.get("correlationId"))
        try:
            body = await self._send("POST", "/orders", BUCKETS["orders"], payload)
            return _ack(body)
        except BrokerUnavailable as exc:
            raise OrderInDoubt(
                f"order {cid!r} in doubt: {exc}",
                correlation_id=cid,
                code=exc.code,
                http_status=exc.http_status,
            ) from exc
        except ValueError as exc:
            raise OrderInDoubt(
                f"order {cid!r} in doubt: POST /orders answered without an orderId",
                correlation_id=cid,
                code="BAD_RESPONSE",
            ) from exc

    async def place_order_safely(
        self, payload: Mapping[str, Any], *, settle_s: float = ORDER_DOUBT_SETTLE_S
    ) -> PlaceOutcome:
        """Place an order; if that is in doubt, ask the broker by correlation id instead of
        sending it again. See :class:`PlaceOutcome`. The lookup is retried like every read;
        if it still fails, :class:`OrderInDoubt` is raised (the order is still in doubt) except
        for :class:`BrokerAuthError`, which propagates so trading halts; after a doubt that too
        leaves the order unknown, and start-up reconciliation asks the broker again.
        """
        cid = _text(payload.get("correlationId"))
        if not cid:
            raise ValueError("place_order_safely needs a payload with a correlationId")
        try:
            ack = await self.place_order(payload)
            return PlaceOutcome(
                kind="placed",
                correlation_id=cid,
                order_id=ack.order_id,
                order_status=ack.order_status,
            )
        except OrderInDoubt as doubt:
            log.warning(
                "order in doubt; looking it up",
                extra={
                    "fields": {
                        "correlation_id": cid,
                        "code": doubt.code,
                        "http_status": doubt.http_status,
                    }
                },
            )
        await self._sleep(settle_s)
        try:
            order = await self.get_order_by_correlation(cid)
        except BrokerAuthError:
            raise
        except BrokerError as exc:
            raise OrderInDoubt(
                f"order {cid!r} in doubt: lookup failed: {exc}",
                correlation_id=cid,
                code=exc.code,
                http_status=exc.http_status,
            ) from exc
        if order is None:
            return PlaceOutcome(kind="not_found", correlation_id=cid)
        return PlaceOutcome(
            kind="recovered",
            correlation_id=cid,
            order_id=order.order_id,
            order_status=order.order_status,
            order=order,
        )

    async def modify_order(
        self,
        order_id: str,
        *,
        quantity: int,
        order_type: str = "LIMIT",
        price_paise: Paise = 0,
        trigger_price_paise: Paise = 0,
        disclosed_quantity: int = 0,
        validity: str = "DAY",
        leg_name: str | None = None,
    ) -> OrderAck:
        """PUT /orders/{order-id} once. ``quantity`` is the originally placed quantity (§3.4);
        ``legName`` is sent only when given (BO/CO)."""
        body: dict[str, Any] = {
            "dhanClientId": self.client_id,
            "orderId": order_id,
            "orderType": order_type,
        }
        if leg_name is not None:
            body["legName"] = leg_name
        body |= {
            "quantity": int(quantity),
            "price": price_paise / 100,
            "disclosedQuantity": int(disclosed_quantity),
            "triggerPrice": trigger_price_paise / 100,
            "validity": validity,
        }
        answer = await self._send("PUT", f"/orders/{_seg(order_id)}", BUCKETS["orders"], body)
        return self._parse("PUT /orders", _ack, answer)

    async def cancel_order(self, order_id: str) -> OrderAck:
        """DELETE /orders/{order-id} once; the broker answers 202 ``{orderId, orderStatus}``."""
        answer = await self._send("DELETE", f"/orders/{_seg(order_id)}", BUCKETS["orders"])
        if not answer:
            return OrderAck(order_id, "")
        return self._parse("DELETE /orders", _ack, answer)

    async def get_order(self, order_id: str) -> Order | None:
        """GET /orders/{order-id}; None when :func:`is_order_not_found`."""
        return await self._lookup(f"/orders/{_seg(order_id)}")

    async def get_order_by_correlation(self, correlation_id: str) -> Order | None:
        """GET /orders/external/{correlation-id}; None when :func:`is_order_not_found`."""
        return await self._lookup(f"/orders/external/{_seg(correlation_id)}")

    async def order_book(self) -> list[Order]:
        body = await self._read("GET", "/orders", BUCKETS["reports"])
        return self._parse(
            "GET /orders", lambda b: [_build(Order, _ORDER, o) for o in b or ()], body
        )

    async def trade_book(self) -> list[Trade]:
        body = await self._read("GET", "/trades", BUCKETS["reports"])
        return self._parse(
            "GET /trades", lambda b: [_build(Trade, _TRADE, t) for t in b or ()], body
        )

    async def positions(self) -> list[Position]:
        body = await self._read("GET", "/positions", BUCKETS["reports"])
        return self._parse(
            "GET /positions", lambda b: [_build(Position, _POSITION, p) for p in b or ()], body
        )

    async def fund_limit(self) -> FundLimit:
        body = await self._read("GET", "/fundlimit", BUCKETS["reports"])
        return self._parse("GET /fundlimit", _funds, body)

    async def profile(self) -> Profile:
        body = await self._read("GET", "/profile", BUCKETS["reports"])
        return self._parse("GET /profile", lambda b: _build(Profile, _PROFILE, b), body)

    # ----------------------------------------------------------------- market data

    async def ltp(
        self, instruments: Mapping[str, Iterable[int]]
    ) -> dict[tuple[str, SecurityId], Paise]:
        """POST /marketfeed/ltp ``{segment: [security ids]}`` -> last price in paise per
        ``(segment, security_id)``."""
        body = await self._read(
            "POST", "/marketfeed/ltp", BUCKETS["quote"], _instrument_body(instruments)
        )
        return self._parse(
            "POST /marketfeed/ltp", lambda b: _snapshot(b, lambda o: _paise(o["last_price"])), body
        )

    async def quote(
        self, instruments: Mapping[str, Iterable[int]]
    ) -> dict[tuple[str, SecurityId], Quote]:
        """POST /marketfeed/quote ``{segment: [security ids]}`` -> :class:`Quote` per instrument."""
        body = await self._read(
            "POST", "/marketfeed/quote", BUCKETS["quote"], _instrument_body(instruments)
        )
        return self._parse("POST /marketfeed/quote", lambda b: _snapshot(b, _quote), body)

    async def option_chain(
        self, underlying_scrip: int, underlying_seg: str, expiry: date | str
    ) -> OptionChain:
        """POST /optionchain for one underlying (e.g. 13, ``IDX_I``) and expiry."""
        req = {
            "UnderlyingScrip": int(underlying_scrip),
            "UnderlyingSeg": underlying_seg,
            "Expiry": _date_text(expiry),
        }
        body = await self._read("POST", "/optionchain", BUCKETS["option_chain"], req)
        return self._parse("POST /optionchain", _chain, body)

    async def expiry_list(self, underlying_scrip: int, underlying_seg: str) -> list[date]:
        """POST /optionchain/expirylist -> expiries, ascending as sent."""
        req = {"UnderlyingScrip": int(underlying_scrip), "UnderlyingSeg": underlying_seg}
        body = await self._read("POST", "/optionchain/expirylist", BUCKETS["option_chain"], req)
        return self._parse(
            "POST /optionchain/expirylist",
            lambda b: [date.fromisoformat(d) for d in b["data"]],
            body,
        )

    async def intraday_charts(
        self,
        security_id: SecurityId | int,
        segment: str,
        instrument: str,
        interval: int,
        from_date: date | datetime | str,
        to_date: date | datetime | str,
        *,
        oi: bool = False,
    ) -> Candles:
        """POST /charts/intraday: ``interval`` minutes (1, 5, 15, 25, 60); dates as
        ``YYYY-MM-DD`` or IST ``YYYY-MM-DD HH:MM:SS``; at most 90 days per call."""
        if interval not in CHART_INTERVALS_MIN:
            raise ValueError(
                f"interval must be one of {sorted(CHART_INTERVALS_MIN)}, got {interval}"
            )
        req = {
            "securityId": str(int(security_id)),
            "exchangeSegment": segment,
            "instrument": instrument,
            "interval": int(interval),
            "oi": oi,
            "fromDate": _date_text(from_date),
            "toDate": _date_text(to_date),
        }
        body = await self._read("POST", "/charts/intraday", BUCKETS["charts"], req)
        return self._parse("POST /charts/intraday", _candles, body)

    # ----------------------------------------------------------------- plumbing

    async def _lookup(self, path: str) -> Order | None:
        try:
            body = await self._read("GET", path, BUCKETS["reports"])
        except BrokerRejected as exc:
            if is_order_not_found(exc.http_status, exc.code):
                return None
            raise
        return self._parse(f"GET {path}", _maybe_order, body)

    async def _read(
        self, method: str, path: str, buckets: tuple[str, ...], body: Any = None
    ) -> Any:
        return await self._retrier.run(
            lambda: self._send(method, path, buckets, body), what=f"{method} {path}"
        )

    async def _send(
        self, method: str, path: str, buckets: tuple[str, ...], body: Any = None
    ) -> Any:
        """One request after the rate limiters; the decoded JSON body (None when empty) or
        a translated exception."""
        waited_s = await self.limits.acquire(*buckets)
        content = None if body is None else _ENCODER.encode(body)
        start = self._clock.now_ns()
        try:
            resp = await self._http.request(method, path, content=content)
        except httpx.HTTPError as exc:
            kind = "TIMEOUT" if isinstance(exc, httpx.TimeoutException) else "NETWORK"
            err = BrokerUnavailable(
                f"{method} {path}: {kind.lower()}: {type(exc).__name__}: {self._redact(str(exc))}",
                code=kind,
            )
            raise err from (None if self._holds_token(exc) else exc)
        parsed: Any = None
        if resp.content:
            try:
                parsed = _DECODER.decode(resp.content)
            except msgspec.DecodeError:
                parsed = _UNREADABLE
        fields = error_fields(parsed)
        code, text = fields or ("", "")
        log.debug(
            "dhan request",
            extra={
                "fields": {
                    "method": method,
                    "path": path,
                    "status": resp.status_code,
                    "code": code,
                    "elapsed_ms": (self._clock.now_ns() - start) // 1_000_000,
                    "waited_s": waited_s,
                }
            },
        )
        if resp.is_success and fields is None:
            if parsed is _UNREADABLE:
                raise BrokerUnavailable(
                    f"{method} {path}: HTTP {resp.status_code} with a non-JSON body",
                    code="BAD_RESPONSE",
                    http_status=resp.status_code,
                )
            return parsed
        if fields is None:
            text = resp.text  # redacted whole before the message is cut to length
        message = f"{method} {path}: HTTP {resp.status_code} {code} {self._redact(text)}"
        cls = error_class(code, resp.status_code)
        raise cls(" ".join(message.split())[:400], code=code, http_status=resp.status_code)

    def _parse(self, what: str, build: Callable[[Any], T], body: Any) -> T:
        try:
            return build(body)
        except (KeyError, TypeError, ValueError, ArithmeticError, AttributeError) as exc:
            err = BrokerError(
                f"{what}: unexpected answer: {type(exc).__name__}: {self._redact(str(exc))}",
                code="BAD_RESPONSE",
            )
            raise err from (None if self._holds_token(exc) else exc)

    def _secret_forms(self) -> list[str]:
        """The token as given and stripped (a CRLF .env leaves '\r' that httpx echoes escaped)."""
        forms = {self._token, self._token.strip()}
        return sorted((f for f in forms if len(f) >= 4), key=len, reverse=True)

    def _redact(self, text: str) -> str:
        for f in self._secret_forms():
            text = text.replace(f, "***")
        return text

    def _holds_token(self, exc: BaseException) -> bool:
        return any(f in str(exc) or f in repr(exc.args) for f in self._secret_forms())


def _seg(value: str) -> str:
    """One URL path segment, percent-encoded (correlation ids may hold spaces)."""
    return urlquote(str(value), safe="")
