"""簽證: ask the accounting office to certify an amount against a budget line; see past certifications.

A refusal (balance too small, period closed, ...) re-renders the form with the services' own
message and figures: the balance the service saw and the amount asked.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Response, status
from sqlalchemy import select

from tenant_app import audit
from tenant_app.domains import PERIOD, IdParam
from tenant_app.enums import AuditAction
from tenant_app.models import BudgetLine, Certification
from tenant_app.security.permissions import Action
from tenant_app.security.sessions import FlashKind
from tenant_app.services.vouchers import release_certification
from tenant_app.web import certify_gateway, queries
from tenant_app.web.context import Page, WebRefusal, WebRoute, form_page, user_page
from tenant_app.web.forms import FormError, parse_money, parse_optional_int

router = APIRouter(route_class=WebRoute, include_in_schema=False)


def _render(current: Page, status_code: int = 200, **extra: object) -> Response:
    agency = current.require_agency()
    year = current.require_fiscal_year()
    certifications = current.db.scalars(
        select(Certification)
        .where(Certification.agency_id == agency.id, Certification.fiscal_year_id == year.id)
        .order_by(Certification.number.desc()).limit(200)
    ).all()
    lines = queries.budget_lines(current.db, agency.id, year.id)
    context: dict[str, object] = {
        "lines": lines,
        "line_labels": {v.line.id: v.label for v in lines},
        "certifications": certifications,
        "names": queries.user_names(current.db, {c.created_by_id for c in certifications}),
        "can_certify": current.user.may(Action.CERTIFY),
        "can_prepare": current.user.may(Action.PREPARE_VOUCHER),
        "form": {"budget_line_id": "", "amount": "", "purpose": "", "period": ""},
        "form_error": None,
        "refusal": None,
    }
    context.update(extra)
    return current.render("certifications.html", status_code=status_code, **context)


@router.get("/certifications")
def certifications(current: Page = Depends(user_page)) -> Response:
    current.require(Action.VIEW)
    return _render(current)


@router.post("/certifications")
async def certify(
    budget_line_id: Annotated[IdParam, Form()],
    amount: str = Form(""),
    purpose: str = Form(""),
    period: str = Form(""),
    current: Page = Depends(form_page),
) -> Response:
    user = current.require(Action.CERTIFY)
    agency = current.require_agency()
    form = {"budget_line_id": str(budget_line_id), "amount": amount, "purpose": purpose, "period": period}
    try:
        money = parse_money(amount, "簽證金額")
        chosen_period = parse_optional_int(period, "期別", PERIOD)
    except FormError as error:
        return _render(current, status.HTTP_422_UNPROCESSABLE_CONTENT, form=form, form_error=error.message)
    line = current.db.get(BudgetLine, budget_line_id)
    if line is None or line.agency_id != agency.id:
        return _render(current, status.HTTP_422_UNPROCESSABLE_CONTENT, form=form,
                       form_error="請選擇本機關的預算科目。")
    current.db.rollback()  # end the page's read transaction before the writer takes the line's lock
    outcome = await certify_gateway.certify(current.request, certify_gateway.CertifyRequest(
        budget_line_id=budget_line_id, amount=money, user_id=user.user_id,
        allowed_agencies=user.agency_ids, period=chosen_period, purpose=purpose.strip()[:255]))
    if not outcome.accepted:
        return _render(current, status.HTTP_422_UNPROCESSABLE_CONTENT, form=form, refusal=outcome)
    return current.redirect(
        "/certifications",
        f"簽證完成：第 {outcome.number} 號，金額 {outcome.amount:,} 元，"
        f"簽證後可用餘額 {outcome.available_after or 0:,} 元。",
        FlashKind.OK,
    )


@router.post("/certifications/{certification_id}/release")
def release(certification_id: IdParam, current: Page = Depends(form_page)) -> Response:
    """解除保留: give what is left of the encumbrance back to the line (A's release_certification)."""
    user = current.require(Action.CERTIFY)
    cert = current.db.get(Certification, certification_id)
    if cert is None:
        raise WebRefusal("查無此簽證。", status.HTTP_404_NOT_FOUND)
    current.check_agency(cert.agency_id)
    before = cert.released_amount
    released = release_certification(current.db, certification_id, user_id=user.user_id)
    audit.append(current.db, user.username, AuditAction.RELEASE,
                 {"certification_id": released.id, "released_amount": released.released_amount})
    current.db.commit()
    amount = released.released_amount - before
    return current.redirect("/certifications",
                            f"簽證第 {released.number} 號已解除保留 {amount:,} 元，金額已回到可用餘額。")
