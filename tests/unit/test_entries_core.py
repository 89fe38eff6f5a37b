"""EntriesCore end to end with a fake clock: ticks in, signals in, decisions and intents out."""

from __future__ import annotations

import re

import msgspec
import pytest

from services.entries.core import EntriesCore, EntryContext, FeedChange, correlation_id_for
from shared.clock import NS_PER_S, FakeClock
from shared.config import (
    CapitalConfig,
    EntriesConfig,
    IndexConfig,
    OptionChainConfig,
    PaperConfig,
    RiskConfig,
)
from shared.errors import DecodeError
from shared.messages import Signal, make_msg_id
from shared.models import OpenPosition
from tests.unit.test_chain import (
    EXP,
    NIFTY,
    RATE,
    D,
    at,
    find,
    make_instruments,
    option_tick,
    spot_tick,
    tick,
)

INSTRUMENTS = make_instruments()
ATM_CE = find(INSTRUMENTS, EXP, 25000, "CE")
ATM_PE = find(INSTRUMENTS, EXP, 25000, "PE")
T0 = at(D, "10:00")
WALL = 1_900_000_000 * NS_PER_S


def make_core(
    *,
    entries: EntriesConfig | None = None,
    chain: OptionChainConfig | None = None,
    capital: CapitalConfig | None = None,
    indices: list[IndexConfig] | None = None,
    clock: FakeClock | None = None,
) -> EntriesCore:
    return EntriesCore(
        entries or EntriesConfig(),
        chain or OptionChainConfig(window_strikes=2, risk_free_rate=RATE),
        capital or CapitalConfig(),
        PaperConfig(balance_rupees=100_000),
        RiskConfig(sl_pct=0.30),
        indices or [NIFTY],
        INSTRUMENTS,
        (clock or FakeClock(WALL)).now_ns,
    )


def signal(
    ts: int = T0, *, msg_id: str = "sig-a", direction: str = "bullish", multiplier: int = 1
) -> Signal:
    return Signal(
        msg_id=msg_id,
        ts_event=ts,
        ts_init=ts + 5,
        tick_id=f"{ts // 1_000_000}-3",
        index="NIFTY",
        direction=direction,
        timeframe_min=1,
        candle_ts=ts,
        close_paise=2_501_000,
        supertrend_paise=2_490_000,
        adx=24.0,
        confidence=0.7,
        multiplier=multiplier,
        reason="supertrend flip",
    )


def context(**kw) -> EntryContext:
    base = dict(trading_state="ACTIVE", available_capital_paise=10_000_000)
    base.update(kw)
    return EntryContext(**base)


def prime(core: EntriesCore, ts: int = T0, ce_ltp: int = 20_805, pe_ltp: int = 17_480) -> None:
    """Index at 25,010 and fresh ATM call/put ticks one second before ``ts``."""
    core.on_tick(spot_tick(NIFTY, 2_501_000, ts - NS_PER_S))
    core.on_tick(tick(ATM_CE.security_id, ce_ltp, ts - NS_PER_S, oi=900_000))
    core.on_tick(tick(ATM_PE.security_id, pe_ltp, ts - NS_PER_S, oi=900_000))


# --------------------------------------------------------------------------- accepted entry


def test_bullish_signal_buys_one_lot_of_the_atm_call_with_a_complete_intent():
    clock = FakeClock(WALL)
    core = make_core(clock=clock)
    prime(core)
    s = signal()
    decisions, intents = core.on_signal(s, context())
    assert len(intents) == 1 and len(decisions) == 1
    intent = intents[0]
    msg_id = make_msg_id("intent", s.msg_id, ATM_CE.security_id)
    assert intent.msg_id == msg_id
    assert intent.position_id == make_msg_id("pos", msg_id)
    assert intent.correlation_id == correlation_id_for(msg_id)
    assert (intent.kind, intent.side, intent.index, intent.segment) == (
        "entry",
        "BUY",
        "NIFTY",
        "NSE_FNO",
    )
    assert (intent.security_id, intent.symbol) == (ATM_CE.security_id, ATM_CE.symbol)
    assert (intent.quantity, intent.lot_size, intent.ref_price_paise) == (65, 65, 20_805)
    assert (intent.tick_id, intent.ts_event, intent.ts_init) == (s.tick_id, s.ts_event, WALL)
    assert intent.signal_id == s.msg_id
    dec = decisions[0]
    assert dec.accepted and dec.rule == "accepted" and dec.intent_id == msg_id
    assert dec.msg_id == make_msg_id("dec", s.msg_id, "accepted", ATM_CE.security_id)
    assert (dec.signal_id, dec.tick_id, dec.ts_event) == (s.msg_id, s.tick_id, s.ts_event)
    assert "BUY 65 " + ATM_CE.symbol in dec.reason and "208.05" in dec.reason


