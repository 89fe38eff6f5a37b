"""The simulator's ``R/s`` pace (dhansim/clock.py): a steady number of subscribed ticks per wall
second, with a fake wall clock (no servers, no real waiting on the schedule)."""

from __future__ import annotations

import asyncio

import pytest

from dhansim.clock import (
    SPEED_MAX,
    SessionClock,
    TicksPerSecond,
    pace_due,
    parse_speed,
    speed_label,
)


class FakeWall:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class FakeFeed:
    """Backpressure of a feed subscribed to the even ticks only."""

    def __init__(self, active: bool = True) -> None:
        self.is_active = active

    def active(self) -> bool:
        return self.is_active

    def backlogged(self) -> bool:
        return False

    def saturated(self) -> bool:
        return False

    async def drained(self) -> None:
        return None

    def wanted(self, i: int) -> bool:
        return i % 2 == 0

    def queued(self) -> int:
        return 0


def _paced_clock(n: int, feed: FakeFeed) -> tuple[SessionClock, FakeWall, list[int]]:
    wall = FakeWall()
    clock = SessionClock(list(range(1_000, 1_000 + n)), parse_speed("2000/s"), wall_s=wall)
    clock.backpressure = feed
    released: list[int] = []
    clock.add_listener(released.append)
    return clock, wall, released


async def _step(clock: SessionClock) -> None:
    """One driver step, woken from its wait for the next due tick as soon as it waits."""
    task = asyncio.create_task(clock._run_paced_step())
    await asyncio.sleep(0)  # let the step run up to its wait
    clock.poke()
    await task


def test_pace_due_counts_the_first_tick_at_zero_and_one_more_per_interval():
    assert pace_due(-0.001, 2000) == 0
    assert pace_due(0.0, 2000) == 1
    assert pace_due(0.00049, 2000) == 1
    assert pace_due(0.0005, 2000) == 2  # an exact multiple is due, despite float rounding
    assert pace_due(1.0, 2000) == 2001
    assert pace_due(0.3, 10) == 4


def test_speed_r_per_s_parses_to_a_pace_and_labels_back():
    pace = parse_speed("2000/s")
    assert isinstance(pace, TicksPerSecond) and pace == 2000.0
    assert speed_label(pace) == "2000/s"
    assert parse_speed(pace) is pace
    assert parse_speed("max") == SPEED_MAX and speed_label(parse_speed("15")) == 15.0
    for bad in ("0/s", "-5/s", "inf/s", "nan/s"):
        with pytest.raises(ValueError):
            parse_speed(bad)


def test_pace_releases_subscribed_ticks_at_the_rate_and_unsubscribed_ones_on_the_way():
    async def body() -> None:
        clock, wall, released = _paced_clock(200, FakeFeed())
        await _step(clock)  # the pace starts: the tick due at 0 s
        assert released == [0]
        wall.t += 0.010  # 10 ms at 2000/s: 20 more subscribed ticks due
        clock.sync()  # what a REST request does first
        paced = [i for i in released if i % 2 == 0]
        assert len(paced) == 21
        assert released == list(range(41))  # the odd ones in between, never past the last due
        assert clock.now_ns() == 1_040  # simulated time: the last released tick's

    asyncio.run(body())


def test_pace_stands_still_without_a_subscriber_and_restarts_with_one():
    async def body() -> None:
        feed = FakeFeed(active=False)
        clock, wall, released = _paced_clock(200, feed)
        await _step(clock)
        wall.t += 1.0
        clock.sync()
        assert released == []  # nothing is due before the pace starts
        feed.is_active = True
        await _step(clock)
        assert released == [0]  # it started now, not a second ago
        wall.t += 0.001
        clock.sync()
        assert [i for i in released if i % 2 == 0] == [0, 2, 4]

    asyncio.run(body())


def test_a_speed_change_restarts_the_pace_from_the_current_tick():
    async def body() -> None:
        clock, wall, released = _paced_clock(200, FakeFeed())
        await _step(clock)
        wall.t += 0.002
        clock.sync()
        assert len([i for i in released if i % 2 == 0]) == 5
        clock.set_speed(parse_speed("1000/s"))
        wall.t += 5.0
        clock.sync()  # not due: the new pace starts at the driver's next step
        assert len(released) == 9
        await _step(clock)
        wall.t += 0.003  # 1000/s: 3 more after the one at the start
        clock.sync()
        assert [i for i in released if i % 2 == 0][-4:] == [10, 12, 14, 16]

    asyncio.run(body())


def test_a_pace_that_fell_behind_starts_again_instead_of_bursting():
    async def body() -> None:
        clock, wall, released = _paced_clock(20_000, FakeFeed())
        await _step(clock)
        wall.t += 1.0  # the simulator stalled a whole second: 2000 subscribed ticks overdue
        clock.sync()
        assert [i for i in released if i % 2 == 0] == [0, 2]  # one more, not 2000
        wall.t += 0.001
        clock.sync()
        assert [i for i in released if i % 2 == 0] == [0, 2, 4, 6]

    asyncio.run(body())
