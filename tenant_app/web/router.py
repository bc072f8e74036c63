"""The web UI as one router for tenant_app.app: `app.include_router(web_router)`."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from tenant_app.web.pages import (
    account,
    admin,
    audit_log,
    budget,
    certifications,
    delegations,
    journal,
    payments,
    periods,
    reports,
    session,
    vouchers,
)
from tenant_app.web.templating import STATIC_DIR

# Everything is served from the package: the county VM has no route to a CDN (network rule).
_STATIC_FILES = {path.name: path for path in STATIC_DIR.iterdir() if path.is_file()}

web_router = APIRouter(include_in_schema=False)


@web_router.get("/static/{name}")
def static_file(name: str) -> FileResponse:
    path = _STATIC_FILES.get(name)  # a fixed list: no path from the request ever reaches the disk
    if path is None:
        raise HTTPException(404)
    return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})


_PAGES = (session, budget, certifications, vouchers, payments, journal, periods, reports, delegations, admin,
          audit_log, account)
for module in _PAGES:
    web_router.include_router(module.router)
