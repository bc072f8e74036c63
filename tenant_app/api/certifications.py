"""簽證 routes: the hot path goes through the certification writer (no database work in the handler)."""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from tenant_app import audit, timing
from tenant_app.api import API_V1
from tenant_app.api.budget import line_or_404
from tenant_app.api.deps import get_reader, require_action_async
from tenant_app.api.errors import STATUS_BY_CODE, error_body
from tenant_app.api.schemas import CertifyIn, ReleaseIn
from tenant_app.api.views import certification_json, outcome_json
from tenant_app.auth import Principal, check_agency, get_db, require_action
from tenant_app.domains import IdParam
from tenant_app.enums import AuditAction
from tenant_app.metrics import AppMetrics
from tenant_app.models import Certification
from tenant_app.security.permissions import Action
from tenant_app.services.certification import CertifyRequest
from tenant_app.services.certify_writer import CertificationWriter
from tenant_app.services.vouchers import release_certification

router = APIRouter(prefix=API_V1, tags=["certifications"])


class AppStateLike(Protocol):
    """The part of app.AppState the certification path uses (app.py imports this module)."""

    writer: CertificationWriter
    metrics: AppMetrics


async def certify_outcome(state: AppStateLike, request: CertifyRequest) -> tuple[int, dict[str, Any]]:
    """Queue one certification on the writer and shape the answer: (HTTP status, JSON body).

    Shared by the route below and the fast path (api/fastpath.py), so both answer identically.
    """
    outcome, db_seconds = await state.writer.certify(request)
    timing.add_db_time(db_seconds)
    if not outcome.accepted:
        state.metrics.refusals.labels(outcome.errors[0].code.value).inc()
        return STATUS_BY_CODE.get(outcome.errors[0].code, 422), error_body(list(outcome.errors))
    state.metrics.certifications.inc()
    return 201, outcome_json(outcome)


@router.post("/certifications", status_code=201)
async def certify(body: CertifyIn, request: Request,
                  principal: Principal = Depends(require_action_async(Action.CERTIFY))) -> JSONResponse:
    """Reserve `amount` on a budget line. 409 `insufficient_balance` says the balance seen and the amount."""
    status, payload = await certify_outcome(request.app.state.tenant, CertifyRequest(
        budget_line_id=body.budget_line_id, amount=body.amount, user_id=principal.user_id,
        allowed_agencies=principal.agency_ids, period=body.period, purpose=body.purpose))
    return JSONResponse(payload, status_code=status)


@router.get("/certifications")
def list_certifications(
    budget_line_id: IdParam, db: Session = Depends(get_reader),
    principal: Principal = Depends(require_action(Action.VIEW)),
) -> list[dict[str, object]]:
    check_agency(principal, line_or_404(db, budget_line_id).agency_id)
    certs = db.scalars(select(Certification).where(Certification.budget_line_id == budget_line_id)
                       .order_by(Certification.number)).all()
    return [certification_json(c) for c in certs]


@router.post("/certifications/{certification_id}/release")
def release(certification_id: IdParam, body: ReleaseIn, db: Session = Depends(get_db),
            principal: Principal = Depends(require_action(Action.CERTIFY))) -> dict[str, object]:
    cert = db.get(Certification, certification_id)
    if cert is not None:
        check_agency(principal, cert.agency_id)
    cert = release_certification(db, certification_id, body.amount, user_id=principal.user_id)
    audit.append(db, principal.username, AuditAction.RELEASE,
                 {"certification_id": cert.id, "released_amount": cert.released_amount})
    db.commit()
    return certification_json(cert)
