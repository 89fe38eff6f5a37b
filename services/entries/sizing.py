"""Capital allocation: how many units of an option to buy.

All money is integer paise; config fractions (0.30) are turned into exact rationals, so every
quantity is exact and the same on every machine.

``capital.sizing``:

- ``"one_lot"``: exactly one lot (if capital can pay for it).
- ``"bands"``: the original allocator (reference §6) with its unit error fixed. The band of the
  available capital (inclusive upper bound) gives ``alloc_pct``, ``risk_per_trade_pct`` and
  ``daily_max_loss_pct``; the index's ``capital_alloc_pct`` overrides the band's allocation.

      lots_by_alloc = floor(capital * alloc_pct / (premium * lot_size))
      lots_by_risk  = floor(capital * risk_per_trade_pct / (premium * sl_pct * lot_size))
      lots = clamp(min(lots_by_alloc, lots_by_risk), min_lots, max_lots)
      lots = min(lots * signal multiplier * index multiplier, max_lots, lots capital can pay)

  The original computed ``floor(risk_budget / (premium * 0.30)) * lot_size`` — units, then
  multiplied by the lot size again — which over-states the risk cap ``lot_size`` times.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from fractions import Fraction

import msgspec

from shared.config import CapitalBand, CapitalConfig, IndexConfig, PaperConfig, RiskConfig
from shared.models import OpenPosition
from shared.types import paise_to_rupees_str, rupees_to_paise


class SizingResult(msgspec.Struct, frozen=True, kw_only=True):
    """Quantity in units (0 = do not trade) and the numbers behind it."""

    quantity: int
    lots: int
    lot_cost_paise: int
    reason: str
    band: int | None = None  # index into capital.bands
    alloc_pct: float | None = None
    risk_per_trade_pct: float | None = None
    daily_max_loss_pct: float | None = None
    lots_by_alloc: int | None = None
    lots_by_risk: int | None = None


def exact(fraction: float) -> Fraction:
    """A config fraction as the exact rational it was written as (0.035 -> 35/1000)."""
    return Fraction(Decimal(repr(fraction)))


def band_for(capital_paise: int, bands: list[CapitalBand]) -> tuple[int, CapitalBand]:
    """The first band whose ``upto_rupees`` is at or above the capital (the last is open)."""
    for i, band in enumerate(bands):
        if band.upto_rupees is None or capital_paise <= rupees_to_paise(band.upto_rupees):
            return i, band
    return len(bands) - 1, bands[-1]


def paper_available_capital_paise(
    paper: PaperConfig, open_positions: Iterable[OpenPosition]
) -> int:
    """Paper balance less the premium deployed in open positions."""
    deployed = sum(p.entry_price_paise * p.quantity for p in open_positions)
    return rupees_to_paise(paper.balance_rupees) - deployed


def size_order(
    *,
    premium_paise: int,
    lot_size: int,
    available_capital_paise: int,
    capital: CapitalConfig,
    risk: RiskConfig,
    index: IndexConfig,
    scale_multiplier: int = 1,
) -> SizingResult:
    """Units to buy at ``premium_paise`` with ``available_capital_paise`` to spend."""
    cap = available_capital_paise
    lot_cost = premium_paise * lot_size
    rs = paise_to_rupees_str
    if premium_paise <= 0 or lot_size <= 0:
        return SizingResult(
            quantity=0,
            lots=0,
            lot_cost_paise=max(lot_cost, 0),
            reason=f"bad premium {rs(premium_paise)} or lot size {lot_size}",
        )
    if capital.sizing == "one_lot":
        if cap < lot_cost:
            return SizingResult(
                quantity=0,
                lots=0,
                lot_cost_paise=lot_cost,
                reason=f"capital {rs(cap)} < one lot {rs(lot_cost)} ({lot_size} x {rs(premium_paise)})",
            )
        return SizingResult(
            quantity=lot_size,
            lots=1,
            lot_cost_paise=lot_cost,
            reason=f"one_lot: 1 lot x {lot_size} at {rs(premium_paise)} = {rs(lot_cost)}",
        )

    band_ix, band = band_for(cap, capital.bands)
    alloc_pct = index.capital_alloc_pct if index.capital_alloc_pct is not None else band.alloc_pct
    refused = SizingResult(
        quantity=0,
        lots=0,
        lot_cost_paise=lot_cost,
        band=band_ix,
        alloc_pct=alloc_pct,
        risk_per_trade_pct=band.risk_per_trade_pct,
        daily_max_loss_pct=band.daily_max_loss_pct,
        reason=f"capital {rs(cap)} < {capital.min_lots} lot(s) at {rs(lot_cost)}",
    )
    if cap < lot_cost * capital.min_lots:
        return refused

    alloc_budget = cap * exact(alloc_pct)
    by_alloc = int(alloc_budget // lot_cost)
    risk_budget = cap * exact(band.risk_per_trade_pct)
    risk_per_lot = premium_paise * exact(risk.sl_pct) * lot_size
    by_risk = int(risk_budget // risk_per_lot) if risk_per_lot > 0 else None
    base = by_alloc if by_risk is None else min(by_alloc, by_risk)
    base = min(max(base, capital.min_lots), capital.max_lots)
    mult = max(scale_multiplier, 1) * index.multiplier
    affordable = cap // lot_cost
    lots = min(base * mult, capital.max_lots, affordable)
    risk_text = (
        "no stop (sl_pct 0)"
        if by_risk is None
        else f"risk {rs(int(risk_budget))} / ({rs(premium_paise)} x sl {risk.sl_pct:g} x {lot_size})"
        f" = {by_risk} lots"
    )
    reason = (
        f"band {band_ix} (capital {rs(cap)}): alloc {alloc_pct:g} -> {rs(int(alloc_budget))} / "
        f"lot {rs(lot_cost)} = {by_alloc} lots; {risk_text}; base {base} x mult {mult} "
        f"-> {lots} lots (max {capital.max_lots}, affordable {affordable}) = {lots * lot_size} units"
    )
    return msgspec.structs.replace(
        refused,
        quantity=lots * lot_size,
        lots=lots,
        reason=reason,
        lots_by_alloc=by_alloc,
        lots_by_risk=by_risk,
    )