def test_bearish_signal_buys_the_atm_put():
    core = make_core()
    prime(core)
    _, intents = core.on_signal(signal(direction="bearish"), context())
    assert intents[0].security_id == ATM_PE.security_id and intents[0].ref_price_paise == 17_480


def test_the_same_signal_delivered_twice_produces_one_intent():
    core = make_core()
    prime(core)
    first = core.on_signal(signal(), context())
    second = core.on_signal(signal(), context())
    assert len(first[1]) == 1 and second[1] == []
    assert [d.rule for d in second[0]] == ["duplicate_signal"]
    assert second[0][0].msg_id != first[0][0].msg_id


def test_ids_are_deterministic_across_cores_and_clocks():
    outs = []
    for wall in (WALL, WALL + 123 * NS_PER_S):
        core = make_core(clock=FakeClock(wall))
        prime(core)
        outs.append(core.on_signal(signal(), context()))
    (d1, i1), (d2, i2) = outs
    assert [d.msg_id for d in d1] == [d.msg_id for d in d2]
    assert (i1[0].msg_id, i1[0].position_id, i1[0].correlation_id) == (
        i2[0].msg_id,
        i2[0].position_id,
        i2[0].correlation_id,
    )
    assert i1[0].ts_init != i2[0].ts_init


def test_correlation_ids_fit_dhanhq_length_and_charset_and_differ_per_intent():
    ids = {correlation_id_for(make_msg_id("intent", f"sig-{n}", 40_000 + n)) for n in range(500)}
    assert len(ids) == 500
    assert all(len(c) <= 30 and re.fullmatch(r"[A-Za-z0-9_-]+", c) for c in ids)


# --------------------------------------------------------------------------- refusals


def test_a_signal_level_refusal_is_one_decision_and_the_signal_is_remembered():
    core = make_core()
    prime(core)
    decisions, intents = core.on_signal(signal(), context(trading_state="HALTED"))
    assert intents == [] and [(d.rule, d.accepted) for d in decisions] == [("trading_state", False)]
    assert decisions[0].msg_id == make_msg_id("dec", "sig-a", "trading_state")
    again, _ = core.on_signal(signal(), context())
    assert again[0].rule == "duplicate_signal"


def test_stale_option_tick_uses_the_rest_ltp_from_the_shell():
    core = make_core()
    prime(core, ts=T0 - 60 * NS_PER_S)  # ticks a minute old
    s = signal()
    assert core.rest_ltp_wanted(s) == [ATM_CE.security_id]
    _, intents = core.on_signal(s, context(rest_ltp_paise={ATM_CE.security_id: 21_000}))
    assert intents[0].ref_price_paise == 21_000
    assert "REST LTP" in intents[0].reason


def test_stale_option_tick_without_rest_ltp_is_refused_with_the_tick_age():
    core = make_core()
    prime(core, ts=T0 - 60 * NS_PER_S)
    decisions, intents = core.on_signal(signal(), context())
    assert intents == []
    assert decisions[0].rule == "stale_ltp" and "61000 ms old" in decisions[0].reason
    assert ATM_CE.symbol in decisions[0].reason


def test_fresh_ticks_need_no_rest_ltp():
    core = make_core()
    prime(core)
    assert core.rest_ltp_wanted(signal()) == []


def test_capital_that_cannot_pay_a_lot_is_a_sizing_refusal():
    core = make_core()
    prime(core)
    decisions, intents = core.on_signal(signal(), context(available_capital_paise=1_000_000))
    assert intents == [] and decisions[0].rule == "sizing"
    assert "< one lot 13523.25" in decisions[0].reason


def test_band_sizing_applies_the_signal_scale_multiplier():
    core = make_core(capital=CapitalConfig(sizing="bands"))
    prime(core)
    # 1 lakh, band 1: alloc 25,000 / 13,523.25 -> 1; risk 3,500 / (208.05 x 0.3 x 65) -> 0 -> 1
    _, intents = core.on_signal(signal(multiplier=3), context())
    assert intents[0].quantity == 3 * 65


def test_an_exit_starts_the_index_cooldown_in_event_time():
    core = make_core()
    prime(core)
    core.on_position_closed("pos-1", ATM_CE.symbol, "NIFTY", T0 - 100 * NS_PER_S)
    decisions, intents = core.on_signal(signal(), context())
    assert intents == [] and decisions[0].rule == "index_cooldown"
    prime(core, ts=T0 + 80 * NS_PER_S)
    _, later = core.on_signal(signal(T0 + 80 * NS_PER_S, msg_id="sig-b"), context())
    assert len(later) == 1


