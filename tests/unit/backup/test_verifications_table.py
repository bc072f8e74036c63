"""Revision 0006_backup builds exactly backup.verifications' table, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

import backup.verifications  # noqa: F401  (registers the table)
from inventory.db import Base, make_engine, migrate


def test_the_verifications_table_matches_its_model(db_url: str) -> None:
    migrate(db_url)
    engine = make_engine(db_url)
    try:
        assert "backup_verifications" in inspect(engine).get_table_names()
        with engine.connect() as connection:
            diffs = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert [d for d in diffs if "'backup_verifications'" in repr(d)] == []
    finally:
        engine.dispose()
