"""Scrip master parsing and writing (reference: dhanhq-api.md §6)."""

from __future__ import annotations

from datetime import date

import msgspec
import pytest

from shared.errors import DecodeError
from shared.instruments import (
    COMPACT_COLUMNS,
    DETAILED_COLUMNS,
    detect_format,
    nearest_expiry,
    parse_scrip_master,
    write_compact_csv,
    write_detailed_csv,
)
from shared.models import Instrument

COMPACT_HEADER = ",".join(COMPACT_COLUMNS)
DETAILED_HEADER = ",".join(DETAILED_COLUMNS) + ","

# §6.5 rows verbatim, then rows that must be filtered out or exercise a quirk.
COMPACT_INDEX_2026 = "NSE,I,13,INDEX,0,NIFTY,1.0,Nifty 50,0001-01-01,,XX,0.0500,,INDEX,X,NIFTY"
COMPACT_INDEX_2024 = (
    "NSE,I,25,INDEX,0,BANKNIFTY,1.0,Nifty Bank,,7.00000,,1.0000,NA,INDEX,X,BANKNIFTY"
)
COMPACT_WEEKLY_PUT = (
    "NSE,D,58549,OPTIDX,0,NIFTY-Oct2024-25800-PE,25.0,NIFTY 03 OCT 25800 PUT,"
    "2024-10-03 14:30:00,25800.00000,PE,5.0000,W,OP,,"
)
COMPACT_ROWS = [
    COMPACT_INDEX_2026,
    COMPACT_INDEX_2024,
    COMPACT_WEEKLY_PUT,
    # the same trading symbol, a later weekly: a different contract
    "NSE,D,44430,OPTIDX,0,NIFTY-Oct2024-25800-PE,25.0,NIFTY 24 OCT 25800 PUT,"
    "2024-10-24 14:30:00,25800.00000,PE,5.0000,W,OP,,",
    "NSE,D,48704,FUTIDX,0,FINNIFTY-Oct2024-FUT,65.0,FINNIFTY OCT FUT,2024-10-29 14:30:00,"
    "-0.01000,XX,10.0000,M,FUT,,",
    "BSE,D,1100470,OPTIDX,0,SENSEX-Oct2024-81000-CE,10.0,SENSEX 04 OCT 81000 CALL,"
    "2024-10-04 14:30:00,81000.00000,CE,5.0000,W,OP,,",
    "BSE,I,51,INDEX,0,SENSEX,1.0,Sensex,0001-01-01,,XX,0.0500,,INDEX,X,SENSEX",
    # filtered out: equity, stock option, other indices' options, NIFTY-prefixed lookalike
    'NSE,E,2885,EQUITY,0,RELIANCE,1.0,"Reliance Industries, Ltd",,,,10.0000,NA,ES,EQ,RELIANCE',
    "NSE,D,106277,OPTSTK,0,RELIANCE-Oct2024-3000-CE,250.0,RELIANCE 31 OCT 3000 CALL,"
    "2024-10-31 14:30:00,3000.00000,CE,5.0000,M,OP,,",
    "NSE,D,40001,OPTIDX,0,NIFTYNXT50-Oct2024-70000-CE,25.0,NIFTYNXT50 29 OCT 70000 CALL,"
    "2024-10-29 14:30:00,70000.00000,CE,5.0000,M,OP,,",
    "BSE,D,1100999,OPTIDX,0,BANKEX-Oct2024-60000-CE,15.0,BANKEX 29 OCT 60000 CALL,"
    "2024-10-29 14:30:00,60000.00000,CE,5.0000,M,OP,,",
    "NSE,I,442,INDEX,0,MIDCPNIFTY,1.0,Nifty Mid Select,0001-01-01,,XX,0.0500,,INDEX,X,MIDCPNIFTY",
    "MCX,M,565899,FUTCOM,0,CRUDEOIL-19Aug2026-FUT,1.0,CRUDEOIL AUG FUT,2026-08-19 23:30:00,"
    "-0.01000,XX,100.0000,M,FUT,,",
]

