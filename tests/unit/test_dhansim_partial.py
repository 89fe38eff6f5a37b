"""The simulator's ``partial_fills`` fault: how an order is split (pure part)."""

from __future__ import annotations

import pytest

from dhansim.faults import parse_spec
from dhansim.orders import PartialPlan, partial_plan


def test_an_order_splits_after_the_asked_lots_and_keeps_at_least_one_lot_for_the_rest() -> None:
    assert partial_plan(195, 65, 1, "fill") == PartialPlan(first_qty=65, then="fill")
    assert partial_plan(260, 65, 2, "cancel") == PartialPlan(first_qty=130, then="cancel")
    assert partial_plan(130, 65, 2, "fill") is None  # nothing would be left: fills whole
    assert partial_plan(65, 65, 1, "fill") is None  # one lot fills whole
    assert partial_plan(130, 65, 0, "fill") is None


def test_partial_fill_settings_parse_and_reject_unknown_remainder_actions() -> None:
    s = parse_spec("partial_fills=2,partial_fill_lots=3,partial_remainder=expire")
    assert (s.partial_fills, s.partial_fill_lots, s.partial_remainder) == (2, 3, "expire")
    with pytest.raises(ValueError, match="partial_remainder"):
        parse_spec("partial_remainder=later")
    with pytest.raises(ValueError, match="partial remainder"):
        partial_plan(130, 65, 1, "later")


def test_http_faults_can_be_limited_to_a_method_so_a_poll_does_not_use_them_up() -> None:
    from dhansim.faults import Faults

    f = Faults(parse_spec("http_429=1,http_path_prefix=/v2/orders,http_method=POST"))
    assert not f.applies_to("/v2/orders/", "GET")  # sync polling the order book
    assert not f.applies_to("/v2/fundlimit/", "POST")
    assert f.applies_to("/v2/orders/", "post")
    assert Faults(parse_spec("http_429=1")).applies_to("/v2/orders/", "GET")  # default: any method
