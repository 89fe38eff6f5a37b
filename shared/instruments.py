"""DhanHQ scrip master CSV → :class:`shared.models.Instrument` (reference/dhanhq-api.md §6).

Both published formats are read by column name with polars; which one a file is comes from its
header (the column sets change over time, so only the columns used here are required):

- compact  (``api-scrip-master.csv``):   ``SEM_EXM_EXCH_ID, SEM_SEGMENT, SEM_SMST_SECURITY_ID, …``
- detailed (``api-scrip-master-detailed.csv``): ``EXCH_ID, SEGMENT, SECURITY_ID, …,
  SM_FREEZE_QTY,`` (note the trailing comma)

Kept: the index rows (segment ``I``, instrument ``INDEX``) and the index options and futures
(``OPTIDX``, ``FUTIDX``) of NIFTY, BANKNIFTY, FINNIFTY (NSE) and SENSEX (BSE). Quirks handled:
lot as float text (``65.0``); expiry with a time part (``2024-10-03 14:30:00``) or
``0001-01-01``/blank for non-derivatives; five-decimal strikes; ``-0.01`` future strikes (→ 0);
``XX`` or blank option types; weekly contracts sharing one trading symbol (instruments are keyed
by ``(segment, security_id)``, never by symbol); the compact file's blank ``SM_SYMBOL_NAME`` on
derivatives (the underlying is taken from the trading symbol, then the display name); the
detailed file's ``UNDERLYING_SECURITY_ID`` 26000 for NIFTY derivatives (ignored: the underlying
comes from ``UNDERLYING_SYMBOL``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path

import polars as pl

from shared.errors import DecodeError
from shared.models import Instrument

UNDERLYING_EXCHANGE: dict[str, str] = {
    "NIFTY": "NSE",
    "BANKNIFTY": "NSE",
    "FINNIFTY": "NSE",
    "SENSEX": "BSE",
}
UNDERLYINGS = tuple(UNDERLYING_EXCHANGE)
KEPT_DERIVATIVES = ("OPTIDX", "FUTIDX")

TICK_SIZE_PAISE_MIN = 1.0
"""Tick-size units are UNCONFIRMED (reference §6.4, §8 item 8). Decision: a ``TICK_SIZE`` value
at or above this is already in paise (options ``5.0000`` = ₹0.05, futures ``10.0000`` = ₹0.10);
a value below it is in rupees (index ``0.0500`` = ₹0.05, one detailed-file future ``0.0500``).
The writers emit derivatives in paise and index rows in rupees, as the real files do."""

DEFAULT_TICK_PAISE = 5
"""Used when a row's tick size is blank or zero (₹0.05, the NSE/BSE index-option tick)."""

# UNDERLYING_SECURITY_ID that the detailed file gives index derivatives (not the IDX_I id:
# NIFTY derivatives carry 26000, while the NIFTY index row is 13). Writer-only; the parser
# never reads this column. NIFTY is from the reference; the others are THIRD-PARTY fixtures.
DETAILED_UNDERLYING_IDS: dict[str, int] = {
    "NIFTY": 26000,
    "BANKNIFTY": 26009,
    "FINNIFTY": 26037,
    "SENSEX": 1,
}

