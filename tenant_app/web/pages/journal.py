"""傳票: the agency's posted entries with their lines; reversal (沖銷) and a manual 轉帳傳票.

Posted entries never change (A's services refuse it); a correction is a reversal posted in an open
period. Both go through tenant_app.services.journal, which also checks balance and closed periods.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Query, Response, status
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from tenant_app import audit
from tenant_app.domains import PERIOD, IdParam
from tenant_app.enums import AuditAction, JournalKind
from tenant_app.models import Account, JournalEntry
from tenant_app.rules.journal import JournalLineData
from tenant_app.security.permissions import Action
from tenant_app.services import journal
from tenant_app.services.certification import today
from tenant_app.web.context import Page, WebRefusal, WebRoute, form_page, user_page
from tenant_app.web.forms import FormError, parse_choice, parse_money, parse_optional_int
from tenant_app.web.labels import JOURNAL_KIND_ZH

router = APIRouter(route_class=WebRoute, include_in_schema=False)

PAGE_SIZE = 100


@router.get("/journal")
def journal_list(kind_raw: str = Query("", alias="kind"), period_raw: str = Query("", alias="period"),
                 before: IdParam | None = None, current: Page = Depends(user_page)) -> Response:
    current.require(Action.VIEW)
    try:  # the filter form sends '' for 全部 / an empty period
        kind = parse_choice(kind_raw, JournalKind, "種類")
        period = parse_optional_int(period_raw, "期別", PERIOD)
    except FormError as error:
        raise WebRefusal(error.message, status.HTTP_422_UNPROCESSABLE_CONTENT) from error
    agency = current.require_agency()
    year = current.require_fiscal_year()
    query = (select(JournalEntry).options(selectinload(JournalEntry.lines))
             .where(JournalEntry.agency_id == agency.id, JournalEntry.fiscal_year_id == year.id))
    if kind is not None:
        query = query.where(JournalEntry.kind == kind)
    if period is not None:
        query = query.where(JournalEntry.period == period)
    if before is not None:  # paging backwards through history, newest first
        query = query.where(JournalEntry.id < before)
    entries = current.db.scalars(query.order_by(JournalEntry.id.desc()).limit(PAGE_SIZE)).all()
    reversed_ids = set(current.db.scalars(select(JournalEntry.reversal_of_id).where(
        JournalEntry.reversal_of_id.in_([e.id for e in entries]))))
    accounts = {a.code: a.name for a in current.db.scalars(select(Account).order_by(Account.code))}
    return current.render(
        "journal.html", entries=entries, accounts=accounts, kinds=JOURNAL_KIND_ZH, chosen_kind=kind,
        chosen_period=period, reversed_ids=reversed_ids, can_post=current.user.may(Action.POST_JOURNAL),
        today_period=today().month, older=entries[-1].id if len(entries) == PAGE_SIZE else None,
    )


@router.post("/journal/{entry_id}/reverse")
def reverse(entry_id: IdParam, period: str = Form(""), reason: str = Form(""),
            current: Page = Depends(form_page)) -> Response:
    user = current.require(Action.POST_JOURNAL)
    entry = current.db.get(JournalEntry, entry_id)
    if entry is None:
        raise WebRefusal("查無此傳票。", status.HTTP_404_NOT_FOUND)
    current.check_agency(entry.agency_id)
    try:
        chosen = parse_optional_int(period, "期別", PERIOD) or today().month
    except FormError as error:
        raise WebRefusal(error.message, status.HTTP_422_UNPROCESSABLE_CONTENT) from error
    posted = journal.reverse(current.db, entry_id, period=chosen, user_id=user.user_id, reason=reason.strip())
    audit.append(current.db, user.username, AuditAction.JOURNAL_REVERSE,
                 {"entry_id": entry_id, "reversal_id": posted.entry_id})
    current.db.commit()
    return current.redirect("/journal", f"已沖銷傳票第 {entry.number} 號（沖銷傳票第 {posted.number} 號）。")


@router.post("/journal")
def manual(
    debit_account: str = Form(""), credit_account: str = Form(""), amount: str = Form(""),
    period: str = Form(""), description: str = Form(""), current: Page = Depends(form_page),
) -> Response:
    user = current.require(Action.POST_JOURNAL)
    agency = current.require_agency()
    year = current.require_fiscal_year()
    try:
        money = parse_money(amount)
        chosen = parse_optional_int(period, "期別", PERIOD) or today().month
        if not description.strip():
            raise FormError("請填寫摘要。")
    except FormError as error:
        raise WebRefusal(error.message, status.HTTP_422_UNPROCESSABLE_CONTENT) from error
    lines = [JournalLineData(debit_account, money, 0, None), JournalLineData(credit_account, 0, money, None)]
    posted = journal.post_manual(current.db, agency.id, year.id, chosen, lines,
                                 description=description.strip()[:255], user_id=user.user_id)
    audit.append(current.db, user.username, AuditAction.JOURNAL_MANUAL, {"entry_id": posted.entry_id})
    current.db.commit()
    return current.redirect("/journal", f"已過帳轉帳傳票第 {posted.number} 號。")
