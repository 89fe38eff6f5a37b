"""Live entries against the DhanHQ simulator: the available balance is fetched between signals,
so a signal is decided on a current balance without a funds call on its path."""

from __future__ import annotations

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
from shared.simrun import live_env, start_simulator
from tests.helpers import eventually
from tests.integration.procs import ROOT, Proc, service_env

pytestmark = pytest.mark.integration
SAMPLE = ROOT / "data" / "sample"


def test_live_entries_fetch_funds_between_signals_and_a_signal_uses_them(pg_schema, namespace, redis_url, tmp_path):
    sim, ready = start_simulator(SAMPLE / "session.parquet", SAMPLE / "instruments.csv",
                                 tmp_path / "dhansim.log", speed="paused")
    control = ready["control_url"]
    r = redis.Redis.from_url(redis_url)
    led = pg_schema.ledger()
    entries = None
    try:
        httpx.post(f"{control}/advance", json={"until_ist": "09:30:00"}, timeout=60).raise_for_status()
        led.upsert_instruments(parse_scrip_master(SAMPLE / "instruments.csv"))
        cfg = yaml.safe_load((ROOT / "config" / "algo.yml").read_text())
        cfg["runtime"]["upstream_wait_s"] = 0.05  # exits/executor are not running here
        cfg["option_chain"]["broker_chain"] = False
        cfg["entries"]["funds_max_age_s"] = 30.0  # a fetch between signals stays usable for the test
        cfg_path = tmp_path / "algo.yml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        keys = Keys(namespace)
        rec = load_session(SAMPLE / "session.parquet", from_hhmm="09:15", to_hhmm="09:30")
        pipe = r.pipeline(transaction=False)
        index_ticks: list[Tick] = []
        for tid, msg in session_messages(rec, lambda: 0):
            pipe.xadd(keys.stream("ticks"), wire.encode(msg), id=tid)
            if isinstance(msg, Tick) and msg.segment == "IDX_I" and msg.security_id == 13:
                index_ticks.append(msg)
        pipe.execute()
        t = next(t for t in index_ticks if ist_minute_of_day(t.ts_event) >= hhmm_to_minutes("09:25"))

        env = service_env(namespace, pg_schema.schema, redis_url, pg_schema.url, **live_env(ready),
                          SCALPER_CONFIG=str(cfg_path))
        entries = Proc("services.entries", env, tmp_path)

        def funds_counts():
            for k in r.scan_iter(match=keys.heartbeat("entries", "*")):
                hb = orjson.loads(r.get(k) or b"{}")
                if "funds" in hb:
                    return hb["funds"]
            return None

        # no signal yet: the balance is fetched between signals
        idle = eventually(lambda: (c := funds_counts()) and c["idle_fetches"] >= 1 and c, timeout=30,
                          message=f"an idle funds fetch; see {entries.log_path}")
        assert idle["idle_errors"] == 0 and idle["on_path"] == 0 and idle["cached"] == 0
        sig = Signal(msg_id="sig-funds-0", ts_event=t.ts_event, ts_init=0, tick_id=t.tick_id,
                     index="NIFTY", direction="bullish", timeframe_min=1, candle_ts=t.ts_event,
                     close_paise=t.ltp_paise, supertrend_paise=t.ltp_paise - 2000, adx=20.0,
                     confidence=0.7, multiplier=1, reason="test signal")
        r.xadd(keys.stream("signals"), wire.encode(sig))
        dec = wire.StreamDecoder("entries.decisions")
        eventually(lambda: r.xlen(keys.stream("entries.decisions")) >= 1, timeout=30,
                   message=f"a decision; see {entries.log_path}")
        ds = [dec.decode(f) for _, f in r.xrange(keys.stream("entries.decisions"))]
        assert ds and all(d.rule != "funds_unknown" for d in ds), [d.reason for d in ds]  # a known balance
        after = eventually(lambda: (c := funds_counts()) and c["cached"] + c["on_path"] >= 1 and c, timeout=10,
                           message="the signal's funds outcome in the heartbeat")
        assert after["cached"] == 1 and after["on_path"] == 0  # decided on the balance fetched between signals
    finally:
        if entries is not None:
            entries.terminate()
        sim.terminate()
