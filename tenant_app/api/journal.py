"""Journal (傳票): list, reverse, manual 轉帳傳票; period close (月結)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from tenant_app import audit
from tenant_app.api import API_V1
from tenant_app.api.deps import get_reader
from tenant_app.api.schemas import ManualEntryIn, PeriodCloseIn, ReverseIn
from tenant_app.api.views import entry_json
from tenant_app.auth import Principal, check_agency, get_db, require_action
from tenant_app.domains import IdParam, OffsetParam, PageSizeParam, PeriodParam
from tenant_app.enums import AuditAction
from tenant_app.models import JournalEntry
from tenant_app.rules.journal import JournalLineData
from tenant_app.security.permissions import Action
from tenant_app.services import journal
from tenant_app.services.vouchers import not_found

router = APIRouter(prefix=API_V1, tags=["journal"])


@router.get("/journal")
def list_entries(agency_id: IdParam, fiscal_year_id: IdParam, period: PeriodParam | None = None,
                 limit: PageSizeParam = 200, offset: OffsetParam = 0, db: Session = Depends(get_reader),
                 principal: Principal = Depends(require_action(Action.VIEW))) -> list[dict[str, object]]:
    check_agency(principal, agency_id)
    query = (select(JournalEntry).options(selectinload(JournalEntry.lines))
             .where(JournalEntry.agency_id == agency_id, JournalEntry.fiscal_year_id == fiscal_year_id))
    if period is not None:
        query = query.where(JournalEntry.period == period)
    query = query.order_by(JournalEntry.id).limit(limit).offset(offset)
    return [entry_json(entry) for entry in db.scalars(query)]


@router.post("/journal/{entry_id}/reverse", status_code=201)
def reverse(entry_id: IdParam, body: ReverseIn, db: Session = Depends(get_db),
            principal: Principal = Depends(require_action(Action.POST_JOURNAL))) -> dict[str, object]:
    entry = db.get(JournalEntry, entry_id)
    if entry is None:
        raise not_found("傳票", entry_id)
    check_agency(principal, entry.agency_id)
    posted = journal.reverse(db, entry_id, period=body.period, user_id=principal.user_id, reason=body.reason)
    audit.append(db, principal.username, AuditAction.JOURNAL_REVERSE,
                 {"entry_id": entry_id, "reversal_id": posted.entry_id})
    db.commit()
    return entry_json(db.get_one(JournalEntry, posted.entry_id))


@router.post("/journal", status_code=201)
def manual_entry(body: ManualEntryIn, db: Session = Depends(get_db),
                 principal: Principal = Depends(require_action(Action.POST_JOURNAL))) -> dict[str, object]:
    check_agency(principal, body.agency_id)
    lines = [JournalLineData(ln.account_code, ln.debit, ln.credit, ln.budget_line_id) for ln in body.lines]
    posted = journal.post_manual(db, body.agency_id, body.fiscal_year_id, body.period, lines,
                                 description=body.description, user_id=principal.user_id)
    audit.append(db, principal.username, AuditAction.JOURNAL_MANUAL, {"entry_id": posted.entry_id})
    db.commit()
    return entry_json(db.get_one(JournalEntry, posted.entry_id))


@router.post("/periods/close", status_code=201)
def close_period(body: PeriodCloseIn, db: Session = Depends(get_db),
                 principal: Principal = Depends(require_action(Action.CLOSE_PERIOD))) -> dict[str, object]:
    check_agency(principal, body.agency_id)
    journal.close_period(db, body.agency_id, body.fiscal_year_id, body.period, user_id=principal.user_id)
    audit.append(db, principal.username, AuditAction.PERIOD_CLOSE,
                 {"agency_id": body.agency_id, "fiscal_year_id": body.fiscal_year_id, "period": body.period})
    db.commit()
    return {"agency_id": body.agency_id, "fiscal_year_id": body.fiscal_year_id, "period": body.period,
            "closed": True}
