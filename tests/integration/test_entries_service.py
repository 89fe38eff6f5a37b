"""The entries service on real Redis and PostgreSQL: one signal -> exactly one intent; the same
signal delivered again (raw, bypassing publish dedupe), also after a restart -> no second intent."""

from __future__ import annotations

import uuid
from pathlib import Path

import msgspec
import pytest
import redis
import yaml

from services.feed.core import session_messages
from services.feed.replay import load_session
from shared import streamids, wire
from shared.clock import hhmm_to_minutes, ist_minute_of_day
from shared.instruments import parse_scrip_master
from shared.keys import Keys
from shared.messages import Signal, Tick
from tests.integration.pg import fresh_schema
from tests.integration.procs import ROOT, Proc, service_env

pytestmark = pytest.mark.integration
SAMPLE = ROOT / "data" / "sample"


def burst(env: dict[str, str], tmp: Path, name: str) -> Proc:
    p = Proc("services.entries", dict(env, SCALPER_BURST="1"), tmp, name=name)
    assert p.p.wait(120) == 0, p.log()[-3000:]
    return p


def test_one_signal_gives_one_intent_and_a_redelivered_signal_none(pg_schema, namespace, redis_url, tmp_path):
    keys = Keys(namespace)
    led = pg_schema.ledger()
    led.upsert_instruments(parse_scrip_master(SAMPLE / "instruments.csv"))
    cfg = yaml.safe_load((ROOT / "config" / "algo.yml").read_text())
    cfg["runtime"]["upstream_wait_s"] = 0.05  # live-mode bound: exits/executor are not running here
    cfg_path = tmp_path / "algo.yml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = service_env(namespace, pg_schema.schema, redis_url, pg_schema.url, SCALPER_CONFIG=str(cfg_path))
    r = redis.Redis.from_url(redis_url)
    rec = load_session(SAMPLE / "session.parquet", from_hhmm="09:15", to_hhmm="09:40")
    pipe = r.pipeline(transaction=False)
    last_index_tick = None
    for tid, msg in session_messages(rec, lambda: 0):
        pipe.xadd(keys.stream("ticks"), wire.encode(msg), id=tid)
        if isinstance(msg, Tick) and msg.segment == "IDX_I" and ist_minute_of_day(msg.ts_event) < hhmm_to_minutes("09:35"):
            last_index_tick = msg
    pipe.execute()
    assert last_index_tick is not None
    sig = Signal(msg_id="sig-test-1", ts_event=last_index_tick.ts_event, ts_init=0, tick_id=last_index_tick.tick_id,
                 index="NIFTY", direction="bullish", timeframe_min=1, candle_ts=last_index_tick.ts_event,
                 close_paise=last_index_tick.ltp_paise, supertrend_paise=last_index_tick.ltp_paise - 2000,
                 adx=20.0, confidence=0.7, multiplier=1, reason="test signal")
    raw = wire.encode(sig)
    r.xadd(keys.stream("signals"), raw)

    def intents():
        dec = wire.StreamDecoder("orders.requests")
        return [dec.decode(f) for _, f in r.xrange(keys.stream("orders.requests"))]

    def decisions():
        dec = wire.StreamDecoder("entries.decisions")
        return [dec.decode(f) for _, f in r.xrange(keys.stream("entries.decisions"))]

    try:
        burst(env, tmp_path, "entries1")
        got = intents()
        assert len(got) == 1, [d.reason for d in decisions()]
        it = got[0]
        assert it.kind == "entry" and it.side == "BUY" and it.signal_id == "sig-test-1"
        assert it.symbol.endswith("-CE") and it.quantity == it.lot_size == 65
        assert len(it.correlation_id) <= 30 and it.tick_id == sig.tick_id
        assert [d.accepted for d in decisions()] == [True]
        # feed.control got the strike window to subscribe
        assert r.xlen(keys.stream("feed.control")) >= 1

        r.xadd(keys.stream("signals"), raw)  # the same signal again, bypassing publish dedupe
        burst(env, tmp_path, "entries2")  # a restarted process: memory comes from the checkpoint
        assert len(intents()) == 1
        ds = decisions()
        assert len(ds) == 2 and not ds[1].accepted and ds[1].rule == "duplicate_signal"
    finally:
        r.close()
        led.close()


