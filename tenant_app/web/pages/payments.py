"""公庫撥付: approved vouchers waiting for payment, paying one, or batching them to the treasury.

Payment goes through A's `pay_voucher`, which refuses unless the voucher is approved and the chain
verified just now (by `approvals.verify`) is intact: an edit after signing shows up here. The
treasury route is B's `export_batch`: approved vouchers go out in one signed batch file (handed to
the treasury) and become 已送公庫 until the treasury's confirmation is imported.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response, status
from sqlalchemy import select

from tenant_app import audit, treasury
from tenant_app.domains import IdParam
from tenant_app.enums import AuditAction, VoucherStatus
from tenant_app.models import PaymentVoucher, TreasuryBatch
from tenant_app.security.permissions import Action
from tenant_app.services import approvals, vouchers
from tenant_app.web.context import Page, WebRefusal, WebRoute, form_page, user_page
from tenant_app.web.labels import VOUCHER_STATUS_ZH

router = APIRouter(route_class=WebRoute, include_in_schema=False)


@router.get("/payments")
def payments(current: Page = Depends(user_page)) -> Response:
    return _render(current)


def _render(current: Page, status_code: int = 200, errors: list[treasury.TreasuryError] | None = None
            ) -> Response:
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
    batches = current.db.scalars(
        select(TreasuryBatch)
        .where(TreasuryBatch.agency_id == agency.id, TreasuryBatch.fiscal_year_id == year.id)
        .order_by(TreasuryBatch.number.desc()).limit(20)
    ).all()
    return current.render("payments.html", status_code=status_code, waiting=waiting, paid=paid,
                          batches=batches, status_zh=VOUCHER_STATUS_ZH, batch_errors=errors or [])


@router.post("/payments/batch")
def export_batch(current: Page = Depends(form_page)) -> Response:
    """All of the agency's approved, unbatched vouchers into one signed file, downloaded at once."""
    user = current.require(Action.PAY)
    agency = current.require_agency()
    year = current.require_fiscal_year()
    try:
        batch = treasury.export_batch(current.db, agency_id=agency.id, fiscal_year_id=year.id,
                                      app_secret=current.settings.secret, user_id=user.user_id)
    except treasury.TreasuryFileError as refused:
        current.db.rollback()
        return _render(current, status.HTTP_409_CONFLICT, refused.errors)
    current.db.commit()  # export_batch wrote the batch, the statuses and its audit entry
    # The file is the response itself: it is signed once and not stored, so nothing can alter it.
    return Response(batch.data, media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="{batch.filename}"', "Cache-Control": "no-store"})


@router.post("/vouchers/{voucher_id}/pay")
def pay(voucher_id: IdParam, current: Page = Depends(form_page)) -> Response:
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
