"""REST LTPs reused by later signals under the tick-age rule (services/entries/ltpcache.py)."""

from __future__ import annotations

from services.entries.ltpcache import RestLtpCache

S = 1_000_000_000
T0 = 1_796_098_379 * S


def test_a_fetched_ltp_serves_later_signals_within_the_tick_age_and_no_longer():
    c = RestLtpCache(max_age_ms=10_000)
    assert c.split([51645, 51647], T0) == ({}, [51645, 51647])
    c.store({51645: 10925, 51647: 7410}, T0)
    assert c.split([51645, 51647, 51648], T0 + 3 * S) == ({51645: 10925, 51647: 7410}, [51648])
    assert c.split([51645], T0 + 10 * S) == ({51645: 10925}, [])
    assert c.split([51645], T0 + 10 * S + 1) == ({}, [51645])


def test_an_ltp_is_never_used_by_a_signal_before_the_one_that_fetched_it():
    c = RestLtpCache(max_age_ms=10_000)
    c.store({51645: 10925}, T0)
    assert c.split([51645], T0 - 1) == ({}, [51645])


def test_a_newer_fetch_replaces_the_held_ltp_and_zero_prices_are_not_held():
    c = RestLtpCache(max_age_ms=10_000)
    c.store({51645: 10925}, T0)
    c.store({51645: 11000, 51647: 0}, T0 + 5 * S)
    assert c.split([51645, 51647], T0 + 12 * S) == ({51645: 11000}, [51647])
