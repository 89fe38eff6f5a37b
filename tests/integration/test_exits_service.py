"""The exits service on real Redis and PostgreSQL, with signals and entries not running.

An entry intent is written straight onto ``orders.requests`` (as if entries had sent it); the
executor fills it on paper; exits alone must close the position at its stop-loss, at the exact
ticks an independent computation from the recorded session predicts. Then exits' Redis state is
wiped (as if Redis had been lost) and the position index and high-water mark come back from
Postgres.
"""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

import orjson
import pytest
import redis
import yaml

from shared import bus as busmod
from shared import wire
from shared.instruments import parse_scrip_master
from shared.keys import Keys
from shared.messages import OrderIntent, PositionOpened, Tick
from shared.synth import generate_session
from tests.helpers import eventually
from tests.integration.procs import ROOT, Proc, service_env

pytestmark = pytest.mark.integration
SL_PCT = 0.03
LATENCY_MS = 250


@pytest.fixture
def session(tmp_path: Path) -> tuple[Path, Path]:
    pq, csv = tmp_path / "session.parquet", tmp_path / "instruments.csv"
    generate_session(trading_day=date(2026, 12, 1), seed=11, out_parquet=pq, out_instruments_csv=csv,
                     start_hhmm="09:15", end_hhmm="09:50")
    return pq, csv


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    cfg = yaml.safe_load((ROOT / "config" / "algo.yml").read_text())
    cfg["risk"].update(sl_pct=SL_PCT, tp_pct=5.0, emergency_sl_pct=0.9)
    cfg["paper"].update(fill_latency_ms=LATENCY_MS, slippage_ticks=0)
    out = tmp_path / "algo.yml"
    out.write_text(yaml.safe_dump(cfg))
    return out


def read_ticks(r: redis.Redis, keys: Keys) -> list[Tick]:
    dec = wire.StreamDecoder("ticks")
    return [m for m in (dec.decode(f) for _, f in r.xrange(keys.stream("ticks"))) if isinstance(m, Tick)]


def first_fill(ticks: list[Tick], sid: int, after: Tick) -> Tick:
    due = after.ts_event + LATENCY_MS * 1_000_000
    return next(t for t in ticks if t.security_id == sid and t.ts_event >= due and t.tick_id != after.tick_id
                and (t.ts_event, t.tick_id) > (after.ts_event, after.tick_id))


