"""Benchmark: parse a realistic 250,000-row DhanHQ scrip master (detailed and compact formats).

The generated file (seeded) looks like the real download: mostly rows the importer drops
(NSE/BSE equities, stock futures and options, other indices' derivatives, currency, MCX) and
some 30,000 index options and futures of NIFTY, BANKNIFTY, FINNIFTY and SENSEX that it keeps.

    .venv/bin/python bench/bench_instruments_import.py            # 250k rows, 7 runs
    .venv/bin/python bench/bench_instruments_import.py --quick    # 50k rows, 3 runs

Prints one JSON line per format with the median and best parse time (file read included).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.instruments import COMPACT_COLUMNS, DETAILED_COLUMNS, parse_scrip_master  # noqa: E402

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_TAIL = "N,N,N,NA,A,0,0,0,0,0,0,0,0.0000,0.0000"

# underlying -> (exchange, underlying id in the detailed file, spot, step, lot, weekly, kept)
_INDEX_DERIVS = {
    "NIFTY": ("NSE", 26000, 26000, 50, 65, True, True),
    "BANKNIFTY": ("NSE", 26009, 59000, 100, 30, False, True),
    "FINNIFTY": ("NSE", 26037, 27500, 50, 60, False, True),
    "SENSEX": ("BSE", 1, 85000, 100, 20, True, True),
    "MIDCPNIFTY": ("NSE", 26074, 13500, 25, 120, False, False),
    "NIFTYNXT50": ("NSE", 26013, 70000, 100, 25, False, False),
    "BANKEX": ("BSE", 12, 63000, 100, 30, False, False),
    "SENSEX50": ("BSE", 13, 27000, 50, 75, False, False),
}
_INDEX_ROWS = [
    ("NSE", 13, "NIFTY", "Nifty 50"), ("NSE", 25, "BANKNIFTY", "Nifty Bank"),
    ("NSE", 27, "FINNIFTY", "Nifty Fin Service"), ("BSE", 51, "SENSEX", "Sensex"),
    ("NSE", 442, "MIDCPNIFTY", "Nifty Mid Select"), ("NSE", 21, "INDIA VIX", "India VIX"),
]  # fmt: skip


class _Row:
    """One contract, rendered to either format."""

    __slots__ = ("exch", "seg", "sid", "instr", "und", "und_id", "symbol", "display", "itype",
                 "lot", "expiry", "strike", "opt", "tick", "flag", "freeze")  # fmt: skip

    def __init__(self, **kw: object) -> None:
        for key in self.__slots__:
            setattr(self, key, kw.get(key, ""))

    def detailed(self) -> str:
        expiry = self.expiry or "0001-01-01"
        return (
            f"{self.exch},{self.seg},{self.sid},NA,{self.instr},{self.und_id},{self.und},"
            f'{self.symbol},"{self.display}",{self.itype},NA,{self.lot},{expiry},{self.strike},'
            f"{self.opt},{self.tick},{self.flag},{_TAIL},{self.freeze},"
        )

    def compact(self) -> str:
        expiry = f"{self.expiry} 14:30:00" if self.expiry else "0001-01-01"
        return (
            f"{self.exch},{self.seg},{self.sid},{self.instr},0,{self.symbol},{self.lot},"
            f'"{self.display}",{expiry},{self.strike},{self.opt},{self.tick},{self.flag},'
            f"{self.itype},,{self.und if self.seg in ('I', 'E') else ''}"
        )


def _tuesdays(start: date, count: int, weekday: int) -> list[date]:
    first = start + timedelta(days=(weekday - start.weekday()) % 7)
    return [first + timedelta(weeks=k) for k in range(count)]


def generate_rows(n_rows: int, seed: int) -> list[_Row]:
    rng = random.Random(seed)
    rows: list[_Row] = []
    sid = 30_000
    for exch, index_id, name, display in _INDEX_ROWS:
        rows.append(_Row(exch=exch, seg="I", sid=index_id, instr="INDEX", und=name,
                         und_id=index_id, symbol=name, display=display, itype="INDEX",
                         lot="1.0", opt="XX", tick="0.0500", flag="N", freeze=0))  # fmt: skip
    index_share = int(n_rows * 0.16)  # ~40k of 250k: the kept ones plus other indices'
    start = date(2026, 12, 1)
    while len(rows) < index_share:
        for und, (exch, und_id, spot, step, lot, weekly, _kept) in _INDEX_DERIVS.items():
            weekday = 1 if exch == "NSE" else 3
            expiries = _tuesdays(start, 8 if weekly else 3, weekday)
            if not weekly:
                expiries = [e + timedelta(weeks=4 * k) for k, e in enumerate(expiries)]
            for expiry in expiries:
                sid += 1
                mon = f"{_MONTHS[expiry.month - 1].title()}{expiry.year}"
                rows.append(_Row(exch=exch, seg="D", sid=sid, instr="FUTIDX", und=und,
                                 und_id=und_id, symbol=f"{und}-{mon}-FUT",
                                 display=f"{und} {_MONTHS[expiry.month - 1]} FUT", itype="FF",
                                 lot=f"{lot}.0", expiry=expiry.isoformat(), strike="-0.01000",
                                 opt="XX", tick="10.0000", flag="M", freeze=1800))  # fmt: skip
                for k in range(-40, 41):
                    strike = (spot // step + k) * step
                    for opt, word in (("CE", "CALL"), ("PE", "PUT")):
                        sid += 1 + (rng.random() < 0.1)
                        rows.append(_Row(
                            exch=exch, seg="D", sid=sid, instr="OPTIDX", und=und, und_id=und_id,
                            symbol=f"{und}-{mon}-{strike}-{opt}", itype="OP", lot=f"{lot}.0",
                            display=f"{und} {expiry.day:02d} {_MONTHS[expiry.month - 1]} {strike} {word}",
                            expiry=expiry.isoformat(), strike=f"{strike}.00000", opt=opt,
                            tick="5.0000", flag="W" if weekly else "M", freeze=1800,
                        ))  # fmt: skip
            start += timedelta(weeks=1)
    rows = rows[:index_share]
    stocks = [f"STK{n:04d}" for n in range(2_000)]
    while len(rows) < n_rows:
        draw = rng.random()
        stock = rng.choice(stocks)
        sid += 1
        if draw < 0.25:  # equity, NSE or BSE
            exch = "NSE" if rng.random() < 0.6 else "BSE"
            rows.append(_Row(exch=exch, seg="E", sid=sid, instr="EQUITY", und=stock, und_id="",
                             symbol=stock, display=f"{stock.title()} Industries, Ltd",
                             itype="ES", lot="1.0", opt="", tick="5.0000", flag="NA", freeze=0))  # fmt: skip
        elif draw < 0.93:  # stock option
            expiry = date(2026, 12, 29) + timedelta(weeks=4 * rng.randrange(3))
            strike = rng.randrange(100, 5000, 10)
            opt = "CE" if rng.random() < 0.5 else "PE"
            rows.append(_Row(exch="NSE", seg="D", sid=sid, instr="OPTSTK", und=stock,
                             und_id=rng.randrange(1, 30_000),
                             symbol=f"{stock}-{_MONTHS[expiry.month - 1].title()}{expiry.year}-{strike}-{opt}",
                             display=f"{stock} {expiry.day:02d} {_MONTHS[expiry.month - 1]} {strike} {'CALL' if opt == 'CE' else 'PUT'}",
                             itype="OP", lot=f"{rng.choice((250, 500, 1000, 1250))}.0",
                             expiry=expiry.isoformat(), strike=f"{strike}.00000", opt=opt,
                             tick="5.0000", flag="M", freeze=rng.randrange(1_000, 50_000)))  # fmt: skip
        elif draw < 0.95:  # stock future
            rows.append(_Row(exch="NSE", seg="D", sid=sid, instr="FUTSTK", und=stock,
                             und_id=rng.randrange(1, 30_000), symbol=f"{stock}-Dec2026-FUT",
                             display=f"{stock} DEC FUT", itype="FUT", lot="500.0",
                             expiry="2026-12-29", strike="-0.01000", opt="XX", tick="10.0000",
                             flag="M", freeze=10_000))  # fmt: skip
        elif draw < 0.975:  # currency option
            rows.append(_Row(exch="NSE", seg="C", sid=sid, instr="OPTCUR", und="USDINR",
                             und_id=600, symbol="USDINR-Dec2026-88.25-CE",
                             display="USDINR 29 DEC 88.25 CALL", itype="OPTCUR", lot="1.0",
                             expiry="2026-12-29", strike="88.25000", opt="CE", tick="0.2500",
                             flag="M", freeze=701))  # fmt: skip
        else:  # MCX option
            rows.append(_Row(exch="MCX", seg="M", sid=sid, instr="OPTFUT", und="CRUDEOIL",
                             und_id=294, symbol="CRUDEOIL-16Dec2026-6500-CE",
                             display="CRUDEOIL 16 DEC 6500 CALL", itype="OPTFUT", lot="1.0",
                             expiry="2026-12-16", strike="6500.00000", opt="CE",
                             tick="10.0000", flag="M", freeze=100))  # fmt: skip
    rng.shuffle(rows)
    return rows


def write_files(rows: list[_Row], out_dir: Path) -> dict[str, Path]:
    detailed = out_dir / "api-scrip-master-detailed.csv"
    compact = out_dir / "api-scrip-master.csv"
    detailed.write_text(
        "\n".join([",".join(DETAILED_COLUMNS) + ",", *(r.detailed() for r in rows)]) + "\n"
    )
    compact.write_text("\n".join([",".join(COMPACT_COLUMNS), *(r.compact() for r in rows)]) + "\n")
    return {"detailed": detailed, "compact": compact}


def time_parse(path: Path, runs: int) -> dict[str, object]:
    timings, kept = [], 0
    for _ in range(runs):
        began = time.perf_counter()
        kept = len(parse_scrip_master(path))
        timings.append(time.perf_counter() - began)
    return {
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "kept": kept,
        "runs": runs,
        "median_s": round(statistics.median(timings), 4),
        "best_s": round(min(timings), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50k rows, 3 runs")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=20261201)
    args = parser.parse_args(argv)
    n_rows = args.rows or (50_000 if args.quick else 250_000)
    runs = args.runs or (3 if args.quick else 7)
    rows = generate_rows(n_rows, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, path in write_files(rows, Path(tmp)).items():
            result = {"format": fmt, "rows": n_rows, "seed": args.seed} | time_parse(path, runs)
            print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
