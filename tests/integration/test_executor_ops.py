"""The paper executor with the feed replaying a short synthetic session (no signals, entries or
exits running), driven the way an operator drives it.

- Paper mode slices exactly like live mode: an entry of 28 NIFTY lots (the compact master has no
  freeze quantity, so the NIFTY default 1800 applies) is two orders ``<cid>-1`` / ``<cid>-2``
  (1755 + 65) filled at one tick, one position of 1820; its exit is sliced too and closes it.
- ``scalper flatten`` emits an exit intent for every open position (one of them sliced) and the
  executor closes them all in Postgres.
- ``scalper halt``: a new entry is refused with a readable ``order.rejected`` event, while an
  exit intent is still executed.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
import redis

from services.entries.core import correlation_id_for
from services.executor.slicing import plan_slices
from services.exits.core import exit_correlation_id
from shared import bus as busmod
from shared import wire
from shared.instruments import parse_scrip_master
from shared.keys import Keys
from shared.messages import Message, OrderIntent, Tick
from shared.models import Instrument
from shared.synth import generate_session
from tests.helpers import eventually
from tests.integration.procs import ROOT, Proc, service_env

pytestmark = pytest.mark.integration
LOT = 65


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("ops")
    pq, csv = out / "session.parquet", out / "instruments.csv"
    generate_session(
        trading_day=date(2026, 12, 1),
        seed=7,
        out_parquet=pq,
        out_instruments_csv=csv,
        start_hhmm="09:15",
        end_hhmm="09:35",
    )
    return pq, csv


@pytest.fixture
def replayed(session, pg_schema, namespace, redis_url, tmp_path) -> Iterator[dict[str, Any]]:
    """Feed (replayed to the end) and paper executor running; the ledger, Redis, the ticks."""
    pq, csv = session
    keys = Keys(namespace)
    led = pg_schema.ledger()
    instruments = parse_scrip_master(csv)
    led.upsert_instruments(instruments)
    env = service_env(
        namespace, pg_schema.schema, redis_url, pg_schema.url, SCALPER_REPLAY_FILE=str(pq)
    )
    r = redis.Redis.from_url(redis_url)
    procs = [Proc("services.feed", env, tmp_path), Proc("services.executor", env, tmp_path)]
    try:
        eventually(
            lambda: (raw := r.get(keys.replay_status())) and orjson.loads(raw)["state"] == "done",
            60,
            message="feed finished",
        )
        dec = wire.StreamDecoder("ticks")
        ticks = [
            m
            for m in (dec.decode(f) for _, f in r.xrange(keys.stream("ticks")))
            if isinstance(m, Tick)
        ]
        yield {
            "led": led,
            "r": r,
            "keys": keys,
            "env": env,
            "ticks": ticks,
            "procs": procs,
            "by_sid": {i.security_id: i for i in instruments},
        }
    finally:
        for p in procs:
            p.kill()
        r.close()
        led.close()


def busiest_options(ticks: list[Tick], n: int) -> list[int]:
    counts: dict[int, int] = {}
    for t in ticks:
        if t.segment == "NSE_FNO":
            counts[t.security_id] = counts.get(t.security_id, 0) + 1
    return sorted(counts, key=lambda s: (-counts[s], s))[:n]


def entry_at(tick: Tick, inst: Instrument, name: str, lots: int) -> OrderIntent:
    msg_id = f"intent-{name}"
    return OrderIntent(
        msg_id=msg_id,
        ts_event=tick.ts_event,
        ts_init=tick.ts_event,
        tick_id=tick.tick_id,
        kind="entry",
        correlation_id=correlation_id_for(msg_id),
        position_id=f"P-{name}",
        index="NIFTY",
        segment="NSE_FNO",
        security_id=inst.security_id,
        symbol=inst.symbol,
        side="BUY",
        quantity=lots * LOT,
        lot_size=LOT,
        ref_price_paise=tick.ltp_paise,
        reason="injected by test",
    )


def exit_at(tick: Tick, entry: OrderIntent, quantity: int) -> OrderIntent:
    return msgspec.structs.replace(
        entry,
        msg_id=f"exit-{entry.position_id}",
        ts_event=tick.ts_event,
        ts_init=tick.ts_event,
        tick_id=tick.tick_id,
        kind="exit",
        side="SELL",
        quantity=quantity,
        correlation_id=exit_correlation_id(entry.position_id, 1),
        reason="test exit",
    )


def publish(redis_url: str, keys: Keys, *msgs: Message) -> None:
    async def put() -> None:
        c = busmod.connect(redis_url)
        await busmod.Bus(c, keys, {}).publish("orders.requests", list(msgs))
        await c.aclose()

    asyncio.run(put())


def stream(r: redis.Redis, keys: Keys, name: str) -> list[Message]:
    dec = wire.StreamDecoder(name)
    return [dec.decode(f) for _, f in r.xrange(keys.stream(name))]


def cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def active(led: Any, pid: str) -> Any:
    return eventually(
        lambda: (t := led.get_tracker(pid)) and t.status == "active" and t,
        30,
        message=f"{pid} opened",
    )


def test_paper_slices_like_live_at_the_freeze_limit_and_slices_the_exit_too(replayed, redis_url):
    led, r, keys, ticks = replayed["led"], replayed["r"], replayed["keys"], replayed["ticks"]
    sid = busiest_options(ticks, 1)[0]
    mine = [t for t in ticks if t.security_id == sid]
    entry = entry_at(mine[len(mine) // 4], replayed["by_sid"][sid], "PAPER28", lots=28)
    cid = entry.correlation_id
    publish(redis_url, keys, entry)
    tr = active(led, entry.position_id)
    rows = led.orders_for_intent(cid)
    planned = plan_slices(
        cid, 28 * LOT, LOT, 1800
    )  # what live mode sends (same function, same ids)
    assert (
        [(o.correlation_id, o.slice_no, o.quantity) for o in rows]
        == [(s.correlation_id, s.slice_no, s.quantity) for s in planned]
        == [(f"{cid}-1", 1, 1755), (f"{cid}-2", 2, 65)]
    )
    fills = [f for o in rows for f in led.fills_for(o.correlation_id)]
    assert [(f.fill_id, f.quantity) for f in fills] == [(f"F-{cid}-1", 1755), (f"F-{cid}-2", 65)]
    assert len({(f.tick_id, f.price_paise) for f in fills}) == 1  # one decision, one paper fill
    assert (tr.quantity, tr.entry_price_paise, tr.entry_tick_id) == (
        1820,
        fills[0].price_paise,
        fills[0].tick_id,
    )

    out = exit_at(mine[len(mine) // 2], entry, 1820)
    publish(redis_url, keys, out)
    closed = eventually(
        lambda: (t := led.get_tracker(entry.position_id)) and t.status == "exited" and t,
        30,
        message="position closed",
    )
    xrows = led.orders_for_intent(out.correlation_id)
    assert [(o.correlation_id, o.quantity, o.status) for o in xrows] == [
        (f"{out.correlation_id}-1", 1755, "traded"),
        (f"{out.correlation_id}-2", 65, "traded"),
    ]
    assert closed.quantity == 1820
    assert closed.pnl_paise == (closed.exit_price_paise - closed.entry_price_paise) * 1820
    opened = [m for m in stream(r, keys, "positions") if type(m).__name__ == "PositionOpened"]
    assert [m.quantity for m in opened] == [1820]
    eventually(
        lambda: [m for m in stream(r, keys, "positions") if type(m).__name__ == "PositionClosed"],
        30,
        message="position.closed published",
    )


def test_flatten_emits_an_exit_for_every_open_position_and_the_executor_closes_them(
    replayed, redis_url
):
    led, r, keys, ticks = replayed["led"], replayed["r"], replayed["keys"], replayed["ticks"]
    entries = []
    for n, sid in enumerate(busiest_options(ticks, 3)):
        mine = [t for t in ticks if t.security_id == sid]
        entries.append(
            entry_at(
                mine[len(mine) // 3], replayed["by_sid"][sid], f"FLAT{n}", lots=28 if n == 0 else 1
            )
        )
    publish(redis_url, keys, *entries)
    for e in entries:
        active(led, e.position_id)

    out = cli(replayed["env"], "flatten", "--reason", "test flatten")
    for e in entries:
        assert e.position_id in out, out
    closed = [
        eventually(
            lambda e=e: (t := led.get_tracker(e.position_id)) and t.status == "exited" and t,
            30,
            message=f"{e.position_id} closed",
        )
        for e in entries
    ]
    assert [(t.quantity, t.exit_reason) for t in closed] == [
        (1820, "flatten: test flatten"),
        (65, "flatten: test flatten"),
        (65, "flatten: test flatten"),
    ]
    assert led.active_trackers() == []
    exits = [m for m in stream(r, keys, "orders.requests") if m.kind == "exit"]
    assert sorted(m.position_id for m in exits) == sorted(e.position_id for e in entries)
    sliced = next(m for m in exits if m.position_id == entries[0].position_id)
    assert [o.quantity for o in led.orders_for_intent(sliced.correlation_id)] == [1755, 65]
    eventually(
        lambda: (
            len([m for m in stream(r, keys, "positions") if type(m).__name__ == "PositionClosed"])
            == 3
        ),
        30,
        message="three position.closed events",
    )


def test_halted_refuses_an_entry_with_a_readable_event_and_still_executes_an_exit(
    replayed, redis_url
):
    led, r, keys, ticks = replayed["led"], replayed["r"], replayed["keys"], replayed["ticks"]
    a, b = busiest_options(ticks, 2)
    ta = [t for t in ticks if t.security_id == a]
    tb = [t for t in ticks if t.security_id == b]
    held = entry_at(ta[len(ta) // 4], replayed["by_sid"][a], "HELD", lots=1)
    publish(redis_url, keys, held)
    active(led, held.position_id)

    assert "HALTED" in cli(replayed["env"], "halt", "--reason", "test halt")
    assert led.get_trading_state().state == "HALTED"
    assert r.get(keys.trading_state()) == b"HALTED"
    refused = entry_at(tb[len(tb) // 2], replayed["by_sid"][b], "REFUSED", lots=1)
    out = exit_at(ta[len(ta) // 2], held, 65)
    publish(redis_url, keys, refused, out)

    closed = eventually(
        lambda: (t := led.get_tracker(held.position_id)) and t.status == "exited" and t,
        30,
        message="the exit is executed while HALTED",
    )
    assert closed.exit_reason == "test exit"
    order = led.get_order(refused.correlation_id)
    assert (order.status, order.reason) == ("rejected", "trading state is HALTED: entries refused")
    assert led.get_tracker(refused.position_id) is None
    ev = eventually(
        lambda: [
            m for m in stream(r, keys, "orders.events") if type(m).__name__ == "OrderRejected"
        ],
        30,
        message="order.rejected published",
    )
    assert [(m.correlation_id, m.kind, m.reason) for m in ev] == [
        (refused.correlation_id, "entry", "trading state is HALTED: entries refused")
    ]
    assert led.get_trading_state().state == "HALTED"  # still halted: nothing lifted it
