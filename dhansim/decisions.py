"""The simulator's answers to the reference's UNCONFIRMED points, one constant each.

``reference/dhanhq-api.md`` is the specification; where it leaves a behaviour open (its §8 and
the rows marked UNCONFIRMED) the simulator picks one answer here, and the package docstring
lists them. Change a behaviour by changing its constant, never by scattering literals.
"""

from __future__ import annotations

# ------------------------------------------------------------------------------ REST errors

ERRORS: dict[str, tuple[str, int, str]] = {
    "DH-901": (
        "Invalid_Authentication",
        401,
        "Client ID or user generated access token is invalid or expired.",
    ),
    "DH-902": ("Invalid_Access", 403, "User has not subscribed to Data APIs or Trading APIs."),
    "DH-903": ("User_Account", 403, "User account error."),
    "DH-904": (
        "Rate_Limit",
        429,
        "Too many requests on server from single user breaching rate limits. "
        "Try throttling API calls.",
    ),
    "DH-905": ("Input_Exception", 400, "Missing required fields, bad values for parameters etc."),
    "DH-906": ("Order_Error", 400, "Incorrect request for order and cannot be processed."),
    "DH-907": ("Data_Error", 400, "Unable to fetch data due to incorrect parameters or no data."),
    "DH-908": ("Internal_Server_Error", 500, "Server was not able to process the request."),
    "DH-909": ("Network_Error", 502, "Network error: the backend could not be reached."),
    "DH-910": ("Others", 500, "Error originating from other reasons."),
}
"""errorCode → (errorType, HTTP status, default errorMessage) of the trading error body
``{"errorType", "errorCode", "errorMessage"}`` (reference §4.1/§4.2). The HTTP statuses are the
reference's "likely" column (UNCONFIRMED, §8 item 5). The errorType spellings with underscores
(``Invalid_Authentication``) and the messages are paraphrases from third-party captures — the
reference lists only the codes and meanings; clients must key on ``errorCode``."""

DATA_ERROR_HTTP_STATUS = 400
"""Data-API validation errors (option chain, market quote, charts: invalid expiry 811, invalid
security id 813, too many instruments 804, invalid request 814) answer with this status and the
data-API body ``{"data": {"<code>": "<message>"}, "status": "failed"}`` (reference §4.1 calls the
shape THIRD-PARTY). Auth failures (DH-901), rate limits (DH-904) and injected 5xx (DH-908) use
the trading body on every endpoint, data APIs included, so a client needs to read both shapes."""

NOT_FOUND_ERROR = "DH-907"
"""An unknown order id or correlation id (``GET /orders/{id}``, ``/orders/external/{cid}``,
``/trades/{id}``, ``PUT``/``DELETE`` of an unknown order) answers DH-907 (HTTP 400), "no data"."""

NOT_MODIFIABLE_ERROR = "DH-906"
"""Modifying or cancelling an order that is no longer TRANSIT/PENDING, or a 26th modification,
answers DH-906 (HTTP 400); nothing changes."""

CLIENT_ID_HEADER_REQUIRED_PREFIXES = ("/v2/marketfeed/", "/v2/optionchain")
"""Where the ``client-id`` header is mandatory (docs: Market Quote and Option Chain). Elsewhere
the header is optional, but when present it must equal the configured client id, like
``access-token`` everywhere; otherwise DH-901."""

BODY_CLIENT_ID_MISMATCH_ERROR = "DH-905"
"""A ``dhanClientId`` body key is optional and ignored when it equals the configured client id
(the SDK injects it into every POST/PUT, including quote and chart bodies); a different value
answers DH-905 (HTTP 400)."""

# ------------------------------------------------------------------------------ orders

PLACE_RESPONSE_STATUS = "TRANSIT"
"""``POST /orders`` answers ``{"orderId", "orderStatus": "TRANSIT"}`` (SDK fixture; the docs
example shows PENDING). The order then moves to PENDING — or REJECTED — on the next event-loop
turn, and to TRADED at the next tick of its instrument."""

