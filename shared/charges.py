"""Charges on an intraday index-option round trip (buy, then sell), exact to the fraction of a paisa.

Rates and their effective dates live in ``config/charges.yml`` (see
``reference/market-calendar-and-charges.md`` §2). Amounts go in as integer paise of premium
turnover (premium × quantity) and come out as ``Decimal`` paise:

- brokerage    ₹ per executed order × ``orders``
- stt          sell turnover × STT rate (sell side only)
- exchange_txn (buy + sell turnover) × the exchange's transaction rate
- ipft         (buy + sell turnover) × IPFT per crore (NSE; zero on BSE)
- sebi_fee     (buy + sell turnover) × SEBI fee per crore
- stamp_duty   buy turnover × stamp-duty rate (buy side only)
- gst          GST rate × (brokerage + exchange_txn + sebi_fee + ipft); never on STT or stamp duty

Rounding rule (``rounding`` in the YAML): ``exact`` keeps every component exact, with no
intermediate rounding, and ``total_rounded_paise`` rounds the exact total half-up to a whole
paisa; ``contract_note`` rounds STT and stamp duty half-up to the whole rupee and every other
component half-up to the paisa, computing GST on the rounded items.

Example: ``charges_for_round_trip("NSE", date(2026, 2, 27), 650_000, 715_000).total_paise`` is
``Decimal("6028.39241")`` paise (≈ ₹60.28) on 65 × ₹100 → ₹110. The reference's ≈ ₹60.21 for
that period takes IPFT as ₹0.0068; at ₹50/crore on ₹13,650 it is ₹0.06825 (see the tests).
"""

from __future__ import annotations

import functools
import os
import re
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Literal

import msgspec
import yaml

from shared.errors import ConfigError

Rounding = Literal["exact", "contract_note"]

_CRORE_RUPEES = Decimal(10_000_000)
_PAISE_PER_RUPEE = Decimal(100)
_ONE = Decimal(1)


class _Spec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class RatePeriod(_Spec, frozen=True, kw_only=True):
    """``value`` applies from the IST trade day ``from_`` (inclusive) until the next period."""

    from_: date = msgspec.field(name="from")
    value: Decimal


Schedule = list[RatePeriod]


class ExchangeRates(_Spec, frozen=True, kw_only=True):
    transaction_rate: Schedule
    ipft_per_crore_rupees: Schedule


class ChargesConfig(_Spec, frozen=True, kw_only=True):
    """The whole of ``config/charges.yml``."""

    rounding: Rounding = "exact"
    brokerage_per_order_rupees: Schedule
    stt_sell_rate: Schedule
    stamp_duty_buy_rate: Schedule
    sebi_fee_per_crore_rupees: Schedule
    gst_rate: Schedule
    exchanges: dict[str, ExchangeRates]


class ChargesBreakdown(msgspec.Struct, frozen=True, kw_only=True):
    """The charges on one round trip; every amount in paise, exact ``Decimal``."""

    exchange: str
    trade_day: date
    buy_value_paise: int
    sell_value_paise: int
    orders: int
    rounding: Rounding
    brokerage: Decimal
    stt: Decimal
    exchange_txn: Decimal
    ipft: Decimal
    sebi_fee: Decimal
    stamp_duty: Decimal
    gst: Decimal
    total_paise: Decimal

    @property
    def total_rounded_paise(self) -> int:
        """The total half-up to a whole paisa."""
        return int(self.total_paise.quantize(_ONE, rounding=ROUND_HALF_UP))

    @property
    def gross_pnl_paise(self) -> int:
        return self.sell_value_paise - self.buy_value_paise

    @property
    def net_pnl_paise(self) -> Decimal:
        """Gross PnL less every charge, exact."""
        return Decimal(self.gross_pnl_paise) - self.total_paise


def _rate_on(schedule: Schedule, day: date, what: str) -> Decimal:
    value: Decimal | None = None
    for period in schedule:
        if period.from_ <= day:
            value = period.value
        else:
            break
    if value is None:
        first = schedule[0].from_.isoformat() if schedule else "none"
        raise ConfigError(f"charges: $.{what}: no rate for {day.isoformat()} (earliest {first})")
    return value


def _round(amount_paise: Decimal, step_paise: int) -> Decimal:
    step = Decimal(step_paise)
    return (amount_paise / step).quantize(_ONE, rounding=ROUND_HALF_UP) * step


