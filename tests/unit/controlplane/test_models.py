"""Revision 0003_service builds exactly controlplane.models' tables, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

import controlplane.models  # noqa: F401  (registers the tables)
from inventory.db import Base, make_engine, migrate

SERVICE_TABLES = {"users", "api_tokens", "console_sessions", "login_throttle", "audit_events", "audit_head"}


def test_the_service_tables_match_their_models(db_url: str) -> None:
    migrate(db_url)
    engine = make_engine(db_url)
    try:
        assert set(inspect(engine).get_table_names()) >= SERVICE_TABLES
        with engine.connect() as connection:
            diffs = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        mine = [d for d in diffs if any(f"'{name}'" in repr(d) for name in SERVICE_TABLES)]
        assert mine == []
    finally:
        engine.dispose()
