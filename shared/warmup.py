"""Historical 1-minute candles for indicator warm-up, so indicators are valid at 09:15.

Replay: from the previous trading day's recorded session (its index ticks). Live: from DhanHQ's
intraday charts endpoint (``DhanRest.intraday_charts``), converted by :func:`candles_from_charts`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import polars as pl

from shared.candles import Candle, CandleBuilder


def candles_from_ticks(ticks: Iterable[tuple[int, int]]) -> list[Candle]:
    """1-minute candles (09:15-aligned, session hours only) from (ts_ns, price_paise) ticks."""
    b = CandleBuilder(timeframe_min=1, grace_ns=0)
    out: list[Candle] = []
    last = 0
    for ts, price in ticks:
        out.extend(b.on_tick(ts, price))
        last = ts
    out.extend(b.advance(last + 60 * 1_000_000_000))
    return out


def candles_from_session(path: str | Path, security_id: int, segment: str = "IDX_I") -> list[Candle]:
    """1-minute candles of one index from a recorded session file (prices rounded to paise)."""
    df = (
        pl.read_parquet(path, columns=["ts_recv_ns", "segment", "security_id", "ltp"])
        .filter((pl.col("segment") == segment) & (pl.col("security_id") == security_id))
        .sort("ts_recv_ns")
    )
    ts = df["ts_recv_ns"].to_list()
    px = [round(x * 100) for x in df["ltp"].to_list()]
    return candles_from_ticks(zip(ts, px, strict=True))


def candles_from_charts(ts_ns: Sequence[int], open_paise: Sequence[int], high_paise: Sequence[int],
                        low_paise: Sequence[int], close_paise: Sequence[int]) -> list[Candle]:
    """Candles from the intraday charts endpoint's columns (1-minute interval)."""
    return [
        Candle(timeframe_min=1, ts_start=t, open_paise=o, high_paise=h, low_paise=lo, close_paise=c)
        for t, o, h, lo, c in zip(ts_ns, open_paise, high_paise, low_paise, close_paise, strict=True)
    ]
