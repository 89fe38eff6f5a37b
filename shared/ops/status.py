"""One snapshot of a deployment, for ``scalper status`` and the HTTP API.

A snapshot is a plain JSON-able dict with stable keys (see :func:`collect`); money in integer
paise, times as UTC ns (``ts_*``) or ages in seconds (``*_age_s``, wall clock now minus the
recorded time), ``*_pct`` as fractions. Reading the ledger may fail (PostgreSQL down): the
snapshot then carries the Redis half and says what failed under ``errors``.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import redis

from shared import wire
from shared.clock import IST, fmt_ist, ist_day
from shared.errors import DecodeError, StoreError
from shared.keys import LOGICAL_STREAMS, Keys
from shared.messages import Tick
from shared.ops import htmlreport
from shared.report import trade_lines
from shared.store.ledger import Ledger
from shared.supervise import SERVICES, group_states, supervisorctl
from shared.types import paise_to_rupees_str

NS_PER_S = 1_000_000_000
HEARTBEAT_FRESH_S = 10.0
"""A heartbeat younger than this counts as alive (services beat every second, TTL 15 s)."""
SUPERVISOR_STATES = frozenset(
    {"STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL", "UNKNOWN"}
)
_HB_RESERVED = ("service", "instance", "ts", "handled")


def as_str(v: Any) -> Any:
    """bytes from Redis as str; anything else unchanged."""
    return v.decode() if isinstance(v, bytes) else v


def _age_s(now_ns: int, ts_ns: int | None) -> float | None:
    return None if ts_ns is None else round((now_ns - ts_ns) / NS_PER_S, 3)


def _int(v: Any) -> int | None:
    try:
        return int(as_str(v))
    except (TypeError, ValueError):
        return None


def _float(v: Any) -> float | None:
    try:
        return float(as_str(v))
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- readers


def supervisor_states(run_dir: Path | None) -> dict[str, dict[str, str]]:
    """service -> {"state", "detail"} from ``supervisorctl status`` for ``run_dir``'s
    supervisord; every state is "unknown" when none answers, "absent" for a service it does
    not run."""
    unknown = {s: {"state": "unknown", "detail": ""} for s in SERVICES}
    if run_dir is None or not (run_dir / "supervisor.sock").exists():
        return unknown
    try:
        cp = supervisorctl(run_dir, "status")
    except (OSError, subprocess.SubprocessError):
        return unknown
    found: dict[str, dict[str, str]] = {}
    for line in cp.stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[1] in SUPERVISOR_STATES:
            name = parts[0].rsplit(":", 1)[-1]
            found[name] = {"state": parts[1], "detail": parts[2].strip() if len(parts) > 2 else ""}
    if not found:  # refused connection, stale socket file, ...
        return unknown
    out = {s: found.pop(s, {"state": "absent", "detail": "not in supervisord's programs"})
           for s in SERVICES}
    out.update(found)
    return out


def heartbeats(r: redis.Redis, keys: Keys, now_ns: int) -> list[dict[str, Any]]:
    """Every live heartbeat key: service, instance, age_s, handled and the service's extras."""
    prefix = keys.prefix + ":heartbeat:"
    out = []
    for k in r.scan_iter(match=keys.heartbeat_pattern(), count=500):
        raw = r.get(k)
        if raw is None:  # expired between SCAN and GET
            continue
        service, _, instance = as_str(k).removeprefix(prefix).partition(":")
        try:
            hb = orjson.loads(raw)
        except orjson.JSONDecodeError:
            hb = {}
        if not isinstance(hb, dict):
            hb = {}
        ts = hb.get("ts") if isinstance(hb.get("ts"), int) else None
        out.append({
            "service": str(hb.get("service") or service),
            "instance": str(hb.get("instance") or instance),
            "ts": ts,
            "age_s": _age_s(now_ns, ts),
            "handled": _int(hb.get("handled")),
            "info": {k2: v for k2, v in hb.items() if k2 not in _HB_RESERVED},
        })
    return sorted(out, key=lambda h: (h["service"], h["instance"]))


