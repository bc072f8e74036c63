"""簽證 routes: the hot path goes through the certification writer (no database work in the handler)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from tenant_app import audit, timing
from tenant_app.api.budget import line_or_404
from tenant_app.api.errors import rule_response
from tenant_app.api.schemas import CertifyIn, ReleaseIn
from tenant_app.api.views import certification_json, outcome_json
from tenant_app.auth import Principal, check_agency, get_db, require_action
from tenant_app.enums import AuditAction
from tenant_app.models import Certification
from tenant_app.security.permissions import Action
from tenant_app.services.certification import CertifyRequest
from tenant_app.services.vouchers import release_certification

router = APIRouter(tags=["certifications"])


@router.post("/certifications", status_code=201)
async def certify(body: CertifyIn, request: Request,
                  principal: Principal = Depends(require_action(Action.CERTIFY))) -> JSONResponse:
    """Reserve `amount` on a budget line. 409 `insufficient_balance` says the balance seen and the amount."""
    state = request.app.state.tenant
    outcome, db_seconds = await state.writer.certify(CertifyRequest(
        budget_line_id=body.budget_line_id, amount=body.amount, user_id=principal.user_id,
        allowed_agencies=principal.agency_ids, period=body.period, purpose=body.purpose))
    timing.add_db_time(db_seconds)
    if not outcome.accepted:
        state.metrics.refusals.labels(outcome.errors[0].code.value).inc()
        return rule_response(list(outcome.errors))
    state.metrics.certifications.inc()
    return JSONResponse(outcome_json(outcome), status_code=201)


@router.get("/certifications")
def list_certifications(
    budget_line_id: int, db: Session = Depends(get_db),
    principal: Principal = Depends(require_action(Action.VIEW)),
) -> list[dict[str, object]]:
    check_agency(principal, line_or_404(db, budget_line_id).agency_id)
    certs = db.scalars(select(Certification).where(Certification.budget_line_id == budget_line_id)
                       .order_by(Certification.number)).all()
    return [certification_json(c) for c in certs]


@router.post("/certifications/{certification_id}/release")
def release(certification_id: int, body: ReleaseIn, db: Session = Depends(get_db),
            principal: Principal = Depends(require_action(Action.CERTIFY))) -> dict[str, object]:
    cert = db.get(Certification, certification_id)
    if cert is not None:
        check_agency(principal, cert.agency_id)
    cert = release_certification(db, certification_id, body.amount, user_id=principal.user_id)
    audit.append(db, principal.username, AuditAction.RELEASE,
                 {"certification_id": cert.id, "released_amount": cert.released_amount})
    db.commit()
    return certification_json(cert)
