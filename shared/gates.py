"""Replay gating: how a stage learns that its upstreams have caught up to a tick.

Each stage publishes an exclusive *frontier* F (key ``frontier:<service>``): every output caused
by a tick with id < F is written. In replay mode (DESIGN §4) a stage that merges inputs waits
for its upstreams before deciding at tick T:

- **entries** at a signal of tick T waits until exits' frontier > T-ish (exits has processed
  every tick before T) and the executor is *settled through* T (every fill at a tick <= T is
  published). Then positions as of T are exact.
- **exits** before processing tick t waits until entries' effective frontier >= t (every entry
  intent from a signal before t is written) and the executor is settled through t.
- The **executor** needs nothing: a paper fill is a pure function of the intent and the ticks.

These waits form no cycle: entries waiting at T publishes frontier T, which lets exits reach T.
In live mode a stage waits at most ``runtime.upstream_wait_s`` and then proceeds, saying so.
"""

from __future__ import annotations

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared import streamids
from shared.bus import group_state
from shared.errors import BusError
from shared.keys import Keys


async def get_frontier(redis: aioredis.Redis, keys: Keys, service: str) -> str:
    try:
        v = await redis.get(keys.frontier(service))
    except RedisError as exc:
        raise BusError(f"cannot read the {service} frontier: {exc}") from exc
    return v.decode() if v else streamids.ZERO


async def signals_frontier(redis: aioredis.Redis, keys: Keys) -> str:
    """Every signal caused by a tick before this is on the stream (min over the partitions)."""
    groups = await redis.smembers(keys.signals_partitions())
    if not groups:
        return streamids.ZERO
    fronts = [await get_frontier(redis, keys, g.decode()) for g in groups]
    return min(fronts, key=streamids.parse)


async def entries_frontier(redis: aioredis.Redis, keys: Keys) -> str:
    """All entry intents caused by signals with tick id < this are written."""
    signals_f = await signals_frontier(redis, keys)
    lag, pending = await group_state(redis, keys.stream("signals"), "entries")
    if lag == 0 and pending == 0:
        return signals_f
    own = await get_frontier(redis, keys, "entries")
    return own if streamids.less(own, signals_f) else signals_f


async def executor_settled_through(redis: aioredis.Redis, keys: Keys, tick_id: str) -> bool:
    """True when every fill at a tick <= ``tick_id`` has been published by the executor.

    The executor publishes ``{"min", "max", "count", "scan_floor"}`` for the intents it holds
    unacknowledged: none of them can fill at or before ``scan_floor``. The state must describe
    exactly the group's current pending entries, else we answer False (and the caller retries).
    """
    stream = keys.stream("orders.requests")
    lag, pending = await group_state(redis, stream, "executor")
    if lag > 0:
        return False
    if pending == 0:
        return True
    raw = await redis.get(keys.executor_state())
    if not raw:
        return False
    state = orjson.loads(raw)
    summary = await redis.xpending(stream, "executor")
    lo = summary.get("min")
    hi = summary.get("max")
    lo = lo.decode() if isinstance(lo, bytes) else lo
    hi = hi.decode() if isinstance(hi, bytes) else hi
    if (state.get("count"), state.get("min"), state.get("max")) != (summary.get("pending"), lo, hi):
        return False
    floor = state.get("scan_floor") or streamids.ZERO
    return streamids.parse(floor) >= streamids.parse(tick_id)
