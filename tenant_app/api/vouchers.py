"""Payment vouchers: prepare, edit, sign / reject (signing.py's rules), verify, pay."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from tenant_app import audit
from tenant_app.api import API_V1
from tenant_app.api.deps import get_reader
from tenant_app.api.schemas import RejectIn, SignIn, VoucherEditIn, VoucherIn
from tenant_app.api.views import voucher_json
from tenant_app.auth import Principal, check_agency, get_db, require_action
from tenant_app.domains import IdParam
from tenant_app.enums import AuditAction
from tenant_app.rules.vouchers import VoucherLineData
from tenant_app.security.permissions import Action
from tenant_app.services import approvals, vouchers

router = APIRouter(prefix=API_V1, tags=["vouchers"])


def _lines(body: VoucherIn | VoucherEditIn) -> list[VoucherLineData]:
    return [VoucherLineData(ln.budget_line_id, ln.amount, ln.description) for ln in body.lines]


def _scoped(db: Session, voucher_id: int, principal: Principal) -> None:
    check_agency(principal, vouchers.get_voucher(db, voucher_id).agency_id)


@router.post("/vouchers", status_code=201)
def create(body: VoucherIn, db: Session = Depends(get_db),
           principal: Principal = Depends(require_action(Action.PREPARE_VOUCHER))) -> dict[str, object]:
    check_agency(principal, body.agency_id)
    voucher = vouchers.create_voucher(
        db, agency_id=body.agency_id, payee=body.payee, amount=body.amount, period=body.period,
        lines=_lines(body), einvoices=body.einvoices, certification_id=body.certification_id,
        payee_account=body.payee_account, description=body.description, preparer_id=principal.user_id)
    audit.append(db, principal.username, AuditAction.VOUCHER_CREATE,
                 {"voucher_id": voucher.id, "number": voucher.number, "amount": voucher.amount})
    db.commit()
    return voucher_json(voucher)


@router.get("/vouchers/{voucher_id}")
def get(voucher_id: IdParam, db: Session = Depends(get_reader),
        principal: Principal = Depends(require_action(Action.VIEW))) -> dict[str, object]:
    voucher = vouchers.get_voucher(db, voucher_id)
    check_agency(principal, voucher.agency_id)
    return {**voucher_json(voucher), "chain_errors": [e.as_json() for e in approvals.verify(
        db, voucher, require_complete=False)]}


@router.put("/vouchers/{voucher_id}")
def edit(voucher_id: IdParam, body: VoucherEditIn, db: Session = Depends(get_db),
         principal: Principal = Depends(require_action(Action.PREPARE_VOUCHER))) -> dict[str, object]:
    _scoped(db, voucher_id, principal)
    voucher = vouchers.edit_voucher(db, voucher_id, payee=body.payee, amount=body.amount, period=body.period,
                                    lines=_lines(body), einvoices=body.einvoices,
                                    payee_account=body.payee_account, description=body.description)
    audit.append(db, principal.username, AuditAction.VOUCHER_EDIT,
                 {"voucher_id": voucher.id, "revision": voucher.revision, "amount": voucher.amount})
    db.commit()
    return voucher_json(voucher)


@router.post("/vouchers/{voucher_id}/sign")
def sign(voucher_id: IdParam, body: SignIn, request: Request, db: Session = Depends(get_db),
         principal: Principal = Depends(require_action(Action.SIGN))) -> dict[str, object]:
    _scoped(db, voucher_id, principal)
    voucher = approvals.sign(db, voucher_id, principal.user_id, request.app.state.tenant.settings.secret,
                             on_behalf_of=body.on_behalf_of)
    db.commit()  # signing_store wrote the audit event
    return voucher_json(voucher)


@router.post("/vouchers/{voucher_id}/reject")
def reject(voucher_id: IdParam, body: RejectIn, db: Session = Depends(get_db),
           principal: Principal = Depends(require_action(Action.SIGN))) -> dict[str, object]:
    _scoped(db, voucher_id, principal)
    voucher = approvals.reject(db, voucher_id, principal.user_id, body.reason,
                               on_behalf_of=body.on_behalf_of)
    db.commit()  # signing_store wrote the audit event
    return voucher_json(voucher)


@router.post("/vouchers/{voucher_id}/pay")
def pay(voucher_id: IdParam, db: Session = Depends(get_db),
        principal: Principal = Depends(require_action(Action.PAY))) -> dict[str, object]:
    """Paid only when approvals.verify finds the whole signature chain good at this moment."""
    voucher = vouchers.get_voucher(db, voucher_id)
    check_agency(principal, voucher.agency_id)
    voucher = vouchers.pay_voucher(db, voucher_id, approvals.verify(db, voucher), user_id=principal.user_id)
    audit.append(db, principal.username, AuditAction.VOUCHER_PAY, {"voucher_id": voucher.id,
                                                                   "amount": voucher.amount})
    db.commit()
    return voucher_json(voucher)
