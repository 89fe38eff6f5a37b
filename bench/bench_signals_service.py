"""Throughput of the signals *service* (the process, Redis in and out) on the sample session.

Loads the bundled session's ticks into a throw-away namespace's ``ticks`` stream, then runs
``python -m services.signals`` in burst mode until drained; ticks per second = stream entries /
wall time of the process. Median of several runs (each on a fresh namespace and schema).

    .venv/bin/python bench/bench_signals_service.py [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.feed.core import session_messages  # noqa: E402
from services.feed.replay import load_session  # noqa: E402
from shared import wire  # noqa: E402
from shared.keys import Keys  # noqa: E402

DB = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def one_run(to_hhmm: str | None) -> tuple[int, float]:
    ns = f"bsig_{uuid.uuid4().hex[:8]}"
    r = redis.Redis.from_url(REDIS)
    keys = Keys(ns)
    rec = load_session(ROOT / "data/sample/session.parquet", to_hhmm=to_hhmm)
    pipe = r.pipeline(transaction=False)
    n = 0
    for tid, msg in session_messages(rec, lambda: 0):
        pipe.xadd(keys.stream("ticks"), wire.encode(msg), id=tid)
        n += 1
        if n % 5000 == 0:
            pipe.execute()
    pipe.execute()
    from shared.store.db import connect
    from shared.store.migrate import migrate

    conn = connect(DB, ns)
    migrate(conn, ns)
    conn.close()
    env = dict(os.environ, SCALPER_NAMESPACE=ns, SCALPER_DB_SCHEMA=ns, SCALPER_BURST="1", REDIS_URL=REDIS,
               DATABASE_URL=DB, PYTHONPATH=str(ROOT), SCALPER_LOG_LEVEL="WARNING")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "services.signals"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    dt = time.perf_counter() - t0
    for k in r.scan_iter(match=f"scalper:{{{ns}}}:*", count=5000):
        r.delete(k)
    with psycopg.connect(DB, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {ns} CASCADE")
    return n, dt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="09:15-10:15 only, 2 runs")
    a = ap.parse_args()
    runs = 2 if a.quick else a.runs
    results = [one_run("10:15" if a.quick else None) for _ in range(runs)]
    rates = [n / dt for n, dt in results]
    n = results[0][0]
    print(f"signals service: {n} stream entries; ticks/s per run {[round(x) for x in rates]}; "
          f"median {statistics.median(rates):,.0f} ticks/s (process start-up included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
