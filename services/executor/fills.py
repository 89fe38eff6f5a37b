"""Fill arithmetic: partial fills from the broker's cumulative figures, position averages and the
numbers of a close. Pure; prices in integer paise, quantities in units.

The broker reports an order as cumulative figures: traded quantity and average traded price
(REST order book, order-update socket), and on the socket the price of the last trade too
(``TradedPrice``; its meaning is UNCONFIRMED, see dhansim.decisions). Each rise of the traded
quantity is one fill row:

- the whole order in one go: fill id ``F-<cid>``, event id ``fill-…(cid)`` (as before partial
  fills were recorded, and as sync's settlement uses), price the average;
- a part: fill id ``F-<cid>-<cumulative qty>``, price the last trade's when it accounts for the
  change in the cumulative traded value (within the rounding of the average to the paisa), else
  derived from that change (several trades seen as one step, e.g. by polling), rounded half up.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import msgspec

from shared.charges import charges_for_round_trip
from shared.clock import ist_day
from shared.messages import make_msg_id


class Increment(msgspec.Struct, frozen=True, kw_only=True):
    """A fill to record: ``quantity`` more units at ``price_paise``."""

    fill_id: str
    msg_id: str
    quantity: int
    price_paise: int
    filled_qty: int
    """The order's cumulative filled quantity after this fill."""
    whole: bool
    """The order filled completely in this one step."""


def div_half_up(num: int, den: int) -> int:
    """``num / den`` rounded half up (``den`` > 0)."""
    q, r = divmod(num, den)
    return q + (1 if 2 * r >= den else 0)


def value_paise(fills: Iterable[tuple[int, int]]) -> int:
    """Σ quantity × price of ``(quantity, price_paise)`` pairs."""
    return sum(q * p for q, p in fills)


def weighted_avg_paise(fills: Iterable[tuple[int, int]]) -> int:
    """Quantity-weighted average price of ``(quantity, price_paise)``, rounded half up."""
    pairs = list(fills)
    qty = sum(q for q, _ in pairs)
    return div_half_up(value_paise(pairs), qty) if qty else 0


def next_increment(
    correlation_id: str,
    order_quantity: int,
    recorded: Iterable[tuple[int, int]],
    filled_qty: int,
    avg_price_paise: int,
    last_price_paise: int = 0,
) -> Increment | None:
    """The fill that takes the recorded fills of an order up to the broker's ``filled_qty`` at
    ``avg_price_paise``; None if nothing new (a repeated or older report)."""
    rec = list(recorded)
    rec_qty = sum(q for q, _ in rec)
    rec_value = value_paise(rec)
    dq = filled_qty - rec_qty
    if dq <= 0:
        return None
    whole = rec_qty == 0 and filled_qty == order_quantity
    target = avg_price_paise * filled_qty  # the cumulative value, to within filled_qty / 2 paise
    if last_price_paise > 0 and 2 * abs(rec_value + dq * last_price_paise - target) <= filled_qty:
        price = last_price_paise
    else:
        price = div_half_up(max(target - rec_value, 0), dq) or avg_price_paise
    if whole:
        return Increment(
            fill_id=f"F-{correlation_id}",
            msg_id=make_msg_id("fill", correlation_id),
            quantity=dq,
            price_paise=price,
            filled_qty=filled_qty,
            whole=True,
        )
    return Increment(
        fill_id=f"F-{correlation_id}-{filled_qty}",
        msg_id=make_msg_id("fill", correlation_id, filled_qty),
        quantity=dq,
        price_paise=price,
        filled_qty=filled_qty,
        whole=False,
    )


class CloseNumbers(msgspec.Struct, frozen=True, kw_only=True):
    quantity: int
    exit_price_paise: int
    """Quantity-weighted average of the exit fills."""
    pnl_paise: int
    charges_paise: int


def close_numbers(
    segment: str,
    ts_exit: int,
    entry_price_paise: int,
    entry_fills: list[tuple[int, int]],
    exit_fills: list[tuple[int, int]],
    orders: int,
) -> CloseNumbers:
    """The figures of a position closed by ``exit_fills``: PnL = exit value − entry value, exact
    from the entry fills when they cover the closed quantity (else ``entry_price_paise`` × qty);
    charges for ``orders`` executed orders (each slice is one), rates of the exit day."""
    qty = sum(q for q, _ in exit_fills)
    exit_value = value_paise(exit_fills)
    entry_value = (
        value_paise(entry_fills)
        if sum(q for q, _ in entry_fills) == qty
        else entry_price_paise * qty
    )
    day: date = ist_day(ts_exit)
    charges = charges_for_round_trip(segment, day, entry_value, exit_value, orders=orders)
    return CloseNumbers(
        quantity=qty,
        exit_price_paise=weighted_avg_paise(exit_fills),
        pnl_paise=exit_value - entry_value,
        charges_paise=charges.total_rounded_paise,
    )
