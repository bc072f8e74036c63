"""The REST API, `/api/v1`. Routes stay thin: gate the role (controlplane.api.deps.require), call the
use case, shape the answer. Operations that run a job answer 202 with the job's id at once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from controlplane import audit, auth
from controlplane.actors import Actor
from controlplane.api import schemas
from controlplane.api.deps import api_actor, context, require
from controlplane.roles import Action, Role
from inventory.jobs import JobStatus

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": schemas.Error} for status in (401, 403, 404, 409, 413, 422, 429, 503)
}
router = APIRouter(prefix="/api/v1", responses=ERRORS)

Caller = Annotated[Actor, Depends(api_actor)]
Slug = Annotated[str, Path(pattern=schemas.SLUG, description="A county's slug")]
JobId = Annotated[str, Path(pattern=schemas.JOB_ID)]
UserName = Annotated[str, Path(pattern=schemas.USER_NAME)]
TokenId = Annotated[str, Path(pattern=schemas.TOKEN_ID)]
Limit = Annotated[int, Query(ge=1, le=500)]
# Counties per page of GET /tenants unless asked: a page is what a screen or a script handles at once.
PAGE = 100
# Job states in which the event stream ends (a failed job may be resumed: the browser reconnects).
STREAM_ENDS = frozenset({JobStatus.SUCCEEDED, JobStatus.CANCELLED, JobStatus.FAILED})


def _accepted(ref: Any) -> JSONResponse:
    body = schemas.job_ref(ref)
    return JSONResponse(body, status_code=202, headers={"Location": body["status_url"]})


# ---------------------------------------------------------------- who am I


@router.get("/me", tags=["auth"], summary="The caller: user, role, county scope")
def me(actor: Caller) -> dict[str, Any]:
    return {"kind": actor.kind.value, "name": actor.name, "role": actor.role.value, "tenant": actor.tenant,
            "token_id": actor.token_id}


# ---------------------------------------------------------------- the platform


@router.get("/sites", tags=["platform"])
def sites(request: Request, actor: Caller) -> list[dict[str, Any]]:
    require(actor, Action.READ, platform_wide=True)
    return context(request).ops.list_sites(actor)


@router.get("/hosts", tags=["platform"])
def hosts(request: Request, actor: Caller) -> list[dict[str, Any]]:
    require(actor, Action.READ, platform_wide=True)
    return context(request).ops.list_hosts(actor)


# The long lists are answered as they are (plain JSON types already): validating 1000 counties
# against a response model again would be most of the request's time.
@router.get("/vms", tags=["platform"], summary="VMs (a county user: its county's only)",
            response_model=list[dict[str, Any]])
def vms(request: Request, actor: Caller) -> JSONResponse:
    require(actor, Action.READ)
    return JSONResponse(context(request).ops.list_vms(actor))


@router.get("/tenants", tags=["counties"], summary="Counties (a county user: its own only)",
            response_model=list[dict[str, Any]])
def tenants(request: Request, actor: Caller, limit: Annotated[int, Query(ge=1, le=1000)] = PAGE,
            after: Annotated[str | None, Query(pattern=schemas.SLUG,
                                               description="The last slug of the page before")] = None,
            ) -> JSONResponse:
    """A page of counties in slug order, with health (cached) and newest job; when more follow, a
    `Link: <...>; rel="next"` header gives the next page."""
    require(actor, Action.READ)
    rows = context(request).ops.list_tenants(actor, limit=limit, after=after)
    headers = {}
    if len(rows) == limit:
        headers["Link"] = f'</api/v1/tenants?limit={limit}&after={rows[-1]["tenant"]}>; rel="next"'
    return JSONResponse(rows, headers=headers)


@router.get("/tenants/{slug}", tags=["counties"])
def tenant(request: Request, actor: Caller, slug: Slug) -> dict[str, Any]:
    require(actor, Action.READ, tenant=slug)
    return context(request).ops.show_tenant(actor, slug)


@router.post("/tenants", tags=["counties"], status_code=202, response_model=schemas.Accepted,
             summary="Create a county declared in the inventory (a provisioning job)")
def create_tenant(request: Request, actor: Caller, body: schemas.TenantCreate) -> JSONResponse:
    require(actor, Action.PROVISION, tenant=body.slug)
    return _accepted(context(request).ops.create_tenant(actor, body.slug, cold=body.cold))


@router.post("/tenants/{slug}/resize", tags=["counties"], status_code=202, response_model=schemas.Accepted)
def resize(request: Request, actor: Caller, slug: Slug, body: schemas.Resize) -> JSONResponse:
    require(actor, Action.RESIZE, tenant=slug)
    return _accepted(context(request).ops.resize_vm(actor, slug, vcpus=body.vcpus, memory_mb=body.memory_mb,
                                                    vm=body.vm))


@router.post("/tenants/{slug}/configure", tags=["counties"], status_code=202,
             response_model=schemas.Accepted)
def configure(request: Request, actor: Caller, slug: Slug) -> JSONResponse:
    require(actor, Action.CONFIGURE, tenant=slug)
    return _accepted(context(request).ops.configure_tenant(actor, slug))


@router.post("/tenants/{slug}/retire", tags=["counties"], status_code=202, response_model=schemas.Accepted)
def retire(request: Request, actor: Caller, slug: Slug, body: schemas.Retire) -> JSONResponse:
    require(actor, Action.RETIRE, tenant=slug)
    return _accepted(context(request).ops.retire_tenant(actor, slug, purge=body.purge))


# ---------------------------------------------------------------- inventory


@router.post("/inventory/plan", tags=["inventory"], summary="What applying a declaration would change")
def inventory_plan(request: Request, actor: Caller, body: schemas.InventoryText) -> dict[str, Any]:
    require(actor, Action.READ, platform_wide=True)  # a plan changes nothing
    return context(request).ops.inventory_plan(actor, body.yaml)


@router.post("/inventory/apply", tags=["inventory"])
def inventory_apply(request: Request, actor: Caller, body: schemas.InventoryText) -> dict[str, Any]:
    require(actor, Action.INVENTORY_APPLY, platform_wide=True)
    return context(request).ops.inventory_apply(actor, body.yaml)


# ---------------------------------------------------------------- jobs


@router.get("/jobs", tags=["jobs"], summary="Newest first (a county user: its county's only)")
def list_jobs(request: Request, actor: Caller, limit: Limit = 50,
              target: Annotated[str | None, Query(max_length=120, pattern=schemas.NO_NUL)] = None,
              status: JobStatus | None = None,
              tenant: Annotated[str | None, Query(pattern=schemas.SLUG,
                                                  description="A county's jobs (its VMs' too)")] = None,
              ) -> list[dict[str, Any]]:
    # A county actor gets its county's jobs only (the use case scopes them: a resize targets a VM).
    require(actor, Action.READ, tenant=tenant if actor.role == Role.COUNTY else None)
    views = context(request).ops.list_jobs(actor, limit=limit, target=target, status=status, tenant=tenant)
    return [view.to_json() for view in views]


@router.get("/jobs/{job_id}", tags=["jobs"], summary="A job and its steps, with timings and output")
def get_job(request: Request, actor: Caller, job_id: JobId) -> dict[str, Any]:
    require(actor, Action.READ)
    # The use case answers a county actor's request for another county's job as not found.
    return context(request).ops.get_job(actor, job_id).to_json()


def sse(event: str, data: str, event_id: str | None = None) -> str:
    """One server-sent event (the data is JSON on one line)."""
    return (f"event: {event}\n" + (f"id: {event_id}\n" if event_id else "") + f"data: {data}\n\n")


@router.get("/jobs/{job_id}/events", tags=["jobs"], response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`job` events (the job as in GET /jobs/{id}) each time it "
                                            "changes, then one `end` event"}},
            summary="The job's progress as server-sent events")
async def job_events(request: Request, actor: Caller, job_id: JobId) -> StreamingResponse:
    require(actor, Action.READ)
    ctx = context(request)
    # Checked before the stream starts, so an unknown or foreign job is a plain error answer.
    first = await anyio.to_thread.run_sync(lambda: ctx.ops.get_job(actor, job_id))
    return StreamingResponse(_stream(request, actor, job_id, first), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _stream(request: Request, actor: Actor, job_id: str, first: Any) -> AsyncIterator[str]:
    ctx = context(request)
    view, last, waited = first, None, 0.0
    while True:
        body = view.to_json()
        text = json.dumps(body, sort_keys=True, ensure_ascii=False)
        if text != last:
            yield sse("job", text, str(len(body["steps"])))
            last = text
        if view.status in STREAM_ENDS or waited >= ctx.sse_max_s or await request.is_disconnected():
            yield sse("end", json.dumps({"status": view.status.value}))
            return
        await anyio.sleep(ctx.sse_poll_s)
        waited += ctx.sse_poll_s
        view = await anyio.to_thread.run_sync(lambda: ctx.ops.get_job(actor, job_id))


@router.post("/jobs/{job_id}/resume", tags=["jobs"], status_code=202, response_model=schemas.Accepted)
def resume_job(request: Request, actor: Caller, job_id: JobId) -> JSONResponse:
    require(actor, Action.JOB_CONTROL)
    return _accepted(context(request).ops.resume_job(actor, job_id))


@router.post("/jobs/{job_id}/cancel", tags=["jobs"])
def cancel_job(request: Request, actor: Caller, job_id: JobId) -> dict[str, Any]:
    require(actor, Action.JOB_CONTROL)
    context(request).ops.cancel_job(actor, job_id)
    return {"job_id": job_id, "status": JobStatus.CANCELLED.value}


# ---------------------------------------------------------------- users and tokens


@router.get("/users", tags=["auth"])
def list_users(request: Request, actor: Caller) -> list[dict[str, Any]]:
    return [user.to_json() for user in auth.list_users(context(request).engine, actor)]


@router.post("/users", tags=["auth"], status_code=201)
def create_user(request: Request, actor: Caller, body: schemas.UserCreate) -> JSONResponse:
    user = auth.create_user(context(request).engine, actor, body.name, body.role, tenant=body.tenant,
                            password=body.password)
    return JSONResponse(user.to_json(), status_code=201)


@router.post("/users/{name}/disable", tags=["auth"])
def disable_user(request: Request, actor: Caller, name: UserName) -> dict[str, Any]:
    auth.disable_user(context(request).engine, actor, name)
    return {"name": name, "disabled": True}


@router.post("/users/{name}/enable", tags=["auth"])
def enable_user(request: Request, actor: Caller, name: UserName) -> dict[str, Any]:
    auth.disable_user(context(request).engine, actor, name, disabled=False)
    return {"name": name, "disabled": False}


@router.put("/users/{name}/password", tags=["auth"], summary="Yours, or anyone's as an admin")
def set_password(request: Request, actor: Caller, name: UserName,
                 body: schemas.PasswordSet) -> dict[str, Any]:
    auth.set_password(context(request).engine, actor, name, body.password)
    return {"name": name, "password_set": True}


@router.get("/tokens", tags=["auth"], summary="Your tokens (everyone's for an admin or auditor)")
def list_tokens(request: Request, actor: Caller,
                user: Annotated[str | None, Query(pattern=schemas.USER_NAME)] = None) -> list[dict[str, Any]]:
    return [token.to_json() for token in auth.list_tokens(context(request).engine, actor, user)]


@router.post("/tokens", tags=["auth"], status_code=201, summary="A new token; its secret is shown once")
def create_token(request: Request, actor: Caller, body: schemas.TokenCreate) -> JSONResponse:
    token, secret = auth.create_token(context(request).engine, actor, body.user or actor.name, body.label)
    return JSONResponse({**token.to_json(), "secret": secret}, status_code=201)


@router.delete("/tokens/{token_id}", tags=["auth"])
def revoke_token(request: Request, actor: Caller, token_id: TokenId) -> dict[str, Any]:
    auth.revoke_token(context(request).engine, actor, token_id)
    return {"id": token_id, "revoked": True}


# ---------------------------------------------------------------- audit


@router.get("/audit", tags=["audit"], summary="Audit events, newest first")
def audit_events(request: Request, actor: Caller, limit: Limit = 100,
                 target: Annotated[str | None, Query(max_length=200, pattern=schemas.NO_NUL)] = None,
                 before: Annotated[int | None, Query(ge=1, le=2**62)] = None) -> list[dict[str, Any]]:
    require(actor, Action.READ_AUDIT, platform_wide=True)
    rows = audit.list_events(context(request).engine, limit=limit, target=target, before_seq=before)
    return [audit.event_json(row) for row in rows]


@router.get("/audit/verify", tags=["audit"], summary="Check the hash chain and its anchor")
def audit_verify(request: Request, actor: Caller) -> dict[str, Any]:
    require(actor, Action.READ_AUDIT, platform_wide=True)
    engine = context(request).engine
    report = audit.verify(engine, audit.anchor_path(engine))
    return {"ok": report.ok, "events": report.events, "problems": report.problems,
            "head": report.head.__dict__ if report.head else None,
            "anchor": report.anchor.__dict__ if report.anchor else None}
