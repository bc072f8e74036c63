"""預算與餘額: the chosen agency's budget lines with every running total and the available balance."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Response, status

from tenant_app import audit
from tenant_app.domains import IdParam
from tenant_app.enums import AuditAction
from tenant_app.models import BudgetLine
from tenant_app.rules.errors import RuleViolationError
from tenant_app.security.permissions import Action
from tenant_app.services import budget as budget_service
from tenant_app.web import queries
from tenant_app.web.context import Page, WebRoute, form_page, user_page
from tenant_app.web.forms import FormError, parse_money

# 流用 is approved by the chief accountant, the role that may close periods (as in the JSON API).
TRANSFER_ACTION = Action.CLOSE_PERIOD

router = APIRouter(route_class=WebRoute, include_in_schema=False)


@router.get("/budget")
def budget(current: Page = Depends(user_page)) -> Response:
    return _render(current)


def _render(current: Page, status_code: int = 200, error: str | None = None,
            errors: list[object] | None = None) -> Response:
    current.require(Action.VIEW)
    agency = current.require_agency()
    year = current.require_fiscal_year()
    lines = queries.budget_lines(current.db, agency.id, year.id)
    totals = {
        "authorised": sum(v.state.authorised for v in lines),
        "allotted": sum(v.state.allotted for v in lines),
        "certified": sum(v.state.certified for v in lines),
        "paid": sum(v.state.paid_on_certified + v.state.paid_direct for v in lines),
        "available": sum(v.state.available for v in lines),
    }
    return current.render("budget.html", status_code=status_code, lines=lines, totals=totals,
                          can_transfer=current.user.may(TRANSFER_ACTION), form_error=error,
                          errors=errors or [])


@router.post("/budget/transfer")
def transfer(from_line_id: Annotated[IdParam, Form()], to_line_id: Annotated[IdParam, Form()],
             amount: str = Form(""), reason: str = Form(""), current: Page = Depends(form_page)) -> Response:
    """流用 between object codes of one programme; the 20% and no-personnel rules are A's."""
    user = current.require(TRANSFER_ACTION)
    agency = current.require_agency()
    for line_id in (from_line_id, to_line_id):
        line = current.db.get(BudgetLine, line_id)
        if line is None or line.agency_id != agency.id:
            return _render(current, status.HTTP_422_UNPROCESSABLE_CONTENT, "請選擇本機關的預算科目。")
    try:
        money = parse_money(amount, "流用金額")
        document = budget_service.transfer(current.db, from_line_id, to_line_id, money, reason.strip(),
                                           user_id=user.user_id, approved_by=user.user_id)
    except FormError as error:
        return _render(current, status.HTTP_422_UNPROCESSABLE_CONTENT, error.message)
    except RuleViolationError as refused:
        current.db.rollback()
        return _render(current, refused.status, "流用未執行：", list(refused.errors))
    audit.append(current.db, user.username, AuditAction.TRANSFER,
                 {"from_line_id": from_line_id, "to_line_id": to_line_id, "amount": money,
                  "number": document.number})
    current.db.commit()
    return current.redirect("/budget", f"流用第 {document.number} 號完成：{money:,} 元。")
