"""The Alembic migrations build exactly the models' schema, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

import inventory.models  # noqa: F401  (registers the tables)
from inventory.db import Base, make_engine, migrate

INVENTORY_TABLES = {"sites", "hosts", "size_templates", "networks", "images", "tenants", "vms", "change_log",
                    "protection_tiers"}


def test_upgrade_head_creates_the_inventory_tables_and_is_idempotent(db_url: str) -> None:
    migrate(db_url)
    migrate(db_url)  # a second run is a no-op, not an error

    engine = make_engine(db_url)
    try:
        assert set(inspect(engine).get_table_names()) >= INVENTORY_TABLES
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            assert context.get_current_revision() is not None
            # No difference between what the migrations built and what the models declare, restricted
            # to the inventory's own tables (other packages add theirs in later revisions).
            diffs = [
                diff
                for diff in compare_metadata(context, Base.metadata)
                if _table_of(diff) in INVENTORY_TABLES
            ]
        assert diffs == []
    finally:
        engine.dispose()


def _table_of(diff: object) -> str | None:
    # compare_metadata yields tuples (op, object, ...) or lists of column-modification tuples.
    first = diff[0] if isinstance(diff, list) else diff
    assert isinstance(first, tuple)
    for item in first[1:]:
        table = getattr(item, "table", None)
        if table is not None:
            return str(table.name)
        name = getattr(item, "name", None)
        if isinstance(name, str) and name in INVENTORY_TABLES:
            return name
        if isinstance(item, str) and item in INVENTORY_TABLES:
            return item
    return None


def test_the_recorded_head_is_alembics_head(db_url: str) -> None:
    from alembic.script import ScriptDirectory

    from inventory.db import HEAD_REVISION, MIGRATIONS, current_revision

    assert ScriptDirectory(str(MIGRATIONS)).get_current_head() == HEAD_REVISION
    assert current_revision(db_url) is None  # not migrated yet
    migrate(db_url)
    assert current_revision(db_url) == HEAD_REVISION


def test_a_database_at_head_is_not_migrated_again(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import alembic.command

    migrate(db_url)
    upgrades: list[str] = []
    monkeypatch.setattr(alembic.command, "upgrade", lambda _config, revision: upgrades.append(revision))
    migrate(db_url)
    assert upgrades == []
    migrate(db_url, "0001_inventory")  # an explicit revision always goes through Alembic
    assert upgrades == ["0001_inventory"]


def test_migrating_a_database_holding_counties_keeps_them(db_url: str, small_text: str) -> None:
    """The last revision is taken down and up again on a database holding counties and their VMs, as
    an upgrade in production does. On SQLite a batch migration copies a table; with foreign keys
    enforced, dropping the old `tenants` under the `vms` that name it failed (found on the bench's
    state at 0004)."""
    from alembic import command
    from sqlalchemy import text

    from inventory.db import HEAD_REVISION, alembic_config, current_revision, session_scope
    from inventory.declare import apply
    from inventory.loader import load_text

    migrate(db_url)
    engine = make_engine(db_url)
    try:
        with session_scope(engine) as session:
            apply(session, load_text(small_text))
    finally:
        engine.dispose()

    command.downgrade(alembic_config(db_url), "0004_workers")
    assert current_revision(db_url) == "0004_workers"
    if db_url.startswith("sqlite"):
        # What a run that failed half way left before SQLite's DDL was transactional.
        engine = make_engine(db_url)
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE _alembic_tmp_tenants (id INTEGER)"))
        engine.dispose()
    migrate(db_url)
    assert current_revision(db_url) == HEAD_REVISION

    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT t.slug, v.name FROM vms v JOIN tenants t ON t.id = v.tenant_id ORDER BY v.name")
            ).all()
            dangling = connection.execute(
                text("SELECT count(*) FROM vms WHERE tenant_id NOT IN (SELECT id FROM tenants)")
            ).scalar_one()
    finally:
        engine.dispose()
    assert {slug for slug, _vm in rows} == {"keelung", "penghu"}
    assert dangling == 0
