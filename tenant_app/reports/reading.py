"""Read-only database sessions for reports: one consistent snapshot that never blocks writers.

The application's SQLite engine starts every transaction with BEGIN IMMEDIATE (the write lock),
so a report run through it would hold up the certification writer for as long as the report
reads: 1-2 s for a year's ledger. In WAL mode readers need no lock at all, so reports use their
own SQLite engine whose transactions begin DEFERRED (a snapshot taken at the first read) and whose
connections are `query_only`. On PostgreSQL, reads never block writers; the session only asks for
a REPEATABLE READ, read-only transaction so a report's several statements see the same snapshot.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session

_ENGINES: dict[str, Engine] = {}
_LOCK = threading.Lock()


def _sqlite_reader_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA query_only=ON")  # a report that tried to write would fail loudly
    cursor.close()


def _sqlite_begin_deferred(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN")


def _sqlite_reader(url: str) -> Engine:
    with _LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            # isolation_level=None: we issue BEGIN ourselves, so the snapshot spans the whole report.
            engine = create_engine(
                url, connect_args={"timeout": 10, "check_same_thread": False, "isolation_level": None}
            )
            event.listen(engine, "connect", _sqlite_reader_pragmas)
            event.listen(engine, "begin", _sqlite_begin_deferred)
            _ENGINES[url] = engine
        return engine


@contextmanager
def snapshot_session(engine: Engine) -> Iterator[Session]:
    """A session for reading reports from `engine`'s database; always rolled back at the end."""
    in_memory = engine.url.database in (None, "", ":memory:")
    if engine.dialect.name == "sqlite" and in_memory:
        session = Session(engine)  # a second engine would open a different, empty database
    elif engine.dialect.name == "sqlite":
        session = Session(_sqlite_reader(engine.url.render_as_string(hide_password=False)))
    else:
        session = Session(engine)
        session.connection(
            execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        )
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def dispose_readers() -> None:
    """Close the cached SQLite reader engines (tests, shutdown)."""
    with _LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()
