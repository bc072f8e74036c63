"""Alembic environment, configured in code by `inventory.db.alembic_config` (there is no alembic.ini)."""

from __future__ import annotations

from alembic import context

import inventory.models  # noqa: F401  (registers the inventory tables on Base.metadata for autogenerate)
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
            # Batch mode: SQLite cannot ALTER most things in place, so later revisions copy tables.
            context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