def test_exits_closes_at_stop_loss_with_signals_and_entries_down_and_recovers_from_postgres(
    session, config_file, pg_schema, namespace, redis_url, tmp_path
):
    pq, csv = session
    keys = Keys(namespace)
    led = pg_schema.ledger()
    instruments = parse_scrip_master(csv)
    led.upsert_instruments(instruments)
    env = service_env(namespace, pg_schema.schema, redis_url, pg_schema.url,
                      SCALPER_CONFIG=str(config_file), SCALPER_REPLAY_FILE=str(pq))
    r = redis.Redis.from_url(redis_url)
    procs = [Proc("services.feed", env, tmp_path), Proc("services.executor", env, tmp_path),
             Proc("services.exits", env, tmp_path)]
    try:
        eventually(lambda: (raw := r.get(keys.replay_status())) and orjson.loads(raw)["state"] == "done",
                   60, message="feed finished")
        ticks = read_ticks(r, keys)
        by_sid = {i.security_id: i for i in instruments}
        # Enter the CE that trades most in the session, from a tick one tenth of the way in.
        start = ticks[len(ticks) // 10]
        counts: dict[int, int] = {}
        for t in ticks:
            if t.segment == "NSE_FNO" and by_sid[t.security_id].option_type == "CE":
                counts[t.security_id] = counts.get(t.security_id, 0) + 1
        sid = max(counts, key=counts.__getitem__)
        inst = by_sid[sid]
        # Independent expectation from the recorded ticks.
        fill_in = first_fill(ticks, sid, start)
        later = [t for t in ticks if t.security_id == sid and (t.ts_event, t.tick_id) > (fill_in.ts_event, fill_in.tick_id)]
        breach = next((t for t in later if (t.ltp_paise - fill_in.ltp_paise) <= -SL_PCT * fill_in.ltp_paise), None)
        assert breach is not None, "seeded session has no stop-loss breach for the chosen option"
        fill_out = first_fill(ticks, sid, breach)

        intent = OrderIntent(
            msg_id="intent-test-1", ts_event=start.ts_event, ts_init=start.ts_event, tick_id=start.tick_id,
            kind="entry", correlation_id="E-TEST1", position_id="P-TEST1", index="NIFTY",
            segment="NSE_FNO", security_id=sid, symbol=inst.symbol, side="BUY",
            quantity=inst.lot_size, lot_size=inst.lot_size, ref_price_paise=start.ltp_paise,
            reason="injected by test",
        )

        async def put() -> None:
            c = busmod.connect(redis_url)
            await busmod.Bus(c, keys, {}).publish("orders.requests", [intent])
            await c.aclose()

        asyncio.run(put())
        tracker = eventually(lambda: (t := led.get_tracker("P-TEST1")) and t.status == "exited" and t, 60,
                             message="position closed by exits")
        assert tracker.entry_tick_id == fill_in.tick_id and tracker.entry_price_paise == fill_in.ltp_paise
        assert tracker.exit_reason.startswith("stop_loss"), tracker.exit_reason
        assert tracker.exit_tick_id == fill_out.tick_id and tracker.exit_price_paise == fill_out.ltp_paise
        assert tracker.pnl_paise == (fill_out.ltp_paise - fill_in.ltp_paise) * inst.lot_size
        assert tracker.charges_paise > 0
        exits = [wire.StreamDecoder("orders.requests").decode(f) for _, f in r.xrange(keys.stream("orders.requests"))]
        exits = [m for m in exits if m.kind == "exit"]
        assert len(exits) == 1 and exits[0].tick_id == breach.tick_id  # emitted on the breaching tick
        pnl = r.hgetall(keys.pnl("P-TEST1"))
        assert set(pnl) >= {b"pnl_paise", b"pnl_pct", b"ltp_paise", b"hwm_pnl_paise", b"hwm_pnl_pct", b"ts_event"}
        assert float(pnl[b"pnl_pct"]) <= -SL_PCT  # a fraction, one unit everywhere
        assert int(pnl[b"hwm_pnl_paise"]) >= int(pnl[b"pnl_paise"])
    finally:
        for p in procs:
            p.kill()
        r.close()
        led.close()


def test_position_index_and_high_water_mark_come_back_from_postgres(
    session, config_file, pg_schema, namespace, redis_url, tmp_path
):
    """Open a position, let exits track it, wipe exits' Redis state, restart exits: it rebuilds
    the position and its high-water mark from the ledger."""
    pq, csv = session
    keys = Keys(namespace)
    led = pg_schema.ledger()
    led.upsert_instruments(parse_scrip_master(csv))
    cfg = yaml.safe_load(config_file.read_text())
    cfg["risk"].update(sl_pct=0.99, tp_pct=9.0, emergency_sl_pct=0.0, rule_order=["stop_loss"])
    config_file.write_text(yaml.safe_dump(cfg))
    env = service_env(namespace, pg_schema.schema, redis_url, pg_schema.url,
                      SCALPER_CONFIG=str(config_file), SCALPER_REPLAY_FILE=str(pq))
    r = redis.Redis.from_url(redis_url)
    feed = Proc("services.feed", env, tmp_path)
    exits = Proc("services.exits", env, tmp_path)
    try:
        eventually(lambda: (raw := r.get(keys.replay_status())) and orjson.loads(raw)["state"] == "done", 60)
        ticks = read_ticks(r, keys)
        first = next(t for t in ticks if t.segment == "NSE_FNO")
        sid = first.security_id
        mine = [t for t in ticks if t.security_id == sid]
        led.open_tracker(position_id="P-HWM", index_key="NIFTY", segment="NSE_FNO", security_id=sid,
                         symbol="X", option_type="CE", quantity=65, status="active",
                         entry_price_paise=first.ltp_paise, entry_tick_id=first.tick_id, ts_entry=first.ts_event)
        opened = PositionOpened(msg_id="open-P-HWM", ts_event=first.ts_event, ts_init=0, tick_id=first.tick_id,
                                position_id="P-HWM", index="NIFTY", segment="NSE_FNO", security_id=sid,
                                symbol="X", quantity=65, entry_price_paise=first.ltp_paise,
                                entry_tick_id=first.tick_id, ts_entry=first.ts_event, lot_size=65)

        async def put() -> None:
            c = busmod.connect(redis_url)
            await busmod.Bus(c, keys, {}).publish("positions", [opened])
            await c.aclose()

        asyncio.run(put())
        best = max(t.ltp_paise for t in mine[1:])
        expected_hwm = (max(best, first.ltp_paise) - first.ltp_paise) * 65
        eventually(lambda: (t := led.get_tracker("P-HWM")) and t.hwm_pnl_paise == expected_hwm, 30,
                   message="HWM persisted to Postgres")
        exits.kill()
        # Lose exits' Redis state (as after a Redis restart without the checkpoint).
        r.delete(keys.checkpoint("exits"), keys.pnl("P-HWM"))
        exits = Proc("services.exits", env, tmp_path, name="exits2")
        pnl = eventually(lambda: r.hgetall(keys.pnl("P-HWM")), 30, message="PnL hash rebuilt")
        assert int(pnl[b"hwm_pnl_paise"]) == expected_hwm
        assert "rebuilt position from ledger" in exits.log()
    finally:
        feed.kill()
        exits.kill()
        r.close()
        led.close()
