"""Exits core: each rule, priority, one exit per position, retries, catch-up, daily limits."""

from __future__ import annotations

import random
import re
from datetime import date

import pytest

from services.exits.core import ExitAction, ExitsCore, exit_correlation_id
from shared.clock import NS_PER_S, FakeClock, ist_to_ns
from shared.config import IndexConfig, RiskConfig, TrailingTier
from shared.messages import Clock, PositionClosed, PositionOpened, Tick, make_msg_id

DAY = date(2026, 1, 5)
NEXT_DAY = date(2026, 1, 6)
NIFTY_CE, BANKNIFTY_PE = 40001, 50001
CAPITAL_PAISE = 100_000_00  # ₹1,00,000
INDICES = [
    IndexConfig(key="NIFTY", security_id=13, options_segment="NSE_FNO", exchange="NSE"),
    IndexConfig(key="BANKNIFTY", security_id=25, options_segment="NSE_FNO", exchange="NSE"),
]
# Only the rule under test is on unless a test says otherwise.
QUIET = dict(sl_pct=1.0, tp_pct=10.0, emergency_sl_pct=1.0, daily_loss_limit_pct=1.0)


def at(hhmm: str, seconds: float = 0.0, day: date = DAY) -> int:
    return ist_to_ns(day, hhmm, seconds)


class Harness:
    """An ExitsCore with a fake wall clock and an event-time cursor for hand-built messages."""

    def __init__(self, capital_paise: int = CAPITAL_PAISE, **risk: object) -> None:
        self.wall = FakeClock(1_700_000_000 * NS_PER_S)
        self.risk = RiskConfig(**{**QUIET, **risk})  # type: ignore[arg-type]
        self.core = ExitsCore(self.risk, INDICES, capital_paise, self.wall.now_ns)
        self.t = at("10:00")
        self.seq = 0

    def next_id(self, ts: int) -> str:
        self.seq += 1
        return f"{ts // 1_000_000}-{self.seq}"

    def open(
        self,
        pid: str = "P1",
        entry_paise: int = 100_00,
        qty: int = 65,
        sid: int = NIFTY_CE,
        index: str = "NIFTY",
    ) -> PositionOpened:
        tick_id = self.next_id(self.t)
        msg = PositionOpened(
            msg_id=f"open-{pid}",
            ts_event=self.t,
            ts_init=self.t,
            tick_id=tick_id,
            position_id=pid,
            index=index,
            segment="NSE_FNO",
            security_id=sid,
            symbol=f"{index}-{sid}",
            quantity=qty,
            entry_price_paise=entry_paise,
            entry_tick_id=tick_id,
            ts_entry=self.t,
            lot_size=65,
        )
        self.core.on_position_opened(msg)
        return msg

    def make_tick(self, ltp_paise: int, sid: int = NIFTY_CE, dt_s: float = 1.0) -> Tick:
        self.t += int(dt_s * NS_PER_S)
        return Tick(
            msg_id=f"tick-{self.seq}",
            ts_event=self.t,
            ts_init=self.t,
            tick_id=self.next_id(self.t),
            segment="NSE_FNO",
            security_id=sid,
            ltp_paise=ltp_paise,
        )

    def tick(self, ltp_paise: int, sid: int = NIFTY_CE, dt_s: float = 1.0) -> list[ExitAction]:
        return self.core.on_tick(self.make_tick(ltp_paise, sid, dt_s))

    def clock(self, ts: int) -> list[ExitAction]:
        self.t = ts
        return self.core.on_clock(
            Clock(msg_id=f"clk-{ts}", ts_event=ts, ts_init=ts, tick_id=self.next_id(ts))
        )

    def close(self, pid: str, pnl_paise: int, index: str = "NIFTY") -> None:
        self.t += NS_PER_S
        self.core.on_position_closed(
            PositionClosed(
                msg_id=f"close-{pid}",
                ts_event=self.t,
                ts_init=self.t,
                tick_id=self.next_id(self.t),
                position_id=pid,
                index=index,
                security_id=0,
                quantity=1,
                entry_price_paise=0,
                exit_price_paise=0,
                exit_tick_id="",
                ts_exit=self.t,
                reason="test",
                pnl_paise=pnl_paise,
            )
        )

    def view(self, pid: str = "P1"):
        return next(v for v in self.core.pnl_views() if v.position_id == pid)


