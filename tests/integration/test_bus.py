"""The stream runtime on real Redis: contract round trip, crash recovery, dead letters, drain."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import orjson
import pytest

from shared import wire
from shared.bus import Bus
from shared.keys import Keys
from shared.messages import (
    Clock,
    DeadLetter,
    EntryDecision,
    FeedSubscribe,
    FeedUnsubscribe,
    OrderAccepted,
    OrderCancelled,
    OrderDryRun,
    OrderFilled,
    OrderIntent,
    OrderRejected,
    PositionAdjusted,
    PositionClosed,
    PositionOpened,
    SessionEnd,
    Signal,
    SignalSkipped,
    Tick,
)
from tests.helpers import eventually

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

C = dict(ts_event=1_795_578_300_000_000_000, ts_init=1_795_578_300_000_100_000, tick_id="1795578300000-0")
OE = dict(correlation_id="E-abc", position_id="P-1", kind="entry", security_id=40001)


def one_of_each() -> list[tuple[str, object]]:
    return [
        ("ticks", Tick(msg_id="tick-1", segment="NSE_FNO", security_id=40001, ltp_paise=15230, ltq=65, **C)),
        ("ticks", Clock(msg_id="clk-1", **C)),
        ("ticks", SessionEnd(msg_id="end-1", trading_day="2026-12-01", **C)),
        ("signals", Signal(msg_id="sig-1", index="NIFTY", direction="bullish", timeframe_min=1,
                           candle_ts=1, close_paise=2600000, supertrend_paise=2599000, adx=21.5,
                           confidence=0.7, multiplier=1, reason="supertrend flip", **C)),
        ("signals", SignalSkipped(msg_id="sks-1", index="NIFTY", timeframe_min=1, candle_ts=1,
                                  reason="adx 12 < 18", **C)),
        ("entries.decisions", EntryDecision(msg_id="dec-1", signal_id="sig-1", index="NIFTY",
                                            accepted=False, rule="cooldown", reason="cooldown 120s left", **C)),
        ("orders.requests", OrderIntent(msg_id="int-1", kind="entry", correlation_id="E-abc",
                                        position_id="P-1", index="NIFTY", segment="NSE_FNO",
                                        security_id=40001, symbol="NIFTY-Dec2026-26000-CE", side="BUY",
                                        quantity=65, lot_size=65, ref_price_paise=15230, reason="signal", **C)),
        ("orders.events", OrderAccepted(msg_id="oe-1", broker_order_id="1", status="PENDING", **OE, **C)),
        ("orders.events", OrderFilled(msg_id="oe-2", broker_order_id="1", side="BUY", quantity=65,
                                      price_paise=15230, fill_tick_id="1-0", **OE, **C)),
        ("orders.events", OrderRejected(msg_id="oe-3", reason="DH-906 bad", **OE, **C)),
        ("orders.events", OrderCancelled(msg_id="oe-4", reason="session ended", **OE, **C)),
        ("orders.events", OrderDryRun(msg_id="oe-5", payload={"quantity": 65, "orderType": "MARKET"}, **OE, **C)),
        ("positions", PositionOpened(msg_id="po-1", position_id="P-1", index="NIFTY", segment="NSE_FNO",
                                     security_id=40001, symbol="X", quantity=65, entry_price_paise=15230,
                                     entry_tick_id="1-0", ts_entry=1, **C)),
        ("positions", PositionClosed(msg_id="pc-1", position_id="P-1", index="NIFTY", security_id=40001,
                                     quantity=65, entry_price_paise=15230, exit_price_paise=16000,
                                     exit_tick_id="2-0", ts_exit=2, reason="take_profit", pnl_paise=50050, **C)),
        ("positions", PositionAdjusted(msg_id="pa-1", position_id="P-1", security_id=40001, quantity=130,
                                       reason="broker says 130", **C)),
        ("feed.control", FeedSubscribe(msg_id="fs-1", segment="NSE_FNO", security_ids=[40001, 40002],
                                       requester="entries", **C)),
        ("feed.control", FeedUnsubscribe(msg_id="fu-1", segment="NSE_FNO", security_ids=[40001],
                                         requester="entries", **C)),
        ("deadletter", DeadLetter(msg_id="dl-1", error="bad json", source_stream="ticks", entry_id="5-0",
                                  fields={"type": "tick", "data": "{oops"}, service="signals", **C)),
    ]


def test_every_message_type_round_trips_through_real_redis_as_readable_json(namespace, redis_url, sync_redis):
    from shared import bus as busmod

    keys = Keys(namespace)

    async def go():
        r = busmod.connect(redis_url)
        b = Bus(r, keys, {})
        for stream, msg in one_of_each():
            await b.publish(stream, [msg])
        await r.aclose()

    asyncio.run(go())
    for stream, msg in one_of_each():
        entries = sync_redis.xrange(keys.stream(stream))
        decoder = wire.StreamDecoder(stream)
        found = [decoder.decode(f) for _, f in entries]
        assert msg in found, f"{type(msg).__name__} not read back equal"
        for _, fields in entries:
            assert set(fields) == {b"type", b"data"}
            body = orjson.loads(fields[b"data"])  # plain JSON a person can read
            assert body["type"] == fields[b"type"].decode()
            assert "msg_id" in body and "ts_event" in body and "tick_id" in body


def test_publishing_the_same_msg_id_twice_writes_one_entry(namespace, redis_url, sync_redis):
    from shared import bus as busmod

    keys = Keys(namespace)
    _, msg = one_of_each()[3]

    async def go():
        r = busmod.connect(redis_url)
        b = Bus(r, keys, {})
        assert await b.publish("signals", [msg]) == 1
        assert await b.publish("signals", [msg]) == 0
        await r.aclose()

    asyncio.run(go())
    assert sync_redis.xlen(keys.stream("signals")) == 1


def _env(namespace: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "SCALPER_NAMESPACE": namespace, "REDIS_URL": redis_url, "SCALPER_LOG_LEVEL": "INFO",
        "PYTHONPATH": str(ROOT),
    })
    env.update(extra)
    return env


def _start_echo(namespace, redis_url, instance, **extra):
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.echo_service"], cwd=ROOT,
        env=_env(namespace, redis_url, SCALPER_INSTANCE=instance, **extra),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


def _write_ticks(sync_redis, keys, n, start=0):
    pipe = sync_redis.pipeline()
    for i in range(start, start + n):
        t = Tick(msg_id=f"tick-{i}", ts_event=i, ts_init=i, tick_id=f"{i + 1}-0",
                 segment="NSE_FNO", security_id=1, ltp_paise=100 + i)
        pipe.xadd(keys.stream("ticks"), wire.encode(t), id=f"{i + 1}-0")
    pipe.execute()


def _outputs(sync_redis, keys):
    dec = wire.StreamDecoder("signals")
    return [dec.decode(f) for _, f in sync_redis.xrange(keys.stream("signals"))]


@pytest.mark.parametrize("restart_as", ["victim", "rescuer"])
def test_consumer_killed_mid_batch_loses_nothing_and_duplicates_nothing(namespace, redis_url, sync_redis, restart_as):
    """Restarted as the same consumer it re-reads its own pending entries; as another, it claims them."""
    keys = Keys(namespace)
    n = 400
    _write_ticks(sync_redis, keys, n)
    cfg_env = {"ECHO_DELAY_MS": "10", "SCALPER_CONFIG": str(ROOT / "tests/integration/small_batches.yml")}
    p = _start_echo(namespace, redis_url, "victim", **cfg_env)
    try:
        eventually(lambda: len(_outputs(sync_redis, keys)) >= 60, 30, message="first outputs")
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
    done_before = len(_outputs(sync_redis, keys))
    assert done_before < n, "the victim finished before it was killed; nothing was tested"
    _, pending = group_state_sync(sync_redis, keys)
    assert pending > 0, "kill happened between batches; expected entries in flight"
    p2 = _start_echo(namespace, redis_url, restart_as, SCALPER_BURST="1", **cfg_env)
    out, _ = p2.communicate(timeout=60)
    assert p2.returncode == 0, out.decode()[-2000:]
    outs = _outputs(sync_redis, keys)
    ids = [m.msg_id for m in outs]
    assert len(ids) == len(set(ids)), "duplicate outputs"
    assert len(ids) == n, f"lost outputs: {n - len(ids)}"
    assert group_state_sync(sync_redis, keys) == (0, 0)


def group_state_sync(sync_redis, keys):
    for g in sync_redis.xinfo_groups(keys.stream("ticks")):
        if g["name"] == b"echo":
            return int(g["lag"] or 0), int(g["pending"])
    return (0, 0)


def test_malformed_entry_goes_to_dead_letter_and_next_entry_is_processed(namespace, redis_url, sync_redis):
    keys = Keys(namespace)
    _write_ticks(sync_redis, keys, 1, start=0)
    sync_redis.xadd(keys.stream("ticks"), {"type": "tick", "data": "{not json"}, id="5-0")
    sync_redis.xadd(keys.stream("ticks"), {"type": "tick", "data": '{"type":"tick","msg_id":"x"}'}, id="6-0")
    _write_ticks(sync_redis, keys, 1, start=9)
    p = _start_echo(namespace, redis_url, "one", SCALPER_BURST="1")
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0, out.decode()[-2000:]
    dl = [wire.StreamDecoder("deadletter").decode(f) for _, f in sync_redis.xrange(keys.stream("deadletter"))]
    assert [d.entry_id for d in dl] == ["5-0", "6-0"]
    assert dl[0].source_stream == "ticks" and dl[0].fields == {"type": "tick", "data": "{not json"}
    assert "malformed JSON" in dl[0].error
    assert "Object missing required field" in dl[1].error
    assert sorted(m.tick_id for m in _outputs(sync_redis, keys)) == ["1-0", "10-0"]
    assert group_state_sync(sync_redis, keys) == (0, 0)
    assert b"dead letter" in out


def test_sigterm_drains_and_exits_zero_and_heartbeat_has_ttl(namespace, redis_url, sync_redis):
    keys = Keys(namespace)
    p = _start_echo(namespace, redis_url, "hb")
    try:
        hb = keys.heartbeat("echo", "hb")
        eventually(lambda: sync_redis.exists(hb), 20, message="heartbeat key")
        ttl = sync_redis.ttl(hb)
        assert 0 < ttl <= 15
        _write_ticks(sync_redis, keys, 50)
        eventually(lambda: len(_outputs(sync_redis, keys)) == 50, 20)
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, out.decode()[-2000:]
    assert not sync_redis.exists(keys.heartbeat("echo", "hb"))
    assert group_state_sync(sync_redis, keys) == (0, 0)


def test_streams_are_trimmed_to_their_configured_maxlen(namespace, redis_url, sync_redis):
    from shared import bus as busmod

    keys = Keys(namespace)
    _, sig = one_of_each()[3]

    async def go():
        r = busmod.connect(redis_url)
        b = Bus(r, keys, {"signals": 100})
        for i in range(30):
            await b.publish("signals", [msgspec.structs.replace(sig, msg_id=f"sig-{j}-{i}") for j in range(50)])
        await r.aclose()

    asyncio.run(go())
    n = sync_redis.xlen(keys.stream("signals"))
    assert 100 <= n < 1500, n  # approximate trimming (MAXLEN ~) keeps it near the bound, not all 1500


# ----------------------------------------------------------------- a commit sent with the next read


def _sig(n: int) -> Signal:
    _, msg = one_of_each()[3]
    return msgspec.structs.replace(msg, msg_id=f"sig-{n}")


class _Counting:
    """Counts what a Redis client is asked to do directly and how many pipelines it runs."""

    def __init__(self, redis):
        self.inner, self.direct, self.pipelines = redis, [], 0

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name == "pipeline":
            def pipeline(*a, **k):
                self.pipelines += 1
                return attr(*a, **k)
            return pipeline
        if name in ("xreadgroup", "evalsha", "eval"):
            def call(*a, **k):
                self.direct.append(name)
                return attr(*a, **k)
            return call
        return attr


def _consumer_setup(namespace, redis_url, sync_redis):
    from shared import bus as busmod
    from shared.bus import Commit, Consumer

    keys = Keys(namespace)
    r = busmod.connect(redis_url)
    bus = Bus(r, keys, {})
    counting = _Counting(r)
    consumer = Consumer(counting, keys, "g", "c1", ["ticks"], batch_size=10, block_ms=2000)
    return keys, r, bus, counting, consumer, Commit


async def _handled_tick(r, keys, consumer, tick, n: int):
    """The consumer reads ``tick`` (its first read: pending phase, then new); returns the batch
    and its commit — publishes ``sig-<n>``, acks the tick — not sent yet."""
    from shared.bus import Commit

    await consumer.ensure_groups()
    await r.xadd(keys.stream("ticks"), wire.encode(tick))
    first = await consumer.read(block=False)
    assert [e.msg for e in first.entries] == [tick]
    c = Commit()
    c.emit("signals", _sig(n))
    c.ack("ticks", first.entries[0].entry_id)
    return first, c


def test_a_batch_commit_goes_with_the_next_read_in_one_round_trip(namespace, redis_url, sync_redis):
    keys, r, bus, counting, consumer, Commit = _consumer_setup(namespace, redis_url, sync_redis)
    tick = one_of_each()[0][1]

    async def go():
        first, c = await _handled_tick(r, keys, consumer, tick, 1)
        await r.xadd(keys.stream("ticks"), wire.encode(msgspec.structs.replace(tick, msg_id="tick-2")))
        c.sets[keys.frontier("g")] = b"1-0"
        counting.direct.clear()
        pipelines = counting.pipelines
        second = await consumer.read(block=False, after=bus.prepare("g", c))
        assert [e.msg.msg_id for e in second.entries] == ["tick-2"]
        assert counting.direct == [] and counting.pipelines == pipelines + 1  # one round trip
        await r.aclose()
        return first.entries[0].entry_id, second.entries[0].entry_id

    acked, unacked = asyncio.run(go())
    assert sync_redis.get(keys.frontier("g")) == b"1-0"
    assert [wire.StreamDecoder("signals").decode(f).msg_id for _, f in sync_redis.xrange(keys.stream("signals"))] == ["sig-1"]
    pending = [p["message_id"].decode() for p in sync_redis.xpending_range(keys.stream("ticks"), "g", "-", "+", 10)]
    assert pending == [unacked] and acked not in pending


def test_the_commit_is_applied_before_the_read_blocks(namespace, redis_url, sync_redis):
    """Downstream sees a batch's outputs at once, not when the blocked read returns."""
    keys, r, bus, counting, consumer, Commit = _consumer_setup(namespace, redis_url, sync_redis)
    tick = one_of_each()[0][1]

    async def go():
        _, c = await _handled_tick(r, keys, consumer, tick, 2)
        await consumer.read(block=False)  # nothing new: the consumer is in its "new" phase now
        blocked = asyncio.create_task(consumer.read(block=True, after=bus.prepare("g", c)))
        deadline = asyncio.get_running_loop().time() + 5
        while not await r.xlen(keys.stream("signals")):
            assert asyncio.get_running_loop().time() < deadline, "the output waited for the read"
            assert not blocked.done()
            await asyncio.sleep(0.01)
        assert not blocked.done()  # still blocked, the output already out, the input acked
        assert (await r.xpending(keys.stream("ticks"), "g"))["pending"] == 0
        await r.xadd(keys.stream("ticks"), wire.encode(msgspec.structs.replace(tick, msg_id="tick-3")))
        woke = await asyncio.wait_for(blocked, 5)
        assert [e.msg.msg_id for e in woke.entries] == ["tick-3"]
        await r.aclose()

    asyncio.run(go())


def test_a_lost_script_is_loaded_again_and_a_failed_commit_raises(namespace, redis_url, sync_redis):
    from shared.errors import BusError

    keys, r, bus, counting, consumer, Commit = _consumer_setup(namespace, redis_url, sync_redis)
    tick = one_of_each()[0][1]

    async def go():
        _, c = await _handled_tick(r, keys, consumer, tick, 3)
        await consumer.read(block=False)  # nothing new: the consumer is in its "new" phase now
        await r.script_flush()  # as after a Redis restart: NOSCRIPT for the pipelined EVALSHA
        again = await consumer.read(block=False, after=bus.prepare("g", c))
        assert not again
        assert await r.xlen(keys.stream("signals")) == 1
        assert (await r.xpending(keys.stream("ticks"), "g"))["pending"] == 0
        # A commit Redis refuses (its output stream is not a stream) is an error, not a silence.
        await r.set(keys.stream("orders.events"), b"not a stream")
        bad = Commit()
        bad.emit("orders.events", one_of_each()[7][1])
        with pytest.raises(BusError, match="commit failed for group g"):
            await consumer.read(block=False, after=bus.prepare("g", bad))
        await r.aclose()

    asyncio.run(go())
