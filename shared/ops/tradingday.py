"""The two ends of a trading day: the pre-open check's shell and the end-of-day step.

``scalper preopen`` (:func:`preopen`): gather the facts the checks of :mod:`shared.ops.preopen`
need — Redis PING; the ledger's migrations, instruments and (paper mode) ``now()``; in live
mode ``GET /profile`` and ``GET /fundlimit`` from DhanHQ, whose HTTP ``Date`` header is the
reference clock (in paper mode ``GET /profile`` only, when a token is set) — run the checks,
and when one fails set the trading state HALTED (ledger and Redis, as ``scalper halt`` does)
with the failures as the reason. Nothing here lifts a halt:
``scalper resume`` does, once the failures are fixed.

``scalper eod`` (:func:`eod`): after the close, the day's report (text, and HTML under
``<run dir>/reports/<day>.html``) and a warning for any position still open (the exits service's
time exit squares off at ``risk.time_exit_hhmm``; ``scalper flatten`` is the manual way). The
daily state of entries and exits is keyed by the IST day of the event time, so it resets by
itself at the first tick of the next day; the trading state does not.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import redis

from shared.calendar import TradingCalendar, load_calendar
from shared.clock import NS_PER_S, ist_day
from shared.config import AlgoConfig, EnvConfig
from shared.dhan.rest import DhanRest
from shared.dhan.retry import RetryPolicy
from shared.errors import BrokerAuthError, BrokerError, ScalperError
from shared.keys import Keys
from shared.logs import RedactSecrets
from shared.ops import preopen as checks
from shared.store.db import connect
from shared.store.ledger import Ledger
from shared.store.migrate import applied_versions, load_migrations
from shared.types import paise_to_rupees_str

WallClock = Callable[[], int]
BROKER_TIMEOUT_S = 5.0
BROKER_RETRY = RetryPolicy(attempts=2, base_s=0.5, cap_s=1.0)
"""One retry: a pre-open check should answer within seconds, not back off for a minute."""
SOCKET_TIMEOUT_S = 5.0
DATE_RESOLUTION_NS = NS_PER_S
_US_NS = 1000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class DateRecorder(httpx.AsyncBaseTransport):
    """A transport that notes, for every response, the local wall time around the request and
    the response's ``Date`` header: the broker's clock, read from calls made anyway."""

    def __init__(self, inner: httpx.AsyncBaseTransport, wall_ns: WallClock) -> None:
        self._inner = inner
        self._wall_ns = wall_ns
        self.readings: list[tuple[int, int, str | None]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        before = self._wall_ns()
        response = await self._inner.handle_async_request(request)
        after = self._wall_ns()
        dates = response.headers.get_list("date")
        self.readings.append((before, after, dates[0] if dates else None))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def parse_http_date(value: str) -> int | None:
    """An HTTP ``Date`` header (RFC 9110 IMF-fixdate) as UTC ns; None if unreadable."""
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp()) * NS_PER_S


# --------------------------------------------------------------------------- gathering


def gather(
    env: EnvConfig,
    algo: AlgoConfig,
    *,
    day: dt.date | None = None,
    wall_ns: WallClock = time.time_ns,
    transport: httpx.AsyncBaseTransport | None = None,
) -> checks.PreopenFacts:
    """Collect every fact the checks need. Never raises for an unreachable system: the failure
    becomes that fact's ``error``. ``transport`` replaces the HTTP transport to DhanHQ (tests)."""
    now_ns = wall_ns()
    day = day or ist_day(now_ns)
    database, instruments, pg_clock = _ledger_facts(env, day, wall_ns)
    token = funds = None
    clock = pg_clock
    if env.mode == "live":
        token, funds, clock = asyncio.run(_broker_facts(env, wall_ns, transport))
    elif env.access_token:  # paper trading on the live market feed, which needs the token
        token, _, _ = asyncio.run(_broker_facts(env, wall_ns, transport, with_funds=False))
    return checks.PreopenFacts(
        day=day,
        now_ns=now_ns,
        mode=env.mode,
        client_id=env.dhan_client_id,
        redis_error=_redis_error(env),
        database=database,
        instruments=instruments,
        token=token,
        funds=funds,
        clock=clock,
    )


def _redis_error(env: EnvConfig) -> str:
    r = redis.Redis.from_url(
        env.redis_url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S
    )
    try:
        r.ping()
        return ""
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        r.close()