def test_trades_per_day_counts_the_cores_own_entries():
    core = make_core(entries=EntriesConfig(max_trades_per_day=1))
    prime(core)
    core.on_signal(signal(), context())
    decisions, intents = core.on_signal(signal(msg_id="sig-b", direction="bearish"), context())
    assert intents == [] and decisions[0].rule == "max_trades_per_day"


def test_pyramiding_values_a_held_position_at_its_latest_tick():
    two = IndexConfig(
        key="NIFTY",
        security_id=13,
        options_segment="NSE_FNO",
        exchange="NSE",
        strike_step_paise=5000,
        max_same_side=2,
    )
    held = OpenPosition(
        position_id="p1",
        index="NIFTY",
        security_id=ATM_CE.security_id,
        option_type="CE",
        quantity=65,
        entry_price_paise=21_000,
        ts_entry=T0 - 600 * NS_PER_S,
    )
    losing = make_core(indices=[two])
    prime(losing, ce_ltp=20_805)  # below the 210.00 entry
    decisions, _ = losing.on_signal(signal(), context(open_positions=[held]))
    assert decisions[0].rule == "pyramid_not_in_profit" and "-126.75" in decisions[0].reason
    winning = make_core(indices=[two])
    prime(winning, ce_ltp=21_500)
    _, intents = winning.on_signal(signal(), context(open_positions=[held]))
    assert len(intents) == 1
    # the shell's PnL figure wins over the tick valuation
    shell = make_core(indices=[two])
    prime(shell, ce_ltp=21_500)
    decisions, _ = shell.on_signal(
        signal(), context(open_positions=[held], position_pnl_paise={"p1": -1})
    )
    assert decisions[0].rule == "pyramid_not_in_profit"


def test_scored_mode_tries_the_next_pick_when_the_best_one_is_stale():
    core = make_core(chain=OptionChainConfig(selection="scored", max_picks=2, risk_free_rate=RATE))
    core.on_tick(spot_tick(NIFTY, 2_501_000, T0 - NS_PER_S))
    best = find(INSTRUMENTS, EXP, 25000, "CE")
    second = find(INSTRUMENTS, EXP, 25100, "CE")
    core.on_tick(option_tick(best, 25010, 0.16, T0 - 30 * NS_PER_S, oi=1_200_000))
    core.on_tick(option_tick(second, 25010, 0.16, T0 - NS_PER_S, oi=2_000_000))
    decisions, intents = core.on_signal(signal(), context())
    assert [(d.rule, d.accepted) for d in decisions] == [("stale_ltp", False), ("accepted", True)]
    assert intents[0].security_id == second.security_id
    assert "score 181.0" in decisions[1].reason


def test_no_listed_strike_passing_the_filters_is_a_no_strike_decision():
    core = make_core(chain=OptionChainConfig(selection="scored", risk_free_rate=RATE))
    core.on_tick(spot_tick(NIFTY, 2_501_000, T0 - NS_PER_S))
    decisions, intents = core.on_signal(signal(), context())
    assert intents == [] and decisions[0].rule == "no_strike"
    assert "no LTP" in decisions[0].reason


def test_without_an_index_tick_the_signal_close_sets_the_atm():
    core = make_core()
    core.on_tick(tick(ATM_CE.security_id, 20_805, T0 - NS_PER_S))
    _, intents = core.on_signal(signal(), context())  # close 25,010 -> ATM 25,000
    assert intents[0].security_id == ATM_CE.security_id


def test_paper_capital_is_the_paper_balance_less_deployed_premium():
    core = make_core()
    held = [
        OpenPosition(
            position_id="p",
            index="NIFTY",
            security_id=1,
            option_type="CE",
            quantity=65,
            entry_price_paise=20_000,
            ts_entry=0,
        )
    ]
    assert core.paper_available_capital(held) == 10_000_000 - 1_300_000


# --------------------------------------------------------------------------- feed control


def _window_ids(lo: int, hi: int) -> list[int]:
    return sorted(
        find(INSTRUMENTS, EXP, k, ot).security_id
        for k in range(lo, hi + 1, 50)
        for ot in ("CE", "PE")
    )


def test_first_index_tick_subscribes_the_strike_window():
    core = make_core()
    change = core.on_tick(spot_tick(NIFTY, 2_501_000, T0))
    assert change == FeedChange(
        index="NIFTY", segment="NSE_FNO", subscribe=_window_ids(24900, 25100), unsubscribe=[]
    )


