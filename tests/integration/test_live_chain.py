"""Live entries against the DhanHQ simulator: the option chain (POST /v2/optionchain) is fetched
on demand, never more than once per 3 s of wall time, and a pick's quote carries the broker's OI,
IV and delta; signals that find the call slot busy are decided at once on Black-Scholes."""

from __future__ import annotations

import re
import time

import httpx
import orjson
import pytest
import redis
import yaml

from services.feed.core import session_messages
from services.feed.replay import load_session
from shared import wire
from shared.clock import hhmm_to_minutes, ist_minute_of_day
from shared.instruments import parse_scrip_master
from shared.keys import Keys
from shared.messages import Signal, Tick
from shared.simrun import SIM_CLIENT, SIM_TOKEN, live_env, start_simulator
from tests.helpers import eventually
from tests.integration.procs import ROOT, Proc, service_env

pytestmark = pytest.mark.integration
SAMPLE = ROOT / "data" / "sample"
MARK = "(oi/iv/delta: broker chain)"
QUOTE = re.compile(r"sid (\d+),.*?; ltp [\d.]+ iv ([\d.]+)% delta (-?[\d.]+) oi (\d+)")
RUN_S = 8.0
"""Wall seconds of signals: long enough for three 3-second call slots."""


def test_live_entries_fetch_the_chain_at_most_once_per_3s_and_picks_carry_its_oi_iv(
    pg_schema, namespace, redis_url, tmp_path
):
    sim, ready = start_simulator(SAMPLE / "session.parquet", SAMPLE / "instruments.csv",
                                 tmp_path / "dhansim.log", speed="paused")
    control = ready["control_url"]
    r = redis.Redis.from_url(redis_url)
    led = pg_schema.ledger()
    entries = None
    try:
        httpx.post(f"{control}/advance", json={"until_ist": "09:40:00"}, timeout=60).raise_for_status()
        led.upsert_instruments(parse_scrip_master(SAMPLE / "instruments.csv"))
        cfg = yaml.safe_load((ROOT / "config" / "algo.yml").read_text())
        cfg["runtime"]["upstream_wait_s"] = 0.05  # exits/executor are not running here
        cfg["option_chain"]["broker_chain_max_age_s"] = 1.0
        cfg_path = tmp_path / "algo.yml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        keys = Keys(namespace)
        # the ticks the simulator has released, as the feed would have written them
        rec = load_session(SAMPLE / "session.parquet", from_hhmm="09:15", to_hhmm="09:40")
        pipe = r.pipeline(transaction=False)
        index_ticks: list[Tick] = []
        for tid, msg in session_messages(rec, lambda: 0):
            pipe.xadd(keys.stream("ticks"), wire.encode(msg), id=tid)
            if isinstance(msg, Tick) and msg.segment == "IDX_I" and msg.security_id == 13:
                index_ticks.append(msg)
        pipe.execute()
        # signals 2 s of event time apart (more than broker_chain_max_age_s: each wants a fetch)
        chosen: list[Tick] = []
        for t in index_ticks:
            if hhmm_to_minutes("09:21") <= ist_minute_of_day(t.ts_event) and (
                not chosen or t.ts_event - chosen[-1].ts_event >= 2_000_000_000
            ):
                chosen.append(t)
        assert len(chosen) >= 200

        env = service_env(namespace, pg_schema.schema, redis_url, pg_schema.url, **live_env(ready),
                          SCALPER_CONFIG=str(cfg_path))
        entries = Proc("services.entries", env, tmp_path)
        dec = wire.StreamDecoder("entries.decisions")

        def decisions() -> list:
            return [dec.decode(f) for _, f in r.xrange(keys.stream("entries.decisions"))]

        t0 = time.monotonic()  # before any call: bounds the wall time the calls can span
        t_first = t0
        sent = 0
        while sent < len(chosen) and (sent < 2 or time.monotonic() - t_first < RUN_S):
            t = chosen[sent]
            sig = Signal(msg_id=f"sig-chain-{sent}", ts_event=t.ts_event, ts_init=0, tick_id=t.tick_id,
                         index="NIFTY", direction="bullish", timeframe_min=1, candle_ts=t.ts_event,
                         close_paise=t.ltp_paise, supertrend_paise=t.ltp_paise - 2000, adx=20.0,
                         confidence=0.7, multiplier=1, reason="test signal")
            r.xadd(keys.stream("signals"), wire.encode(sig))
            sent += 1
            eventually(lambda n=sent: len({d.signal_id for d in decisions()}) >= n, timeout=30,
                       message=f"a decision for signal {sent - 1}; see {entries.log_path}")
            if sent == 1:
                t_first = time.monotonic()  # the service is up: signals for RUN_S from here
        elapsed_s = time.monotonic() - t0
        assert sent < len(chosen), "signals ran out before RUN_S"
        state = httpx.get(f"{control}/state", timeout=10).json()
        calls = state["requests"]["optionchain"]
        # the simulator enforces DhanHQ's 1-per-3-s window in wall time: it never had to refuse
        assert state["rate_limited"]["optionchain"] == 0
        assert 2 <= calls <= 1 + int(elapsed_s // 3), (calls, elapsed_s, sent)
        log = entries.log()
        assert log.count('"msg":"option chain merged"') == calls
        assert log.count('"msg":"option chain not fetched: call slot busy') >= sent - calls - 1

        # the service's counters reach its heartbeat (refreshed every second)
        def counters():
            for k in r.scan_iter(match=keys.heartbeat("entries", "*")):
                hb = orjson.loads(r.get(k) or b"{}")
                if hb.get("broker_chain", {}).get("calls") == calls:
                    return hb["broker_chain"]
            return None

        got = eventually(counters, timeout=10, message="broker_chain counters in the heartbeat")
        assert got["merged"] == calls and got["errors"] == 0 and got["rate_skipped"] >= 1

        ds = decisions()
        with_chain = [d for d in ds if MARK in d.reason]
        without = [d for d in ds if MARK not in d.reason and QUOTE.search(d.reason)]
        assert with_chain and without, [d.reason for d in ds]
    finally:
        if entries is not None:
            entries.terminate()

    # the chain the simulator serves (paused: the same answer entries got)
    def chain():
        resp = httpx.post(f"{ready['rest_url']}/optionchain", timeout=10,
                          headers={"access-token": SIM_TOKEN, "client-id": SIM_CLIENT},
                          json={"UnderlyingScrip": 13, "UnderlyingSeg": "IDX_I",
                                "Expiry": with_chain[0].reason.split("exp ", 1)[1][:10]})
        return resp.json() if resp.status_code == 200 else None

    try:
        oc = eventually(chain, timeout=10, interval=0.5)["data"]["oc"]
    finally:
        sim.terminate()
        sim.wait(20)
        r.close()
        led.close()
    legs = {side["security_id"]: side for row in oc.values() for side in row.values()}
    for d in with_chain:
        sid, iv, delta, oi = QUOTE.search(d.reason).groups()
        leg = legs[int(sid)]
        assert int(oi) == leg["oi"] and iv == f"{leg['implied_volatility']:.2f}"
        assert delta == f"{leg['greeks']['delta']:.3f}"
