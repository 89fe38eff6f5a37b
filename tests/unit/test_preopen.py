"""The pre-open checks as pure functions of gathered facts (no servers)."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import orjson
import pytest

from shared.calendar import CalendarEntry, TradingCalendar
from shared.clock import NS_PER_S, ist_to_ns
from shared.config import parse_algo
from shared.ops import preopen as po
from shared.ops.tradingday import DateRecorder, _clock_from, parse_http_date

DAY = dt.date(2026, 12, 1)  # a Tuesday: NIFTY's weekly expiry
NOW = ist_to_ns(DAY, "08:55")
H = 3600 * NS_PER_S


def calendar(*extra: CalendarEntry) -> TradingCalendar:
    rows = [
        CalendarEntry(day=dt.date(2026, 12, 25), exchange=x, name="Christmas", kind="closed")
        for x in ("NSE", "BSE")
    ]
    return TradingCalendar([*rows, *extra])


def algo(*enabled: str, balance: float = 100_000):
    ids = {"NIFTY": 13, "BANKNIFTY": 25, "FINNIFTY": 27, "SENSEX": 51}
    indices = [
        {
            "key": k,
            "security_id": sid,
            "options_segment": "BSE_FNO" if k == "SENSEX" else "NSE_FNO",
            "exchange": "BSE" if k == "SENSEX" else "NSE",
            "enabled": k in enabled,
        }
        for k, sid in ids.items()
    ]
    return parse_algo({"indices": indices, "paper": {"balance_rupees": balance}})


def series(
    key: str, expiry: dt.date, segment: str = "NSE_FNO", n: int = 21
) -> list[po.OptionSeries]:
    return [
        po.OptionSeries(underlying=key, segment=segment, expiry=expiry, option_type=t, contracts=n)
        for t in ("CE", "PE")
    ]


GOOD_SERIES = series("NIFTY", DAY) + series("NIFTY", DAY + dt.timedelta(days=7))


def facts(**over) -> po.PreopenFacts:
    base = dict(
        day=DAY,
        now_ns=NOW,
        mode="paper",
        client_id="1100000001",
        database=po.DatabaseFacts(schema="scalper", applied=[1, 2], known=[1, 2]),
        instruments=po.InstrumentFacts(updated_at_ns=NOW - 2 * H, series=GOOD_SERIES),
        clock=po.ClockFacts(
            source="PostgreSQL now()",
            local_before_ns=NOW,
            local_after_ns=NOW + 1000,
            remote_ns=NOW + 500,
            resolution_ns=1000,
        ),
    )
    base.update(over)
    return po.PreopenFacts(**base)


def by_name(results: list[po.CheckResult]) -> dict[str, po.CheckResult]:
    return {r.name: r for r in results}


LIVE_TOKEN = po.TokenFacts(
    token_set=True, client_id="1100000001", token_validity="02/12/2026 09:00"
)
LIVE_FUNDS = po.FundsFacts(available_paise=50_000_00)


# ----------------------------------------------------------------------------- whole run


def test_paper_day_with_everything_in_order_passes_and_skips_the_token():
    results = po.run_checks(facts(), algo("NIFTY"), calendar())
    assert [r.name for r in results] == list(po.CHECK_NAMES)
    assert po.passed(results)
    got = by_name(results)
    assert got["access_token"].status == "skip" and "not needed" in got["access_token"].detail
    assert got["funds"].detail.startswith("paper balance ₹100000.00")
    assert "next 2026-12-08" in got["instruments"].detail


def test_live_day_with_everything_in_order_passes_every_check():
    f = facts(mode="live", token=LIVE_TOKEN, funds=LIVE_FUNDS)
    results = po.run_checks(f, algo("NIFTY"), calendar())
    assert [r.status for r in results] == ["pass"] * 7


def test_failures_are_listed_in_the_halt_reason_and_the_report():
    f = facts(
        redis_error="ConnectionError: refused",
        day=dt.date(2026, 12, 25),
        now_ns=ist_to_ns(dt.date(2026, 12, 25), "08:55"),
    )
    results = po.run_checks(f, algo("NIFTY"), calendar())
    assert not po.passed(results)
    reason = po.halt_reason(results)
    assert reason.startswith("preopen failed: trading_day: Friday 2026-12-25 is not a trading day")
    assert "redis: cannot reach Redis: ConnectionError: refused" in reason
    text = po.render_text(
        results, day=f.day, mode="paper", namespace="paper", schema="scalper", halted=True
    )
    assert "FAIL  trading_day" in text and "`scalper resume`" in text
    doc = orjson.loads(
        po.render_json(
            results, day=f.day, mode="paper", namespace="paper", schema="scalper", halted=True
        )
    )
    assert doc["ok"] is False and doc["halted"] is True
    assert {c["name"]: c["status"] for c in doc["checks"]}["redis"] == "fail"


def test_halt_reason_is_cut_to_the_column_budget():
    results = [po.CheckResult(name="x", status="fail", detail="y" * 2000)]
    reason = po.halt_reason(results)
    assert len(reason) == po.HALT_REASON_MAX_CHARS and reason.endswith("…")


# ----------------------------------------------------------------------------- trading day


def test_exchange_holiday_fails_with_its_name():
    r = po.check_trading_day(dt.date(2026, 12, 25), algo("NIFTY").indices[:1], calendar())
    assert r.status == "fail" and "NSE closed (Christmas)" in r.detail


def test_weekend_fails_naming_the_weekday():
    r = po.check_trading_day(dt.date(2026, 11, 28), algo("NIFTY").indices[:1], calendar())
    assert r.status == "fail" and "NSE closed (Saturday)" in r.detail


def test_special_weekend_session_is_a_trading_day():
    budget = dt.date(2026, 2, 1)  # a Sunday
    extra = CalendarEntry(day=budget, exchange="NSE", name="Union Budget", kind="session")
    r = po.check_trading_day(budget, algo("NIFTY").indices[:1], calendar(extra))
    assert r.status == "pass" and "NSE (Union Budget) open" in r.detail


def test_year_missing_from_the_holiday_file_fails():
    r = po.check_trading_day(dt.date(2027, 1, 5), algo("NIFTY").indices[:1], calendar())
    assert r.status == "fail" and "no 2027 list" in r.detail


def test_one_exchange_closed_passes_when_another_enabled_one_trades():
    day = dt.date(2026, 12, 3)
    bse = CalendarEntry(day=day, exchange="BSE", name="BSE only", kind="closed")
    cfg = algo("NIFTY", "SENSEX")
    r = po.check_trading_day(day, po.enabled_indices(cfg), calendar(bse))
    assert r.status == "pass" and "NSE open" in r.detail and "BSE closed (BSE only)" in r.detail


# ----------------------------------------------------------------------------- databases


def test_missing_migration_fails_and_says_how_to_fix_it():
    r = po.check_postgres(po.DatabaseFacts(schema="scalper", applied=[1], known=[1, 2]))
    assert r.status == "fail" and "lacks migration(s) 0002" in r.detail
    assert "scalper db migrate" in r.detail


def test_database_newer_than_the_code_fails():
    r = po.check_postgres(po.DatabaseFacts(schema="scalper", applied=[1, 2, 3], known=[1, 2]))
    assert r.status == "fail" and "0003 this code does not know" in r.detail


def test_unreachable_ledger_fails_with_the_error():
    r = po.check_postgres(po.DatabaseFacts(schema="s", error="connection refused"))
    assert r == po.CheckResult(
        name="postgres", status="fail", detail="cannot read the ledger: connection refused"
    )


# ----------------------------------------------------------------------------- instruments


def check_instruments(fx: po.InstrumentFacts, *enabled: str, day: dt.date = DAY):
    return po.check_instruments(fx, day, NOW, po.enabled_indices(algo(*enabled)), calendar())


def test_instruments_older_than_a_day_fail():
    r = check_instruments(
        po.InstrumentFacts(updated_at_ns=NOW - 25 * H, series=GOOD_SERIES), "NIFTY"
    )
    assert r.status == "fail" and "(25.0 h ago), older than 24 h" in r.detail


def test_empty_instruments_table_fails_with_the_import_command():
    r = check_instruments(po.InstrumentFacts(), "NIFTY")
    assert r.status == "fail" and "scalper instruments import" in r.detail


def test_enabled_index_without_options_fails_and_disabled_ones_are_ignored():
    fx = po.InstrumentFacts(updated_at_ns=NOW, series=GOOD_SERIES)
    assert check_instruments(fx, "NIFTY").status == "pass"
    r = check_instruments(fx, "NIFTY", "BANKNIFTY")
    assert r.status == "fail" and "BANKNIFTY: no NSE_FNO CE and PE options" in r.detail
    assert "NIFTY:" not in r.detail.replace("BANKNIFTY", "")


def test_missing_scheduled_expiry_fails_when_only_later_ones_are_listed():
    day = dt.date(2026, 11, 26)  # the scheduled NIFTY expiry is Tuesday 2026-12-01
    fx = po.InstrumentFacts(updated_at_ns=NOW, series=series("NIFTY", dt.date(2026, 12, 8)))
    r = check_instruments(fx, "NIFTY", day=day)
    assert r.status == "fail"
    assert "no options for the 2026-12-01 expiry (nearest listed 2026-12-08)" in r.detail


def test_expiry_day_needs_the_next_expiry_too():
    fx = po.InstrumentFacts(updated_at_ns=NOW, series=series("NIFTY", DAY))
    r = check_instruments(fx, "NIFTY")
    assert r.status == "fail" and "expiry day and no later expiry" in r.detail


def test_options_of_one_type_only_do_not_count():
    only_ce = [s for s in GOOD_SERIES if s.option_type == "CE"]
    r = check_instruments(po.InstrumentFacts(updated_at_ns=NOW, series=only_ce), "NIFTY")
    assert r.status == "fail"


def test_options_in_the_wrong_segment_do_not_count():
    wrong = series("SENSEX", dt.date(2026, 12, 3), segment="NSE_FNO")
    r = check_instruments(po.InstrumentFacts(updated_at_ns=NOW, series=wrong), "SENSEX")
    assert r.status == "fail" and "SENSEX: no BSE_FNO" in r.detail


def test_monthly_only_index_passes_with_its_monthly_expiry():
    monthly = series("BANKNIFTY", dt.date(2026, 12, 29))  # last Tuesday of December
    r = check_instruments(po.InstrumentFacts(updated_at_ns=NOW, series=monthly), "BANKNIFTY")
    assert r.status == "pass" and "BANKNIFTY 2026-12-29" in r.detail


# ----------------------------------------------------------------------------- token, funds


def close_hhmm() -> str:
    return algo("NIFTY").risk.market_close_hhmm


def test_paper_mode_checks_a_configured_token_used_by_the_live_feed():
    r = po.check_token("paper", LIVE_TOKEN, "1100000001", DAY, close_hhmm())
    assert r.status == "pass" and r.detail.endswith("(paper mode: the live market feed uses it)")
    refused = po.TokenFacts(token_set=True, error="BrokerAuthError: DH-901", auth_failed=True)
    assert po.check_token("paper", refused, "1100000001", DAY, close_hhmm()).status == "fail"
    assert po.check_token("paper", None, "", DAY, close_hhmm()).status == "skip"


def test_refused_token_fails_and_says_to_generate_a_new_one():
    tok = po.TokenFacts(token_set=True, error="BrokerAuthError: DH-901", auth_failed=True)
    r = po.check_token("live", tok, "1100000001", DAY, close_hhmm())
    assert r.status == "fail" and "generate a new token" in r.detail


def test_unset_token_fails_in_live_mode():
    r = po.check_token("live", po.TokenFacts(token_set=False), "1", DAY, close_hhmm())
    assert r.detail == "DHAN_ACCESS_TOKEN is not set" and r.status == "fail"


def test_token_with_surrounding_whitespace_fails_before_anything_else():
    tok = po.TokenFacts(token_set=True, token_clean=False, client_id="1100000001")
    r = po.check_token("live", tok, "1100000001", DAY, close_hhmm())
    assert r.status == "fail" and "CRLF .env" in r.detail


def test_secret_forms_cover_the_escaped_token_an_exception_shows():
    from shared.logs import RedactSecrets
    from shared.ops.tradingday import secret_forms

    token = "abcdef-123456\r"
    shown = "LocalProtocolError: Illegal header value " + repr(token.encode())
    assert "abcdef-123456" not in RedactSecrets(secret_forms(token)).redact(shown)


def test_token_expiring_before_the_close_fails():
    tok = po.TokenFacts(token_set=True, client_id="1100000001", token_validity="01/12/2026 13:00")
    r = po.check_token("live", tok, "1100000001", DAY, close_hhmm())
    assert r.status == "fail" and "before the close (2026-12-01 15:30)" in r.detail


def test_token_of_another_client_fails():
    tok = po.TokenFacts(token_set=True, client_id="999", token_validity="02/12/2026 09:00")
    r = po.check_token("live", tok, "1100000001", DAY, close_hhmm())
    assert r.status == "fail" and "belongs to client 999" in r.detail


def test_unknown_validity_format_is_reported_not_failed():
    tok = po.TokenFacts(token_set=True, client_id="1100000001", token_validity="soon")
    r = po.check_token("live", tok, "1100000001", DAY, close_hhmm())
    assert r.status == "pass" and "format not understood" in r.detail


@pytest.mark.parametrize("text", ["02/12/2026 09:00", "2026-12-02 09:00:00"])
def test_token_validity_formats_parse_as_ist(text):
    parsed = po.parse_token_validity(text)
    assert parsed is not None and parsed.utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert (parsed.day, parsed.hour) == (2, 9)


def test_unknown_funds_fail_in_live_mode_and_zero_paper_balance_fails():
    r = po.check_funds("live", po.FundsFacts(error="BrokerUnavailable: timeout"), 0)
    assert r.status == "fail" and "funds unknown: GET /fundlimit: BrokerUnavailable" in r.detail
    assert po.check_funds("live", po.FundsFacts(available_paise=0), 0).status == "fail"
    assert po.check_funds("paper", None, 0).status == "fail"
    assert po.check_funds("live", LIVE_FUNDS, 0).detail == "₹50000.00 available (GET /fundlimit)"


# ----------------------------------------------------------------------------- clock


def reading(offset_s: float, rtt_ms: float = 20, resolution_s: float = 1.0) -> po.ClockFacts:
    """Local clock ``offset_s`` ahead of a reference read in the middle of the round trip."""
    true_mid = NOW
    before = true_mid - int(rtt_ms / 2 * 1e6) + int(offset_s * NS_PER_S)
    after = true_mid + int(rtt_ms / 2 * 1e6) + int(offset_s * NS_PER_S)
    res = int(resolution_s * NS_PER_S)
    return po.ClockFacts(
        source="ref",
        local_before_ns=before,
        local_after_ns=after,
        remote_ns=true_mid - true_mid % res,
        resolution_ns=res,
    )


@pytest.mark.parametrize("offset_s", [0.0, 1.5, -1.5])
def test_clock_within_two_seconds_of_the_reference_passes(offset_s):
    assert po.check_clock(reading(offset_s)).status == "pass"


@pytest.mark.parametrize(("offset_s", "word"), [(3.5, "ahead of"), (-3.5, "behind")])
def test_clock_more_than_two_seconds_off_fails_and_says_which_way(offset_s, word):
    r = po.check_clock(reading(offset_s))
    assert r.status == "fail" and word in r.detail and "NTP" in r.detail


def test_skew_is_the_gap_between_the_local_and_the_reference_intervals():
    c = po.ClockFacts(
        source="r",
        local_before_ns=10 * NS_PER_S,
        local_after_ns=11 * NS_PER_S,
        remote_ns=5 * NS_PER_S,
        resolution_ns=NS_PER_S,
    )
    assert po.clock_skew_ns(c) == 4 * NS_PER_S
    c = po.ClockFacts(
        source="r",
        local_before_ns=1 * NS_PER_S,
        local_after_ns=2 * NS_PER_S,
        remote_ns=5 * NS_PER_S,
        resolution_ns=NS_PER_S,
    )
    assert po.clock_skew_ns(c) == -3 * NS_PER_S


def test_reference_without_a_date_fails():
    r = po.check_clock(po.ClockFacts(source="the DhanHQ REST endpoint (x)"))
    assert r.status == "fail" and "no Date header" in r.detail


def test_http_date_header_parses_to_utc_ns():
    assert parse_http_date("Tue, 01 Dec 2026 03:25:00 GMT") == ist_to_ns(DAY, "08:55")
    assert parse_http_date("yesterday") is None


def test_clock_facts_come_from_the_first_response_with_a_date():
    readings = [(1, 2, None), (10 * NS_PER_S, 11 * NS_PER_S, "Thu, 01 Jan 1970 00:00:10 GMT")]
    c = _clock_from(readings, "src", "")
    assert (c.remote_ns, c.local_before_ns, c.resolution_ns) == (
        10 * NS_PER_S,
        10 * NS_PER_S,
        NS_PER_S,
    )
    assert _clock_from([(1, 2, None)], "src", "").remote_ns is None
    assert _clock_from([], "src", "ConnectError").error == "ConnectError"


def test_date_recorder_notes_the_date_header_of_each_response():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={}, headers={"Date": "Tue, 01 Dec 2026 03:25:00 GMT"})

    ticks = iter([5, 7])
    rec = DateRecorder(httpx.MockTransport(handler), lambda: next(ticks))

    async def main() -> None:
        async with httpx.AsyncClient(transport=rec, base_url="http://x") as client:
            await client.get("/profile")

    asyncio.run(main())
    assert rec.readings == [(5, 7, "Tue, 01 Dec 2026 03:25:00 GMT")]
