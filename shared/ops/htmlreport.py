"""Report figures over closed trades, an equity-curve PNG, and a self-contained HTML report.

The figures are pure functions of report lines (:class:`shared.report.TradeLine` or anything
with the same attributes), in integer paise:

- gross PnL is the sum of ``pnl_paise``; net PnL is ``pnl_paise - charges_paise`` summed;
- a winner is a trade with ``pnl_paise > 0`` (gross, as the text report counts them);
- the equity curve is the cumulative **net** PnL after each trade, in exit order
  (``ts_exit``, then ``position_id``), starting from 0 before the first trade;
- the maximum drawdown is the largest fall of that curve from a running peak, the starting 0
  included (so a first losing trade is a drawdown), reported as a non-negative amount.

The PNG is drawn with matplotlib's Agg backend on a private ``Figure`` (no pyplot global state).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from shared.clock import fmt_ist
from shared.types import paise_to_rupees_str

if TYPE_CHECKING:
    from shared.report import TradeLine


class Drawdown(msgspec.Struct, frozen=True, kw_only=True):
    """The deepest fall of an equity curve: from ``peak_paise`` (at point ``peak_at``) down to
    ``trough_paise`` (at ``trough_at``); points index the curve, 0 being the start."""

    amount_paise: int
    peak_paise: int
    trough_paise: int
    peak_at: int
    trough_at: int


class Figures(msgspec.Struct, frozen=True, kw_only=True):
    """Totals of a set of closed trades (amounts in paise, ``win_rate`` a fraction or None)."""

    trades: int
    winners: int
    losers: int
    win_rate: float | None
    gross_pnl_paise: int
    charges_paise: int
    net_pnl_paise: int
    max_drawdown_paise: int
    best_net_paise: int | None
    worst_net_paise: int | None


def net_paise(line: TradeLine) -> int:
    return line.pnl_paise - line.charges_paise


def exit_order(lines: Sequence[TradeLine]) -> list[TradeLine]:
    """Lines in the order their positions were closed (``ts_exit``, then ``position_id``)."""
    return sorted(lines, key=lambda ln: (getattr(ln, "ts_exit", 0), ln.position_id))


def equity_curve(lines: Sequence[TradeLine]) -> list[int]:
    """Cumulative net PnL (paise): ``[0, after trade 1, after trade 2, ...]`` in exit order."""
    curve = [0]
    for ln in exit_order(lines):
        curve.append(curve[-1] + net_paise(ln))
    return curve


def max_drawdown(curve: Sequence[int]) -> Drawdown:
    """The largest peak-to-trough fall of ``curve`` (the first point counts as a peak)."""
    if not curve:
        return Drawdown(amount_paise=0, peak_paise=0, trough_paise=0, peak_at=0, trough_at=0)
    best = Drawdown(amount_paise=0, peak_paise=curve[0], trough_paise=curve[0], peak_at=0, trough_at=0)
    peak, peak_at = curve[0], 0
    for i, v in enumerate(curve):
        if v > peak:
            peak, peak_at = v, i
        if peak - v > best.amount_paise:
            best = Drawdown(amount_paise=peak - v, peak_paise=peak, trough_paise=v,
                            peak_at=peak_at, trough_at=i)
    return best


def win_rate(lines: Sequence[TradeLine]) -> float | None:
    """Winners (gross ``pnl_paise > 0``) over trades; None when there are no trades."""
    if not lines:
        return None
    return sum(1 for ln in lines if ln.pnl_paise > 0) / len(lines)


def figures(lines: Sequence[TradeLine]) -> Figures:
    """Totals, win rate and maximum drawdown of ``lines``."""
    nets = [net_paise(ln) for ln in lines]
    winners = sum(1 for ln in lines if ln.pnl_paise > 0)
    return Figures(
        trades=len(lines),
        winners=winners,
        losers=sum(1 for ln in lines if ln.pnl_paise < 0),
        win_rate=win_rate(lines),
        gross_pnl_paise=sum(ln.pnl_paise for ln in lines),
        charges_paise=sum(ln.charges_paise for ln in lines),
        net_pnl_paise=sum(nets),
        max_drawdown_paise=max_drawdown(equity_curve(lines)).amount_paise,
        best_net_paise=max(nets) if nets else None,
        worst_net_paise=min(nets) if nets else None,
    )


def per_index(lines: Sequence[TradeLine]) -> dict[str, Figures]:
    """:func:`figures` of each index's trades (its own equity curve), by index name."""
    groups: dict[str, list[TradeLine]] = {}
    for ln in lines:
        groups.setdefault(ln.index, []).append(ln)
    return {k: figures(v) for k, v in sorted(groups.items())}


def fmt_rate(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f}%"


# --------------------------------------------------------------------------- rendering


