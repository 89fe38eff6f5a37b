"""The available-balance cache of live entries (services/entries/funds.py), on a fake clock."""

from __future__ import annotations

from services.entries.funds import FundsCache


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_balance_is_used_until_it_is_older_than_max_age():
    clk = FakeClock()
    f = FundsCache(5.0, clk)
    assert f.usable() is None and f.due()
    f.store(1_000_000, f.started())
    assert f.usable() == 1_000_000 and not f.due()
    clk.t += 2.5
    assert f.usable() == 1_000_000 and f.due()  # half the age: refresh between signals
    clk.t += 2.5
    assert f.usable() == 1_000_000
    clk.t += 0.001
    assert f.usable() is None


def test_an_entry_intent_makes_the_held_balance_unusable_and_holds_idle_refreshes():
    clk = FakeClock()
    f = FundsCache(5.0, clk)
    f.store(1_000_000, f.started())
    clk.t += 1
    f.intent_sent()
    assert f.usable() is None  # the order may fill: the held balance is too high
    assert not f.due()  # and a balance read before its fill would be too
    clk.t += 4.999
    assert not f.due()
    clk.t += 0.001
    assert f.due()


def test_a_fetch_that_started_before_an_intent_is_not_kept():
    clk = FakeClock()
    f = FundsCache(5.0, clk)
    started = f.started()
    clk.t += 0.2
    f.intent_sent()  # while the call was in flight
    clk.t += 0.3
    f.store(900_000, started)
    assert f.usable() is None
    started = f.started()  # a signal's on-path fetch after the intent (its upstream settled)
    f.store(800_000, started)
    assert f.usable() == 800_000


def test_an_older_fetch_finishing_late_does_not_replace_a_newer_one():
    clk = FakeClock()
    f = FundsCache(5.0, clk)
    early = f.started()
    clk.t += 1
    late = f.started()
    f.store(700_000, late)
    f.store(999_999, early)
    assert f.usable() == 700_000


def test_max_age_zero_turns_the_cache_off():
    clk = FakeClock()
    f = FundsCache(0.0, clk)
    f.store(1_000_000, f.started())
    assert f.usable() is None and not f.due()