CORRELATION_ID_PATTERN = r"[A-Za-z0-9 _-]{1,30}"
"""Accepted ``correlationId`` (reference §3.3: max 30 chars, charset per a third-party reference,
UNCONFIRMED). Anything else answers DH-905 (HTTP 400) and no order is created. Duplicates are
accepted: the broker does not deduplicate, the client must."""

CORRELATION_LOOKUP_PICKS_LATEST = True
"""``GET /orders/external/{cid}`` returns one object (docs). With duplicate correlation ids the
latest-placed order with that id is returned."""

MAX_MODIFICATIONS = 25
"""Per order (reference §3.4)."""

ORDER_BOOK_NEWEST_FIRST = False
"""``GET /orders``, ``GET /trades`` list in placement / execution order, oldest first."""

REJECT_DEFAULT_REASON = "RMS:Rejected by simulator fault injection"
"""``omsErrorDescription`` of an order rejected by the ``reject_orders`` fault without a reason."""

REJECT_OMS_ERROR_CODE = "16283"
"""``omsErrorCode`` on REJECTED orders (a numeric string; real values unknown)."""

MARKET_ORDERS_STAY_MARKET = True
"""Release v2.5.1 reportedly converts API market orders to LIMIT with market-price protection
(THIRD-PARTY, UNCONFIRMED): not simulated. A MARKET order fills at the LTP of the first tick of its
instrument released after the order arrived."""

FILLS_AT_TICK_LTP = True
"""Every fill is complete (no PART_TRADED, unless the ``partial_fills`` fault splits it in two
trades at two matching ticks) at the LTP of the filling tick: a LIMIT BUY fills at
the first tick with LTP <= price (SELL: >=); STOP_LOSS / STOP_LOSS_MARKET trigger when the LTP
reaches the trigger price (BUY: >=, SELL: <=) and then act as LIMIT / MARKET on that same tick;
an IOC LIMIT not crossed by the next tick is CANCELLED."""

PENDING_ORDERS_SURVIVE_SESSION_END = True
"""When the recorded session runs out, open orders stay PENDING (the file may end before 15:30);
nothing expires them."""

EXCHANGE_TIME_PLACEHOLDER = "0001-01-01 00:00:00"
"""``exchangeTime`` / ``ExchOrderTime`` before the order reached the exchange (TRANSIT, or
REJECTED by RMS)."""

DERIVATIVE_EXPIRY_TIME = "14:30:00"
"""Time part of ``ExpiryDate`` in order-update messages, as in the compact scrip master."""

# ------------------------------------------------------------------------------ funds

SOD_LIMIT_RUPEES = 1_000_000.0
"""Default start-of-day balance (``sodLimit``); ``--funds`` changes it."""

FUNDS_MODEL = (
    "availabelBalance = sodLimit + realized P&L - open long cost - open short premium "
    "- blocked for open BUY orders; no charges are deducted"
)
"""How the fund limit follows the fills. A BUY that would take ``availabelBalance`` below zero
(quantity × limit price, or × LTP for MARKET) is REJECTED by 'RMS'. SELL orders are not margin
checked."""

# ------------------------------------------------------------------------------ market feed

FEED_AUTH_FAILED_REASON = 808
"""A feed handshake whose ``token`` or ``clientId`` does not match is accepted, sent one
Disconnect packet with reason 808 (Annexure: authentication failed, client id or token
invalid), then closed with WebSocket code 1000 (reference §8 leaves the real behaviour open)."""

FEED_BAD_REQUEST_REASON = 814
"""Missing query parameters, ``version`` or ``authType`` other than 2, an undecodable JSON text
frame or an unknown RequestCode: Disconnect 814 (invalid request), then close."""

FEED_TOO_MANY_INSTRUMENTS_REASON = 804
"""More than 100 instruments in one message or 5000 on one connection: Disconnect 804, close
(reference §8 item 7)."""

FEED_MAX_CONNECTIONS = 5
FEED_EVICT_REASON = 805
"""Opening a 6th feed connection sends Disconnect 805 to the oldest one and closes it."""

