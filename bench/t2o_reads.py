"""What ``bench/bench_tick_to_order.py`` reads during and after a live run: the services'
metrics keys (raw per-order samples, histograms) polled with the programs' CPU, the streams, the
simulator's pace log and the services' JSON logs. Times are UTC ns unless named otherwise."""

from __future__ import annotations

import bisect
import threading
import time
from pathlib import Path
from typing import Any

from common import system_cpu_s
from latency import paced_positions

POLL_S = 0.25
STAGES = ("tick_to_order_entry", "tick_to_order_exit", "tick_to_exit_intent")
"""The stages whose raw samples are collected (executor and exits)."""
SERVICES = ("feed", "signals", "entries", "executor", "exits", "recorder")


class Poller:
    """Polls the executor's and exits' metrics keys (raw samples), the programs' CPU and the
    machine's, every ``POLL_S``."""

    def __init__(self, redis_url: str, namespace: str, run_dir: Path) -> None:
        import redis
        from memory import ServiceSampler

        from shared.keys import Keys

        self.r = redis.Redis.from_url(redis_url)
        self.keys = Keys(namespace)
        self.sampler = ServiceSampler(run_dir)
        self.samples: dict[str, dict[int, float]] = {s: {} for s in STAGES}
        self.counts: dict[str, int] = {}
        # (wall s, service -> stage -> (count, sum_ms, per-bucket counts)), about once a second
        self.histograms: list[tuple[float, dict[str, dict[str, tuple[int, float, list[int]]]]]] = []
        self.buckets_ms: list[float] = []
        self._last_hist = 0.0
        self.machine: list[tuple[float, float, float]] = []
        self.redis_cpu: list[tuple[float, float]] = []
        self.sim_cpu: list[tuple[float, float]] = []
        self.sim_pid = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self, sim_pid: int) -> None:
        self.sim_pid = sim_pid
        self._thread.start()

    def read_metrics(self) -> None:
        from shared.ops.metrics import parse_histograms, parse_samples

        now = time.time()
        snap_due = now - self._last_hist >= 1.0
        snap: dict[str, dict[str, tuple[int, float, list[int]]]] = {}
        for service in SERVICES if snap_due else ("executor", "exits"):
            raw = self.r.get(self.keys.metrics(service))
            if raw is None:
                continue
            if snap_due:
                sh, _ = parse_histograms(raw)
                if sh is not None:
                    snap[service] = {
                        k: (h.count, h.sum_ms, list(h.counts)) for k, h in sh.histograms.items()
                    }
                    for h in sh.histograms.values():
                        self.buckets_ms = list(h.buckets_ms)
            if service not in ("executor", "exits"):
                continue
            for stage, rows in parse_samples(raw).items():
                if stage in self.samples:
                    self.samples[stage].update(rows)
            sh, _ = parse_histograms(raw)
            if sh is not None:
                for stage, h in sh.histograms.items():
                    if stage in self.samples:
                        self.counts[stage] = h.count
        if snap_due and snap:
            self._last_hist = now
            self.histograms.append((now, snap))

    def _loop(self) -> None:
        from common import proc_cpu_s

        while not self._stop.is_set():
            now = time.time()
            try:
                self.read_metrics()
                info = self.r.info("cpu")
                self.redis_cpu.append(
                    (now, float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))
                )
            except Exception:  # noqa: BLE001 - a missed poll is retried; the final read checks
                pass
            self.sampler.sample()
            self.machine.append((now, *system_cpu_s()))
            cpu = proc_cpu_s(self.sim_pid)
            if cpu is not None:
                self.sim_cpu.append((now, cpu))
            self._stop.wait(POLL_S)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def complete(self, timeout_s: float = 15.0) -> dict[str, int]:
        """Read until every observation the histograms counted is among the samples (the
        services write their metrics key once a second); returns how many are missing."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.read_metrics()
            missing = {s: self.counts.get(s, 0) - len(self.samples[s]) for s in STAGES}
            if all(v <= 0 for v in missing.values()) or time.monotonic() > deadline:
                return {s: max(0, v) for s, v in missing.items()}
            time.sleep(0.3)


def window_histograms(
    series: list[tuple[float, dict[str, dict[str, tuple[int, float, list[int]]]]]],
    lo_s: float,
    hi_s: float,
) -> dict[str, dict[str, tuple[int, float, list[int]]]]:
    """Each service's histograms grown between the first snapshot at or after ``lo_s`` and the
    last at or before ``hi_s`` (a restart in between would make counts drop: left out)."""
    inside = [snap for t, snap in series if lo_s <= t <= hi_s]
    if len(inside) < 2:
        return {}
    first, last = inside[0], inside[-1]
    out: dict[str, dict[str, tuple[int, float, list[int]]]] = {}
    for service, stages in last.items():
        for stage, (n, total, counts) in stages.items():
            n0, total0, counts0 = first.get(service, {}).get(stage, (0, 0.0, [0] * len(counts)))
            if n >= n0:
                out.setdefault(service, {})[stage] = (
                    n - n0, total - total0, [a - b for a, b in zip(counts, counts0, strict=True)],
                )  # fmt: skip
    return out


def delta(series: list[tuple[float, float]], start: float, end: float) -> float:
    inside = [v for t, v in series if start <= t <= end]
    return inside[-1] - inside[0] if len(inside) >= 2 else float("nan")


def read_stream(r: Any, key: str, logical: str) -> list[tuple[str, Any]]:
    from shared import wire

    dec = wire.StreamDecoder(logical)
    out, last = [], "-"
    while True:
        rows = r.xrange(key, min=last, max="+", count=5000)
        if last != "-":
            rows = rows[1:]
        if not rows:
            return out
        for eid, fields in rows:
            try:
                out.append((eid.decode(), dec.decode(fields)))
            except Exception:  # noqa: BLE001 - dead-lettered by the services too
                continue
        last = rows[-1][0].decode()


TICK_KEY = (
    "security_id",
    "ltt_s",
    "volume",
    "ltp_paise",
    "bid_paise",
    "ask_paise",
    "bid_qty",
    "ask_qty",
    "oi",
)
"""What identifies a session row in a received tick (unique for all but ~0.2 % of the rows of the
dense day; the first three alone leave 60 % ambiguous: quote updates between trades)."""


def feed_ticks(r: Any, key: str) -> tuple[list[tuple[int, ...]], list[tuple[int, int]]]:
    """(ts_init, *TICK_KEY) of every Tick on the stream, in stream order; and every entry's id
    (ticks, clocks, session ends) as (ms, seq)."""
    import orjson

    from shared import streamids

    out, ids, last = [], [], "-"
    while True:
        rows = r.xrange(key, min=last, max="+", count=10_000)
        if last != "-":
            rows = rows[1:]
        if not rows:
            return out, ids
        for eid, fields in rows:
            ids.append(streamids.parse(eid))
            if fields.get(b"type") != b"tick":
                continue
            d = orjson.loads(fields[b"data"])
            out.append((d["ts_init"], *(d[k] for k in TICK_KEY)))
        last = rows[-1][0].decode()


def pace_anchors(log: Path) -> tuple[float, list[tuple[int, int]], list[str]]:
    """The simulator's pace since its last start: (rate, [(subscribed tick k, wall ns) at which
    the schedule was (re)anchored], every pace line), from its log (see ``dhansim.clock``)."""
    import re

    import orjson

    rate, anchors, lines = 0.0, [], []
    for line in log.read_bytes().splitlines():
        if b'"pace' not in line:
            continue
        try:
            msg = orjson.loads(line)["msg"]
        except (orjson.JSONDecodeError, KeyError):
            continue
        lines.append(msg)
        m = re.match(r"pace started at tick \d+: ([\d.e+]+) subscribed .*\(wall (\d+) ns\)", msg)
        if m:
            rate, anchors = float(m.group(1)), [(0, int(m.group(2)))]
            continue
        m = re.search(r"; (\d+) restarts \(the last at subscribed tick (\d+), wall (\d+) ns\)", msg)
        if m and int(m.group(1)) > 0:
            anchors.append((int(m.group(2)), int(m.group(3))))
    return rate, anchors, lines


def before_feed_ms(
    ticks: list[tuple[int, ...]],
    session: Path,
    rate: float,
    anchors: list[tuple[int, int]],
    lo: int,
    hi: int,
) -> list[float]:
    """Each received tick's ``ts_init`` minus the time the pace scheduled it, for ticks built in
    ``[lo, hi)`` (see :func:`latency.paced_positions`): the k-th subscribed tick since the pace
    started is due at ``wall + (k - k0) / rate`` of the latest anchor (k0, wall) with k0 <= k."""
    import polars as pl

    ticks = [t for t in ticks if t[0] >= anchors[0][1]]
    paise = {"ltp_paise": "ltp", "bid_paise": "bid", "ask_paise": "ask"}
    rows = (
        pl.read_parquet(
            session,
            columns=[
                "security_id",
                "ltt_s",
                "volume",
                "ltp",
                "bid",
                "ask",
                "bid_qty",
                "ask_qty",
                "oi",
            ],
        )
        .with_columns((pl.col(v) * 100).round().cast(pl.Int64).alias(k) for k, v in paise.items())
        .select(TICK_KEY)
        .with_row_index("row")
        .filter(pl.len().over(TICK_KEY) == 1)
    )
    got = pl.DataFrame(
        [
            [i for i in range(len(ticks))],
            *([t[j + 1] for t in ticks] for j in range(len(TICK_KEY))),
        ],
        schema=[("i", pl.Int64), *((k, pl.Int64) for k in TICK_KEY)],
        orient="col",
    )
    joined = got.join(rows, on=list(TICK_KEY), how="left").sort("i")
    ks = paced_positions([None if r is None else int(r) for r in joined["row"].to_list()])
    starts = [k0 for k0, _ in anchors]
    out = []
    for (ts_init, *_), k in zip(ticks, ks, strict=True):
        if k is None or not lo <= ts_init < hi:
            continue
        k0, wall = anchors[bisect.bisect_right(starts, k) - 1]
        out.append((ts_init - (wall + (k - k0) * 1e9 / rate)) / 1e6)
    return out


def wait_played(
    run: Any, redis_url: str, namespace: str, timeout_s: float, settle_s: float = 10.0
) -> None:
    """Until the simulator has played the session, then until the pipeline is drained or
    ``settle_s`` passed (an order sent near the end may never fill: no tick comes after it)."""
    import redis

    from shared.keys import Keys
    from shared.supervise import group_states

    deadline = time.monotonic() + timeout_s
    while not run.sim_state().get("finished"):
        if run.sup is not None and run.sup.poll() is not None:
            raise RuntimeError("supervisord exited")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the simulator did not play the session in {timeout_s:.0f}s")
        time.sleep(0.5)
    r = redis.Redis.from_url(redis_url)
    try:
        settle = time.monotonic() + settle_s
        while time.monotonic() < settle:
            states = group_states(r, Keys(namespace))
            if all(
                lag == 0 and pending == 0 for g in states.values() for lag, pending in g.values()
            ):
                return
            time.sleep(0.5)
    finally:
        r.close()


def chain_merged(log: Path) -> dict[str, int]:
    """signal id -> when entries logged "option chain merged" for it (UTC ns, ms resolution)."""
    from datetime import datetime

    import orjson

    out = {}
    for line in log.read_bytes().splitlines():
        if b'"option chain merged"' in line:
            rec = orjson.loads(line)
            out[rec.get("signal_id", "")] = int(datetime.fromisoformat(rec["ts"]).timestamp() * 1e9)
    return out


def log_lines(log: Path, needle: bytes, lo: int, hi: int) -> int:
    """JSON log lines containing ``needle`` written between ``lo`` and ``hi`` (UTC ns)."""
    from datetime import datetime

    import orjson

    n = 0
    for line in log.read_bytes().splitlines():
        if needle not in line:
            continue
        ts = int(datetime.fromisoformat(orjson.loads(line)["ts"]).timestamp() * 1e9)
        n += lo <= ts < hi
    return n