def _ledger_facts(
    env: EnvConfig, day: dt.date, wall_ns: WallClock
) -> tuple[checks.DatabaseFacts, checks.InstrumentFacts, checks.ClockFacts]:
    schema = env.db_schema
    source = "PostgreSQL now()"
    known = [m.version for m in load_migrations()]
    try:
        conn = connect(env.database_url, schema, application_name="scalper-preopen")
    except ScalperError as exc:
        err = str(exc)
        return (
            checks.DatabaseFacts(schema=schema, known=known, error=err),
            checks.InstrumentFacts(error="the ledger is unreachable"),
            checks.ClockFacts(source=source, error="the ledger is unreachable"),
        )
    try:
        try:
            database = checks.DatabaseFacts(
                schema=schema, applied=applied_versions(conn, schema), known=known
            )
        except ScalperError as exc:
            database = checks.DatabaseFacts(schema=schema, known=known, error=str(exc))
        instruments = _instrument_facts(conn, schema, day)
        try:
            before = wall_ns()
            row = conn.execute("SELECT now()").fetchone()
            after = wall_ns()
            assert row is not None
            clock = checks.ClockFacts(
                source=source,
                local_before_ns=before,
                local_after_ns=after,
                remote_ns=_ns(row[0]),
                resolution_ns=_US_NS,
            )
        except Exception as exc:  # noqa: BLE001 - any failure is the fact
            clock = checks.ClockFacts(source=source, error=f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()
    return database, instruments, clock


def _instrument_facts(
    conn: psycopg.Connection, schema: str, day: dt.date
) -> checks.InstrumentFacts:
    try:
        exists = conn.execute("SELECT to_regclass(%s)", (f"{schema}.instruments",)).fetchone()
        if not exists or exists[0] is None:
            return checks.InstrumentFacts(error=f"no instruments table in schema {schema}")
        top = conn.execute("SELECT max(updated_at) FROM instruments").fetchone()
        newest = top[0] if top else None
        rows = conn.execute(
            "SELECT underlying, segment, expiry, option_type, count(*) FROM instruments"
            " WHERE expiry >= %s AND option_type IN ('CE', 'PE')"
            " GROUP BY underlying, segment, expiry, option_type",
            (day,),
        ).fetchall()
    except Exception as exc:  # noqa: BLE001 - any failure is the fact
        return checks.InstrumentFacts(error=f"{type(exc).__name__}: {exc}")
    series = [
        checks.OptionSeries(underlying=u, segment=s, expiry=e, option_type=t, contracts=n)
        for u, s, e, t, n in rows
    ]
    updated = None if newest is None else _ns(newest)
    return checks.InstrumentFacts(updated_at_ns=updated, series=series)


def _ns(ts: dt.datetime) -> int:
    """An aware timestamp (PostgreSQL, microseconds) as UTC ns, exactly."""
    return (ts - _EPOCH) // dt.timedelta(microseconds=1) * _US_NS


async def _broker_facts(
    env: EnvConfig,
    wall_ns: WallClock,
    transport: httpx.AsyncBaseTransport | None,
    *,
    with_funds: bool = True,
) -> tuple[checks.TokenFacts, checks.FundsFacts, checks.ClockFacts]:
    """``GET /profile`` (and ``GET /fundlimit`` when ``with_funds``), reading the broker's clock
    from their ``Date`` headers."""
    host = urlsplit(env.dhan_rest_url).netloc or env.dhan_rest_url
    source = f"the DhanHQ REST endpoint ({host})"
    redact = RedactSecrets(secret_forms(env.access_token)).redact
    token = env.access_token.strip()
    recorder = DateRecorder(transport or httpx.AsyncHTTPTransport(), wall_ns)
    token_set = bool(env.access_token)
    profile = funds = None
    profile_err = funds_err = ""
    auth_failed = False
    try:
        async with DhanRest(
            env.dhan_rest_url,
            env.dhan_client_id,
            token,
            transport=recorder,
            timeout_s=BROKER_TIMEOUT_S,
            retry=BROKER_RETRY,
        ) as rest:
            try:
                profile = await rest.profile()
            except BrokerError as exc:
                profile_err, auth_failed = _describe(exc, redact), isinstance(exc, BrokerAuthError)
            if profile is not None and with_funds:
                try:
                    funds = await rest.fund_limit()
                except BrokerError as exc:
                    funds_err = _describe(exc, redact)
            else:
                funds_err = "not asked: GET /profile failed"
    except Exception as exc:  # noqa: BLE001 - e.g. an invalid URL; the token is redacted
        profile_err = profile_err or _describe(exc, redact)
        funds_err = funds_err or profile_err
    facts = checks.TokenFacts(
        token_set=token_set,
        token_clean=token == env.access_token and token.isprintable(),
        client_id=profile.dhan_client_id if profile else "",
        token_validity=profile.token_validity if profile else "",
        error=profile_err,
        auth_failed=auth_failed,
    )
    fund_facts = checks.FundsFacts(
        available_paise=funds.available_balance_paise if funds else None, error=funds_err
    )
    return facts, fund_facts, _clock_from(recorder.readings, source, profile_err)


def secret_forms(token: str) -> list[str]:
    """The token as it may appear in text: itself, stripped, and escaped as ``repr`` shows it
    (an exception about an illegal header value prints ``b'<token>\\r'``)."""
    return [token, token.strip(), repr(token)[1:-1]]


def _describe(exc: BaseException, redact: Callable[[str], str]) -> str:
    return redact(f"{type(exc).__name__}: {exc}")


def _clock_from(
    readings: list[tuple[int, int, str | None]], source: str, error: str
) -> checks.ClockFacts:
    for before, after, date in readings:
        if date is None:
            continue
        remote = parse_http_date(date)
        if remote is None:
            return checks.ClockFacts(source=source, error=f"unreadable Date header {date!r}")
        return checks.ClockFacts(
            source=source,
            local_before_ns=before,
            local_after_ns=after,
            remote_ns=remote,
            resolution_ns=DATE_RESOLUTION_NS,
        )
    if readings:
        return checks.ClockFacts(source=source)  # answered, but without a Date header
    return checks.ClockFacts(source=source, error=error or "no answer")


# --------------------------------------------------------------------------- outcome


def halt(env: EnvConfig, reason: str) -> list[str]:
    """Set HALTED in the ledger and in Redis (as ``scalper halt``); the errors, if any."""
    errors: list[str] = []
    try:
        conn = connect(env.database_url, env.db_schema, application_name="scalper-preopen")
        try:
            Ledger(conn).set_trading_state("HALTED", reason)
        finally:
            conn.close()
    except ScalperError as exc:
        errors.append(f"ledger: {exc}")
    r = redis.Redis.from_url(
        env.redis_url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S
    )
    try:
        r.set(Keys(env.namespace).trading_state(), "HALTED")
    except redis.RedisError as exc:
        errors.append(f"redis: {type(exc).__name__}: {exc}")
    finally:
        r.close()
    return errors


def preopen(
    env: EnvConfig,
    algo: AlgoConfig,
    *,
    day: dt.date | None = None,
    calendar: TradingCalendar | None = None,
    as_json: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[str, int]:
    """Run the pre-open check: (the report, exit code 0 if every check passed, else 1)."""
    facts = gather(env, algo, day=day, transport=transport)
    results = checks.run_checks(facts, algo, calendar or load_calendar())
    ok = checks.passed(results)
    halt_errors = [] if ok else halt(env, checks.halt_reason(results))
    render = checks.render_json if as_json else checks.render_text
    text = render(
        results,
        day=facts.day,
        mode=env.mode,
        namespace=env.namespace,
        schema=env.db_schema,
        halted=not ok,
        halt_errors=halt_errors,
    )
    return RedactSecrets(secret_forms(env.access_token)).redact(text), 0 if ok else 1


def eod(env: EnvConfig, *, day: dt.date, run_dir: Path) -> tuple[str, int]:
    """The end-of-day report; exit code 1 when positions are still open."""
    from shared import report
    from shared.ops import htmlreport

    conn = connect(env.database_url, env.db_schema, application_name="scalper-eod")
    try:
        ledger = Ledger(conn)
        lines = report.trade_lines(ledger.closed_trades(day))
        still_open = ledger.active_trackers()
        state = ledger.get_trading_state()
    finally:
        conn.close()
    title = f"End of day {day} ({env.namespace}/{env.db_schema})"
    out = [report.render(lines, title=title)]
    html_path = run_dir / "reports" / f"{day}.html"
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(
        htmlreport.render_html(lines, title=title, png=htmlreport.equity_png(lines))
    )
    out.append(f"wrote {html_path}")
    out.append(
        f"trading state: {state.state} ({state.reason or 'no reason'}); it carries over "
        "to the next day — daily limits and counters reset by themselves"
    )
    if still_open:
        out.append(f"WARNING: {len(still_open)} position(s) still open after the close:")
        for t in still_open:
            price = paise_to_rupees_str(t.entry_price_paise or 0)
            out.append(f"  {t.position_id} {t.symbol} x{t.quantity} entered at ₹{price}")
        out.append("square them off with `scalper flatten` and check the executor log")
    return "\n".join(out), 1 if still_open else 0
