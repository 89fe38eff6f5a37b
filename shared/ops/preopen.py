"""The pre-open check: may this deployment trade today? Pure decisions over gathered facts.

``scalper preopen`` gathers the facts (:mod:`shared.ops.tradingday` does the I/O) and runs
:func:`run_checks`; each check here is a pure function of those facts, the configuration and the
trading calendar, so every outcome can be unit-tested without a server. The checks, in order:

=============  =================================================================================
trading_day    the day is a trading day of an enabled index's exchange (``config/holidays.csv``;
               a year the file does not cover fails: its holidays are unknown)
redis          Redis answers PING
postgres       the ledger schema is reachable and at the latest migration
instruments    the instruments table was updated within :data:`INSTRUMENTS_MAX_AGE_S` and holds
               CE and PE options of every enabled index for the day's expiry (the calendar's
               scheduled expiry or an earlier listed one) and, on expiry day, the next expiry
access_token   live: ``GET /profile`` answers for ``DHAN_CLIENT_ID`` and the token stays valid
               past the close (``risk.market_close_hhmm``); paper: skipped ("not needed")
               unless ``DHAN_ACCESS_TOKEN`` is set: paper trading on the live feed uses it
funds          live: ``GET /fundlimit`` answers with a positive available balance;
               paper: ``paper.balance_rupees`` is positive
clock          the local wall clock is within :data:`CLOCK_TOLERANCE_S` of the broker's
               (the HTTP ``Date`` header of the DhanHQ REST endpoint) in live mode, of
               PostgreSQL's ``now()`` in paper mode
=============  =================================================================================

A check passes, fails, or is skipped (with the reason). The day may trade only if none failed;
otherwise the shell sets the trading state HALTED with :func:`halt_reason` as the reason, and
``scalper resume`` is the way back once the failures are fixed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Literal

import msgspec
import orjson

from shared.calendar import UNDERLYING_EXCHANGE, TradingCalendar
from shared.clock import IST, NS_PER_S, fmt_ist, ist_to_ns
from shared.config import AlgoConfig, IndexConfig
from shared.types import paise_to_rupees_str, rupees_to_paise

Status = Literal["pass", "fail", "skip"]
Mode = Literal["paper", "live"]

CHECK_NAMES = (
    "trading_day",
    "redis",
    "postgres",
    "instruments",
    "access_token",
    "funds",
    "clock",
)
INSTRUMENTS_MAX_AGE_S = 24 * 3600
"""The instruments table must have been written within this many seconds (a daily import)."""
CLOCK_TOLERANCE_S = 2.0
"""Largest allowed difference between the local wall clock and the reference clock."""
TOKEN_VALIDITY_FORMATS = (
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
)
"""How ``GET /profile`` writes ``tokenValidity`` (IST), e.g. ``30/03/2025 15:37``. UNCONFIRMED
beyond the first; a value in none of them is reported, not failed."""
HALT_REASON_MAX_CHARS = 500
_OPTION_TYPES = ("CE", "PE")


class CheckResult(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    status: Status
    detail: str


class OptionSeries(msgspec.Struct, frozen=True, kw_only=True):
    """How many listed options of one underlying, segment, expiry and type the ledger holds."""

    underlying: str
    segment: str
    expiry: dt.date
    option_type: str
    contracts: int


class InstrumentFacts(msgspec.Struct, frozen=True, kw_only=True):
    """``updated_at_ns``: the newest ``instruments.updated_at`` (None: the table is empty)."""

    updated_at_ns: int | None = None
    series: list[OptionSeries] = msgspec.field(default_factory=list)
    error: str = ""


class DatabaseFacts(msgspec.Struct, frozen=True, kw_only=True):
    schema: str
    applied: list[int] = msgspec.field(default_factory=list)
    known: list[int] = msgspec.field(default_factory=list)
    """Versions of the migration files this code ships."""
    error: str = ""


class TokenFacts(msgspec.Struct, frozen=True, kw_only=True):
    """The answer of ``GET /profile`` (live mode), or why there is none."""

    token_set: bool
    token_clean: bool = True
    """False when the token has surrounding whitespace or control characters (a CRLF ``.env``):
    the checks then ran with it stripped, but the services would send it as it is."""
    client_id: str = ""
    token_validity: str = ""
    error: str = ""
    auth_failed: bool = False


class FundsFacts(msgspec.Struct, frozen=True, kw_only=True):
    available_paise: int | None = None
    error: str = ""


class ClockFacts(msgspec.Struct, frozen=True, kw_only=True):
    """One reading of a reference clock: local wall time just before (``local_before_ns``) and
    just after (``local_after_ns``) the request, and the reference's time (``remote_ns``, with
    ``resolution_ns``: 1 s for an HTTP ``Date`` header)."""

    source: str
    local_before_ns: int = 0
    local_after_ns: int = 0
    remote_ns: int | None = None
    resolution_ns: int = 0
    error: str = ""


class PreopenFacts(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the checks look at, gathered by the shell."""

    day: dt.date
    now_ns: int
    """Local wall clock (UTC ns) when the facts were gathered."""
    mode: Mode
    client_id: str = ""
    redis_error: str = ""
    database: DatabaseFacts
    instruments: InstrumentFacts
    token: TokenFacts | None = None
    funds: FundsFacts | None = None
    clock: ClockFacts


