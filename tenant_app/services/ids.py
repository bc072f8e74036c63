"""Primary keys reserved up front for bulk inserts, so executemany needs no RETURNING.

SQLAlchemy keeps RETURNING rows in parameter order on SQLite only by sending one INSERT per row,
which costs the certification group commit dozens of statements. On SQLite the caller's transaction
holds the database's single write lock (BEGIN IMMEDIATE), so the ids after max(id) are ours alone;
on PostgreSQL the table's own sequence hands out a block with one statement.
"""

from __future__ import annotations

from sqlalchemy import Connection
from sqlalchemy.orm import Session

_sequences: dict[str, str] = {}


def connection_of(db: Connection | Session) -> Connection:
    return db.connection() if isinstance(db, Session) else db


def reserve_ids(db: Connection | Session, table: str, count: int) -> list[int]:
    conn = connection_of(db)
    if conn.dialect.name == "sqlite":
        top = conn.exec_driver_sql(f"SELECT coalesce(max(id), 0) FROM {table}").scalar_one()
        return list(range(top + 1, top + 1 + count))
    if table not in _sequences:
        _sequences[table] = conn.exec_driver_sql(
            f"SELECT pg_get_serial_sequence('{table}', 'id')").scalar_one()
    sequence = _sequences[table]
    rows = conn.exec_driver_sql(f"SELECT nextval('{sequence}') FROM generate_series(1, {int(count)})")
    return [int(row[0]) for row in rows]
