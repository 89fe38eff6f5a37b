"""DhanHQ API v2 simulator on loopback — REST, binary market feed and order-update WebSockets.

It serves one account over a recorded session (Parquet of decoded ticks, see
:func:`services.feed.replay.load_session`) and a scrip master CSV, following
``reference/dhanhq-api.md`` byte for byte where the reference is firm. Binds loopback only::

    python -m dhansim --session PATH --instruments CSV [--speed N|max|paused]
        [--host 127.0.0.1] [--rest-port P] [--feed-port P2] [--order-ws-port P3]
        [--token T] [--client-id C] [--faults SPEC] [--funds RUPEES] [--no-rate-limits]
        [--from HH:MM] [--to HH:MM]

Ports 0 (the default) pick free ports; the first stdout line is a JSON ``ready`` record with
the bound ports and URLs. From Python: ``async with run_simulator(session=…, instruments=…,
speed="max") as sim`` (``sim.ports``, ``sim.rest_url``, ``sim.feed_url``, ``sim.order_ws_url``,
``sim.control_url``).

The session clock (:mod:`dhansim.clock`) drives fills, LTPs, quotes, charts and the option chain:
N× real time, ``max`` (as fast as the feed consumers read — the clock waits for a pong after
each batch of at most 100 packets per connection, and stands still while no feed connection has
a subscription) or ``paused`` (only ``POST /__sim/advance`` moves it). The control API lives on
the REST port outside ``/v2`` (:mod:`dhansim.app`); faults are in :mod:`dhansim.faults`.

Where the reference says UNCONFIRMED the simulator decides; every decision is one constant in
:mod:`dhansim.decisions`:

Feed (``ws://HOST:FEED_PORT/?version=2&token=…&clientId=…&authType=2``)
  - wrong token/clientId → handshake accepted, one Disconnect packet **808**, close 1000;
    missing params, version/authType ≠ 2, undecodable JSON or unknown RequestCode → **814**;
    > 100 instruments in a message or > 5000 on a connection → **804**; a 6th connection →
    **805** to the oldest (``FEED_*_REASON``);
  - one packet per WebSocket message; message length = whole packet incl. header, little-endian,
    LTT IST-shifted (the codec's ``LENGTH_INCLUDES_HEADER`` / ``LTT_IS_IST_SHIFTED``);
  - on subscribe: one PrevClose, then at once the latest packet of that mode if the instrument has
    ticked (``FEED_SNAPSHOT_ON_SUBSCRIBE``); previous close/OI = the instrument's first LTP/OI in
    the file (``FEED_PREV_CLOSE_IS_FIRST_TICK``);
  - Quote mode adds an OI packet for derivative segments (``FEED_OI_SEGMENTS``); IDX_I in
    Quote/Full mode gets ordinary Quote/Full packets with zero quantities and depth; codes 1 and 7
    are never sent (``FEED_INDEX_PACKETS_LIKE_OTHERS``); depth level 1 = recorded best bid/ask,
    levels 2–5 zero, ``day_close`` 0 (``FEED_DEPTH_FROM_TOP_OF_BOOK``);
  - RequestCode 12 → the server closes (1000) without a Disconnect packet; binary client frames
    are ignored; pings every 10 s, ping timeout 30 s.

Order-update socket (``ws://HOST:ORDER_WS_PORT``)
  - no reply to a good login (``ORDER_WS_LOGIN_REPLY``); bad/missing login (10 s) → close 1008;
  - ``Status`` title case (``Traded``, ``Cancelled``); one alert per change: Transit, Pending,
    each modification, Part_Traded (one per partial trade), Traded / Cancelled / Rejected / Expired.

REST (``http://HOST:REST_PORT/v2``)
  - error body ``{"errorType", "errorCode", "errorMessage"}``; errorType spellings
    (``Invalid_Authentication``…) and HTTP statuses per ``ERRORS``: DH-901 → 401, DH-904 → 429,
    DH-905/906/907 → 400, DH-908 → 500; data-API validation errors (811/812/813/814/804) use
    ``{"data": {"<code>": "<msg>"}, "status": "failed"}`` with HTTP 400
    (``DATA_ERROR_HTTP_STATUS``);
  - ``client-id`` header mandatory on /marketfeed and /optionchain, checked wherever sent
    (``CLIENT_ID_HEADER_REQUIRED_PREFIXES``); a body ``dhanClientId`` is ignored if it matches,
    DH-905 otherwise;
  - unknown order/correlation id → DH-907 (``NOT_FOUND_ERROR``); modify/cancel of a closed order
    or a 26th modification → DH-906;
  - ``POST /orders`` answers ``TRANSIT`` (``PLACE_RESPONSE_STATUS``), then PENDING/REJECTED on
    the next loop turn; correlationId must match ``[A-Za-z0-9 _-]{1,30}``; duplicates accepted,
    the lookup returns the latest (``CORRELATION_LOOKUP_PICKS_LATEST``);
  - fills: whole quantity (in two parts under the ``partial_fills`` fault) at the LTP of a
    released tick of the instrument (market: the first tick after arrival; limit: first crossing
    tick; SL/SL-M trigger on LTP; IOC limit not crossed at the
    next tick → CANCELLED); no MPP conversion; open orders survive the end of the file;
  - funds: ``FUNDS_MODEL``; RMS rejections (lot multiple, freeze qty, tick multiple, margin, AMO)
    are REJECTED orders with ``omsErrorDescription``; malformed requests are HTTP 400 DH-905 and
    create no order;
  - option chain IV in percent, theta per day, vega per vol point (``CHAIN_IV_IN_PERCENT``);
    chart ``toDate`` date-only covers the day, bars align to 09:15 IST, the forming bar is
    included; quote circuit limits 0, ``ohlc.close`` = previous close;
  - rate limits enforced in wall time (``dhansim.ratelimit``; ``--no-rate-limits`` to disable):
    orders 10/s 250/min 1000/h 7000/day, quotes 1/s, charts 5/s, option chain 1 per 3 s,
    others 20/s — all answered 429 DH-904.

Times in orders and trades are the simulated session time (IST).
"""

from __future__ import annotations

from .clock import SPEED_MAX, SPEED_PAUSED, parse_speed
from .server import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, SimConfig, Simulator, run_simulator

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_TOKEN",
    "SPEED_MAX",
    "SPEED_PAUSED",
    "SimConfig",
    "Simulator",
    "parse_speed",
    "run_simulator",
]