FEED_ONE_PACKET_PER_MESSAGE = True
"""Each WebSocket binary message carries exactly one packet (every capture seen; §8 item 1)."""

FEED_SNAPSHOT_ON_SUBSCRIBE = True
"""On subscribe the server sends a PrevClose packet, then at once the instrument's latest packet
in the subscribed mode if the session has already produced a tick for it."""

FEED_OI_SEGMENTS = frozenset({"NSE_FNO", "BSE_FNO", "MCX_COMM", "NSE_CURRENCY", "BSE_CURRENCY"})
"""Quote subscriptions get an OI packet (code 5) after every Quote packet for these segments."""

FEED_INDEX_PACKETS_LIKE_OTHERS = True
"""IDX_I instruments in Quote/Full mode get ordinary Quote/Full packets with zero quantities,
volume, OI and depth (§8 item 3). Codes 1 (Index) and 7 (Market Status) are never sent."""

FEED_DEPTH_FROM_TOP_OF_BOOK = True
"""Recorded sessions hold only the best bid/ask: depth level 1 carries them (orders = 1 when the
quantity is non-zero), levels 2–5 are zero. ``day_close`` is 0 (only sent after the close)."""

FEED_PREV_CLOSE_IS_FIRST_TICK = True
"""A recorded session has no previous day: the previous close (and previous OI) of an instrument
is its first LTP (OI) in the session file."""

FEED_PING_INTERVAL_S = 10.0
FEED_PING_TIMEOUT_S = 30.0
"""Server pings every 10 s; a client silent for ~40 s (interval + timeout) is dropped (§1.4)."""

# ------------------------------------------------------------------------------ order-update socket

ORDER_WS_LOGIN_REPLY: str | None = None
"""The server sends nothing in reply to a good login (§8 item 6)."""

ORDER_WS_BAD_LOGIN_CLOSE_CODE = 1008
ORDER_WS_LOGIN_TIMEOUT_S = 10.0
"""A first message that is not a valid login (MsgCode 42, matching ClientId and Token,
UserType SELF), or none within 10 s, closes the socket with code 1008 (policy violation)."""

ORDER_WS_TRADED_PRICE_IS_LAST_TRADE = True
"""In order alerts ``TradedQty`` is the order's cumulative traded quantity, ``TradedPrice`` the
price of its last trade and ``AvgTradedPrice`` the average over all its trades (rupees, up to 6
decimals; the REST ``averageTradedPrice`` likewise). The reference lists the fields without their
meaning (§5): UNCONFIRMED."""

ORDER_WS_STATUS_TITLE_CASE = True
"""``Status`` in order alerts is title case (``Traded``, ``Cancelled``) as in the docs sample,
although the enum table is upper case; clients must compare case-insensitively."""

# ------------------------------------------------------------------------------ data APIs

RATE_PER_YEAR = 0.065
DIVIDEND_YIELD = 0.012
"""Rate and dividend yield used to back out IVs and greeks for the option chain (the synthetic
session generator prices with the same numbers)."""

CHAIN_IV_IN_PERCENT = True
"""``implied_volatility`` is in percent (13.2, not 0.132); greeks per unit: delta per ₹1 of
spot, gamma per ₹1, theta in ₹ per calendar day, vega in ₹ per 1 vol point. Unsolvable IVs are 0."""

CHART_TO_DATE_DATE_ONLY_INCLUSIVE = True
"""``/charts/intraday``: a date-only ``toDate`` covers that whole day; ``fromDate``/``toDate``
with a time part bound the bar start times, [from, to). The bar still forming at the current
simulated time is included. Bars align to 09:15 IST."""

QUOTE_CIRCUIT_LIMITS_ZERO = True
"""Recorded sessions carry no circuit limits: ``lower_circuit_limit``/``upper_circuit_limit`` are 0.
``ohlc.close`` in quote/ohlc answers is the previous close."""

OPTION_CHAIN_RATE_WINDOW_S = 3.0
"""Option chain: one request per 3 s across all underlyings and expiries (docs; the
per-unique-request relaxation is THIRD-PARTY)."""