# --------------------------------------------------------------------------- checks


def _result(name: str, problems: Sequence[str], ok_detail: str) -> CheckResult:
    if problems:
        return CheckResult(name=name, status="fail", detail="; ".join(problems))
    return CheckResult(name=name, status="pass", detail=ok_detail)


def enabled_indices(algo: AlgoConfig) -> list[IndexConfig]:
    return [ix for ix in algo.indices if ix.enabled]


def check_trading_day(
    day: dt.date, indices: Iterable[IndexConfig], calendar: TradingCalendar
) -> CheckResult:
    """Pass when at least one enabled exchange trades on ``day``; name any that does not."""
    exchanges = sorted({UNDERLYING_EXCHANGE.get(ix.key, ix.exchange) for ix in indices})
    name = "trading_day"
    if not exchanges:
        return CheckResult(
            name=name, status="fail", detail="no index is enabled in config/algo.yml"
        )
    if not calendar.covers(day):
        return CheckResult(
            name=name,
            status="fail",
            detail=f"the holiday calendar (config/holidays.csv) has no {day.year} list, so "
            f"{day} cannot be confirmed as a trading day: add the exchanges' holidays",
        )
    open_, closed = [], []
    for exch in exchanges:
        entry = calendar.entry(day, exch)
        if calendar.is_trading_day(day, exch):
            open_.append(exch + (f" ({entry.name})" if entry and entry.kind == "session" else ""))
        else:
            why = entry.name if entry and entry.kind == "closed" else day.strftime("%A")
            closed.append(f"{exch} closed ({why})")
    when = f"{day.strftime('%A')} {day}"
    if not open_:
        return CheckResult(
            name=name, status="fail", detail=f"{when} is not a trading day: {', '.join(closed)}"
        )
    detail = f"{when}: {', '.join(open_)} open" + (f"; {', '.join(closed)}" if closed else "")
    return CheckResult(name=name, status="pass", detail=detail)


def check_redis(error: str) -> CheckResult:
    if error:
        return CheckResult(name="redis", status="fail", detail=f"cannot reach Redis: {error}")
    return CheckResult(name="redis", status="pass", detail="PING answered")


