"""The tenant database: SQLAlchemy engine, declarative base and unit-of-work helper.

SQLite (WAL) is the default inside a county VM; PostgreSQL is supported with the same schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

# Stable constraint names so the Alembic revision is identical on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


class Synchronous(StrEnum):
    """SQLite's `synchronous` in WAL mode. NORMAL survives an application crash, but an OS crash, or
    the VM killed with its site, can lose the last commits the app acknowledged; FULL syncs the WAL
    at every commit, so an acknowledged certification survives those too (docs/benchmarks.md has
    what it costs the certification path)."""

    NORMAL = "normal"
    FULL = "full"


# FULL, by measurement (docs/benchmarks.md, issue 12): -20 % certifications/s under load, still
# above the 500/s goal, as the writer commits certifications in groups (one WAL sync per group).
DEFAULT_SYNCHRONOUS = Synchronous.FULL


def _pragmas(dbapi_connection: Any, synchronous: Synchronous) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA synchronous={Synchronous(synchronous).value.upper()}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    _pragmas(dbapi_connection, DEFAULT_SYNCHRONOUS)


def _sqlite_begin_immediate(conn: Any) -> None:
    # pysqlite's deferred BEGIN lets two writers both read and then fail with SQLITE_BUSY on
    # upgrade (no busy-handler retry is possible then). IMMEDIATE takes the write lock up front.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, *, pool_size: int = 10, synchronous: Synchronous = DEFAULT_SYNCHRONOUS) -> Engine:
    """An engine with the pragmas and transaction mode this application relies on."""
    if is_sqlite(url):
        # isolation_level=None hands transaction control to us so every write starts IMMEDIATE.
        engine = create_engine(url, connect_args={"timeout": 10, "check_same_thread": False,
                                                   "isolation_level": None})
        event.listen(engine, "connect", lambda connection, _record: _pragmas(connection, synchronous))
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=20)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One unit of work: committed when the block ends, rolled back if it raises."""
    session = session_factory(engine)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
