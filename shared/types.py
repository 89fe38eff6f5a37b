"""Typed identifiers and units used across the project.

Money and prices are integer paise (1 rupee = 100 paise). Time is UTC nanoseconds since the
epoch (``ts_*`` names). IST appears only at the edges (market hours, display).
"""

from __future__ import annotations

from typing import NewType

SecurityId = NewType("SecurityId", int)
"""DhanHQ security id (``SEM_SMST_SECURITY_ID``); numeric in every segment we trade."""

CorrelationId = NewType("CorrelationId", str)
"""DhanHQ ``correlationId``: at most 30 characters from ``[A-Za-z0-9 _-]``."""

MsgId = NewType("MsgId", str)
"""Deterministic message id, derived from the message's inputs."""

StreamId = NewType("StreamId", str)
"""A Redis stream entry id, ``"<ms>-<seq>"``."""

Paise = int
"""An exact amount of money or a price, in paise."""

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000

# Exchange segments as DhanHQ spells them in JSON and their numeric codes in the binary feed
# (reference/dhanhq-api.md §2).
SEGMENT_CODES: dict[str, int] = {
    "IDX_I": 0,
    "NSE_EQ": 1,
    "NSE_FNO": 2,
    "NSE_CURRENCY": 3,
    "BSE_EQ": 4,
    "MCX_COMM": 5,
    "BSE_CURRENCY": 7,
    "BSE_FNO": 8,
}
SEGMENT_NAMES: dict[int, str] = {code: name for name, code in SEGMENT_CODES.items()}


def rupees_to_paise(value: float | str | int) -> Paise:
    """Convert a rupee amount given as text or number to exact paise (half-up rounding)."""
    from decimal import ROUND_HALF_UP, Decimal

    return int((Decimal(str(value)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def paise_to_rupees_str(value: Paise) -> str:
    """Format paise as a rupee string with two decimals, e.g. ``15230 -> "152.30"``."""
    sign = "-" if value < 0 else ""
    value = abs(value)
    return f"{sign}{value // 100}.{value % 100:02d}"


def round_to_tick(price_rupees: float, tick_paise: int) -> Paise:
    """Round a float feed price (rupees) to the nearest multiple of the tick size, in paise."""
    if tick_paise <= 0:
        tick_paise = 1
    paise = round(price_rupees * 100)
    return int(round(paise / tick_paise)) * tick_paise
