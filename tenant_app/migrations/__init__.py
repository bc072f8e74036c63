"""Alembic, configured in code so `python -m tenant_app migrate` works from any directory.

While the project is new there is ONE initial revision, regenerated when the models change.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

HERE = Path(__file__).resolve().parent


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    # Percent signs in passwords would otherwise be read as interpolation by configparser.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def regenerate_initial() -> Path:
    """Rewrite the single initial revision from the current models (development only)."""
    import tempfile

    for old in (HERE / "versions").glob("0001_*.py"):
        old.unlink()
    with tempfile.TemporaryDirectory() as scratch:
        command.revision(alembic_config(f"sqlite:///{scratch}/empty.db"), message="initial schema",
                         autogenerate=True, rev_id="0001")
    return next((HERE / "versions").glob("0001_*.py"))


def upgrade(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")


@cache  # read once: the scripts do not change under a running app, and /healthz asks often
def head_revision() -> str | None:
    return ScriptDirectory(str(HERE)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def is_current(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()