COMPACT_COLUMNS = (
    "SEM_EXM_EXCH_ID", "SEM_SEGMENT", "SEM_SMST_SECURITY_ID", "SEM_INSTRUMENT_NAME",
    "SEM_EXPIRY_CODE", "SEM_TRADING_SYMBOL", "SEM_LOT_UNITS", "SEM_CUSTOM_SYMBOL",
    "SEM_EXPIRY_DATE", "SEM_STRIKE_PRICE", "SEM_OPTION_TYPE", "SEM_TICK_SIZE",
    "SEM_EXPIRY_FLAG", "SEM_EXCH_INSTRUMENT_TYPE", "SEM_SERIES", "SM_SYMBOL_NAME",
)  # fmt: skip
DETAILED_COLUMNS = (
    "EXCH_ID", "SEGMENT", "SECURITY_ID", "ISIN", "INSTRUMENT", "UNDERLYING_SECURITY_ID",
    "UNDERLYING_SYMBOL", "SYMBOL_NAME", "DISPLAY_NAME", "INSTRUMENT_TYPE", "SERIES", "LOT_SIZE",
    "SM_EXPIRY_DATE", "STRIKE_PRICE", "OPTION_TYPE", "TICK_SIZE", "EXPIRY_FLAG", "BRACKET_FLAG",
    "COVER_FLAG", "ASM_GSM_FLAG", "ASM_GSM_CATEGORY", "BUY_SELL_INDICATOR",
    "BUY_CO_MIN_MARGIN_PER", "BUY_CO_SL_RANGE_MAX_PERC", "BUY_CO_SL_RANGE_MIN_PERC",
    "BUY_BO_MIN_MARGIN_PER", "BUY_BO_PROFIT_RANGE_MAX_PERC", "BUY_BO_PROFIT_RANGE_MIN_PERC",
    "MTF_LEVERAGE", "SM_UPPER_LIMIT", "SM_LOWER_LIMIT", "SM_FREEZE_QTY",
)  # fmt: skip

# Logical field -> column name per format. Fields in _OPTIONAL may be absent from a header.
_COMPACT_FIELDS = {
    "exchange": "SEM_EXM_EXCH_ID",
    "seg": "SEM_SEGMENT",
    "security_id": "SEM_SMST_SECURITY_ID",
    "instrument": "SEM_INSTRUMENT_NAME",
    "symbol": "SEM_TRADING_SYMBOL",
    "lot": "SEM_LOT_UNITS",
    "display_name": "SEM_CUSTOM_SYMBOL",
    "expiry": "SEM_EXPIRY_DATE",
    "strike": "SEM_STRIKE_PRICE",
    "option_type": "SEM_OPTION_TYPE",
    "tick": "SEM_TICK_SIZE",
    "expiry_flag": "SEM_EXPIRY_FLAG",
    "underlying_name": "SM_SYMBOL_NAME",
}
_DETAILED_FIELDS = {
    "exchange": "EXCH_ID",
    "seg": "SEGMENT",
    "security_id": "SECURITY_ID",
    "instrument": "INSTRUMENT",
    "underlying_name": "UNDERLYING_SYMBOL",
    "symbol": "SYMBOL_NAME",
    "display_name": "DISPLAY_NAME",
    "lot": "LOT_SIZE",
    "expiry": "SM_EXPIRY_DATE",
    "strike": "STRIKE_PRICE",
    "option_type": "OPTION_TYPE",
    "tick": "TICK_SIZE",
    "expiry_flag": "EXPIRY_FLAG",
    "freeze": "SM_FREEZE_QTY",
}
_OPTIONAL = {"display_name", "tick", "expiry_flag", "underlying_name", "freeze"}

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def detect_format(header: Sequence[str]) -> str:
    """``"compact"`` or ``"detailed"`` from a header's column names; DecodeError otherwise."""
    names = set(_normalise_names(header))
    for fmt, fields in (("compact", _COMPACT_FIELDS), ("detailed", _DETAILED_FIELDS)):
        required = {col for key, col in fields.items() if key not in _OPTIONAL}
        if required <= names:
            return fmt
    raise DecodeError(
        "scrip master header matches neither format: expected compact columns "
        f"{sorted(_COMPACT_FIELDS.values())} or detailed {sorted(_DETAILED_FIELDS.values())}, "
        f"got {sorted(names)}"
    )


