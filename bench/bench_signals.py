"""Cost of the signals core per tick and per closed candle, on one core.

Usage: ``.venv/bin/python bench/bench_signals.py [--quick] [--seed N]``. A seeded synthetic
session (4 indices ticking about once a second, option ticks the core must skip, a Clock every
second) is pushed through ``SignalsCore`` for several configurations. Each figure is the median
over several runs, measured with ``time.perf_counter_ns`` around each call minus the timer's own
cost:

- ``index tick``: an index tick that closes no candle (the hot path);
- ``other tick``: a tick of another instrument (ignored);
- ``clock``: a Clock that closes nothing;
- ``per candle``: a Clock at a minute boundary, divided by the candles it closed (indicator
  updates and the decision, including building the Signal/SignalSkipped messages).
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.signals.core import SignalsCore  # noqa: E402
from shared.clock import NS_PER_MIN, NS_PER_S, ist_to_ns  # noqa: E402
from shared.config import IndexConfig, SignalsConfig  # noqa: E402
from shared.messages import Clock, Tick  # noqa: E402

INDICES = [
    IndexConfig(key=k, security_id=sid, options_segment=seg, exchange=ex)  # type: ignore[arg-type]
    for k, sid, seg, ex in (
        ("NIFTY", 13, "NSE_FNO", "NSE"),
        ("BANKNIFTY", 25, "NSE_FNO", "NSE"),
        ("FINNIFTY", 27, "NSE_FNO", "NSE"),
        ("SENSEX", 51, "BSE_FNO", "BSE"),
    )
]
SCENARIOS: dict[str, dict[str, object]] = {
    "classic supertrend, 1m": {},
    "classic + adx/ema + 5m confirm + balanced": {
        "enable_confirmation": True,
        "adx": {"enabled": True},
        "ema": {"enabled": True},
        "validation_mode": "balanced",
    },
    "adaptive supertrend, 1m": {"supertrend": {"adaptive": True}},
}


def session(seed: int, minutes: int, options_per_s: int) -> list[Tick | Clock]:
    """Seeded messages in stream order with feed-style ids."""
    rng = random.Random(seed)
    start = ist_to_ns(date(2025, 1, 6), "09:15")
    end = start + minutes * NS_PER_MIN
    events: list[tuple[int, int, int, str]] = []
    for ix in INDICES:
        price, drift = 2_400_000 + ix.security_id * 10_000, 0
        ts = start + rng.randrange(1000) * 1_000_000
        while ts < end:
            if rng.random() < 0.01:
                drift = rng.choice((-3, 0, 3))
            price += (drift + rng.randint(-12, 12)) * 5
            events.append((ts, ix.security_id, price, "IDX_I"))
            ts += rng.randint(500, 1500) * 1_000_000
    for _ in range(minutes * 60 * options_per_s):
        ts = start + rng.randrange(end - start)
        events.append((ts, rng.randrange(35_000, 90_000), rng.randrange(1, 40_000) * 5, "NSE_FNO"))
    events.extend((t, 0, 0, "CLOCK") for t in range(start + NS_PER_S, end + NS_PER_S, NS_PER_S))
    events.sort(key=lambda e: (e[0], e[3] != "CLOCK"))
    out: list[Tick | Clock] = []
    last_ms, seq = 0, -1
    for ts, sid, price, seg in events:
        ms = ts // 1_000_000
        last_ms, seq = (ms, 0) if ms > last_ms else (last_ms, seq + 1)
        tid = f"{last_ms}-{seq}"
        if seg == "CLOCK":
            out.append(Clock(msg_id=f"clk-{tid}", ts_event=ts, ts_init=0, tick_id=tid))
        else:
            out.append(
                Tick(
                    msg_id=f"tick-{tid}",
                    ts_event=ts,
                    ts_init=0,
                    tick_id=tid,
                    segment=seg,
                    security_id=sid,
                    ltp_paise=price,
                )
            )
    return out


def timer_overhead_ns() -> float:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(5):
        t0 = clock()
        for _ in range(100_000):
            a = clock()
            b = clock()
        samples.append((clock() - t0) / 100_000 / 2)
    del a, b
    return statistics.median(samples)


def one_run(cfg: SignalsConfig, msgs: list[Tick | Clock], overhead: float) -> dict[str, float]:
    core = SignalsCore(cfg, INDICES, time.time_ns)
    clock = time.perf_counter_ns
    sums = {"index tick": 0, "other tick": 0, "clock": 0, "boundary": 0}
    counts = dict.fromkeys(sums, 0)
    index_ids = {ix.security_id for ix in INDICES}
    emitted = 0
    gc.disable()
    try:
        for m in msgs:
            if isinstance(m, Tick):
                t0 = clock()
                out = core.on_tick(m)
                dt = clock() - t0
                kind = (
                    "index tick"
                    if m.security_id in index_ids and m.segment == "IDX_I"
                    else "other tick"
                )
                if out:  # rare without clocks: counted with the boundary calls
                    kind = "boundary"
            else:
                t0 = clock()
                out = core.on_clock(m)
                dt = clock() - t0
                kind = "boundary" if m.ts_event % NS_PER_MIN == 0 else "clock"
            emitted += len(out)
            sums[kind] += dt
            counts[kind] += 1
    finally:
        gc.enable()
    candles = sum(
        v for d in core.counters().values() for k, v in d.items() if k.startswith("candles_")
    )
    res = {k: sums[k] / counts[k] - overhead for k in ("index tick", "other tick", "clock")}
    res["per candle"] = (sums["boundary"] - counts["boundary"] * overhead) / max(candles, 1)
    res["all msgs"] = (sum(sums.values()) - len(msgs) * overhead) / len(msgs)
    res["candles"] = candles
    res["emitted"] = emitted
    return res


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a shorter session and fewer runs")
    parser.add_argument("--seed", type=int, default=20250106)
    args = parser.parse_args(argv)
    minutes, runs, options_per_s = (60, 3, 5) if args.quick else (375, 5, 20)
    msgs = session(args.seed, minutes, options_per_s)
    overhead = timer_overhead_ns()
    print(
        f"seed={args.seed} python={sys.version.split()[0]} minutes={minutes} "
        f"messages={len(msgs):,} indices={len(INDICES)} runs={runs} timer_overhead={overhead:.0f}ns"
    )
    header = f"{'scenario':<44} {'index tick':>11} {'other tick':>11} {'clock':>9} {'per candle':>11} {'all msgs':>9}"
    print(header)
    headline = {}
    for name, raw in SCENARIOS.items():
        cfg = msgspec.convert(raw, SignalsConfig)
        results = [one_run(cfg, msgs, overhead) for _ in range(runs)]
        med = {k: statistics.median(r[k] for r in results) for k in results[0]}
        headline[name] = med
        print(
            f"{name:<44} {med['index tick']:>9,.0f}ns {med['other tick']:>9,.0f}ns "
            f"{med['clock']:>7,.0f}ns {med['per candle'] / 1000:>9,.1f}us {med['all msgs']:>7,.0f}ns"
            f"   ({med['candles']:,.0f} candles, {med['emitted']:,.0f} messages out)"
        )
    base = headline["classic supertrend, 1m"]
    print(
        f"HEADLINE classic: {base['index tick']:,.0f} ns per index tick, "
        f"{base['per candle'] / 1000:,.1f} us per closed candle (median of {runs})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