def services(hbs: list[dict[str, Any]], sup: dict[str, dict[str, str]] | None) -> dict[str, Any]:
    """service -> supervisor state, freshest heartbeat age, handled (summed) and instances."""
    names = list(SERVICES) + sorted({h["service"] for h in hbs} - set(SERVICES))
    out: dict[str, Any] = {}
    for name in names:
        mine = [h for h in hbs if h["service"] == name]
        ages = [h["age_s"] for h in mine if h["age_s"] is not None]
        handled = [h["handled"] for h in mine if h["handled"] is not None]
        s = (sup or {}).get(name, {"state": "unknown", "detail": ""})
        out[name] = {
            "supervisor": s["state"],
            "supervisor_detail": s["detail"],
            "heartbeat_age_s": min(ages) if ages else None,
            "alive": bool(ages) and min(ages) <= HEARTBEAT_FRESH_S,
            "handled": sum(handled) if handled else None,
            "instances": [{k: h[k] for k in ("instance", "age_s", "handled", "info")} for h in mine],
        }
    return out


def streams(r: redis.Redis, keys: Keys) -> dict[str, Any]:
    """stream -> length, last id, entries ever added, and each consumer group's lag and pending
    (lag None when Redis cannot tell, e.g. after a trim past the group)."""
    groups = group_states(r, keys)
    out: dict[str, Any] = {}
    for s in LOGICAL_STREAMS:
        try:
            info = r.xinfo_stream(keys.stream(s))
        except redis.ResponseError:  # no such stream yet
            info = {}
        out[s] = {
            "length": int(info.get("length", 0)),
            "last_id": as_str(info.get("last-generated-id")),
            "entries_added": _int(info.get("entries-added")),
            "groups": {
                g: {"lag": lag if lag >= 0 else None, "pending": pending}
                for g, (lag, pending) in sorted(groups.get(s, {}).items())
            },
        }
    return out


def latest_tick(r: redis.Redis, keys: Keys, scan: int = 200) -> Tick | None:
    """The newest :class:`Tick` among the last ``scan`` entries of ``ticks`` (clocks skipped)."""
    dec = wire.StreamDecoder("ticks")
    entries: Any = r.xrevrange(keys.stream("ticks"), count=scan)
    for _, fields in entries:
        try:
            msg = dec.decode(fields)
        except DecodeError:
            continue
        if isinstance(msg, Tick):
            return msg
    return None


def instrument_ltps(r: redis.Redis, keys: Keys, instruments: Iterable[tuple[str, int]],
                    now_ns: int) -> dict[str, Any]:
    """"SEG:SID" -> {ltp_paise, ltp_rupees, ts_event, age_s, tick_id} from the latest-tick
    hashes (None for an instrument without one)."""
    out: dict[str, Any] = {}
    for seg, sid in instruments:
        h = {as_str(k): as_str(v) for k, v in r.hgetall(keys.latest_tick(seg, sid)).items()}
        ltp, ts = _int(h.get("ltp_paise")), _int(h.get("ts_event"))
        out[f"{seg}:{sid}"] = None if ltp is None else {
            "ltp_paise": ltp, "ltp_rupees": paise_to_rupees_str(ltp), "ts_event": ts,
            "age_s": _age_s(now_ns, ts), "tick_id": h.get("tick_id"),
        }
    return out


def open_positions(r: redis.Redis, keys: Keys, ledger: Ledger) -> list[dict[str, Any]]:
    """Active trackers with their live PnL hash (PnL fields None until exits wrote one)."""
    trackers = ledger.active_trackers()
    pipe = r.pipeline(transaction=False)
    for t in trackers:
        pipe.hgetall(keys.pnl(t.position_id))
    hashes = pipe.execute() if trackers else []
    out = []
    for t, raw in zip(trackers, hashes, strict=True):
        h = {as_str(k): v for k, v in raw.items()}
        out.append({
            "position_id": t.position_id, "index": t.index_key, "symbol": t.symbol,
            "segment": t.segment, "security_id": t.security_id, "quantity": t.quantity,
            "entry_price_paise": t.entry_price_paise, "ts_entry": t.ts_entry,
            "ltp_paise": _int(h.get("ltp_paise")), "pnl_paise": _int(h.get("pnl_paise")),
            "pnl_pct": _float(h.get("pnl_pct")), "hwm_pnl_paise": _int(h.get("hwm_pnl_paise")),
            "hwm_pnl_pct": _float(h.get("hwm_pnl_pct")), "pnl_ts_event": _int(h.get("ts_event")),
        })
    return out


