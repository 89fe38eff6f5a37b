"""Redis stream ids as comparable values.

Tick ids are the ``ticks`` stream ids (``"<ms>-<seq>"``), assigned explicitly by the feed so the
same session always gets the same ids. They order the whole pipeline.
"""

from __future__ import annotations

MAX_SEQ = 999_999


def parse(sid: str | bytes) -> tuple[int, int]:
    if isinstance(sid, bytes):
        sid = sid.decode()
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq or 0)


def fmt(ms: int, seq: int) -> str:
    return f"{ms}-{seq}"


def key(sid: str | bytes) -> int:
    """A bigint with the same order as the stream id (for SQL columns); needs seq < 10**6."""
    ms, seq = parse(sid)
    return ms * 1_000_000 + seq


def from_key(k: int) -> str:
    return fmt(k // 1_000_000, k % 1_000_000)


def less(a: str, b: str) -> bool:
    return parse(a) < parse(b)


def successor(sid: str) -> str:
    ms, seq = parse(sid)
    return fmt(ms, seq + 1)


ZERO = "0-0"
