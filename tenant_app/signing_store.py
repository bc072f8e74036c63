"""Signing against the database: keys, loading a voucher's chain, sign / reject / verify a voucher.

The rules live in signing.py (pure); this module only turns rows into its plain inputs and writes
the outcome (signature row, voucher status, audit entry) inside the caller's transaction.
`verify_voucher` is what the payment step and the audit view call.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from tenant_app import audit, signing, signing_keys
from tenant_app.enums import APPROVAL_CHAIN, ApprovalStep, VoucherStatus
from tenant_app.models import (
    Agency,
    BudgetLine,
    Delegation,
    FiscalYear,
    PaymentVoucher,
    Signature,
    SigningKey,
    User,
    UserAgency,
)
from tenant_app.signing import (
    ChainContext,
    ChainError,
    ChainErrorCode,
    PublicKeyInfo,
    SigningRefusedError,
    VoucherContent,
    VoucherLine,
)

# Statuses in which each step may be signed: the preparer submits a draft (or a rejected voucher
# after fixing it); the approvers sign while it is in approval.
_SIGNABLE = {
    ApprovalStep.PREPARER: (VoucherStatus.DRAFT, VoucherStatus.REJECTED),
    ApprovalStep.CHIEF_ACCOUNTANT: (VoucherStatus.IN_APPROVAL,),
    ApprovalStep.AGENCY_HEAD: (VoucherStatus.IN_APPROVAL,),
}


# ---------------------------------------------------------------- keys


def _active_key(
    session: Session, *, user_id: int | None = None, agency_id: int | None = None
) -> SigningKey | None:
    query = select(SigningKey).where(SigningKey.active.is_(True)).order_by(SigningKey.created_at.desc())
    query = query.where(SigningKey.user_id == user_id) if user_id is not None else query
    query = query.where(SigningKey.agency_id == agency_id) if agency_id is not None else query
    return session.scalars(query.limit(1)).first()


def _new_key(session: Session, app_secret: str, *, user_id: int | None, agency_id: int | None) -> SigningKey:
    pair = signing_keys.generate(app_secret)
    row = SigningKey(
        key_id=pair.key_id,
        user_id=user_id,
        agency_id=agency_id,
        public_key=pair.public_key,
        wrapped_private_key=pair.wrapped_private_key,
        active=True,
    )
    session.add(row)
    session.flush()
    owner = f"user:{user_id}" if user_id is not None else f"agency:{agency_id}"
    audit.append(session, owner, audit.AuditAction.SIGNING_KEY_CREATED, {"key_id": pair.key_id})
    return row


def ensure_user_key(session: Session, user_id: int, app_secret: str) -> SigningKey:
    """The user's active signing key, created on first use."""
    return _active_key(session, user_id=user_id) or _new_key(
        session, app_secret, user_id=user_id, agency_id=None
    )


def ensure_agency_key(session: Session, agency_id: int, app_secret: str) -> SigningKey:
    """The agency's active key, which signs its treasury batch files."""
    return _active_key(session, agency_id=agency_id) or _new_key(
        session, app_secret, user_id=None, agency_id=agency_id
    )


# ---------------------------------------------------------------- loading a voucher's chain


def voucher_content(session: Session, voucher: PaymentVoucher) -> VoucherContent:
    agency_code = session.scalar(select(Agency.code).where(Agency.id == voucher.agency_id))
    year = session.scalar(select(FiscalYear.year).where(FiscalYear.id == voucher.fiscal_year_id))
    line_codes = select(
        BudgetLine.id, BudgetLine.programme_code, BudgetLine.sub_item, BudgetLine.object_code
    ).where(BudgetLine.id.in_({ln.budget_line_id for ln in voucher.lines}))
    codes = {lid: f"{prog}/{sub}/{obj}" for lid, prog, sub, obj in session.execute(line_codes)}
    return VoucherContent(
        agency=agency_code or "",
        fiscal_year=year or 0,
        number=str(voucher.number),
        payee=voucher.payee,
        amount=voucher.amount,
        lines=tuple(
            VoucherLine(codes.get(ln.budget_line_id, "?"), ln.amount, ln.description) for ln in voucher.lines
        ),
        invoices=tuple(inv.number for inv in voucher.einvoices),
        payee_account=voucher.payee_account,
        period=voucher.period,
        description=voucher.description,
    )