def parse_scrip_master(source: str | Path | bytes) -> list[Instrument]:
    """Read a compact or detailed scrip master (path or raw bytes) into instruments.

    Rows come out in file order, one per ``(segment, security_id)`` (the first wins).
    Derivative rows without a valid expiry and option rows without CE/PE are dropped.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    first = next(csv.reader(io.StringIO(_first_line(data))), None)
    if first is None:
        raise DecodeError("scrip master is empty: no header line")
    header = _normalise_names(first)
    fields = _DETAILED_FIELDS if detect_format(header) == "detailed" else _COMPACT_FIELDS
    # polars returns selected columns in file order, so name them in that order.
    present = dict(
        sorted(
            ((key, header.index(col)) for key, col in fields.items() if col in header),
            key=lambda kv: kv[1],
        )
    )
    raw = pl.read_csv(
        data,
        columns=list(present.values()),
        infer_schema=False,
        truncate_ragged_lines=True,
        raise_if_empty=False,
    )
    raw = raw.rename(dict(zip(raw.columns, present, strict=True)))
    for key in _OPTIONAL - set(present):
        raw = raw.with_columns(pl.lit(None, dtype=pl.String).alias(key))
    candidates = _candidates(raw.lazy()).collect()
    _check_expiries(candidates, fields["expiry"])
    columns = _finish(candidates.lazy()).collect().to_dict(as_series=False)
    names = list(columns)
    return [
        Instrument(**dict(zip(names, values, strict=True)))
        for values in zip(*columns.values(), strict=True)
    ]


def _candidates(raw: pl.LazyFrame) -> pl.LazyFrame:
    """Index rows and index derivatives of the kept underlyings, fields parsed, not yet checked."""
    s = {key: pl.col(key).str.strip_chars() for key in raw.collect_schema().names()}
    wanted = list(UNDERLYINGS)
    is_index = (s["seg"] == "I") & (s["instrument"] == "INDEX")
    is_deriv = (s["seg"] == "D") & s["instrument"].is_in(KEPT_DERIVATIVES)
    # Cheap row filter first: the string work below then runs on the few index rows left.
    raw = raw.filter(is_index | is_deriv)
    is_option = s["instrument"] == "OPTIDX"
    symbol_head = s["symbol"].str.split("-").list.first()
    display_head = s["display_name"].str.split(" ").list.first()
    underlying = pl.coalesce(
        pl.when(s["underlying_name"].is_in(wanted)).then(s["underlying_name"]),
        pl.when(symbol_head.is_in(wanted)).then(symbol_head),
        pl.when(is_deriv & display_head.is_in(wanted)).then(display_head),
    )
    expiry = s["expiry"].str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
    expiry = pl.when(expiry > date(1900, 1, 1)).then(expiry)
    tick = s["tick"].cast(pl.Float64, strict=False)
    tick_paise = (
        pl.when(tick >= TICK_SIZE_PAISE_MIN)
        .then(tick.round(0))
        .when(tick > 0)
        .then((tick * 100).round(0))
        .otherwise(DEFAULT_TICK_PAISE)
        .cast(pl.Int64)
    )
    option_type = pl.when(s["option_type"].is_in(["CE", "PE"])).then(s["option_type"])
    strike = s["strike"].cast(pl.Float64, strict=False)
    flag = s["expiry_flag"]
    exchange_ok = pl.col("underlying").replace_strict(UNDERLYING_EXCHANGE, default=None)
    return (
        raw.with_columns(
            security_id=s["security_id"].cast(pl.Int64, strict=False),
            exchange=s["exchange"],
            instrument=s["instrument"],
            kind=pl.when(is_index).then(pl.lit("index")).when(is_deriv).then(pl.lit("deriv")),
            is_option=is_option,
            underlying=underlying,
            expiry_date=expiry,
            option_raw=option_type,
            strike_rupees=strike,
            tick_size_paise=tick_paise,
            flag=flag,
            lot_size=s["lot"].cast(pl.Float64, strict=False).round(0).cast(pl.Int64),
            freeze_qty=s["freeze"].cast(pl.Float64, strict=False).round(0).cast(pl.Int64),
            symbol=s["symbol"],
            display_name=s["display_name"],
        )
        .filter(
            pl.col("kind").is_not_null()
            & pl.col("security_id").is_not_null()
            & (pl.col("exchange") == exchange_ok)
        )
        .with_columns(
            raw_expiry=s["expiry"],
            segment=pl.when(pl.col("kind") == "index")
            .then(pl.lit("IDX_I"))
            .otherwise(pl.col("exchange") + "_FNO"),
        )
    )


def _check_expiries(candidates: pl.DataFrame, column: str) -> None:
    """A changed date format would silently drop every derivative: refuse it instead."""
    derivs = candidates.filter(pl.col("kind") == "deriv")
    bad = derivs.filter(pl.col("expiry_date").is_null())
    if derivs.height and bad.height * 2 > derivs.height:
        example = bad["raw_expiry"][0]
        raise DecodeError(
            f"{bad.height} of {derivs.height} index derivatives have no usable {column} "
            f"(e.g. {example!r}; expected YYYY-MM-DD[ HH:MM:SS])"
        )


def _finish(candidates: pl.LazyFrame) -> pl.LazyFrame:
    """Drop unusable rows (derivatives without an expiry, options without CE/PE) and duplicate
    ``(segment, security_id)`` keys; shape the columns as :class:`Instrument` fields."""
    return (
        candidates.filter(
            ((pl.col("kind") == "index") | pl.col("expiry_date").is_not_null())
            & (~pl.col("is_option") | pl.col("option_raw").is_not_null())
        )
        .unique(subset=["segment", "security_id"], keep="first", maintain_order=True)
        .select(
            "security_id",
            "exchange",
            "segment",
            "instrument",
            "underlying",
            pl.col("symbol").fill_null(""),
            pl.col("display_name").fill_null(""),
            expiry=pl.when(pl.col("kind") == "deriv")
            .then(pl.col("expiry_date").dt.strftime("%Y-%m-%d"))
            .otherwise(pl.lit("")),
            strike_paise=pl.when(pl.col("is_option") & (pl.col("strike_rupees") > 0))
            .then((pl.col("strike_rupees") * 100).round(0).cast(pl.Int64))
            .otherwise(0),
            option_type=pl.col("option_raw").fill_null("XX"),
            lot_size=pl.when(pl.col("lot_size") > 0).then(pl.col("lot_size")).otherwise(1),
            tick_size_paise="tick_size_paise",
            expiry_flag=pl.when((pl.col("kind") == "deriv") & pl.col("flag").is_in(["W", "M"]))
            .then(pl.col("flag"))
            .otherwise(pl.lit("")),
            freeze_qty=pl.col("freeze_qty").fill_null(0),
        )
    )


def _first_line(data: bytes) -> str:
    end = data.find(b"\n")
    return data[: end if end >= 0 else len(data)].decode("utf-8-sig").rstrip("\r")


def _normalise_names(header: Iterable[str]) -> list[str]:
    return [name.strip().lstrip("\ufeff").strip().upper() for name in header]


# ---------------------------------------------------------------------------------- lookups


def nearest_expiry(
    instruments: Iterable[Instrument],
    underlying: str,
    trading_day: date | str,
    *,
    instrument: str = "OPTIDX",
) -> str:
    """The earliest ``YYYY-MM-DD`` expiry on or after ``trading_day`` among the ``instrument``
    contracts of ``underlying``; LookupError when the data has none."""
    day = trading_day if isinstance(trading_day, str) else trading_day.isoformat()
    expiries = {
        i.expiry
        for i in instruments
        if i.underlying == underlying and i.instrument == instrument and i.expiry >= day
    }
    if not expiries:
        raise LookupError(f"no {underlying} {instrument} expiry on or after {day}")
    return min(expiries)


# ---------------------------------------------------------------------------------- writers


def write_compact_csv(instruments: Iterable[Instrument], path: str | Path) -> None:
    """Write ``instruments`` in the compact format, as DhanHQ does (see the module docstring)."""
    rows = [_compact_row(i) for i in instruments]
    _write_rows(path, list(COMPACT_COLUMNS), rows, trailing_comma=False)


def write_detailed_csv(instruments: Iterable[Instrument], path: str | Path) -> None:
    """Write ``instruments`` in the detailed format (32 named columns and a trailing comma)."""
    rows = [_detailed_row(i) for i in instruments]
    _write_rows(path, list(DETAILED_COLUMNS), rows, trailing_comma=True)


def _write_rows(
    path: str | Path, header: list[str], rows: list[list[str]], *, trailing_comma: bool
) -> None:
    extra = [""] if trailing_comma else []
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header + extra)
        writer.writerows(row + extra for row in rows)


def _compact_row(i: Instrument) -> list[str]:
    if i.segment == "IDX_I":
        return [
            i.exchange, "I", str(i.security_id), "INDEX", "0", i.symbol, "1.0", i.display_name,
            "0001-01-01", "", "XX", _rupees(i.tick_size_paise, 4), "", "INDEX", "X", i.underlying,
        ]  # fmt: skip
    return [
        i.exchange, "D", str(i.security_id), i.instrument, "0", i.symbol, f"{i.lot_size}.0",
        i.display_name, f"{i.expiry} 14:30:00", _strike_text(i), i.option_type,
        f"{i.tick_size_paise}.0000", i.expiry_flag,
        "OP" if i.instrument == "OPTIDX" else "FUT", "", "",
    ]  # fmt: skip


def _detailed_row(i: Instrument) -> list[str]:
    tail = ["N", "N", "N", "NA", "A", "0", "0", "0", "0", "0", "0", "0", "0.0000", "0.0000"]
    if i.segment == "IDX_I":
        return [
            i.exchange, "I", str(i.security_id), "NA", "INDEX", str(i.security_id), i.underlying,
            i.symbol, i.display_name, "INDEX", "NA", "1.0", "0001-01-01", "", "XX",
            _rupees(i.tick_size_paise, 4), "N", *tail, str(i.freeze_qty),
        ]  # fmt: skip
    return [
        i.exchange, "D", str(i.security_id), "NA", i.instrument,
        str(DETAILED_UNDERLYING_IDS.get(i.underlying, 0)), i.underlying, i.symbol, i.display_name,
        "OP" if i.instrument == "OPTIDX" else "FF", "NA", f"{i.lot_size}.0", i.expiry,
        _strike_text(i), i.option_type, f"{i.tick_size_paise}.0000", i.expiry_flag, *tail,
        str(i.freeze_qty),
    ]  # fmt: skip


def _strike_text(i: Instrument) -> str:
    return _rupees(i.strike_paise, 5) if i.instrument == "OPTIDX" else "-0.01000"


def _rupees(paise: int, decimals: int) -> str:
    """Exact decimal text of a paise amount in rupees, e.g. ``(2580000, 5) -> "25800.00000"``."""
    sign = "-" if paise < 0 else ""
    whole, frac = divmod(abs(paise), 100)
    return f"{sign}{whole}.{frac:02d}{'0' * (decimals - 2)}"


# ---------------------------------------------------------------------------------- naming


def option_symbol(underlying: str, expiry: date, strike_rupees: int, option_type: str) -> str:
    """DhanHQ trading symbol, e.g. ``NIFTY-Dec2026-26000-CE`` (month only: not unique)."""
    month = _MONTHS[expiry.month - 1].title()
    return f"{underlying}-{month}{expiry.year}-{strike_rupees}-{option_type}"


def option_display_name(underlying: str, expiry: date, strike_rupees: int, option_type: str) -> str:
    """DhanHQ display name, e.g. ``NIFTY 01 DEC 26000 CALL``."""
    side = "CALL" if option_type == "CE" else "PUT"
    return f"{underlying} {expiry.day:02d} {_MONTHS[expiry.month - 1]} {strike_rupees} {side}"
