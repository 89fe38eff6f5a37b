"""Replay modes, end to end under supervisord (``scalper replay``), on a window of the sample day.

- Speed: the window replayed twice as fast as possible and once at 20x gives identical ledgers
  (trades, decision reasons, fill prices, event times).
- Redis killed (SIGKILL) and restarted from its AOF twice during a replay: the services crash,
  supervisord restarts them, and the ledger equals the uninterrupted run's.
- Several days back to back: two session files given in the wrong order are replayed in date
  order, tick ids increase across them (also when the feed is killed in day 2 and resumes), each
  day ends with its SessionEnd, day 1's outcome equals a single-day replay, and day 2 trades
  again (trades-per-day and cooldowns start afresh).
- Beside production: a replay on the same Redis and Postgres changes no key or row of another
  namespace/schema and creates nothing outside its own.

The baseline (one max-speed run of the window on the default Redis) is shared by the module.
Window: 09:15-09:50 IST holds two closed trades; at 20x it takes 105 s.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import redis

from shared import streamids, wire
from shared.clock import ist_day
from shared.keys import Keys
from shared.messages import SessionEnd
from shared.supervise import group_states, supervisorctl
from tests.helpers import eventually
from tests.integration.procs import ROOT
from tests.integration.test_pipeline_e2e import DB_URL, SAMPLE, decisions, ledger

pytestmark = pytest.mark.integration
WINDOW = ("09:15", "09:50")
WINDOW_S = 35 * 60
DAY1 = date(2026, 12, 1)
DAY2 = date(2026, 12, 2)
DAY2_SEED = 5  # a synthetic 2026-12-02 whose 09:15-09:50 has a trend (two supertrend flips)


def _redis_url() -> str:
    return os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _env(redis_url: str, db_url: str = DB_URL, **extra: str) -> dict[str, str]:
    return dict(os.environ, DATABASE_URL=db_url, REDIS_URL=redis_url, PYTHONPATH=str(ROOT), **extra)


def _args(name: str, run_dir: Path, sessions: tuple[Path, ...], speed: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "shared.cli", "replay", *map(str, sessions), "--speed", speed,
            "--from", WINDOW[0], "--to", WINDOW[1], "--namespace", name, "--schema", name,
            "--run-dir", str(run_dir), "--timeout", "600", *extra]


@dataclass
class Run:
    name: str
    proc: subprocess.CompletedProcess[str]
    elapsed_s: float
    run_dir: Path

    def check(self) -> None:
        assert self.proc.returncode == 0, f"{self.name}: {self.proc.stderr[-3000:]}\n{log_tails(self.run_dir)}"


def replay(name: str, run_dir: Path, *sessions: Path, speed: str = "max", redis_url: str | None = None,
           db_url: str = DB_URL, extra_env: dict[str, str] | None = None, extra: tuple[str, ...] = (),
           during: Callable[[subprocess.Popen[str]], None] | None = None) -> Run:
    """Run ``scalper replay`` to the end; ``during(proc)`` runs while it is running."""
    t0 = time.monotonic()
    p = subprocess.Popen(_args(name, run_dir, sessions or (SAMPLE,), speed, *extra), cwd=ROOT,
                         env=_env(redis_url or _redis_url(), db_url, **(extra_env or {})),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if during is not None:
            during(p)
        out, err = p.communicate(timeout=900)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    done = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    return Run(name, done, time.monotonic() - t0, run_dir)


def log_tails(run_dir: Path, n: int = 40) -> str:
    """The last lines of every service log (for a failing assertion's message)."""
    out = []
    for p in sorted(run_dir.glob("*.log")):
        lines = p.read_text(errors="replace").splitlines()[-n:]
        out.append(f"--- {p.name}\n" + "\n".join(lines))
    return "\n".join(out)


def drop(names: list[str], redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    with psycopg.connect(DB_URL, autocommit=True) as c:
        for n in names:
            c.execute(f"DROP SCHEMA IF EXISTS {n} CASCADE")
            for k in r.scan_iter(match=f"scalper:{{{n}}}:*", count=2000):
                r.delete(k)
    r.close()


def day_of_tick(tick_id: str) -> date:
    return ist_day(streamids.parse(tick_id)[0] * 1_000_000)


def by_day(led: dict[str, list[tuple]], day: date) -> dict[str, list[tuple]]:
    """The rows of one IST day (by the event time or tick id each table carries)."""
    return {
        "trades": [t for t in led["trades"] if ist_day(t[10]) == day],
        "orders": [o for o in led["orders"] if day_of_tick(o[12]) == day],
        "fills": [f for f in led["fills"] if day_of_tick(f[6]) == day],
        "signals": [s for s in led["signals"] if day_of_tick(s[4]) == day],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThrowAwayRedis:
    """A redis-server of our own on a free loopback port (AOF on request), killable and restartable."""

    def __init__(self, workdir: Path, aof: bool) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                     "--save", "", "--daemonize", "no", "--protected-mode", "no",
                     *(["--appendonly", "yes", "--appendfsync", "always"] if aof else ["--appendonly", "no"])]
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        r = redis.Redis.from_url(self.url)

        def up() -> bool:
            try:
                return bool(r.ping()) and r.info("persistence").get("loading") == 0
            except redis.RedisError:
                return False

        eventually(up, 60, 0.05, message=f"redis-server on {self.port} ready")
        r.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("replay_modes")


@pytest.fixture(scope="module")
def names() -> Iterator[list[str]]:
    """Namespaces (= schemas) made on the default Redis/Postgres; dropped after the module."""
    made: list[str] = []
    yield made
    drop(made, _redis_url())


def new_name(names: list[str], prefix: str = "rm") -> str:
    n = f"{prefix}_{uuid.uuid4().hex[:8]}"
    names.append(n)
    return n


@pytest.fixture(scope="module")
def baseline(names: list[str], workdir: Path) -> dict[str, Any]:
    """The window at full speed on the default Redis: ledger and entry decisions."""
    run = replay(new_name(names), workdir / "baseline")
    run.check()
    led = ledger(run.name)
    assert [t for t in led["trades"] if t[4] == "exited"], "the window closed no trade"
    r = redis.Redis.from_url(_redis_url())
    dec = decisions(r, run.name)
    r.close()
    print(f"baseline {run.name}: {len(led['trades'])} trades in {run.elapsed_s:.0f}s")
    return {"name": run.name, "ledger": led, "decisions": dec}


# --------------------------------------------------------------------------- speed


@pytest.mark.timeout(600)
def test_window_replayed_twice_at_full_speed_and_once_at_20x_gives_the_same_ledger(baseline, names, workdir):
    again = replay(new_name(names), workdir / "again")
    again.check()
    paced = replay(new_name(names), workdir / "paced", speed="20")
    paced.check()
    r = redis.Redis.from_url(_redis_url())
    for run in (again, paced):
        got = ledger(run.name)
        assert got == baseline["ledger"], f"{run.name} differs from the baseline"
        assert decisions(r, run.name) == baseline["decisions"]
    r.close()
    # the paced run really ran at 20x: 35 minutes of event time take at least 105 s
    assert paced.elapsed_s >= WINDOW_S / 20 * 0.95, paced.elapsed_s
    # and it showed its progress: IST event time, ticks per second, ETA
    progress = [ln for ln in paced.proc.stderr.splitlines() if "ticks/s" in ln]
    assert progress and all(" IST" in ln and "ETA " in ln for ln in progress), paced.proc.stderr[-2000:]
    assert "replay drained in" in paced.proc.stderr


# --------------------------------------------------------------------------- Redis restarts


@pytest.mark.timeout(600)
def test_redis_killed_and_restarted_from_its_aof_mid_replay_gives_the_same_ledger(baseline, workdir):
    """SIGKILL Redis while the feed is publishing and again while the stages drain; restart it on
    the same port and directory (AOF, fsync always). Services whose Redis calls fail crash and
    supervisord restarts them; start-up is recovery. The trading state must stay ACTIVE (the
    executor once took "Redis went away" for an order-path error and halted trading, so later
    signals were refused), the ledger must equal the baseline's, no intent may produce two
    orders, and every consumer group must end empty."""
    srv = ThrowAwayRedis(workdir / "aof_redis", aof=True)
    name = f"rr_{uuid.uuid4().hex[:8]}"
    run_dir = workdir / "restarts"
    keys = Keys(name)
    r = redis.Redis.from_url(srv.url)
    p = subprocess.Popen(_args(name, run_dir, (SAMPLE,), "max"), cwd=ROOT, env=_env(srv.url),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    restarts = []
    try:
        def status() -> dict[str, Any]:
            try:
                raw = r.get(keys.replay_status())
            except redis.RedisError:
                return {}
            return orjson.loads(raw) if raw else {}

        def feed_at(fraction: float) -> bool:
            st = status()
            return p.poll() is not None or st.get("state") == "done" or \
                st.get("ticks", 0) >= fraction * max(st.get("total", 1), 1)

        def draining() -> bool:  # the feed is done and the stages are still behind it
            st = status()
            if p.poll() is not None or st.get("state") != "done":
                return p.poll() is not None
            try:
                exits = r.get(keys.frontier("exits"))
            except redis.RedisError:
                return False
            return exits is not None and streamids.less(exits.decode(), st["last_id"])

        for label, reached in (("feed publishing", lambda: feed_at(0.4)), ("stages draining", draining)):
            eventually(reached, 300, message=label)
            if p.poll() is not None:
                break
            srv.kill()
            srv.start()
            restarts.append(label)
        out, err = p.communicate(timeout=600)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    try:
        sup_log = (run_dir / "supervisord.log").read_text(errors="replace")
        crashed = sorted({ln.split("exited: ")[1].split(" ")[0] for ln in sup_log.splitlines()
                          if "exited: " in ln and "not expected" in ln})
        print("redis restarted while:", restarts, "; services that crashed and were restarted:", crashed)
        assert p.returncode == 0, f"{err[-3000:]}\n{log_tails(run_dir)}"
        assert restarts == ["feed publishing", "stages draining"], f"the replay ended too early: {restarts}"
        assert crashed, "no service noticed Redis going away"
        with psycopg.connect(DB_URL) as c:
            state = c.execute(f"SELECT state, reason FROM {name}.trading_state").fetchone()
        assert state is not None and state[0] == "ACTIVE", f"a Redis outage changed the trading state: {state}"
        got = ledger(name)
        assert got == baseline["ledger"]
        assert decisions(r, name) == baseline["decisions"]
        orders = got["orders"]
        assert len({o[1] for o in orders}) == len(orders), "an intent produced two orders"
        for stream, groups in group_states(r, keys).items():
            for g, (lag, pending) in groups.items():
                assert (lag, pending) == (0, 0), f"{g} on {stream}: lag {lag} pending {pending}"
    finally:
        r.close()
        srv.close()
        with psycopg.connect(DB_URL, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


# --------------------------------------------------------------------------- several days


@pytest.fixture(scope="module")
def two_days(baseline, names, workdir) -> dict[str, Any]:
    """Day 2 (synthetic 2026-12-02) and the sample day, given in that (wrong) order, one replay.

    The generator numbers its contracts per seed, so the two days' CSVs disagree on the ids of
    the 2026-12-08 contracts (a real scrip master would not): day 2's listing of them is used.
    Config: max_trades_per_day 2, which day 1 reaches, so day 2 trades only if the count reset.
    """
    from shared.synth import generate_session

    d2 = workdir / "day2"
    generate_session(DAY2, DAY2_SEED, d2 / "session.parquet", d2 / "instruments.csv",
                     start_hhmm=WINDOW[0], end_hhmm=WINDOW[1])
    day1_rows = (SAMPLE.parent / "instruments.csv").read_text().splitlines()
    day2_rows = (d2 / "instruments.csv").read_text().splitlines()
    merged = [day1_rows[0]] + [ln for ln in day1_rows[1:] if "2026-12-08" not in ln]
    merged += [ln for ln in day2_rows[1:] if ln not in merged]
    (d2 / "merged.csv").write_text("\n".join(merged) + "\n")
    cfg, n = re.subn(r"(?m)^(\s*max_trades_per_day:) *\d+", r"\1 2", (ROOT / "config" / "algo.yml").read_text())
    assert n == 1, "config/algo.yml has no max_trades_per_day"
    (d2 / "algo.yml").write_text(cfg)
    name, run_dir = new_name(names), workdir / "two_days"
    keys = Keys(name)
    kills = []

    def kill_feed_in_day_two(p: subprocess.Popen[str]) -> None:
        """SIGKILL the feed once while it publishes day 2: it must resume after its last id."""
        r = redis.Redis.from_url(_redis_url())

        def in_day_two() -> bool:
            raw = r.get(keys.replay_status())
            st = orjson.loads(raw) if raw else {}
            return p.poll() is not None or st.get("state") == "done" or (
                st.get("day_index") == 2 and st.get("ticks", 0) > st.get("total", 0) * 0.6)

        eventually(in_day_two, 300, message="feed in day 2")
        pid = supervisorctl(run_dir, "pid", "scalper:feed").stdout.strip()
        if p.poll() is None and orjson.loads(r.get(keys.replay_status()))["state"] != "done" and pid.isdigit():
            os.kill(int(pid), signal.SIGKILL)
            kills.append(int(pid))
        r.close()

    run = replay(name, run_dir, d2 / "session.parquet", SAMPLE, during=kill_feed_in_day_two,
                 extra_env={"SCALPER_CONFIG": str(d2 / "algo.yml")},
                 extra=("--instruments", str(d2 / "merged.csv")))
    run.check()
    assert kills, "the feed finished day 2 before it could be killed"
    return {"name": name, "run": run}


@pytest.mark.timeout(600)
def test_two_days_replay_back_to_back_in_date_order_with_ids_increasing_across_them(two_days, baseline):
    name, run = two_days["name"], two_days["run"]
    assert "Replay of 2 days, 2026-12-01 to 2026-12-02" in run.proc.stdout
    r = redis.Redis.from_url(_redis_url())
    keys = Keys(name)
    status = orjson.loads(r.get(keys.replay_status()))
    assert (status["state"], status["days"], status["day"]) == ("done", 2, "2026-12-02")
    assert status["ticks"] == status["total"] and status["skipped"] > 0  # the restarted feed resumed
    dec = wire.StreamDecoder("ticks")
    ids, ends = [], []
    for eid, fields in r.xrange(keys.stream("ticks")):
        ids.append(streamids.parse(eid))
        m = dec.decode(fields)
        if isinstance(m, SessionEnd):
            ends.append((len(ids) - 1, m.trading_day))
    r.close()
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [d for _, d in ends] == ["2026-12-01", "2026-12-02"] and ends[-1][0] == len(ids) - 1
    first_of_day2 = ids[ends[0][0] + 1]
    assert ist_day(first_of_day2[0] * 1_000_000) == DAY2
    # warm-up from the first day's previous.parquet only (day 2's previous day is day 1)
    warmups = [ln for ln in (run.run_dir / "signals.log").read_text().splitlines() if '"warm-up"' in ln]
    assert warmups and all("data/sample/previous.parquet" in ln for ln in warmups)


@pytest.mark.timeout(600)
def test_day_one_of_a_multi_day_replay_equals_its_single_day_replay(two_days, baseline):
    name = two_days["name"]
    got = ledger(name)
    assert by_day(got, DAY1) == by_day(baseline["ledger"], DAY1) == baseline["ledger"]
    r = redis.Redis.from_url(_redis_url())
    dec = decisions(r, name)
    r.close()
    assert [d for d in dec if day_of_tick(d[5]) == DAY1] == baseline["decisions"]


@pytest.mark.timeout(600)
def test_day_two_trades_again_as_the_daily_trade_count_and_cooldowns_start_afresh(two_days):
    """Day 1 used the 2 trades a day the config allows and ended in an index cooldown; day 2's
    signals are accepted, refused by no daily rule."""
    name = two_days["name"]
    r = redis.Redis.from_url(_redis_url())
    dec = decisions(r, name)
    r.close()
    day1 = [d for d in dec if day_of_tick(d[5]) == DAY1]
    day2 = [d for d in dec if day_of_tick(d[5]) == DAY2]
    assert sum(d[2] for d in day1) == 2
    assert day2 and sum(d[2] for d in day2) >= 1, day2
    assert not [d for d in day2 if d[3] in ("max_trades_per_day", "index_cooldown", "symbol_cooldown",
                                            "daily_loss_limit")], day2
    trades2 = by_day(ledger(name), DAY2)["trades"]
    assert any(t[4] == "exited" for t in trades2), trades2


def test_a_position_still_open_at_a_days_session_end_is_squared_off_at_that_session_end(two_days):
    """Day 2's 09:43 entry is still open when the window ends at 09:50 (its SessionEnd)."""
    got = ledger(two_days["name"])
    open_ = [t for t in got["trades"] if t[4] != "exited"]
    assert not open_, f"positions left open after the replay: {open_}"


# --------------------------------------------------------------------------- beside production


def _snapshot_redis(r: redis.Redis) -> dict[bytes, Any]:
    """Every key of the database: its type and value (streams: entries and groups)."""
    out: dict[bytes, Any] = {}
    for k in r.scan_iter(count=1000):
        t = r.type(k)
        if t == b"string":
            v: Any = r.get(k)
        elif t == b"hash":
            v = sorted(r.hgetall(k).items())
        elif t == b"set":
            v = sorted(r.smembers(k))
        elif t == b"zset":
            v = r.zrange(k, 0, -1, withscores=True)
        elif t == b"list":
            v = r.lrange(k, 0, -1)
        elif t == b"stream":
            groups = [(g["name"], g["pending"], g["last-delivered-id"]) for g in r.xinfo_groups(k)]
            v = (r.xrange(k), groups)
        else:
            v = None
        out[k] = (t, v, r.ttl(k) > 0)
    return out


def _schemas(c: psycopg.Connection) -> set[str]:
    """The database's schemas, less PostgreSQL's per-backend temporary namespaces (pg_temp_N,
    pg_toast_temp_N), which any session using a temporary table creates and leaves behind —
    another test or client on the same server included."""
    names = {s for (s,) in c.execute("SELECT schema_name FROM information_schema.schemata")}
    return {n for n in names if not re.fullmatch(r"pg_(toast_)?temp_\d+", n)}


def _snapshot_schema(c: psycopg.Connection, schema: str) -> dict[str, list[tuple]]:
    tables = [t for (t,) in c.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (schema,))]
    return {t: c.execute(f"SELECT * FROM {schema}.{t} ORDER BY 1").fetchall() for t in tables}


@pytest.mark.timeout(600)
def test_a_replay_beside_production_changes_no_production_key_or_row(workdir):
    """One Redis and one database (both throw-away here, so nothing else writes to them) hold a
    "production" namespace and schema; a replay runs beside them. Afterwards every key outside
    the replay's namespace is exactly as before, no key appeared outside it, the production rows
    are unchanged and the only new schema is the replay's."""
    from shared.instruments import parse_scrip_master
    from shared.messages import Signal
    from shared.store import Ledger, connect, migrate

    srv = ThrowAwayRedis(workdir / "shared_redis", aof=False)
    dbname = f"rm_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(DB_URL, autocommit=True)
    admin.execute(f"CREATE DATABASE {dbname}")
    db_url = DB_URL.rsplit("/", 1)[0] + "/" + dbname
    prod, rep = f"prodtest_{uuid.uuid4().hex[:8]}", f"rpl_{uuid.uuid4().hex[:8]}"
    r = redis.Redis.from_url(srv.url)
    try:
        # production: streams with a consumer group and pending entries, hashes, sets, strings
        pk = Keys(prod)
        for i in range(5):
            r.xadd(pk.stream("ticks"), {"type": "clock", "data": f'{{"i":{i}}}'}, id=f"{1000 + i}-0")
        r.xgroup_create(pk.stream("ticks"), "signals", id="0")
        r.xreadgroup("signals", "prod-host", {pk.stream("ticks"): ">"}, count=2)
        r.xadd(pk.stream("orders.requests"), {"type": "x", "data": "{}"})
        r.hset(pk.latest_tick("NSE_FNO", 51647), mapping={"ltp_paise": 9295, "tick_id": "1004-0"})
        r.set(pk.trading_state(), "HALTED")
        r.set(pk.frontier("exits"), "1004-0")
        r.sadd(pk.dedupe("signals"), "sig-a", "sig-b")
        r.set(pk.heartbeat("feed", "prod-host"), "{}", ex=3600)
        r.set("otherapp:config", "untouched")  # outside any scalper namespace
        conn = connect(db_url, prod, application_name="prodtest")
        migrate(conn, prod)
        led = Ledger(conn)
        led.upsert_instruments(parse_scrip_master(SAMPLE.parent / "instruments.csv"))
        led.set_trading_state("HALTED", "production: operator halt")
        led.insert_signal(Signal(msg_id="sig-prod", ts_event=1, ts_init=1, tick_id="1004-0", index="NIFTY",
                                 direction="bullish", timeframe_min=1, candle_ts=1, close_paise=1,
                                 supertrend_paise=1, adx=1.0, confidence=1.0, multiplier=1, reason="prod"))
        conn.close()

        before_keys = _snapshot_redis(r)
        with psycopg.connect(db_url) as c:
            before_rows = _snapshot_schema(c, prod)
            before_schemas = _schemas(c)

        run = replay(rep, workdir / "beside", redis_url=srv.url, db_url=db_url)
        run.check()

        after_keys = _snapshot_redis(r)
        mine = f"scalper:{{{rep}}}:".encode()
        assert {k: v for k, v in after_keys.items() if not k.startswith(mine)} == before_keys
        assert any(k.startswith(mine) for k in after_keys), "the replay wrote nothing?"
        with psycopg.connect(db_url) as c:
            assert _snapshot_schema(c, prod) == before_rows
            after_schemas = _schemas(c)
            assert after_schemas == before_schemas | {rep}
            traded = c.execute(f"SELECT count(*) FROM {rep}.position_trackers").fetchone()
        assert traded and traded[0] >= 1, "the replay beside production did not trade"
    finally:
        r.close()
        srv.close()
        admin.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        admin.close()