class ChargeSchedule:
    """The validated rate table; pure lookups and arithmetic, no I/O after loading."""

    def __init__(self, config: ChargesConfig) -> None:
        self.config = config

    @classmethod
    def load(cls, path: str | Path | None = None) -> ChargeSchedule:
        """Read and validate ``config/charges.yml`` (or ``path``); errors name the key path."""
        p = Path(path) if path is not None else default_charges_path()
        try:
            raw = yaml.safe_load(p.read_text())
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: invalid YAML: {str(exc).splitlines()[0]}") from None
        return cls.parse(raw, str(p))

    @classmethod
    def parse(cls, raw: object, source: str = "charges") -> ChargeSchedule:
        try:
            cfg = msgspec.convert(raw, ChargesConfig, strict=False)
        except msgspec.ValidationError as exc:
            m = re.match(r"^(.*) - at `(\$[^`]*)`$", str(exc))
            where = f"{m.group(2)}: {m.group(1)}" if m else f"$: {exc}"
            raise ConfigError(f"{source}: {where}") from None
        _check(cfg, source)
        return cls(cfg)

    def charges_for_round_trip(
        self,
        exchange: str,
        trade_day: date,
        buy_value_paise: int,
        sell_value_paise: int,
        orders: int = 2,
    ) -> ChargesBreakdown:
        """Charges on buying ``buy_value_paise`` and selling ``sell_value_paise`` of premium.

        ``exchange`` is ``"NSE"`` or ``"BSE"`` (a segment such as ``"NSE_FNO"`` also works);
        ``orders`` is the number of executed orders (slices count one each).
        """
        if buy_value_paise < 0 or sell_value_paise < 0 or orders < 0:
            raise ValueError("turnover and orders must not be negative")
        exch = exchange.upper().removesuffix("_FNO")
        rates = self.config.exchanges.get(exch)
        if rates is None:
            raise ConfigError(f"charges: $.exchanges: no rates for exchange {exchange!r}")
        c = self.config
        buy, sell = Decimal(buy_value_paise), Decimal(sell_value_paise)
        turnover = buy + sell
        brokerage = _rate_on(c.brokerage_per_order_rupees, trade_day, "brokerage_per_order_rupees")
        stt_rate = _rate_on(c.stt_sell_rate, trade_day, "stt_sell_rate")
        stamp_rate = _rate_on(c.stamp_duty_buy_rate, trade_day, "stamp_duty_buy_rate")
        sebi = _rate_on(c.sebi_fee_per_crore_rupees, trade_day, "sebi_fee_per_crore_rupees")
        gst_rate = _rate_on(c.gst_rate, trade_day, "gst_rate")
        txn_rate = _rate_on(rates.transaction_rate, trade_day, f"exchanges.{exch}.transaction_rate")
        ipft = _rate_on(
            rates.ipft_per_crore_rupees, trade_day, f"exchanges.{exch}.ipft_per_crore_rupees"
        )

        parts = {
            "brokerage": brokerage * _PAISE_PER_RUPEE * orders,
            "stt": sell * stt_rate,
            "exchange_txn": turnover * txn_rate,
            "ipft": turnover * ipft / _CRORE_RUPEES,
            "sebi_fee": turnover * sebi / _CRORE_RUPEES,
            "stamp_duty": buy * stamp_rate,
        }
        if c.rounding == "contract_note":
            parts = {
                k: _round(v, 100 if k in ("stt", "stamp_duty") else 1) for k, v in parts.items()
            }
        gst = gst_rate * (
            parts["brokerage"] + parts["exchange_txn"] + parts["sebi_fee"] + parts["ipft"]
        )
        if c.rounding == "contract_note":
            gst = _round(gst, 1)
        total = sum(parts.values(), Decimal(0)) + gst
        return ChargesBreakdown(
            exchange=exch,
            trade_day=trade_day,
            buy_value_paise=buy_value_paise,
            sell_value_paise=sell_value_paise,
            orders=orders,
            rounding=c.rounding,
            gst=gst,
            total_paise=total,
            **parts,
        )


def _check(cfg: ChargesConfig, source: str) -> None:
    schedules: dict[str, Schedule] = {
        "brokerage_per_order_rupees": cfg.brokerage_per_order_rupees,
        "stt_sell_rate": cfg.stt_sell_rate,
        "stamp_duty_buy_rate": cfg.stamp_duty_buy_rate,
        "sebi_fee_per_crore_rupees": cfg.sebi_fee_per_crore_rupees,
        "gst_rate": cfg.gst_rate,
    }
    for name, ex in cfg.exchanges.items():
        schedules[f"exchanges.{name}.transaction_rate"] = ex.transaction_rate
        schedules[f"exchanges.{name}.ipft_per_crore_rupees"] = ex.ipft_per_crore_rupees
    for what, schedule in schedules.items():
        if not schedule:
            raise ConfigError(f"{source}: $.{what}: at least one period is required")
        for i, period in enumerate(schedule):
            if not period.value.is_finite() or period.value < 0:
                raise ConfigError(f"{source}: $.{what}[{i}].value: must be a number >= 0")
            if i and period.from_ <= schedule[i - 1].from_:
                raise ConfigError(f"{source}: $.{what}[{i}].from: dates must ascend")
        if what.endswith("_rate") and any(p.value > 1 for p in schedule):
            raise ConfigError(f"{source}: $.{what}: a rate is a fraction (0.001 = 0.1 %), not > 1")
    for name in cfg.exchanges:
        if name != name.upper():
            raise ConfigError(f"{source}: $.exchanges.{name}: exchange names are upper case")


def default_charges_path() -> Path:
    return Path(
        os.environ.get(
            "SCALPER_CHARGES",
            Path(__file__).resolve().parent.parent / "config" / "charges.yml",
        )
    )


@functools.cache
def default_schedule() -> ChargeSchedule:
    """The schedule from ``config/charges.yml``, read once (an immutable table)."""
    return ChargeSchedule.load()


def charges_for_round_trip(
    exchange: str,
    trade_day: date,
    buy_value_paise: int,
    sell_value_paise: int,
    orders: int = 2,
    *,
    schedule: ChargeSchedule | None = None,
) -> ChargesBreakdown:
    """Charges on a round trip under ``schedule`` (default: ``config/charges.yml``)."""
    sched = schedule if schedule is not None else default_schedule()
    return sched.charges_for_round_trip(
        exchange, trade_day, buy_value_paise, sell_value_paise, orders
    )


def net_pnl(
    exchange: str,
    trade_day: date,
    buy_value_paise: int,
    sell_value_paise: int,
    orders: int = 2,
    *,
    schedule: ChargeSchedule | None = None,
) -> Decimal:
    """Sell value − buy value − every charge, exact ``Decimal`` paise."""
    return charges_for_round_trip(
        exchange, trade_day, buy_value_paise, sell_value_paise, orders, schedule=schedule
    ).net_pnl_paise
