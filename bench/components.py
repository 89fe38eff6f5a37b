"""Single-process figures, each beside its own floor, taken in alternation run by run.

- ``decode``: Full packets through ``codec.decode_message`` one message at a time (the approach
  of ``bench/bench_decode.py``: seeded packets from its ``make_full``, ``perf_counter`` around a
  loop), beside the floor ``struct.Struct.unpack_from`` of the same 162-byte layout alone — what
  any Python decoder of this packet must pay before building objects.
- ``scrip_import``: a seeded 250,000-row scrip master in the detailed format (the generator of
  ``bench/bench_instruments_import.py``) through ``parse_scrip_master`` and then
  ``Ledger.upsert_instruments`` into a fresh throw-away schema (migrated before the clock
  starts), beside two floors: polars reading the same file with every column as text, and a
  plain psycopg ``COPY`` of the kept rows into a temporary table.

    .venv/bin/python bench/components.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import random
import tempfile
import time
from pathlib import Path

from common import Figure, drop_schema, env_config, throwaway

DECODE_SEED = 20250714
SCRIP_SEED = 20261201


def _prototypes(codec):  # type: ignore[no-untyped-def]
    """Two decoders that build fewer objects than ``codec.decode_message`` — bench-only
    prototypes of what would close the decode gap, not project code.

    - flat: one struct, the 30 depth values left as one tuple (no DepthLevel objects);
    - lazy: unpack only the header, trade fields and best level (24 values, the other 80 bytes
      skipped with ``x`` pad bytes), keep the raw bytes for depth on demand.
    """
    import struct

    import msgspec

    class FlatFull(msgspec.Struct, frozen=True, gc=False):
        segment_code: int
        security_id: int
        ltp: float
        ltq: int
        ltt: int
        atp: float
        volume: int
        total_sell_qty: int
        total_buy_qty: int
        oi: int
        oi_day_high: int
        oi_day_low: int
        day_open: float
        day_close: float
        day_high: float
        day_low: float
        depth_flat: tuple  # type: ignore[type-arg]

    class LazyFull(msgspec.Struct, frozen=True, gc=False):
        segment_code: int
        security_id: int
        ltp: float
        ltq: int
        ltt: int
        atp: float
        volume: int
        total_sell_qty: int
        total_buy_qty: int
        oi: int
        oi_day_high: int
        oi_day_low: int
        day_open: float
        day_close: float
        day_high: float
        day_low: float
        best: tuple  # type: ignore[type-arg]
        raw: bytes

    unpack = codec._FULL.unpack_from
    head = struct.Struct("<BHBIfHIfIIIIIIffffIIHHff" + "x" * 80).unpack_from
    assert struct.calcsize("<BHBIfHIfIIIIIIffffIIHHff" + "x" * 80) == codec._FULL.size

    def flat(m: bytes) -> FlatFull:
        v = unpack(m, 0)
        return FlatFull(
            v[2],
            v[3],
            v[4],
            v[5],
            v[6],
            v[7],
            v[8],
            v[9],
            v[10],
            v[11],
            v[12],
            v[13],
            v[14],
            v[15],
            v[16],
            v[17],
            v[18:],
        )

    def lazy(m: bytes) -> LazyFull:
        (
            _,
            _,
            seg,
            sid,
            ltp,
            ltq,
            ltt,
            atp,
            vol,
            sell,
            buy,
            oi,
            oi_hi,
            oi_lo,
            op,
            cl,
            hi,
            lo,
            a0,
            a1,
            a2,
            a3,
            a4,
            a5,
        ) = head(m, 0)
        return LazyFull(
            seg,
            sid,
            ltp,
            ltq,
            ltt,
            atp,
            vol,
            sell,
            buy,
            oi,
            oi_hi,
            oi_lo,
            op,
            cl,
            hi,
            lo,
            (a0, a1, a2, a3, a4, a5),
            m,
        )

    return flat, lazy


def decode(runs: int, distinct: int, repeat: int) -> tuple[Figure, Figure, list[Figure]]:
    """(decode_message packets/s, unpack_from floor packets/s, prototypes), run by run."""
    from bench_decode import make_full

    from shared.dhan import codec

    rng = random.Random(DECODE_SEED)
    fulls = [codec.encode(make_full(rng)) for _ in range(distinct)] * repeat
    n = len(fulls)
    decode_message = codec.decode_message
    unpack = codec._FULL.unpack_from
    fig = Figure(
        "Full packets decoded, decode_message",
        "packets/s",
        extra={"packets": n, "distinct": distinct, "seed": DECODE_SEED},
    )
    floor = Figure("floor: struct unpack_from alone (Full layout)", "packets/s")
    flat, lazy = _prototypes(codec)
    protos = [
        Figure("prototype: flat struct, depth as one tuple", "packets/s"),
        Figure("prototype: lazy (header + best level, raw bytes kept)", "packets/s"),
    ]
    ref = codec.decode_packet(fulls[0])
    assert flat(fulls[0]).ltp == lazy(fulls[0]).ltp == ref.ltp
    gc.collect()
    for _ in range(runs):
        t0 = time.perf_counter()
        for m in fulls:
            unpack(m, 0)
        floor.values.append(n / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for m in fulls:
            decode_message(m)
        fig.values.append(n / (time.perf_counter() - t0))
        for proto, fn in zip(protos, (flat, lazy), strict=True):
            t0 = time.perf_counter()
            for m in fulls:
                fn(m)
            proto.values.append(n / (time.perf_counter() - t0))
    return fig, floor, protos


def _copy_floor(database_url: str, schema: str, instruments: list) -> float:  # type: ignore[type-arg]
    """Seconds for a plain COPY of the instrument rows into a temporary table."""
    from shared.store.db import connect
    from shared.store.instruments import COLUMNS

    conn = connect(database_url, schema, application_name="bench-floor")
    try:
        with conn.transaction():
            conn.execute(
                "CREATE TEMP TABLE _floor_in (LIKE instruments INCLUDING DEFAULTS) ON COMMIT DROP"
            )
            t0 = time.perf_counter()
            with (
                conn.cursor() as cur,
                cur.copy(f"COPY _floor_in ({', '.join(COLUMNS)}) FROM STDIN") as copy,
            ):
                for i in instruments:
                    copy.write_row(
                        (
                            i.security_id,
                            i.segment,
                            i.exchange,
                            i.instrument,
                            i.underlying,
                            i.symbol,
                            i.display_name,
                            i.expiry or None,
                            i.strike_paise,
                            i.option_type,
                            i.lot_size,
                            i.tick_size_paise,
                            i.expiry_flag,
                            i.freeze_qty,
                        )
                    )
            return time.perf_counter() - t0
    finally:
        conn.close()


def scrip_import(runs: int, rows: int) -> dict[str, Figure]:
    """Parse + upsert of a ``rows``-row detailed scrip master; seconds per run."""
    import polars as pl
    from bench_instruments_import import generate_rows, write_files

    from shared.instruments import parse_scrip_master
    from shared.store.db import connect
    from shared.store.ledger import Ledger
    from shared.store.migrate import migrate

    env = env_config()
    figs = {
        "parse": Figure("parse_scrip_master", "s"),
        "upsert": Figure("Ledger.upsert_instruments (empty table)", "s"),
        "total": Figure("scrip master import, parse + upsert", "s"),
        "floor_read": Figure("floor: polars read_csv, all columns as text", "s"),
        "floor_copy": Figure("floor: plain COPY of the kept rows", "s"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = write_files(generate_rows(rows, SCRIP_SEED), Path(tmp))["detailed"]
        figs["total"].extra.update(
            rows=rows, file_mb=round(path.stat().st_size / 1e6, 1), seed=SCRIP_SEED
        )
        for _ in range(runs):
            t0 = time.perf_counter()
            pl.read_csv(path, infer_schema=False, truncate_ragged_lines=True)
            figs["floor_read"].values.append(time.perf_counter() - t0)
            schema = throwaway()
            try:
                conn = connect(env.database_url, schema, application_name="bench-import")
                migrate(conn, schema)
                t0 = time.perf_counter()
                instruments = parse_scrip_master(path)
                t1 = time.perf_counter()
                changed = Ledger(conn).upsert_instruments(instruments)
                t2 = time.perf_counter()
                conn.close()
                assert changed == len(instruments), (changed, len(instruments))
                figs["parse"].values.append(t1 - t0)
                figs["upsert"].values.append(t2 - t1)
                figs["total"].values.append(t2 - t0)
                figs["total"].extra["kept"] = len(instruments)
                figs["floor_copy"].values.append(_copy_floor(env.database_url, schema, instruments))
            finally:
                drop_schema(env.database_url, schema)
    return figs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    fig, floor, protos = decode(
        3 if a.quick else 7, 2_000 if a.quick else 10_000, 5 if a.quick else 20
    )
    for f in (fig, floor, *protos):
        print(f"{f.name:<50} {f.median:>12,.0f} {f.unit} (median of {f.runs})")
    for f in scrip_import(2 if a.quick else 5, 50_000 if a.quick else 250_000).values():
        print(f"{f.name:<50} {f.median:>12.3f} {f.unit} (median of {f.runs})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
