"""End to end: the supervised six-service pipeline replays the bundled session in paper mode.

It must close at least one trade whose PnL is (exit - entry) x quantity with both prices being
the LTPs of the recorded ticks that filled the orders, and two full-speed replays must give
identical ledgers (trades, times, prices, reasons, orders, fills, decisions).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import msgspec
import psycopg
import pytest
import redis

from shared import wire
from shared.keys import Keys
from shared.messages import Signal, Tick

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample" / "session.parquet"
DB_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def replay(name: str, redis_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DATABASE_URL=DB_URL, REDIS_URL=redis_url, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "replay", str(SAMPLE), "--speed", "max",
         "--namespace", name, "--schema", name, "--run-dir", str(ROOT / "run" / name),
         "--timeout", "900", *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )


def ledger(schema: str) -> dict[str, list[tuple]]:
    with psycopg.connect(DB_URL) as c:
        c.execute(f"SET search_path = {schema}")
        q = {
            "trades": "SELECT position_id, index_key, security_id, symbol, status, quantity,"
                      " entry_price_paise, exit_price_paise, entry_tick_id, exit_tick_id, ts_entry,"
                      " ts_exit, exit_reason, pnl_paise FROM position_trackers ORDER BY position_id",
            "orders": "SELECT correlation_id, intent_msg_id, position_id, kind, side, security_id,"
                      " quantity, status, filled_qty, avg_price_paise, reason, ts_intent, intent_tick_id"
                      " FROM orders ORDER BY correlation_id",
            "fills": "SELECT fill_id, correlation_id, side, quantity, price_paise, ts_event, tick_id"
                     " FROM fills ORDER BY fill_id",
            "signals": "SELECT msg_id, index_key, direction, candle_ts, tick_id, reason FROM signals ORDER BY msg_id",
        }
        return {k: c.execute(v).fetchall() for k, v in q.items()}


def decisions(r: redis.Redis, ns: str) -> list[tuple]:
    dec = wire.StreamDecoder("entries.decisions")
    out = []
    for _, f in r.xrange(Keys(ns).stream("entries.decisions")):
        d = dec.decode(f)
        out.append((d.msg_id, d.signal_id, d.accepted, d.rule, d.reason, d.tick_id))
    return sorted(out)


@pytest.fixture
def two_runs(redis_url):
    names = [f"e2e_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    yield names
    r = redis.Redis.from_url(redis_url)
    with psycopg.connect(DB_URL, autocommit=True) as c:
        for n in names:
            c.execute(f"DROP SCHEMA IF EXISTS {n} CASCADE")
            for k in r.scan_iter(match=f"scalper:{{{n}}}:*", count=2000):
                r.delete(k)
    r.close()


def test_replay_closes_trades_at_recorded_prices_and_is_repeatable(two_runs, redis_url):
    assert SAMPLE.exists(), "bundled sample session missing"
    a, b = two_runs
    first = replay(a, redis_url)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "trades" in first.stdout and "SYNTHETIC" in first.stdout
    la = ledger(a)
    closed = [t for t in la["trades"] if t[4] == "exited"]
    assert closed, "no closed trade"

    r = redis.Redis.from_url(redis_url)
    ticks = Keys(a).stream("ticks")
    dec = wire.StreamDecoder("ticks")
    for (_pid, _ix, sid, _sym, _st, qty, entry, exit_, entry_tick, exit_tick, *_rest, pnl) in closed:
        t_in = dec.decode(r.xrange(ticks, min=entry_tick, max=entry_tick)[0][1])
        t_out = dec.decode(r.xrange(ticks, min=exit_tick, max=exit_tick)[0][1])
        assert isinstance(t_in, Tick) and isinstance(t_out, Tick)
        assert t_in.security_id == sid == t_out.security_id
        assert entry == t_in.ltp_paise and exit_ == t_out.ltp_paise  # slippage 0 in the bundled config
        assert pnl == (exit_ - entry) * qty
    # the report prints each closed trade
    assert first.stdout.count("NIFTY-") >= len(closed)
    _assert_latency_is_instrumented(r, a)

    second = replay(b, redis_url)
    assert second.returncode == 0, second.stderr[-3000:]
    assert ledger(b) == la
    assert decisions(r, b) == decisions(r, a)
    r.close()


def _assert_latency_is_instrumented(r: redis.Redis, ns: str) -> None:
    """The originating tick's stamp travels in the messages (tick -> Signal -> entry intent, and
    option tick -> exit intent), and every stage service exposes its histograms."""
    keys = Keys(ns)
    ticks = wire.StreamDecoder("ticks")

    def at(tick_id: str):
        return ticks.decode(r.xrange(keys.stream("ticks"), min=tick_id, max=tick_id)[0][1])

    sig_dec, int_dec = wire.StreamDecoder("signals"), wire.StreamDecoder("orders.requests")
    signals = [m for m in (sig_dec.decode(f) for _, f in r.xrange(keys.stream("signals")))
               if isinstance(m, Signal)]
    intents = [int_dec.decode(f) for _, f in r.xrange(keys.stream("orders.requests"))]
    assert signals and intents
    for s in signals:
        assert s.ts_origin == at(s.tick_id).ts_init > 0, s.msg_id
    by_tick = {s.tick_id: s for s in signals}
    entries = [i for i in intents if i.kind == "entry"]
    exits = [i for i in intents if i.kind == "exit" and i.ts_origin]
    assert entries and exits
    for i in entries:
        assert i.ts_origin == by_tick[i.tick_id].ts_origin, i.correlation_id
    for i in exits:
        assert i.ts_origin == at(i.tick_id).ts_init, i.correlation_id
    # each service's processing-time and end-to-end histograms (kept for heartbeat_ttl_s)
    wanted = {"signals": {"queue", "batch"}, "entries": {"queue", "batch"},
              "executor": {"queue", "batch", "tick_to_order_entry", "tick_to_order_exit"},
              "exits": {"queue", "batch", "tick_to_exit_intent"}, "recorder": {"queue", "batch"}}
    for service, stages in wanted.items():
        raw = r.get(keys.metrics(service))
        assert raw, f"no metrics for {service}"
        doc = msgspec.json.decode(raw)
        assert stages <= set(doc["histograms"]), (service, sorted(doc["histograms"]))
