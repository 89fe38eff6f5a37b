"""The design card's layout, and the report's content."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import msgspec
import pytest

from shared import report
from shared.clock import ist_to_ns

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("feed", "signals", "entries", "executor", "exits", "sync")


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_has_core_service_and_main_and_imports(name):
    for f in ("core.py", "service.py", "__main__.py"):
        assert (ROOT / "services" / name / f).is_file(), f"services/{name}/{f}"
    mod = importlib.import_module(f"services.{name}.service")
    svc = [v for v in vars(mod).values() if isinstance(v, type) and getattr(v, "name", None) == name]
    assert svc, f"services.{name}.service defines the {name} service"


def test_top_level_layout_and_console_script():
    for p in ("pyproject.toml", "supervisord.conf", "config/algo.yml", ".env.example", "tests/unit",
              "tests/integration", "shared/messages.py", "shared/keys.py", "shared/bus.py", ".ci/run"):
        assert (ROOT / p).exists(), p
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["scalper"] == "shared.cli:main"
    conf = (ROOT / "supervisord.conf").read_text()
    for name in SERVICES:
        assert f"[program:{name}]" in conf and f"-m services.{name}" in conf


class _T(msgspec.Struct):
    position_id: str
    index_key: str
    symbol: str
    quantity: int
    status: str
    ts_entry: int
    ts_exit: int
    entry_price_paise: int
    exit_price_paise: int
    pnl_paise: int
    charges_paise: int
    exit_reason: str


def test_report_prints_ist_times_prices_pnl_reason_and_totals():
    from datetime import date

    d = date(2026, 12, 1)
    trades = [
        _T(position_id="b", index_key="NIFTY", symbol="NIFTY-Dec2026-26150-PE", quantity=65, status="exited",
           ts_entry=ist_to_ns(d, "10:45"), ts_exit=ist_to_ns(d, "10:49"), entry_price_paise=6865,
           exit_price_paise=9165, pnl_paise=149500, charges_paise=6065, exit_reason="take_profit: +33.50%"),
        _T(position_id="a", index_key="NIFTY", symbol="NIFTY-Dec2026-26200-CE", quantity=65, status="exited",
           ts_entry=ist_to_ns(d, "09:38"), ts_exit=ist_to_ns(d, "09:39"), entry_price_paise=8125,
           exit_price_paise=6830, pnl_paise=-84175, charges_paise=5810, exit_reason="stop_loss: -15.94%"),
        _T(position_id="c", index_key="NIFTY", symbol="X", quantity=65, status="active", ts_entry=1,
           ts_exit=0, entry_price_paise=1, exit_price_paise=0, pnl_paise=0, charges_paise=0, exit_reason=""),
    ]
    lines = report.trade_lines(trades)
    assert [ln.position_id for ln in lines] == ["a", "b"]  # closed only, in entry order
    text = report.render(lines, synthetic=True)
    assert "2026-12-01 09:38:00" in text and "09:39:00" in text  # IST, not UTC
    assert "81.25" in text and "68.30" in text and "-841.75" in text and "stop_loss" in text
    assert "trades 2" in text and "winners 1 (50.0%)" in text
    assert "gross PnL ₹653.25" in text and "net PnL ₹534.50" in text
    assert "SYNTHETIC" in text
