"""Budget lines and balances, allotments, amendments and transfers (流用)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy import select
from sqlalchemy.orm import Session

from tenant_app import audit
from tenant_app.api import API_V1
from tenant_app.api.deps import get_reader
from tenant_app.api.schemas import AllotmentIn, AmendmentIn, TransferIn
from tenant_app.api.views import line_json
from tenant_app.auth import Principal, check_agency, get_db, require_action
from tenant_app.domains import IdParam
from tenant_app.enums import AuditAction
from tenant_app.models import BudgetLine
from tenant_app.security.permissions import Action
from tenant_app.services import budget
from tenant_app.services.vouchers import not_found

router = APIRouter(prefix=API_V1, tags=["budget"])


def line_or_404(db: Session, budget_line_id: int) -> BudgetLine:
    line = db.get(BudgetLine, budget_line_id)
    if line is None:
        raise not_found("預算科目", budget_line_id)
    return line


@router.get("/budget-lines")
def list_lines(agency_id: IdParam, fiscal_year_id: IdParam | None = None, db: Session = Depends(get_reader),
               principal: Principal = Depends(require_action(Action.VIEW))) -> list[dict[str, object]]:
    check_agency(principal, agency_id)
    query = select(BudgetLine).where(BudgetLine.agency_id == agency_id)
    if fiscal_year_id is not None:
        query = query.where(BudgetLine.fiscal_year_id == fiscal_year_id)
    return [line_json(line) for line in db.scalars(query.order_by(BudgetLine.id))]


@router.get("/budget-lines/{budget_line_id}")
def get_line(budget_line_id: IdParam, db: Session = Depends(get_reader),
             principal: Principal = Depends(require_action(Action.VIEW))) -> dict[str, object]:
    line = line_or_404(db, budget_line_id)
    check_agency(principal, line.agency_id)
    return line_json(line)


@router.post("/budget-lines/{budget_line_id}/allotments", status_code=201)
def allot(budget_line_id: IdParam, body: AllotmentIn, db: Session = Depends(get_db),
          principal: Principal = Depends(require_action(Action.POST_JOURNAL))) -> dict[str, object]:
    check_agency(principal, line_or_404(db, budget_line_id).agency_id)
    allotment = budget.allot(db, budget_line_id, body.period, body.amount, user_id=principal.user_id)
    audit.append(db, principal.username, AuditAction.ALLOT,
                 {"budget_line_id": budget_line_id, "period": body.period, "amount": body.amount})
    db.commit()
    return {"id": allotment.id, "period": allotment.period, "amount": allotment.amount,
            "applied": allotment.applied, "line": line_json(line_or_404(db, budget_line_id))}


@router.post("/budget-lines/{budget_line_id}/amendments", status_code=201)
def amend(budget_line_id: IdParam, body: AmendmentIn, db: Session = Depends(get_db),
          principal: Principal = Depends(require_action(Action.CLOSE_PERIOD))) -> dict[str, object]:
    check_agency(principal, line_or_404(db, budget_line_id).agency_id)
    document = budget.amend(db, budget_line_id, body.amount, body.reason, user_id=principal.user_id)
    audit.append(db, principal.username, AuditAction.AMEND,
                 {"budget_line_id": budget_line_id, "amount": body.amount, "number": document.number})
    db.commit()
    return {"id": document.id, "number": document.number, "amount": document.amount}


@router.post("/transfers", status_code=201)
def transfer(body: TransferIn, db: Session = Depends(get_db),
             principal: Principal = Depends(require_action(Action.CLOSE_PERIOD))) -> dict[str, object]:
    """流用 needs the chief accountant (the role that may close periods); refusals explain the 20% rule."""
    check_agency(principal, line_or_404(db, body.from_line_id).agency_id)
    check_agency(principal, line_or_404(db, body.to_line_id).agency_id)
    document = budget.transfer(db, body.from_line_id, body.to_line_id, body.amount, body.reason,
                               user_id=principal.user_id, approved_by=principal.user_id)
    audit.append(db, principal.username, AuditAction.TRANSFER,
                 {"from_line_id": body.from_line_id, "to_line_id": body.to_line_id, "amount": body.amount,
                  "number": document.number})
    db.commit()
    return {"id": document.id, "number": document.number, "amount": document.amount}
