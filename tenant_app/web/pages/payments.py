"""公庫撥付: approved vouchers waiting for payment, and paying one.

Payment goes through A's `pay_voucher`, which refuses unless the voucher is approved and the chain
verified just now (by `approvals.verify`) is intact: an edit after signing shows up here.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from sqlalchemy import select

from tenant_app import audit
from tenant_app.enums import AuditAction, VoucherStatus
from tenant_app.models import PaymentVoucher
from tenant_app.security.permissions import Action
from tenant_app.services import approvals, vouchers
from tenant_app.web.context import Page, WebRefusal, WebRoute, form_page, user_page
from tenant_app.web.labels import VOUCHER_STATUS_ZH

router = APIRouter(route_class=WebRoute, include_in_schema=False)


@router.get("/payments")
def payments(current: Page = Depends(user_page)) -> Response:
    current.require(Action.PAY)
    agency = current.require_agency()
    year = current.require_fiscal_year()
    waiting = current.db.scalars(
        select(PaymentVoucher)
        .where(PaymentVoucher.agency_id == agency.id, PaymentVoucher.fiscal_year_id == year.id,
               PaymentVoucher.status.in_([VoucherStatus.APPROVED, VoucherStatus.BATCHED]))
        .order_by(PaymentVoucher.number)
    ).all()
    paid = current.db.scalars(
        select(PaymentVoucher)
        .where(PaymentVoucher.agency_id == agency.id, PaymentVoucher.fiscal_year_id == year.id,
               PaymentVoucher.status == VoucherStatus.PAID)
        .order_by(PaymentVoucher.paid_at.desc()).limit(50)
    ).all()
    return current.render("payments.html", waiting=waiting, paid=paid, status_zh=VOUCHER_STATUS_ZH)


@router.post("/vouchers/{voucher_id}/pay")
def pay(voucher_id: int, current: Page = Depends(form_page)) -> Response:
    user = current.require(Action.PAY)
    voucher = vouchers.get_voucher(current.db, voucher_id, lock=True)
    if not user.sees_agency(voucher.agency_id):
        raise WebRefusal("您沒有此機關的權限。")
    chain = approvals.verify(current.db, voucher)
    paid = vouchers.pay_voucher(current.db, voucher.id, chain, user_id=user.user_id)
    audit.append(current.db, user.username, AuditAction.VOUCHER_PAY,
                 {"voucher_id": paid.id, "number": paid.number, "amount": paid.amount})
    current.db.commit()
    return current.redirect(f"/vouchers/{voucher_id}",
                            f"付款憑單第 {paid.number} 號已撥付 {paid.amount:,} 元。")
