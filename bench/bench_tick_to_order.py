"""Tick-to-order latency: the live path against the DhanHQ simulator at a steady tick rate.

One run = ``dhansim`` pacing a dense synthetic session at a steady ``--rate`` subscribed ticks
per second (``--speed 2000/s``, see ``dhansim.clock``) to the six services and the recorder,
under supervisord in **live** mode with orders enabled (``shared.simrun.SimRun``, as
``scalper simrun``), in a throw-away namespace and schema, with a trading configuration that
makes signals fire (below). Measured, per order, on one wall clock (every process reads the same
``CLOCK_REALTIME``):

- **tick-to-order** = the executor's broker call − the originating tick's ``ts_origin``. The
  executor observes ``tick_to_order_<kind>`` right before ``POST /orders``; the raw observations
  are the ``recent`` samples of its metrics key (``shared.ops.metrics``), polled during the run,
  so every order has its exact value. ``ts_origin`` is the ``Tick.ts_init`` the feed stamped when
  it built the tick, right after reading the WebSocket frame (``recv_ns`` plus one decode), kept
  in live mode whatever ``SCALPER_EVENT_TIME`` makes of ``ts_event``.
- the stages, from the messages' own stamps joined per order: the Signal's and the OrderIntent's
  ``ts_init`` (signals and entries, or exits, built them), the order row's ``created_at`` in
  Postgres (the executor's first write), and the end of the previous order (the executor
  follows one order to its fill before it reads the next intent).
- before the feed: each received tick's ``ts_init`` against the time the simulator's pace
  scheduled it (``start + k / rate``), so the numbers above can be read knowing what the feed's
  own input queue adds.

Entry orders start at the index tick that closed the signal's candle; exit orders at the option
tick that crossed the stop or target. The configuration (``BENCH_CONFIG``): Supertrend
multiplier 0.1 (a flip every couple of minutes of the synthetic day instead of every twenty),
no cooldown, no trade cap, 3 % stop and target (exits within a minute or two of event time),
daily-loss rule off. The session: ``scalper synth`` of the sample day (same seed, so the index
path, the instruments and the warm-up file ``data/sample/previous.parquet`` still match) with
five times the option tick rate: its 09:15-11:30 (``WINDOW``) lasts about three and a half
minutes at 2,000 subscribed ticks/s.

    .venv/bin/python bench/bench_tick_to_order.py [--runs N] [--rate 2000] [--quick]
        [--update BENCHMARKS.md]    # also replace the tick-to-order section of the report
"""

from __future__ import annotations

import argparse
import bisect
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, drop_namespace, drop_schema, env_config, throwaway  # noqa: E402
from latency import Sample, join_by_origin, per_second_counts, summarize  # noqa: E402
from t2o_reads import (  # noqa: E402
    STAGES,
    Poller,
    before_feed_ms,
    chain_merged,
    delta,
    feed_ticks,
    log_lines,
    pace_anchors,
    read_stream,
    wait_played,
    window_histograms,
)

SAMPLE_DIR = ROOT / "data" / "sample"
SESSION_CACHE = Path(os.environ.get("SCALPER_BENCH_CACHE", "/tmp/scalper-bench-cache"))
OPTION_RATE_HZ = 4.0  # 5x the sample's 0.8
SYNTH_DAY, SYNTH_SEED = "2026-12-01", 20261201
WINDOW = ("09:15", "11:30")  # of the dense day: ~3.5 minutes at 2,000 subscribed ticks/s
REFERENCE_WINDOW = ("09:15", "09:30")
WARMUP_S = 5.0  # seconds after the first option tick before samples count
BENCH_CONFIG: dict[str, Any] = {
    "signals": {"supertrend": {"multiplier": 0.1}},
    "entries": {
        "window_start_hhmm": "09:16",
        "window_end_hhmm": "15:10",
        "max_trades_per_day": 100_000,
    },
    "risk": {
        "sl_pct": 0.03,
        "tp_pct": 0.03,
        "rule_order": [
            "emergency_sl",
            "stop_loss",
            "take_profit",
            "breakeven",
            "trailing",
            "time_exit",
        ],
    },
    "paper": {"balance_rupees": 100_000_000},
}
INDEX_COOLDOWN_S = 0


# --------------------------------------------------------------------------- inputs


