"""Prepared databases for tests that each need the same migrated, seeded start: built once per process,
copied into every test's own database.

Migrating with Alembic and seeding (argon2 hashes, wrapped signing keys, a year of allotments) cost a
few seconds per test and per database kind, most of the suite's time; a copy costs milliseconds on
SQLite (the backup API) and a `CREATE DATABASE ... TEMPLATE` on PostgreSQL. Every test still gets a
database of its own that nothing else writes: only the work of getting it there is shared. What the
builder returns (ids, bearer tokens) is handed to every copy; it must describe the database only.
"""

from __future__ import annotations

import atexit
import datetime as dt
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.engine import make_url

from tests.support import postgres

T = TypeVar("T")

_built: dict[tuple[str, str], tuple[str, Any]] = {}  # (dialect, key) -> (source, builder's value)
_folder: list[Path] = []
_databases: list[str] = []  # PostgreSQL snapshots, dropped at exit


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    assert database, f"not a file database: {url}"
    return Path(database)


def _dialect(url: str) -> str:
    return make_url(url).get_backend_name()


def _scratch() -> Path:
    if not _folder:
        _folder.append(Path(tempfile.mkdtemp(prefix="cc-snapshots-")))
        atexit.register(shutil.rmtree, _folder[0], True)
    return _folder[0]


def _build(dialect: str, key: str, build: Callable[[str], T]) -> tuple[str, T]:
    if dialect == "sqlite":
        source = _scratch() / f"{len(_built)}.db"
        value = build(f"sqlite:///{source}")
        return str(source), value
    url = postgres.fresh_database("snap")
    _databases.append(url)
    if len(_databases) == 1:
        atexit.register(lambda: [postgres.drop_database(each) for each in _databases])
    return postgres.database_name(url), build(url)


def restore(url: str, key: str, build: Callable[[str], T]) -> T:
    """Make the empty database at `url` (SQLite or the suite's PostgreSQL) a copy of the one `build`
    prepares, and return what `build` returned. `build(url)` runs once per process for each database
    kind, `key` and day (seeds date their rows), on a database of its own; it must leave no
    connection open (dispose its engines)."""
    dialect = _dialect(url)
    slot = (dialect, f"{key}@{dt.date.today().isoformat()}")
    if slot not in _built:
        _built[slot] = _build(dialect, key, build)
    source, value = _built[slot]
    if dialect == "sqlite":
        target = _sqlite_path(url)
        assert not target.exists() or target.stat().st_size == 0, f"{target} is not empty"
        # The backup API, not a file copy: it reads a consistent database whatever the journal mode.
        with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
            src.backup(dst)
        src.close()
        dst.close()
        return value
    # The test's database was made empty a moment ago and nobody is connected: make it again as a copy.
    name = postgres.database_name(url)
    postgres.drop_database(url)
    postgres.create_database(name, template=source)
    return value
