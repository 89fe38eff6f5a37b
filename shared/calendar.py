"""NSE/BSE F&O trading calendar and index-option expiry days (IST calendar dates).

Holidays come from data: ``config/holidays.csv`` with the columns ``date,exchange,name,kind``
(one row per exchange), taken from reference/market-calendar-and-charges.md §1. ``kind`` is

- ``closed``     — a weekday on which the exchange does not trade;
- ``weekend``    — a holiday that falls on a Saturday/Sunday (no effect; kept for completeness);
- ``session``    — a weekend day with a full special session (Union Budget): a trading day;
- ``settlement`` — a settlement-only holiday: trading is open, listed for reference.

Expiry rules (reference/dhanhq-api.md §7) are code, because they are rules rather than dates:
NSE index options expire on Tuesday and BSE on Thursday for contracts expiring on or after
2025-09-01 (Thursday / Tuesday before); only NIFTY (NSE) and SENSEX (BSE) have weeklies, the
monthly contract is the last such weekday of the month, and an expiry that falls on a non-trading
day moves to the previous trading day.

Outside the years the file lists (see :meth:`TradingCalendar.covers`) only weekends are closed;
callers that care must check ``covers`` (the 2027 list is not yet published).
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path

import msgspec

from shared.errors import ConfigError

DEFAULT_HOLIDAYS_CSV = Path(__file__).resolve().parent.parent / "config" / "holidays.csv"

EXCHANGES = ("NSE", "BSE")
KINDS = ("closed", "weekend", "session", "settlement")

UNDERLYING_EXCHANGE: dict[str, str] = {
    "NIFTY": "NSE",
    "BANKNIFTY": "NSE",
    "FINNIFTY": "NSE",
    "SENSEX": "BSE",
}
WEEKLY_UNDERLYINGS = frozenset({"NIFTY", "SENSEX"})

# Contracts expiring on or after this date use the new weekdays (SEBI, Sep 2025).
EXPIRY_WEEKDAY_CHANGE = date(2025, 9, 1)
_TUESDAY, _THURSDAY = 1, 3
_EXPIRY_WEEKDAY_NEW = {"NSE": _TUESDAY, "BSE": _THURSDAY}
_EXPIRY_WEEKDAY_OLD = {"NSE": _THURSDAY, "BSE": _TUESDAY}
_SEARCH_LIMIT_DAYS = 400


class CalendarEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``holidays.csv``."""

    day: date
    exchange: str
    name: str
    kind: str