def stored_signatures(voucher: PaymentVoucher) -> list[signing.Signature]:
    """The voucher's signature rows as signing.Signature records, in chain order."""
    order = {step: i for i, step in enumerate(APPROVAL_CHAIN)}
    rows = sorted(voucher.signatures, key=lambda s: (order[ApprovalStep(s.step)], s.id))
    return [
        signing.Signature(
            step=ApprovalStep(s.step),
            signer_id=s.signer_id,
            key_id=s.key_id,
            content_hash=s.content_hash,
            signed_at=_aware(s.signed_at),
            signature=s.signature,
            on_behalf_of=s.on_behalf_of_id,
        )
        for s in rows
    ]


def _aware(moment: dt.datetime) -> dt.datetime:
    # SQLite returns naive timestamps; they were written in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def chain_context(session: Session, voucher: PaymentVoucher, extra_users: Iterable[int] = ()) -> ChainContext:
    """Roles (granted for this voucher's agency), keys, delegations and names of everyone involved."""
    people = {voucher.preparer_id, *extra_users}
    for s in voucher.signatures:
        people.add(s.signer_id)
        if s.on_behalf_of_id is not None:
            people.add(s.on_behalf_of_id)
    delegations = session.scalars(
        select(Delegation).where(Delegation.delegate_id.in_(people) | Delegation.principal_id.in_(people))
    ).all()
    people |= {d.principal_id for d in delegations} | {d.delegate_id for d in delegations}
    users = session.execute(
        select(User.id, User.role, User.display_name, User.active)
        .join(UserAgency, (UserAgency.user_id == User.id) & (UserAgency.agency_id == voucher.agency_id))
        .where(User.id.in_(people))
    ).all()
    # A role counts only where it is granted: a chief accountant of another agency holds no role here.
    roles = {uid: frozenset({role}) if active else frozenset() for uid, role, _, active in users}
    names = {
        uid: name
        for uid, name in session.execute(select(User.id, User.display_name).where(User.id.in_(people)))
    }
    keys = session.scalars(select(SigningKey).where(SigningKey.user_id.in_(people))).all()
    return ChainContext(
        preparer_id=voucher.preparer_id,
        roles=roles,
        public_keys={k.key_id: PublicKeyInfo(k.key_id, k.user_id or 0, k.public_key) for k in keys},
        delegations=[
            signing.Delegation(d.principal_id, d.delegate_id, d.valid_from, d.valid_to) for d in delegations
        ],
        names=names,
    )


