"""Live entries against the DhanHQ simulator: the option chain (POST /v2/optionchain) is fetched
on demand, never more than once per 3 s of wall time, and a pick's quote carries the broker's OI,
IV and delta; signals that find the call slot busy are decided at once on Black-Scholes."""

from __future__ import annotations

import re
import time

import httpx
import orjson
import pytest

from shared.clock import hhmm_to_minutes, ist_minute_of_day
from shared.messages import Tick
from shared.simrun import SIM_CLIENT, SIM_TOKEN
from tests.helpers import eventually
from tests.integration.live_entries import LiveEntries

pytestmark = pytest.mark.integration
MARK = "(oi/iv/delta: broker chain)"
QUOTE = re.compile(r"sid (\d+),.*?; ltp [\d.]+ iv ([\d.]+)% delta (-?[\d.]+) oi (\d+)")
RUN_S = 8.0
"""Wall seconds of signals: long enough for three 3-second call slots."""


def test_live_entries_fetch_the_chain_at_most_once_per_3s_and_picks_carry_its_oi_iv(
    pg_schema, namespace, redis_url, tmp_path
):
    live = LiveEntries(pg_schema, namespace, redis_url, tmp_path, until_hhmm="09:40",
                       config={"option_chain": {"broker_chain_max_age_s": 1.0}})
    r, keys, entries = live.r, live.keys, live.entries
    assert entries is not None
    try:
        # signals 2 s of event time apart (more than broker_chain_max_age_s: each wants a fetch)
        chosen: list[Tick] = []
        for t in live.index_ticks:
            if hhmm_to_minutes("09:21") <= ist_minute_of_day(t.ts_event) and (
                not chosen or t.ts_event - chosen[-1].ts_event >= 2_000_000_000
            ):
                chosen.append(t)
        assert len(chosen) >= 200

        t0 = time.monotonic()  # before any call: bounds the wall time the calls can span
        t_first = t0
        sent = 0
        while sent < len(chosen) and (sent < 2 or time.monotonic() - t_first < RUN_S):
            live.signal(f"sig-chain-{sent}", chosen[sent])
            sent += 1
            eventually(lambda n=sent: len({d.signal_id for d in live.decisions()}) >= n, timeout=30,
                       message=f"a decision for signal {sent - 1}; see {entries.log_path}")
            if sent == 1:
                t_first = time.monotonic()  # the service is up: signals for RUN_S from here
        elapsed_s = time.monotonic() - t0
        assert sent < len(chosen), "signals ran out before RUN_S"
        state = httpx.get(f"{live.control}/state", timeout=10).json()
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

        ds = live.decisions()
        with_chain = [d for d in ds if MARK in d.reason]
        without = [d for d in ds if MARK not in d.reason and QUOTE.search(d.reason)]
        assert with_chain and without, [d.reason for d in ds]
        live.stop_entries()

        # the chain the simulator serves (paused: the same answer entries got)
        def chain():
            resp = httpx.post(f"{live.ready['rest_url']}/optionchain", timeout=10,
                              headers={"access-token": SIM_TOKEN, "client-id": SIM_CLIENT},
                              json={"UnderlyingScrip": 13, "UnderlyingSeg": "IDX_I",
                                    "Expiry": with_chain[0].reason.split("exp ", 1)[1][:10]})
            return resp.json() if resp.status_code == 200 else None

        oc = eventually(chain, timeout=10, interval=0.5)["data"]["oc"]
    finally:
        live.close()
    legs = {side["security_id"]: side for row in oc.values() for side in row.values()}
    for d in with_chain:
        sid, iv, delta, oi = QUOTE.search(d.reason).groups()
        leg = legs[int(sid)]
        assert int(oi) == leg["oi"] and iv == f"{leg['implied_volatility']:.2f}"
        assert delta == f"{leg['greeks']['delta']:.3f}"
