"""Connections to the PostgreSQL ledger and the translation of psycopg errors.

Every deployment keeps its tables in one schema (``scalper`` by default; replays and tests use
their own). :func:`connect` opens an autocommit connection whose ``search_path`` is that schema,
so statements outside :meth:`psycopg.Connection.transaction` blocks commit one by one.

psycopg errors leave this package as :class:`shared.errors.StoreError` (``raise ... from``).
The database URL may hold a password: it never appears in an exception message or a log line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from shared.errors import StoreError

SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
"""Schema names we accept: lower-case identifiers that need no quoting (as shared.config)."""

CONNECT_TIMEOUT_S = 10

_KV_PASSWORD_RE = re.compile(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def check_schema(schema: str) -> str:
    """Return ``schema`` if it is a valid schema name, else raise :class:`StoreError`."""
    if not SCHEMA_RE.match(schema):
        raise StoreError(f"invalid schema name {schema!r}: expected [a-z_][a-z0-9_]*, at most 63")
    return schema


def connect(
    database_url: str,
    schema: str,
    *,
    application_name: str = "scalper",
    connect_timeout_s: int = CONNECT_TIMEOUT_S,
) -> psycopg.Connection:
    """Open an autocommit connection with ``search_path`` set to ``schema`` (created if missing).

    Raises :class:`StoreError` whose message names neither the URL nor its password.
    """
    check_schema(schema)
    secrets = _secrets_of(database_url)
    try:
        conn = psycopg.connect(
            database_url,
            autocommit=True,
            connect_timeout=connect_timeout_s,
            application_name=application_name,
            # A session default rather than a SET, so that RESET ALL / DISCARD keep it.
            options=f"-c search_path={schema}",
        )
    except (psycopg.Error, ValueError, TypeError) as exc:
        text = redact(_first_line(exc), secrets)
        err = StoreError(f"cannot connect to PostgreSQL (schema {schema}): {text}")
        # The original message is kept as the cause only when it holds no secret.
        cause = None if any(s in _full_text(exc) for s in secrets) else exc
        raise err from cause
    try:
        ensure_schema(conn, schema)
    except BaseException:
        conn.close()
        raise
    return conn


def ensure_schema(conn: psycopg.Connection, schema: str) -> None:
    """Create ``schema`` if it does not exist; safe when several processes race to create it."""
    check_schema(schema)
    with translate(f"create schema {schema}"):
        exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
        if exists:
            return
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                )
        except (pg_errors.UniqueViolation, pg_errors.DuplicateSchema):
            pass  # another process created it between our check and our CREATE


@contextmanager
def translate(what: str) -> Iterator[None]:
    """Turn psycopg errors raised in the block into :class:`StoreError` naming ``what``."""
    try:
        yield
    except psycopg.Error as exc:
        raise StoreError(f"{what}: {describe(exc)}") from exc


def describe(exc: BaseException) -> str:
    """A one-line description of a psycopg error: class, SQLSTATE and first message line."""
    state = getattr(exc, "sqlstate", None)
    code = f" [{state}]" if state else ""
    return f"{type(exc).__name__}{code}: {_first_line(exc)}"


def redact(text: str, secrets: list[str]) -> str:
    """Replace every occurrence of each secret in ``text`` by ``***``."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def _secrets_of(database_url: str) -> list[str]:
    """The URL itself and its password (URL or key=value form, raw and percent-decoded)."""
    found = [database_url]
    try:
        password = urlsplit(database_url).password
    except ValueError:
        password = None
    if password:
        found += [password, unquote(password)]
    for match in _KV_PASSWORD_RE.finditer(database_url):
        raw = match.group(1)
        found += [raw, raw.strip("'")]
    return [s for s in found if len(s) >= 1]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _full_text(exc: BaseException) -> str:
    parts: list[str] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        parts.append(str(cur))
        parts.extend(str(a) for a in getattr(cur, "args", ()))
        cur = cur.__cause__ or cur.__context__
    return "\n".join(parts)