def check_postgres(db: DatabaseFacts) -> CheckResult:
    name = "postgres"
    if db.error:
        return CheckResult(name=name, status="fail", detail=f"cannot read the ledger: {db.error}")
    missing = sorted(set(db.known) - set(db.applied))
    unknown = sorted(set(db.applied) - set(db.known))
    problems = []
    if missing:
        problems.append(
            f"schema {db.schema} lacks migration(s) {_versions(missing)}: run `scalper db migrate`"
        )
    if unknown:
        problems.append(
            f"schema {db.schema} has migration(s) {_versions(unknown)} this code does not know: "
            "the code is older than the database"
        )
    top = max(db.applied, default=0)
    return _result(name, problems, f"schema {db.schema} at version {top:04d} (the latest)")


def _versions(vs: Iterable[int]) -> str:
    return ", ".join(f"{v:04d}" for v in vs)


def check_instruments(
    facts: InstrumentFacts,
    day: dt.date,
    now_ns: int,
    indices: Iterable[IndexConfig],
    calendar: TradingCalendar,
    max_age_s: int = INSTRUMENTS_MAX_AGE_S,
) -> CheckResult:
    name = "instruments"
    if facts.error:
        return CheckResult(
            name=name, status="fail", detail=f"cannot read instruments: {facts.error}"
        )
    if facts.updated_at_ns is None:
        return CheckResult(
            name=name,
            status="fail",
            detail="the instruments table is empty: run `scalper instruments import --file "
            "<today's scrip master CSV>`",
        )
    problems: list[str] = []
    age_s = (now_ns - facts.updated_at_ns) / NS_PER_S
    age = f"updated {fmt_ist(facts.updated_at_ns, with_date=True)} IST ({age_s / 3600:.1f} h ago)"
    if age_s > max_age_s:
        problems.append(
            f"{age}, older than {max_age_s / 3600:g} h: import today's scrip master "
            "(`scalper instruments import --file ...`)"
        )
    found: list[str] = []
    for ix in indices:
        problem, summary = _index_options(facts.series, ix, day, calendar)
        if problem:
            problems.append(problem)
        else:
            found.append(summary)
    return _result(name, problems, f"{age}; " + "; ".join(found))


def _index_options(
    series: Iterable[OptionSeries], ix: IndexConfig, day: dt.date, calendar: TradingCalendar
) -> tuple[str, str]:
    """(problem, "") or ("", summary) for one enabled index."""
    by_expiry: dict[dt.date, dict[str, int]] = {}
    for s in series:
        if (
            s.underlying == ix.key
            and s.segment == ix.options_segment
            and s.option_type in _OPTION_TYPES
            and s.expiry >= day
        ):
            types = by_expiry.setdefault(s.expiry, {})
            types[s.option_type] = types.get(s.option_type, 0) + s.contracts
    expiries = sorted(
        e for e, types in by_expiry.items() if all(types.get(t) for t in _OPTION_TYPES)
    )
    if not expiries:
        return f"{ix.key}: no {ix.options_segment} CE and PE options expiring on or after {day}", ""
    nearest = expiries[0]
    try:
        scheduled: dt.date | None = calendar.scheduled_expiry(ix.key, day)
    except ValueError:
        scheduled = None
    if scheduled is not None and nearest > scheduled:
        return (
            f"{ix.key}: no options for the {scheduled} expiry (nearest listed {nearest}): "
            "the scrip master is out of date"
        ), ""
    summary = f"{ix.key} {nearest} ({sum(by_expiry[nearest].values())} CE/PE)"
    if nearest == day:
        if len(expiries) < 2:
            return (
                f"{ix.key}: {day} is expiry day and no later expiry is listed (entries move to "
                "the next expiry at option_chain.expiry_day_cutoff_hhmm)"
            ), ""
        summary += f", next {expiries[1]}"
    return "", summary


def parse_token_validity(text: str) -> dt.datetime | None:
    """``tokenValidity`` as an aware IST datetime, or None when its format is unknown."""
    for fmt in TOKEN_VALIDITY_FORMATS:
        try:
            return dt.datetime.strptime(text.strip(), fmt).replace(tzinfo=IST)
        except ValueError:
            continue
    return None


