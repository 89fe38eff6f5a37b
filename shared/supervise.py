"""Running the six services under supervisord, and knowing when a replay is drained."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import redis

from shared.keys import LOGICAL_STREAMS, Keys

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("feed", "signals", "entries", "executor", "exits", "sync")
# Consumer groups that must be empty for a replay to count as drained.
GROUPS = {
    "ticks": ("signals", "exits"),
    "signals": ("entries",),
    "orders.requests": ("executor",),
    "positions": ("exits",),
    "feed.control": ("feed",),
}


def supervisor_env(run_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "SCALPER_PYTHON": sys.executable,
        "SCALPER_RUN_DIR": str(run_dir.resolve()),
        "PYTHONPATH": str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
        "PYTHONUNBUFFERED": "1",
    })
    for k, default in (("SCALPER_SIM_SESSION", str(ROOT / "data/sample/session.parquet")),
                       ("SCALPER_SIM_INSTRUMENTS", str(ROOT / "data/sample/instruments.csv")),
                       ("SCALPER_SIM_SPEED", "1")):
        env.setdefault(k, default)
    env.update(extra)
    return env


def start_supervisord(run_dir: Path, extra_env: dict[str, str], conf: Path | None = None) -> subprocess.Popen[bytes]:
    """Start supervisord in the foreground (as our child) with the project's config."""
    run_dir.mkdir(parents=True, exist_ok=True)
    conf = conf or ROOT / "supervisord.conf"
    return subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(conf)],
        env=supervisor_env(run_dir, extra_env), cwd=ROOT,
        stdout=open(run_dir / "supervisord.out", "ab"), stderr=subprocess.STDOUT,
    )


def supervisorctl(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(ROOT / "supervisord.conf"), *args],
        env=supervisor_env(run_dir, {}), cwd=ROOT, capture_output=True, text=True, timeout=60,
    )


def stop_supervisord(proc: subprocess.Popen[bytes], timeout_s: float = 60) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def group_states(r: redis.Redis, keys: Keys) -> dict[str, dict[str, tuple[int, int]]]:
    """stream -> group -> (lag, pending)."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for s in LOGICAL_STREAMS:
        try:
            groups = r.xinfo_groups(keys.stream(s))
        except redis.ResponseError:
            continue
        for g in groups:
            name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
            lag = g.get("lag")
            out.setdefault(s, {})[name] = (int(lag) if lag is not None else -1, int(g["pending"]))
    return out


def drained(r: redis.Redis, keys: Keys) -> tuple[bool, str]:
    """Is the replay finished and every consumer group empty? With a reason when not."""
    raw = r.get(keys.replay_status())
    status = orjson.loads(raw) if raw else {}
    if status.get("state") != "done":
        return False, f"feed: {status.get('published', 0)}/{status.get('total', '?')} published"
    states = group_states(r, keys)
    for stream, groups in GROUPS.items():
        for g in groups:
            if g == "signals":  # one group per signals partition: "signals" or "signals-<indices>"
                if not any(n == g or n.startswith("signals-") for n in states.get(stream, {})):
                    return False, f"no signals group on {stream} yet"
            elif g not in states.get(stream, {}):
                return False, f"group {g} on {stream} not created yet"
    for stream, groups in states.items():
        for g, (lag, pending) in groups.items():
            if lag != 0 or pending != 0:
                return False, f"{g} on {stream}: lag {lag}, pending {pending}"
    return True, "drained"


def wait_drained(r: redis.Redis, keys: Keys, proc: subprocess.Popen[bytes] | None, timeout_s: float,
                 progress: bool = True) -> None:
    """Block until the pipeline is drained twice in a row (a stable state), or raise."""
    deadline = time.monotonic() + timeout_s
    stable = 0
    last_print = 0.0
    while True:
        ok, why = drained(r, keys)
        stable = stable + 1 if ok else 0
        if stable >= 3:
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"supervisord exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"replay not drained after {timeout_s:.0f}s: {why}")
        if progress and time.monotonic() - last_print > 5:
            last_print = time.monotonic()
            print(f"  ... {why}", file=sys.stderr, flush=True)
        time.sleep(0.2)
