"""Live mode's broker option chain in the chain view: the merge (fresh chain values override
Black-Scholes, stale or missing ones do not), the call gate (one call per 3 s on a fake clock) and
the shell's on-demand fetch against an httpx.MockTransport broker (rate limit, errors, timeout)."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import date

import httpx
import pytest

from services.entries.brokerchain import BrokerChainFeed, BrokerLeg, ChainCallGate
from services.entries.chain import ChainView
from shared.clock import FakeClock
from shared.config import IndexConfig, OptionChainConfig
from shared.dhan.rest import DhanRest
from shared.dhan.retry import RetryPolicy
from shared.messages import Signal
from shared.types import NS_PER_S
from tests.unit.test_chain import (
    EXP,
    NIFTY,
    RATE,
    D,
    at,
    find,
    make_instruments,
    option_tick,
    spot_tick,
)

BANKNIFTY = IndexConfig(
    key="BANKNIFTY",
    security_id=25,
    options_segment="NSE_FNO",
    exchange="NSE",
    strike_step_paise=10000,
)
T0 = at(D, "10:00")
S = NS_PER_S


def _view(index: IndexConfig = NIFTY, **cfg) -> tuple[ChainView, list]:
    insts = make_instruments(index)
    base = dict(risk_free_rate=RATE, broker_chain_max_age_s=10.0)
    base.update(cfg)
    view = ChainView(index, insts, OptionChainConfig(**base))
    view.on_tick(spot_tick(index, 2_501_000, T0))
    step = index.strike_step_paise // 100
    for strike in range(25000 - 2 * step, 25000 + 2 * step + 1, step):
        for ot in ("CE", "PE"):
            view.on_tick(option_tick(find(insts, EXP, strike, ot), 25010, 0.16, T0, oi=1_200_000))
    return view, insts


def _leg(oi: int = 4_321_000, iv: float = 23.45, delta: float = 0.612) -> BrokerLeg:
    return BrokerLeg(oi=oi, iv_pct100=iv, delta=delta)


# --------------------------------------------------------------------------- the merge


def test_fresh_broker_chain_overrides_tick_oi_and_black_scholes_iv_and_delta():
    view, insts = _view()
    ce = find(insts, EXP, 25000, "CE")
    bs = view.quote(ce.security_id, T0)
    assert (
        bs.ts_chain is None and bs.oi == 1_200_000 and bs.iv_pct100 == pytest.approx(16, abs=0.05)
    )
    assert view.merge_broker_chain(EXP, T0, {(2_500_000, "CE"): _leg()}) == 1
    q = view.quote(ce.security_id, T0 + 4 * S)
    assert (q.oi, q.iv_pct100, q.delta, q.ts_chain) == (4_321_000, 23.45, 0.612, T0)
    assert (q.ltp_paise, q.bid_paise, q.ask_paise) == (bs.ltp_paise, bs.bid_paise, bs.ask_paise)


def test_broker_chain_older_than_max_age_falls_back_to_black_scholes():
    view, insts = _view(broker_chain_max_age_s=10.0)
    ce = find(insts, EXP, 25000, "CE")
    view.merge_broker_chain(EXP, T0, {(2_500_000, "CE"): _leg()})
    assert view.quote(ce.security_id, T0 + 10 * S).ts_chain == T0  # exactly the max age: fresh
    stale = view.quote(ce.security_id, T0 + 10 * S + 1)
    assert stale.ts_chain is None and stale.oi == 1_200_000
    assert stale.iv_pct100 == pytest.approx(16, abs=0.05) and stale.delta != 0.612
    assert view.broker_chain_due(T0 + 10 * S) == ""
    assert view.broker_chain_due(T0 + 10 * S + 1) == EXP


def test_strike_missing_from_the_broker_chain_or_sent_without_iv_stays_on_black_scholes():
    view, insts = _view()
    kept = view.merge_broker_chain(
        EXP,
        T0,
        {
            (2_500_000, "CE"): _leg(),
            (2_505_000, "CE"): _leg(iv=0.0),  # DhanHQ sends 0 when it has no IV
            (2_600_000, "CE"): _leg(),  # not a listed contract here
        },
    )
    assert kept == 1
    for strike in (25050, 25100):
        q = view.quote(find(insts, EXP, strike, "CE").security_id, T0)
        assert (
            q.ts_chain is None and q.oi == 1_200_000 and q.iv_pct100 == pytest.approx(16, abs=0.05)
        )
    assert view.quote(find(insts, EXP, 25000, "CE").security_id, T0).ts_chain == T0


def test_a_snapshot_of_another_expiry_leaves_the_selected_expiry_due():
    view, _ = _view()
    view.merge_broker_chain("2026-03-17", T0, {})
    assert view.broker_chain_due(T0) == EXP
    view.merge_broker_chain(EXP, T0, {})
    assert view.broker_chain_due(T0 + 5 * S) == ""
    assert view.broker_chain_due(at(date(2026, 3, 11), "10:00")) == ""  # no expiry left


def test_scored_selection_filters_and_scores_on_the_broker_values_and_says_so():
    view, insts = _view(selection="scored", max_picks=3)
    # ticks alone: every CE passes (OI 1.2M, IV 16 %)
    assert len(view.select("bullish", T0).picks) == 3
    view.merge_broker_chain(
        EXP,
        T0,
        {
            (2_500_000, "CE"): _leg(oi=30_000),  # broker OI below min_oi 50 000
            (2_505_000, "CE"): _leg(oi=2_000_000, iv=20.0, delta=0.55),
        },
    )
    sel = view.select("bullish", T0 + 2 * S)
    assert "25000.00 CE: oi 30000 < min 50000" in sel.rejected
    strikes = [p.instrument.strike_paise // 100 for p in sel.picks]
    assert strikes == [25050, 25100]
    best = sel.picks[0]
    assert best.quote.oi == 2_000_000 and best.quote.iv_pct100 == 20.0 and best.quote.delta == 0.55
    assert best.score.liquidity == 50 and best.score.delta == 30  # OI >= 1M, |delta| >= 0.5
    assert "oi 2000000" in best.describe() and "(oi/iv/delta: broker chain)" in best.describe()
    assert "broker chain" not in sel.picks[1].describe()  # 25100 was not in the snapshot


# --------------------------------------------------------------------------- the call gate


def test_call_gate_allows_one_call_per_3s_on_a_fake_clock():
    clock = FakeClock(1_000 * S)
    gate = ChainCallGate(3.0, clock.now_ns)
    assert gate.wait_s() == 0.0 and gate.try_take()
    gate.done()  # instant calls here
    taken = []
    for _ in range(100):  # 10 s in 0.1 s steps
        clock.advance(S // 10)
        if gate.try_take():
            gate.done()
            taken.append(clock.now_ns() - 1_000 * S)
    assert taken == [3 * S, 6 * S, 9 * S]
    assert gate.wait_s() == pytest.approx(2.0)
    clock.advance(S)
    assert gate.wait_s() == pytest.approx(1.0) and not gate.try_take()


def test_call_gate_counts_the_interval_from_the_end_of_a_slow_call():
    clock = FakeClock(0)
    gate = ChainCallGate(3.0, clock.now_ns)
    assert gate.try_take()
    clock.advance(S // 2)  # the call takes 0.5 s; the broker counted it somewhere in between
    assert not gate.try_take() and gate.wait_s() == 3.0  # one call at a time
    gate.done()
    clock.advance(3 * S - 1)
    assert not gate.try_take()
    clock.advance(1)
    assert gate.try_take()  # 3.5 s after the slow call started, 3 s after it ended


# --------------------------------------------------------------------------- the shell's fetch


def _chain_json(oi: int = 4_321_000, iv: float = 23.45, delta: float = 0.612) -> dict:
    side = {"oi": oi, "implied_volatility": iv, "greeks": {"delta": delta}, "last_price": 250.1}
    return {
        "data": {"last_price": 25010.0, "oc": {"25000.000000": {"ce": side, "pe": dict(side)}}},
        "status": "success",
    }


class Broker:
    """A fake DhanHQ that answers POST /optionchain and records (fake time, body) per call."""

    def __init__(self, clock: FakeClock, answer=None) -> None:
        self.clock = clock
        self.calls: list[tuple[int, dict]] = []
        self.answer = answer or (lambda: httpx.Response(200, json=_chain_json()))

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path.endswith("/optionchain")
        self.calls.append((self.clock.now_ns(), json.loads(request.content)))
        resp = self.answer()
        return await resp if asyncio.iscoroutine(resp) else resp


def _feed(broker: Broker, clock: FakeClock, **cfg) -> BrokerChainFeed:
    async def fake_sleep(seconds: float) -> None:
        clock.advance(round(seconds * S))

    rest = DhanRest(
        "http://broker.test/v2",
        "1100000001",
        "token",
        transport=httpx.MockTransport(broker),
        clock=clock,
        sleep=fake_sleep,
        retry=RetryPolicy(attempts=1),
    )
    return BrokerChainFeed(rest, OptionChainConfig(risk_free_rate=RATE, **cfg), clock.now_ns)


def _signal(index: str, ts: int, n: int) -> Signal:
    return Signal(
        msg_id=f"sig-{n}",
        ts_event=ts,
        ts_init=0,
        tick_id=f"{ts // 1_000_000}-0",
        index=index,
        direction="bullish",
        timeframe_min=1,
        candle_ts=ts,
        close_paise=2_501_000,
        supertrend_paise=2_499_000,
        adx=20.0,
        confidence=0.7,
        multiplier=1,
        reason="test",
    )


def test_shell_fetches_on_demand_at_most_once_per_3s_across_indices_and_never_waits():
    clock = FakeClock(T0)
    broker = Broker(clock)
    feed = _feed(broker, clock, broker_chain_max_age_s=1.0)
    nifty, insts = _view(broker_chain_max_age_s=1.0)
    bank, _ = _view(BANKNIFTY, broker_chain_max_age_s=1.0)
    views = {"NIFTY": nifty, "BANKNIFTY": bank}
    # (wall offset from T0 in 0.1 s, index) of each signal; event time = wall time here
    plan = [
        (0, "NIFTY"),
        (5, "BANKNIFTY"),
        (29, "BANKNIFTY"),
        (30, "BANKNIFTY"),
        (31, "NIFTY"),
        (45, "NIFTY"),
        (60, "NIFTY"),
        (61, "BANKNIFTY"),
        (95, "BANKNIFTY"),
    ]

    async def main() -> list[str]:
        out = []
        for n, (tenths, index) in enumerate(plan):
            clock.advance(T0 + tenths * S // 10 - clock.now_ns())
            out.append(await feed.refresh(views[index], _signal(index, clock.now_ns(), n)))
            assert clock.now_ns() == T0 + tenths * S // 10  # nothing waited on the fake clock
        await feed.rest.aclose()
        return out

    outcomes = asyncio.run(main())
    assert outcomes == [
        "merged",
        "rate_skipped",
        "rate_skipped",
        "merged",
        "rate_skipped",
        "rate_skipped",
        "merged",
        "rate_skipped",
        "merged",
    ]
    times = [t - T0 for t, _ in broker.calls]
    assert times == [0, 3 * S, 6 * S, 9 * S + S // 2]
    assert all(b - a >= 3 * S for a, b in zip(times, times[1:], strict=False))
    assert [b["UnderlyingScrip"] for _, b in broker.calls] == [13, 25, 13, 25]
    assert broker.calls[0][1] == {"UnderlyingScrip": 13, "UnderlyingSeg": "IDX_I", "Expiry": EXP}
    assert feed.counts == {"calls": 4, "merged": 4, "errors": 0, "rate_skipped": 5, "fresh": 0}
    q = nifty.quote(find(insts, EXP, 25000, "CE").security_id, T0 + 6 * S)
    assert (q.oi, q.iv_pct100, q.delta, q.ts_chain) == (4_321_000, 23.45, 0.612, T0 + 6 * S)


def test_shell_uses_a_fresh_snapshot_without_calling_again():
    clock = FakeClock(T0)
    broker = Broker(clock)
    feed = _feed(broker, clock)
    view, _ = _view()

    async def main() -> list[str]:
        out = [await feed.refresh(view, _signal("NIFTY", T0, 1))]
        clock.advance(5 * S)
        out.append(await feed.refresh(view, _signal("NIFTY", T0 + 5 * S, 2)))
        await feed.rest.aclose()
        return out

    assert asyncio.run(main()) == ["merged", "fresh"] and len(broker.calls) == 1


@pytest.mark.parametrize(
    "answer, error",
    [
        (
            lambda: httpx.Response(500, json={"errorCode": "DH-908", "errorMessage": "down"}),
            "DH-908",
        ),
        (
            lambda: httpx.Response(429, json={"errorCode": "DH-904", "errorMessage": "busy"}),
            "DH-904",
        ),
        (lambda: httpx.Response(200, json={"status": "success"}), "BAD_RESPONSE"),
        (lambda: asyncio.sleep(5, httpx.Response(200, json=_chain_json())), "no answer within"),
    ],
    ids=["5xx", "429", "bad-body", "timeout"],
)
def test_shell_broker_error_is_counted_logged_and_the_quote_stays_on_black_scholes(
    answer, error, caplog
):
    clock = FakeClock(T0)
    broker = Broker(clock, answer)
    feed = _feed(broker, clock, broker_chain_timeout_s=0.05)
    view, insts = _view()

    async def main() -> str:
        out = await feed.refresh(view, _signal("NIFTY", T0, 1))
        await feed.rest.aclose()
        return out

    with caplog.at_level(logging.WARNING, logger="entries"):
        assert asyncio.run(main()) == "error"
    assert feed.counts["errors"] == 1 and feed.counts["calls"] == 1 and len(broker.calls) == 1
    warned = [
        r
        for r in caplog.records
        if r.getMessage() == "option chain failed; Black-Scholes from ticks"
    ]
    assert len(warned) == 1 and error in f"{warned[0].fields['code']} {warned[0].fields['error']}"
    assert view.broker_chain is None
    q = view.quote(find(insts, EXP, 25000, "CE").security_id, T0)
    assert q.ts_chain is None and q.iv_pct100 == pytest.approx(16, abs=0.05)
