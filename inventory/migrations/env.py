"""Alembic environment, configured in code by `inventory.db.alembic_config` (there is no alembic.ini)."""

from __future__ import annotations

from alembic import context

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


def run_migrations_online() -> None:
    engine = make_engine(config.attributes["url"])
    try:
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # Batch mode copies a table and drops the old one; with foreign keys enforced, that
                # drop fails under every row that names it. SQLite ignores this pragma inside a
                # transaction, so it is set before one begins, and checked before anything commits.
                connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
                connection.commit()  # ends SQLAlchemy's autobegun transaction, so Alembic owns its own
            # Batch mode: SQLite cannot ALTER most things in place, so later revisions copy tables.
            context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"migration left rows naming missing rows: {broken[:5]}")
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
