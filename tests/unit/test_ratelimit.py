"""Client-side DhanHQ rate limits: every documented window, on a fake clock with a fake sleep."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest

from shared.clock import NS_PER_DAY, FakeClock, ist_midnight_ns, ist_to_ns
from shared.dhan.ratelimit import (
    DATA,
    DHAN_LIMITS,
    NON_TRADING,
    OPTION_CHAIN,
    ORDER,
    QUOTE,
    DhanLimits,
    Limiter,
    Window,
)
from shared.types import NS_PER_S

START_NS = ist_to_ns(date(2026, 3, 2), "09:15")


class FakeTime:
    """A FakeClock whose sleep advances it instantly and records every requested delay."""

    def __init__(self, start_ns: int = START_NS) -> None:
        self.clock = FakeClock(start_ns)
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(round(seconds * NS_PER_S))
        await asyncio.sleep(0)

    def elapsed_s(self) -> float:
        return (self.clock.now_ns() - START_NS) / NS_PER_S


def limits(t: FakeTime) -> DhanLimits:
    return DhanLimits(clock=t.clock, sleep=t.sleep)


async def acquire_n(t: FakeTime, limiter: Limiter, n: int) -> list[float]:
    """Acquire ``n`` tokens one after another; the fake-clock offset (s) at which each was taken."""
    taken = []
    for _ in range(n):
        await limiter.acquire()
        taken.append(t.elapsed_s())
    return taken


def test_documented_limits_table() -> None:
    assert DHAN_LIMITS[ORDER] == (
        Window(10, 1),
        Window(250, 60),
        Window(1000, 3600),
        Window(7000, 86_400, daily=True),
    )
    assert DHAN_LIMITS[QUOTE] == (Window(1, 1),)
    assert DHAN_LIMITS[DATA] == (Window(5, 1), Window(100_000, 86_400, daily=True))
    assert DHAN_LIMITS[NON_TRADING] == (Window(20, 1),)
    assert DHAN_LIMITS[OPTION_CHAIN] == (Window(1, 3),)


def test_eleventh_order_in_one_second_waits_until_the_next_second() -> None:
    t = FakeTime()
    taken = asyncio.run(acquire_n(t, limits(t)[ORDER], 11))
    assert taken[:10] == [0.0] * 10
    assert taken[10] == 1.0
    assert t.sleeps == [1.0]


def test_251st_order_in_a_minute_waits_until_the_first_is_a_minute_old() -> None:
    t = FakeTime()
    taken = asyncio.run(acquire_n(t, limits(t)[ORDER], 251))
    assert taken[249] == 24.0  # 10 per second: the 250th goes out in second 24
    assert taken[250] == 60.0


def test_1001st_order_in_an_hour_waits_until_the_first_is_an_hour_old() -> None:
    t = FakeTime()
    taken = asyncio.run(acquire_n(t, limits(t)[ORDER], 1001))
    assert taken[999] < 3600.0
    assert taken[1000] == 3600.0


def test_7001st_order_of_the_day_waits_for_ist_midnight() -> None:
    t = FakeTime()
    limiter = limits(t)[ORDER]
    taken = asyncio.run(acquire_n(t, limiter, 7001))
    assert taken[6999] < 86_400
    next_midnight = ist_midnight_ns(START_NS) + NS_PER_DAY
    assert t.clock.now_ns() == next_midnight


def test_daily_window_counts_per_ist_day_not_a_rolling_24h() -> None:
    t = FakeTime(ist_to_ns(date(2026, 3, 2), "23:59"))
    limiter = Limiter("x", (Window.per_day(2),), clock=t.clock, sleep=t.sleep)
    assert limiter.try_acquire() and limiter.try_acquire()
    assert not limiter.try_acquire()
    assert limiter.delay_s() == 60.0
    t.clock.advance(60 * NS_PER_S)
    assert limiter.try_acquire()


def test_second_quote_request_in_a_second_waits_one_second() -> None:
    t = FakeTime()
    taken = asyncio.run(acquire_n(t, limits(t)[QUOTE], 3))
    assert taken == [0.0, 1.0, 2.0]


def test_sixth_data_request_in_a_second_waits_until_the_next_second() -> None:
    t = FakeTime()
    taken = asyncio.run(acquire_n(t, limits(t)[DATA], 6))
    assert taken == [0.0] * 5 + [1.0]


def test_data_requests_stop_at_100000_per_day() -> None:
    t = FakeTime(ist_midnight_ns(START_NS))
    limiter = limits(t)[DATA]
    for _ in range(100_000):
        assert limiter.try_acquire()
        t.clock.advance(NS_PER_S // 5)
    assert not limiter.try_acquire()
    assert t.clock.now_ns() < ist_midnight_ns(START_NS) + NS_PER_DAY
    t.clock.t = ist_midnight_ns(START_NS) + NS_PER_DAY
    assert limiter.try_acquire()


def test_21st_non_trading_request_in_a_second_waits() -> None:
    t = FakeTime()
    taken = asyncio.run(acquire_n(t, limits(t)[NON_TRADING], 21))
    assert taken == [0.0] * 20 + [1.0]


def test_option_chain_allows_one_request_per_three_seconds() -> None:
    t = FakeTime()
    taken = asyncio.run(acquire_n(t, limits(t)[OPTION_CHAIN], 3))
    assert taken == [0.0, 3.0, 6.0]


def test_acquire_waits_until_every_window_allows() -> None:
    t = FakeTime()
    limiter = Limiter("x", (Window(2, 1), Window(3, 10)), clock=t.clock, sleep=t.sleep)
    taken = asyncio.run(acquire_n(t, limiter, 5))
    # two in second 0; the third waits for the per-second window; the fourth for the 10 s one
    assert taken == [0.0, 0.0, 1.0, 10.0, 10.0]


def test_partial_wait_counts_from_the_oldest_token() -> None:
    t = FakeTime()
    limiter = Limiter("x", (Window(2, 1),), clock=t.clock, sleep=t.sleep)
    assert limiter.try_acquire()
    t.clock.advance(400_000_000)
    assert limiter.try_acquire()
    assert limiter.delay_s() == pytest.approx(0.6)
    waited = asyncio.run(limiter.acquire())
    assert waited == pytest.approx(0.6)
    assert t.clock.now_ns() == START_NS + NS_PER_S


def test_try_acquire_refuses_without_taking_a_token() -> None:
    t = FakeTime()
    limiter = Limiter("x", (Window(1, 1), Window(5, 60)), clock=t.clock, sleep=t.sleep)
    assert limiter.try_acquire()
    for _ in range(3):
        assert not limiter.try_acquire()
    t.clock.advance(NS_PER_S)
    # the refused attempts took nothing from the 5-per-minute window
    for _ in range(4):
        assert limiter.try_acquire()
        t.clock.advance(NS_PER_S)
    assert not limiter.try_acquire()


def test_concurrent_acquirers_never_exceed_the_limit() -> None:
    t = FakeTime()
    limiter = limits(t)[ORDER]

    async def one() -> float:
        await limiter.acquire()
        return (t.clock.now_ns() - START_NS) / NS_PER_S

    async def main() -> list[float]:
        return list(await asyncio.gather(*(one() for _ in range(25))))

    taken = asyncio.run(main())
    assert sorted(taken) == [0.0] * 10 + [1.0] * 10 + [2.0] * 5


def test_dhan_limits_acquire_draws_on_every_named_bucket() -> None:
    t = FakeTime()
    lim = limits(t)

    async def main() -> float:
        await lim.acquire(OPTION_CHAIN, DATA)
        return await lim.acquire(OPTION_CHAIN, DATA)

    waited = asyncio.run(main())
    assert waited == 3.0
    assert lim[DATA].delay_s() == 0.0
    assert not lim[OPTION_CHAIN].try_acquire()


def test_window_must_be_positive() -> None:
    t = FakeTime()
    with pytest.raises(ValueError, match="limit >= 1"):
        Limiter("x", (Window(0, 1),), clock=t.clock, sleep=t.sleep)
