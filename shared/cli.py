"""``scalper``: the operator's command line.

    scalper synth ...                       generate a synthetic session (+ instruments CSV)
    scalper db migrate                      apply ledger migrations (safe to run twice)
    scalper instruments import --file PATH  import DhanHQ's scrip master into the ledger
    scalper record [--compact DAY]          record ticks to Parquet (the recorder process)
    scalper sim --session S --instruments I the loopback DhanHQ simulator (python -m dhansim)
    scalper replay FILE... [--speed max|N]  replay sessions (days) through the supervised pipeline
    scalper report [--html P] [--png P]     print the trades and totals of a deployment
    scalper status [--json]                 services, streams, trading state, positions, today
    scalper tail STREAM [--from-start]      pretty-print a stream's entries as they arrive
    scalper api [--host H] [--port N]       read-only HTTP API: health, positions, /metrics
    scalper up                              run the six services under supervisord
    scalper halt | resume                   change the trading state
    scalper flatten                         exit every open position
    scalper sync [--force]                  one reconciliation pass with the broker, printed
    scalper preopen [--json]                pre-open check; on failure HALTED with the reasons
    scalper eod [--day D]                   end of day: the day's report (+ HTML), open positions
    scalper docs config [--check]           regenerate docs/configuration.md from the schema
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from shared.errors import ScalperError

ROOT = Path(__file__).resolve().parent.parent


def _env(ns: str | None = None, schema: str | None = None):
    from shared.config import load_env

    environ = dict(os.environ)
    if ns:
        environ["SCALPER_NAMESPACE"] = ns
    if schema:
        environ["SCALPER_DB_SCHEMA"] = schema
    return load_env(environ)


def _ledger(env):
    from shared.store.db import connect
    from shared.store.ledger import Ledger

    return Ledger(connect(env.database_url, env.db_schema, application_name="scalper-cli"))


def reset_deployment(env, instruments_csv: Path) -> int:
    """Fresh keys and schema for a namespace: drop, migrate, import instruments. Returns rows."""
    import redis

    from shared.instruments import parse_scrip_master
    from shared.keys import Keys
    from shared.store.db import connect
    from shared.store.ledger import Ledger
    from shared.store.migrate import migrate

    if env.db_schema in ("public", "scalper") or env.namespace in ("paper", "live"):
        raise ScalperError(
            f"refusing to reset production namespace/schema ({env.namespace}/{env.db_schema}); "
            "replays use their own (default: replay)"
        )
    r = redis.Redis.from_url(env.redis_url)
    keys = Keys(env.namespace)
    for k in r.scan_iter(match=keys.all_pattern(), count=2000):
        r.delete(k)
    r.close()
    conn = connect(env.database_url, env.db_schema, application_name="scalper-cli")
    conn.execute(f"DROP SCHEMA IF EXISTS {env.db_schema} CASCADE")
    conn.close()
    conn = connect(env.database_url, env.db_schema, application_name="scalper-cli")
    migrate(conn, env.db_schema)
    n = Ledger(conn).upsert_instruments(parse_scrip_master(instruments_csv))
    conn.close()
    return n


def cmd_replay(a: argparse.Namespace) -> int:
    """Replay one or more recorded days back to back through the supervised pipeline.

    Days are ordered by date whatever the order given; every day ends with its SessionEnd. The
    warm-up file (previous day) is only for the first day: day N's previous day is day N-1,
    already replayed. Instruments: ``--instruments`` (repeatable), else ``instruments.csv``
    beside each session. Progress (event time, ticks/s, ETA) goes to stderr, the report to stdout.
    """
    import http.client
    import xmlrpc.client
    from typing import Any

    import orjson
    import redis
    from supervisor.xmlrpc import SupervisorTransport

    from services.feed.core import RateMeter
    from services.feed.replay import (
        event_done_s,
        event_total_s,
        plan_days,
        progress_line,
        read_metadata,
        slowest_frontier_ns,
    )
    from shared import report
    from shared.instruments import parse_scrip_master
    from shared.keys import Keys
    from shared.supervise import drained, start_supervisord, stop_supervisord

    sessions = [Path(s).resolve() for s in a.session]
    for s in sessions:
        if not s.exists():
            raise ScalperError(f"{s}: no such session file")
    if a.speed != "max":
        try:
            speed = float(a.speed)
        except ValueError:
            speed = 0.0
        if not (0 < speed < float("inf")):
            raise ScalperError(f"--speed {a.speed}: use max or a positive multiple of real time")
    try:
        plan = plan_days(sessions, from_hhmm=a.from_hhmm, to_hhmm=a.to_hhmm)
    except ValueError as exc:
        raise ScalperError(str(exc)) from exc
    ordered = [Path(d.path) for d in plan]
    first = ordered[0]
    if a.instruments:
        instruments = [Path(p) for p in a.instruments]
    else:
        instruments = list(dict.fromkeys(s.parent / "instruments.csv" for s in ordered))
    for ins in instruments:
        if not ins.exists():
            raise ScalperError(f"{ins}: no instruments file (pass --instruments)")
    warmup = Path(a.warmup) if a.warmup else first.parent / "previous.parquet"
    if a.warmup and not warmup.exists():
        raise ScalperError(f"{warmup}: no such warm-up file")
    env = _env(a.namespace, a.schema)
    run_dir = Path(a.run_dir or ROOT / "run" / env.namespace)
    synthetic = any(read_metadata(s).get("synthetic") == "true" for s in ordered)
    days = ", ".join(f"{d.trading_day} ({Path(d.path).name}, {d.ticks:,} ticks)" for d in plan)
    print(f"replaying {days}{' (SYNTHETIC)' if synthetic else ''} at speed {a.speed} "
          f"into namespace {env.namespace}, schema {env.db_schema}", file=sys.stderr)
    n = reset_deployment(env, instruments[0])
    if instruments[1:]:
        led = _ledger(env)
        for ins in instruments[1:]:
            n += led.upsert_instruments(parse_scrip_master(ins))
        led.close()
    print(f"imported {n} instruments from {', '.join(i.name for i in instruments)}", file=sys.stderr)
    extra = {
        "SCALPER_MODE": "paper", "SCALPER_REPLAY": "1", "SCALPER_REPLAY_FILE": str(first),
        "SCALPER_REPLAY_FILES": os.pathsep.join(str(p) for p in ordered),
        "SCALPER_REPLAY_SPEED": str(a.speed), "SCALPER_REPLAY_FROM": a.from_hhmm or "",
        "SCALPER_REPLAY_TO": a.to_hhmm or "", "SCALPER_NAMESPACE": env.namespace,
        "SCALPER_DB_SCHEMA": env.db_schema,
        "SCALPER_WARMUP_FILE": str(warmup.resolve()) if warmup.exists() and not a.no_warmup else "",
    }
    keys = Keys(env.namespace)
    sock = f"unix://{run_dir.resolve()}/supervisor.sock"
    pipeline_rate = RateMeter()  # event seconds per wall second of the slowest stage

    def poll(r: redis.Redis, now: float) -> tuple[bool, str, str]:
        """(drained, why not, progress line) from the feed's status and the stages' frontiers."""
        ok, why = drained(r, keys)
        raw = r.get(keys.replay_status())
        stages = [g.decode() if isinstance(g, bytes) else str(g)
                  for g in r.smembers(keys.signals_partitions())] + ["exits"]
        ts_p = slowest_frontier_ns([r.get(keys.frontier(g)) for g in stages])
        eta_p = None
        if ts_p is not None:
            done_s = event_done_s(plan, ts_p)
            pipeline_rate.add(now, round(done_s * 1000))
            per_s = pipeline_rate.rate() / 1000
            eta_p = (event_total_s(plan) - done_s) / per_s if per_s > 0 else None
        status = orjson.loads(raw) if raw else {}
        return ok, why, progress_line(status, pipeline_ts=ts_p, pipeline_eta_s=eta_p)

    def fatal_programs() -> list[str]:
        """Programs supervisord gave up restarting (a replay would otherwise wait until --timeout)."""
        sup = xmlrpc.client.ServerProxy("http://127.0.0.1", SupervisorTransport(None, None, sock))
        try:
            infos: Any = sup.supervisor.getAllProcessInfo()
        except (OSError, http.client.HTTPException, xmlrpc.client.Error):
            return []  # supervisord still starting
        return [p["name"] for p in infos if p["statename"] == "FATAL"]

    t0 = time.monotonic()
    proc = start_supervisord(run_dir, extra)
    r = redis.Redis.from_url(env.redis_url)
    tty = sys.stderr.isatty()
    try:
        # Drained three polls in a row. Redis may restart meanwhile (the services crash and come
        # back under supervisord), so a lost connection is waited out, not fatal.
        stable, shown, checked, why = 0, 0.0, 0.0, "starting"
        while stable < 3:
            now = time.monotonic()
            try:
                ok, why, line = poll(r, now)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                ok, line = False, f"redis unavailable ({exc}); waiting"
            stable = stable + 1 if ok else 0
            if proc.poll() is not None:
                raise ScalperError(f"supervisord exited with code {proc.returncode}; logs in {run_dir}")
            if now - checked >= 2:
                checked = now
                if fatal := fatal_programs():
                    raise ScalperError(f"{', '.join(fatal)} failed to start repeatedly (FATAL); see "
                                       f"{', '.join(str(run_dir / f'{f}.log') for f in fatal)}")
            if now - t0 > a.timeout:
                raise ScalperError(f"replay not drained after {a.timeout:.0f}s: {why}")
            if now - shown >= (0.5 if tty else 5):
                shown = now
                text = line if ok or why.startswith("feed:") else f"{line}; draining: {why}"
                print(f"\r\x1b[K  {text}" if tty else f"  {text}", end="" if tty else "\n",
                      file=sys.stderr, flush=True)
            time.sleep(0.2)
    finally:
        if tty:
            print(file=sys.stderr)
        r.close()
        if not a.keep_running:
            stop_supervisord(proc)
    print(f"replay drained in {time.monotonic() - t0:.1f}s; logs in {run_dir}", file=sys.stderr)
    ledger = _ledger(env)
    title = (f"Replay of {first.name}" if len(plan) == 1 else
             f"Replay of {len(plan)} days, {plan[0].trading_day} to {plan[-1].trading_day}")
    print(report.render(report.trade_lines(ledger.closed_trades()), title=title, synthetic=synthetic))
    return 0


def cmd_simrun(a: argparse.Namespace) -> int:
    """The live path against the loopback DhanHQ simulator (see shared.simrun)."""
    from shared import report
    from shared.simrun import SimRun

    session = Path(a.session).resolve()
    instruments = Path(a.instruments) if a.instruments else session.parent / "instruments.csv"
    env = _env(a.namespace, a.schema)
    run_dir = Path(a.run_dir or ROOT / "run" / env.namespace)
    n = reset_deployment(env, instruments)
    print(f"imported {n} instruments; simulator at {a.speed}x; live mode, orders "
          f"{'disabled (dry run)' if a.dry_run else 'enabled'}", file=sys.stderr)
    warmup = session.parent / "previous.parquet"
    with SimRun(session, instruments, env=env, run_dir=run_dir, speed=str(a.speed), from_hhmm=a.from_hhmm,
                to_hhmm=a.to_hhmm, orders_enabled=not a.dry_run, faults=a.faults or "", warmup=warmup) as run:
        run.wait_done(a.timeout, progress=True)
        trades = run.broker("/trades")
    ledger = _ledger(env)
    print(report.render(report.trade_lines(ledger.closed_trades()), title=f"Live run against the simulator: {session.name}"))
    print(f"simulator trade book: {len(trades) if isinstance(trades, list) else trades} trades")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from shared import report

    env = _env(a.namespace, a.schema)
    ledger = _ledger(env)
    lines = report.trade_lines(ledger.closed_trades(a.day))
    title = f"Trades ({env.namespace}/{env.db_schema})"
    print(report.render(lines, title=title))
    if a.html or a.png:
        from shared.ops import htmlreport

        png = htmlreport.equity_png(lines)
        if a.png:
            Path(a.png).write_bytes(png)
            print(f"wrote {a.png}", file=sys.stderr)
        if a.html:
            Path(a.html).write_text(htmlreport.render_html(lines, title=title, png=png))
            print(f"wrote {a.html}", file=sys.stderr)
    return 0


def cmd_status(a: argparse.Namespace) -> int:
    from shared.ops import status

    env = _env(a.namespace, a.schema)
    run_dir = Path(a.run_dir or ROOT / "run" / env.namespace)
    print(status.run(env, run_dir, as_json=a.json,
                     secrets=[os.environ.get("SCALPER_API_TOKEN", "")]))
    return 0


def cmd_tail(a: argparse.Namespace) -> int:
    import redis

    from shared.keys import Keys
    from shared.logs import RedactSecrets
    from shared.ops import tail

    env = _env(a.namespace)
    r = redis.Redis.from_url(env.redis_url)
    try:
        tail.tail(r, Keys(env.namespace), a.stream, from_start=a.from_start, count=a.count,
                  redact=RedactSecrets([env.access_token]).redact)
    except KeyboardInterrupt:
        pass
    except redis.RedisError as exc:
        raise ScalperError(f"cannot read Redis: {exc}") from exc
    finally:
        r.close()
    return 0


def cmd_api(a: argparse.Namespace) -> int:
    from shared import logs
    from shared.ops import api

    env = _env(a.namespace, a.schema)
    token = os.environ.get("SCALPER_API_TOKEN", "")
    api.check_bind(a.host, token)
    logs.setup("api", env.log_level, secrets=[env.access_token, token])
    return api.serve(env, a.host, a.port, token)


def cmd_up(a: argparse.Namespace) -> int:
    from shared.supervise import start_supervisord

    env = _env()
    run_dir = Path(a.run_dir or ROOT / "run" / env.namespace)
    proc = start_supervisord(run_dir, {})
    print(f"supervisord started (pid {proc.pid}); logs in {run_dir}", file=sys.stderr)
    return proc.wait()


SCRIP_MASTER_URL = "https://images.dhan.co/api-data/api-scrip-master-detailed.csv"


def cmd_instruments(a: argparse.Namespace) -> int:
    from shared.instruments import parse_scrip_master

    if not a.file and not a.url:
        raise ScalperError("instruments import: give --file PATH or --url [URL]")
    if a.url:
        import httpx

        url = SCRIP_MASTER_URL if a.url == "default" else a.url
        try:
            resp = httpx.get(url, timeout=120, follow_redirects=True)
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            raise ScalperError(f"instruments import: cannot download {url}: {exc}") from None
        source: Path | bytes = resp.content
    else:
        source = Path(a.file)
    env = _env()
    ledger = _ledger(env)
    n = ledger.upsert_instruments(parse_scrip_master(source))
    print(f"imported {n} instruments into schema {env.db_schema}")
    return 0


def cmd_state(a: argparse.Namespace) -> int:
    import redis

    from shared.keys import Keys

    env = _env()
    state = "HALTED" if a.cmd == "halt" else "ACTIVE"
    ledger = _ledger(env)
    ledger.set_trading_state(state, a.reason or f"scalper {a.cmd}")
    redis.Redis.from_url(env.redis_url).set(Keys(env.namespace).trading_state(), state)
    print(f"trading state: {state}")
    return 0


def cmd_flatten(a: argparse.Namespace) -> int:
    """Emit an exit intent for every open position (the executor fills them even when HALTED)."""
    import asyncio

    from shared import bus as busmod
    from shared import streamids
    from shared.keys import Keys
    from shared.messages import OrderIntent, make_msg_id

    env = _env(a.namespace, a.schema)
    ledger = _ledger(env)
    active = ledger.active_trackers()
    if not active:
        print("no open positions")
        return 0

    async def go() -> int:
        r = busmod.connect(env.redis_url)
        keys = Keys(env.namespace)
        last = await r.xrevrange(keys.stream("ticks"), count=1)
        tick_id = last[0][0].decode() if last else streamids.ZERO
        now = time.time_ns()
        intents = []
        for t in active:
            msg_id = make_msg_id("flatten", t.position_id)
            intents.append(OrderIntent(
                msg_id=msg_id, ts_event=now, ts_init=now, tick_id=tick_id, kind="exit",
                correlation_id="F-" + msg_id.split("-", 1)[1][:20], position_id=t.position_id,
                index=t.index_key, segment=t.segment, security_id=t.security_id, symbol=t.symbol,
                side="SELL", quantity=t.quantity, lot_size=0, ref_price_paise=0,
                reason=f"flatten: {a.reason or 'operator request'}"))
        n = await busmod.Bus(r, keys, {}).publish("orders.requests", intents)
        await r.aclose()
        for it in intents:
            print(f"exit intent {it.correlation_id} for {it.position_id} ({it.symbol} x{it.quantity})")
        return n

    asyncio.run(go())
    return 0


def cmd_sync(a: argparse.Namespace) -> int:
    """One reconciliation pass (``--force``: also outside market hours); print what it found and
    did. JSON log lines (one per action) go to stderr, the readable report to stdout."""
    import asyncio
    import logging

    from services.sync.service import render, run_once
    from shared.config import load
    from shared.logs import JsonFormatter, RedactSecrets

    environ = dict(os.environ)
    if a.namespace:
        environ["SCALPER_NAMESPACE"] = a.namespace
    if a.schema:
        environ["SCALPER_DB_SCHEMA"] = a.schema
    config = load(environ=environ)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter("sync"))
    handler.addFilter(RedactSecrets([config.env.access_token]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.env.log_level)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    report = asyncio.run(run_once(config, force=a.force))
    print(render(report))
    return 0 if report.ok else 1


def _day_arg(text: str | None):
    import datetime as dt

    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ScalperError(f"--day {text!r}: expected YYYY-MM-DD") from None


def cmd_preopen(a: argparse.Namespace) -> int:
    """The pre-open check (shared.ops.preopen); exit 0 only if every check passed, else 1 with
    the trading state set to HALTED (``scalper resume`` lifts it)."""
    import logging

    from shared.config import default_config_path, load_algo
    from shared.logs import JsonFormatter, RedactSecrets
    from shared.ops import tradingday

    env = _env(a.namespace, a.schema)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter("preopen"))
    handler.addFilter(RedactSecrets([env.access_token]))
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.WARNING)
    algo = load_algo(default_config_path())
    text, code = tradingday.preopen(env, algo, day=_day_arg(a.day), as_json=a.json)
    print(text)
    return code


def cmd_eod(a: argparse.Namespace) -> int:
    """End of day: the day's report (text + run/<ns>/reports/<day>.html); 1 if positions are open."""
    from shared.clock import ist_day
    from shared.ops import tradingday

    env = _env(a.namespace, a.schema)
    day = _day_arg(a.day) or ist_day(time.time_ns())
    run_dir = Path(a.run_dir or ROOT / "run" / env.namespace)
    text, code = tradingday.eod(env, day=day, run_dir=run_dir)
    print(text)
    return code


