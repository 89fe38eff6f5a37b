"""The tick-to-order section of ``BENCHMARKS.md`` (and its summary row), from the runs of
``bench/bench_tick_to_order.py`` and the relay-chain floor measured beside each of them.

Targets (issue 10, item 2): tick-to-order p50 within 2x and p99 within 3x of the four-process
relay chain's, run by run (each run is paired with the floor measured right before it).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from latency import Summary, summarize

TARGET_P50_X = 2.0
TARGET_P99_X = 3.0
SECTION_TITLE = "## Tick-to-order latency (live mode, DhanHQ simulator)"
SUMMARY_PREFIX = "| tick-to-order latency"


def _med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _ms(x: float) -> str:
    if x != x:  # NaN
        return "–"
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def _ok(flag: bool) -> str:
    return "**met**" if flag else "**missed**"


def kind_summary(runs: Sequence[Any], kind: str) -> list[Summary]:
    return [summarize(r.values(f"tick_to_order_{kind}")) for r in runs]


def pooled(runs: Sequence[Any], stage: str) -> Summary:
    return summarize(v for r in runs for v in r.values(stage))


def ratios(
    runs: Sequence[Any], chains: Sequence[dict[str, float]], kind: str
) -> tuple[float, float]:
    """Median over the runs of (run p50 / its floor's p50) and (run p99 / its floor's p99)."""
    p50, p99 = [], []
    for r, c in zip(runs, chains, strict=False):
        s = summarize(r.values(f"tick_to_order_{kind}"))
        if s.n:
            p50.append(s.p50 * 1000 / c["p50_us"])
            p99.append(s.p99 * 1000 / c["p99_us"])
    return _med(p50), _med(p99)


def summary_row(runs: Sequence[Any], chains: Sequence[dict[str, float]]) -> str:
    """The summary table's row (6 cells, as the other rows of ``BENCHMARKS.md``)."""
    if not runs:
        return (
            f"{SUMMARY_PREFIX}, live mode against the DhanHQ simulator | **not measured** | | | | |"
        )
    e, x = kind_summary(runs, "entry"), kind_summary(runs, "exit")
    fl50 = _med([c["p50_us"] for c in chains]) / 1000 if chains else float("nan")
    fl99 = _med([c["p99_us"] for c in chains]) / 1000 if chains else float("nan")
    re50, re99 = ratios(runs, chains, "entry")
    rx50, rx99 = ratios(runs, chains, "exit")
    met = all(v <= TARGET_P50_X for v in (re50, rx50)) and all(
        v <= TARGET_P99_X for v in (re99, rx99)
    )
    rate = runs[0].rate_per_s
    return (
        f"{SUMMARY_PREFIX}, live mode against the DhanHQ simulator, {rate:,.0f} ticks/s offered "
        f"| entry p50 {_ms(_med([s.p50 for s in e]))} ms, p99 {_ms(_med([s.p99 for s in e]))} ms; "
        f"exit p50 {_ms(_med([s.p50 for s in x]))} ms, p99 {_ms(_med([s.p99 for s in x]))} ms "
        f"({len(runs)} run{'' if len(runs) == 1 else 's'}) | relay chain above: p50 {fl50:.2f} ms, p99 {fl99:.2f} ms "
        f"| entry {re50:,.0f}× / {re99:,.0f}×, exit {rx50:,.0f}× / {rx99:,.0f}× (p50 / p99, per-pair "
        f"medians) | p50 ≤ {TARGET_P50_X:.0f}×, p99 ≤ {TARGET_P99_X:.0f}× the floor | {_ok(met)} |"
    )


def _stage_table(
    orders: Sequence[Any], stages: list[tuple[str, Callable[[Any], float]]]
) -> list[str]:
    rows = []
    total = [o.total_ms for o in orders]
    mean_total = statistics.mean(total) if total else float("nan")
    for name, fn in stages:
        vals = [v for v in (fn(o) for o in orders) if v == v]
        if not vals:
            continue
        s = summarize(vals)
        share = statistics.mean(vals) / mean_total if vals and mean_total else float("nan")
        rows.append(f"| {name} | {_ms(s.p50)} | {_ms(s.p99)} | {_ms(s.max)} | {share:.0%} |")
    s = summarize(total)
    rows.append(
        f"| **tick-to-order** | **{_ms(s.p50)}** | **{_ms(s.p99)}** | {_ms(s.max)} | 100 % |"
    )
    return rows


