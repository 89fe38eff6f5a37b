"""Position trackers: pending -> active -> exited, or pending -> cancelled (see rows.py).

Each move is one ``UPDATE .. WHERE status = ANY(allowed sources)``; a move the lifecycle does not
allow, or on an unknown position, raises :class:`StoreError` and changes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from shared.errors import StoreError
from shared.models import OpenPosition
from shared.store.base import StoreBase, ist_day_bounds_ns, tick_key
from shared.store.rows import TRACKER_TRANSITIONS, TrackerRow, sources_of


class TrackerMethods(StoreBase):
    """The position-tracker half of :class:`shared.store.ledger.Ledger`."""

    def open_tracker(
        self,
        *,
        position_id: str,
        index_key: str,
        segment: str,
        security_id: int,
        symbol: str,
        option_type: str,
        quantity: int,
        status: str = "pending",
        entry_price_paise: int | None = None,
        entry_tick_id: str | None = None,
        ts_entry: int | None = None,
        signal_id: str = "",
        external: bool = False,
        paper: bool = True,
        meta: dict[str, Any] | None = None,
    ) -> bool:
        """Insert a tracker as ``pending`` (entry order not filled yet) or ``active`` (entry
        fields required). False, and no change, if ``position_id`` already exists."""
        if status not in ("pending", "active"):
            raise StoreError(
                f"position {position_id}: a tracker opens pending or active, not {status!r}"
            )
        if status == "active" and (
            entry_price_paise is None or entry_tick_id is None or ts_entry is None
        ):
            raise StoreError(
                f"position {position_id}: an active tracker needs its entry price, tick and time"
            )
        return self._write_one(
            f"open tracker {position_id}",
            "INSERT INTO position_trackers (position_id, index_key, segment, security_id, symbol,"
            " option_type, status, quantity, entry_price_paise, entry_tick_id, entry_tick_key,"
            " ts_entry, signal_id, external, paper, meta)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (position_id) DO NOTHING",
            (
                position_id, index_key, segment, security_id, symbol, option_type, status,
                quantity, entry_price_paise, entry_tick_id,
                tick_key(entry_tick_id) if entry_tick_id is not None else None, ts_entry,
                signal_id, external, paper, Jsonb(meta or {}),
            ),
        )  # fmt: skip

    def activate_tracker(
        self,
        position_id: str,
        *,
        entry_price_paise: int,
        quantity: int,
        entry_tick_id: str,
        ts_entry: int,
    ) -> TrackerRow:
        """pending -> active once the entry order filled; return the updated tracker."""
        return self._move(
            position_id,
            "active",
            entry_price_paise=entry_price_paise,
            quantity=quantity,
            entry_tick_id=entry_tick_id,
            entry_tick_key=tick_key(entry_tick_id),
            ts_entry=ts_entry,
        )

    def close_tracker(
        self,
        position_id: str,
        *,
        exit_price_paise: int,
        exit_tick_id: str,
        ts_exit: int,
        reason: str,
        pnl_paise: int,
        charges_paise: int = 0,
        quantity: int | None = None,
    ) -> TrackerRow:
        """active -> exited once the exit order filled; return the updated tracker.

        ``quantity`` (the quantity closed) replaces the tracker's, which partial exit fills may
        have lowered on the way; None keeps it.
        """
        extra: dict[str, Any] = {} if quantity is None else {"quantity": quantity}
        return self._move(
            position_id,
            "exited",
            exit_price_paise=exit_price_paise,
            exit_tick_id=exit_tick_id,
            exit_tick_key=tick_key(exit_tick_id),
            ts_exit=ts_exit,
            exit_reason=reason,
            pnl_paise=pnl_paise,
            charges_paise=charges_paise,
            **extra,
        )

    def cancel_tracker(self, position_id: str, reason: str = "") -> TrackerRow:
        """pending -> cancelled (the entry order was rejected, cancelled or expired)."""
        return self._move(position_id, "cancelled", exit_reason=reason)

    def update_tracker_quantity(self, position_id: str, quantity: int) -> TrackerRow:
        """Change the quantity of a pending or active tracker (partial fill, broker correction)."""
        rows = self._rows(
            TrackerRow,
            "UPDATE position_trackers SET quantity = %s, updated_at = now()"
            " WHERE position_id = %s AND status IN ('pending', 'active') RETURNING *",
            (quantity, position_id),
            what=f"update tracker {position_id} quantity",
        )
        if rows:
            return rows[0]
        current = self._current_status(position_id)
        raise StoreError(
            f"position {position_id}: cannot change the quantity of a {current} tracker"
        )

    def update_hwm(
        self, position_id: str, hwm_pnl_paise: int, trailing_state: dict[str, Any]
    ) -> bool:
        """Store the high-water mark and trailing state of an active tracker.

        False (no change) if the tracker is not active, e.g. it exited meanwhile.
        """
        return self._write_one(
            f"update tracker {position_id} hwm",
            "UPDATE position_trackers SET hwm_pnl_paise = %s, trailing_state = %s,"
            " updated_at = now() WHERE position_id = %s AND status = 'active'",
            (hwm_pnl_paise, Jsonb(trailing_state), position_id),
        )

    def get_tracker(self, position_id: str) -> TrackerRow | None:
        rows = self._rows(
            TrackerRow, "SELECT * FROM position_trackers WHERE position_id = %s", (position_id,)
        )
        return rows[0] if rows else None

    def trackers_in_status(self, statuses: Iterable[str]) -> list[TrackerRow]:
        """Trackers whose status is one of ``statuses``, in order of creation."""
        return self._rows(
            TrackerRow,
            "SELECT * FROM position_trackers WHERE status = ANY(%s)"
            " ORDER BY entry_tick_key NULLS LAST, created_at, position_id",
            (list(statuses),),
        )

    def active_trackers(self) -> list[TrackerRow]:
        """Open positions now, oldest entry first."""
        return self.trackers_in_status(["active"])

    def positions_asof(self, tick_id: str) -> list[OpenPosition]:
        """Positions open as of tick ``tick_id``: entered at or before it, not exited by it.

        A position exited at ``tick_id`` itself is no longer open; pending trackers never are.
        """
        k = tick_key(tick_id)
        rows = self._rows(
            TrackerRow,
            "SELECT * FROM position_trackers WHERE status IN ('active', 'exited')"
            " AND entry_tick_key <= %s AND (exit_tick_key IS NULL OR exit_tick_key > %s)"
            " ORDER BY entry_tick_key, position_id",
            (k, k),
        )
        return [
            OpenPosition(
                position_id=r.position_id,
                index=r.index_key,
                security_id=r.security_id,
                option_type=r.option_type,
                quantity=r.quantity,
                entry_price_paise=r.entry_price_paise or 0,
                ts_entry=r.ts_entry or 0,
                symbol=r.symbol,
            )
            for r in rows
        ]

    def closed_trades(self, trading_day: dt.date | str | None = None) -> list[TrackerRow]:
        """Exited trackers, all or those exited on one IST trading day, by exit time."""
        query = "SELECT * FROM position_trackers WHERE status = 'exited'"
        params: tuple[int, ...] = ()
        if trading_day is not None:
            query += " AND ts_exit >= %s AND ts_exit < %s"
            params = ist_day_bounds_ns(trading_day)
        return self._rows(TrackerRow, query + " ORDER BY ts_exit, position_id", params)

    def _move(self, position_id: str, target: str, **fields: Any) -> TrackerRow:
        sets = sql.SQL("").join(
            sql.SQL(", {} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in fields
        )
        query = sql.SQL(
            "UPDATE position_trackers SET status = %(status)s, updated_at = now(){sets}"
            " WHERE position_id = %(pid)s AND status = ANY(%(sources)s) RETURNING *"
        ).format(sets=sets)
        params = {
            **fields,
            "status": target,
            "pid": position_id,
            "sources": sources_of(TRACKER_TRANSITIONS, target),
        }
        rows = self._rows(TrackerRow, query, params, what=f"move tracker {position_id} to {target}")
        if rows:
            return rows[0]
        current = self._current_status(position_id)
        raise StoreError(
            f"position {position_id}: illegal tracker transition {current} -> {target}"
        )

    def _current_status(self, position_id: str) -> str:
        """The tracker's status, or :class:`StoreError` if there is no such tracker."""
        current = self.get_tracker(position_id)
        if current is None:
            raise StoreError(f"position {position_id}: no such tracker")
        return current.status
