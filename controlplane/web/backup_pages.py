"""The console's backup page: a county's restore points (time, size, offsite, verified, figures) and
the forms to back up now, verify, and restore in place or as a copy. Same use cases as the CLI and
API (controlplane.backup_ops); what the page offers follows the roles, and the use cases refuse the rest.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import Response

from backup.steps import RestoreMode
from controlplane import backup_ops, operations
from controlplane.errors import InvalidInput
from controlplane.web.console import Csrf, _check_csrf, _see, _signed_in, _slug, guarded, render

router = APIRouter(include_in_schema=False)
Snapshot = Annotated[str, Form(max_length=64)]


@router.get("/tenants/{slug}/backups")
@guarded
def backups_page(request: Request, slug: str) -> Response:
    actor, csrf = _signed_in(request)
    found = backup_ops.list_restore_points(actor, _slug(slug))
    return render(request, "backups.html", actor=actor, csrf=csrf, found=found)


@router.post("/tenants/{slug}/backups/{operation}")
@guarded
def backup_operation(request: Request, slug: str, operation: str, csrf: Csrf = "",
                     snapshot: Snapshot = "") -> Response:
    actor, expected = _signed_in(request)
    _check_csrf(expected, csrf)
    _slug(slug)
    chosen = snapshot.strip() or None
    if operation == "now":
        request_ = backup_ops.request_backup(actor, slug)
    elif operation in ("verify", "copy", "in-place"):
        request_ = backup_ops.request_restore(actor, slug, mode=RestoreMode(operation), snapshot=chosen)
    else:
        raise InvalidInput(f"no backup operation {operation!r}")
    ref = operations.submit(request_)
    return _see(f"/jobs/{quote(ref.id)}")


def install(app: FastAPI) -> None:
    app.include_router(router)