def check_token(
    mode: Mode, token: TokenFacts | None, client_id: str, day: dt.date, close_hhmm: str
) -> CheckResult:
    name = "access_token"
    if mode == "paper" and (token is None or not token.token_set):
        return CheckResult(name=name, status="skip", detail="not needed in paper mode")
    if token is None or not token.token_set:
        return CheckResult(name=name, status="fail", detail="DHAN_ACCESS_TOKEN is not set")
    if not token.token_clean:
        return CheckResult(
            name=name,
            status="fail",
            detail="DHAN_ACCESS_TOKEN has surrounding whitespace or control characters "
            "(a CRLF .env file?): write it on one line without them",
        )
    if token.error:
        if token.auth_failed:
            detail = (
                f"the access token was refused ({token.error}): generate a new token "
                "and set DHAN_ACCESS_TOKEN"
            )
        else:
            detail = f"GET /profile failed: {token.error}"
        return CheckResult(name=name, status="fail", detail=detail)
    problems = []
    if client_id and token.client_id and token.client_id != client_id:
        problems.append(
            f"the token belongs to client {token.client_id}, DHAN_CLIENT_ID is {client_id}"
        )
    valid_until = parse_token_validity(token.token_validity)
    if valid_until is not None:
        close_ns = ist_to_ns(day, close_hhmm)
        if valid_until.timestamp() * NS_PER_S < close_ns:
            problems.append(
                f"the token expires {token.token_validity} IST, before the close "
                f"({day} {close_hhmm}): generate a new one"
            )
        validity = f"valid until {token.token_validity} IST"
    else:
        validity = f"validity {token.token_validity!r} (format not understood, not checked)"
    ok = f"GET /profile answered for client {token.client_id}; {validity}"
    if mode == "paper":
        ok += " (paper mode: the live market feed uses it)"
    return _result(name, problems, ok)


def check_funds(mode: Mode, funds: FundsFacts | None, paper_balance_paise: int) -> CheckResult:
    name = "funds"
    if mode == "paper":
        if paper_balance_paise <= 0:
            return CheckResult(name=name, status="fail", detail="paper.balance_rupees is 0")
        return CheckResult(
            name=name,
            status="pass",
            detail=f"paper balance ₹{paise_to_rupees_str(paper_balance_paise)} (paper.balance_rupees)",
        )
    if funds is None or funds.available_paise is None:
        why = funds.error if funds is not None and funds.error else "not read"
        return CheckResult(name=name, status="fail", detail=f"funds unknown: GET /fundlimit: {why}")
    if funds.available_paise <= 0:
        return CheckResult(
            name=name,
            status="fail",
            detail=f"available balance is ₹{paise_to_rupees_str(funds.available_paise)}",
        )
    return CheckResult(
        name=name,
        status="pass",
        detail=f"₹{paise_to_rupees_str(funds.available_paise)} available (GET /fundlimit)",
    )


def clock_skew_ns(clock: ClockFacts) -> int:
    """The smallest offset (local minus reference, ns) consistent with one reading: 0 when the
    local interval [before, after] meets the reference's [remote, remote + resolution]."""
    assert clock.remote_ns is not None
    lo, hi = clock.remote_ns, clock.remote_ns + clock.resolution_ns
    if clock.local_before_ns > hi:
        return clock.local_before_ns - hi
    if clock.local_after_ns < lo:
        return clock.local_after_ns - lo
    return 0


