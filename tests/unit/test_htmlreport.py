"""Report figures on hand-computed numbers: win rate, gross/net, drawdown, per index; PNG, HTML."""

from __future__ import annotations

import base64
import re

from shared import report
from shared.ops import htmlreport as hr
from shared.report import TradeLine


def _line(pid: str, index: str, pnl: int, charges: int, ts_exit: int, reason: str = "") -> TradeLine:
    return TradeLine(
        position_id=pid, index=index, symbol=f"{index}-X-CE", quantity=65,
        entry_ist="2026-12-01 09:30:00", exit_ist="09:31:00", entry_price_paise=10_000,
        exit_price_paise=10_000 + pnl // 65, pnl_paise=pnl, charges_paise=charges,
        exit_reason=reason, ts_entry=ts_exit - 60, ts_exit=ts_exit,
    )  # fmt: skip


# Closed in the order A, B, C, D, E; nets 900, -3200, -600, 3700, -50.
A = _line("a", "NIFTY", 1000, 100, ts_exit=1)
B = _line("b", "BANKNIFTY", -3000, 200, ts_exit=2)
C = _line("c", "NIFTY", -500, 100, ts_exit=3)
D = _line("d", "BANKNIFTY", 4000, 300, ts_exit=4)
E = _line("e", "NIFTY", 0, 50, ts_exit=5)
SHUFFLED = [D, A, C, B, E]  # not the exit order: the figures must not depend on it


def test_equity_curve_is_cumulative_net_pnl_in_exit_order_from_zero():
    assert hr.equity_curve(SHUFFLED) == [0, 900, -2300, -2900, 800, 750]
    assert hr.equity_curve([]) == [0]


def test_max_drawdown_is_deepest_fall_from_running_peak():
    dd = hr.max_drawdown([0, 900, -2300, -2900, 800, 750])
    assert (dd.amount_paise, dd.peak_paise, dd.trough_paise, dd.peak_at, dd.trough_at) == (
        3800, 900, -2900, 1, 3)
    # In list order the curve would be [0, 3700, 4600, 4000, 800, 750]: a 3850 drawdown.
    assert hr.figures(SHUFFLED).max_drawdown_paise == 3800


def test_max_drawdown_counts_a_first_loss_from_the_starting_zero_and_is_zero_when_rising():
    assert hr.max_drawdown([0, -100, -50, -300]).amount_paise == 300
    assert hr.max_drawdown([0, 100, 250, 400]).amount_paise == 0
    assert hr.max_drawdown([]).amount_paise == 0
    # A later, deeper fall from a higher peak wins over an earlier one.
    dd = hr.max_drawdown([0, 500, 200, 1000, 100, 300])
    assert (dd.amount_paise, dd.peak_at, dd.trough_at) == (900, 3, 4)


def test_figures_totals_win_rate_gross_net_best_worst():
    f = hr.figures(SHUFFLED)
    assert f.trades == 5
    assert (f.winners, f.losers) == (2, 2)  # E (pnl 0) is neither
    assert f.win_rate == 0.4
    assert f.gross_pnl_paise == 1500
    assert f.charges_paise == 750
    assert f.net_pnl_paise == 750
    assert (f.best_net_paise, f.worst_net_paise) == (3700, -3200)


def test_win_rate_of_no_trades_is_none_and_figures_are_zero():
    assert hr.win_rate([]) is None
    f = hr.figures([])
    assert (f.trades, f.gross_pnl_paise, f.net_pnl_paise, f.max_drawdown_paise) == (0, 0, 0, 0)
    assert f.best_net_paise is None and hr.fmt_rate(f.win_rate) == "n/a"


def test_per_index_figures_each_on_its_own_equity_curve():
    idx = hr.per_index(SHUFFLED)
    assert list(idx) == ["BANKNIFTY", "NIFTY"]
    nifty, bank = idx["NIFTY"], idx["BANKNIFTY"]
    # NIFTY: A, C, E -> nets 900, -600, -50; curve 0, 900, 300, 250
    assert (nifty.trades, nifty.winners, nifty.gross_pnl_paise, nifty.charges_paise) == (3, 1, 500, 250)
    assert (nifty.net_pnl_paise, nifty.max_drawdown_paise) == (250, 650)
    assert abs(nifty.win_rate - 1 / 3) < 1e-12
    # BANKNIFTY: B, D -> nets -3200, 3700; curve 0, -3200, 500
    assert (bank.trades, bank.winners, bank.win_rate) == (2, 1, 0.5)
    assert (bank.gross_pnl_paise, bank.net_pnl_paise, bank.max_drawdown_paise) == (1000, 500, 3200)


def test_text_report_keeps_its_totals_line_and_adds_drawdown_and_per_index():
    text = report.render(SHUFFLED)
    assert "trades 5   winners 2 (40.0%)   gross PnL ₹15.00   net PnL ₹7.50" in text
    assert "max drawdown (net, closed-trade equity) ₹38.00" in text
    assert re.search(r"NIFTY\s+trades 3\s+winners 1 \(33\.3%\)\s+gross ₹5\.00\s+net ₹2\.50\s+"
                     r"max drawdown ₹6\.50", text)
    assert re.search(r"BANKNIFTY\s+trades 2\s+winners 1 \(50\.0%\)", text)


def test_equity_png_is_a_png():
    png = hr.equity_png(SHUFFLED)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert hr.equity_png([])[:8] == b"\x89PNG\r\n\x1a\n"  # no trades: a flat curve, no error


def test_html_report_embeds_the_png_and_figures_and_escapes_text():
    evil = _line("f", "NIFTY", 100, 10, ts_exit=6, reason="<script>alert(1)</script>")
    page = hr.render_html([*SHUFFLED, evil], title="Day <1>", synthetic=True)
    m = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert m and base64.b64decode(m.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Day &lt;1&gt;" in page and "SYNTHETIC" in page
    # all: 6 trades, 3 winners, gross 16.00, charges 7.60, net 8.40, drawdown 38.00
    assert re.search(r"<td>all</td><td class='num'>6</td><td class='num'>3</td>"
                     r"<td class='num'>50\.0%</td>", page)
    for amount in ("₹16.00", "₹7.60", "₹8.40", "₹-38.00"):
        assert amount in page
    assert page.count("<td>BANKNIFTY</td>") == 3  # the per-index row and its two trades
