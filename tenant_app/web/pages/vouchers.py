"""付款憑單: prepare a voucher (lines, e-invoices) against a certification, then 線上簽核.

Every rule (lines add up, certification remaining, e-invoice format and uniqueness, who may sign
which step, delegation dates, preparer never signs again) is decided by A's services and B's
signing; a refusal comes back as RuleViolationError and is shown with its reasons.
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, Form, Query, Response, status
from sqlalchemy import select

from tenant_app import audit, signing, signing_store
from tenant_app.domains import IdParam
from tenant_app.enums import AuditAction, CertificationStatus, VoucherStatus
from tenant_app.models import Certification, Delegation, PaymentVoucher
from tenant_app.rules.errors import RuleViolationError
from tenant_app.rules.vouchers import EDITABLE_STATUSES
from tenant_app.security.permissions import Action
from tenant_app.services import approvals, vouchers
from tenant_app.web import queries, voucher_form
from tenant_app.web.context import Page, WebRefusal, WebRoute, form_page, user_page
from tenant_app.web.forms import FormError, parse_choice, parse_optional_int
from tenant_app.web.labels import VOUCHER_STATUS_ZH

router = APIRouter(route_class=WebRoute, include_in_schema=False)


def _voucher_of_agency(current: Page, voucher_id: int) -> PaymentVoucher:
    voucher = current.db.get(PaymentVoucher, voucher_id)
    if voucher is None:
        raise WebRefusal("查無此付款憑單。", status.HTTP_404_NOT_FOUND)
    current.check_agency(voucher.agency_id)
    return voucher


@router.get("/vouchers")
def voucher_list(status_raw: str = Query("", alias="status"), current: Page = Depends(user_page)) -> Response:
    current.require(Action.VIEW)
    try:  # the filter form sends '' for 全部
        status_filter = parse_choice(status_raw, VoucherStatus, "狀態")
    except FormError as error:
        raise WebRefusal(error.message, status.HTTP_422_UNPROCESSABLE_CONTENT) from error
    agency = current.require_agency()
    year = current.require_fiscal_year()
    query = select(PaymentVoucher).where(PaymentVoucher.agency_id == agency.id,
                                         PaymentVoucher.fiscal_year_id == year.id)
    if status_filter is not None:
        query = query.where(PaymentVoucher.status == status_filter)
    rows = current.db.scalars(query.order_by(PaymentVoucher.number.desc()).limit(200)).all()
    return current.render(
        "voucher_list.html", vouchers=rows, status_zh=VOUCHER_STATUS_ZH, status_filter=status_filter,
        names=queries.user_names(current.db, {v.preparer_id for v in rows}),
        can_prepare=current.user.may(Action.PREPARE_VOUCHER),
    )


def _open_certifications(current: Page) -> list[Certification]:
    agency = current.require_agency()
    year = current.require_fiscal_year()
    return list(current.db.scalars(
        select(Certification)
        .where(Certification.agency_id == agency.id, Certification.fiscal_year_id == year.id,
               Certification.status == CertificationStatus.ACTIVE)
        .order_by(Certification.number.desc())
    ))


def _render_form(current: Page, form: dict[str, object], status_code: int = 200, error: str | None = None,
                 errors: list[object] | None = None, voucher: PaymentVoucher | None = None) -> Response:
    agency = current.require_agency()
    year = current.require_fiscal_year()
    lines = queries.budget_lines(current.db, agency.id, year.id)
    return current.render(
        "voucher_new.html", status_code=status_code, form=form, form_error=error, errors=errors or [],
        certifications=_open_certifications(current), lines=lines, editing=voucher,
        line_labels={v.line.id: v.label for v in lines},
    )


@router.get("/vouchers/new")
def voucher_new(certification_id: IdParam | None = None, current: Page = Depends(user_page)) -> Response:
    current.require(Action.PREPARE_VOUCHER)
    chosen = next((c for c in _open_certifications(current) if c.id == certification_id), None)
    return _render_form(current, voucher_form.blank(chosen))


@router.post("/vouchers")
async def voucher_create(current: Page = Depends(form_page)) -> Response:
    user = current.require(Action.PREPARE_VOUCHER)
    agency = current.require_agency()
    values, typed, error = await voucher_form.read(current.request)
    if typed is None:
        return _render_form(current, values, status.HTTP_422_UNPROCESSABLE_CONTENT, error=error)
    try:
        voucher = vouchers.create_voucher(
            current.db, agency_id=agency.id, payee=typed.payee, amount=typed.amount, period=typed.period,
            lines=typed.lines, einvoices=typed.einvoices, certification_id=typed.certification_id,
            payee_account=typed.payee_account, description=typed.description, preparer_id=user.user_id,
        )
    except RuleViolationError as refused:
        current.db.rollback()
        return _render_form(current, values, refused.status, error="付款憑單未建立：",
                            errors=list(refused.errors))
    audit.append(current.db, user.username, AuditAction.VOUCHER_CREATE,
                 {"voucher_id": voucher.id, "number": voucher.number, "amount": voucher.amount})
    current.db.commit()
    return current.redirect(f"/vouchers/{voucher.id}", f"付款憑單第 {voucher.number} 號已建立，請送出簽核。")


def _editable_by(current: Page, voucher_id: int) -> PaymentVoucher:
    """The voucher, if the user is its preparer: a rejection returns it to them, and only to them."""
    current.require(Action.PREPARE_VOUCHER)
    voucher = _voucher_of_agency(current, voucher_id)
    if voucher.preparer_id != current.user.user_id:
        raise WebRefusal("只有承辦人本人可以修改此付款憑單。")
    return voucher


@router.get("/vouchers/{voucher_id}/edit")
def voucher_edit_form(voucher_id: IdParam, current: Page = Depends(user_page)) -> Response:
    voucher = _editable_by(current, voucher_id)
    return _render_form(current, voucher_form.from_voucher(voucher), voucher=voucher)


@router.post("/vouchers/{voucher_id}/edit")
async def voucher_edit(voucher_id: IdParam, current: Page = Depends(form_page)) -> Response:
    """Change the content: A's edit_voucher voids every signature and approval starts again."""
    voucher = _editable_by(current, voucher_id)
    values, typed, error = await voucher_form.read(current.request)
    if typed is None:
        return _render_form(current, values, status.HTTP_422_UNPROCESSABLE_CONTENT, error=error,
                            voucher=voucher)
    try:
        edited = vouchers.edit_voucher(
            current.db, voucher.id, payee=typed.payee, amount=typed.amount, period=typed.period,
            lines=typed.lines, einvoices=typed.einvoices, payee_account=typed.payee_account,
            description=typed.description)
    except RuleViolationError as refused:
        current.db.rollback()
        return _render_form(current, values, refused.status, error="付款憑單未修改：",
                            errors=list(refused.errors), voucher=_voucher_of_agency(current, voucher_id))
    audit.append(current.db, current.user.username, AuditAction.VOUCHER_EDIT,
                 {"voucher_id": edited.id, "revision": edited.revision, "amount": edited.amount})
    current.db.commit()
    return current.redirect(
        f"/vouchers/{voucher_id}",
        f"付款憑單第 {edited.number} 號已修改（第 {edited.revision} 版），原有簽核作廢，請重新送出簽核。")


