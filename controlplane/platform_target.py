"""The configured database a recovery restores into, read before anything is written to it: what
it holds (missing, empty, the platform's tables unused, this snapshot's recovery, a live platform
database) is what platform_recovery_plan.next_step decides on. The one thing written here is the
marker a PostgreSQL recovery keeps in the state folder from its restore to its audit event, so that
a rerun after a crash in between finishes that recovery instead of taking the restored database for a
live one."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from backup.restic import Snapshot
from controlplane.errors import ControlPlaneError, ErrorCode
from controlplane.models import AuditEvent
from controlplane.platform_recovery_audit import RECOVER_ACTION
from controlplane.platform_recovery_plan import RecoveryRefused, Target, TargetKind

_SYSTEM_SCHEMAS = frozenset({"information_schema", "pg_catalog", "pg_toast"})
# Tables the migrations themselves fill: every other one is empty in a database only migrated.
_SEEDED = frozenset({"alembic_version", "audit_head", "sqlite_sequence"})


def where_of(url: URL) -> str:
    """The database as the operator is told of it: its URL, password hidden."""
    return url.render_as_string(hide_password=True)


def sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise RecoveryRefused("a recovery needs a SQLite file or a PostgreSQL database, not an in-memory one")
    return Path(url.database)


def jobs_checkpoints(path: Path) -> Path:
    """Where DBOS keeps a SQLite database's job checkpoints (controlplane.jobs.dbos_url_for)."""
    return path.with_suffix(".dbos.sqlite")


def inspect_target(database_url: str) -> Target:
    """The configured database as it is, read only (a missing SQLite file is not created)."""
    url = make_url(database_url)
    where = where_of(url)
    leftovers: tuple[str, ...] = ()
    if url.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        beside = (path.with_name(path.name + "-wal"), path.with_name(path.name + "-journal"),
                  jobs_checkpoints(path))
        leftovers = tuple(str(p) for p in beside if p.exists())
        if not path.exists() or path.stat().st_size == 0:
            return Target(TargetKind.MISSING if not path.exists() else TargetKind.EMPTY, where, leftovers)
        readable = f"sqlite:///file:{path}?mode=ro&uri=true"
    else:
        readable = url.render_as_string(hide_password=False)
    engine = create_engine(readable)
    try:
        with engine.connect() as connection:
            found = inspect(connection)
            schemas = [name for name in found.get_schema_names()
                       if name not in _SYSTEM_SCHEMAS and not name.startswith("pg_temp")]
            qualified = [(schema, table) for schema in schemas
                         for table in found.get_table_names(schema=schema)]
            tables = {table for _, table in qualified}
            if not tables:
                return Target(TargetKind.EMPTY, where, leftovers)
            quote = connection.dialect.identifier_preparer.quote
            if "alembic_version" in tables and not any(
                    connection.execute(text(f"SELECT 1 FROM {quote(schema)}.{quote(table)} LIMIT 1")).first()
                    for schema, table in qualified if table not in _SEEDED):
                if url.get_backend_name() == "sqlite":  # a file: the restored one replaces it whole
                    return Target(TargetKind.EMPTY, where, leftovers)
                return Target(TargetKind.HOLDS, where, unused=True)
            counties = (connection.execute(text("SELECT count(*) FROM tenants")).scalar_one()
                        if "tenants" in tables else 0)
            recovered_from = None
            if "audit_events" in tables:
                newest = connection.execute(select(AuditEvent.action, AuditEvent.detail)
                                            .order_by(AuditEvent.seq.desc()).limit(1)).first()
                if newest is not None and newest.action == RECOVER_ACTION:
                    detail = newest.detail if isinstance(newest.detail, dict) else json.loads(newest.detail)
                    recovered_from = str(detail.get("snapshot", ""))
            return Target(TargetKind.HOLDS, where, counties=int(counties), recovered_from=recovered_from)
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        if "does not exist" in reason:
            raise RecoveryRefused(f"{where}: {reason}; create it empty (CREATE DATABASE) and run this "
                                  "again") from None
        raise ControlPlaneError(f"{where} cannot be read: {reason}", code=ErrorCode.UNAVAILABLE) from None
    finally:
        engine.dispose()


# A PostgreSQL recovery's marker: which database took which snapshot, until its audit event is in.
def _marker_path(state_dir: Path) -> Path:
    return state_dir / "dr" / "platform-recovery.json"


def unfinished(state_dir: Path, where: str) -> str | None:
    """The snapshot a recovery of `where` restored and did not reach its audit event with."""
    try:
        found = json.loads(_marker_path(state_dir).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return str(found["snapshot"]) if found.get("database") == where and found.get("snapshot") else None


def mark(state_dir: Path, where: str, snapshot: Snapshot) -> None:
    path = _marker_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(json.dumps({"database": where, "snapshot": snapshot.id,
                                   "began": datetime.now(UTC).isoformat()}) + "\n")
    os.replace(staging, path)


def unmark(state_dir: Path) -> None:
    _marker_path(state_dir).unlink(missing_ok=True)