def _voucher(session: Session, voucher_id: int, *, lock: bool = False) -> PaymentVoucher:
    query = select(PaymentVoucher).where(PaymentVoucher.id == voucher_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    voucher = session.execute(query).scalar_one_or_none()
    if voucher is None:
        raise LookupError(f"payment voucher {voucher_id} does not exist")
    return voucher


# ---------------------------------------------------------------- the three operations


def verify_voucher(session: Session, voucher_id: int, *, require_complete: bool = True) -> list[ChainError]:
    """The whole chain of one voucher checked against its current content: [] means good."""
    voucher = _voucher(session, voucher_id)
    return signing.verify_chain(
        voucher_content(session, voucher),
        stored_signatures(voucher),
        chain_context(session, voucher),
        require_complete=require_complete,
    )


def _status_error(voucher: PaymentVoucher, step: ApprovalStep | None) -> ChainError:
    return ChainError(
        ChainErrorCode.WRONG_STATUS,
        f"憑單狀態為 {voucher.status.value}，目前不能簽核",
        f"a voucher in status {voucher.status.value} cannot be signed now",
        step,
    )


def _delegation_id(session: Session, principal: int, delegate: int, day: dt.date) -> int | None:
    return session.scalar(
        select(Delegation.id).where(
            Delegation.principal_id == principal,
            Delegation.delegate_id == delegate,
            Delegation.valid_from <= day,
            Delegation.valid_to >= day,
        )
    )


def sign_voucher(
    session: Session,
    voucher_id: int,
    signer_id: int,
    app_secret: str,
    *,
    on_behalf_of: int | None = None,
    at: dt.datetime | None = None,
) -> Signature:
    """Sign the voucher's next step as `signer_id`; raises SigningRefusedError with every reason."""
    at = at or dt.datetime.now(dt.UTC)
    voucher = _voucher(session, voucher_id, lock=True)
    chain = stored_signatures(voucher)
    step = signing.next_step(chain)
    if step is None or voucher.status not in _SIGNABLE[step]:
        raise SigningRefusedError([_status_error(voucher, step)])
    ctx = chain_context(session, voucher, [signer_id] + ([on_behalf_of] if on_behalf_of else []))
    key = _active_key(session, user_id=signer_id)
    if key is None:
        key = ensure_user_key(session, signer_id, app_secret)
        ctx = chain_context(session, voucher, [signer_id] + ([on_behalf_of] if on_behalf_of else []))
    private = signing_keys.unwrap_private_key(app_secret, key.key_id, key.wrapped_private_key)
    sig = signing.sign_next(
        voucher_content(session, voucher),
        chain,
        ctx,
        signer_id=signer_id,
        key_id=key.key_id,
        private_key=private,
        at=at,
        on_behalf_of=on_behalf_of,
    )
    row = Signature(
        voucher_id=voucher.id,
        step=sig.step,
        signer_id=signer_id,
        on_behalf_of_id=on_behalf_of,
        delegation_id=(
            _delegation_id(session, on_behalf_of, signer_id, signing.signing_day(at))
            if on_behalf_of
            else None
        ),
        key_id=key.key_id,
        content_hash=sig.content_hash,
        signature=sig.signature,
        signed_at=at,
    )
    session.add(row)
    voucher.status = VoucherStatus.APPROVED if sig.step is APPROVAL_CHAIN[-1] else VoucherStatus.IN_APPROVAL
    voucher.reject_reason = None
    session.flush()
    audit.append(
        session,
        f"user:{signer_id}",
        audit.AuditAction.VOUCHER_SIGNED,
        {
            "voucher_id": voucher.id,
            "step": sig.step.value,
            "on_behalf_of": on_behalf_of,
            "content_hash": sig.content_hash,
        },
        at=at,
    )
    session.refresh(voucher)
    return row


def reject_voucher(
    session: Session,
    voucher_id: int,
    user_id: int,
    reason: str,
    *,
    on_behalf_of: int | None = None,
    at: dt.datetime | None = None,
) -> signing.Rejection:
    """退回: back to the preparer with the reason; the signatures so far are void and removed."""
    at = at or dt.datetime.now(dt.UTC)
    voucher = _voucher(session, voucher_id, lock=True)
    if voucher.status is not VoucherStatus.IN_APPROVAL:
        raise SigningRefusedError([_status_error(voucher, None)])
    ctx = chain_context(session, voucher, [user_id] + ([on_behalf_of] if on_behalf_of else []))
    rejection = signing.reject(
        voucher_content(session, voucher),
        stored_signatures(voucher),
        ctx,
        rejected_by=user_id,
        reason=reason,
        at=at,
        on_behalf_of=on_behalf_of,
    )
    for s in list(voucher.signatures):
        session.delete(s)
    voucher.status = VoucherStatus.REJECTED
    voucher.reject_reason = rejection.reason
    session.flush()
    audit.append(
        session,
        f"user:{user_id}",
        audit.AuditAction.VOUCHER_REJECTED,
        {"voucher_id": voucher.id, "step": rejection.step.value, "reason": rejection.reason},
        at=at,
    )
    session.refresh(voucher)
    return rejection


def describe_chain(session: Session, voucher_id: int) -> list[str]:
    """The signatures as shown on the voucher, delegations included (「機關首長 李代理（代理 王首長）」)."""
    voucher = _voucher(session, voucher_id)
    ctx = chain_context(session, voucher)
    return [signing.describe_signature(s, ctx) for s in stored_signatures(voucher)]