def dense_session(option_rate_hz: float = OPTION_RATE_HZ) -> tuple[Path, Path]:
    """The dense synthetic session (generated once, cached): (session.parquet, instruments.csv)."""
    out = SESSION_CACHE / f"synth_{SYNTH_DAY}_{SYNTH_SEED}_{option_rate_hz:g}hz"
    session, instruments = out / "session.parquet", out / "instruments.csv"
    if not session.exists():
        from datetime import date

        from shared.synth import generate_session

        tmp = out.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        generate_session(
            date.fromisoformat(SYNTH_DAY), SYNTH_SEED, tmp / "session.parquet",
            tmp / "instruments.csv", option_rate_hz=option_rate_hz,
        )  # fmt: skip
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return session, instruments


def write_config(path: Path) -> Path:
    """``config/algo.yml`` with :data:`BENCH_CONFIG` merged in (and every index's cooldown 0)."""
    import yaml

    doc = yaml.safe_load((ROOT / "config" / "algo.yml").read_text())

    def merge(into: dict[str, Any], over: dict[str, Any]) -> None:
        for k, v in over.items():
            if isinstance(v, dict):
                merge(into.setdefault(k, {}), v)
            else:
                into[k] = v

    merge(doc, BENCH_CONFIG)
    for ix in doc["indices"]:
        ix["cooldown_s"] = INDEX_COOLDOWN_S
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# --------------------------------------------------------------------------- one run


@dataclass
class Order:
    """One order the executor sent, with the stamps of its way there (UTC ns; 0 = unknown)."""

    kind: str
    origin: int  # ts_origin: the feed built the originating tick
    call: int  # the executor's broker call
    signal: int = 0  # entries only: signals built the Signal
    intent: int = 0  # entries or exits built the OrderIntent
    row: int = 0  # the executor created the order row (Postgres created_at)
    prev_done: int = 0  # the executor finished the intent before this one
    busy_until: int = 0  # entries: the end of the order the executor was following at ``signal``
    ticks_advanced: int = -1  # entries: stream entries between the previous Signal's tick and this
    chain_at: int = 0  # entries: its "option chain merged" log line (ms resolution), live mode

    @property
    def total_ms(self) -> float:
        return (self.call - self.origin) / 1e6


@dataclass
class T2ORun:
    namespace: str
    rate_per_s: float
    window_s: float = 0.0  # measurement window (first option tick + warm-up .. last tick)
    ticks_in_window: int = 0
    per_second: list[int] = field(default_factory=list)  # ticks the feed built, per second
    samples: dict[str, list[Sample]] = field(default_factory=dict)  # in the window
    lost_samples: dict[str, int] = field(default_factory=dict)  # observed but not collected
    orders: list[Order] = field(default_factory=list)  # in the window, joined
    unjoined: int = 0
    signals: int = 0
    intents: dict[str, int] = field(default_factory=dict)
    before_feed_ms: list[float] = field(default_factory=list)  # pace schedule -> Tick.ts_init
    pace_log: list[str] = field(default_factory=list)
    pace_restarts_in_window: int = 0
    buckets_ms: list[float] = field(default_factory=list)
    stage_hist: dict[str, dict[str, tuple[int, float, list[int]]]] = field(default_factory=dict)
    feed_reconnects: int = 0
    entries_retries: int = 0  # entries' REST calls retried (rate limits, 5xx) in the window
    cpu_s: dict[str, float] = field(default_factory=dict)
    sim_cpu_s: float = 0.0
    redis_cpu_s: float = 0.0
    machine_busy: float = float("nan")
    wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def values(self, stage: str) -> list[float]:
        return [s.ms for s in self.samples.get(stage, [])]