def today(ledger: Ledger, now_ns: int) -> dict[str, Any]:
    """Realised figures of the IST day containing ``now_ns`` (trades exited that day)."""
    day = ist_day(now_ns)
    f = htmlreport.figures(trade_lines(ledger.closed_trades(day)))
    return {
        "day": day.isoformat(), "trades": f.trades, "winners": f.winners,
        "gross_pnl_paise": f.gross_pnl_paise, "charges_paise": f.charges_paise,
        "net_pnl_paise": f.net_pnl_paise,
    }


def trading_state(r: redis.Redis, keys: Keys, ledger: Ledger | None) -> dict[str, Any]:
    row = ledger.get_trading_state() if ledger is not None else None
    return {
        "ledger": None if row is None else {
            "state": row.state, "reason": row.reason, "updated_at": row.updated_at.isoformat(),
        },
        "redis": as_str(r.get(keys.trading_state())),
    }


# --------------------------------------------------------------------------- snapshot


def collect(r: redis.Redis, keys: Keys, ledger: Ledger | None, *, now_ns: int, mode: str,
            schema: str, run_dir: Path | None = None, supervisor: bool = True,
            ledger_error: str | None = None) -> dict[str, Any]:
    """The whole snapshot (the ``status --json`` document).

    Keys: namespace, schema, mode, ts, ist, services, streams, trading_state, positions,
    open_pnl_paise, today, replay, errors. Redis errors propagate; ledger errors are listed
    in ``errors`` and leave the ledger's parts None.
    """
    errors = [f"ledger: {ledger_error}"] if ledger_error else []
    hbs = heartbeats(r, keys, now_ns)
    snap: dict[str, Any] = {
        "namespace": keys.namespace, "schema": schema, "mode": mode, "ts": now_ns,
        "ist": fmt_ist(now_ns, with_date=True),
        "services": services(hbs, supervisor_states(run_dir) if supervisor else None),
        "streams": streams(r, keys),
    }
    raw = r.get(keys.replay_status())
    try:
        snap["replay"] = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        snap["replay"] = {"raw": as_str(raw)}
    positions = day = state = None
    if ledger is not None:
        try:
            state = trading_state(r, keys, ledger)
            positions = open_positions(r, keys, ledger)
            day = today(ledger, now_ns)
        except StoreError as exc:
            errors.append(f"ledger: {exc}")
    snap["trading_state"] = state or {"ledger": None, "redis": as_str(r.get(keys.trading_state()))}
    snap["positions"] = positions
    snap["open_pnl_paise"] = (
        None if positions is None else sum(p["pnl_paise"] or 0 for p in positions)
    )
    snap["today"] = day
    snap["errors"] = errors
    return snap


# --------------------------------------------------------------------------- text


def _age(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}s" if v < 120 else f"{v / 60:.0f}m"


def _rs(paise: int | None) -> str:
    return "-" if paise is None else paise_to_rupees_str(paise)


def _pct(frac: float | None) -> str:
    return "-" if frac is None else f"{100 * frac:+.2f}%"


