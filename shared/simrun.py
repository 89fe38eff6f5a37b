"""The live code path end to end, against the DhanHQ simulator on loopback.

``scalper simrun SESSION`` starts ``dhansim`` replaying a recorded session at N x, then the six
services under supervisord in **live** mode (orders enabled unless ``--dry-run``), pointed at the
simulator's REST, market-feed and order-update endpoints, with event time taken from the
exchange's last-trade time (``SCALPER_EVENT_TIME=exchange``) so market hours and windows follow
the session. It returns when the simulator has played the session and every consumer group is
drained, and prints the report.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from shared.keys import Keys
from shared.supervise import ROOT, group_states, start_supervisord, stop_supervisord

SIM_TOKEN = os.environ.get("SCALPER_SIM_TOKEN") or "sim-access-token-0123456789"
"""The simulator's access token; ``SCALPER_SIM_TOKEN`` overrides it (the secrets test uses a fresh one)."""
SIM_CLIENT = "1100000001"


def _pump(stream: Any, log_path: Path) -> None:
    with open(log_path, "a") as out:
        for line in stream:
            out.write(line)
            out.flush()


def start_simulator(session: Path, instruments: Path, log_path: Path, *, speed: str = "max",
                    from_hhmm: str | None = None, to_hhmm: str | None = None,
                    faults: str = "") -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start ``python -m dhansim`` and return the process and its ``ready`` record (URLs)."""
    cmd = [sys.executable, "-m", "dhansim", "--session", str(session), "--instruments", str(instruments),
           "--speed", speed, "--token", SIM_TOKEN, "--client-id", SIM_CLIENT]
    if from_hhmm:
        cmd += ["--from", from_hhmm]
    if to_hhmm:
        cmd += ["--to", to_hhmm]
    if faults:
        cmd += ["--faults", faults]
    log = open(log_path, "ab")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    log.close()
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"simulator did not start; see {log_path}")
        if '"event": "ready"' in line or '"event":"ready"' in line:
            ready = json.loads(line)
            # Keep draining its stdout into the log so it never blocks on a full pipe.
            threading.Thread(target=_pump, args=(proc.stdout, log_path), daemon=True).start()
            return proc, ready


def live_env(ready: dict[str, Any], orders_enabled: bool = True) -> dict[str, str]:
    """Environment that points the live code path at a running simulator."""
    return {
        "SCALPER_MODE": "live", "SCALPER_ORDERS_ENABLED": "true" if orders_enabled else "false",
        "SCALPER_REPLAY": "", "SCALPER_REPLAY_FILE": "", "SCALPER_EVENT_TIME": "exchange",
        "DHAN_CLIENT_ID": SIM_CLIENT, "DHAN_ACCESS_TOKEN": SIM_TOKEN,
        "DHAN_REST_URL": ready["rest_url"], "DHAN_FEED_URL": ready["feed_url"].split("?")[0],
        "DHAN_ORDER_WS_URL": ready["order_ws_url"],
    }


class SimRun:
    """A running simulator plus supervised pipeline; use as a context manager."""

    def __init__(self, session: Path, instruments: Path, *, env: Any, run_dir: Path, speed: str,
                 from_hhmm: str | None, to_hhmm: str | None, orders_enabled: bool = True,
                 faults: str = "", warmup: Path | None = None, extra_env: dict[str, str] | None = None) -> None:
        self.session, self.instruments, self.env, self.run_dir = session, instruments, env, run_dir
        self.speed, self.from_hhmm, self.to_hhmm = speed, from_hhmm, to_hhmm
        self.orders_enabled, self.faults, self.warmup = orders_enabled, faults, warmup
        self.extra_env = extra_env or {}
        self.sim: subprocess.Popen[str] | None = None
        self.sup: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, Any] = {}

    def __enter__(self) -> SimRun:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.sim, self.ready = start_simulator(
            self.session, self.instruments, self.run_dir / "dhansim.log", speed=self.speed,
            from_hhmm=self.from_hhmm, to_hhmm=self.to_hhmm, faults=self.faults)
        extra = {
            **live_env(self.ready, self.orders_enabled),
            "SCALPER_NAMESPACE": self.env.namespace, "SCALPER_DB_SCHEMA": self.env.db_schema,
            "SCALPER_WARMUP_FILE": str(self.warmup) if self.warmup and self.warmup.exists() else "",
            **self.extra_env,
        }
        self.sup = start_supervisord(self.run_dir, extra)
        return self

    def sim_state(self) -> dict[str, Any]:
        return httpx.get(f"{self.ready['control_url']}/state", timeout=10).json()

    def broker(self, path: str) -> Any:
        h = {"access-token": SIM_TOKEN, "client-id": SIM_CLIENT, "Accept": "application/json"}
        return httpx.get(f"{self.ready['rest_url']}{path}", headers=h, timeout=10).json()

    def wait_done(self, timeout_s: float, progress: bool = False) -> None:
        r = redis.Redis.from_url(self.env.redis_url)
        keys = Keys(self.env.namespace)
        deadline = time.monotonic() + timeout_s
        stable, last_print = 0, 0.0
        try:
            while True:
                st = self.sim_state()
                why = ""
                if not st.get("finished"):
                    why = f"simulator at {st.get('now_ist')} ({st.get('cursor')}/{st.get('total_ticks')})"
                else:
                    for stream, groups in group_states(r, keys).items():
                        for g, (lag, pending) in groups.items():
                            if lag != 0 or pending != 0:
                                why = f"{g} on {stream}: lag {lag} pending {pending}"
                stable = stable + 1 if not why else 0
                if stable >= 5:
                    return
                if self.sup is not None and self.sup.poll() is not None:
                    raise RuntimeError("supervisord exited")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"live run not done after {timeout_s:.0f}s: {why}")
                if progress and time.monotonic() - last_print > 5:
                    last_print = time.monotonic()
                    print(f"  ... {why or 'settling'}", file=sys.stderr, flush=True)
                time.sleep(0.3)
        finally:
            r.close()

    def __exit__(self, *exc: object) -> None:
        if self.sup is not None:
            stop_supervisord(self.sup)
        if self.sim is not None and self.sim.poll() is None:
            self.sim.send_signal(signal.SIGTERM)
            try:
                self.sim.wait(20)
            except subprocess.TimeoutExpired:
                self.sim.kill()
