"""Versioned schema migrations: ``shared/store/migrations/NNNN_name.sql``, applied in order.

Each pending migration runs in its own transaction together with its row in
``schema_migrations(version, name, applied_at)``, so a failed migration leaves nothing behind.
A session advisory lock keyed on the schema name serialises concurrent runners: the second
one waits, then finds nothing to apply. Applied files are never edited; changes go in a new file.

``scalper db migrate`` calls :func:`main`; ``python -m shared.store.migrate`` does the same.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec
import psycopg
from psycopg import sql

from shared.errors import ConfigError, StoreError
from shared.store import db

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# First key of the two-int advisory lock: "scalper migrate" (the second is hashtext(schema)).
_LOCK_CLASS = 0x5C4D


class Migration(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    name: str
    sql: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Read ``NNNN_name.sql`` files from ``directory``, sorted by version."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        match = _FILE_RE.match(path.name)
        if not match:
            continue
        version = int(match.group(1))
        if version in found:
            raise StoreError(f"duplicate migration version {version}: {path.name}")
        found[version] = Migration(
            version=version, name=match.group(2), sql=path.read_text(encoding="utf-8")
        )
    return [found[v] for v in sorted(found)]


def migrate(
    conn: psycopg.Connection,
    schema: str,
    migrations: Sequence[Migration] | None = None,
) -> list[int]:
    """Apply the pending migrations to ``schema``; return the versions applied, in order.

    ``conn`` must be an autocommit connection outside any transaction (as from
    :func:`shared.store.db.connect`). Running twice applies nothing the second time.
    """
    db.check_schema(schema)
    if not conn.autocommit or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise StoreError("migrate needs an autocommit connection outside a transaction")
    todo = sorted(load_migrations() if migrations is None else migrations, key=lambda m: m.version)
    with db.translate(f"migrate schema {schema}"):
        conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_LOCK_CLASS, schema))
        try:
            return _apply_pending(conn, schema, todo)
        finally:
            if (
                not conn.closed
                and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            ):
                conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_CLASS, schema))


def applied_versions(conn: psycopg.Connection, schema: str) -> list[int]:
    """Versions recorded in ``schema.schema_migrations`` (empty if the table does not exist)."""
    db.check_schema(schema)
    with db.translate(f"read migrations of schema {schema}"):
        exists = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.schema_migrations",)
        ).fetchone()
        if not exists or not exists[0]:
            return []
        rows = conn.execute(
            sql.SQL("SELECT version FROM {}.schema_migrations ORDER BY version").format(
                sql.Identifier(schema)
            )
        ).fetchall()
    return [r[0] for r in rows]


def _apply_pending(conn: psycopg.Connection, schema: str, todo: Sequence[Migration]) -> list[int]:
    ident = sql.Identifier(schema)
    with conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.schema_migrations ("
                " version integer PRIMARY KEY,"
                " name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(ident)
        )
    done = set(applied_versions(conn, schema))
    applied: list[int] = []
    for m in todo:
        if m.version in done:
            continue
        try:
            with conn.transaction():
                # Unqualified names in the file land in this schema, whatever the connection's.
                conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(ident))
                conn.execute(m.sql)
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {}.schema_migrations (version, name) VALUES (%s, %s)"
                    ).format(ident),
                    (m.version, m.name),
                )
        except psycopg.Error as exc:
            raise StoreError(
                f"migration {m.version:04d}_{m.name} failed in schema {schema}: {db.describe(exc)}"
            ) from exc
        log.info("applied migration %04d_%s to schema %s", m.version, m.name, schema)
        applied.append(m.version)
    return applied


def main(argv: Sequence[str] | None = None) -> int:
    """``scalper db migrate``: migrate ``$SCALPER_DB_SCHEMA`` in ``$DATABASE_URL``; exit code."""
    from shared.config import load_env

    parser = argparse.ArgumentParser(
        prog="scalper db migrate",
        description="Apply pending ledger migrations (DATABASE_URL, SCALPER_DB_SCHEMA).",
    )
    parser.add_argument("--schema", help="schema to migrate (default: $SCALPER_DB_SCHEMA)")
    args = parser.parse_args(argv)
    try:
        env = load_env()
        schema = db.check_schema(args.schema or env.db_schema)
        with db.connect(env.database_url, schema, application_name="scalper-migrate") as conn:
            applied = migrate(conn, schema)
            current = applied_versions(conn, schema)
    except (ConfigError, StoreError) as exc:
        print(f"db migrate failed: {exc}", file=sys.stderr)
        return 1
    names = {m.version: m.name for m in load_migrations()}
    for version in applied:
        print(f"applied {version:04d}_{names.get(version, '?')}")
    top = max(current, default=0)
    if not applied:
        print(f"nothing to apply: schema {schema} is at version {top:04d}")
    else:
        print(f"schema {schema} is at version {top:04d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