def run_once(
    rate_per_s: float = 2000.0,
    *,
    session: Path | None = None,
    instruments: Path | None = None,
    window: tuple[str, str] | None = None,
    keep_dir: Path | None = None,
    timeout_s: float = 900.0,
) -> T2ORun:
    """One measured live run; the namespace, schema and run directory are removed afterwards."""
    import psycopg
    import redis

    from shared.cli import _env, reset_deployment
    from shared.keys import Keys
    from shared.messages import OrderFilled, OrderIntent, OrderRejected, Signal
    from shared.simrun import SimRun

    if session is None or instruments is None:
        session, instruments = dense_session()
    env0 = env_config()
    ns = throwaway("t2o")
    env = _env(ns, ns)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{ns}_", dir="/tmp"))
    res = T2ORun(ns, rate_per_s)
    keys = Keys(ns)
    r = redis.Redis.from_url(env0.redis_url)
    poller = None
    try:
        reset_deployment(env, instruments)
        cfg = write_config(run_dir / "algo.yml")
        t0 = time.time()
        with SimRun(
            session, instruments, env=env, run_dir=run_dir, speed=f"{rate_per_s:g}/s",
            from_hhmm=window[0] if window else None, to_hhmm=window[1] if window else None,
            warmup=SAMPLE_DIR / "previous.parquet", extra_env={"SCALPER_CONFIG": str(cfg)},
        ) as run:  # fmt: skip
            assert run.sim is not None
            poller = Poller(env0.redis_url, ns, run_dir)
            poller.start(run.sim.pid)
            wait_played(run, env0.redis_url, ns, timeout_s)
            missing = poller.complete()
            poller.stop()
        res.wall_s = time.time() - t0
        res.lost_samples = {s: n for s, n in missing.items() if n}

        # -- what the feed received and when
        ticks, tick_ids = feed_ticks(r, keys.stream("ticks"))
        opt = [t[0] for t in ticks if t[1] != 13]  # option ticks (13: the NIFTY index)
        if not opt:
            raise RuntimeError("no option tick reached the feed: no chain was subscribed")
        lo = int(min(opt) + WARMUP_S * 1e9)
        hi = max(t[0] for t in ticks)
        res.window_s = (hi - lo) / 1e9
        res.per_second = per_second_counts((t[0] for t in ticks), lo, hi)
        res.ticks_in_window = sum(1 for t in ticks if lo <= t[0] < hi)
        res.feed_reconnects = log_lines(run_dir / "feed.log", b"feed socket closed", lo, hi)
        res.entries_retries = log_lines(
            run_dir / "entries.log", b"retrying after broker error", lo, hi
        )
        pace_rate, anchors, res.pace_log = pace_anchors(run_dir / "dhansim.log")
        res.pace_restarts_in_window = sum(1 for _, w in anchors[1:] if lo <= w < hi)
        if anchors:
            res.before_feed_ms = before_feed_ms(ticks, session, pace_rate, anchors, lo, hi)

        # -- the orders, joined to their stamps
        samples = {
            s: [Sample(t, ms) for t, ms in sorted(poller.samples[s].items())] for s in STAGES
        }
        res.samples = {s: [x for x in v if lo <= x.origin_ns < hi] for s, v in samples.items()}
        sigs = {
            m.msg_id: m
            for _, m in read_stream(r, keys.stream("signals"), "signals")
            if isinstance(m, Signal)
        }
        res.signals = sum(1 for m in sigs.values() if lo <= m.ts_origin < hi)
        intents = [m for _, m in read_stream(r, keys.stream("orders.requests"), "orders.requests")
                   if isinstance(m, OrderIntent)]  # fmt: skip
        done: dict[str, int] = {}  # correlation id -> the executor's final event for it
        for _, m in read_stream(r, keys.stream("orders.events"), "orders.events"):
            if isinstance(m, OrderFilled | OrderRejected):
                done[m.correlation_id] = max(done.get(m.correlation_id, 0), m.ts_init)
        with psycopg.connect(env.database_url) as conn:
            conn.execute(f"SET search_path = {ns}")
            rows = conn.execute(
                "SELECT intent_msg_id, correlation_id,"
                " floor(extract(epoch FROM created_at) * 1000000)::bigint FROM orders"
            ).fetchall()
        created = {m: us * 1000 for m, _, us in rows}
        chain_at = chain_merged(run_dir / "entries.log")
        # when the executor was following each order: (row created, final event)
        busy = sorted((us * 1000, done[c]) for _, c, us in rows if c in done)
        # entries advances its tick cursor to each Signal's tick: the entries walked per signal
        from shared import streamids

        sig_ticks = sorted(streamids.parse(m.tick_id) for m in sigs.values())
        walked = {
            t: bisect.bisect_right(tick_ids, t) - bisect.bisect_right(tick_ids, prev)
            for prev, t in zip([(0, 0), *sig_ticks], sig_ticks, strict=False)
        }
        for kind in ("entry", "exit"):
            mine = [it for it in intents if it.kind == kind and it.ts_origin]
            res.intents[kind] = sum(1 for it in mine if lo <= it.ts_origin < hi)
            stage = f"tick_to_order_{kind}"
            hits = join_by_origin(res.samples[stage], [it.ts_origin for it in mine])
            res.unjoined += sum(1 for h in hits if h is None)
            for s, h in zip(
                sorted(res.samples[stage], key=lambda x: x.observed_at_ns), hits, strict=True
            ):
                if h is None:
                    continue
                it = mine[h]
                sig = sigs.get(it.signal_id)
                o = Order(
                    kind=kind, origin=it.ts_origin, call=s.observed_at_ns,
                    signal=sig.ts_init if sig else 0, intent=it.ts_init,
                    row=created.get(it.msg_id, 0),
                )  # fmt: skip
                if sig is not None:
                    o.ticks_advanced = walked.get(streamids.parse(sig.tick_id), -1)
                    o.chain_at = chain_at.get(sig.msg_id, 0)
                    inflight = [end for start, end in busy if start <= sig.ts_init < end]
                    o.busy_until = max(inflight, default=0)
                res.orders.append(o)
        # the previous order's end: the executor takes intents one at a time, in stream order
        ends = sorted(done.values())
        for o in res.orders:
            j = bisect.bisect_left(ends, o.row or o.call) - 1
            o.prev_done = ends[j] if j >= 0 else 0

        # -- the services' own histograms over the window (queue = wait before a batch is read,
        # batch = handling a batch; counts per entry and per batch)
        res.buckets_ms = poller.buckets_ms
        res.stage_hist = window_histograms(poller.histograms, lo / 1e9, hi / 1e9)

        # -- CPU during the window
        lo_s, hi_s = lo / 1e9, hi / 1e9
        for name, st in poller.sampler.stats.items():
            res.cpu_s[name] = delta([(t, c) for t, _, c in st.timeline], lo_s, hi_s)
        res.sim_cpu_s = delta(poller.sim_cpu, lo_s, hi_s)
        res.redis_cpu_s = delta(poller.redis_cpu, lo_s, hi_s)
        busy = delta([(t, b) for t, b, _ in poller.machine], lo_s, hi_s)
        total = delta([(t, tot) for t, _, tot in poller.machine], lo_s, hi_s)
        res.machine_busy = busy / total if total > 0 else float("nan")
    finally:
        if poller is not None:
            poller.stop()
            poller.r.close()
        r.close()
        if keep_dir is not None:
            keep_dir.mkdir(parents=True, exist_ok=True)
            for log in run_dir.glob("*.log"):
                shutil.copy(log, keep_dir / log.name)
        drop_namespace(env0.redis_url, ns)
        drop_schema(env0.database_url, ns)
        shutil.rmtree(run_dir, ignore_errors=True)
    return res


