"""Replay throughput: the sample session through the whole supervised pipeline at full speed.

One run = ``scalper replay data/sample/session.parquet --speed max`` into a throw-away namespace
and schema (``bench_<hex>``), with its own run directory; all six services and the recorder run
under supervisord. Beside the CLI, a sampler thread polls every 100 ms:

- the drain state (``shared.supervise.drained``: the feed is done and every consumer group of
  every stream has lag 0 and nothing pending) — the first poll of the final drained streak is
  the run's end, and the last poll at which a group still had work is that group's finish time;
- each supervised program's VmHWM and CPU seconds (:class:`memory.ServiceSampler`).

Throughput = session ticks / (drained − the feed's ``replay starting`` log line), both wall
clock. The CLI's own "replay drained in Xs" (supervisord start to stop, set-up and shutdown
included) is reported beside it. Afterwards the namespace's keys, the schema and the run
directory are removed.

    .venv/bin/python bench/replay_throughput.py [--runs N] [--from HH:MM --to HH:MM] [--pythonpath DIR]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from common import ROOT, SESSION, drop_namespace, drop_schema, env_config, system_cpu_s, throwaway
from memory import ServiceSampler

POLL_S = 0.1


@dataclass
class ReplayRun:
    namespace: str
    ticks: int = 0
    entries_published: int = 0
    feed_start: float = 0.0  # wall epoch seconds
    feed_finished: float = 0.0
    drained_at: float = 0.0
    cli_wall_s: float = 0.0
    cli_drained_s: float = float("nan")
    trades: int = -1
    group_done_s: dict[str, float] = field(default_factory=dict)  # "group@stream" -> s after start
    window: str = "whole session"
    hwm_kb: dict[str, int] = field(default_factory=dict)
    # when each program's peak was reached, and its RSS over the run (s after feed start, kB)
    hwm_at_s: dict[str, float] = field(default_factory=dict)
    timeline: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    # CPU seconds of each program between feed start and drained
    cpu_s: dict[str, float] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    redis_cpu_s: float = 0.0  # Redis server CPU seconds between feed start and drained
    machine_busy: float = 0.0  # fraction of all cores busy between feed start and drained
    pythonpath: str = ""

    @property
    def wall_s(self) -> float:
        return self.drained_at - self.feed_start

    @property
    def ticks_per_s(self) -> float:
        return self.ticks / self.wall_s

    @property
    def feed_entries_per_s(self) -> float:
        return self.entries_published / (self.feed_finished - self.feed_start)


def _scalper() -> list[str]:
    exe = Path(sys.executable).parent / "scalper"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "shared.cli"]


def _log_time(log: Path, message: str) -> tuple[float, dict[str, object]]:
    """Wall time (epoch s) and fields of the first JSON log line with ``msg == message``."""
    import orjson

    with open(log, "rb") as f:
        for line in f:
            if message.encode() not in line:
                continue
            rec = orjson.loads(line)
            if rec.get("msg") == message:
                return datetime.fromisoformat(rec["ts"]).timestamp(), rec
    raise RuntimeError(f"{log}: no {message!r} line")


def _redis_cpu_s(r) -> float:  # type: ignore[no-untyped-def]
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _delta(series: list[tuple[float, float]], start: float, end: float) -> float:
    """Growth of a cumulative series (wall s, value) from the first sample at or after ``start``
    to the last at or before ``end``."""
    inside = [v for t, v in series if start <= t <= end + 0.15]
    return inside[-1] - inside[0] if len(inside) >= 2 else float("nan")


def run_replay(
    namespace: str | None = None,
    *,
    timeout_s: float = 1200,
    on_pids: Callable[[dict[str, int]], None] | None = None,
    keep_dir: Path | None = None,
    window: tuple[str, str] | None = None,
    pythonpath: str = "",
) -> ReplayRun:
    """One replay of the sample session (or of an IST ``window`` of it, e.g. ("09:15", "09:45")).

    ``on_pids`` is called once with the programs' pids, when the feed has started the replay
    (its status key exists); ``pythonpath`` is prepended to the
    services' PYTHONPATH (a what-if run with an extra package, e.g. hiredis).
    """
    import os

    import redis

    from shared.keys import Keys
    from shared.supervise import drained, group_states

    env = env_config()
    ns = namespace or throwaway()
    run_dir = Path(tempfile.mkdtemp(prefix=f"{ns}_", dir="/tmp"))
    res = ReplayRun(ns, pythonpath=pythonpath)
    if window:
        res.window = f"{window[0]}-{window[1]} IST"
    r = redis.Redis.from_url(env.redis_url)
    keys = Keys(ns)
    sampler = ServiceSampler(run_dir)
    stop = threading.Event()
    marks: dict[str, float] = {}
    group_busy_last: dict[str, float] = {}
    machine_series: list[tuple[float, float, float]] = []  # (wall, busy s, total s)
    redis_series: list[tuple[float, float]] = []

    def poll() -> None:
        streak_start = None
        announced = False
        while not stop.is_set():
            now = time.time()
            sampler.sample()
            if (
                on_pids
                and not announced
                and len(sampler.current) == len(sampler.stats)
                and r.exists(keys.replay_status())
            ):  # the feed has loaded the session
                announced = True
                on_pids(dict(sampler.current))
            machine_series.append((now, *system_cpu_s()))
            try:
                redis_series.append((now, _redis_cpu_s(r)))
                ok, _why = drained(r, keys)
                if not ok:
                    streak_start = None
                    for stream, groups in group_states(r, keys).items():
                        for g, (lag, pending) in groups.items():
                            if lag != 0 or pending != 0:
                                group_busy_last[f"{g}@{stream}"] = now
                elif streak_start is None:
                    streak_start = now
                    marks["drained"] = now
            except redis.RedisError:
                pass
            stop.wait(POLL_S)

    cmd = [
        *_scalper(),
        "replay",
        str(SESSION),
        "--speed",
        "max",
        "--namespace",
        ns,
        "--schema",
        ns,
        "--run-dir",
        str(run_dir),
        "--timeout",
        str(timeout_s),
    ]
    if window:
        cmd += ["--from", window[0], "--to", window[1]]
    env_vars = dict(os.environ)
    if pythonpath:
        env_vars["PYTHONPATH"] = pythonpath + os.pathsep + env_vars.get("PYTHONPATH", "")
    t0 = time.monotonic()
    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s + 120, env=env_vars
        )
        res.cli_wall_s = time.monotonic() - t0
        stop.set()
        thread.join(5)
        if proc.returncode != 0:
            raise RuntimeError(f"scalper replay failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        m = re.search(r"replay drained in ([\d.]+)s", proc.stderr)
        if m:
            res.cli_drained_s = float(m.group(1))
        m = re.search(r"^trades (\d+)", proc.stdout, re.M)
        if m:
            res.trades = int(m.group(1))
        res.feed_start, start_rec = _log_time(run_dir / "feed.log", "replay starting")
        res.ticks = int(start_rec["ticks"])  # type: ignore[call-overload]
        res.feed_finished, fin_rec = _log_time(run_dir / "feed.log", "replay finished")
        res.entries_published = int(fin_rec["published"])  # type: ignore[call-overload]
        if "drained" not in marks:
            raise RuntimeError("the sampler never saw the pipeline drained")
        res.drained_at = end = marks["drained"]
        start = res.feed_start
        busy = _delta([(t, b) for t, b, _ in machine_series], start, end)
        total = _delta([(t, tot) for t, _, tot in machine_series], start, end)
        res.machine_busy = busy / total if total == total and total > 0 else float("nan")
        res.redis_cpu_s = _delta(redis_series, start, end)
        res.group_done_s = {g: t - start for g, t in sorted(group_busy_last.items()) if t >= start}
        for name, st in sampler.stats.items():
            res.hwm_kb[name] = st.hwm_kb
            res.hwm_at_s[name] = st.hwm_at - start
            res.timeline[name] = [(t - start, kb) for t, kb, _ in st.timeline]
            res.cpu_s[name] = _delta([(t, c) for t, _, c in st.timeline], start, end)
            res.restarts[name] = st.restarts
    finally:
        stop.set()
        r.close()
        if (run_dir / "supervisor.sock").exists():  # the CLI died before stopping its supervisord
            from shared.supervise import supervisorctl

            try:
                supervisorctl(run_dir, "shutdown")
                time.sleep(2)
            except subprocess.SubprocessError:
                pass
        drop_namespace(env.redis_url, ns)
        drop_schema(env.database_url, ns)
        if keep_dir is not None:
            keep_dir.mkdir(parents=True, exist_ok=True)
            for log in run_dir.glob("*.log"):
                shutil.copy(log, keep_dir / log.name)
        shutil.rmtree(run_dir, ignore_errors=True)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--from", dest="from_hhmm")
    p.add_argument("--to", dest="to_hhmm")
    p.add_argument("--pythonpath", default="", help="prepended to the services' PYTHONPATH")
    a = p.parse_args(argv)
    window = (a.from_hhmm or "09:15", a.to_hhmm or "15:30") if (a.from_hhmm or a.to_hhmm) else None
    runs = []
    for i in range(a.runs):
        run = run_replay(window=window, pythonpath=a.pythonpath)
        runs.append(run)
        print(
            f"run {i + 1}: {run.ticks:,} ticks in {run.wall_s:.1f}s = {run.ticks_per_s:,.0f} ticks/s "
            f"(CLI drained {run.cli_drained_s:.1f}s, feed {run.feed_entries_per_s:,.0f} entries/s, "
            f"trades {run.trades}, machine busy {run.machine_busy:.0%}, redis cpu {run.redis_cpu_s:.1f}s)"
        )
        print(
            "   peak RSS MiB: "
            + ", ".join(
                f"{k} {v / 1024:.0f} (at {run.hwm_at_s[k]:.1f}s)" for k, v in run.hwm_kb.items()
            )
        )
        print(
            f"   feed finished at {run.feed_finished - run.feed_start:.1f}s, drained at {run.wall_s:.1f}s"
        )
        print("   CPU s:        " + ", ".join(f"{k} {v:.1f}" for k, v in run.cpu_s.items()))
        print("   group done s: " + ", ".join(f"{k} {v:.1f}" for k, v in run.group_done_s.items()))
    print(
        f"median {statistics.median(r.ticks_per_s for r in runs):,.0f} ticks/s over {len(runs)} runs"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