def _delegations_for(current: Page, on: dt.date) -> list[tuple[Delegation, str]]:
    """Delegations the user may sign under today: (delegation, principal's name)."""
    rows = current.db.scalars(select(Delegation).where(
        Delegation.delegate_id == current.user.user_id, Delegation.valid_from <= on, Delegation.valid_to >= on
    )).all()
    names = queries.user_names(current.db, {d.principal_id for d in rows})
    return [(d, names.get(d.principal_id, "")) for d in rows]


def _sign_options(current: Page, voucher: PaymentVoucher, stored: list[signing.Signature],
                  on: dt.date) -> tuple[list[tuple[str, str]], str | None]:
    """Who the user may sign the next step as (value, label): themselves and/or the principals of
    their delegations valid today, as B's check_can_sign decides; else why not."""
    delegations = _delegations_for(current, on)
    me = current.user.user_id
    ctx = signing_store.chain_context(current.db, voucher, [me, *(d.principal_id for d, _ in delegations)])
    content = signing_store.voucher_content(current.db, voucher)
    now = dt.datetime.now(dt.UTC)
    own = signing.check_can_sign(content, stored, ctx, signer_id=me, on_behalf_of=None, at=now)
    options = [("", "本人")] if not own else []
    for delegation, name in delegations:
        principal = delegation.principal_id
        if not signing.check_can_sign(content, stored, ctx, signer_id=me, on_behalf_of=principal, at=now):
            options.append((str(principal), f"代理 {name}"))
    return options, (own[0].message_zh if own and not options else None)


