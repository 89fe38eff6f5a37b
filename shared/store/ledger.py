"""The ledger: orders, fills, position trackers, signals, outbox and trading state in PostgreSQL.

``Ledger(conn)`` wraps one autocommit connection from :func:`shared.store.db.connect`. Each
method is one atomic statement (or its own transaction); group several in
``with ledger.transaction():`` (nestable: inner blocks are savepoints), e.g. a state change and
its outbox event. Status changes are single ``UPDATE .. WHERE status = ANY(allowed sources)``
statements, so two writers cannot both make the same move. Every failure is a
:class:`StoreError`: database errors, unknown ids and illegal transitions alike.

Amounts in integer paise, market times UTC ns (``ts_*``), tick ids stream ids ``"ms-seq"``.
Position tracker methods live in :mod:`shared.store.trackers`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from shared.errors import StoreError
from shared.messages import Signal, SignalSkipped
from shared.models import Instrument
from shared.store import instruments as _instruments
from shared.store.base import as_date, tick_key
from shared.store.db import translate
from shared.store.rows import (
    ORDER_STATUSES,
    ORDER_TRANSITIONS,
    TRADING_STATES,
    DailyRiskRow,
    FillRow,
    OrderRow,
    OutboxRow,
    TradingStateRow,
    sources_of,
)
from shared.store.trackers import TrackerMethods

__all__ = ["ORDER_TRANSITIONS", "Ledger"]

# Columns set_order_status may change besides the status itself.
_ORDER_FIELDS = frozenset({"broker_order_id", "filled_qty", "avg_price_paise", "reason", "payload"})


class Ledger(TrackerMethods):
    """Typed reads and writes of the ledger tables over one connection (one thread at a time)."""

    # -- instruments -----------------------------------------------------------------------

    def upsert_instruments(self, instruments: Iterable[Instrument]) -> int:
        """Insert or update instruments by (segment, security_id); return rows inserted/changed."""
        with translate("upsert instruments"), self._conn.transaction():
            return _instruments.upsert(self._conn, instruments)

    def load_instruments(self, underlying: str | None = None) -> list[Instrument]:
        """All instruments, or one underlying's, ordered by (segment, security_id)."""
        with translate("load instruments"):
            return _instruments.load(self._conn, underlying)

    def get_instrument(self, segment: str, security_id: int) -> Instrument | None:
        """One instrument by (segment, security_id), or None if it was never imported."""
        with translate(f"get instrument {segment}:{security_id}"):
            return _instruments.get(self._conn, segment, security_id)

    # -- signals ---------------------------------------------------------------------------

    def insert_signal(self, msg: Signal | SignalSkipped) -> bool:
        """Record a signal or a skipped candle; False if its msg_id is already recorded."""
        sig = msg if isinstance(msg, Signal) else None
        row = (
            msg.msg_id, msg.index, sig.direction if sig else None, msg.timeframe_min,
            msg.candle_ts, msg.ts_event, msg.tick_id, tick_key(msg.tick_id),
            sig.close_paise if sig else None, sig.supertrend_paise if sig else None,
            sig.adx if sig else None, sig.confidence if sig else None,
            sig.multiplier if sig else None, msg.reason, "signal" if sig else "skipped",
        )  # fmt: skip
        return self._write_one(
            "insert signal",
            "INSERT INTO signals (msg_id, index_key, direction, timeframe_min, candle_ts,"
            " ts_event, tick_id, tick_key, close_paise, supertrend_paise, adx, confidence,"
            " multiplier, reason, kind)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            row,
        )

    # -- orders and fills ------------------------------------------------------------------

    def create_order(
        self,
        *,
        correlation_id: str,
        intent_msg_id: str,
        position_id: str,
        kind: str,
        side: str,
        segment: str,
        security_id: int,
        symbol: str,
        quantity: int,
        ts_intent: int,
        intent_tick_id: str,
        order_type: str = "MARKET",
        limit_price_paise: int = 0,
        status: str = "new",
        reason: str = "",
        payload: dict[str, Any] | None = None,
        parent_id: str = "",
        slice_no: int = 0,
    ) -> bool:
        """Record an order before it is submitted; False if the correlation id (or the intent's
        msg_id with the same ``slice_no``) is already recorded, in which case nothing changes.

        A freeze-limit slice names its intent's correlation id as ``parent_id`` and its 1-based
        ``slice_no``; an unsliced order has ``parent_id`` "" and ``slice_no`` 0.
        """
        if status not in ORDER_STATUSES:
            raise StoreError(f"order {correlation_id}: unknown status {status!r}")
        if bool(parent_id) != (slice_no > 0):
            raise StoreError(f"order {correlation_id}: a slice needs both parent_id and slice_no")
        return self._write_one(
            f"create order {correlation_id}",
            "INSERT INTO orders (correlation_id, intent_msg_id, position_id, kind, side, segment,"
            " security_id, symbol, quantity, order_type, limit_price_paise, status, reason,"
            " ts_intent, intent_tick_id, intent_tick_key, payload, parent_id, slice_no)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (
                correlation_id, intent_msg_id, position_id, kind, side, segment, security_id,
                symbol, quantity, order_type, limit_price_paise, status, reason, ts_intent,
                intent_tick_id, tick_key(intent_tick_id), Jsonb(payload or {}), parent_id, slice_no,
            ),
        )  # fmt: skip

    def get_order(self, correlation_id: str) -> OrderRow | None:
        rows = self._rows(
            OrderRow, "SELECT * FROM orders WHERE correlation_id = %s", (correlation_id,)
        )
        return rows[0] if rows else None

    def orders_for_intent(self, correlation_id: str) -> list[OrderRow]:
        """The broker orders of one intent: its own row when unsliced, else its slices in
        ``slice_no`` order (empty if the intent was never recorded)."""
        return self._rows(
            OrderRow,
            "SELECT * FROM orders WHERE correlation_id = %s OR parent_id = %s"
            " ORDER BY slice_no, correlation_id",
            (correlation_id, correlation_id),
        )

    def orders_in_status(self, statuses: Iterable[str]) -> list[OrderRow]:
        """Orders whose status is one of ``statuses``, oldest intent first."""
        return self._rows(
            OrderRow,
            "SELECT * FROM orders WHERE status = ANY(%s) ORDER BY intent_tick_key, correlation_id",
            (list(statuses),),
        )

    def orders_for_position(self, position_id: str) -> list[OrderRow]:
        return self._rows(
            OrderRow,
            "SELECT * FROM orders WHERE position_id = %s ORDER BY intent_tick_key, correlation_id",
            (position_id,),
        )

    def set_order_status(self, correlation_id: str, new_status: str, **fields: Any) -> OrderRow:
        """Move an order to ``new_status`` (see ``ORDER_TRANSITIONS``) and set ``fields``
        (broker_order_id, filled_qty, avg_price_paise, reason, payload); return the new row.

        Raises :class:`StoreError` for an unknown order, status or field, or an illegal move.
        """
        if new_status not in ORDER_STATUSES:
            raise StoreError(f"order {correlation_id}: unknown status {new_status!r}")
        unknown = set(fields) - _ORDER_FIELDS
        if unknown:
            raise StoreError(f"order {correlation_id}: cannot set {', '.join(sorted(unknown))}")
        values = {k: Jsonb(v) if k == "payload" else v for k, v in fields.items()}
        sets = sql.SQL("").join(
            sql.SQL(", {} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in values
        )
        query = sql.SQL(
            "UPDATE orders SET status = %(status)s, updated_at = now(){sets}"
            " WHERE correlation_id = %(cid)s AND status = ANY(%(sources)s) RETURNING *"
        ).format(sets=sets)
        params = {
            **values,
            "status": new_status,
            "cid": correlation_id,
            "sources": sources_of(ORDER_TRANSITIONS, new_status),
        }
        rows = self._rows(OrderRow, query, params, what=f"set order {correlation_id} status")
        if rows:
            return rows[0]
        current = self.get_order(correlation_id)
        if current is None:
            raise StoreError(f"order {correlation_id}: no such order")
        raise StoreError(
            f"order {correlation_id}: illegal status transition {current.status} -> {new_status}"
        )

    def record_fill(
        self,
        *,
        fill_id: str,
        correlation_id: str,
        broker_order_id: str,
        side: str,
        quantity: int,
        price_paise: int,
        ts_event: int,
        tick_id: str,
    ) -> bool:
        """Record a fill under its deterministic id; False (and no change) if already recorded."""
        return self._write_one(
            f"record fill {fill_id}",
            "INSERT INTO fills (fill_id, correlation_id, broker_order_id, side, quantity,"
            " price_paise, ts_event, tick_id, tick_key)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (fill_id) DO NOTHING",
            (
                fill_id, correlation_id, broker_order_id, side, quantity, price_paise, ts_event,
                tick_id, tick_key(tick_id),
            ),
        )  # fmt: skip

    def fills_for(self, correlation_id: str) -> list[FillRow]:
        """The order's fills in the order they happened (tick, event time, then recording)."""
        return self._rows(
            FillRow,
            "SELECT * FROM fills WHERE correlation_id = %s"
            " ORDER BY tick_key, ts_event, created_at, fill_id",
            (correlation_id,),
        )

    def fills_for_position(self, position_id: str, kind: str) -> list[FillRow]:
        """Every fill of the position's ``kind`` ("entry" / "exit") orders, in tick order."""
        return self._rows(
            FillRow,
            "SELECT f.* FROM fills f JOIN orders o USING (correlation_id)"
            " WHERE o.position_id = %s AND o.kind = %s"
            " ORDER BY f.tick_key, f.ts_event, f.created_at, f.fill_id",
            (position_id, kind),
        )

    # -- outbox ----------------------------------------------------------------------------

    def add_outbox(self, stream: str, msg_id: str, type: str, data: bytes) -> bool:
        """Queue an event for the relay; False (no change) if ``msg_id`` is already queued."""
        return self._write_one(
            f"add outbox {msg_id}",
            "INSERT INTO outbox (stream, msg_id, type, data) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (msg_id) DO NOTHING",
            (stream, msg_id, type, bytes(data)),
        )

    def unpublished_outbox(self, limit: int = 100) -> list[OutboxRow]:
        """Up to ``limit`` unpublished events, in insertion order."""
        return self._rows(
            OutboxRow,
            "SELECT * FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT %s",
            (limit,),
        )

    def mark_published(self, ids: Sequence[int]) -> int:
        """Mark outbox rows published; return how many were not already."""
        with translate("mark outbox published"):
            cur = self._conn.execute(
                "UPDATE outbox SET published_at = now() WHERE id = ANY(%s) AND published_at IS NULL",
                (list(ids),),
            )
            return cur.rowcount

    # -- trading state and daily risk ------------------------------------------------------

    def get_trading_state(self) -> TradingStateRow:
        rows = self._rows(TradingStateRow, "SELECT state, reason, updated_at FROM trading_state")
        if not rows:
            raise StoreError("trading_state has no row: is the schema migrated?")
        return rows[0]

    def set_trading_state(self, state: str, reason: str) -> TradingStateRow:
        """Set ACTIVE / REDUCING / HALTED with a human reason."""
        if state not in TRADING_STATES:
            raise StoreError(f"unknown trading state {state!r}")
        rows = self._rows(
            TradingStateRow,
            "UPDATE trading_state SET state = %s, reason = %s, updated_at = now() WHERE id = 1"
            " RETURNING state, reason, updated_at",
            (state, reason),
        )
        if not rows:
            raise StoreError("trading_state has no row: is the schema migrated?")
        return rows[0]

    def upsert_daily_risk(
        self,
        trading_day: dt.date | str,
        scope: str,
        *,
        realized_pnl_paise: int,
        trades: int,
        starting_capital_paise: int,
        state: str,
    ) -> DailyRiskRow:
        """Write the risk state of one trading day and scope ("global" or an index key)."""
        return self._rows(
            DailyRiskRow,
            "INSERT INTO daily_risk_state (trading_day, scope, realized_pnl_paise, trades,"
            " starting_capital_paise, state) VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (trading_day, scope) DO UPDATE SET"
            " realized_pnl_paise = EXCLUDED.realized_pnl_paise, trades = EXCLUDED.trades,"
            " starting_capital_paise = EXCLUDED.starting_capital_paise,"
            " state = EXCLUDED.state, updated_at = now() RETURNING *",
            (
                as_date(trading_day),
                scope,
                realized_pnl_paise,
                trades,
                starting_capital_paise,
                state,
            ),
        )[0]

    def get_daily_risk(
        self, trading_day: dt.date | str, scope: str = "global"
    ) -> DailyRiskRow | None:
        rows = self._rows(
            DailyRiskRow,
            "SELECT * FROM daily_risk_state WHERE trading_day = %s AND scope = %s",
            (as_date(trading_day), scope),
        )
        return rows[0] if rows else None

    def add_sync_report(
        self, *, ts: int, mode: str, differences: Any, actions: Any, ok: bool
    ) -> int:
        """Store a reconciliation report (``ts`` UTC ns); return its id."""
        with translate("add sync report"):
            row = self._conn.execute(
                "INSERT INTO sync_reports (ts, mode, differences, actions, ok)"
                " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (ts, mode, Jsonb(differences), Jsonb(actions), ok),
            ).fetchone()
        assert row is not None
        return int(row[0])