def only(actions: list[ExitAction]) -> ExitAction:
    assert len(actions) == 1, actions
    return actions[0]


# --------------------------------------------------------------- the original's defects


def test_pnl_pct_is_one_fraction_unit_in_views_reasons_and_thresholds():
    h = Harness(tp_pct=0.10)
    h.open()
    assert h.tick(109_00) == []
    v = h.view()
    assert v.pnl_pct == pytest.approx(0.09)  # a fraction, never 9.0
    assert v.pnl_paise == 9_00 * 65
    a = only(h.tick(110_00))  # +10 % meets tp_pct 0.10, the same unit
    assert a.rule == "take_profit"
    assert a.reason == "take_profit: pnl +10.00% >= +10.00% at ltp 110.00"


def test_hwm_moves_on_the_same_tick_and_is_never_below_pnl_on_a_random_walk():
    seed = 20260105
    print("seed", seed)
    rng = random.Random(seed)
    h = Harness()
    h.open()
    price = 100_00
    for _ in range(2_000):
        price = max(5, price + rng.choice([-35, -10, -5, 0, 5, 10, 40]))
        h.tick(price)
        v = h.view()
        assert v.ltp_paise == price
        assert v.hwm_pnl_paise >= v.pnl_paise
        assert v.hwm_pnl_pct >= v.pnl_pct
    h2 = Harness()
    h2.open()
    h2.tick(125_00)
    v = h2.view()  # the high is the same tick's, not a stale one from an earlier refresh
    assert (v.hwm_pnl_paise, v.hwm_pnl_pct) == (v.pnl_paise, v.pnl_pct) == (25_00 * 65, 0.25)


def test_trailing_never_fires_on_a_new_high_because_the_drop_is_never_negative():
    h = Harness(trailing_mode="direct", trail_arm_pct=0.0, trail_distance_pct=0.001)
    h.open()
    for ltp in range(100_05, 130_00, 5):  # every tick is a new high
        assert h.tick(ltp) == []
    a = only(h.tick(129_80))  # 0.20 % below the high of 129.95 with distance 0.1 %
    assert a.reason.startswith("trailing: pnl +29.80% is 0.15% below the high +29.95%")


# --------------------------------------------------------------- each rule


def test_stop_loss_exits_with_a_full_sell_intent_at_the_breaching_tick():
    h = Harness(sl_pct=0.15)
    h.open(qty=130)
    assert h.tick(85_05) == []
    tick = h.make_tick(84_80)
    h.wall.advance(123)
    a = only(h.core.on_tick(tick))
    assert a.rule == "stop_loss"
    assert a.reason == "stop_loss: pnl -15.20% <= -15.00% at ltp 84.80"
    i = a.intent
    assert (i.kind, i.side, i.quantity, i.position_id, i.security_id) == (
        "exit",
        "SELL",
        130,
        "P1",
        NIFTY_CE,
    )
    assert (i.tick_id, i.ts_event, i.ref_price_paise) == (tick.tick_id, tick.ts_event, 84_80)
    assert i.ts_init == h.wall.now_ns()
    assert i.msg_id == make_msg_id("exit", "P1")
    assert i.correlation_id == exit_correlation_id("P1", 1)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,30}", i.correlation_id)
    assert i.reason == a.reason


def test_stop_loss_fires_exactly_at_the_threshold():
    h = Harness(sl_pct=0.15)
    h.open()
    assert only(h.tick(85_00)).reason == "stop_loss: pnl -15.00% <= -15.00% at ltp 85.00"


def test_emergency_stop_loss_fires_past_its_own_threshold():
    h = Harness(emergency_sl_pct=0.50)
    h.open()
    assert h.tick(50_05) == []
    a = only(h.tick(48_00))
    assert (a.rule, a.reason) == (
        "emergency_sl",
        "emergency_sl: pnl -52.00% <= -50.00% at ltp 48.00",
    )


def test_emergency_stop_loss_wins_over_stop_loss_in_the_default_order():
    h = Harness(sl_pct=0.15, emergency_sl_pct=0.50)
    h.open()
    assert only(h.tick(40_00)).rule == "emergency_sl"


