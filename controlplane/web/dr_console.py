"""The console's DR page (/dr): the last failover, DR test and failback reports (per county: restore
point, RTO, RPO, each part's seconds) and, for an operator, the buttons that start each job.
Its own router, so the console's module stays as it is; the forms call controlplane.dr_ops."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from controlplane import dr_ops
from controlplane.errors import InvalidInput
from controlplane.web.console import Csrf, _check_csrf, _see, _signed_in, guarded, render
from dr.report import RunKind

router = APIRouter(include_in_schema=False)
SiteField = Annotated[str, Form(max_length=63)]


@router.get("/dr")
@guarded
def dr_page(request: Request) -> Response:
    actor, csrf = _signed_in(request)
    reports = {kind.value: dr_ops.last_report(actor, kind) for kind in RunKind}
    return render(request, "dr.html", actor=actor, csrf=csrf, reports=reports)


@router.post("/dr/{operation}")
@guarded
def dr_operation(request: Request, operation: str, csrf: Csrf = "", from_site: SiteField = "primary",
                 to_site: SiteField = "secondary") -> Response:
    actor, expected = _signed_in(request)
    _check_csrf(expected, csrf)
    if operation == "failover":
        ref = dr_ops.failover(actor, failed_site=from_site, to_site=to_site)
    elif operation == "test":
        ref = dr_ops.dr_test(actor, source_site=from_site, to_site=to_site)
    elif operation == "failback":
        ref = dr_ops.failback(actor, from_site=to_site, to_site=from_site)
    else:
        raise InvalidInput(f"no DR operation {operation!r}")
    return _see(f"/jobs/{quote(ref.id)}")
