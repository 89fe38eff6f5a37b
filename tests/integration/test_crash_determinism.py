"""Crash determinism: during a full-speed replay under supervisord, every service is killed with
SIGKILL several times at moments chosen by a seeded RNG over the replay's progress; supervisord
restarts each one. The final ledger must equal an uninterrupted run's, no intent may produce two
orders, and every consumer group must end with nothing pending."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import uuid

import orjson
import psycopg
import pytest
import redis

from shared.keys import Keys
from shared.supervise import SERVICES, group_states, supervisorctl
from tests.conftest import SEED
from tests.helpers import eventually
from tests.integration.procs import ROOT
from tests.integration.test_pipeline_e2e import DB_URL, SAMPLE, decisions, ledger

pytestmark = pytest.mark.integration
WINDOW = ("09:15", "11:15")


def start_replay(name: str, redis_url: str) -> subprocess.Popen[str]:
    env = dict(os.environ, DATABASE_URL=DB_URL, REDIS_URL=redis_url, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "replay", str(SAMPLE), "--speed", "max",
         "--from", WINDOW[0], "--to", WINDOW[1], "--namespace", name, "--schema", name,
         "--run-dir", str(ROOT / "run" / name), "--timeout", "900"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.fixture
def names(redis_url):
    out = [f"crash_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    yield out
    r = redis.Redis.from_url(redis_url)
    with psycopg.connect(DB_URL, autocommit=True) as c:
        for n in out:
            c.execute(f"DROP SCHEMA IF EXISTS {n} CASCADE")
            for k in r.scan_iter(match=f"scalper:{{{n}}}:*", count=2000):
                r.delete(k)
    r.close()


def test_replay_with_services_killed_at_random_gives_the_same_ledger(names, redis_url):
    base, crashed = names
    p = start_replay(base, redis_url)
    out, err = p.communicate(timeout=900)
    assert p.returncode == 0, err[-3000:]
    expected = ledger(base)
    assert any(t[4] == "exited" for t in expected["trades"]), "baseline closed no trade"

    rng = random.Random(SEED)
    r = redis.Redis.from_url(redis_url)
    keys = Keys(crashed)
    run_dir = ROOT / "run" / crashed
    # Each service killed twice, in a seeded random order, at seeded points of the feed's progress.
    victims = [s for s in SERVICES for _ in range(2)]
    rng.shuffle(victims)
    marks = sorted(rng.uniform(0.05, 0.95) for _ in victims)
    p = start_replay(crashed, redis_url)
    kills = []
    try:
        def progress() -> float:
            raw = r.get(keys.replay_status())
            if not raw:
                return 0.0
            st = orjson.loads(raw)
            return 1.0 if st.get("state") == "done" else st.get("published", 0) / max(st.get("total", 1), 1)

        for victim, mark in zip(victims, marks, strict=True):
            eventually(lambda m=mark: progress() >= m or p.poll() is not None, 300, message=f"progress {mark:.2f}")
            if p.poll() is not None:
                break
            res = supervisorctl(run_dir, "pid", f"scalper:{victim}")
            text = res.stdout.strip()
            pid = int(text) if text.isdigit() else 0
            if pid > 0:
                os.kill(pid, signal.SIGKILL)
                kills.append((victim, round(mark, 3)))
        out, err = p.communicate(timeout=900)
    finally:
        if p.poll() is None:
            p.kill()
    print("kills:", kills)
    assert p.returncode == 0, err[-3000:]
    assert len(kills) >= 8, f"too few kills landed: {kills}"
    assert {v for v, _ in kills} >= {"signals", "entries", "executor", "exits"}
    got = ledger(crashed)
    assert got == expected
    assert decisions(r, crashed) == decisions(r, base)
    orders = got["orders"]
    assert len({o[1] for o in orders}) == len(orders), "an intent produced two orders"
    for stream, groups in group_states(r, keys).items():
        for g, (lag, pending) in groups.items():
            assert (lag, pending) == (0, 0), f"{g} on {stream}: lag {lag} pending {pending}"
    r.close()
