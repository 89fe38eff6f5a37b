"""Plain data shared by cores and shells (not stream messages)."""

from __future__ import annotations

from typing import Literal

import msgspec

OptionType = Literal["CE", "PE"]


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    """One tradable contract or index, as imported from DhanHQ's scrip master.

    ``expiry`` is the ISO date ``YYYY-MM-DD`` ("" for indices); strikes and tick sizes in paise.
    """

    security_id: int
    exchange: str  # NSE / BSE
    segment: str  # DhanHQ JSON segment: IDX_I, NSE_FNO, BSE_FNO
    instrument: str  # INDEX, OPTIDX, FUTIDX
    underlying: str  # NIFTY, BANKNIFTY, FINNIFTY, SENSEX
    symbol: str  # trading symbol, e.g. NIFTY-Nov2026-26000-CE (not unique across weeklies)
    display_name: str = ""
    expiry: str = ""
    strike_paise: int = 0
    option_type: str = "XX"  # CE / PE / XX
    lot_size: int = 1
    tick_size_paise: int = 5
    expiry_flag: str = ""  # W / M / ""
    freeze_qty: int = 0


class OpenPosition(msgspec.Struct, frozen=True, kw_only=True):
    """A position as the entry guard sees it, as of some tick."""

    position_id: str
    index: str
    security_id: int
    option_type: str  # CE / PE
    quantity: int
    entry_price_paise: int
    ts_entry: int
    symbol: str = ""