class TradingCalendar:
    """Trading days of NSE and BSE F&O, built from :class:`CalendarEntry` rows."""

    def __init__(self, entries: Iterable[CalendarEntry]) -> None:
        self._entries: dict[tuple[str, date], CalendarEntry] = {}
        for entry in entries:
            self._entries[(entry.exchange, entry.day)] = entry
        self._years = frozenset(day.year for _, day in self._entries)

    @classmethod
    def from_csv(cls, path: str | Path = DEFAULT_HOLIDAYS_CSV) -> TradingCalendar:
        """Load ``date,exchange,name,kind`` rows; a bad row raises ConfigError naming it."""
        path = Path(path)
        entries: list[CalendarEntry] = []
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"date", "exchange", "name", "kind"} - set(reader.fieldnames or ())
            if missing:
                raise ConfigError(f"{path}: missing columns {sorted(missing)}")
            for line_no, row in enumerate(reader, start=2):
                entries.append(_entry_from_row(row, f"{path}:{line_no}"))
        return cls(entries)

    @property
    def entries(self) -> list[CalendarEntry]:
        return sorted(self._entries.values(), key=lambda e: (e.day, e.exchange))

    def covers(self, day: date) -> bool:
        """True when the file lists holidays for ``day``'s year."""
        return day.year in self._years

    def entry(self, day: date, exchange: str = "NSE") -> CalendarEntry | None:
        return self._entries.get((_check_exchange(exchange), day))

    def holidays(self, exchange: str = "NSE", year: int | None = None) -> list[date]:
        """Weekday closures (kind ``closed``) of one exchange, sorted."""
        exchange = _check_exchange(exchange)
        return sorted(
            day
            for (exch, day), e in self._entries.items()
            if exch == exchange and e.kind == "closed" and (year is None or day.year == year)
        )

    def is_trading_day(self, day: date, exchange: str = "NSE") -> bool:
        """Whether the exchange's F&O segment holds its normal session on ``day``."""
        found = self._entries.get((_check_exchange(exchange), day))
        if found is not None:
            if found.kind == "closed":
                return False
            if found.kind == "session":
                return True
        return day.weekday() < 5

    def previous_trading_day(self, day: date, exchange: str = "NSE") -> date:
        """The last trading day strictly before ``day``."""
        return self._step(day, exchange, -1)

    def next_trading_day(self, day: date, exchange: str = "NSE") -> date:
        """The first trading day strictly after ``day``."""
        return self._step(day, exchange, +1)

    def on_or_before(self, day: date, exchange: str = "NSE") -> date:
        return (
            day if self.is_trading_day(day, exchange) else self.previous_trading_day(day, exchange)
        )

    def scheduled_expiry(self, underlying: str, day: date, *, monthly: bool = False) -> date:
        """The index option expiry nearest to ``day`` (on or after it), holiday-shifted.

        Weekly for NIFTY and SENSEX unless ``monthly``; BANKNIFTY and FINNIFTY have monthlies only.
        A cross-check for the instrument master, which stays the source of truth.
        """
        try:
            exchange = UNDERLYING_EXCHANGE[underlying]
        except KeyError:
            raise ValueError(f"unknown underlying {underlying!r}") from None
        monthly = monthly or underlying not in WEEKLY_UNDERLYINGS
        candidate = day
        for _ in range(_SEARCH_LIMIT_DAYS):
            if _is_scheduled_expiry(candidate, exchange, monthly):
                actual = self.on_or_before(candidate, exchange)
                if actual >= day:
                    return actual
            candidate += timedelta(days=1)
        raise ValueError(f"no {underlying} expiry within {_SEARCH_LIMIT_DAYS} days of {day}")

    def _step(self, day: date, exchange: str, step: int) -> date:
        candidate = day
        for _ in range(_SEARCH_LIMIT_DAYS):
            candidate += timedelta(days=step)
            if self.is_trading_day(candidate, exchange):
                return candidate
        raise ValueError(f"no {exchange} trading day within {_SEARCH_LIMIT_DAYS} days of {day}")


def _is_scheduled_expiry(day: date, exchange: str, monthly: bool) -> bool:
    rule = _EXPIRY_WEEKDAY_NEW if day >= EXPIRY_WEEKDAY_CHANGE else _EXPIRY_WEEKDAY_OLD
    if day.weekday() != rule[exchange]:
        return False
    return not monthly or (day + timedelta(days=7)).month != day.month


def _check_exchange(exchange: str) -> str:
    if exchange not in EXCHANGES:
        raise ValueError(f"unknown exchange {exchange!r}; expected one of {EXCHANGES}")
    return exchange


def _entry_from_row(row: dict[str, str], where: str) -> CalendarEntry:
    try:
        day = date.fromisoformat(row["date"].strip())
    except ValueError:
        raise ConfigError(f"{where}: bad date {row['date']!r}") from None
    exchange = row["exchange"].strip()
    kind = row["kind"].strip()
    if exchange not in EXCHANGES:
        raise ConfigError(f"{where}: exchange {exchange!r} is not one of {EXCHANGES}")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind {kind!r} is not one of {KINDS}")
    return CalendarEntry(day=day, exchange=exchange, name=row["name"].strip(), kind=kind)


@functools.lru_cache(maxsize=4)
def load_calendar(path: str | Path = DEFAULT_HOLIDAYS_CSV) -> TradingCalendar:
    """The calendar in ``path``, read once per path (the file does not change while running)."""
    return TradingCalendar.from_csv(path)


def is_trading_day(
    day: date, exchange: str = "NSE", *, calendar: TradingCalendar | None = None
) -> bool:
    return (calendar or load_calendar()).is_trading_day(day, exchange)


def previous_trading_day(
    day: date, exchange: str = "NSE", *, calendar: TradingCalendar | None = None
) -> date:
    return (calendar or load_calendar()).previous_trading_day(day, exchange)


def next_trading_day(
    day: date, exchange: str = "NSE", *, calendar: TradingCalendar | None = None
) -> date:
    return (calendar or load_calendar()).next_trading_day(day, exchange)


def scheduled_expiry(
    underlying: str,
    day: date,
    *,
    monthly: bool = False,
    calendar: TradingCalendar | None = None,
) -> date:
    return (calendar or load_calendar()).scheduled_expiry(underlying, day, monthly=monthly)