def equity_png(lines: Sequence[TradeLine], title: str = "Equity curve (net, closed trades)") -> bytes:
    """A PNG of the closed-trade net equity curve in rupees, its maximum drawdown shaded."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - matplotlib is a declared dependency
        from shared.errors import ScalperError

        raise ScalperError("the PNG needs matplotlib (pip install matplotlib)") from exc

    curve = equity_curve(lines)
    rupees = [v / 100 for v in curve]
    dd = max_drawdown(curve)
    fig = Figure(figsize=(8, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(len(curve)))
    ax.plot(xs, rupees, marker="o", markersize=3, linewidth=1.5, color="#1f6feb")
    ax.axhline(0, color="#888888", linewidth=0.8)
    if dd.amount_paise > 0:
        ax.axvspan(dd.peak_at, dd.trough_at, color="#d73a49", alpha=0.12,
                   label=f"max drawdown ₹{paise_to_rupees_str(dd.amount_paise)}")
        ax.legend(loc="best", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("closed trades")
    ax.set_ylabel("net PnL (₹)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.neg { color: #b31d28; } .pos { color: #22863a; }
.warn { background: #fff5b1; padding: 0.5em; border: 1px solid #e5c100; }
"""


def _money(paise: int | None) -> str:
    if paise is None:
        return "<td>n/a</td>"
    cls = "neg" if paise < 0 else "pos" if paise > 0 else ""
    return f'<td class="num {cls}">₹{paise_to_rupees_str(paise)}</td>'


def _figures_rows(name: str, f: Figures) -> str:
    return (
        f"<tr><td>{html.escape(name)}</td><td class='num'>{f.trades}</td>"
        f"<td class='num'>{f.winners}</td><td class='num'>{fmt_rate(f.win_rate)}</td>"
        f"{_money(f.gross_pnl_paise)}{_money(f.charges_paise)}{_money(f.net_pnl_paise)}"
        f"{_money(-f.max_drawdown_paise)}</tr>"
    )


def render_html(lines: Sequence[TradeLine], title: str = "Trades", synthetic: bool = False,
                png: bytes | None = None) -> str:
    """A self-contained HTML page: figures, per-index figures, equity PNG (data URI), trades."""
    png = equity_png(lines) if png is None else png
    total = figures(lines)
    e = html.escape
    out = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    if synthetic:
        out.append('<p class="warn">SYNTHETIC session: not real market data.</p>')
    head = ("<tr><th></th><th>trades</th><th>winners</th><th>win rate</th><th>gross PnL</th>"
            "<th>charges</th><th>net PnL</th><th>max drawdown (net)</th></tr>")
    out.append("<h2>Summary</h2><table>" + head + _figures_rows("all", total))
    out.extend(_figures_rows(k, f) for k, f in per_index(lines).items())
    out.append("</table>")
    data = base64.b64encode(png).decode()
    out.append(f'<h2>Equity curve</h2><img alt="equity curve" src="data:image/png;base64,{data}">')
    out.append("<h2>Trades</h2><table><tr><th>#</th><th>index</th><th>entry (IST)</th>"
               "<th>exit</th><th>symbol</th><th>qty</th><th>entry ₹</th><th>exit ₹</th>"
               "<th>PnL</th><th>charges</th><th>net</th><th>reason</th></tr>")
    for i, ln in enumerate(exit_order(lines), 1):
        exit_ist = fmt_ist(ln.ts_exit) if getattr(ln, "ts_exit", 0) else ln.exit_ist
        out.append(
            f"<tr><td class='num'>{i}</td><td>{e(ln.index)}</td><td>{e(ln.entry_ist)}</td>"
            f"<td>{e(exit_ist)}</td><td>{e(ln.symbol)}</td><td class='num'>{ln.quantity}</td>"
            f"<td class='num'>{paise_to_rupees_str(ln.entry_price_paise)}</td>"
            f"<td class='num'>{paise_to_rupees_str(ln.exit_price_paise)}</td>"
            f"{_money(ln.pnl_paise)}{_money(ln.charges_paise)}{_money(net_paise(ln))}"
            f"<td>{e(ln.exit_reason)}</td></tr>"
        )
    out.append("</table></body></html>")
    return "\n".join(out)


def text_lines(lines: Sequence[TradeLine]) -> list[str]:
    """Extra lines for the text report: drawdown and per-index figures."""
    r = paise_to_rupees_str
    total = figures(lines)
    rows = [f"max drawdown (net, closed-trade equity) ₹{r(total.max_drawdown_paise)}"]
    for name, f in per_index(lines).items():
        rows.append(
            f"  {name or '?':<10} trades {f.trades}   winners {f.winners} ({fmt_rate(f.win_rate)})"
            f"   gross ₹{r(f.gross_pnl_paise)}   net ₹{r(f.net_pnl_paise)}"
            f"   max drawdown ₹{r(f.max_drawdown_paise)}"
        )
    return rows
