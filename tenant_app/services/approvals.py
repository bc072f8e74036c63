"""Signed approvals for the API: engineer B's signing_store does the work (keys, chain, audit);
this adapter turns its ChainError records into the API's RuleError refusals."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from tenant_app import signing, signing_store
from tenant_app.models import PaymentVoucher
from tenant_app.rules.errors import ErrorCode, RuleError, RuleViolationError
from tenant_app.services.vouchers import get_voucher

ensure_user_key = signing_store.ensure_user_key


def chain_errors_as_rules(errors: list[signing.ChainError]) -> list[RuleError]:
    return [RuleError(ErrorCode.SIGNATURES_INVALID, e.message_zh, e.message_en,
                      {"chain_code": e.code.value, "step": e.step.value if e.step else None}) for e in errors]


def verify(session: Session, voucher: PaymentVoucher, *, require_complete: bool = True) -> list[RuleError]:
    """The whole chain checked now (signing.verify_chain); the payment step refuses on any error."""
    return chain_errors_as_rules(signing_store.verify_voucher(session, voucher.id,
                                                             require_complete=require_complete))


def sign(session: Session, voucher_id: int, signer_id: int, secret: str, *, on_behalf_of: int | None = None,
         at: dt.datetime | None = None) -> PaymentVoucher:
    try:
        signing_store.sign_voucher(session, voucher_id, signer_id, secret, on_behalf_of=on_behalf_of, at=at)
    except signing.SigningRefusedError as refused:
        raise RuleViolationError(chain_errors_as_rules(refused.errors), status=403) from refused
    return get_voucher(session, voucher_id)


def reject(session: Session, voucher_id: int, user_id: int, reason: str, *, on_behalf_of: int | None = None,
           at: dt.datetime | None = None) -> PaymentVoucher:
    """退回: back to the preparer with the reason; the signatures so far are void."""
    try:
        signing_store.reject_voucher(session, voucher_id, user_id, reason, on_behalf_of=on_behalf_of, at=at)
    except signing.SigningRefusedError as refused:
        raise RuleViolationError(chain_errors_as_rules(refused.errors), status=403) from refused
    return get_voucher(session, voucher_id)
