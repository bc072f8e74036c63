"""`/api/v1/tenants/{slug}/restore-points | backups | verifications | restores`: the backup use cases
(controlplane.backup_ops) over HTTP. Jobs answer 202 with the job's id, as every other job route."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from backup.steps import RestoreMode
from controlplane import backup_ops, operations
from controlplane.api.deps import require
from controlplane.api.routes import ERRORS, Caller, Slug, _accepted
from controlplane.api.schemas import Accepted
from controlplane.roles import Action

router = APIRouter(prefix="/api/v1", responses=ERRORS, tags=["backups"])


class Verify(BaseModel):
    model_config = ConfigDict(extra="forbid")
    snapshot: str | None = Field(default=None, pattern=r"^[0-9a-f]{8,64}$")


class Restore(Verify):
    mode: Literal["in-place", "copy"] = "copy"
    site: str | None = Field(default=None, max_length=63)
    name: str | None = Field(default=None, max_length=63)  # a copy's own name


@router.get("/tenants/{slug}/restore-points", summary="A county's restore points, newest first")
def restore_points(slug: Slug, actor: Caller) -> dict[str, Any]:
    require(actor, Action.READ, tenant=slug)
    return backup_ops.list_restore_points(actor, slug)


@router.post("/tenants/{slug}/backups", status_code=202, response_model=Accepted, summary="Back up now")
def backup_now(slug: Slug, actor: Caller) -> JSONResponse:
    require(actor, Action.BACKUP, tenant=slug)
    return _accepted(operations.submit(backup_ops.request_backup(actor, slug)))


@router.post("/tenants/{slug}/verifications", status_code=202, response_model=Accepted,
             summary="Verify a restore point (the newest by default) on a clone at the offsite site")
def verify(slug: Slug, actor: Caller, body: Verify | None = None) -> JSONResponse:
    require(actor, Action.BACKUP, tenant=slug)
    snapshot = body.snapshot if body else None
    return _accepted(operations.submit(backup_ops.request_restore(actor, slug, mode=RestoreMode.VERIFY,
                                                                  snapshot=snapshot)))


@router.post("/tenants/{slug}/restores", status_code=202, response_model=Accepted,
             summary="Restore a restore point in place or as a copy")
def restore(slug: Slug, actor: Caller, body: Restore) -> JSONResponse:
    require(actor, Action.RESTORE, tenant=slug)
    request = backup_ops.request_restore(actor, slug, mode=RestoreMode(body.mode), snapshot=body.snapshot,
                                         site=body.site, name=body.name)
    return _accepted(operations.submit(request))


def install(app: FastAPI) -> None:
    app.include_router(router)
