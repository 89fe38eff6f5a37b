"""Entry guard: every rule, its boundary, and the numbers in its refusal."""

from __future__ import annotations

from datetime import date

import pytest

from services.entries.guard import EntryContext, EntryGuard, GuardState, Refusal
from shared.clock import NS_PER_S, ist_to_ns
from shared.config import CapitalConfig, EntriesConfig, IndexConfig, RiskConfig
from shared.messages import Signal, Tick
from shared.models import OpenPosition

D = date(2026, 3, 5)
NIFTY = IndexConfig(key="NIFTY", security_id=13, options_segment="NSE_FNO", exchange="NSE")
NIFTY2 = IndexConfig(
    key="NIFTY", security_id=13, options_segment="NSE_FNO", exchange="NSE", max_same_side=2
)
SENSEX = IndexConfig(key="SENSEX", security_id=51, options_segment="BSE_FNO", exchange="BSE")
CAPITAL = 10_000_000  # 1 lakh rupees in paise


def at(hhmm: str, seconds: float = 0.0, day: date = D) -> int:
    return ist_to_ns(day, hhmm, seconds)


def sig(
    ts: int, *, direction: str = "bullish", index: str = "NIFTY", msg_id: str = "sig-1"
) -> Signal:
    return Signal(
        msg_id=msg_id,
        ts_event=ts,
        ts_init=ts,
        tick_id="1-0",
        index=index,
        direction=direction,
        timeframe_min=1,
        candle_ts=ts,
        close_paise=2_500_000,
        supertrend_paise=2_490_000,
        adx=25.0,
        confidence=0.8,
        multiplier=1,
        reason="test",
    )


def ctx(**kw) -> EntryContext:
    base = dict(trading_state="ACTIVE", available_capital_paise=CAPITAL)
    base.update(kw)
    return EntryContext(**base)


def pos(pid: str, *, ts_entry: int, option_type: str = "CE", index: str = "NIFTY") -> OpenPosition:
    return OpenPosition(
        position_id=pid,
        index=index,
        security_id=1000,
        option_type=option_type,
        quantity=65,
        entry_price_paise=10_000,
        ts_entry=ts_entry,
    )


def guard(
    entries: EntriesConfig | None = None,
    risk: RiskConfig | None = None,
    capital: CapitalConfig | None = None,
) -> EntryGuard:
    return EntryGuard(entries or EntriesConfig(), risk or RiskConfig(), capital or CapitalConfig())


def check(
    g: EntryGuard,
    s: Signal,
    c: EntryContext,
    index: IndexConfig | None = NIFTY,
    pnl: int | None = 100,
) -> Refusal | None:
    return g.check_signal(s, c, index, lambda p: pnl)


def test_a_signal_inside_every_limit_passes():
    assert check(guard(), sig(at("10:00")), ctx()) is None


# --------------------------------------------------------------------------- identity and state


def test_a_signal_already_handled_is_refused_as_duplicate():
    g = guard()
    g.remember_signal("sig-1", at("10:00"))
    r = check(g, sig(at("10:00")), ctx())
    assert r.rule == "duplicate_signal" and "sig-1" in r.reason
    assert check(g, sig(at("10:00"), msg_id="sig-2"), ctx()) is None


def test_signal_memory_forgets_ids_older_than_three_days():
    g = guard()
    g.remember_signal("old", at("10:00", day=date(2026, 3, 1)))
    g.remember_signal("new", at("10:00", day=date(2026, 3, 5)))
    assert not g.seen("old") and g.seen("new")


def test_an_unknown_or_disabled_index_is_refused():
    assert check(guard(), sig(at("10:00")), ctx(), index=None).rule == "index_disabled"
    off = IndexConfig(
        key="NIFTY", security_id=13, options_segment="NSE_FNO", exchange="NSE", enabled=False
    )
    assert check(guard(), sig(at("10:00")), ctx(), index=off).rule == "index_disabled"


@pytest.mark.parametrize("state", ["REDUCING", "HALTED"])
def test_only_active_trading_state_allows_entries(state):
    r = check(guard(), sig(at("10:00")), ctx(trading_state=state))
    assert r.rule == "trading_state" and state in r.reason


# --------------------------------------------------------------------------- entry window


@pytest.mark.parametrize(
    ("hhmm", "seconds", "allowed"),
    [
        ("09:19", 59.0, False),
        ("09:20", 0.0, True),
        ("14:59", 59.0, True),
        ("15:00", 0.0, False),
        ("15:25", 0.0, False),
    ],
)
def test_entry_window_is_start_inclusive_end_exclusive_in_ist_event_time(hhmm, seconds, allowed):
    r = check(guard(), sig(at(hhmm, seconds)), ctx())
    assert (r is None) == allowed
    if not allowed:
        assert r.rule == "entry_window" and "09:20-15:00" in r.reason


def test_no_entry_when_funds_are_unknown():
    r = check(guard(), sig(at("10:00")), ctx(available_capital_paise=None))
    assert r.rule == "funds_unknown"


# --------------------------------------------------------------------------- daily limits