def test_rule_order_is_configurable():
    h = Harness(
        sl_pct=0.15,
        emergency_sl_pct=0.50,
        rule_order=["stop_loss", "emergency_sl", "take_profit", "time_exit", "daily_loss"],
    )
    h.open()
    assert only(h.tick(40_00)).rule == "stop_loss"


def test_a_rule_left_out_of_the_order_never_fires():
    h = Harness(sl_pct=0.15, rule_order=["take_profit", "time_exit"])
    h.open()
    assert h.tick(50_00) == []


def test_take_profit_exits_at_its_gain():
    h = Harness(tp_pct=0.25)
    h.open()
    assert h.tick(124_95) == []
    assert only(h.tick(125_10)).reason == "take_profit: pnl +25.10% >= +25.00% at ltp 125.10"


def test_take_profit_is_suspended_while_trailing_is_armed_and_trailing_exits_instead():
    h = Harness(
        tp_pct=0.25,
        suspend_tp_while_trailing=True,
        trailing_mode="direct",
        trail_arm_pct=0.10,
        trail_distance_pct=0.05,
    )
    h.open()
    assert h.tick(130_00) == []  # +30 % >= tp, but trailing armed at +10 %
    assert h.tick(126_00) == []  # 4 % below the high
    a = only(h.tick(125_00))
    assert a.rule == "trailing"
    assert "pnl +25.00% is 5.00% below the high +30.00%" in a.reason


def test_take_profit_fires_when_trailing_is_armed_but_suspension_is_off():
    h = Harness(tp_pct=0.25, trailing_mode="direct", trail_arm_pct=0.10)
    h.open()
    assert only(h.tick(130_00)).rule == "take_profit"


def test_breakeven_moves_the_stop_to_entry_after_the_gain():
    h = Harness(sl_pct=0.15, breakeven_after_gain_pct=0.10)
    h.open()
    assert h.tick(112_00) == []
    assert h.tick(100_05) == []
    a = only(h.tick(99_80))
    assert a.rule == "breakeven"
    assert a.reason == (
        "breakeven: pnl -0.20% <= +0.00% after a high of +12.00% (locks from +10.00%) at ltp 99.80"
    )


def test_breakeven_is_not_armed_before_the_gain_is_reached():
    h = Harness(sl_pct=0.15, breakeven_after_gain_pct=0.10)
    h.open()
    assert h.tick(109_95) == []
    assert h.tick(95_00) == []  # below entry, but the gain was never reached


def test_direct_trailing_arms_at_its_gain_and_exits_on_the_drop_from_the_high():
    h = Harness(trailing_mode="direct", trail_arm_pct=0.10, trail_distance_pct=0.05)
    h.open()
    assert h.tick(109_00) == []
    assert h.tick(104_00) == []  # 5 % below a +9 % high: not armed yet
    assert h.tick(120_00) == []
    assert h.tick(115_05) == []
    a = only(h.tick(115_00))
    assert a.reason == (
        "trailing: pnl +15.00% is 5.00% below the high +20.00% (distance 5.00%, armed at"
        " +10.00%) at ltp 115.00"
    )


def test_tiered_trailing_locks_the_highest_tier_reached():
    tiers = [
        TrailingTier(trigger_pct=0.10, lock_pct=0.0),
        TrailingTier(trigger_pct=0.20, lock_pct=0.10),
        TrailingTier(trigger_pct=0.40, lock_pct=0.25),
    ]
    h = Harness(trailing_mode="tiered", trailing_tiers=tiers)
    h.open()
    assert h.tick(109_00) == []
    assert h.tick(99_00) == []  # no tier reached yet
    assert h.tick(123_00) == []  # tier +20 % -> lock +10 %
    assert h.tick(110_05) == []
    a = only(h.tick(110_00))
    assert a.rule == "trailing"
    assert a.reason == (
        "trailing: pnl +10.00% <= lock +10.00% (tier +20.00% reached, high +23.00%) at ltp 110.00"
    )


