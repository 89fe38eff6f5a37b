"""Loading a recorded session file (Parquet written by the recorder or ``scalper synth``)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from services.feed.core import Recorded
from shared.clock import hhmm_to_minutes, ist_day, ist_minute_of_day


def read_metadata(path: str | Path) -> dict[str, str]:
    try:
        return dict(pl.read_parquet_metadata(path))
    except Exception:  # noqa: BLE001 - metadata is optional
        return {}


def load_session(path: str | Path, *, from_hhmm: str | None = None, to_hhmm: str | None = None) -> Recorded:
    """Read a session file, optionally keeping only ticks between two IST times."""
    df = pl.read_parquet(path).sort("ts_recv_ns", maintain_order=True)
    if df.height == 0:
        raise ValueError(f"{path}: the session file has no ticks")
    meta = read_metadata(path)
    day = meta.get("trading_day") or ist_day(int(df["ts_recv_ns"][0])).isoformat()
    if from_hhmm or to_hhmm:
        mins = [ist_minute_of_day(int(t)) for t in df["ts_recv_ns"].to_list()]
        lo = hhmm_to_minutes(from_hhmm) if from_hhmm else 0
        hi = hhmm_to_minutes(to_hhmm) if to_hhmm else 24 * 60
        df = df.filter(pl.Series([lo <= m < hi for m in mins]))
        if df.height == 0:
            raise ValueError(f"{path}: no ticks between {from_hhmm} and {to_hhmm} IST")
    cols = {c: df[c].to_list() for c in Recorded.COLUMNS}
    return Recorded(cols, day)