def check_clock(clock: ClockFacts, tolerance_s: float = CLOCK_TOLERANCE_S) -> CheckResult:
    name = "clock"
    if clock.error:
        return CheckResult(
            name=name,
            status="fail",
            detail=f"cannot read the clock of {clock.source}: {clock.error}",
        )
    if clock.remote_ns is None:
        return CheckResult(
            name=name, status="fail", detail=f"{clock.source} sent no time (no Date header)"
        )
    skew_s = clock_skew_ns(clock) / NS_PER_S
    rtt_ms = (clock.local_after_ns - clock.local_before_ns) / 1e6
    if abs(skew_s) > tolerance_s:
        side = "ahead of" if skew_s > 0 else "behind"
        return CheckResult(
            name=name,
            status="fail",
            detail=f"the local clock is at least {abs(skew_s):.1f} s {side} {clock.source} "
            f"(allowed {tolerance_s:g} s): fix NTP (timedatectl / chrony)",
        )
    return CheckResult(
        name=name,
        status="pass",
        detail=f"within {max(abs(skew_s), 0):.1f} s of {clock.source} "
        f"(allowed {tolerance_s:g} s; round trip {rtt_ms:.0f} ms)",
    )


def run_checks(
    facts: PreopenFacts, algo: AlgoConfig, calendar: TradingCalendar
) -> list[CheckResult]:
    """Every check, in :data:`CHECK_NAMES` order."""
    indices = enabled_indices(algo)
    return [
        check_trading_day(facts.day, indices, calendar),
        check_redis(facts.redis_error),
        check_postgres(facts.database),
        check_instruments(facts.instruments, facts.day, facts.now_ns, indices, calendar),
        check_token(
            facts.mode, facts.token, facts.client_id, facts.day, algo.risk.market_close_hhmm
        ),
        check_funds(facts.mode, facts.funds, rupees_to_paise(algo.paper.balance_rupees)),
        check_clock(facts.clock),
    ]


# --------------------------------------------------------------------------- outcome


def passed(results: Iterable[CheckResult]) -> bool:
    return all(r.status != "fail" for r in results)


def halt_reason(results: Iterable[CheckResult]) -> str:
    """The trading-state reason for a failed check: every failure, cut to the column's budget."""
    failed = [f"{r.name}: {r.detail}" for r in results if r.status == "fail"]
    text = "preopen failed: " + " | ".join(failed)
    if len(text) > HALT_REASON_MAX_CHARS:
        text = text[: HALT_REASON_MAX_CHARS - 1] + "…"
    return text


def render_text(
    results: Sequence[CheckResult],
    *,
    day: dt.date,
    mode: str,
    namespace: str,
    schema: str,
    halted: bool = False,
    halt_errors: Sequence[str] = (),
) -> str:
    """The operator's table; the last line says what happens next."""
    lines = [f"pre-open check for {day} (mode {mode}, namespace {namespace}, schema {schema})"]
    width = max(len(r.name) for r in results)
    for r in results:
        lines.append(f"  {r.status.upper():4}  {r.name:<{width}}  {r.detail}")
    failed = [r for r in results if r.status == "fail"]
    if not failed:
        lines.append(f"OK: all {len(results)} checks passed (skipped ones say why)")
        return "\n".join(lines)
    lines.append(f"FAILED: {len(failed)} of {len(results)} checks.")
    if halted:
        lines.append(
            "Trading state set to HALTED. Fix the failures, run `scalper preopen` again, "
            "then `scalper resume`."
        )
    for err in halt_errors:
        lines.append(f"could not record HALTED: {err}")
    return "\n".join(lines)


def render_json(
    results: Sequence[CheckResult],
    *,
    day: dt.date,
    mode: str,
    namespace: str,
    schema: str,
    halted: bool = False,
    halt_errors: Sequence[str] = (),
) -> str:
    """Stable JSON: ``{"ok", "day", "mode", "namespace", "schema", "halted", "halt_errors",
    "checks": [{"name", "status", "detail"}]}``."""
    doc = {
        "ok": passed(results),
        "day": day.isoformat(),
        "mode": mode,
        "namespace": namespace,
        "schema": schema,
        "halted": halted,
        "halt_errors": list(halt_errors),
        "checks": [msgspec.to_builtins(r) for r in results],
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