def render_text(snap: dict[str, Any]) -> str:
    """The human table of a snapshot."""
    rows = [f"Algo Scalper: namespace {snap['namespace']}, schema {snap['schema']}, "
            f"mode {snap['mode']}, {snap['ist']} IST", ""]
    rows.append(f"{'SERVICE':<10} {'SUPERVISOR':<11} {'HEARTBEAT':>9} {'HANDLED':>9}  DETAIL")
    for name, s in snap["services"].items():
        handled = "-" if s["handled"] is None else str(s["handled"])
        rows.append(f"{name:<10} {s['supervisor']:<11} {_age(s['heartbeat_age_s']):>9} "
                    f"{handled:>9}  {s['supervisor_detail']}".rstrip())
    rows += ["", f"{'STREAM':<18} {'LENGTH':>9}  {'GROUP':<10} {'LAG':>7} {'PENDING':>7}"]
    for name, st in snap["streams"].items():
        groups = list(st["groups"].items()) or [("", None)]
        for i, (g, gs) in enumerate(groups):
            left = f"{name:<18} {st['length']:>9}" if i == 0 else " " * 28
            if gs is None:
                rows.append(left)
            else:
                lag = "?" if gs["lag"] is None else str(gs["lag"])
                rows.append(f"{left}  {g:<10} {lag:>7} {gs['pending']:>7}")
    ts = snap["trading_state"]
    led = ts["ledger"]
    led_s = "?"
    if led:
        since = dt.datetime.fromisoformat(led["updated_at"]).astimezone(IST).strftime("%Y-%m-%d %H:%M:%S")
        led_s = f"{led['state']} ({led['reason'] or 'no reason'}, since {since} IST)"
    rows += ["", f"Trading state: {led_s}; Redis key: {ts['redis'] or 'unset'}"]
    if snap["replay"]:
        rp = snap["replay"]
        rows.append(f"Replay: {rp.get('state', '?')} {rp.get('published', '?')}/{rp.get('total', '?')}")
    positions = snap["positions"]
    if positions is None:
        rows += ["", "Open positions: unknown (ledger unavailable)"]
    else:
        rows += ["", f"Open positions: {len(positions)}   open PnL ₹{_rs(snap['open_pnl_paise'])}"]
        if positions:
            rows.append(f"  {'POSITION':<24} {'SYMBOL':<26} {'QTY':>5} {'ENTRY':>9} {'LTP':>9} "
                        f"{'PNL':>11} {'PNL%':>8} {'HWM':>11}  AS OF")
            for p in positions:
                asof = fmt_ist(p["pnl_ts_event"]) if p["pnl_ts_event"] else "-"
                rows.append(
                    f"  {p['position_id']:<24} {p['symbol']:<26} {p['quantity']:>5} "
                    f"{_rs(p['entry_price_paise']):>9} {_rs(p['ltp_paise']):>9} "
                    f"{_rs(p['pnl_paise']):>11} {_pct(p['pnl_pct']):>8} "
                    f"{_rs(p['hwm_pnl_paise']):>11}  {asof}"
                )
    d = snap["today"]
    if d is None:
        rows.append("Today: unknown (ledger unavailable)")
    else:
        rows.append(f"Today ({d['day']} IST): {d['trades']} trades, {d['winners']} winners, "
                    f"realised gross ₹{_rs(d['gross_pnl_paise'])}, charges ₹{_rs(d['charges_paise'])}, "
                    f"net ₹{_rs(d['net_pnl_paise'])}")
    for e in snap["errors"]:
        rows.append(f"! {e}")
    return "\n".join(rows)


# --------------------------------------------------------------------------- command


def connect_readonly(database_url: str, schema: str, application_name: str) -> Ledger:
    """A Ledger on a read-only connection to an existing ``schema`` (never created here,
    unlike :func:`shared.store.db.connect`); StoreError if it does not exist."""
    from psycopg import sql

    from shared.store.db import check_schema, connect, translate

    check_schema(schema)
    conn = connect(database_url, "public", application_name=application_name)
    try:
        with translate(f"open schema {schema}"):
            found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
            if not found:
                raise StoreError(f"schema {schema} does not exist (not migrated?)")
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            conn.execute("SET default_transaction_read_only = on")
    except BaseException:
        conn.close()
        raise
    return Ledger(conn)


def run(env: Any, run_dir: Path | None, *, as_json: bool, secrets: Iterable[str] = (),
        now_ns: int | None = None) -> str:
    """``scalper status``: the snapshot of deployment ``env`` (an EnvConfig) as text or JSON,
    with the DhanHQ access token and ``secrets`` redacted."""
    import time

    from shared.errors import ScalperError
    from shared.logs import RedactSecrets

    r = redis.Redis.from_url(env.redis_url, socket_timeout=10, socket_connect_timeout=5)
    ledger = err = None
    try:
        ledger = connect_readonly(env.database_url, env.db_schema, "scalper-status")
    except StoreError as exc:
        err = str(exc)
    try:
        snap = collect(r, Keys(env.namespace), ledger, now_ns=now_ns or time.time_ns(),
                       mode=env.mode, schema=env.db_schema, run_dir=run_dir, ledger_error=err)
    except redis.RedisError as exc:
        raise ScalperError(f"cannot read Redis: {exc}") from exc
    finally:
        r.close()
        if ledger is not None:
            ledger.close()
    text = (orjson.dumps(snap, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2).decode()
            if as_json else render_text(snap))
    return RedactSecrets([env.access_token, *secrets]).redact(text)
