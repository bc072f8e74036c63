"""The fence ledger: copies of county VMs at a failed site that must never serve again as they are.

A failover fences the failed site's VMs before it starts any county elsewhere. When the site's
daemon answers, the VMs are destroyed there and then; when it does not, nothing can be done at the
site itself, so the copy is written here and everything that could start it or put it behind an
address asks first: provisioning's start refuses a fenced copy, and a failback removes the copies
at the returning site (undefines them, keeps their disks) before it brings its counties back, then
clears their entries.

A table of the platform database (`fenced_copies`, revision 0009_fencing), one row per (site, VM):
a control plane started at the other site from the database's offsite copy knows what is fenced,
and two writers recording at once cannot lose each other's entry (an insert that finds the row
already there does nothing, in the database itself, on SQLite and PostgreSQL alike).

Before the table there was a JSON file, `STATE_DIR/dr/fenced.json`; the first use of the ledger
imports it (entries already in the table win) and renames it `fenced.json.imported`.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, Float, String, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from inventory.db import Base, session_scope
from inventory.models import NAME_LENGTH, enum_column
from provisioning.errors import ProvisioningError

LEDGER_NAME = "fenced.json"  # the file the ledger was before the table: imported once
IMPORTED_SUFFIX = ".imported"


class FenceHow(StrEnum):
    DESTROYED = "destroyed"  # the site's daemon answered: the VM was destroyed and undefined there
    MARKED = "marked"  # the daemon was silent: the copy is left there, marked here and out of every address


class FencedCopyRow(Base):
    __tablename__ = "fenced_copies"

    # Names, not foreign keys: the entry must outlive a VM row retired or re-declared meanwhile.
    site: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    vm: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36))
    how: Mapped[FenceHow] = mapped_column(enum_column(FenceHow))
    at: Mapped[float] = mapped_column(Float)  # epoch seconds
    job: Mapped[str] = mapped_column(String(64), default="")


@dataclass(frozen=True)
class FencedCopy:
    site: str
    vm: str
    uuid: str
    how: FenceHow
    at: float  # epoch seconds
    job: str = ""


class FencedVm(ProvisioningError):
    """An attempt to start a VM where its copy is fenced."""


class LedgerHome(Protocol):
    """Where the ledger lives: the platform database, and the state folder an older file may be in
    (provisioning.platform.Platform is one)."""

    @property
    def engine(self) -> Engine: ...

    @property
    def state_dir(self) -> Path: ...


def ledger_path(state_dir: Path) -> Path:
    """The file the ledger used to be (imported at first use)."""
    return state_dir / "dr" / LEDGER_NAME


def _insert_new(session: Session, copy: FencedCopy) -> bool:
    """Insert unless (site, VM) is there already, atomically in the database; True when inserted."""
    values = {"site": copy.site, "vm": copy.vm, "uuid": copy.uuid, "how": copy.how, "at": copy.at,
              "job": copy.job}
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    if dialect not in ("postgresql", "sqlite"):
        raise ProvisioningError(f"the fence ledger supports SQLite and PostgreSQL, not {dialect}")
    statement = (insert(FencedCopyRow).values(**values).on_conflict_do_nothing(index_elements=["site", "vm"])
                 .returning(FencedCopyRow.vm))  # a row back only when inserted (rowcount is -1 on psycopg)
    return session.execute(statement).first() is not None


def _copies_in_file(path: Path) -> list[FencedCopy]:
    loaded = json.loads(path.read_text() or "{}")
    if not isinstance(loaded, dict):
        return []
    return [FencedCopy(site=site, vm=vm, uuid=str(entry["uuid"]), how=FenceHow(str(entry["how"])),
                       at=float(str(entry["at"])), job=str(entry.get("job", "")))
            for site, vms in loaded.items() for vm, entry in vms.items()]


def import_file(engine: Engine, state_dir: Path) -> int:
    """Move an older ledger file's entries into the table (entries already there kept), then rename the
    file so it is read once. Safe to run from several processes at once. Returns the entries added."""
    path = ledger_path(state_dir)
    if not path.exists():
        return 0
    try:
        copies = _copies_in_file(path)
    except FileNotFoundError:  # another process imported it just now
        return 0
    with session_scope(engine) as session:
        added = sum(_insert_new(session, copy) for copy in copies)
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, path.with_name(path.name + IMPORTED_SUFFIX))
    return added


def fenced(home: LedgerHome, site: str | None = None) -> list[FencedCopy]:
    """Every fenced copy (or those at `site`), by site then VM."""
    import_file(home.engine, home.state_dir)
    query = select(FencedCopyRow).order_by(FencedCopyRow.site, FencedCopyRow.vm)
    if site is not None:
        query = query.where(FencedCopyRow.site == site)
    with session_scope(home.engine) as session:
        return [FencedCopy(site=row.site, vm=row.vm, uuid=row.uuid, how=FenceHow(row.how), at=row.at,
                           job=row.job) for row in session.scalars(query)]


def is_fenced(home: LedgerHome, site: str, vm: str) -> bool:
    import_file(home.engine, home.state_dir)
    with session_scope(home.engine) as session:
        return session.get(FencedCopyRow, (site, vm)) is not None


def record(home: LedgerHome, copy: FencedCopy) -> bool:
    """Add the copy (idempotent: a copy already recorded keeps its first entry); True when added."""
    import_file(home.engine, home.state_dir)
    with session_scope(home.engine) as session:
        return _insert_new(session, copy)


def clear(home: LedgerHome, site: str, vm: str) -> bool:
    """Forget a copy once it is gone from its site; True when there was one."""
    import_file(home.engine, home.state_dir)
    with session_scope(home.engine) as session:
        gone = session.execute(delete(FencedCopyRow).where(FencedCopyRow.site == site, FencedCopyRow.vm == vm)
                               .returning(FencedCopyRow.vm))
        return gone.first() is not None


def refuse_if_fenced(home: LedgerHome, site: str, vm: str) -> None:
    if is_fenced(home, site, vm):
        raise FencedVm(f"{vm} at site {site} is fenced (its county was failed over); it must not start "
                       f"there again: `countycloud dr failback` removes it and brings the county back")
