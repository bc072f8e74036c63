"""What a county's row carries beside the inventory's record, for the dashboard, the county list and a
county's page: its health through its address and its newest job. Both for a thousand counties at
once: health from the cache (controlplane.health; no network call while a request waits) and the
newest jobs in one query.

A county's jobs are those targeting its slug and those targeting one of its VMs (a resize acts on a
VM), so the county is found for either.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Executable, String, and_, bindparam, func, select, type_coerce
from sqlalchemy.orm import Session

from controlplane import health
from inventory.db import as_utc
from inventory.enums import Lifecycle
from inventory.jobs import Job

Row = dict[str, Any]


def targets_of(row: Row) -> set[str]:
    """What a county's jobs may target: the county itself, or one of its VMs."""
    return {str(row["tenant"])} | {str(vm["name"]) for vm in row.get("vms", [])}


def owners(rows: list[Row]) -> dict[str, str]:
    """Each job target of these counties -> the county it belongs to."""
    return {target: str(row["tenant"]) for row in rows for target in targets_of(row)}


def newest_jobs(session: Session, targets: Collection[str] | None = None) -> dict[str, tuple[datetime, Row]]:
    """The newest job of each target (of every target when None): when it was created and a short
    summary of it, in one query."""
    if targets is not None and not targets:
        return {}
    values = {} if targets is None else {"targets": list(targets)}
    found = session.connection().execute(_newest_query(targets is not None), values)
    return {target: (at, {"id": job_id, "kind": kind, "status": status, "target": target,
                          "created_at": as_utc(at).isoformat()})
            for job_id, kind, status, target, at in found}


@cache
def _newest_query(named: bool) -> Executable:
    """Built once (values bound): building a statement costs more than running this one."""
    newest = select(Job.target, func.max(Job.created_at).label("at")).group_by(Job.target)
    if named:
        newest = newest.where(Job.target.in_(bindparam("targets", expanding=True)))
    latest = newest.subquery()
    return (select(Job.id, type_coerce(Job.kind, String), type_coerce(Job.status, String), Job.target,
                   Job.created_at)
            .join(latest, and_(Job.target == latest.c.target, Job.created_at == latest.c.at))
            .order_by(Job.id))


def add_last_jobs(session: Session, rows: list[Row], *, every_target: bool) -> None:
    """Set each row's "last_job" (None: no job yet). `every_target`: read the newest job of every
    target at once (for a long list) rather than naming this list's targets (a county or a few)."""
    owner = owners(rows)
    best: dict[str, tuple[datetime, Row]] = {}
    for target, (at, job) in newest_jobs(session, None if every_target else list(owner)).items():
        county = owner.get(target)
        if county is not None and (county not in best or as_utc(at) > as_utc(best[county][0])):
            best[county] = (at, job)
    for row in rows:
        chosen = best.get(str(row["tenant"]))
        row["last_job"] = chosen[1] if chosen else None


def add_health(rows: list[Row], *, fresh: bool = False) -> None:
    """Set each row's "healthy": True/False through its address, None when not known.

    From the cache, only counties that should serve (active) are watched; `fresh` probes every
    county with an address now and waits (the CLI, which serves no one while it waits)."""
    ports = {str(row["tenant"]): port for row in rows
             if (fresh or row.get("status") == Lifecycle.ACTIVE.value)
             and (port := health.port_of(row.get("address"))) is not None}
    known = health.probe_now(ports) if fresh else health.cached(ports)
    for row in rows:
        row["healthy"] = known.get(str(row["tenant"]))
