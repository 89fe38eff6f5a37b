"""The signals service on real Redis and PostgreSQL.

- Indices are independent: two signals processes, each given a subset of the indices, publish
  exactly the signals one process given all of them publishes.
- A signals process killed with SIGKILL mid-run and restarted never emits a signal twice and
  loses none (the stream and the signals table equal the uninterrupted run's).
"""

from __future__ import annotations

import signal
from datetime import date
from pathlib import Path

import polars as pl
import pytest
import redis

from services.feed.core import TickIdAllocator
from shared import wire
from shared.keys import Keys
from shared.messages import Tick
from shared.synth import generate_session
from tests.helpers import eventually
from tests.integration.pg import fresh_schema
from tests.integration.procs import ROOT, Proc, service_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def index_ticks(tmp_path_factory) -> list[tuple[int, int, int]]:
    """(ts_ns, security_id, ltp_paise) for NIFTY (13) and SENSEX (51) over two hours."""
    tmp = tmp_path_factory.mktemp("sig")
    rows = []
    for seed, sid, scale in ((5, 13, 1.0), (9, 51, 3.2)):
        pq = tmp / f"s{seed}.parquet"
        generate_session(trading_day=date(2026, 12, 1), seed=seed, out_parquet=pq,
                         out_instruments_csv=tmp / f"i{seed}.csv", start_hhmm="09:15", end_hhmm="11:15",
                         strikes_each_side=1)
        df = pl.read_parquet(pq).filter(pl.col("segment") == "IDX_I")
        for ts, ltp in zip(df["ts_recv_ns"].to_list(), df["ltp"].to_list(), strict=True):
            rows.append((ts + (1 if sid == 51 else 0), sid, int(round(ltp * scale * 100 / 5)) * 5))
    rows.sort()
    return rows


def write_ticks(r: redis.Redis, keys: Keys, rows: list[tuple[int, int, int]]) -> None:
    ids = TickIdAllocator()
    pipe = r.pipeline(transaction=False)
    for ts, sid, ltp in rows:
        tid = ids.next_id(ts)
        t = Tick(msg_id=f"tick-{tid}", ts_event=ts, ts_init=ts, tick_id=tid, segment="IDX_I",
                 security_id=sid, ltp_paise=ltp)
        pipe.xadd(keys.stream("ticks"), wire.encode(t), id=tid)
    pipe.execute()


def signals_of(r: redis.Redis, keys: Keys) -> list[tuple]:
    dec = wire.StreamDecoder("signals")
    out = []
    for _, f in r.xrange(keys.stream("signals")):
        m = dec.decode(f)
        out.append((m.msg_id, type(m).__name__, m.index, m.tick_id, m.ts_event, getattr(m, "direction", ""), m.reason))
    return out


def run_burst(env: dict[str, str], tmp: Path, name: str) -> int:
    """Run a signals process until drained; returns how many entries it handled."""
    import orjson

    p = Proc("services.signals", dict(env, SCALPER_BURST="1"), tmp, name=name)
    assert p.p.wait(120) == 0, p.log()[-3000:]
    stopped = [orjson.loads(ln) for ln in p.log().splitlines() if '"msg":"stopped"' in ln]
    return int(stopped[-1]["handled"])


def test_partitioned_signals_equal_one_process_and_a_killed_process_never_duplicates(
    index_ticks, redis_url, tmp_path
):
    r = redis.Redis.from_url(redis_url)
    namespaces = []
    try:
        results = {}
        for mode in ("one", "split", "killed"):
            ns = f"sg{mode}{tmp_path.name[-6:]}".replace("_", "")
            namespaces.append(ns)
            keys = Keys(ns)
            write_ticks(r, keys, index_ticks)
            with fresh_schema() as s:
                env = service_env(ns, s.schema, redis_url, s.url)
                if mode == "one":
                    run_burst(env, tmp_path, "one")
                elif mode == "split":
                    run_burst(dict(env, SCALPER_SIGNALS_INDICES="NIFTY"), tmp_path, "nifty")
                    run_burst(dict(env, SCALPER_SIGNALS_INDICES="SENSEX,BANKNIFTY,FINNIFTY"), tmp_path, "rest")
                else:
                    small = dict(env, SCALPER_CONFIG=str(ROOT / "tests/integration/small_batches.yml"))
                    victim = Proc("services.signals", small, tmp_path, name="victim")
                    eventually(lambda k=keys: len(r.xrange(k.stream("signals"))) >= 2, 60, message="some signals")
                    victim.p.send_signal(signal.SIGKILL)
                    victim.p.wait(10)
                    assert run_burst(small, tmp_path, "restarted") > 0, "victim finished before the kill"
                led = s.ledger()
                rows = led.conn.execute("SELECT msg_id FROM signals ORDER BY msg_id").fetchall()
                led.close()
            results[mode] = (signals_of(r, keys), [x[0] for x in rows])
        one, one_rows = results["one"]
        assert any(x[1] == "Signal" for x in one), "the session produced no signal; nothing is tested"
        assert {x[2] for x in one} == {"NIFTY", "SENSEX"}
        split, _ = results["split"]
        assert sorted(split) == sorted(one)
        killed, killed_rows = results["killed"]
        ids = [x[0] for x in killed]
        assert len(ids) == len(set(ids)), "a signal was emitted twice"
        assert sorted(killed) == sorted(one)
        assert killed_rows == one_rows
    finally:
        for ns in namespaces:
            for k in r.scan_iter(match=f"scalper:{{{ns}}}:*", count=1000):
                r.delete(k)
        r.close()
