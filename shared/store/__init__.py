"""The PostgreSQL ledger (psycopg 3, sync): connections, migrations and typed reads/writes.

    conn = connect(database_url, schema)   # autocommit, search_path = schema
    migrate(conn, schema)                  # apply pending migrations, return their versions
    ledger = Ledger(conn)

Every failure surfaces as :class:`shared.errors.StoreError`.
"""

from shared.store.db import connect
from shared.store.ledger import Ledger
from shared.store.migrate import migrate
from shared.store.rows import (
    ORDER_TRANSITIONS,
    TRACKER_TRANSITIONS,
    DailyRiskRow,
    FillRow,
    OrderRow,
    OutboxRow,
    SyncReportRow,
    TrackerRow,
    TradingStateRow,
)

__all__ = [
    "ORDER_TRANSITIONS",
    "TRACKER_TRANSITIONS",
    "DailyRiskRow",
    "FillRow",
    "Ledger",
    "OrderRow",
    "OutboxRow",
    "SyncReportRow",
    "TrackerRow",
    "TradingStateRow",
    "connect",
    "migrate",
]