def test_time_exit_fires_on_the_clock_at_1520_without_a_tick_of_the_instrument():
    h = Harness()
    h.open()
    h.tick(104_00)
    assert h.clock(at("15:19", 59.9)) == []
    clk_ts = at("15:20")
    a = only(h.clock(clk_ts))
    assert a.rule == "time_exit"
    assert a.reason == "time_exit: 15:20:00 IST >= 15:20 at ltp 104.00, pnl +4.00%"
    assert (a.intent.ts_event, a.intent.ref_price_paise) == (clk_ts, 104_00)
    assert a.intent.tick_id == f"{clk_ts // 1_000_000}-{h.seq}"


def test_time_exit_follows_the_configured_time_in_event_time():
    h = Harness(time_exit_hhmm="14:45")
    h.open()
    assert h.clock(at("14:44")) == []
    assert only(h.clock(at("14:45", 0.5))).rule == "time_exit"


def test_a_tick_of_another_instrument_after_1520_also_exits_by_time():
    h = Harness()
    h.open(pid="P1", sid=NIFTY_CE)
    h.open(pid="P2", sid=BANKNIFTY_PE, index="BANKNIFTY")
    h.t = at("15:20")
    actions = h.tick(200_00, sid=BANKNIFTY_PE)
    assert sorted((a.position_id, a.rule) for a in actions) == [
        ("P1", "time_exit"),
        ("P2", "time_exit"),
    ]


# --------------------------------------------------------------- one exit per position


def test_one_exit_per_position_under_repeated_breaching_ticks_and_clocks():
    h = Harness(sl_pct=0.15)
    h.open()
    assert only(h.tick(80_00)).rule == "stop_loss"
    for ltp in (79_00, 70_00, 40_00, 80_00):
        assert h.tick(ltp) == []
    assert h.clock(at("15:25")) == []
    assert h.core.is_exiting("P1")
    assert h.view().ltp_paise == 80_00  # PnL keeps updating while exiting


def test_exiting_survives_snapshot_and_restore():
    h = Harness(sl_pct=0.15)
    h.open()
    only(h.tick(80_00))
    data = h.core.snapshot()
    fresh = ExitsCore(h.risk, INDICES, CAPITAL_PAISE, h.wall.now_ns)
    fresh.restore(data)
    h.core = fresh
    assert h.tick(75_00) == []
    assert h.clock(at("15:21")) == []
    h.core.on_position_opened(  # a redelivered open must not reset the position
        PositionOpened(
            msg_id="open-P1",
            ts_event=h.t,
            ts_init=h.t,
            tick_id="1-1",
            position_id="P1",
            index="NIFTY",
            segment="NSE_FNO",
            security_id=NIFTY_CE,
            symbol="x",
            quantity=65,
            entry_price_paise=100_00,
            entry_tick_id="1-1",
            ts_entry=h.t,
        )
    )
    assert h.core.is_exiting("P1")


def test_high_water_mark_and_trailing_state_survive_a_restart():
    h = Harness(trailing_mode="direct", trail_arm_pct=0.10, trail_distance_pct=0.05)
    h.open()
    h.tick(120_00)
    before = h.core.pnl_views()
    restarted = ExitsCore(h.risk, INDICES, CAPITAL_PAISE, h.wall.now_ns)
    restarted.restore(h.core.snapshot())
    h.core = restarted
    assert h.core.pnl_views() == before
    assert h.tick(116_00) == []
    assert only(h.tick(114_90)).rule == "trailing"  # 5.1 % below the pre-restart high


def test_redelivered_position_opened_does_not_reset_the_high_water_mark():
    h = Harness()
    msg = h.open()
    h.tick(130_00)
    h.tick(120_00)
    h.core.on_position_opened(msg)
    assert h.view().hwm_pnl_paise == 30_00 * 65


# --------------------------------------------------------------- rejection and retry


