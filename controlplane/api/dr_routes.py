"""`/api/v1/dr`: failover, DR test and failback jobs (202 with the job's id), and the last report
of each kind. Role operator (Action.DR); reports are readable by every platform role."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse
from pydantic import Field

from controlplane import dr_ops
from controlplane.actors import Actor
from controlplane.api import schemas
from controlplane.api.deps import api_actor, require
from controlplane.errors import NotFoundError
from controlplane.roles import Action
from dr.report import RunKind

router = APIRouter(prefix="/api/v1/dr", tags=["dr"],
                   responses={status: {"model": schemas.Error} for status in (401, 403, 404, 409, 422)})
Caller = Annotated[Actor, Depends(api_actor)]
SITE = r"^[a-z][a-z0-9-]{0,62}$"
Counties = Annotated[list[Annotated[str, Field(pattern=schemas.SLUG)]] | None, Field(max_length=1000)]


class Failover(schemas.Strict):
    failed_site: str = Field(default="primary", pattern=SITE)
    to_site: str = Field(default="secondary", pattern=SITE)
    counties: Counties = None
    points: dict[str, Annotated[str, Field(pattern=r"^[0-9a-f]{4,64}$")]] = Field(default_factory=dict)
    failed_at: float | None = Field(default=None, ge=0, description="Epoch seconds of the site failure.")
    cold: bool = False


class DrTest(schemas.Strict):
    source_site: str = Field(default="primary", pattern=SITE)
    to_site: str = Field(default="secondary", pattern=SITE)
    counties: Counties = None


class Failback(schemas.Strict):
    from_site: str = Field(default="secondary", pattern=SITE)
    to_site: str = Field(default="primary", pattern=SITE)
    counties: Counties = None


def _accepted(ref: Any) -> JSONResponse:
    body = schemas.job_ref(ref)
    return JSONResponse(body, status_code=202, headers={"Location": body["status_url"]})


@router.post("/failover", status_code=202, response_model=schemas.Accepted,
             summary="Fence the failed site and bring its counties up at the other one")
def failover(actor: Caller, body: Failover) -> JSONResponse:
    require(actor, Action.DR, platform_wide=True)
    return _accepted(dr_ops.failover(actor, **body.model_dump()))


@router.post("/test", status_code=202, response_model=schemas.Accepted,
             summary="DR test: counties up in isolation at the other site, reported, removed")
def dr_test(actor: Caller, body: DrTest) -> JSONResponse:
    require(actor, Action.DR, platform_wide=True)
    return _accepted(dr_ops.dr_test(actor, **body.model_dump()))


@router.post("/failback", status_code=202, response_model=schemas.Accepted,
             summary="Bring the counties home with nothing lost")
def failback(actor: Caller, body: Failback) -> JSONResponse:
    require(actor, Action.DR, platform_wide=True)
    return _accepted(dr_ops.failback(actor, **body.model_dump()))


@router.get("/reports/{kind}", summary="The last run's report: per county RTO, RPO, restore point, parts")
def last_report(actor: Caller, kind: Annotated[RunKind, Path()]) -> dict[str, Any]:
    require(actor, Action.READ, platform_wide=True)
    found = dr_ops.last_report(actor, kind)
    if found is None:
        raise NotFoundError(f"no {kind.value} has run yet")
    return found


@router.get("/watch", summary="The site watch: each site's verdict, what is done about it, open outages")
def site_watch(actor: Caller) -> dict[str, Any]:
    require(actor, Action.READ, platform_wide=True)
    found = dr_ops.site_watch(actor)
    if found is None:
        raise NotFoundError("no site watch runs (`countycloud serve` runs it)")
    return found.model_dump(mode="json") | {
        "status_text": {site: view.status_text for site, view in found.sites.items()}}
