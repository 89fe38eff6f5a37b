"""The trade report: each closed trade (IST times, symbol, quantity, prices, PnL, reason) and totals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from shared.clock import fmt_ist
from shared.ops import htmlreport
from shared.types import paise_to_rupees_str


class TradeLine(msgspec.Struct, frozen=True, kw_only=True):
    position_id: str
    index: str
    symbol: str
    quantity: int
    entry_ist: str
    exit_ist: str
    entry_price_paise: int
    exit_price_paise: int
    pnl_paise: int
    charges_paise: int
    exit_reason: str
    ts_entry: int = 0
    ts_exit: int = 0


def trade_lines(trackers: Sequence[Any]) -> list[TradeLine]:
    """Closed trackers (exited) as report lines, in entry order."""
    out = []
    for t in sorted(trackers, key=lambda t: (t.ts_entry or 0, t.position_id)):
        if t.status != "exited":
            continue
        out.append(TradeLine(
            position_id=t.position_id, index=t.index_key, symbol=t.symbol, quantity=t.quantity,
            entry_ist=fmt_ist(t.ts_entry, with_date=True) if t.ts_entry else "",
            exit_ist=fmt_ist(t.ts_exit) if t.ts_exit else "",
            entry_price_paise=t.entry_price_paise or 0, exit_price_paise=t.exit_price_paise or 0,
            pnl_paise=t.pnl_paise or 0, charges_paise=t.charges_paise or 0,
            exit_reason=t.exit_reason or "", ts_entry=t.ts_entry or 0, ts_exit=t.ts_exit or 0,
        ))
    return out


def render(lines: Sequence[TradeLine], title: str = "Trades", synthetic: bool = False) -> str:
    r = paise_to_rupees_str
    rows = [f"{title}" + ("  [SYNTHETIC session: not real market data]" if synthetic else "")]
    header = f"{'#':>3}  {'entry (IST)':<19}  {'exit':<8}  {'symbol':<26} {'qty':>5} {'entry':>9} {'exit':>9} {'pnl':>11} {'net':>11}  reason"
    rows.append(header)
    rows.append("-" * len(header))
    gross = net = 0
    wins = 0
    for i, ln in enumerate(lines, 1):
        n = ln.pnl_paise - ln.charges_paise
        gross += ln.pnl_paise
        net += n
        wins += ln.pnl_paise > 0
        rows.append(
            f"{i:>3}  {ln.entry_ist:<19}  {ln.exit_ist:<8}  {ln.symbol:<26} {ln.quantity:>5} "
            f"{r(ln.entry_price_paise):>9} {r(ln.exit_price_paise):>9} {r(ln.pnl_paise):>11} {r(n):>11}  {ln.exit_reason}"
        )
    rows.append("-" * len(header))
    n_trades = len(lines)
    win_rate = f"{100 * wins / n_trades:.1f}%" if n_trades else "n/a"
    rows.append(f"trades {n_trades}   winners {wins} ({win_rate})   gross PnL ₹{r(gross)}   net PnL ₹{r(net)}")
    rows.extend(htmlreport.text_lines(lines))
    return "\n".join(rows)