def _entries_run(ns: str, schema, redis_url: str, tmp: Path, cfg_path: Path, *, frontier_at: int | None) -> dict:
    """Ticks of 09:15-09:40 and one bullish signal at the last index tick before 09:35. With
    ``frontier_at``, first a signals partition reports its frontier at that tick and entries runs
    with no signal at all (it may only read ahead, in ``idle``); then the signal arrives."""
    keys = Keys(ns)
    led = schema.ledger()
    led.upsert_instruments(parse_scrip_master(SAMPLE / "instruments.csv"))
    led.close()
    env = service_env(ns, schema.schema, redis_url, schema.url, SCALPER_CONFIG=str(cfg_path))
    r = redis.Redis.from_url(redis_url)
    rec = load_session(SAMPLE / "session.parquet", from_hhmm="09:15", to_hhmm="09:40")
    ids, last_index_tick = [], None
    pipe = r.pipeline(transaction=False)
    for tid, msg in session_messages(rec, lambda: 0):
        pipe.xadd(keys.stream("ticks"), wire.encode(msg), id=tid)
        ids.append(tid)
        if isinstance(msg, Tick) and msg.segment == "IDX_I" and ist_minute_of_day(msg.ts_event) < hhmm_to_minutes("09:35"):
            last_index_tick = msg
    pipe.execute()
    assert last_index_tick is not None
    out: dict = {}
    try:
        if frontier_at is not None:
            r.sadd(keys.signals_partitions(), "signals")
            r.set(keys.frontier("signals"), ids[frontier_at])
            burst(env, tmp, f"{ns}-idle")
            cp = msgspec.msgpack.decode(r.get(keys.checkpoint("entries")))
            out["cursor"] = cp["tick_cursor"]
            out["feed_control_before_signal"] = r.xlen(keys.stream("feed.control"))
            r.set(keys.frontier("signals"), streamids.successor(last_index_tick.tick_id))
        sig = Signal(msg_id="sig-test-idle", ts_event=last_index_tick.ts_event, ts_init=0,
                     tick_id=last_index_tick.tick_id, index="NIFTY", direction="bullish", timeframe_min=1,
                     candle_ts=last_index_tick.ts_event, close_paise=last_index_tick.ltp_paise,
                     supertrend_paise=last_index_tick.ltp_paise - 2000, adx=20.0, confidence=0.7,
                     multiplier=1, reason="test signal")
        r.xadd(keys.stream("signals"), wire.encode(sig))
        burst(env, tmp, f"{ns}-signal")
        dec = wire.StreamDecoder("entries.decisions")
        out["decisions"] = [(d.accepted, d.rule, d.reason) for _, f in r.xrange(keys.stream("entries.decisions"))
                            for d in [dec.decode(f)]]
        idec = wire.StreamDecoder("orders.requests")
        out["intents"] = [(i.msg_id, i.security_id, i.quantity, i.limit_price_paise,
                           i.correlation_id) for _, f in r.xrange(keys.stream("orders.requests")) for i in [idec.decode(f)]]
        out["ids"] = ids
    finally:
        r.close()
    return out


def test_reading_ticks_ahead_between_signals_stops_before_the_signals_frontier_and_changes_no_decision(
        pg_schema, namespace, redis_url, tmp_path):
    """Between signals entries reads ticks ahead (idle), never at or past the signals frontier,
    and the chain window follows spot without a signal; the decision of a later signal is the
    same as when every tick is read at the signal."""
    cfg = yaml.safe_load((ROOT / "config" / "algo.yml").read_text())
    cfg["runtime"]["upstream_wait_s"] = 0.05
    cfg_path = tmp_path / "algo.yml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    at = 6_000
    ahead = _entries_run(namespace, pg_schema, redis_url, tmp_path, cfg_path, frontier_at=at)
    assert ahead["cursor"] == ahead["ids"][at - 1], "read ahead exactly to the tick before the frontier"
    assert ahead["feed_control_before_signal"] >= 1, "the strike window was subscribed without a signal"
    ns2 = f"t{uuid.uuid4().hex[:10]}"
    try:
        with fresh_schema() as s2:
            at_signal = _entries_run(ns2, s2, redis_url, tmp_path, cfg_path, frontier_at=None)
    finally:
        r = redis.Redis.from_url(redis_url)
        for k in r.scan_iter(match=f"scalper:{{{ns2}}}:*", count=1000):
            r.delete(k)
        r.close()
    assert len(ahead["intents"]) == 1
    assert ahead["decisions"] == at_signal["decisions"]
    assert ahead["intents"] == at_signal["intents"]
