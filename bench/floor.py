"""The floor: what plain redis-py gets out of the same Redis, measured in the same run.

``xadd_once``: pipelined XADD of tick entries exactly as the feed writes them — the real ticks of
the sample session, fields ``type`` and ``data`` (the Tick's JSON, ~320 bytes), explicit
increasing ids, ``MAXLEN ~``, 1000 entries per pipeline — from payloads built before the clock
starts, so only the client's command building, the socket and Redis are timed. The synchronous
client is the floor; the asyncio client (what the services use) is measured beside it.

``xreadgroup_once_async``: the consumer side — one consumer group reading the same entries with
redis-py's asyncio client, ``XREADGROUP COUNT 500`` then ``XACK`` of the batch, as
``shared.bus.Consumer`` does, without decoding. Each service that reads every tick pays at least
this per tick.

    .venv/bin/python bench/floor.py [--entries N] [--runs N]
    .venv/bin/python bench/floor.py --read-json N     # one XREADGROUP pass, JSON (for what-if runs)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from common import SESSION, env_config, throwaway

BATCH = 1000  # the feed's WRITE_BATCH
MAXLEN = 3_000_000  # the feed's default for ``ticks``


def tick_entries(n: int) -> list[tuple[str, dict[str, bytes]]]:
    """The first ``n`` tick entries (id, fields) of the sample session, as the feed encodes them.

    Beyond the session's length the ticks repeat with fresh, still increasing ids.
    """
    from services.feed.core import session_messages
    from services.feed.replay import load_session
    from shared import wire
    from shared.messages import Tick

    rec = load_session(SESSION)
    base: list[dict[str, bytes]] = []
    for _tid, msg in session_messages(rec, time.time_ns):
        if isinstance(msg, Tick):
            base.append(wire.encode(msg))
            if len(base) >= n:
                break
    return [(f"{1_000_000 + i}-0", base[i % len(base)]) for i in range(n)]


def _key(namespace: str) -> str:
    return f"scalper:{{{namespace}}}:floor.xadd"


def xadd_once(redis_url: str, namespace: str, entries: list[tuple[str, dict[str, bytes]]]) -> float:
    """One timed pass with the synchronous client; entries per second."""
    import redis

    r = redis.Redis.from_url(redis_url)
    key = _key(namespace)
    r.delete(key)
    try:
        t0 = time.perf_counter()
        for i in range(0, len(entries), BATCH):
            pipe = r.pipeline(transaction=False)
            for tid, fields in entries[i : i + BATCH]:
                pipe.xadd(key, fields, id=tid, maxlen=MAXLEN, approximate=True)
            pipe.execute()
        elapsed = time.perf_counter() - t0
        assert r.xlen(key) == len(entries)
    finally:
        r.delete(key)
        r.close()
    return len(entries) / elapsed


def xadd_once_async(
    redis_url: str, namespace: str, entries: list[tuple[str, dict[str, bytes]]]
) -> float:
    """The same pass with redis-py's asyncio client (the one the services use)."""
    import redis.asyncio as aioredis

    async def go() -> float:
        r = aioredis.from_url(redis_url)
        key = _key(namespace)
        await r.delete(key)
        try:
            t0 = time.perf_counter()
            for i in range(0, len(entries), BATCH):
                pipe = r.pipeline(transaction=False)
                for tid, fields in entries[i : i + BATCH]:
                    pipe.xadd(key, fields, id=tid, maxlen=MAXLEN, approximate=True)
                await pipe.execute()
            elapsed = time.perf_counter() - t0
        finally:
            await r.delete(key)
            await r.aclose()
        return len(entries) / elapsed

    return asyncio.run(go())


def xreadgroup_once_async(
    redis_url: str, namespace: str, entries: list[tuple[str, dict[str, bytes]]], batch: int = 500
) -> float:
    """Entries per second read and acknowledged by one asyncio consumer (stream filled first)."""
    import redis
    import redis.asyncio as aioredis

    key = _key(namespace)
    r = redis.Redis.from_url(redis_url)
    r.delete(key)
    for i in range(0, len(entries), BATCH):
        pipe = r.pipeline(transaction=False)
        for tid, fields in entries[i : i + BATCH]:
            pipe.xadd(key, fields, id=tid)
        pipe.execute()
    r.xgroup_create(key, "floor", id="0")

    async def go() -> float:
        a = aioredis.from_url(redis_url, decode_responses=False)
        n = 0
        t0 = time.perf_counter()
        while True:
            resp = await a.xreadgroup("floor", "c", {key: ">"}, count=batch)
            rows = _rows(resp)
            if not rows:
                break
            n += len(rows)
            await a.xack(key, "floor", *[eid for eid, _ in rows])
        elapsed = time.perf_counter() - t0
        await a.aclose()
        assert n == len(entries), (n, len(entries))
        return n / elapsed

    try:
        return asyncio.run(go())
    finally:
        r.delete(key)
        r.close()


def _rows(resp: object) -> list:  # type: ignore[type-arg]
    """The entries of a one-stream XREADGROUP reply, RESP2 (list) or RESP3 (dict) shaped."""
    if not resp:
        return []
    if isinstance(resp, dict):
        value = next(iter(resp.values()))
        return list(value[0]) if value and isinstance(value[0], list) else list(value)
    return list(resp[0][1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", type=int, default=200_000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--read-json", type=int, metavar="N", help="one XREADGROUP pass of N entries")
    a = p.parse_args(argv)
    env = env_config()
    ns = throwaway()
    if a.read_json:
        import json

        from redis.utils import HIREDIS_AVAILABLE

        rate = xreadgroup_once_async(env.redis_url, ns, tick_entries(a.read_json))
        version = ""
        if HIREDIS_AVAILABLE:
            import hiredis

            version = getattr(hiredis, "__version__", "?")
        print(json.dumps({"xreadgroup_per_s": rate, "hiredis": version}))
        return 0
    entries = tick_entries(a.entries)
    avg = statistics.mean(len(f["data"]) for _, f in entries)
    sync = [xadd_once(env.redis_url, ns, entries) for _ in range(a.runs)]
    asy = [xadd_once_async(env.redis_url, ns, entries) for _ in range(a.runs)]
    rd = [xreadgroup_once_async(env.redis_url, ns, entries) for _ in range(a.runs)]
    print(f"entries={a.entries} data_bytes_mean={avg:.0f} batch={BATCH} runs={a.runs}")
    print(f"floor XADD (sync redis-py):    {statistics.median(sync):>10,.0f} entries/s")
    print(f"floor XADD (asyncio redis-py): {statistics.median(asy):>10,.0f} entries/s")
    print(f"XREADGROUP+XACK (asyncio):     {statistics.median(rd):>10,.0f} entries/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