def test_trades_per_day_limit_counts_entries_of_the_ist_day():
    g = guard(EntriesConfig(max_trades_per_day=2))
    g.record_entry(at("09:30"))
    assert check(g, sig(at("10:00")), ctx()) is None
    g.record_entry(at("09:45"))
    r = check(g, sig(at("10:00")), ctx())
    assert r.rule == "max_trades_per_day" and "2 entries today >= max_trades_per_day 2" in r.reason
    assert check(g, sig(at("10:00", day=date(2026, 3, 6))), ctx()) is None  # a new day


def test_daily_loss_limit_refuses_at_the_configured_fraction_of_capital():
    g = guard(risk=RiskConfig(daily_loss_limit_pct=0.06))
    assert check(g, sig(at("10:00")), ctx(realised_pnl_today_paise=-599_999)) is None
    r = check(g, sig(at("10:00")), ctx(realised_pnl_today_paise=-600_000))
    assert r.rule == "daily_loss_limit"
    assert "realised loss 6000.00" in r.reason and "limit 6000.00 of 100000.00" in r.reason


def test_daily_loss_limit_uses_the_day_start_capital_when_given():
    g = guard(risk=RiskConfig(daily_loss_limit_pct=0.06))
    c = ctx(realised_pnl_today_paise=-600_000, day_start_capital_paise=20_000_000)
    assert check(g, sig(at("10:00")), c) is None  # 6,000 < 6 % of 2 lakh


def test_daily_loss_limit_takes_the_stricter_capital_band_under_band_sizing():
    g = guard(risk=RiskConfig(daily_loss_limit_pct=0.06), capital=CapitalConfig(sizing="bands"))
    c = ctx(available_capital_paise=6_000_000, realised_pnl_today_paise=-300_000)
    r = check(g, sig(at("10:00")), c)  # band 0 (<= 75k): 5 % of 60,000 = 3,000
    assert r.rule == "daily_loss_limit" and "band 0 0.05" in r.reason


def test_daily_loss_limit_per_index_uses_that_index_realised_pnl():
    g = guard(
        risk=RiskConfig(daily_loss_limit_pct=0.06, daily_loss_limit_pct_by_index={"NIFTY": 0.02})
    )
    c = ctx(realised_pnl_today_paise=-200_000, realised_pnl_by_index_paise={"NIFTY": -200_000})
    r = check(g, sig(at("10:00")), c)
    assert r.rule == "daily_loss_limit" and "on NIFTY" in r.reason
    other = ctx(realised_pnl_today_paise=-200_000, realised_pnl_by_index_paise={"NIFTY": -199_999})
    assert check(g, sig(at("10:00")), other) is None


def test_a_profitable_day_or_zero_capital_is_never_a_daily_loss():
    g = guard()
    assert check(g, sig(at("10:00")), ctx(realised_pnl_today_paise=500_000)) is None
    assert check(g, sig(at("10:00")), ctx(available_capital_paise=0)) is None


# --------------------------------------------------------------------------- exposure


def test_max_concurrent_positions_counts_every_open_position():
    g = guard(EntriesConfig(max_concurrent_positions=2))
    held = [
        pos("a", ts_entry=at("09:30"), index="SENSEX"),
        pos("b", ts_entry=at("09:30"), option_type="PE"),
    ]
    r = check(g, sig(at("10:00")), ctx(open_positions=held))
    assert r.rule == "max_concurrent_positions" and "2 open positions" in r.reason


def test_max_same_side_is_per_index_and_option_side():
    g = guard()
    held = [pos("a", ts_entry=at("09:30"))]  # NIFTY CE
    r = check(g, sig(at("10:00")), ctx(open_positions=held))
    assert r.rule == "max_same_side" and "1 open NIFTY CE" in r.reason
    assert check(g, sig(at("10:00"), direction="bearish"), ctx(open_positions=held)) is None
    sensex = sig(at("10:00"), index="SENSEX")
    assert check(g, sensex, ctx(open_positions=held), index=SENSEX) is None


def test_pyramiding_needs_the_first_position_at_least_min_age_old_by_entry_time():
    g = guard(EntriesConfig(pyramid_min_age_s=300))
    now = at("10:00")
    young = [pos("a", ts_entry=now - 299 * NS_PER_S)]
    r = check(g, sig(now), ctx(open_positions=young), index=NIFTY2)
    assert r.rule == "pyramid_too_young" and "entered 299s ago < pyramid_min_age_s 300" in r.reason
    old = [pos("a", ts_entry=now - 300 * NS_PER_S)]
    assert check(g, sig(now), ctx(open_positions=old), index=NIFTY2) is None


def test_pyramiding_needs_the_first_position_in_profit():
    g = guard()
    old = [pos("a", ts_entry=at("09:30"))]
    r = check(g, sig(at("10:00")), ctx(open_positions=old), index=NIFTY2, pnl=0)
    assert r.rule == "pyramid_not_in_profit" and "PnL 0.00" in r.reason
    r = check(g, sig(at("10:00")), ctx(open_positions=old), index=NIFTY2, pnl=-1)
    assert r.rule == "pyramid_not_in_profit"
    r = check(g, sig(at("10:00")), ctx(open_positions=old), index=NIFTY2, pnl=None)
    assert r.rule == "pyramid_pnl_unknown"
    assert check(g, sig(at("10:00")), ctx(open_positions=old), index=NIFTY2, pnl=1) is None


