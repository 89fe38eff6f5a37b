"""PostgreSQL fixtures for integration tests: one throw-away schema per test.

The database is ``$TEST_DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``).
Each schema gets a random name (``t_<uuid hex>``, printed so a failing test names it), is
migrated unless asked otherwise, and is dropped afterwards.

In a test module::

    pytest_plugins = ["tests.integration.pg"]

    def test_something(ledger):           # a Ledger on a fresh migrated schema
        ...

    def test_two_processes(pg_schema):    # PgSchema(url, schema); .connect() / .ledger() for more
        ...

Also ``pg_unmigrated`` (a fresh empty schema) and ``pg_url``. Several schemas in one test::

    from tests.integration.pg import fresh_schema
    with fresh_schema(migrated=False) as s:
        ...

A module that imports this one at run time should not also list it in ``pytest_plugins``
(pytest then warns that it cannot rewrite its asserts); import ``PgSchema`` for annotations
under ``TYPE_CHECKING`` only.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import msgspec
import psycopg
import pytest
from psycopg import sql

from shared.store import Ledger, connect, migrate

DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DROP_LOCK_TIMEOUT_S = 10


def database_url() -> str:
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)


def new_schema_name(prefix: str = "t") -> str:
    """A fresh schema name: ``<prefix>_<16 hex digits of a uuid4>``."""
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


class PgSchema(msgspec.Struct, frozen=True, kw_only=True):
    """A test schema in the test database."""

    url: str
    schema: str

    def connect(self) -> psycopg.Connection:
        """A new autocommit connection with search_path = this schema. Close it yourself."""
        return connect(self.url, self.schema, application_name="scalper-test")

    def ledger(self) -> Ledger:
        """A Ledger on a new connection. Close it (``ledger.close()``) before the test ends."""
        return Ledger(self.connect())


@contextmanager
def fresh_schema(prefix: str = "t", *, migrated: bool = True) -> Iterator[PgSchema]:
    """Create a schema (migrated unless ``migrated=False``), yield it, then drop it."""
    url = database_url()
    schema = new_schema_name(prefix)
    print(f"test schema: {schema}")
    admin = connect(url, schema, application_name="scalper-test-admin")
    try:
        if migrated:
            migrate(admin, schema)
        yield PgSchema(url=url, schema=schema)
    finally:
        try:
            admin.execute(f"SET lock_timeout = '{DROP_LOCK_TIMEOUT_S}s'")
            admin.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )
        finally:
            admin.close()


@pytest.fixture
def pg_url() -> str:
    """The test database URL."""
    return database_url()


@pytest.fixture
def pg_schema() -> Iterator[PgSchema]:
    """A fresh, migrated schema, dropped after the test."""
    with fresh_schema() as s:
        yield s


@pytest.fixture
def pg_unmigrated() -> Iterator[PgSchema]:
    """A fresh, empty schema (no tables), dropped after the test."""
    with fresh_schema(migrated=False) as s:
        yield s


@pytest.fixture
def ledger(pg_schema: PgSchema) -> Iterator[Ledger]:
    """A Ledger on a fresh, migrated schema; its connection is closed after the test."""
    led = pg_schema.ledger()
    try:
        yield led
    finally:
        led.close()