def _ns_ms(a: int, b: int) -> float:
    return (a - b) / 1e6 if a and b else float("nan")


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares slope and intercept of ys on xs (NaN when degenerate)."""
    if len(xs) < 3 or len(set(xs)) < 2:
        return float("nan"), float("nan")
    mx, my = statistics.mean(xs), statistics.mean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return slope, my - slope * mx


def _run_cells(
    r: Any, c: dict[str, float] | None
) -> tuple[Summary, Summary, Summary, str, str, str]:
    """One run's entry, exit and before-the-feed summaries, and its floor and ×-floor cells."""
    e = summarize(r.values("tick_to_order_entry"))
    x = summarize(r.values("tick_to_order_exit"))
    bf = summarize(r.before_feed_ms)
    fl = f"{c['p50_us'] / 1000:.2f} / {c['p99_us'] / 1000:.2f}" if c else "–"
    re = f"{e.p50 * 1000 / c['p50_us']:,.0f}×, {e.p99 * 1000 / c['p99_us']:,.0f}×" if c and e.n else "–"
    rx = f"{x.p50 * 1000 / c['p50_us']:,.0f}×, {x.p99 * 1000 / c['p99_us']:,.0f}×" if c and x.n else "–"
    return e, x, bf, fl, re, rx


def section(
    runs: Sequence[Any],
    chains: Sequence[dict[str, float]],
    command: str,
    reference: Sequence[Any] = (),
    reference_chains: Sequence[dict[str, float]] = (),
    started: Any = None,
    machine: dict[str, str] | None = None,
    commit: str = "",
) -> list[str]:
    """The markdown lines of the section (title included); ``started`` and ``machine`` when the
    section is measured apart from the rest of the report."""
    L: list[str] = [SECTION_TITLE, ""]
    a = L.append
    if not runs:
        a("Not measured in this run.")
        return L
    rate = runs[0].rate_per_s
    a(
        f"`{command}`: `dhansim` paces a dense synthetic session (the sample day regenerated by "
        "`scalper synth` with five times the option tick rate, same seed, so the warm-up file still "
        f"matches) at a steady **{rate:,.0f} subscribed ticks per second** (`--speed {rate:g}/s`, "
        "`dhansim/clock.py`) into the six services and the recorder under supervisord in **live** "
        "mode, orders enabled, in a throw-away namespace and schema, with a configuration that makes "
        "signals fire (Supertrend multiplier 0.1, no cooldown, no cap on trades a day, 3 % stop and "
        "target; `BENCH_CONFIG` in `bench/bench_tick_to_order.py`). Each run is paired with the "
        "relay-chain floor measured right before it. Samples count from 5 s after the first option "
        "tick reached the feed to the last tick."
    )
    a("")
    if started is not None and machine:
        a(
            f"Measured {started:%Y-%m-%d %H:%M} UTC{f' at {commit}' if commit else ''}, apart from "
            f"the rest of this report, on the same shared machine: {machine.get('cpu', '?')}, "
            f"{machine.get('cores', '?')}, {machine.get('libraries', '')}; load average at start "
            f"{machine.get('load average at start', '?')}."
        )
        a("")
    a(
        "What is measured, per order, on one wall clock: **tick-to-order** = the executor's broker "
        "call (`tick_to_order_<kind>`, observed right before `POST /orders`) − the originating "
        "tick's `ts_origin`, which is the `Tick.ts_init` the feed stamped when it built the tick "
        "from the WebSocket frame it had just read (`recv_ns` plus one decode, a few µs; kept in "
        "live mode whatever `SCALPER_EVENT_TIME` makes of `ts_event`). Every order's exact value "
        "comes from the raw samples the executor now keeps beside its histogram (`recent` in its "
        "metrics key, `shared/ops/metrics.py`). An entry order starts at the index tick that closed "
        "the signal's candle, an exit order at the option tick that crossed the stop or target. "
        "*Before the feed* is what the tick-to-order does not include: each received tick's "
        "`ts_init` minus the time the simulator's pace scheduled its release."
    )
    a("")
    a(
        "| run | received at the feed, ticks/s: median (min–max per s) | before the feed p50 / p99 "
        "| signals | entry orders: n, p50 / p99 / max ms | exit orders: n, p50 / p99 / max ms "
        "| floor p50 / p99 ms | entry p50, p99 × floor | exit p50, p99 × floor | machine busy "
        "| feed reconnects |"
    )
    a("|---|---|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(runs):
        c = chains[i] if i < len(chains) else None
        e, x, bf, fl, re, rx = _run_cells(r, c)
        ps = r.per_second
        a(
            f"| {i + 1} | {_med(ps):,.0f} ({min(ps, default=0):,}–{max(ps, default=0):,}) "
            f"| {_ms(bf.p50)} / {_ms(bf.p99)} ms | {r.signals} "
            f"| {e.n}: {_ms(e.p50)} / {_ms(e.p99)} / {_ms(e.max)} "
            f"| {x.n}: {_ms(x.p50)} / {_ms(x.p99)} / {_ms(x.max)} | {fl} | {re} | {rx} "
            f"| {r.machine_busy:.0%} | {r.feed_reconnects} |"
        )
    e_all, x_all = pooled(runs, "tick_to_order_entry"), pooled(runs, "tick_to_order_exit")
    xi_all = pooled(runs, "tick_to_exit_intent")
    re50, re99 = ratios(runs, chains, "entry")
    rx50, rx99 = ratios(runs, chains, "exit")
    a("")
    a(
        "All runs' orders pooled (nearest-rank percentiles; p99.9 is the largest value until n reaches 1,000):"
    )
    a("")
    a("| path | n | p50 ms | p99 ms | p99.9 ms | max ms |")
    a("|---|---|---|---|---|---|")
    for name, s in (
        ("tick-to-order, entries (index tick → entry `POST /orders`)", e_all),
        ("tick-to-exit-order (option tick → exit `POST /orders`)", x_all),
        ("tick-to-exit-intent (option tick → exits built the intent)", xi_all),
    ):
        p999 = f"{_ms(s.p999)}{' (= max)' if s.p999_is_max else ''}"
        a(f"| {name} | {s.n} | {_ms(s.p50)} | {_ms(s.p99)} | {p999} | {_ms(s.max)} |")
    a("")
    met50 = re50 <= TARGET_P50_X and rx50 <= TARGET_P50_X
    met99 = re99 <= TARGET_P99_X and rx99 <= TARGET_P99_X
    a(
        f"Targets, per-pair medians: p50 ≤ {TARGET_P50_X:.0f}× the floor — entries {re50:,.1f}×, exits "
        f"{rx50:,.1f}×: {_ok(met50)}; p99 ≤ {TARGET_P99_X:.0f}× — entries {re99:,.1f}×, exits {rx99:,.1f}×: "
        f"{_ok(met99)}."
    )
    a("")
    L.extend(_where_the_time_goes(runs))
    L.extend(_reading(runs, chains))
    if reference:
        L.extend(_reference(reference, reference_chains))
    return L


def _where_the_time_goes(runs: Sequence[Any]) -> list[str]:
    L: list[str] = []
    a = L.append
    orders = [o for r in runs for o in r.orders]
    entries = [o for o in orders if o.kind == "entry"]
    exits = [o for o in orders if o.kind == "exit"]
    a("### Where the tick-to-order time goes")
    a("")
    a(
        "Each order's way split at the stamps the messages carry (`Signal.ts_init`, "
        "`OrderIntent.ts_init`, the order row's `created_at` in Postgres, the broker call), all "
        "runs pooled; *share* = the stage's mean / the total's mean (means add up, medians do not)."
    )
    a("")
    execu = [
        ("intent → order row: executor reads the intent, waits for the order before it, checks "
         "state in Postgres", lambda o: _ns_ms(o.row, o.intent)),
        ("… of which: queued behind the previous order (the executor follows each order to its "
         "fill before it reads the next intent)", lambda o: max(0.0, _ns_ms(o.prev_done, o.intent))
         if o.prev_done else float("nan")),
        ("order row → broker call: Postgres writes first (order row, then `submitting`)",
         lambda o: _ns_ms(o.call, o.row)),
    ]  # fmt: skip
    if entries:
        a(f"Entry orders ({len(entries)}):")
        a("")
        a("| stage | p50 ms | p99 ms | max ms | share |")
        a("|---|---|---|---|---|")
        L.extend(_stage_table(entries, [
            ("tick → Signal built: feed writes the tick, signals reads it and closes the candle",
             lambda o: _ns_ms(o.signal, o.origin)),
            ("Signal → intent built: entries, all of it", lambda o: _ns_ms(o.intent, o.signal)),
            ("… Signal → broker option chain merged: upstream gates, ticks not read ahead yet, "
             "the chain over REST (log stamp, 1 ms resolution)", lambda o: _ns_ms(o.chain_at, o.signal)),
            ("… chain merged → intent: funds (and LTP) over REST, Postgres reads, the decision",
             lambda o: _ns_ms(o.intent, o.chain_at)),
            *execu,
        ]))  # fmt: skip
        a("")
    if exits:
        a(f"Exit orders ({len(exits)}):")
        a("")
        a("| stage | p50 ms | p99 ms | max ms | share |")
        a("|---|---|---|---|---|")
        L.extend(_stage_table(exits, [
            ("tick → exit intent built: feed writes the tick, exits reads it and decides",
             lambda o: _ns_ms(o.intent, o.origin)),
            *execu,
        ]))  # fmt: skip
        a("")
    # entries: was the executor busy when the signal came?
    if entries:
        busy = [max(0.0, _ns_ms(o.busy_until, o.signal)) for o in entries if o.busy_until]
        a(
            f"For {len(busy)} of {len(entries)} entry orders the executor was still following an "
            "earlier order when the signal was built (entries then waits in `_wait_upstream` until "
            "the executor holds no intent: in live mode it publishes no `executor:state`)"
            + (f", a median {_ms(_med(busy))} ms until that order's end." if busy else ".")
        )
        a("")
    # capacity: CPU per tick and batch sizes
    a(
        "Capacity — CPU per received tick of each program during the window, and how many "
        "entries each consumer got per read (median over runs):"
    )
    a("")
    progs = ["feed", "signals", "exits", "recorder", "entries", "executor"]
    a("| | " + " | ".join(progs) + " | dhansim | Redis |")
    a("|---|" + "---|" * (len(progs) + 2))
    cpu = []
    for p in progs:
        cpu.append(
            _med([r.cpu_s.get(p, float("nan")) / max(r.ticks_in_window, 1) * 1e6 for r in runs])
        )
    sim = _med([r.sim_cpu_s / max(r.ticks_in_window, 1) * 1e6 for r in runs])
    red = _med([r.redis_cpu_s / max(r.ticks_in_window, 1) * 1e6 for r in runs])
    a(
        "| CPU µs per tick | "
        + " | ".join(f"{v:,.0f}" for v in cpu)
        + f" | {sim:,.0f} | {red:,.0f} |"
    )
    per_batch = []
    for p in progs:
        if (
            p == "feed"
        ):  # its input is the WebSocket, one frame at a time; its group reads feed.control
            per_batch.append("1 frame")
            continue
        vals = []
        for r in runs:
            st = r.stage_hist.get(p, {})
            q, b = st.get("queue"), st.get("batch")
            if q and b and b[0]:
                vals.append(q[0] / b[0])
        per_batch.append(f"{_med(vals):,.1f}" if vals else "–")
    a("| entries per read | " + " | ".join(per_batch) + " | | |")
    total_us = (
        sum(v for v in cpu if v == v) + (sim if sim == sim else 0) + (red if red == red else 0)
    )
    a("")
    import os

    cores = os.cpu_count() or 1
    capacity = cores * 1e6 / total_us
    fits = capacity >= runs[0].rate_per_s
    a(
        f"Together {total_us:,.0f} µs of CPU per tick: about {capacity:,.0f} ticks/s on the "
        f"{cores} cores of this machine if nothing else ran. The offered "
        f"{runs[0].rate_per_s:,.0f} ticks/s "
        + (
            "fits."
            if fits
            else "does not fit, so ticks wait before the feed reads them (the *before the feed* "
            "column): in the simulator's queue and the two sockets' kernel buffers, until the "
            "feed's keepalive ping (20 s) times out and it reconnects."
        )
    )
    a("")
    return L


def _reference(reference: Sequence[Any], chains: Sequence[dict[str, float]]) -> list[str]:
    L: list[str] = []
    a = L.append
    r0 = reference[0]
    a(f"### The same at {r0.rate_per_s:,.0f} ticks/s offered")
    a("")
    a(
        "One more pair at a rate this machine keeps up with, over the first minutes of the same "
        "day: the same stages without a backlog in front of the feed."
    )
    a("")
    a(
        "| run | received ticks/s median | before the feed p50 / p99 ms | entry n, p50 / p99 ms | exit n, p50 / p99 ms | floor p50 / p99 ms | entry p50, p99 × floor | exit p50, p99 × floor |"
    )
    a("|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(reference):
        c = chains[i] if i < len(chains) else None
        e, x, bf, fl, re, rx = _run_cells(r, c)
        a(
            f"| {i + 1} | {_med(r.per_second):,.0f} | {_ms(bf.p50)} / {_ms(bf.p99)} "
            f"| {e.n}: {_ms(e.p50)} / {_ms(e.p99)} | {x.n}: {_ms(x.p50)} / {_ms(x.p99)} | {fl} | {re} | {rx} |"
        )
    a("")
    L.extend(_where_the_time_goes(reference)[2:])
    return L


def replace_section(text: str, new_section: list[str], new_summary_row: str) -> str:
    """``BENCHMARKS.md`` with its tick-to-order section and summary row replaced (the section
    added before ``## Other benchmark scripts`` if it has none)."""
    lines = text.split("\n")
    out = [new_summary_row if ln.startswith(SUMMARY_PREFIX) else ln for ln in lines]
    start = next((i for i, ln in enumerate(out) if ln.startswith("## Tick-to-order latency")), None)
    if start is None:
        start = next(
            (i for i, ln in enumerate(out) if ln.startswith("## Other benchmark")), len(out)
        )
        end = start
    else:
        end = next((i for i in range(start + 1, len(out)) if out[i].startswith("## ")), len(out))
    return "\n".join([*out[:start], *new_section, "", *out[end:]])


def _cpu_us(r: Any, prog: str) -> float:
    v = (
        r.sim_cpu_s
        if prog == "dhansim"
        else r.redis_cpu_s
        if prog == "Redis"
        else r.cpu_s.get(prog)
    )
    return (v or float("nan")) / max(r.ticks_in_window, 1) * 1e6


def _per_read(runs: Sequence[Any], prog: str) -> float:
    vals = []
    for r in runs:
        st = r.stage_hist.get(prog, {})
        q, b = st.get("queue"), st.get("batch")
        if q and b and b[0]:
            vals.append(q[0] / b[0])
    return _med(vals)


def _reading(runs: Sequence[Any], chains: Sequence[dict[str, float]]) -> list[str]:
    """What the numbers say, in words; every figure from these runs."""
    import os

    L: list[str] = []
    a = L.append
    rate = runs[0].rate_per_s
    progs = ("feed", "signals", "exits", "recorder", "entries", "executor", "dhansim", "Redis")
    cpu = {p: _med([_cpu_us(r, p) for r in runs]) for p in progs}
    total = sum(v for v in cpu.values() if v == v)
    cores = os.cpu_count() or 1
    recv = _med([_med(r.per_second) for r in runs])
    bf = _med([summarize(r.before_feed_ms).p50 for r in runs])
    reconnects = sum(r.feed_reconnects for r in runs)
    orders = [o for r in runs for o in r.orders]
    entries = [o for o in orders if o.kind == "entry"]
    exits = [o for o in orders if o.kind == "exit"]
    floor50 = _med([c["p50_us"] for c in chains]) / 1000 if chains else float("nan")
    a("### Reading")
    a("")
    top = sorted((p for p in progs if cpu[p] == cpu[p]), key=lambda p: -cpu[p])[:4]
    fits = recv >= 0.95 * rate
    if fits:
        a(
            f"**Capacity first.** At {rate:,.0f} ticks/s offered the feed took in a median "
            f"{recv:,.0f} ticks/s: the rate is carried. In live mode the pipeline spends {total:,.0f} "
            "µs of CPU per tick (heaviest: "
            + ", ".join(f"{p} {cpu[p]:,.0f}" for p in top)
            + f"), so {cores} cores would carry about {cores * 1e6 / total:,.0f} ticks/s if nothing "
            f"else ran. Ticks waited a median {_ms(bf)} ms before the feed read them (the *before "
            "the feed* column: the simulator's pacing, the socket, the feed's turn on its event "
            f"loop), and the feed reconnected {reconnects} times in {len(runs)} runs."
        )
    else:
        a(
            f"**Capacity first.** At {rate:,.0f} ticks/s offered the feed took in a median {recv:,.0f} "
            f"ticks/s. In live mode the pipeline spends {total:,.0f} µs of CPU per tick (heaviest: "
            + ", ".join(f"{p} {cpu[p]:,.0f}" for p in top)
            + f"), so {cores} cores carry about {cores * 1e6 / total:,.0f} ticks/s at most, and less "
            f"while other tenants run. Ticks waited before the feed read them — a median {_ms(bf)} "
            f"ms — and the feed dropped its socket {reconnects} times in {len(runs)} runs on its "
            "keepalive (a ping unanswered for 20 s: the pong travels behind the frames not yet read), "
            "losing what the simulator had queued. So at this rate the latency a trader sees is the "
            "backlog, not the pipeline; the tick-to-order figures above start after it, as defined."
        )
    a("")
    a(
        "How a tick is carried: the feed writes behind its receive loop (`services/feed/live.py` "
        "`WriteBehind`) — an idle feed writes a frame at once, and frames that arrive while a write "
        "is in flight go together in the next pipeline — and every consumer sends a batch's "
        "commit (outputs, acks, checkpoint, frontier: one Lua script) in the same round trip as "
        "its next read (`shared/bus.py` `Consumer.read(after=…)`). So a consumer pays one round trip "
        f"per read, and reads grow with the load: {_per_read(runs, 'signals'):.1f} entries per read "
        f"for signals, {_per_read(runs, 'exits'):.1f} for exits, {_per_read(runs, 'recorder'):.1f} "
        "for the recorder in these runs (before both changes, at ~900 ticks/s carried of 2,000 "
        "offered: 2.5, 4.8 and 1.7, and 2,171 µs of CPU per tick). Exits also reads "
        "`positions`/`orders.events`, its frontier and the PnL hashes of every open position per "
        "batch. The simulator sends one frame per packet (DhanHQ's main feed is not known to "
        "stack packets)."
    )
    a("")
    if entries:
        sig = _med([_ns_ms(o.intent, o.signal) for o in entries])
        share = statistics.mean([_ns_ms(o.intent, o.signal) for o in entries]) / statistics.mean(
            [o.total_ms for o in entries]
        )
        walked = [
            (float(o.ticks_advanced), _ns_ms(o.intent, o.signal))
            for o in entries
            if o.ticks_advanced >= 0
        ]
        slope, icpt = _fit([w for w, _ in walked], [t for _, t in walked])
        n_walk = _med([w for w, _ in walked])
        retries = sum(r.entries_retries for r in runs)
        chain = [_ns_ms(o.chain_at, o.signal) for o in entries if o.chain_at]
        after = [_ns_ms(o.intent, o.chain_at) for o in entries if o.chain_at]
        a(
            f"**Entry orders: entries' own stage is {share:.0%} of the time** (median {_ms(sig)} "
            "ms from the Signal to the intent). In it, in order: waiting until exits has passed "
            "the signal's tick and the executor holds no intent (`_wait_upstream`, a poll whose "
            "back-off doubles to 50 ms); the ticks not read ahead yet (`_advance_ticks`; entries "
            f"reads ahead while idle, and a fit of the stage on the stream entries between two "
            f"signals — median {n_walk:,.0f} — gives {slope * 1000:,.0f} µs an entry, "
            f"{slope * n_walk:,.0f} ms at the median"
            + (": the walk hardly matters any more" if abs(slope * n_walk) < 0.1 * sig else "")
            + "); in live mode the broker's option chain over REST, fetched for "
            f"{len(chain)} of these {len(entries)} signals"
            + (f" (Signal → chain merged: median {_ms(_med(chain))} ms)" if chain else "")
            + "; then the funds (the balance fetched between signals, unless an entry order went out "
            "within `entries.funds_max_age_s`: then over REST) and, for a pick with a stale tick, "
            "LTP over REST (DhanHQ allows "
            f"one data request a second and the simulator enforces it; entries retried {retries} "
            "REST calls in these runs), the Postgres reads of its context and the decision"
            + (f" (chain merged → intent: median {_ms(_med(after))} ms)." if after else ".")
        )
        a("")
        slow = []  # (rank among its run's entry orders, seconds after the run's first one, ms)
        for r in runs:
            es = sorted((o for o in r.orders if o.kind == "entry"), key=lambda o: o.origin)
            slow += [(k, (o.origin - es[0].origin) / 1e9, o.total_ms)
                     for k, o in enumerate(es) if o.total_ms > 1000]
        if slow:
            rest = [o.total_ms for o in entries if o.total_ms <= 1000]
            a(
                f"**The entry p99 is a start-up queue.** {len(slow)} of {len(entries)} entry orders "
                f"took over 1 s, all among the first {max(k for k, _, _ in slow) + 1} entry orders "
                f"of their run (within {max(t for _, t, _ in slow):,.0f} s of its first). In the runs "
                "whose logs were kept (`--keep-logs`), the first signals' picks had no option tick "
                "as of the signal (decisions say `REST LTP (no tick)`): the option window's ticks "
                "were not in the stream yet, so each signal fetched LTP over REST, and DhanHQ allows "
                "one quote request a second — about a second a signal, while the signals queued "
                f"behind one another. Without those {len(slow)}: entry p99 "
                f"{_ms(summarize(rest).p99)} ms over {len(rest)} orders."
            )
            a("")
    execu = entries + exits
    if execu:
        pick = _med([_ns_ms(o.row, o.intent) for o in execu])
        write = _med([_ns_ms(o.call, o.row) for o in execu])
        xi = _med([_ns_ms(o.intent, o.origin) for o in exits]) if exits else float("nan")
        a(
            f"**Exit orders**: exits builds the intent a median {_ms(xi)} ms after the tick. **The "
            f"executor**, for entries and exits alike, then needs {_ms(pick)} ms to read the intent "
            f"and check the trading state, the tracker and the order in Postgres, and {_ms(write)} "
            "ms of Postgres writes before the "
            "call: the order row in one transaction, then `submitting` with the payload in a second "
            f"commit. Those writes alone are {write / floor50:,.0f}× the relay chain's p50 "
            f"({floor50:.2f} ms), against a target of 2× for the whole path."
        )
        a("")
    chain = [_ns_ms(o.chain_at, o.signal) for o in entries if o.chain_at]
    a(
        "What would close the gap, largest first: (1) **no broker round trip between a signal "
        "and its order**: the option chain "
        + (f"(median {_ms(_med(chain))} ms from the Signal to its merge) " if chain else "")
        + "is fetched on demand because DhanHQ allows one chain call per 3 s for the whole "
        "account: a background refresh of four indices would keep each snapshot 12 s old, past "
        "`option_chain.broker_chain_max_age_s` (10 s), and spend the quota whether or not a signal "
        "comes; `option_chain.broker_chain: false` takes the call off the path, at the price of "
        "Black-Scholes values instead of the broker's OI/IV/delta; (2) **one commit before the "
        "call**: create the order row already `submitting`, with its payload, in the transaction "
        "that writes it (today two commits, the row and then `submitting`, keep the crash "
        "recovery of sliced orders simple); (3) signals reading an index-only stream, and exits "
        "only the ticks of instruments it holds. The target (p50 within 2× of four plain Redis "
        "hops) leaves no room for a Postgres commit or a REST call on the path, so it asks for (1) "
        "and (2) whatever the load."
    )
    a("")
    return L
