"""The backup use cases: list a county's restore points, back it up now, verify a restore point,
restore one in place or as a copy. Same rules as controlplane.operations (authorize, validate, audit,
then submit or run the job): an operator may back up, verify and restore; a county sees its own list.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from backup import ops, verifications
from backup.steps import BackupArgs, RestoreArgs, RestoreMode
from controlplane import backup_schedule, bootstrap
from controlplane.actors import Actor
from controlplane.errors import InvalidInput, NotFoundError
from controlplane.operations import JobRequest, authorize
from controlplane.roles import Action
from inventory import queries
from inventory.db import session_scope
from inventory.jobs import JobKind


def _sites(slug: str) -> ops.BackupSites:
    try:
        return backup_schedule.county_sites(slug)
    except queries.NotFound as error:
        raise NotFoundError(str(error)) from None


def _validated(model: type[BackupArgs] | type[RestoreArgs], **values: Any) -> dict[str, Any]:
    try:
        return model.model_validate(values).model_dump(mode="json")
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise InvalidInput(problems) from None


def list_restore_points(actor: Actor, slug: str) -> dict[str, Any]:
    """A county's restore points in both repositories (a county may list its own)."""
    authorize(actor, Action.READ, tenant=slug)
    sites = _sites(slug)
    platform = bootstrap.platform()
    found = ops.restore_points(platform, slug, sites)
    status = ops.county_status(slug, found.points, verifications.of_tenant(platform.engine, slug),
                               datetime.now(UTC))
    return {"tenant": slug, "primary_site": sites.primary, "offsite_site": sites.offsite,
            "points": [point.as_dict() for point in reversed(found.points)],  # newest first
            "unreachable": found.unreachable,
            "status": {**asdict(status), "alerts": ops.alerts(status)}}


def request_backup(actor: Actor, slug: str) -> JobRequest:
    authorize(actor, Action.BACKUP, tenant=slug)
    sites = _sites(slug)
    args = _validated(BackupArgs, tenant=slug, offsite_site=sites.offsite, rest_port=sites.rest_port)
    return JobRequest(actor, Action.BACKUP, JobKind.BACKUP, slug, args, site=sites.primary)


def request_restore(actor: Actor, slug: str, *, mode: RestoreMode = RestoreMode.VERIFY,
                    snapshot: str | None = None, site: str | None = None, name: str | None = None
                    ) -> JobRequest:
    """A verification (mode verify: a clone at the offsite site on its newest point, by default), a
    copy for inspection, or an in-place restore (where the county runs, from its own repository)."""
    action = Action.BACKUP if mode is RestoreMode.VERIFY else Action.RESTORE
    authorize(actor, action, tenant=slug)
    sites = _sites(slug)
    if mode is RestoreMode.IN_PLACE:
        where, source = sites.primary, sites.primary
        if site not in (None, sites.primary):
            raise InvalidInput(f"an in-place restore runs where {slug} runs ({sites.primary}); "
                               "restore as a copy to bring it up elsewhere")
    else:
        where = site or sites.offsite
        source = sites.offsite if where == sites.offsite else sites.primary
    with session_scope(bootstrap.engine()) as session:
        if not queries.vms_of(queries.get_tenant(session, slug)):
            raise InvalidInput(f"tenant {slug} declares no VMs")
    args = _validated(RestoreArgs, tenant=slug, mode=mode, snapshot=snapshot, site=where, from_site=source,
                      primary_site=sites.primary, rest_port=sites.rest_port, name=name)
    return JobRequest(actor, action, JobKind.RESTORE, slug, args, site=where)
