"""Trading calendar read from config/holidays.csv (reference: market-calendar-and-charges.md §1)."""

from __future__ import annotations

from datetime import date

import pytest

from shared.calendar import (
    DEFAULT_HOLIDAYS_CSV,
    TradingCalendar,
    is_trading_day,
    load_calendar,
    next_trading_day,
    previous_trading_day,
    scheduled_expiry,
)
from shared.errors import ConfigError

CLOSED_2025 = """2025-02-26 2025-03-14 2025-03-31 2025-04-10 2025-04-14 2025-04-18 2025-05-01
2025-08-15 2025-08-27 2025-10-02 2025-10-21 2025-10-22 2025-11-05 2025-12-25""".split()
CLOSED_2026 = """2026-01-15 2026-01-26 2026-03-03 2026-03-26 2026-03-31 2026-04-03 2026-04-14
2026-05-01 2026-05-28 2026-06-26 2026-09-14 2026-10-02 2026-10-20 2026-11-10
2026-11-24 2026-12-25""".split()


@pytest.fixture(scope="module")
def cal() -> TradingCalendar:
    return TradingCalendar.from_csv(DEFAULT_HOLIDAYS_CSV)


@pytest.mark.parametrize("exchange", ["NSE", "BSE"])
def test_weekday_closures_match_the_reference_lists(cal: TradingCalendar, exchange: str) -> None:
    assert [d.isoformat() for d in cal.holidays(exchange, 2025)] == CLOSED_2025
    assert [d.isoformat() for d in cal.holidays(exchange, 2026)] == CLOSED_2026
    assert all(not cal.is_trading_day(date.fromisoformat(d), exchange) for d in CLOSED_2026)


def test_guru_nanak_jayanti_2026_is_a_holiday_and_moves_nifty_expiry_to_monday() -> None:
    assert not is_trading_day(date(2026, 11, 24), "NSE")
    assert scheduled_expiry("NIFTY", date(2026, 11, 19)) == date(2026, 11, 23)
    assert scheduled_expiry("NIFTY", date(2026, 11, 23)) == date(2026, 11, 23)
    # On the holiday itself that week's contract has already expired: next Tuesday's is nearest.
    assert scheduled_expiry("NIFTY", date(2026, 11, 24)) == date(2026, 12, 1)
    # 24 Nov is also the last Tuesday: the NSE monthly moves with it.
    assert scheduled_expiry("BANKNIFTY", date(2026, 11, 2)) == date(2026, 11, 23)


@pytest.mark.parametrize(
    ("underlying", "day", "monthly", "expected"),
    [
        ("NIFTY", date(2026, 3, 2), False, date(2026, 3, 2)),  # Holi Tue 03-03
        ("NIFTY", date(2026, 3, 27), False, date(2026, 3, 30)),  # Mahavir Jayanti Tue 03-31
        ("FINNIFTY", date(2026, 3, 4), False, date(2026, 3, 30)),  # monthly only
        ("NIFTY", date(2026, 10, 16), False, date(2026, 10, 19)),  # Dussehra
        ("NIFTY", date(2026, 11, 5), False, date(2026, 11, 9)),  # Balipratipada
        ("SENSEX", date(2026, 1, 12), False, date(2026, 1, 14)),  # elections Thu 01-15
        ("SENSEX", date(2026, 3, 20), True, date(2026, 3, 25)),  # Ram Navami, BSE monthly
        ("SENSEX", date(2026, 5, 22), False, date(2026, 5, 27)),  # Bakri Id
        ("NIFTY", date(2026, 12, 1), False, date(2026, 12, 1)),  # expiry day itself
        ("NIFTY", date(2025, 8, 25), False, date(2025, 8, 28)),  # Thursday before Sep 2025
        ("NIFTY", date(2025, 8, 29), False, date(2025, 9, 2)),  # first Tuesday weekly
        ("SENSEX", date(2025, 9, 1), False, date(2025, 9, 4)),  # first Thursday weekly
    ],
)
def test_scheduled_expiry_follows_weekday_rules_and_holiday_shifts(
    underlying: str, day: date, monthly: bool, expected: date
) -> None:
    assert scheduled_expiry(underlying, day, monthly=monthly) == expected


def test_previous_and_next_trading_day_skip_weekends_and_holidays() -> None:
    assert previous_trading_day(date(2026, 11, 25)) == date(2026, 11, 23)
    assert next_trading_day(date(2026, 11, 23)) == date(2026, 11, 25)
    assert next_trading_day(date(2026, 12, 24)) == date(2026, 12, 28)  # Fri 25th + weekend
    assert previous_trading_day(date(2026, 1, 27)) == date(2026, 1, 23)  # Mon 26th closed


def test_special_weekend_sessions_are_trading_days_and_plain_weekends_are_not() -> None:
    assert is_trading_day(date(2026, 2, 1), "NSE")  # Budget Sunday
    assert is_trading_day(date(2025, 2, 1), "BSE")  # Budget Saturday
    assert not is_trading_day(date(2026, 11, 8), "NSE")  # Muhurat Sunday: not a normal session
    assert not is_trading_day(date(2026, 11, 28), "NSE")
    assert is_trading_day(date(2026, 2, 19), "NSE")  # settlement-only holiday: trading open


def test_years_outside_the_file_fall_back_to_weekends_only(cal: TradingCalendar) -> None:
    assert cal.covers(date(2026, 6, 1)) and not cal.covers(date(2027, 1, 26))
    assert cal.is_trading_day(date(2027, 1, 26))


def test_holidays_come_from_the_data_file(tmp_path) -> None:
    path = tmp_path / "holidays.csv"
    path.write_text("date,exchange,name,kind\n2026-12-01,NSE,Test closure,closed\n")
    custom = TradingCalendar.from_csv(path)
    assert not custom.is_trading_day(date(2026, 12, 1), "NSE")
    assert custom.is_trading_day(date(2026, 12, 1), "BSE")
    assert custom.scheduled_expiry("NIFTY", date(2026, 11, 26)) == date(2026, 11, 30)
    assert custom.is_trading_day(date(2026, 11, 24))  # not listed in this file


def test_a_bad_row_is_rejected_with_its_line(tmp_path) -> None:
    path = tmp_path / "holidays.csv"
    path.write_text("date,exchange,name,kind\n2026-12-01,NSE,x,closed\n2026-12-02,NYSE,x,closed\n")
    with pytest.raises(ConfigError, match=r"holidays.csv:3: exchange 'NYSE'"):
        TradingCalendar.from_csv(path)


def test_unknown_underlying_or_exchange_is_an_error() -> None:
    with pytest.raises(ValueError):
        scheduled_expiry("MIDCPNIFTY", date(2026, 1, 1))
    with pytest.raises(ValueError):
        load_calendar().is_trading_day(date(2026, 1, 1), "MCX")
