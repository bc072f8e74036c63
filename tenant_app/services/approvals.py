"""Database glue for signed approvals: loads a voucher's chain as plain data for tenant_app.signing
(engineer B's pure functions), stores signatures, rejections and status changes."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tenant_app import signing, signing_keys
from tenant_app.enums import APPROVAL_CHAIN, ApprovalStep, Role, VoucherStatus
from tenant_app.models import Agency, BudgetLine, Delegation, FiscalYear, PaymentVoucher, SigningKey, User
from tenant_app.models import Signature as SignatureRow
from tenant_app.rules.errors import ErrorCode, RuleError, RuleViolationError
from tenant_app.services.vouchers import get_voucher


def chain_errors_as_rules(errors: list[signing.ChainError]) -> list[RuleError]:
    return [RuleError(ErrorCode.SIGNATURES_INVALID, e.message_zh, e.message_en,
                      {"chain_code": e.code.value, "step": e.step.value if e.step else None}) for e in errors]


def voucher_content(session: Session, voucher: PaymentVoucher) -> signing.VoucherContent:
    agency = session.get_one(Agency, voucher.agency_id)
    year = session.get_one(FiscalYear, voucher.fiscal_year_id)
    line_ids = {line.budget_line_id for line in voucher.lines}
    codes = {row[0]: f"{row[1]}/{row[2]}/{row[3]}" for row in session.execute(
        select(BudgetLine.id, BudgetLine.programme_code, BudgetLine.sub_item, BudgetLine.object_code)
        .where(BudgetLine.id.in_(line_ids)))}
    return signing.VoucherContent(
        agency=agency.code, fiscal_year=year.year, number=str(voucher.number), payee=voucher.payee,
        amount=voucher.amount,
        lines=tuple(signing.VoucherLine(codes[ln.budget_line_id], ln.amount, ln.description)
                    for ln in voucher.lines),
        invoices=tuple(inv.number for inv in voucher.einvoices),
    )


def _aware(moment: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; they were stored in UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def stored_signatures(voucher: PaymentVoucher) -> list[signing.Signature]:
    order = {step: i for i, step in enumerate(APPROVAL_CHAIN)}
    rows = sorted(voucher.signatures, key=lambda s: order[ApprovalStep(s.step)])
    return [signing.Signature(ApprovalStep(s.step), s.signer_id, s.key_id, s.content_hash,
                              _aware(s.signed_at), s.signature, s.on_behalf_of_id) for s in rows]


def chain_context(
    session: Session, voucher: PaymentVoucher, extra_users: frozenset[int] | set[int] = frozenset()
) -> signing.ChainContext:
    people = {voucher.preparer_id, *extra_users}
    for sig in voucher.signatures:
        people.add(sig.signer_id)
        if sig.on_behalf_of_id is not None:
            people.add(sig.on_behalf_of_id)
    delegations = session.scalars(select(Delegation).where(
        Delegation.delegate_id.in_(people) | Delegation.principal_id.in_(people))).all()
    for d in delegations:
        people.update({d.principal_id, d.delegate_id})
    users = session.scalars(select(User).where(User.id.in_(people))).all()
    keys = session.scalars(select(SigningKey).where(SigningKey.user_id.in_(people))).all()
    return signing.ChainContext(
        preparer_id=voucher.preparer_id,
        roles={u.id: frozenset({Role(u.role)}) if u.active else frozenset() for u in users},
        public_keys={k.key_id: signing.PublicKeyInfo(k.key_id, k.user_id or 0, k.public_key) for k in keys},
        delegations=[signing.Delegation(d.principal_id, d.delegate_id, d.valid_from, d.valid_to)
                     for d in delegations],
        names={u.id: u.display_name for u in users},
    )


def verify(session: Session, voucher: PaymentVoucher, *, require_complete: bool = True) -> list[RuleError]:
    """The whole chain checked by signing.verify_chain; used by payment and the audit view."""
    content = voucher_content(session, voucher)
    errors = signing.verify_chain(content, stored_signatures(voucher), chain_context(session, voucher),
                                  require_complete=require_complete)
    return chain_errors_as_rules(errors)


def ensure_user_key(session: Session, user_id: int, secret: str) -> SigningKey:
    key = session.scalars(select(SigningKey).where(SigningKey.user_id == user_id, SigningKey.active.is_(True))
                          .order_by(SigningKey.created_at.desc())).first()
    if key is None:
        pair = signing_keys.generate(secret)
        key = SigningKey(key_id=pair.key_id, user_id=user_id, public_key=pair.public_key,
                         wrapped_private_key=pair.wrapped_private_key)
        session.add(key)
        session.flush()
    return key


def sign(session: Session, voucher_id: int, signer_id: int, secret: str, *, on_behalf_of: int | None = None,
         at: dt.datetime | None = None) -> PaymentVoucher:
    voucher = get_voucher(session, voucher_id, lock=True)
    if voucher.status not in (VoucherStatus.DRAFT, VoucherStatus.REJECTED, VoucherStatus.IN_APPROVAL):
        raise RuleViolationError([RuleError(ErrorCode.VOUCHER_NOT_EDITABLE, "憑單目前不可簽核",
                                            f"a voucher in status {voucher.status.value} cannot be signed",
                                            {"status": voucher.status.value})], status=409)
    key = ensure_user_key(session, signer_id, secret)
    moment = at or dt.datetime.now(dt.UTC)
    try:
        signature = signing.sign_next(
            voucher_content(session, voucher), stored_signatures(voucher),
            chain_context(session, voucher, {signer_id} | ({on_behalf_of} if on_behalf_of else set())),
            signer_id=signer_id, key_id=key.key_id,
            private_key=signing_keys.unwrap_private_key(secret, key.key_id, key.wrapped_private_key),
            at=moment, on_behalf_of=on_behalf_of)
    except signing.SigningRefusedError as refused:
        raise RuleViolationError(chain_errors_as_rules(refused.errors), status=403) from refused
    delegation_id = None
    if on_behalf_of is not None:
        delegation_id = session.scalars(select(Delegation.id).where(
            Delegation.principal_id == on_behalf_of, Delegation.delegate_id == signer_id,
            Delegation.valid_from <= signing.signing_day(moment),
            Delegation.valid_to >= signing.signing_day(moment))).first()
    session.add(SignatureRow(voucher_id=voucher.id, step=signature.step, signer_id=signer_id,
                             on_behalf_of_id=on_behalf_of, delegation_id=delegation_id, key_id=key.key_id,
                             content_hash=signature.content_hash, signature=signature.signature,
                             signed_at=moment))
    voucher.status = (VoucherStatus.APPROVED if signature.step is APPROVAL_CHAIN[-1]
                      else VoucherStatus.IN_APPROVAL)
    voucher.reject_reason = None
    session.flush()
    session.refresh(voucher)
    return voucher


def reject(session: Session, voucher_id: int, user_id: int, reason: str, *, on_behalf_of: int | None = None,
           at: dt.datetime | None = None) -> PaymentVoucher:
    """退回: back to the preparer with the reason; the signatures so far are void."""
    voucher = get_voucher(session, voucher_id, lock=True)
    try:
        signing.reject(voucher_content(session, voucher), stored_signatures(voucher),
                       chain_context(session, voucher, {user_id}), rejected_by=user_id, reason=reason,
                       at=at or dt.datetime.now(dt.UTC), on_behalf_of=on_behalf_of)
    except signing.SigningRefusedError as refused:
        raise RuleViolationError(chain_errors_as_rules(refused.errors), status=403) from refused
    session.execute(delete(SignatureRow).where(SignatureRow.voucher_id == voucher.id))
    voucher.status = VoucherStatus.REJECTED
    voucher.reject_reason = reason.strip()
    session.flush()
    session.refresh(voucher)
    return voucher
