"""Alembic environment, configured in code by `inventory.db.alembic_config` (there is no alembic.ini)."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection, Engine, event

# Every module that defines tables is imported here: autogenerate compares Base.metadata with the
# database and would propose dropping any table it does not see.
import inventory.jobs
import inventory.models  # noqa: F401
from inventory.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.attributes["url"],
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _transactional_sqlite(engine: Engine) -> None:
    """Make SQLite's DDL part of the migration's transaction.

    Python's sqlite3 commits before a CREATE or DROP on its own, so a revision failing half way left
    a half-copied table behind (`_alembic_tmp_tenants`) and the rerun failed on it. With the driver's
    own transaction handling off and BEGIN sent explicitly, a failed revision leaves nothing.
    """

    @event.listens_for(engine, "connect")
    def _driver_autocommit(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        # Batch mode copies a table and drops the old one; with foreign keys enforced, that drop
        # fails under every row that names it. The pragma is a no-op inside a transaction, so it is
        # set here, before any begins, and the keys are checked before the migration commits.
        dbapi_connection.execute("PRAGMA foreign_keys=OFF")

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN")


def run_migrations_online() -> None:
    engine = make_engine(config.attributes["url"])
    sqlite = engine.dialect.name == "sqlite"
    if sqlite:
        _transactional_sqlite(engine)
    try:
        with engine.connect() as connection:
            if sqlite:
                # Left by a failed run before DDL was transactional: batch mode always builds it anew.
                for (leftover,) in connection.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB '_alembic_tmp_*'"
                ).all():
                    connection.exec_driver_sql(f'DROP TABLE "{leftover}"')
                connection.commit()
            # Batch mode: SQLite cannot ALTER most things in place, so later revisions copy tables.
            context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"the migration left rows naming missing rows: {broken[:5]}")
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
