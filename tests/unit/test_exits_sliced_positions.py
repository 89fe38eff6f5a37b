"""Exits core with positions the executor opened or closed in several orders (freeze-limit
slices, partial fills): the exit asks for the whole open quantity (the executor slices it), and
an exit that filled in part is retried for the quantity left once ``position.adjusted`` says so
(the exits service retries on ``order.cancelled`` like on ``order.rejected``)."""

from __future__ import annotations

from services.exits.core import exit_correlation_id
from shared.clock import NS_PER_S
from tests.unit.test_exits_core import Harness, only


def test_exit_of_a_sliced_position_asks_for_the_whole_quantity_under_one_correlation_id() -> None:
    h = Harness(sl_pct=0.15)
    h.open(qty=28 * 65)
    first = only(h.tick(80_00))
    assert first.intent.quantity == 1820
    assert first.intent.correlation_id == exit_correlation_id("P1", 1)
    assert len(first.intent.correlation_id) + len("-999") <= 30  # room for the executor's slice ids


def test_an_exit_filled_in_part_is_retried_for_the_quantity_left() -> None:
    h = Harness(sl_pct=0.15)
    h.open(qty=130)
    first = only(h.tick(80_00))
    h.core.on_position_adjusted("P1", 65)  # the executor: 65 sold, 65 still open
    due = h.core.on_exit_rejected("P1", h.t, first.intent.correlation_id)  # the remainder's end
    assert due == h.t + 1 * NS_PER_S
    retry = only(h.tick(79_00, dt_s=1.0))
    assert (retry.attempt, retry.intent.quantity) == (2, 65)
    assert retry.intent.correlation_id == exit_correlation_id("P1", 2)
