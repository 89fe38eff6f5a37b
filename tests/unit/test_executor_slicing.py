"""Freeze-limit slicing and fill arithmetic of the executor (pure)."""

from __future__ import annotations

import random
from datetime import date

import pytest

from services.entries.core import correlation_id_for
from services.executor.fills import close_numbers, next_increment, weighted_avg_paise
from services.executor.slicing import (
    CORRELATION_ID_RE,
    MAX_CORRELATION_ID_CHARS,
    SliceError,
    effective_freeze_qty,
    max_slice_qty,
    plan_slices,
    slice_quantities,
)
from services.exits.core import exit_correlation_id
from shared.charges import charges_for_round_trip
from shared.clock import ist_to_ns

DEFAULTS = {"NIFTY": 1800, "BANKNIFTY": 600, "FINNIFTY": 1200, "SENSEX": 1000}
ENTRY_CID = correlation_id_for("intent-msg-1")


def test_quantity_within_the_freeze_limit_is_one_order_under_the_intent_id() -> None:
    assert plan_slices(ENTRY_CID, 1755, 65, 1800) == plan_slices(ENTRY_CID, 1755, 65, 1800)
    (only,) = plan_slices(ENTRY_CID, 1755, 65, 1800)
    assert (only.correlation_id, only.slice_no, only.quantity) == (ENTRY_CID, 0, 1755)
    (unknown,) = plan_slices(ENTRY_CID, 65 * 100, 65, 0)  # no freeze quantity: never sliced
    assert unknown.quantity == 6500 and unknown.slice_no == 0


def test_nifty_28_lots_are_one_order_of_27_lots_and_one_of_1_lot() -> None:
    # reference §3.4: NIFTY freeze 1800, lot 65 -> at most 1755 units per order
    assert max_slice_qty(65, 1800) == 1755
    slices = plan_slices(ENTRY_CID, 28 * 65, 65, 1800)
    assert [(s.correlation_id, s.slice_no, s.quantity) for s in slices] == [
        (f"{ENTRY_CID}-1", 1, 1755),
        (f"{ENTRY_CID}-2", 2, 65),
    ]


def test_a_freeze_quantity_that_is_a_lot_multiple_is_itself_the_largest_slice() -> None:
    assert slice_quantities(30 * 50, 30, 600) == [600, 600, 300]  # BANKNIFTY 600 / lot 30
    assert slice_quantities(20 * 120, 20, 1000) == [1000, 1000, 400]  # SENSEX 1000 / lot 20


def test_slices_are_whole_lots_not_above_the_limit_sum_to_the_quantity_with_unique_short_ids() -> (
    None
):
    seed = 20261125
    print(f"seed {seed}")
    rng = random.Random(seed)
    for _ in range(2000):
        lot = rng.choice([15, 20, 25, 30, 60, 65, 75, 120])
        freeze = rng.randrange(lot, 40 * lot)
        qty = lot * rng.randrange(1, 200)
        parent = rng.choice(
            [
                correlation_id_for(f"m{rng.random()}"),
                exit_correlation_id(f"P{rng.random()}", 3),
                "F-" + "a" * 20,
            ]
        )
        try:
            slices = plan_slices(parent, qty, lot, freeze)
        except SliceError as exc:  # only when the ids would not fit in 30 characters
            assert "30-character" in str(exc)
            continue
        assert sum(s.quantity for s in slices) == qty
        assert all(s.quantity % lot == 0 and 0 < s.quantity <= freeze for s in slices), (
            qty,
            lot,
            freeze,
        )
        ids = [s.correlation_id for s in slices]
        assert len(set(ids)) == len(ids)
        assert all(
            len(i) <= MAX_CORRELATION_ID_CHARS and CORRELATION_ID_RE.fullmatch(i) for i in ids
        )
        if len(slices) > 1:
            assert ids == [f"{parent}-{n}" for n in range(1, len(slices) + 1)]
            assert [s.quantity for s in slices[:-1]] == [max_slice_qty(lot, freeze)] * (
                len(slices) - 1
            )
        assert plan_slices(parent, qty, lot, freeze) == slices  # deterministic


def test_entry_ids_leave_room_for_999_slices_and_no_more() -> None:
    assert len(ENTRY_CID) == 26
    ok = plan_slices(ENTRY_CID, 999 * 65, 65, 65)
    assert len(ok) == 999 and len(ok[-1].correlation_id) == 30
    with pytest.raises(SliceError, match="exceeds DhanHQ's 30-character"):
        plan_slices(ENTRY_CID, 1000 * 65, 65, 65)