def test_window_moves_only_when_the_atm_strike_changes():
    core = make_core()
    core.on_tick(spot_tick(NIFTY, 2_501_000, T0))
    assert core.on_tick(spot_tick(NIFTY, 2_502_000, T0 + NS_PER_S)) is None
    assert core.on_tick(tick(ATM_CE.security_id, 20_000, T0 + NS_PER_S)) is None
    change = core.on_tick(spot_tick(NIFTY, 2_503_000, T0 + 2 * NS_PER_S))  # ATM 25,050
    assert change.subscribe == _window_ids(25150, 25150)
    assert change.unsubscribe == _window_ids(24900, 24900)
    assert core.subscriptions() == {"NIFTY": _window_ids(24950, 25150)}


def test_ticks_of_unknown_instruments_are_ignored():
    core = make_core()
    assert core.on_tick(tick(5, 100, T0, segment="IDX_I")) is None
    assert core.subscriptions() == {}


# --------------------------------------------------------------------------- recovery


def test_snapshot_restore_keeps_handled_signals_cooldowns_trades_ticks_and_windows():
    core = make_core(entries=EntriesConfig(max_trades_per_day=2))
    prime(core)
    core.on_signal(signal(), context())
    core.on_position_closed("pos-1", ATM_CE.symbol, "NIFTY", T0 + 10 * NS_PER_S)
    blob = core.snapshot()

    fresh = make_core(entries=EntriesConfig(max_trades_per_day=2))
    fresh.restore(blob)
    assert fresh.on_signal(signal(), context())[0][0].rule == "duplicate_signal"
    cool = fresh.on_signal(signal(T0 + 20 * NS_PER_S, msg_id="sig-b"), context())
    assert cool[0][0].rule == "index_cooldown"
    assert fresh.subscriptions() == core.subscriptions() != {}
    # the restored ticks price an entry after the cooldown (LTP age checked against them)
    later = T0 + 200 * NS_PER_S
    fresh.on_tick(spot_tick(NIFTY, 2_501_000, later))
    _, intents = fresh.on_signal(
        signal(later, msg_id="sig-c"), context(rest_ltp_paise={ATM_CE.security_id: 21_111})
    )
    assert intents[0].ref_price_paise == 21_111  # restored tick is 201 s old -> REST
    third = fresh.on_signal(signal(later, msg_id="sig-d", direction="bearish"), context())
    assert third[0][0].rule == "max_trades_per_day"  # one before the crash, one after


def test_restored_ticks_are_the_ones_from_before_the_snapshot():
    core = make_core()
    prime(core)
    fresh = make_core()
    fresh.restore(core.snapshot())
    _, intents = fresh.on_signal(signal(), context())
    assert intents[0].ref_price_paise == 20_805


def test_restore_rejects_garbage_and_other_versions():
    core = make_core()
    with pytest.raises(DecodeError):
        core.restore(b"\x00not msgpack")
    snap = msgspec.msgpack.decode(make_core().snapshot())
    snap["version"] = 99
    with pytest.raises(DecodeError, match="version 99"):
        core.restore(msgspec.msgpack.encode(snap))


def test_signals_refused_before_the_funds_need_nothing_from_the_broker_and_decide_the_same():
    """A duplicate, a disabled index or a signal outside the entry window is refused by a rule
    checked before the funds: the live shell fetches no funds or LTP for it, and the decision
    without them is the one it would get with them."""
    late = T0 + 10 * 3600 * NS_PER_S  # past the entry window's end
    disabled = [msgspec.structs.replace(NIFTY, enabled=False)]
    cases = {
        "entry_window": (lambda: make_core(), signal(late, msg_id="sig-late")),
        "index_disabled": (lambda: make_core(indices=disabled), signal()),
    }
    for rule, (build, s) in cases.items():
        core, twin = build(), build()
        prime(core)
        prime(twin)
        assert core.refused_before_funds(s), rule
        without, _ = core.on_signal(s, context(available_capital_paise=None))
        with_inputs, _ = twin.on_signal(s, context(rest_ltp_paise={ATM_CE.security_id: 21_000}))
        assert [(d.rule, d.reason) for d in without] == [(d.rule, d.reason) for d in with_inputs]
        assert without[0].rule == rule
    core = make_core()
    prime(core)
    s = signal()
    assert not core.refused_before_funds(s)  # in the window: the shell fetches funds
    core.on_signal(s, context())
    assert core.refused_before_funds(s)  # now a duplicate
