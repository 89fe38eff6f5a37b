"""The latency floor: a message through a chain of four plain redis-py relay processes.

    driver ──XADD──▶ s0 ─▶ relay 1 ─▶ s1 ─▶ relay 2 ─▶ s2 ─▶ relay 3 ─▶ s3 ─▶ relay 4 ─▶ s4 ──XREAD──▶ driver

Each relay is its own process running ``XREAD BLOCK`` on its input stream and ``XADD``-ing every
entry unchanged to the next one (a pipeline when a read returns several). The driver sends
tick-sized entries (``type``, ``data`` = a Tick's JSON, plus ``seq``) at a steady rate from one
thread and reads the last stream in another; latency = receive − send, both
``time.perf_counter_ns`` in the driver, so no cross-process clock is involved. 50 warm-up messages
go through first and are not counted.

    .venv/bin/python bench/chain4.py [--messages N] [--rate PER_S] [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency import percentile  # noqa: E402

HOPS = 4
WARMUP = 50


def relay(redis_url: str, src: str, dst: str) -> int:
    """One relay: forward every entry of ``src`` to ``dst`` until a ``stop`` entry."""
    import redis

    r = redis.Redis.from_url(redis_url)
    last = "0-0"
    while True:
        resp = r.xread({src: last}, count=100, block=0)
        for _key, entries in resp:
            stop = False
            if len(entries) == 1:
                eid, fields = entries[0]
                r.xadd(dst, fields)
                stop = fields.get(b"type") == b"stop"
            else:
                pipe = r.pipeline(transaction=False)
                for _eid, fields in entries:
                    pipe.xadd(dst, fields)
                    stop = stop or fields.get(b"type") == b"stop"
                pipe.execute()
            last = entries[-1][0]
            if stop:
                r.close()
                return 0


def run_chain(
    redis_url: str, namespace: str, messages: int, rate_per_s: float, payload: bytes
) -> dict[str, float]:
    """One run: start four relays, send ``messages`` at ``rate_per_s``; latency stats in µs."""
    import redis

    keys = [f"scalper:{{{namespace}}}:chain.s{i}" for i in range(HOPS + 1)]
    r = redis.Redis.from_url(redis_url)
    r.delete(*keys)
    relays = [
        subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--relay",
                redis_url,
                keys[i],
                keys[i + 1],
            ]
        )
        for i in range(HOPS)
    ]
    total = WARMUP + messages
    sent = [0] * total
    got = [0] * total
    done = threading.Event()

    def receive() -> None:
        rr = redis.Redis.from_url(redis_url)
        last, n = "0-0", 0
        while n < total:
            resp = rr.xread({keys[-1]: last}, count=100, block=1000)
            now = time.perf_counter_ns()
            for _key, entries in resp or []:
                for eid, fields in entries:
                    if fields.get(b"type") == b"tick":
                        got[int(fields[b"seq"])] = now
                        n += 1
                    last = eid
        rr.close()
        done.set()

    rx = threading.Thread(target=receive, daemon=True)
    rx.start()
    sender = redis.Redis.from_url(redis_url)
    try:
        # Warm-up: wait for each of the first messages before the next (relays are starting).
        for i in range(WARMUP):
            sent[i] = time.perf_counter_ns()
            sender.xadd(keys[0], {"type": "tick", "data": payload, "seq": i})
            deadline = time.monotonic() + 30
            while got[i] == 0:
                if time.monotonic() > deadline:
                    raise TimeoutError("relay chain did not pass the warm-up messages")
                time.sleep(0.001)
        interval = 1.0 / rate_per_s
        t0 = time.perf_counter()
        for j in range(messages):
            due = t0 + j * interval
            while (ahead := due - time.perf_counter()) > 0:
                time.sleep(ahead if ahead > 0.0005 else 0)
            i = WARMUP + j
            sent[i] = time.perf_counter_ns()
            sender.xadd(keys[0], {"type": "tick", "data": payload, "seq": i})
        if not done.wait(60):
            raise TimeoutError("relay chain did not deliver every message")
        sender.xadd(keys[0], {"type": "stop", "data": b"", "seq": -1})
        for p in relays:
            p.wait(10)
    finally:
        for p in relays:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        sender.delete(*keys)
        sender.close()
        r.close()
    lat = sorted(got[i] - sent[i] for i in range(WARMUP, total))
    return {
        "p50_us": percentile(lat, 50) / 1000,
        "p99_us": percentile(lat, 99) / 1000,
        "max_us": lat[-1] / 1000,
        "mean_us": statistics.mean(lat) / 1000,
        "messages": float(messages),
        "rate_per_s": rate_per_s,
    }


def tick_payload() -> bytes:
    from floor import tick_entries

    return tick_entries(1)[0][1]["data"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--relay"]:
        return relay(*argv[1:4])
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import env_config, throwaway

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=3000)
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args(argv)
    env = env_config()
    payload = tick_payload()
    res = [
        run_chain(env.redis_url, throwaway(), a.messages, a.rate, payload) for _ in range(a.runs)
    ]
    for k in ("p50_us", "p99_us", "max_us"):
        print(
            f"{k}: median {statistics.median(r[k] for r in res):,.0f} "
            f"(runs: {', '.join(f'{r[k]:,.0f}' for r in res)})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