def test_rejected_exit_is_retried_with_doubling_backoff_in_event_time_and_a_new_correlation_id():
    h = Harness(sl_pct=0.15)
    h.open()
    first = only(h.tick(80_00))
    due = h.core.on_exit_rejected("P1", h.t, first.intent.correlation_id)
    assert due == h.t + 1 * NS_PER_S
    assert h.tick(79_00, dt_s=0.5) == []  # backoff not over
    retry = only(h.tick(78_00, dt_s=0.5))
    assert (retry.rule, retry.attempt) == ("stop_loss", 2)
    assert retry.reason == (
        "stop_loss: pnl -20.00% <= -15.00% at ltp 80.00; retry 2 after a rejection"
        " (backoff 1 s), ltp now 78.00"
    )
    assert (
        retry.intent.correlation_id == exit_correlation_id("P1", 2) != first.intent.correlation_id
    )
    assert retry.intent.msg_id == make_msg_id("exit", "P1", 2) != first.intent.msg_id
    assert retry.intent.quantity == 65 and retry.intent.ref_price_paise == 78_00
    assert h.tick(77_00) == []  # one retry per rejection
    assert h.core.on_exit_rejected("P1", h.t) == h.t + 2 * NS_PER_S
    assert h.tick(77_00, dt_s=1.9) == []
    assert only(h.tick(77_00, dt_s=0.1)).attempt == 3


