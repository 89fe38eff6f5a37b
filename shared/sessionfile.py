"""The recorded-session file format (Parquet), shared by the generator, the recorder and replay.

One row per tick, sorted by ``ts_recv_ns``; prices in rupees as float64 (already on the tick
grid), quantities and times as int64. Key-value metadata carries ``trading_day`` and
``synthetic``.
"""

from __future__ import annotations

import polars as pl

SESSION_SCHEMA: dict[str, type[pl.DataType]] = {
    "ts_recv_ns": pl.Int64,
    "segment": pl.String,
    "security_id": pl.Int64,
    "ltp": pl.Float64,
    "ltq": pl.Int64,
    "ltt_s": pl.Int64,
    "volume": pl.Int64,
    "oi": pl.Int64,
    "bid": pl.Float64,
    "ask": pl.Float64,
    "bid_qty": pl.Int64,
    "ask_qty": pl.Int64,
    "kind": pl.String,
}
"""Column -> polars type of a recorded session, in file order."""
