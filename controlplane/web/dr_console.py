"""The console's DR page (/dr): the last failover, DR test and failback reports (per county: restore
point, RTO, RPO, each part's seconds) and, for an operator, the buttons that start each job.
Its own router, so the console's module stays as it is; the forms call controlplane.dr_ops."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from controlplane import dr_ops
from controlplane.errors import InvalidInput
from controlplane.web.console import Csrf, _check_csrf, _see, _signed_in, guarded, lang_of, render
from controlplane.web.i18n import translate
from dr.outage import STATUS_TEXT
from dr.report import RunKind

router = APIRouter(include_in_schema=False)
SiteField = Annotated[str, Form(max_length=63)]


@router.get("/dr")
@guarded
def dr_page(request: Request) -> Response:
    actor, csrf = _signed_in(request)
    reports = {kind.value: dr_ops.last_report(actor, kind) for kind in RunKind}
    watch = dr_ops.site_watch(actor)
    lang = lang_of(request)
    sites = [{"site": view.site, "verdict": view.verdict.value,
              "status": translate(lang, STATUS_TEXT[view.status]).format(**view.status_args),
              "checked_at": datetime.fromtimestamp(view.checked_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
              "reason": view.reason} for view in (watch.sites.values() if watch else [])]
    return render(request, "dr.html", actor=actor, csrf=csrf, reports=reports, watch=watch, sites=sites)


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