# --------------------------------------------------------------------------- cooldowns


def test_index_cooldown_blocks_the_index_for_cooldown_s_after_an_exit_in_event_time():
    g = guard()
    g.record_exit("NIFTY-X-CE", "NIFTY", at("10:00"))
    r = check(g, sig(at("10:02", 59)), ctx())
    assert (
        r.rule == "index_cooldown" and "exited 179s before the signal < cooldown 180s" in r.reason
    )
    assert check(g, sig(at("10:03")), ctx()) is None
    assert check(g, sig(at("10:01"), index="SENSEX"), ctx(), index=SENSEX) is None


def test_symbol_cooldown_blocks_the_exited_contract_only():
    g = guard()
    g.record_exit("NIFTY-X-CE", "NIFTY", at("10:00"))
    r = g.check_symbol_cooldown("NIFTY-X-CE", NIFTY, at("10:01"))
    assert r.rule == "symbol_cooldown" and "NIFTY-X-CE exited 60s" in r.reason
    assert g.check_symbol_cooldown("NIFTY-Y-CE", NIFTY, at("10:01")) is None
    assert g.check_symbol_cooldown("NIFTY-X-CE", NIFTY, at("10:03")) is None


def test_an_exit_stamped_after_the_signal_is_inside_a_cooldown_and_never_blocks_without_one():
    g = guard()
    g.record_exit("NIFTY-X-CE", "NIFTY", at("10:01", 18))  # the fill's clock ran ahead of the tick's
    r = g.check_symbol_cooldown("NIFTY-X-CE", NIFTY, at("10:00"))
    assert r.rule == "symbol_cooldown" and "exited 0s before the signal < cooldown 180s" in r.reason
    no_cooldown = IndexConfig(key="NIFTY", security_id=13, options_segment="NSE_FNO", exchange="NSE",
                              cooldown_s=0)
    assert g.check_symbol_cooldown("NIFTY-X-CE", no_cooldown, at("10:00")) is None
    assert check(g, sig(at("10:00")), ctx(), index=no_cooldown) is None


def test_cooldown_runs_from_the_latest_exit():
    g = guard()
    g.record_exit("S", "NIFTY", at("10:05"))
    g.record_exit("S", "NIFTY", at("10:00"))  # an older exit learned late
    assert g.state.symbol_exits["S"] == at("10:05")
    assert g.check_symbol_cooldown("S", NIFTY, at("10:07")).rule == "symbol_cooldown"


# --------------------------------------------------------------------------- LTP


def _tick(ltp: int, ts: int) -> Tick:
    return Tick(
        msg_id="t",
        ts_event=ts,
        ts_init=ts,
        tick_id="5-0",
        segment="NSE_FNO",
        security_id=1000,
        ltp_paise=ltp,
    )


def test_ltp_comes_from_a_tick_no_older_than_ltp_max_age_ms():
    g = guard(EntriesConfig(ltp_max_age_ms=10_000))
    now = at("10:00")
    price, source = g.resolve_ltp(now, _tick(12_345, now - 10_000 * 1_000_000), 99_999)
    assert price == 12_345 and "10000 ms old" in source


def test_a_stale_tick_falls_back_to_the_rest_ltp():
    g = guard(EntriesConfig(ltp_max_age_ms=10_000))
    now = at("10:00")
    price, source = g.resolve_ltp(now, _tick(12_345, now - 10_001 * 1_000_000), 12_500)
    assert price == 12_500 and source.startswith("REST LTP (tick 10001 ms old")


def test_a_stale_tick_without_rest_ltp_is_refused():
    g = guard(EntriesConfig(ltp_max_age_ms=10_000))
    now = at("10:00")
    r = g.resolve_ltp(now, _tick(12_345, now - 60 * NS_PER_S), None)
    assert r.rule == "stale_ltp" and "tick 60000 ms old > ltp_max_age_ms 10000" in r.reason


def test_no_tick_or_a_zero_ltp_counts_as_no_price():
    g = guard()
    now = at("10:00")
    assert g.resolve_ltp(now, None, None).reason == "no tick and no REST LTP"
    assert g.resolve_ltp(now, _tick(0, now), 0).rule == "stale_ltp"
    assert g.resolve_ltp(now, None, 15_000)[0] == 15_000


def test_guard_state_round_trips_through_its_struct():
    g = guard()
    g.remember_signal("s", at("10:00"))
    g.record_exit("S", "NIFTY", at("10:00"))
    g.record_entry(at("10:00"))
    again = EntryGuard(
        EntriesConfig(),
        RiskConfig(),
        CapitalConfig(),
        state=GuardState(
            signals=dict(g.state.signals),
            symbol_exits=dict(g.state.symbol_exits),
            index_exits=dict(g.state.index_exits),
            trades_day=g.state.trades_day,
            trades_today=g.state.trades_today,
        ),
    )
    assert again.seen("s") and again.trades_on(at("11:00")) == 1