def test_a_freeze_quantity_below_one_lot_cannot_be_sliced() -> None:
    with pytest.raises(SliceError, match="below one lot"):
        plan_slices(ENTRY_CID, 130, 65, 60)


def test_freeze_quantity_comes_from_the_instrument_else_the_index_default() -> None:
    assert effective_freeze_qty(1756, "NIFTY", DEFAULTS) == 1756
    assert effective_freeze_qty(0, "BANKNIFTY", DEFAULTS) == 600
    assert effective_freeze_qty(0, "MIDCPNIFTY", DEFAULTS) == 0  # not listed: no slicing


# --------------------------------------------------------------------------- fills


def test_a_whole_fill_keeps_the_orders_own_fill_id_and_average_price() -> None:
    inc = next_increment("E-X", 130, [], 130, 10_250, 10_250)
    assert inc is not None and inc.whole
    assert (inc.fill_id, inc.quantity, inc.price_paise, inc.filled_qty) == (
        "F-E-X",
        130,
        10_250,
        130,
    )
    assert (
        next_increment("E-X", 130, [(130, 10_250)], 130, 10_250, 10_250) is None
    )  # repeated report


def test_partial_fills_are_recorded_one_by_one_at_their_trade_prices() -> None:
    first = next_increment("E-X", 195, [], 65, 10_000, 10_000)
    assert first is not None and not first.whole
    assert (first.fill_id, first.quantity, first.price_paise) == ("F-E-X-65", 65, 10_000)
    # second trade at 100.05: the average 100.025 reaches the client rounded to 100.03
    second = next_increment("E-X", 195, [(65, 10_000)], 130, 10_003, 10_005)
    assert second is not None and (second.fill_id, second.quantity, second.price_paise) == (
        "F-E-X-130",
        65,
        10_005,
    )
    assert first.msg_id != second.msg_id
    assert (
        next_increment("E-X", 195, [(65, 10_000), (65, 10_005)], 65, 10_000, 10_000) is None
    )  # older report


def test_two_trades_seen_as_one_step_get_the_price_that_keeps_the_cumulative_value() -> None:
    # polled: 130 traded at an average of 101.00 after 65 were recorded at 100.00 -> 65 at 102.00
    inc = next_increment("E-X", 195, [(65, 10_000)], 130, 10_100, 0)
    assert inc is not None and (inc.quantity, inc.price_paise) == (65, 10_200)
    # a last-trade price that does not account for the step is not used
    inc = next_increment("E-X", 195, [(65, 10_000)], 195, 10_100, 10_300)
    assert inc is not None and (inc.quantity, inc.price_paise) == (130, 10_150)


def test_weighted_average_rounds_half_up() -> None:
    assert weighted_avg_paise([(1755, 10_000), (65, 10_005)]) == 10_000  # 10000.18
    assert weighted_avg_paise([(65, 10_000), (65, 10_005)]) == 10_003  # 10002.5
    assert weighted_avg_paise([]) == 0


def test_close_numbers_of_one_order_each_way_match_the_round_trip_formula() -> None:
    ts = ist_to_ns(date(2026, 12, 1), "10:00")
    n = close_numbers("NSE_FNO", ts, 10_000, [(65, 10_000)], [(65, 11_000)], orders=2)
    assert (n.quantity, n.exit_price_paise, n.pnl_paise) == (65, 11_000, 65_000)
    assert (
        n.charges_paise
        == charges_for_round_trip(
            "NSE_FNO", date(2026, 12, 1), 650_000, 715_000
        ).total_rounded_paise
    )


def test_close_numbers_of_sliced_orders_are_exact_and_count_every_order() -> None:
    ts = ist_to_ns(date(2026, 12, 1), "10:00")
    entry = [(1755, 10_000), (65, 10_005)]
    exits = [(1755, 10_500), (65, 10_495)]
    n = close_numbers("NSE_FNO", ts, weighted_avg_paise(entry), entry, exits, orders=4)
    assert n.quantity == 1820
    assert n.pnl_paise == (1755 * 10_500 + 65 * 10_495) - (1755 * 10_000 + 65 * 10_005)
    two = charges_for_round_trip(
        "NSE_FNO",
        date(2026, 12, 1),
        1755 * 10_000 + 65 * 10_005,
        1755 * 10_500 + 65 * 10_495,
        orders=2,
    )
    assert n.charges_paise > two.total_rounded_paise  # two more ₹20 orders (and their GST)
