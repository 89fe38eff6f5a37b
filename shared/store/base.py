"""What every part of the ledger shares: the connection, transactions, typed row reads."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import class_row

from shared import streamids
from shared.errors import StoreError
from shared.store.db import translate

IST_OFFSET_S = 5 * 3600 + 30 * 60
_EPOCH = dt.date(1970, 1, 1)


def tick_key(tick_id: str) -> int:
    """The order-preserving bigint of a tick id; :class:`StoreError` if it is not ``"ms-seq"``."""
    try:
        return streamids.key(tick_id)
    except (ValueError, TypeError, AttributeError) as exc:
        raise StoreError(f"invalid tick id {tick_id!r}") from exc


def as_date(day: dt.date | str) -> dt.date:
    """A trading day given as a date or ``"YYYY-MM-DD"``."""
    if isinstance(day, dt.date):
        return day
    try:
        return dt.date.fromisoformat(day)
    except (ValueError, TypeError) as exc:
        raise StoreError(f"invalid trading day {day!r}: expected YYYY-MM-DD") from exc


def ist_day_bounds_ns(day: dt.date | str) -> tuple[int, int]:
    """[start, end) of an IST calendar day in UTC ns."""
    start_s = (as_date(day) - _EPOCH).days * 86_400 - IST_OFFSET_S
    return start_s * 1_000_000_000, (start_s + 86_400) * 1_000_000_000


class StoreBase:
    """One connection (autocommit, from :func:`shared.store.db.connect`), used by one thread."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn

    @property
    def conn(self) -> psycopg.Connection:
        return self._conn

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """Run the block atomically, yielding ``self``; nested blocks are savepoints.

        Any exception rolls the block back and propagates (psycopg errors as StoreError).
        """
        with translate("transaction"):
            with self._conn.transaction():
                yield self

    def _write_one(self, what: str, query: Any, params: Sequence[Any]) -> bool:
        """Run one INSERT .. ON CONFLICT DO NOTHING or UPDATE; True if it wrote exactly one row."""
        with translate(what):
            return self._conn.execute(query, params).rowcount == 1

    def _rows(self, cls: type[Any], query: Any, params: Any = None, *, what: str = "") -> list[Any]:
        with translate(what or f"read {cls.__name__}"):
            with self._conn.cursor(row_factory=class_row(cls)) as cur:
                cur.execute(query, params)
                return cur.fetchall()
