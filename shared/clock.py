"""Time: UTC nanoseconds inside, IST only at the edges.

Decision code never reads the wall clock; it takes time from messages. Shells inject a
``Clock`` so ``ts_init`` can be stamped and tests can use :class:`FakeClock`.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone

IST = timezone(timedelta(hours=5, minutes=30), "IST")
NS_PER_S = 1_000_000_000
NS_PER_MIN = 60 * NS_PER_S
NS_PER_DAY = 86_400 * NS_PER_S
IST_OFFSET_NS = 19_800 * NS_PER_S


class Clock:
    """Wall clock for ``ts_init`` stamps only."""

    def now_ns(self) -> int:
        return time.time_ns()


class FakeClock(Clock):
    def __init__(self, start_ns: int = 0) -> None:
        self.t = start_ns

    def now_ns(self) -> int:
        return self.t

    def advance(self, ns: int) -> None:
        self.t += ns


def ist_datetime(ts_ns: int) -> datetime:
    return datetime.fromtimestamp(ts_ns / NS_PER_S, tz=IST)


def ist_day(ts_ns: int) -> date:
    """The IST calendar date of an instant."""
    return ist_datetime(ts_ns).date()


def ist_minute_of_day(ts_ns: int) -> int:
    """Minutes since IST midnight (09:15 -> 555)."""
    return ((ts_ns + IST_OFFSET_NS) % NS_PER_DAY) // NS_PER_MIN


def hhmm_to_minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def ist_to_ns(day: date, hhmm: str, seconds: float = 0.0) -> int:
    """UTC ns of an IST wall-clock time on ``day``."""
    h, m = (int(x) for x in hhmm.split(":"))
    dt = datetime(day.year, day.month, day.day, h, m, tzinfo=IST) + timedelta(seconds=seconds)
    return int(dt.timestamp()) * NS_PER_S + int(round((dt.timestamp() % 1) * NS_PER_S))


def ist_midnight_ns(ts_ns: int) -> int:
    """UTC ns of the IST midnight that starts the day of ``ts_ns``."""
    return ts_ns - ((ts_ns + IST_OFFSET_NS) % NS_PER_DAY)


def fmt_ist(ts_ns: int, with_date: bool = False) -> str:
    dt = ist_datetime(ts_ns)
    return dt.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")
