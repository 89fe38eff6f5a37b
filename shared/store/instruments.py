"""The ``instruments`` table: bulk upsert from the scrip master, reads by underlying or key.

The upsert COPYs the rows into a temporary table and merges them with one
``INSERT .. ON CONFLICT (segment, security_id) DO UPDATE``; rows that did not change are not
rewritten. A full scrip master (~250k rows) takes a few seconds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import psycopg

from shared.models import Instrument

COLUMNS = (
    "security_id", "segment", "exchange", "instrument", "underlying", "symbol", "display_name",
    "expiry", "strike_paise", "option_type", "lot_size", "tick_size_paise", "expiry_flag",
    "freeze_qty",
)  # fmt: skip
_COLS = ", ".join(COLUMNS)
_UPDATABLE = [c for c in COLUMNS if c not in ("segment", "security_id")]
_SET = ", ".join(f"{c} = EXCLUDED.{c}" for c in _UPDATABLE)
_CHANGED = " OR ".join(f"instruments.{c} IS DISTINCT FROM EXCLUDED.{c}" for c in _UPDATABLE)

_MERGE = f"""
INSERT INTO instruments ({_COLS})
SELECT {_COLS} FROM _instruments_in
ON CONFLICT (segment, security_id) DO UPDATE SET {_SET}, updated_at = now()
WHERE {_CHANGED}
"""


def upsert(conn: psycopg.Connection, instruments: Iterable[Instrument]) -> int:
    """Insert or update ``instruments``; return how many rows were inserted or changed.

    Must run inside a transaction (the temporary table is dropped at commit). When the input
    holds the same (segment, security_id) twice, the last one wins.
    """
    latest: dict[tuple[str, int], Instrument] = {}
    for inst in instruments:
        latest[(inst.segment, inst.security_id)] = inst
    if not latest:
        return 0
    conn.execute(
        "CREATE TEMP TABLE _instruments_in (LIKE instruments INCLUDING DEFAULTS) ON COMMIT DROP"
    )
    with conn.cursor() as cur:
        with cur.copy(f"COPY _instruments_in ({_COLS}) FROM STDIN") as copy:
            for i in latest.values():
                copy.write_row(
                    (
                        i.security_id, i.segment, i.exchange, i.instrument, i.underlying,
                        i.symbol, i.display_name, i.expiry or None, i.strike_paise,
                        i.option_type, i.lot_size, i.tick_size_paise, i.expiry_flag,
                        i.freeze_qty,
                    )
                )  # fmt: skip
        cur.execute(_MERGE)
        changed = cur.rowcount
    conn.execute("DROP TABLE _instruments_in")
    return max(changed, 0)


def load(conn: psycopg.Connection, underlying: str | None = None) -> list[Instrument]:
    """All instruments, or those of one underlying, ordered by (segment, security_id)."""
    query = f"SELECT {_COLS} FROM instruments"
    params: tuple[str, ...] = ()
    if underlying is not None:
        query += " WHERE underlying = %s"
        params = (underlying,)
    query += " ORDER BY segment, security_id"
    with conn.cursor() as cur:
        cur.execute(query.encode(), params)
        return [_to_instrument(row) for row in cur]


def get(conn: psycopg.Connection, segment: str, security_id: int) -> Instrument | None:
    """One instrument by its key, or None."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT {_COLS} FROM instruments WHERE segment = %s AND security_id = %s".encode(),
            (segment, security_id),
        )
        row = cur.fetchone()
    return _to_instrument(row) if row is not None else None


def _to_instrument(row: tuple) -> Instrument:
    (security_id, segment, exchange, instrument, underlying, symbol, display_name, expiry,
     strike_paise, option_type, lot_size, tick_size_paise, expiry_flag, freeze_qty) = row  # fmt: skip
    return Instrument(
        security_id=security_id,
        segment=segment,
        exchange=exchange,
        instrument=instrument,
        underlying=underlying,
        symbol=symbol,
        display_name=display_name,
        expiry=expiry.isoformat() if isinstance(expiry, dt.date) else "",
        strike_paise=strike_paise,
        option_type=option_type,
        lot_size=lot_size,
        tick_size_paise=tick_size_paise,
        expiry_flag=expiry_flag,
        freeze_qty=freeze_qty,
    )