DETAILED_INDEX = (
    "NSE,I,13,NA,INDEX,13,NIFTY,NIFTY,Nifty 50,INDEX,NA,1.0,0001-01-01,,XX,0.0500,"
    "N,N,N,N,NA,A,0,0,0,0,0,0,0,0.0000,0.0000,0,"
)
DETAILED_OPTION = (
    "NSE,D,35084,NA,OPTIDX,26000,NIFTY,NIFTY-Sep2026-29150-CE,NIFTY 29 SEP 29150 CALL,OP,NA,"
    "65.0,2026-09-29,29150.00000,CE,5.0000,M,N,N,N,NA,A,0,0,0,0,0,0,0,20.1000,0.0500,1756,"
)
DETAILED_FUTURE = (
    "NSE,D,49081,NA,FUTIDX,26000,NIFTY,NIFTY-Sep2026-FUT,NIFTY SEP FUT,FF,NA,65.0,2026-09-29,"
    "-0.01000,XX,0.0500,M,N,N,N,NA,A,0,0,0,0,0,0,0,26050.0000,20450.0000,1800,"
)
DETAILED_EQUITY = (
    "NSE,E,2885,INE002A01018,EQUITY,,RELIANCE,RELIANCE INDUSTRIES LTD,Reliance Industries,ES,"
    "EQ,1.0,,,,10.0000,NA,N,N,N,NA,A,0,0,0,0,0,0,0,0.0000,0.0000,0,"
)


def _csv(header: str, rows: list[str]) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def _by_id(instruments: list[Instrument]) -> dict[int, Instrument]:
    return {i.security_id: i for i in instruments}


def test_compact_rows_parse_with_quirks_and_only_index_contracts_are_kept() -> None:
    got = _by_id(parse_scrip_master(_csv(COMPACT_HEADER, COMPACT_ROWS)))

    assert sorted(got) == [13, 25, 51, 44430, 48704, 58549, 1100470]
    assert got[13] == Instrument(
        security_id=13, exchange="NSE", segment="IDX_I", instrument="INDEX", underlying="NIFTY",
        symbol="NIFTY", display_name="Nifty 50", expiry="", strike_paise=0, option_type="XX",
        lot_size=1, tick_size_paise=5, expiry_flag="", freeze_qty=0,
    )  # fmt: skip
    # 2024 capture: junk strike 7.00000, blank option type, "NA" flag, tick 1.0000 (paise)
    assert got[25].strike_paise == 0 and got[25].option_type == "XX"
    assert got[25].expiry_flag == "" and got[25].tick_size_paise == 1
    assert got[58549] == Instrument(
        security_id=58549, exchange="NSE", segment="NSE_FNO", instrument="OPTIDX",
        underlying="NIFTY", symbol="NIFTY-Oct2024-25800-PE", display_name="NIFTY 03 OCT 25800 PUT",
        expiry="2024-10-03", strike_paise=2_580_000, option_type="PE", lot_size=25,
        tick_size_paise=5, expiry_flag="W",
    )  # fmt: skip
    # weeklies sharing a trading symbol stay two contracts
    assert got[44430].symbol == got[58549].symbol and got[44430].expiry == "2024-10-24"
    fut = got[48704]
    assert (fut.underlying, fut.strike_paise, fut.option_type, fut.tick_size_paise) == (
        "FINNIFTY",
        0,
        "XX",
        10,
    )
    assert (got[1100470].segment, got[1100470].underlying) == ("BSE_FNO", "SENSEX")
    assert got[51].segment == "IDX_I" and got[51].exchange == "BSE"


def test_crlf_line_endings_and_an_empty_file() -> None:
    crlf = ("\r\n".join([COMPACT_HEADER, *COMPACT_ROWS]) + "\r\n").encode()
    assert parse_scrip_master(crlf) == parse_scrip_master(_csv(COMPACT_HEADER, COMPACT_ROWS))
    with pytest.raises(DecodeError, match="empty"):
        parse_scrip_master(b"")