@router.get("/vouchers/{voucher_id}")
def voucher_detail(voucher_id: IdParam, current: Page = Depends(user_page)) -> Response:
    current.require(Action.VIEW)
    voucher = _voucher_of_agency(current, voucher_id)
    ctx = signing_store.chain_context(current.db, voucher)
    stored = signing_store.stored_signatures(voucher)
    chain_errors = approvals.verify(current.db, voucher, require_complete=False)
    lines = queries.budget_lines(current.db, voucher.agency_id, voucher.fiscal_year_id)
    signable = voucher.status in (VoucherStatus.DRAFT, VoucherStatus.REJECTED, VoucherStatus.IN_APPROVAL)
    next_step = signing.next_step(stored) if signable else None
    options: list[tuple[str, str]] = []
    why_not = None
    if next_step is not None and current.user.may(Action.SIGN):
        today = signing.signing_day(dt.datetime.now(dt.UTC))
        options, why_not = _sign_options(current, voucher, stored, today)
    return current.render(
        "voucher_detail.html", voucher=voucher, status_zh=VOUCHER_STATUS_ZH,
        line_labels={v.line.id: v.label for v in lines},
        signatures=[(sig, signing.describe_signature(sig, ctx)) for sig in stored],
        chain_errors=chain_errors, preparer=ctx.name(voucher.preparer_id),
        next_step_label=signing.STEP_LABEL_ZH[next_step] if next_step else None,
        sign_options=options, why_not=why_not,
        can_pay=voucher.status is VoucherStatus.APPROVED and current.user.may(Action.PAY),
        can_edit=voucher.status in EDITABLE_STATUSES and voucher.preparer_id == current.user.user_id,
    )


def _on_behalf(raw: str) -> int | None:
    try:
        return parse_optional_int(raw, "代理對象")
    except FormError as error:
        raise WebRefusal(error.message, status.HTTP_422_UNPROCESSABLE_CONTENT) from error


@router.post("/vouchers/{voucher_id}/sign")
def voucher_sign(
    voucher_id: IdParam, on_behalf_of: str = Form(""), current: Page = Depends(form_page)
) -> Response:
    user = current.require(Action.SIGN)
    voucher = _voucher_of_agency(current, voucher_id)
    principal_id = _on_behalf(on_behalf_of)
    signed = approvals.sign(current.db, voucher.id, user.user_id, current.settings.secret,
                            on_behalf_of=principal_id)
    current.db.commit()  # the signing store wrote the audit entry in this transaction
    done = "，已核准，可撥付" if signed.status is VoucherStatus.APPROVED else ""
    return current.redirect(f"/vouchers/{voucher_id}", f"已簽核付款憑單第 {signed.number} 號{done}。")


@router.post("/vouchers/{voucher_id}/reject")
def voucher_reject(voucher_id: IdParam, reason: str = Form(""), on_behalf_of: str = Form(""),
                   current: Page = Depends(form_page)) -> Response:
    user = current.require(Action.SIGN)
    voucher = _voucher_of_agency(current, voucher_id)
    if not reason.strip():
        raise WebRefusal("退回必須填寫理由。", status.HTTP_422_UNPROCESSABLE_CONTENT)
    principal_id = _on_behalf(on_behalf_of)
    rejected = approvals.reject(current.db, voucher.id, user.user_id, reason.strip(),
                                on_behalf_of=principal_id)
    current.db.commit()  # the signing store wrote the audit entry in this transaction
    return current.redirect(f"/vouchers/{voucher_id}", f"付款憑單第 {rejected.number} 號已退回承辦人。")