def cmd_docs(a: argparse.Namespace) -> int:
    """Regenerate docs/configuration.md from shared/config.py (``--check``: only compare)."""
    from shared.ops import configdoc

    out = Path(a.out) if a.out else ROOT / "docs" / "configuration.md"
    text = configdoc.render()
    if a.check:
        current = out.read_text() if out.exists() else ""
        if current != text:
            print(f"{out} is out of date: run `scalper docs config`", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scalper", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("synth", help="generate a synthetic session", add_help=False)
    db = sub.add_parser("db", help="ledger database")
    db.add_argument("action", choices=["migrate"])
    ins = sub.add_parser("instruments", help="instrument master")
    ins.add_argument("action", choices=["import"])
    ins.add_argument("--file")
    ins.add_argument("--url", nargs="?", const="default",
                     help="download the detailed scrip master (default DhanHQ URL) instead of --file")
    rp = sub.add_parser("replay", help="replay recorded sessions (days) through the supervised pipeline")
    rp.add_argument("session", nargs="+", help="session files, one trading day each; replayed "
                                               "back to back in date order")
    rp.add_argument("--speed", default="max", help="max, or a multiple of real time (1, 10, ...)")
    rp.add_argument("--from", dest="from_hhmm", metavar="HH:MM", help="IST start, every day")
    rp.add_argument("--to", dest="to_hhmm", metavar="HH:MM", help="IST end (exclusive), every day")
    rp.add_argument("--instruments", action="append", help="scrip master CSV (repeatable; default: "
                                                           "instruments.csv beside each session)")
    rp.add_argument("--warmup", help="previous day's session for indicator warm-up of the first "
                                     "day (default: previous.parquet beside it, if present)")
    rp.add_argument("--no-warmup", action="store_true")
    rp.add_argument("--namespace", default=os.environ.get("SCALPER_REPLAY_NAMESPACE", "replay"))
    rp.add_argument("--schema", default=os.environ.get("SCALPER_REPLAY_SCHEMA", "replay"))
    rp.add_argument("--run-dir")
    rp.add_argument("--timeout", type=float, default=1800)
    rp.add_argument("--keep-running", action="store_true")
    sr = sub.add_parser("simrun", help="the live path end to end against the DhanHQ simulator")
    sr.add_argument("session")
    sr.add_argument("--speed", default="20")
    sr.add_argument("--from", dest="from_hhmm")
    sr.add_argument("--to", dest="to_hhmm")
    sr.add_argument("--instruments")
    sr.add_argument("--namespace", default="simrun")
    sr.add_argument("--schema", default="simrun")
    sr.add_argument("--run-dir")
    sr.add_argument("--faults", help="simulator fault spec, e.g. http_429=3,reject_orders=1")
    sr.add_argument("--dry-run", action="store_true", help="live mode with orders disabled")
    sr.add_argument("--timeout", type=float, default=1800)
    rep = sub.add_parser("report", help="trades and totals")
    rep.add_argument("--namespace")
    rep.add_argument("--schema")
    rep.add_argument("--day")
    rep.add_argument("--html", metavar="PATH", help="also write an HTML report with the equity curve")
    rep.add_argument("--png", metavar="PATH", help="also write the equity-curve PNG")
    st = sub.add_parser("status", help="services, streams, trading state, positions, today's PnL")
    st.add_argument("--json", action="store_true", help="stable JSON instead of the table")
    st.add_argument("--namespace")
    st.add_argument("--schema")
    st.add_argument("--run-dir", help="supervisord's run directory (default run/<namespace>)")
    tl = sub.add_parser("tail", help="pretty-print a stream's entries as they arrive")
    tl.add_argument("stream", help="logical stream name: ticks, signals, orders.requests, ...")
    tl.add_argument("--namespace")
    tl.add_argument("--from-start", action="store_true", help="start at the oldest entry")
    tl.add_argument("--count", type=int, help="stop after N entries")
    ap = sub.add_parser("api", help="read-only HTTP API (health, positions, Prometheus metrics)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8787)
    ap.add_argument("--namespace")
    ap.add_argument("--schema")
    up = sub.add_parser("up", help="run the services under supervisord (foreground)")
    up.add_argument("--run-dir")
    for name in ("halt", "resume"):
        s = sub.add_parser(name, help=f"{name} trading")
        s.add_argument("--reason", default="")
    fl = sub.add_parser("flatten", help="exit every open position now")
    fl.add_argument("--reason", default="")
    fl.add_argument("--namespace")
    fl.add_argument("--schema")
    sy = sub.add_parser("sync", help="one reconciliation pass with the broker; print every "
                                     "difference and action (exit 1 if not ok)")
    sy.add_argument("--force", action="store_true", help="run even outside market hours")
    sy.add_argument("--namespace")
    sy.add_argument("--schema")
    po = sub.add_parser("preopen", help="pre-open check; exit 1 and HALTED when one fails")
    po.add_argument("--json", action="store_true", help="stable JSON instead of the table")
    po.add_argument("--namespace")
    po.add_argument("--schema")
    po.add_argument("--day", help="check as of this IST day (YYYY-MM-DD; default today), "
                                  "e.g. to rehearse against a recorded session")
    eo = sub.add_parser("eod", help="end of day: the day's report and any open position")
    eo.add_argument("--day", help="IST day (YYYY-MM-DD; default today)")
    eo.add_argument("--namespace")
    eo.add_argument("--schema")
    eo.add_argument("--run-dir", help="reports go to <run dir>/reports (default run/<namespace>)")
    dc = sub.add_parser("docs", help="generated documentation")
    dc.add_argument("what", choices=["config"])
    dc.add_argument("--out", help="default docs/configuration.md")
    dc.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["synth"]:
        from shared.synth import main as synth_main

        return synth_main(argv[1:])
    if argv[:1] == ["sim"]:
        from dhansim.__main__ import main as sim_main

        return sim_main(argv[1:])
    if argv[:1] == ["record"]:
        from services.recorder.__main__ import main as record_main

        return record_main(argv[1:])
    if argv[:2] == ["db", "migrate"]:
        from shared.store.migrate import main as migrate_main

        return migrate_main(argv[2:])
    a = build_parser().parse_args(argv)
    handlers = {"simrun": cmd_simrun, "replay": cmd_replay, "report": cmd_report, "up": cmd_up,
                "instruments": cmd_instruments, "halt": cmd_state, "resume": cmd_state,
                "flatten": cmd_flatten, "status": cmd_status, "tail": cmd_tail, "api": cmd_api,
                "sync": cmd_sync, "preopen": cmd_preopen, "eod": cmd_eod, "docs": cmd_docs}
    try:
        return handlers[a.cmd](a)
    except ScalperError as exc:
        print(f"scalper {a.cmd}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