def test_detailed_rows_parse_with_trailing_comma_freeze_qty_and_26000_underlying_id() -> None:
    data = _csv(
        DETAILED_HEADER, [DETAILED_INDEX, DETAILED_OPTION, DETAILED_FUTURE, DETAILED_EQUITY]
    )
    got = _by_id(parse_scrip_master(data))

    assert sorted(got) == [13, 35084, 49081]
    assert got[13].segment == "IDX_I" and got[13].underlying == "NIFTY"
    assert got[13].expiry_flag == "" and got[13].tick_size_paise == 5
    assert got[35084] == Instrument(
        security_id=35084, exchange="NSE", segment="NSE_FNO", instrument="OPTIDX",
        underlying="NIFTY", symbol="NIFTY-Sep2026-29150-CE", display_name="NIFTY 29 SEP 29150 CALL",
        expiry="2026-09-29", strike_paise=2_915_000, option_type="CE", lot_size=65,
        tick_size_paise=5, expiry_flag="M", freeze_qty=1756,
    )  # fmt: skip
    fut = got[49081]
    assert (fut.strike_paise, fut.option_type, fut.tick_size_paise, fut.freeze_qty) == (
        0, "XX", 5, 1800
    )  # fmt: skip


def test_detailed_docs_style_header_without_freeze_column_and_opaque_bse_symbol() -> None:
    header = (
        "EXCH_ID,SEGMENT,SECURITY_ID,ISIN,INSTRUMENT,UNDERLYING_SECURITY_ID,UNDERLYING_SYMBOL,"
        "SYMBOL_NAME,DISPLAY_NAME,INSTRUMENT_TYPE,SERIES,LOT_SIZE,SM_EXPIRY_DATE,STRIKE_PRICE,"
        "OPTION_TYPE,TICK_SIZE,EXPIRY_FLAG,MTF_LEVERAGE"
    )
    rows = [
        "BSE,D,869699,NA,OPTIDX,1,SENSEX,BSXOPT,SENSEX 17 SEP 74300 CALL,OPTIDX,NA,20.0,"
        "2026-09-17,74300.00000,CE,5.0000,W,0",
        "NSE,D,47317,NA,OPTIDX,26000,NIFTY,NIFTY-Sep2026-23950-CE,NIFTY 15 SEP 23950 CALL,OP,NA,"
        "65.0,2026-09-15 14:30:00,23950.00000,CE,5.0000,W,0",
    ]
    got = _by_id(parse_scrip_master(_csv("\ufeff" + header, rows)))

    assert got[869699].underlying == "SENSEX" and got[869699].segment == "BSE_FNO"
    assert got[869699].lot_size == 20 and got[869699].freeze_qty == 0
    assert got[47317].expiry == "2026-09-15"


def test_format_is_detected_from_the_header_and_unknown_headers_are_refused() -> None:
    assert detect_format(COMPACT_COLUMNS) == "compact"
    assert detect_format([*DETAILED_COLUMNS, ""]) == "detailed"
    with pytest.raises(DecodeError, match="neither format"):
        parse_scrip_master(b"EXCH_ID,SEGMENT,SECURITY_ID\nNSE,D,1\n")


def test_rows_without_a_usable_expiry_or_option_type_are_dropped() -> None:
    rows = [
        "NSE,D,1,OPTIDX,0,NIFTY-Oct2024-25800-PE,25.0,NIFTY 03 OCT 25800 PUT,0001-01-01,"
        "25800.00000,PE,5.0000,W,OP,,",
        "NSE,D,2,OPTIDX,0,NIFTY-Oct2024-25800-PE,25.0,NIFTY 03 OCT 25800 PUT,2024-10-03 14:30:00,"
        "25800.00000,XX,5.0000,W,OP,,",
    ]
    assert parse_scrip_master(_csv(COMPACT_HEADER, rows)) == []


def test_an_unknown_expiry_date_format_is_refused_rather_than_dropping_every_contract() -> None:
    rows = [COMPACT_INDEX_2026, COMPACT_WEEKLY_PUT.replace("2024-10-03 14:30:00", "03/10/2024")]
    with pytest.raises(DecodeError, match="SEM_EXPIRY_DATE.*03/10/2024"):
        parse_scrip_master(_csv(COMPACT_HEADER, rows))


