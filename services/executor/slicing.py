"""Freeze-limit slicing: the broker orders ("slices") that carry out one intent. Pure.

An exchange rejects an order for more units than the contract's *freeze quantity*
(reference/market-calendar-and-charges.md §3.2–3.4), so a larger intent becomes several orders,
as DhanHQ's own ``/orders/slicing`` would send (that endpoint is not used: one POST per slice
keeps each slice's correlation id, and with it the exactly-once lookup, ours).

Rules, the same in paper and live mode so their ledgers agree:

- The freeze quantity is the instrument master's (``SM_FREEZE_QTY``); when that is unknown (0,
  e.g. the compact scrip master) ``executor.default_freeze_qty`` of the intent's index; 0 there
  too means no slicing.
- It is read as the largest quantity one order may carry ("maximum units per order", §3.2), so
  a slice is at most the largest whole number of lots not above it (NIFTY 1800 / lot 65 → 1755).
- An intent within the limit is one order under the intent's own correlation id, exactly as
  before slicing existed (``slice_no`` 0).
- Above it: full slices first, the remainder last (every slice whole lots, as the intent is).
  Slice *n* (1-based) has the correlation id ``<intent's id>-<n>``; the intent's own id is then
  never sent to the broker. Entry ids are 26 characters ("E-" + 24 base32) and exit ids 19–22,
  so up to 999 slices stay within DhanHQ's 30 characters of ``[A-Za-z0-9 _-]``; a plan that
  would not is refused, as is a freeze quantity below one lot.
"""

from __future__ import annotations

import re

import msgspec

from shared.messages import OrderIntent

MAX_CORRELATION_ID_CHARS = 30
CORRELATION_ID_RE = re.compile(r"[A-Za-z0-9 _-]{1,30}")
"""DhanHQ's ``correlationId`` (reference §3.3; the charset is THIRD-PARTY, UNCONFIRMED)."""


class Slice(msgspec.Struct, frozen=True, kw_only=True):
    """One broker order of an intent."""

    correlation_id: str
    slice_no: int
    """1-based; 0 for the single order of an unsliced intent."""
    quantity: int


class SliceError(ValueError):
    """The intent cannot be sliced; the message is the readable refusal reason."""


def effective_freeze_qty(instrument_freeze_qty: int, index: str, defaults: dict[str, int]) -> int:
    """The freeze quantity to slice by: the instrument's, else the index default, else 0."""
    if instrument_freeze_qty > 0:
        return instrument_freeze_qty
    return max(defaults.get(index, 0), 0)


def max_slice_qty(lot_size: int, freeze_qty: int) -> int:
    """The most units one order may carry: whole lots not above ``freeze_qty`` (0: no limit)."""
    if freeze_qty <= 0:
        return 0
    lot = max(lot_size, 1)
    return freeze_qty // lot * lot


def slice_quantities(quantity: int, lot_size: int, freeze_qty: int) -> list[int]:
    """Quantities of the orders for ``quantity`` units: ``[quantity]`` within the limit, else full
    slices then the remainder. Raises :class:`SliceError` if one lot is above the limit."""
    if quantity <= 0:
        raise SliceError(f"quantity {quantity} is not positive")
    if freeze_qty <= 0 or quantity <= freeze_qty:
        return [quantity]
    biggest = max_slice_qty(lot_size, freeze_qty)
    if biggest <= 0:
        raise SliceError(f"freeze quantity {freeze_qty} is below one lot ({lot_size})")
    full, rest = divmod(quantity, biggest)
    return [biggest] * full + ([rest] if rest else [])


def child_correlation_id(parent: str, slice_no: int) -> str:
    """The correlation id of slice ``slice_no`` (1-based) of the intent ``parent``."""
    return f"{parent}-{slice_no}"


def plan_slices(correlation_id: str, quantity: int, lot_size: int, freeze_qty: int) -> list[Slice]:
    """The orders for an intent (see the module docstring); :class:`SliceError` if impossible."""
    sizes = slice_quantities(quantity, lot_size, freeze_qty)
    if len(sizes) == 1:
        return [Slice(correlation_id=correlation_id, slice_no=0, quantity=quantity)]
    slices = [
        Slice(correlation_id=child_correlation_id(correlation_id, n), slice_no=n, quantity=q)
        for n, q in enumerate(sizes, start=1)
    ]
    longest = slices[-1].correlation_id
    if len(longest) > MAX_CORRELATION_ID_CHARS or not CORRELATION_ID_RE.fullmatch(longest):
        raise SliceError(
            f"{len(slices)} slices of at most {sizes[0]} (freeze quantity {freeze_qty}): slice id "
            f"{longest!r} exceeds DhanHQ's {MAX_CORRELATION_ID_CHARS}-character correlation id"
        )
    return slices


def slice_intent(intent: OrderIntent, correlation_id: str, quantity: int) -> OrderIntent:
    """The intent as seen by one of its orders: that order's correlation id and quantity."""
    if correlation_id == intent.correlation_id and quantity == intent.quantity:
        return intent
    return msgspec.structs.replace(intent, correlation_id=correlation_id, quantity=quantity)
