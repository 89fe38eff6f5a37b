"""The DhanHQ simulator on loopback: REST, market feed, order-update socket and fault switches.

Each test starts its own simulator (free ports, paused clock unless it says otherwise) in a
background thread over one short synthetic session (09:15–09:30, seed printed), and talks to it
only through sockets: httpx for REST and the ``/__sim`` control API, plain ``websockets`` for the
two WebSockets, ``shared.dhan.codec`` to decode packets. Waits are outcome waits with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from dhansim import SPEED_MAX, SPEED_PAUSED, run_simulator
from dhansim.faults import parse_spec
from services.feed.replay import load_session
from shared.dhan import codec
from shared.types import rupees_to_paise
from tests.helpers import eventually

pytestmark = pytest.mark.integration

SESSION_SEED = 20261201
TOKEN = "test-token-xyz"
CLIENT_ID = "1100220033"
LOT = 65
RECV_TIMEOUT_S = 5.0
ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------ fixtures


class Session:
    """The generated files and their ticks, to compare what the simulator serves."""

    def __init__(self, parquet: Path, csv: Path) -> None:
        self.parquet, self.csv = parquet, csv
        rec = load_session(parquet)
        self.c = rec.c
        self.n = rec.n
        counts = Counter(
            int(s)
            for s, seg in zip(self.c["security_id"], self.c["segment"], strict=True)
            if seg == "NSE_FNO"
        )
        self.busy = [sid for sid, _ in counts.most_common(3)]
        """The three most active option ids, busiest first."""

    def ticks_of(self, sid: int, start: int = 0) -> list[int]:
        return [i for i in range(start, self.n) if int(self.c["security_id"][i]) == sid]

    def next_tick(self, sid: int, cursor: int) -> int:
        return self.ticks_of(sid, cursor)[0]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    from shared.synth import generate_session

    out = tmp_path_factory.mktemp("dhansim")
    print(f"dhansim session seed: {SESSION_SEED}")
    generate_session(
        trading_day=date(2026, 12, 1),
        seed=SESSION_SEED,
        out_parquet=out / "session.parquet",
        out_instruments_csv=out / "instruments.csv",
        start_hhmm="09:15",
        end_hhmm="09:30",
    )
    return Session(out / "session.parquet", out / "instruments.csv")


class SimThread:
    """A simulator running on its own event loop in a daemon thread."""

    def __init__(self, session: Session, **overrides: Any) -> None:
        self.session = session
        self.kwargs: dict[str, Any] = {
            "session": str(session.parquet),
            "instruments": str(session.csv),
            "speed": SPEED_PAUSED,
            "token": TOKEN,
            "client_id": CLIENT_ID,
            "rate_limits": False,
            **overrides,
        }
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.sim: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with run_simulator(**self.kwargs) as sim:
                self.sim = sim
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            self._error = exc
            self._ready.set()

    def __enter__(self) -> SimThread:
        self._thread.start()
        assert self._ready.wait(15), "simulator did not start"
        if self._error is not None:
            raise self._error
        self.rest = httpx.Client(
            base_url=self.sim.rest_url,
            headers={"access-token": TOKEN, "client-id": CLIENT_ID},
            timeout=5.0,
        )
        self.control = httpx.Client(base_url=self.sim.control_url, timeout=5.0)
        return self

    def __exit__(self, *exc: object) -> None:
        self.rest.close()
        self.control.close()
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)
        assert not self._thread.is_alive(), "simulator did not stop within 15 s"

    # ---------------------------------------------------------------- helpers

    def state(self) -> dict[str, Any]:
        return self.control.get("/state").raise_for_status().json()

    def advance(self, **body: Any) -> dict[str, Any]:
        return self.control.post("/advance", json=body).raise_for_status().json()

    def faults(self, **body: Any) -> dict[str, Any]:
        return self.control.post("/faults", json=body).raise_for_status().json()

    def place(self, sid: int, txn: str = "BUY", qty: int = LOT, **extra: Any) -> httpx.Response:
        body = {
            "dhanClientId": CLIENT_ID,
            "transactionType": txn,
            "exchangeSegment": "NSE_FNO",
            "productType": "INTRADAY",
            "orderType": "MARKET",
            "validity": "DAY",
            "securityId": str(sid),
            "quantity": qty,
            "price": 0,
            **extra,
        }
        return self.rest.post("/orders", json=body)

    def order(self, order_id: str) -> dict[str, Any]:
        return self.rest.get(f"/orders/{order_id}").raise_for_status().json()

    def wait_status(self, order_id: str, status: str) -> dict[str, Any]:
        return eventually(
            lambda: (o := self.order(order_id))["orderStatus"] == status and o,
            timeout=5,
            message=f"order {order_id} {status}",
        )

    def fill_next_tick(self, sid: int) -> int:
        """Advance the paused clock through the next tick of ``sid``; return its index."""
        cursor = self.state()["cursor"]
        j = self.session.next_tick(sid, cursor)
        self.advance(ticks=j - cursor + 1)
        return j

    def feed(self, **query: str) -> ClientConnection:
        q = {"version": "2", "token": TOKEN, "clientId": CLIENT_ID, "authType": "2", **query}
        url = f"{self.sim.feed_base_url}/?" + "&".join(f"{k}={v}" for k, v in q.items())
        # Unbounded receive queue: at max speed the server keeps sending while we close.
        return ws_connect(url, open_timeout=5, max_size=None, max_queue=None)

    @contextlib.contextmanager
    def order_ws(self) -> Iterator[ClientConnection]:
        """A logged-in order-update socket (the server does not answer the login)."""
        with ws_connect(self.sim.order_ws_url, open_timeout=5) as ws:
            login = {
                "LoginReq": {"MsgCode": 42, "ClientId": CLIENT_ID, "Token": TOKEN},
                "UserType": "SELF",
            }
            ws.send(json.dumps(login))
            eventually(lambda: self.state()["order_ws_connections"] >= 1, timeout=5)
            yield ws


@pytest.fixture
def sim(session: Session) -> Iterator[SimThread]:
    with SimThread(session) as s:
        yield s


def _subscribe(ws: ClientConnection, mode: str, sids: list[tuple[str, int]]) -> None:
    for message in codec.subscribe_messages(mode, sids):  # type: ignore[arg-type]
        ws.send(message)


def _packets(ws: ClientConnection, count: int) -> list[codec.Packet]:
    out: list[codec.Packet] = []
    while len(out) < count:
        message = ws.recv(timeout=RECV_TIMEOUT_S)
        assert isinstance(message, bytes)
        out.extend(codec.decode_message(message))
    return out


def _one_packet(ws: ClientConnection) -> codec.Packet:
    """The single packet of the next binary message."""
    message = ws.recv(timeout=RECV_TIMEOUT_S)
    assert isinstance(message, bytes)
    (packet,) = codec.decode_message(message)
    return packet


def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def _error_keys(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"errorType", "errorCode", "errorMessage"}, body
    return response.status_code, body["errorCode"]


# ------------------------------------------------------------------------------ REST


def test_rest_with_wrong_token_or_client_id_answers_dh901_body(sim: SimThread) -> None:
    bad = httpx.get(f"{sim.sim.rest_url}/fundlimit", headers={"access-token": "nope"})
    assert bad.status_code == 401
    assert bad.json() == {
        "errorType": "Invalid_Authentication",
        "errorCode": "DH-901",
        "errorMessage": "Client ID or user generated access token is invalid or expired.",
    }
    no_client = httpx.post(
        f"{sim.sim.rest_url}/marketfeed/ltp",
        json={"IDX_I": [13]},
        headers={"access-token": TOKEN},
    )
    assert _error_keys(no_client) == (401, "DH-901")
    assert sim.rest.get("/fundlimit").json()["availabelBalance"] == 1_000_000.0


def test_market_order_trades_at_next_tick_and_books_agree(sim: SimThread) -> None:
    sid = sim.session.busy[0]
    c = sim.session.c
    cursor = sim.advance(ticks=300)["cursor"]
    j = sim.session.next_tick(sid, cursor)
    sim.advance(ticks=j - cursor)  # tick j of the instrument is the very next one
    placed = sim.place(sid, correlationId="buy-1")
    assert placed.status_code == 200
    assert placed.json()["orderStatus"] == "TRANSIT"
    buy_id = placed.json()["orderId"]
    sim.wait_status(buy_id, "PENDING")
    assert sim.rest.get("/positions").json() == []

    assert sim.fill_next_tick(sid) == j
    buy = sim.wait_status(buy_id, "TRADED")
    buy_paise = rupees_to_paise(c["ltp"][j])
    assert rupees_to_paise(buy["averageTradedPrice"]) == buy_paise
    assert (buy["filledQty"], buy["remainingQuantity"], buy["correlationId"]) == (LOT, 0, "buy-1")

    trades = sim.rest.get("/trades/").json()
    assert [(t["orderId"], t["tradedQuantity"]) for t in trades] == [(buy_id, LOT)]
    assert rupees_to_paise(trades[0]["tradedPrice"]) == buy_paise
    assert (
        sim.rest.get(f"/trades/{buy_id}").json()[0]["exchangeTradeId"]
        == trades[0]["exchangeTradeId"]
    )
    (pos,) = sim.rest.get("/positions").json()
    assert (pos["positionType"], pos["netQty"], pos["buyQty"]) == ("LONG", LOT, LOT)
    assert rupees_to_paise(pos["buyAvg"]) == buy_paise
    funds = sim.rest.get("/fundlimit").json()
    assert rupees_to_paise(funds["availabelBalance"]) == 100_000_000 - LOT * buy_paise
    assert rupees_to_paise(funds["utilizedAmount"]) == LOT * buy_paise

    sell_id = sim.place(sid, "SELL", correlationId="sell-1").json()["orderId"]
    k = sim.fill_next_tick(sid)
    sim.wait_status(sell_id, "TRADED")
    sell_paise = rupees_to_paise(c["ltp"][k])
    (pos,) = sim.rest.get("/positions").json()
    assert (pos["positionType"], pos["netQty"], pos["sellQty"]) == ("CLOSED", 0, LOT)
    realized = LOT * (sell_paise - buy_paise)
    assert rupees_to_paise(pos["realizedProfit"]) == realized
    funds = sim.rest.get("/fundlimit").json()
    assert rupees_to_paise(funds["availabelBalance"]) == 100_000_000 + realized
    assert [o["orderId"] for o in sim.rest.get("/orders").json()] == [buy_id, sell_id]


def test_order_by_correlation_id_returns_latest_and_duplicates_are_not_deduped(
    sim: SimThread,
) -> None:
    sid = sim.session.busy[1]
    first = sim.place(sid, correlationId="intent-42").json()["orderId"]
    found = sim.rest.get("/orders/external/intent-42")
    assert found.status_code == 200 and found.json()["orderId"] == first
    second = sim.place(sid, correlationId="intent-42", quantity="65").json()["orderId"]
    assert second != first
    assert sim.rest.get("/orders/external/intent-42").json()["orderId"] == second
    assert len(sim.rest.get("/orders").json()) == 2
    assert _error_keys(sim.rest.get("/orders/external/nobody")) == (400, "DH-907")
    bad = sim.place(sid, correlationId="x" * 31)
    assert _error_keys(bad) == (400, "DH-905")


def test_limit_order_cancel_and_rms_rejection(sim: SimThread) -> None:
    sid = sim.session.busy[0]
    sim.advance(ticks=300)
    limit = sim.place(sid, orderType="LIMIT", price="0.05").json()["orderId"]
    sim.wait_status(limit, "PENDING")
    sim.fill_next_tick(sid)
    assert sim.order(limit)["orderStatus"] == "PENDING"  # not crossed
    modified = sim.rest.put(
        f"/orders/{limit}",
        json={"orderType": "LIMIT", "quantity": LOT, "price": "0.10", "validity": "DAY"},
    )
    assert modified.status_code == 200 and sim.order(limit)["price"] == 0.1
    cancelled = sim.rest.delete(f"/orders/{limit}")
    assert cancelled.status_code == 202 and cancelled.json()["orderStatus"] == "CANCELLED"
    assert _error_keys(sim.rest.delete(f"/orders/{limit}")) == (400, "DH-906")

    odd_lot = sim.place(sid, qty=LOT + 1).json()["orderId"]
    rejected = sim.wait_status(odd_lot, "REJECTED")
    assert "lot size" in rejected["omsErrorDescription"]


def test_data_endpoints_answer_as_of_the_clock(sim: SimThread) -> None:
    c = sim.session.c
    state = sim.advance(until_ist="09:20:00")
    last_index = max(i for i in range(state["cursor"]) if int(c["security_id"][i]) == 13)
    ltp = sim.rest.post("/marketfeed/ltp", json={"IDX_I": [13], "dhanClientId": CLIENT_ID})
    assert ltp.json() == {
        "data": {"IDX_I": {"13": {"last_price": c["ltp"][last_index]}}},
        "status": "success",
    }
    sid = sim.session.busy[0]
    quote = sim.rest.post("/marketfeed/quote", json={"NSE_FNO": [str(sid)]}).json()
    depth = quote["data"]["NSE_FNO"][str(sid)]["depth"]
    assert len(depth["buy"]) == len(depth["sell"]) == 5

    expiries = sim.rest.post(
        "/optionchain/expirylist", json={"UnderlyingScrip": 13, "UnderlyingSeg": "IDX_I"}
    ).json()
    assert expiries["data"][0] == "2026-12-01" and expiries["data"] == sorted(expiries["data"])
    chain = sim.rest.post(
        "/optionchain",
        json={"UnderlyingScrip": "13", "UnderlyingSeg": "IDX_I", "Expiry": "2026-12-01"},
    ).json()
    assert chain["data"]["last_price"] == c["ltp"][last_index]
    strikes = chain["data"]["oc"]
    assert all(k.endswith(".000000") for k in strikes)
    atm = min(strikes, key=lambda k: abs(float(k) - chain["data"]["last_price"]))
    assert 0.3 < strikes[atm]["ce"]["greeks"]["delta"] < 0.7
    assert 1.0 < strikes[atm]["ce"]["implied_volatility"] < 200.0
    bad = sim.rest.post(
        "/optionchain",
        json={"UnderlyingScrip": 13, "UnderlyingSeg": "IDX_I", "Expiry": "2030-01-01"},
    )
    assert bad.status_code == 400 and bad.json() == {
        "data": {"811": bad.json()["data"]["811"]},
        "status": "failed",
    }

    bars = sim.rest.post(
        "/charts/intraday",
        json={
            "securityId": "13",
            "exchangeSegment": "IDX_I",
            "instrument": "INDEX",
            "interval": "1",
            "fromDate": "2026-12-01",
            "toDate": "2026-12-01",
        },
    ).json()
    assert len(bars["timestamp"]) == 5  # 09:15 .. 09:19 (the 09:20 bar may be forming)
    assert bars["timestamp"][0] == 1796096700  # 2026-12-01 09:15 IST
    assert bars["close"][-1] <= max(bars["high"])
    assert sim.rest.get("/profile").json()["dhanClientId"] == CLIENT_ID


# ------------------------------------------------------------------------------ market feed


def test_feed_full_mode_streams_the_session_ticks_in_order_at_max_speed(sim: SimThread) -> None:
    c = sim.session.c
    full_ids, quote_id = [13, sim.session.busy[0]], sim.session.busy[1]
    with sim.feed() as ws:
        _subscribe(ws, "full", [("IDX_I", 13), ("NSE_FNO", full_ids[1])])
        _subscribe(ws, "quote", [("NSE_FNO", quote_id)])
        prev = _packets(ws, 3)
        assert all(isinstance(p, codec.PrevClose) for p in prev)
        assert {p.security_id for p in prev} == {13, full_ids[1], quote_id}
        sim.control.post("/clock", json={"speed": "max"}).raise_for_status()

        expected: list[tuple[type, int, int]] = []
        for i in range(sim.session.n):
            sid = int(c["security_id"][i])
            if sid in full_ids:
                expected.append((codec.Full, sid, i))
            elif sid == quote_id:
                expected += [(codec.Quote, sid, i), (codec.OpenInterest, sid, i)]
            if len(expected) >= 400:
                break
        got = _packets(ws, len(expected))[: len(expected)]
    for packet, (kind, sid, i) in zip(got, expected, strict=True):
        assert (type(packet), packet.security_id) == (kind, sid)
        assert packet.segment == c["segment"][i]
        if isinstance(packet, codec.Full | codec.Quote):
            assert packet.ltp == _f32(c["ltp"][i])
            assert codec.ltt_to_utc_s(packet.ltt) == c["ltt_s"][i]
        if isinstance(packet, codec.Full) and sid != 13:
            assert packet.depth[0].bid_price == _f32(c["bid"][i])
            assert packet.oi == c["oi"][i]


def test_timed_speed_fills_market_orders_without_manual_advance(session: Session) -> None:
    sid = session.busy[0]
    with SimThread(session, speed=60) as s:
        eventually(lambda: s.state()["cursor"] > 100, timeout=5, message="clock runs")
        order_id = s.place(sid).json()["orderId"]
        traded = s.wait_status(order_id, "TRADED")
        fill = rupees_to_paise(traded["averageTradedPrice"])
        assert fill in {rupees_to_paise(session.c["ltp"][i]) for i in session.ticks_of(sid)}


def test_max_speed_stands_still_until_a_feed_consumer_subscribes(session: Session) -> None:
    with SimThread(session, speed="max") as s, s.feed() as ws:
        eventually(lambda: s.state()["feed_connections"] == 1, timeout=5)
        assert s.state()["cursor"] == 0
        _subscribe(ws, "ticker", [("IDX_I", 13)])
        first = _packets(ws, 1 + 50)[1:]  # PrevClose, then the index ticks from the start
        expected = session.ticks_of(13)[:50]
        assert all(isinstance(p, codec.Ticker) for p in first)
        assert [p.ltp for p in first] == [_f32(session.c["ltp"][i]) for i in expected]  # type: ignore[union-attr]


def test_feed_refuses_bad_auth_and_oversized_subscriptions(sim: SimThread) -> None:
    with sim.feed(token="wrong") as ws:
        packet = _one_packet(ws)
        assert isinstance(packet, codec.Disconnect) and packet.reason_code == 808
    with sim.feed() as ws:
        too_many = {
            "RequestCode": 15,
            "InstrumentCount": 101,
            "InstrumentList": [
                {"ExchangeSegment": "NSE_FNO", "SecurityId": str(i)} for i in range(101)
            ],
        }
        ws.send(json.dumps(too_many))
        packet = _one_packet(ws)
        assert isinstance(packet, codec.Disconnect) and packet.reason_code == 804
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=RECV_TIMEOUT_S)


def test_sixth_feed_connection_disconnects_the_oldest_with_805(sim: SimThread) -> None:
    with contextlib.ExitStack() as stack:
        conns = [stack.enter_context(sim.feed()) for _ in range(5)]
        eventually(lambda: sim.state()["feed_connections"] == 5, timeout=5)
        with sim.feed():
            packet = _one_packet(conns[0])
            assert isinstance(packet, codec.Disconnect) and packet.reason_code == 805
            eventually(lambda: sim.state()["feed_connections"] == 5, timeout=5)
            conns[1].ping().wait(RECV_TIMEOUT_S)  # the second oldest is still alive


def test_feed_disconnect_request_and_sdk_binary_frame_are_tolerated(sim: SimThread) -> None:
    with sim.feed() as ws:
        ws.send(struct.pack("<bH30s50s", 12, 83, CLIENT_ID.encode(), TOKEN.encode()))
        ws.send(codec.disconnect_message())
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=RECV_TIMEOUT_S)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


# ------------------------------------------------------------------------------ order updates


def test_order_update_socket_pushes_each_status_after_login(sim: SimThread) -> None:
    sid = sim.session.busy[0]
    with sim.order_ws() as ws:
        order_id = sim.place(sid, correlationId="ws-1").json()["orderId"]
        sim.wait_status(order_id, "PENDING")
        sim.fill_next_tick(sid)
        alerts = [json.loads(ws.recv(timeout=RECV_TIMEOUT_S)) for _ in range(3)]
    assert [a["Type"] for a in alerts] == ["order_alert"] * 3
    assert [a["Data"]["Status"] for a in alerts] == ["Transit", "Pending", "Traded"]
    data = alerts[-1]["Data"]
    assert (data["OrderNo"], data["CorrelationId"], data["TradedQty"]) == (order_id, "ws-1", LOT)
    assert data["TxnType"] == "B" and data["OrderType"] == "MKT" and data["Product"] == "I"
    assert data["AvgTradedPrice"] == sim.order(order_id)["averageTradedPrice"]


def test_order_update_socket_closes_on_bad_login(sim: SimThread) -> None:
    with ws_connect(sim.sim.order_ws_url, open_timeout=5) as ws:
        ws.send(
            json.dumps(
                {
                    "LoginReq": {"MsgCode": 42, "ClientId": CLIENT_ID, "Token": "x"},
                    "UserType": "SELF",
                }
            )
        )
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=RECV_TIMEOUT_S)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


# ------------------------------------------------------------------------------ faults


def test_http_429_and_5xx_bursts_then_recovery(sim: SimThread) -> None:
    sim.faults(http_429=2, http_5xx=1)
    assert _error_keys(sim.rest.get("/positions")) == (500, "DH-908")
    assert _error_keys(sim.rest.get("/positions")) == (429, "DH-904")
    assert _error_keys(sim.rest.get("/positions")) == (429, "DH-904")
    assert sim.rest.get("/positions").status_code == 200


def test_slow_answers_delay_every_request(sim: SimThread) -> None:
    sim.faults(delay_ms=400)
    started = time.monotonic()
    assert sim.rest.get("/fundlimit").status_code == 200
    assert time.monotonic() - started >= 0.4
    sim.control.delete("/faults").raise_for_status()
    started = time.monotonic()
    sim.rest.get("/fundlimit")
    assert time.monotonic() - started < 0.4


def test_rejected_order_fault_rejects_the_next_n_orders_with_reason(sim: SimThread) -> None:
    sid = sim.session.busy[0]
    sim.faults(reject_orders=1, reject_reason="RMS:Test rejection")
    first = sim.place(sid).json()
    assert first["orderStatus"] == "TRANSIT"
    rejected = sim.wait_status(first["orderId"], "REJECTED")
    assert rejected["omsErrorDescription"] == "RMS:Test rejection"
    second = sim.place(sid).json()["orderId"]
    sim.wait_status(second, "PENDING")


@pytest.mark.parametrize(
    ("mode", "client_error"),
    [("drop", httpx.RemoteProtocolError), ("delay", httpx.ReadTimeout)],
)
def test_timeout_after_accept_records_the_order_but_loses_the_answer(
    sim: SimThread, mode: str, client_error: type[Exception]
) -> None:
    sid = sim.session.busy[0]
    sim.faults(timeout_after_accept=1, timeout_mode=mode, timeout_delay_ms=3000)
    with pytest.raises(client_error):
        sim.rest.post(
            "/orders",
            timeout=0.5,
            json={
                "transactionType": "BUY",
                "exchangeSegment": "NSE_FNO",
                "productType": "INTRADAY",
                "orderType": "MARKET",
                "validity": "DAY",
                "securityId": sid,
                "quantity": LOT,
                "correlationId": f"lost-{mode}",
            },
        )
    found = sim.rest.get(f"/orders/external/lost-{mode}")
    assert found.status_code == 200 and found.json()["orderStatus"] in ("TRANSIT", "PENDING")
    assert sim.place(sid).status_code == 200  # the fault was a one-off


def test_feed_disconnect_packet_fault_sends_807_and_closes(sim: SimThread) -> None:
    with sim.feed() as ws:
        eventually(lambda: sim.state()["feed_connections"] == 1, timeout=5)
        assert sim.faults(feed_disconnect=807)["actions"] == {"feed_disconnected": 1}
        packet = _one_packet(ws)
        assert isinstance(packet, codec.Disconnect) and packet.reason_code == 807
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=RECV_TIMEOUT_S)


def test_periodic_feed_disconnect_fault(sim: SimThread) -> None:
    with sim.feed() as ws:
        eventually(lambda: sim.state()["feed_connections"] == 1, timeout=5)
        sim.faults(feed_disconnect_every_s=0.2, feed_disconnect_reason=807)
        packet = _one_packet(ws)
        assert isinstance(packet, codec.Disconnect) and packet.reason_code == 807


def test_dropped_sockets_fault_aborts_feed_and_order_socket(sim: SimThread) -> None:
    with sim.feed() as feed, sim.order_ws() as orders:
        eventually(lambda: sim.state()["feed_connections"] == 1, timeout=5)
        done = sim.faults(drop_feed=True, drop_order_ws=True)["actions"]
        assert done == {"feed_dropped": 1, "order_ws_dropped": 1}
        for ws in (feed, orders):
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=RECV_TIMEOUT_S)
            assert closed.value.rcvd is None  # no close frame: an abrupt drop


def test_duplicated_and_reordered_feed_packets(sim: SimThread) -> None:
    a, b = sim.session.busy[0], sim.session.busy[1]
    with sim.feed() as ws:
        _subscribe(ws, "ticker", [("NSE_FNO", a), ("NSE_FNO", b)])
        _packets(ws, 2)  # the PrevClose pair
        sim.faults(feed_duplicate=1)
        sim.fill_next_tick(a)
        first, again = _packets(ws, 2)
        assert first == again and first.security_id == a

        cursor = sim.state()["cursor"]
        nxt = sorted([sim.session.next_tick(a, cursor), sim.session.next_tick(b, cursor)])
        sim.faults(feed_reorder=1)
        sim.advance(ticks=nxt[1] - cursor + 1)
        c = sim.session.c
        in_order = [
            int(c["security_id"][i])
            for i in range(cursor, nxt[1] + 1)
            if int(c["security_id"][i]) in (a, b)
        ]
        got = [p.security_id for p in _packets(ws, len(in_order))]
    assert got == [in_order[1], in_order[0], *in_order[2:]]


def test_feed_handshake_429_fault_refuses_the_connection(sim: SimThread) -> None:
    sim.faults(feed_handshake_429=1)
    with pytest.raises(InvalidStatus) as refused, sim.feed():
        pass
    assert refused.value.response.status_code == 429
    with sim.feed():
        pass


def test_rate_limits_answer_dh904(session: Session) -> None:
    with SimThread(session, rate_limits=True) as s:
        body = {"NSE_FNO": [session.busy[0]]}
        assert s.rest.post("/marketfeed/ltp", json=body).status_code == 200
        assert _error_keys(s.rest.post("/marketfeed/ltp", json=body)) == (429, "DH-904")


def test_fault_spec_rejects_unknown_keys() -> None:
    assert parse_spec("http_429=3,timeout_mode=delay").http_429 == 3
    with pytest.raises(ValueError, match="bogus"):
        parse_spec("bogus=1")


# ------------------------------------------------------------------------------ CLI


def test_cli_serves_on_requested_loopback_ports_and_stops_on_sigterm(session: Session) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dhansim",
            "--session",
            str(session.parquet),
            "--instruments",
            str(session.csv),
            "--speed",
            "max",
            "--token",
            TOKEN,
            "--client-id",
            CLIENT_ID,
            "--faults",
            "http_429=1",
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready" and ready["speed"] == "max"
        headers = {"access-token": TOKEN, "client-id": CLIENT_ID}
        url = f"{ready['rest_url']}/profile"
        assert httpx.get(url, headers=headers).status_code == 429  # --faults applied
        assert httpx.get(url, headers=headers).json()["dhanClientId"] == CLIENT_ID
        control = ready["control_url"]
        assert httpx.get(f"{control}/state").json()["cursor"] == 0  # max: no consumer yet
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_non_loopback_host_is_refused(session: Session) -> None:
    with pytest.raises(ValueError, match="loopback"):
        SimThread(session, host="0.0.0.0", speed=SPEED_MAX).__enter__()