def test_retry_backoff_is_capped():
    h = Harness(sl_pct=0.15)
    h.open()
    only(h.tick(80_00))
    backoffs = []
    for attempt in range(1, 9):
        due = h.core.on_exit_rejected("P1", h.t)
        assert due is not None
        backoffs.append((due - h.t) // NS_PER_S)
        assert only(h.clock(due)).attempt == attempt + 1
    assert backoffs == [1, 2, 4, 8, 16, 30, 30, 30]


def test_retry_becomes_due_on_a_clock_when_no_tick_arrives():
    h = Harness(sl_pct=0.15)
    h.open()
    only(h.tick(80_00))
    due = h.core.on_exit_rejected("P1", h.t)
    assert due is not None
    assert h.clock(due - 1) == []
    a = only(h.clock(due))
    assert (a.attempt, a.intent.ref_price_paise, a.intent.ts_event) == (2, 80_00, due)


def test_a_rejection_of_an_older_attempt_is_ignored():
    h = Harness(sl_pct=0.15)
    h.open()
    first = only(h.tick(80_00))
    h.core.on_exit_rejected("P1", h.t, first.intent.correlation_id)
    only(h.tick(80_00, dt_s=1.0))
    assert h.core.on_exit_rejected("P1", h.t, first.intent.correlation_id) is None
    assert h.tick(80_00, dt_s=60) == []


def test_a_rejection_for_a_position_not_exiting_is_ignored():
    h = Harness()
    h.open()
    assert h.core.on_exit_rejected("P1", h.t) is None
    assert h.core.on_exit_rejected("nope", h.t) is None


# --------------------------------------------------------------- catch-up


def test_catch_up_checks_every_tick_since_the_fill_and_stops_at_the_first_exit():
    h = Harness(sl_pct=0.15)
    before_fill = h.make_tick(50_00)  # before the position: ignored
    h.open()
    ticks = [
        before_fill,
        h.make_tick(110_00),
        h.make_tick(20_00, sid=BANKNIFTY_PE),  # another instrument: ignored
        h.make_tick(90_00),
        h.make_tick(84_00),  # breaches
        h.make_tick(70_00),  # after the exit: not reached
    ]
    a = only(h.core.catch_up("P1", ticks))
    assert (a.rule, a.intent.tick_id, a.intent.ref_price_paise) == (
        "stop_loss",
        ticks[4].tick_id,
        84_00,
    )
    assert a.intent.ts_event == ticks[4].ts_event
    v = h.view()
    assert (v.ltp_paise, v.hwm_pnl_paise) == (84_00, 10_00 * 65)
    assert h.core.catch_up("P1", ticks) == []
    assert h.core.on_tick(ticks[5]) == []


def test_catch_up_then_the_same_ticks_live_are_not_applied_twice():
    h = Harness(trailing_mode="direct", trail_arm_pct=0.10, trail_distance_pct=0.05)
    h.open()
    ticks = [h.make_tick(120_00), h.make_tick(118_00)]
    assert h.core.catch_up("P1", ticks) == []
    for t in ticks:
        assert h.core.on_tick(t) == []
    assert h.view().ltp_paise == 118_00
    assert only(h.tick(114_00)).rule == "trailing"


def test_ticks_at_or_before_the_fill_tick_are_ignored():
    h = Harness(sl_pct=0.15)
    stale = h.make_tick(50_00)
    h.open()
    assert h.core.on_tick(stale) == []
    assert h.view().ltp_paise == 100_00


# --------------------------------------------------------------- daily limits


def test_daily_loss_limit_moves_to_reducing_and_exits_every_position():
    h = Harness(daily_loss_limit_pct=0.06)  # ₹6,000 of ₹1,00,000
    h.open(pid="P1", qty=200, sid=NIFTY_CE)
    h.open(pid="P2", qty=100, sid=BANKNIFTY_PE, index="BANKNIFTY")
    assert h.tick(75_00) == []  # -₹5,000
    assert h.core.trading_state == "ACTIVE"
    assert h.tick(95_00, sid=BANKNIFTY_PE) == []  # -₹5,500
    breach = h.make_tick(90_00, sid=BANKNIFTY_PE)  # -₹6,000 = 6 %
    actions = h.core.on_tick(breach)
    assert sorted((a.position_id, a.rule) for a in actions) == [
        ("P1", "daily_loss"),
        ("P2", "daily_loss"),
    ]
    assert all(a.intent.tick_id == breach.tick_id for a in actions)
    p1 = next(a for a in actions if a.position_id == "P1")
    assert p1.reason == (
        "daily_loss: day pnl -6000.00 <= -6000.00 (6.00% of 100000.00); at ltp 75.00"
    )
    assert h.core.trading_state == "REDUCING"
    (change,) = h.core.take_state_changes()
    assert (change.scope, change.state, change.rule, change.tick_id) == (
        "global",
        "REDUCING",
        "daily_loss",
        breach.tick_id,
    )
    assert h.core.index_states == {"NIFTY": "REDUCING", "BANKNIFTY": "REDUCING"}
    assert h.tick(100_00) == []  # recovery does not undo the latch


def test_daily_loss_counts_realised_pnl_of_closed_positions():
    h = Harness(daily_loss_limit_pct=0.06)
    h.close("OLD", pnl_paise=-5_000_00)
    assert h.core.trading_state == "ACTIVE"
    h.open(pid="P1", qty=100)
    a = only(h.tick(90_00))  # -₹1,000 unrealised
    assert a.rule == "daily_loss"
    assert h.core.day_pnl_paise == -6_000_00


def test_a_closed_position_is_counted_once_even_if_redelivered():
    h = Harness(daily_loss_limit_pct=0.06)
    for _ in range(3):
        h.close("OLD", pnl_paise=-4_000_00)
    assert h.core.day_pnl_paise == -4_000_00
    assert h.core.trading_state == "ACTIVE"


def test_realised_loss_alone_latches_reducing_and_the_next_clock_exits_open_positions():
    h = Harness(daily_loss_limit_pct=0.06)
    h.open(pid="P1")
    h.close("OLD", pnl_paise=-7_000_00)
    assert h.core.trading_state == "REDUCING"
    assert only(h.clock(h.t + NS_PER_S)).rule == "daily_loss"


def test_per_index_loss_limit_exits_only_that_index():
    h = Harness(daily_loss_limit_pct=0.06, daily_loss_limit_pct_by_index={"NIFTY": 0.02})
    h.open(pid="P1", qty=100, sid=NIFTY_CE)
    h.open(pid="P2", qty=100, sid=BANKNIFTY_PE, index="BANKNIFTY")
    h.tick(90_00, sid=BANKNIFTY_PE)  # BANKNIFTY -₹1,000: under its (global) limit
    assert h.tick(81_00) == []  # NIFTY -₹1,900
    a = only(h.tick(80_00))  # NIFTY -₹2,000 = 2 %
    assert (a.position_id, a.rule) == ("P1", "daily_loss")
    assert a.reason.startswith("daily_loss: NIFTY day pnl -2000.00 <= -2000.00 (2.00% of")
    assert h.core.trading_state == "ACTIVE"
    assert h.core.index_states == {"NIFTY": "REDUCING", "BANKNIFTY": "ACTIVE"}
    assert [(c.scope, c.state) for c in h.core.take_state_changes()] == [("NIFTY", "REDUCING")]
    assert h.tick(85_00, sid=BANKNIFTY_PE) == []


def test_daily_profit_lock_moves_to_reducing_and_exits_all():
    h = Harness(daily_profit_lock_rupees=2_000)
    h.open(pid="P1", qty=100)
    assert h.tick(119_95) == []
    a = only(h.tick(120_00))
    assert (a.rule, a.reason) == (
        "daily_profit_lock",
        "daily_profit_lock: day pnl 2000.00 >= 2000.00; at ltp 120.00",
    )
    assert h.core.trading_state == "REDUCING"


def test_rule_order_decides_between_a_stop_loss_and_the_daily_loss_on_the_same_tick():
    h = Harness(sl_pct=0.15, daily_loss_limit_pct=0.01)
    h.open(qty=100)
    assert only(h.tick(80_00)).rule == "daily_loss"  # daily_loss is first by default
    h2 = Harness(
        sl_pct=0.15,
        daily_loss_limit_pct=0.01,
        rule_order=["stop_loss", "daily_loss", "time_exit"],
    )
    h2.open(qty=100)
    assert only(h2.tick(80_00)).rule == "stop_loss"
    assert h2.core.trading_state == "REDUCING"


def test_daily_state_resets_when_the_ist_trading_day_changes():
    h = Harness(daily_loss_limit_pct=0.06)
    h.close("OLD", pnl_paise=-7_000_00)
    assert h.core.trading_state == "REDUCING"
    h.core.take_state_changes()
    h.clock(at("09:00", day=NEXT_DAY))
    assert h.core.trading_state == "ACTIVE"
    assert h.core.day_pnl_paise == 0
    (change,) = h.core.take_state_changes()
    assert (change.scope, change.state) == ("global", "ACTIVE")
    assert "new trading day 2026-01-06" in change.reason
    h.open(pid="P1", qty=100)
    assert h.tick(95_00) == []  # -₹500 on a fresh day: no limit


def test_daily_state_survives_snapshot_and_restore():
    h = Harness(daily_loss_limit_pct=0.06)
    h.close("OLD", pnl_paise=-5_000_00)
    restarted = ExitsCore(h.risk, INDICES, CAPITAL_PAISE, h.wall.now_ns)
    restarted.restore(h.core.snapshot())
    h.core = restarted
    h.close("OLD", pnl_paise=-5_000_00)  # redelivered after the restart: still counted once
    assert h.core.day_pnl_paise == -5_000_00
    h.open(pid="P1", qty=100)
    assert only(h.tick(90_00)).rule == "daily_loss"


def test_pnl_views_list_every_open_position_until_it_closes():
    h = Harness()
    h.open(pid="P1")
    h.open(pid="P2", sid=BANKNIFTY_PE, index="BANKNIFTY", entry_paise=200_00, qty=30)
    tick = h.make_tick(190_00, sid=BANKNIFTY_PE)
    h.core.on_tick(tick)
    views = {v.position_id: v for v in h.core.pnl_views()}
    assert views["P1"].pnl_paise == 0 and views["P1"].ltp_paise == 100_00
    p2 = views["P2"]
    assert (p2.pnl_paise, p2.pnl_pct, p2.hwm_pnl_paise, p2.hwm_pnl_pct, p2.ts_event) == (
        -10_00 * 30,
        -0.05,
        0,
        0.0,
        tick.ts_event,
    )
    h.close("P2", pnl_paise=-300_00, index="BANKNIFTY")
    assert [v.position_id for v in h.core.pnl_views()] == ["P1"]
    assert h.core.instruments() == [("NSE_FNO", NIFTY_CE)]


def test_price_rules_fire_only_on_a_tick_of_the_positions_own_instrument():
    h = Harness()
    h.open(pid="P1", sid=NIFTY_CE)
    h.open(pid="P2", sid=BANKNIFTY_PE, index="BANKNIFTY")
    h.tick(84_00)  # no stop-loss configured yet
    stricter = RiskConfig(**{**QUIET, "sl_pct": 0.15})  # type: ignore[arg-type]
    restarted = ExitsCore(stricter, INDICES, CAPITAL_PAISE, h.wall.now_ns)
    restarted.restore(h.core.snapshot())
    h.core = restarted
    assert h.tick(200_00, sid=BANKNIFTY_PE) == []  # not P1's price: no stale-price exit
    own = h.make_tick(84_00)
    a = only(h.core.on_tick(own))
    assert (a.position_id, a.rule, a.intent.tick_id) == ("P1", "stop_loss", own.tick_id)
