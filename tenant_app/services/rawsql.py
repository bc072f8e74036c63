"""Hand-written SQL for the hot path, run with exec_driver_sql: no statement compilation and no
per-row parameter processing, which on the certification group commit cost more than SQLite itself.

Statements are written with :name parameters; psycopg wants %(name)s and asyncpg $1, $2, ...
(positional), so they are translated once per driver. Values are given as the driver stores them
for SQLAlchemy's own types (SQLite keeps datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff' text in UTC).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, CursorResult

_NAMED = re.compile(r"(?<!:):([a-z_][a-z0-9_]*)")
# driver, statement -> (driver's statement, parameter names in positional order or None if named)
_translated: dict[tuple[str, str], tuple[str, list[str] | None]] = {}


def _sql(conn: Connection, statement: str) -> tuple[str, list[str] | None]:
    key = (conn.dialect.driver, statement)
    if key not in _translated:
        if conn.dialect.name == "sqlite":
            _translated[key] = (statement, None)
        elif conn.dialect.driver == "asyncpg":
            names: list[str] = []

            def positional(match: re.Match[str]) -> str:
                if match.group(1) not in names:
                    names.append(match.group(1))
                return f"${names.index(match.group(1)) + 1}"

            _translated[key] = (_NAMED.sub(positional, statement), names)
        else:
            _translated[key] = (_NAMED.sub(r"%(\1)s", statement), None)
    return _translated[key]


def _run(conn: Connection, statement: str, params: Any) -> CursorResult[Any]:
    sql, names = _sql(conn, statement)
    if names is not None:
        if isinstance(params, list):
            params = [tuple(row[name] for name in names) for row in params]
        else:
            params = tuple(params[name] for name in names)
    return conn.exec_driver_sql(sql, params)


def stored(conn: Connection, value: Any) -> Any:
    """A Python value as SQLAlchemy would have stored it on this connection's database."""
    if conn.dialect.name != "sqlite":
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def execute(conn: Connection, statement: str, params: Mapping[str, Any] | None = None) -> CursorResult[Any]:
    return _run(conn, statement, dict(params or {}))


def execute_many(conn: Connection, statement: str, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        return
    # Only date/time columns need converting; find them once from the rows, not per value.
    temporal = [key for key in rows[0]
                if isinstance(next((row[key] for row in rows if row[key] is not None), None), dt.date)]
    if conn.dialect.name != "sqlite" or not temporal:
        params = [dict(row) for row in rows]
    else:
        params = [{**row, **{key: stored(conn, row[key]) for key in temporal}} for row in rows]
    _run(conn, statement, params)


def insert_many(conn: Connection, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert plain rows: executemany on SQLite, one INSERT ... SELECT FROM unnest(arrays) on PostgreSQL."""
    if not rows:
        return
    columns = list(rows[0])
    if conn.dialect.name == "sqlite":
        # sqlite3 looks named parameters up one by one (quadratic in a multi-row statement), while
        # executemany reuses one prepared single-row statement: the fast way on SQLite.
        execute_many(conn, f"INSERT INTO {table} ({', '.join(columns)}) "
                           f"VALUES ({', '.join(':' + c for c in columns)})", rows)
        return
    # One array per column keeps the statement text constant (psycopg prepares it after a few runs)
    # and the parameter count small, where a multi-row VALUES list is parsed and planned each time.
    execute(conn, _unnest_insert(conn, table, tuple(columns)),
            {column: [row[column] for row in rows] for column in columns})


_unnest_statements: dict[tuple[str, tuple[str, ...]], str] = {}


def _unnest_insert(conn: Connection, table: str, columns: tuple[str, ...]) -> str:
    key = (table, columns)
    if key not in _unnest_statements:
        from tenant_app.db import Base  # the tables' column types give the array casts

        described = Base.metadata.tables[table]
        casts = ", ".join(f"CAST(:{c} AS {described.c[c].type.compile(dialect=conn.dialect)}[])"
                          for c in columns)
        _unnest_statements[key] = f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({casts})"
    return _unnest_statements[key]