# --------------------------------------------------------------------------- main


def _commit() -> str:
    """``git describe`` of the code measured (``-dirty`` with uncommitted changes), or ""."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
            timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"commit {out.stdout.strip()}" if out.returncode == 0 and out.stdout.strip() else ""


def measure(
    runs: int,
    rate: float,
    *,
    chain: bool = True,
    chain_messages: int = 3000,
    chain_rate: float = 500.0,
    window: tuple[str, str] | None = WINDOW,
    reference_rate: float = 0.0,
    reference_window: tuple[str, str] | None = REFERENCE_WINDOW,
    keep_logs: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Floor and run, alternating: ``runs`` at ``rate`` over the IST ``window`` of the day (None:
    all of it), then, when ``reference_rate``, one run at that rate over ``reference_window``.
    Returns ``{"runs", "chains", "reference", "reference_chains", "started", "machine"}``."""
    from datetime import UTC, datetime

    import chain4
    from common import machine

    env = env_config()
    payload = chain4.tick_payload()
    out: dict[str, Any] = {"runs": [], "chains": [], "reference": [], "reference_chains": []}
    out["started"] = datetime.now(UTC)
    out["machine"] = machine(env.redis_url, env.database_url)
    out["commit"] = _commit()
    plan = [("runs", "chains", rate, window)] * runs
    if reference_rate > 0:
        plan.append(("reference", "reference_chains", reference_rate, reference_window))
    for i, (kind, chains, r_rate, window) in enumerate(plan):
        if chain:
            c = chain4.run_chain(env.redis_url, throwaway(), chain_messages, chain_rate, payload)
            out[chains].append(c)
            log(f"floor {i + 1}/{len(plan)}: p50 {c['p50_us']:,.0f} us, p99 {c['p99_us']:,.0f} us")
        keep = Path(keep_logs) / f"run{i + 1}" if keep_logs else None
        run = run_once(r_rate, window=window, keep_dir=keep)
        out[kind].append(run)
        e, x = (
            summarize(run.values("tick_to_order_entry")),
            summarize(run.values("tick_to_order_exit")),
        )
        bf = summarize(run.before_feed_ms)
        log(
            f"run {i + 1}/{len(plan)} at {r_rate:g}/s: {run.ticks_in_window:,} ticks in {run.window_s:.0f} s "
            f"(median {statistics.median(run.per_second) if run.per_second else float('nan'):,.0f}/s), "
            f"before the feed p50 {bf.p50:,.1f} ms; entry n {e.n} p50 {e.p50:.1f} p99 {e.p99:.1f} ms; "
            f"exit n {x.n} p50 {x.p50:.1f} p99 {x.p99:.1f} ms; unjoined {run.unjoined}, lost "
            f"{run.lost_samples}, feed reconnects {run.feed_reconnects}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    import shlex

    import t2o_report

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--rate", type=float, default=2000.0, help="subscribed ticks per second")
    p.add_argument("--quick", action="store_true", help="one run, no reference run")
    p.add_argument("--window", default="-".join(WINDOW), metavar="HH:MM-HH:MM", help="of the day")
    p.add_argument("--no-chain", action="store_true", help="skip the relay-chain floor")
    p.add_argument(
        "--reference-rate", type=float, default=0.0,
        help="also one run at this rate (e.g. 500, below saturation)",
    )  # fmt: skip
    p.add_argument("--reference-window", default="-".join(REFERENCE_WINDOW), metavar="HH:MM-HH:MM")
    p.add_argument("--keep-logs", metavar="DIR", help="copy each run's logs to DIR/run<i>")
    p.add_argument("--save-raw", metavar="PATH", help="pickle the measurements to PATH")
    p.add_argument("--render", metavar="PATH", help="measure nothing: use --save-raw's PATH")
    p.add_argument("--update", metavar="MD", help="replace the tick-to-order section of MD")
    a = p.parse_args(argv)
    args = list(sys.argv[1:] if argv is None else argv)
    keep = {"--save-raw", "--render", "--keep-logs"}
    shown = [x for i, x in enumerate(args) if x not in keep and (i == 0 or args[i - 1] not in keep)]
    command = " ".join([".venv/bin/python bench/bench_tick_to_order.py", *map(shlex.quote, shown)])
    if a.render:
        import pickle

        with open(a.render, "rb") as f:
            res = pickle.load(f)
        command = res.get("command", command)
    else:
        w0, _, w1 = a.window.partition("-")
        r0, _, r1 = a.reference_window.partition("-")
        res = measure(
            1 if a.quick else a.runs, a.rate, chain=not a.no_chain, window=(w0, w1),
            reference_rate=0.0 if a.quick else a.reference_rate, reference_window=(r0, r1),
            keep_logs=a.keep_logs,
            log=lambda m: print(f"[t2o {time.strftime('%H:%M:%S')}] {m}", file=sys.stderr, flush=True),
        )  # fmt: skip
        res["command"] = command
        if a.save_raw:
            import pickle

            with open(a.save_raw, "wb") as f:
                pickle.dump(res, f)
    lines = t2o_report.section(
        res["runs"], res["chains"], command, res["reference"], res["reference_chains"],
        started=res.get("started"), machine=res.get("machine"), commit=res.get("commit", ""),
    )  # fmt: skip
    row = t2o_report.summary_row(res["runs"], res["chains"])
    if a.update:
        md = Path(a.update)
        md.write_text(t2o_report.replace_section(md.read_text(), lines, row))
        print(f"updated {md}", file=sys.stderr)
    else:
        print(row)
        print()
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