def _sample_instruments() -> list[Instrument]:
    def option(sid: int, und: str, exch: str, expiry: str, strike: int, side: str, lot: int):
        return Instrument(
            security_id=sid, exchange=exch, segment=f"{exch}_FNO", instrument="OPTIDX",
            underlying=und, symbol=f"{und}-Dec2026-{strike}-{side}",
            display_name=f"{und} {expiry[8:]} DEC {strike} {'CALL' if side == 'CE' else 'PUT'}",
            expiry=expiry, strike_paise=strike * 100, option_type=side, lot_size=lot,
            tick_size_paise=5, expiry_flag="W" if und in ("NIFTY", "SENSEX") else "M",
            freeze_qty=1800,
        )  # fmt: skip

    def index(sid: int, und: str, exch: str, name: str) -> Instrument:
        return Instrument(
            security_id=sid, exchange=exch, segment="IDX_I", instrument="INDEX", underlying=und,
            symbol=und, display_name=name, tick_size_paise=5,
        )  # fmt: skip

    return [
        index(13, "NIFTY", "NSE", "Nifty 50"),
        index(25, "BANKNIFTY", "NSE", "Nifty Bank"),
        index(27, "FINNIFTY", "NSE", "Nifty Fin Service"),
        index(51, "SENSEX", "BSE", "Sensex"),
        option(41001, "NIFTY", "NSE", "2026-12-01", 26000, "CE", 65),
        option(41002, "NIFTY", "NSE", "2026-12-01", 26000, "PE", 65),
        option(43001, "NIFTY", "NSE", "2026-12-08", 26000, "CE", 65),  # same trading symbol
        option(42001, "BANKNIFTY", "NSE", "2026-12-29", 59100, "PE", 30),
        option(1100470, "SENSEX", "BSE", "2026-12-03", 85100, "CE", 20),
        Instrument(
            security_id=49081,
            exchange="NSE",
            segment="NSE_FNO",
            instrument="FUTIDX",
            underlying="FINNIFTY",
            symbol="FINNIFTY-Dec2026-FUT",
            display_name="FINNIFTY DEC FUT",
            expiry="2026-12-29",
            lot_size=60,
            tick_size_paise=10,
            expiry_flag="M",
            freeze_qty=1800,
        ),  # fmt: skip
    ]


def test_compact_writer_round_trips_through_the_parser(tmp_path) -> None:
    instruments = _sample_instruments()
    path = tmp_path / "api-scrip-master.csv"
    write_compact_csv(instruments, path)

    # the compact file has no freeze column
    expected = [msgspec.structs.replace(i, freeze_qty=0) for i in instruments]
    assert parse_scrip_master(path) == expected


def test_detailed_writer_round_trips_through_the_parser(tmp_path) -> None:
    instruments = _sample_instruments()
    path = tmp_path / "api-scrip-master-detailed.csv"
    write_detailed_csv(instruments, path)

    assert parse_scrip_master(path.read_bytes()) == instruments


def test_writers_produce_the_real_row_formats(tmp_path) -> None:
    nifty = _by_id(parse_scrip_master(_csv(COMPACT_HEADER, COMPACT_ROWS)))
    compact = tmp_path / "c.csv"
    write_compact_csv([nifty[13], nifty[58549]], compact)
    assert compact.read_text().splitlines() == [
        COMPACT_HEADER,
        COMPACT_INDEX_2026,
        COMPACT_WEEKLY_PUT,
    ]

    detailed = tmp_path / "d.csv"
    parsed = _by_id(parse_scrip_master(_csv(DETAILED_HEADER, [DETAILED_INDEX, DETAILED_OPTION])))
    write_detailed_csv([parsed[13], parsed[35084]], detailed)
    header, index_row, option_row = detailed.read_text().splitlines()
    assert header == DETAILED_HEADER
    assert index_row == DETAILED_INDEX
    # same but the daily price band, which an Instrument does not carry
    assert option_row == DETAILED_OPTION.replace("20.1000,0.0500", "0.0000,0.0000")


def test_nearest_expiry_is_taken_from_the_data() -> None:
    instruments = _sample_instruments()
    assert nearest_expiry(instruments, "NIFTY", date(2026, 11, 30)) == "2026-12-01"
    assert nearest_expiry(instruments, "NIFTY", date(2026, 12, 1)) == "2026-12-01"
    assert nearest_expiry(instruments, "NIFTY", "2026-12-02") == "2026-12-08"
    assert nearest_expiry(instruments, "FINNIFTY", date(2026, 12, 1), instrument="FUTIDX") == (
        "2026-12-29"
    )
    with pytest.raises(LookupError):
        nearest_expiry(instruments, "NIFTY", date(2026, 12, 9))
