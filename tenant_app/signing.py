"""Signed approvals of payment vouchers (線上簽核): pure functions over plain data.

A voucher's content (agency, year, number, payee, amount, lines, e-invoices) has one canonical
SHA-256 hash. Each approval step, preparer (承辦人) → chief accountant (主辦會計) → agency head
(機關首長), is an Ed25519 signature over a small statement naming that hash, the step, the signer,
the principal when signing as a delegate (代理), the signing time and the previous step's signature.
So an edit of the voucher breaks every signature (hash mismatch), and a reordered, dropped or
replayed step breaks the chain after it.

`verify_chain` is the one place that decides whether a voucher's chain is good: the payment step
and the audit view both call it and show its error records. The database glue lives elsewhere
(signing_store); nothing here touches a session.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tenant_app.canonical import canonical_bytes, canonical_hash
from tenant_app.enums import APPROVAL_CHAIN, ApprovalStep, Role

# Delegations are granted by calendar day in the county's own time zone, so "valid on the signing
# date" means the Taipei date of the signature, not the UTC one (a signature at 07:30 Taipei is
# still the previous day in UTC).
COUNTY_TZ = ZoneInfo("Asia/Taipei")
CONTENT_VERSION = 1
STATEMENT_KIND = "countycloud.voucher-approval.v1"


CHAIN: tuple[ApprovalStep, ...] = APPROVAL_CHAIN

STEP_LABEL_ZH = {
    ApprovalStep.PREPARER: "承辦人",
    ApprovalStep.CHIEF_ACCOUNTANT: "主辦會計",
    ApprovalStep.AGENCY_HEAD: "機關首長",
}

# Who may sign each step in their own right. An accountant (會計) may also prepare a voucher.
REQUIRED_ROLES: Mapping[ApprovalStep, frozenset[Role]] = {
    ApprovalStep.PREPARER: frozenset({Role.CLERK, Role.ACCOUNTANT}),
    ApprovalStep.CHIEF_ACCOUNTANT: frozenset({Role.CHIEF_ACCOUNTANT}),
    ApprovalStep.AGENCY_HEAD: frozenset({Role.AGENCY_HEAD}),
}


# ---------------------------------------------------------------- voucher content and its hash


@dataclass(frozen=True)
class VoucherLine:
    budget_line: str  # the budget line's code (計畫/子目/用途別)
    amount: int
    description: str = ""


@dataclass(frozen=True)
class VoucherContent:
    """Everything a signature vouches for. Status, ids and timestamps are deliberately not in it."""

    agency: str
    fiscal_year: int
    number: str
    payee: str
    amount: int
    lines: tuple[VoucherLine, ...]
    invoices: tuple[str, ...] = ()
    # The bank account the treasury pays into: changing it after approval must void the approval.
    payee_account: str = ""
    period: int = 0
    description: str = ""

    def as_canonical(self) -> dict[str, object]:
        # Lines and invoices are sorted: their order on screen or from the database is not part
        # of what was approved, and must not make an unchanged voucher look edited.
        lines = sorted(self.lines, key=lambda ln: (ln.budget_line, ln.amount, ln.description))
        return {
            "v": CONTENT_VERSION,
            "agency": self.agency,
            "fiscal_year": self.fiscal_year,
            "number": self.number,
            "payee": self.payee,
            "amount": self.amount,
            "lines": [
                {"budget_line": ln.budget_line, "amount": ln.amount, "description": ln.description}
                for ln in lines
            ],
            "invoices": sorted(self.invoices),
            "payee_account": self.payee_account,
            "period": self.period,
            "description": self.description,
        }


def voucher_bytes(content: VoucherContent) -> bytes:
    return canonical_bytes(content.as_canonical())


def voucher_hash(content: VoucherContent) -> str:
    """Hex SHA-256 of the voucher's canonical content."""
    return canonical_hash(content.as_canonical())


# ---------------------------------------------------------------- error records


class ChainErrorCode(StrEnum):
    CONTENT_CHANGED = "content_changed"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    KEY_NOT_SIGNERS = "key_not_signers"
    OUT_OF_ORDER = "out_of_order"
    TOO_MANY = "too_many_signatures"
    SIGNER_IS_PREPARER = "signer_is_preparer"
    PREPARER_MISMATCH = "preparer_mismatch"
    DUPLICATE_SIGNER = "duplicate_signer"
    MISSING_ROLE = "missing_role"
    DELEGATION_INVALID = "delegation_invalid"
    INCOMPLETE = "incomplete"
    CHAIN_COMPLETE = "chain_complete"
    REASON_REQUIRED = "reason_required"
    WRONG_STATUS = "wrong_status"


@dataclass(frozen=True)
class ChainError:
    code: ChainErrorCode
    message_zh: str
    message_en: str
    step: ApprovalStep | None = None


def _error(code: ChainErrorCode, step: ApprovalStep | None, zh: str, en: str) -> ChainError:
    prefix_zh = f"{STEP_LABEL_ZH[step]}：" if step else ""
    prefix_en = f"{step.value}: " if step else ""
    return ChainError(code, prefix_zh + zh, prefix_en + en, step)


# ---------------------------------------------------------------- people, keys, delegations


@dataclass(frozen=True)
class PublicKeyInfo:
    key_id: str
    owner_id: int
    public_key: bytes  # raw 32-byte Ed25519 public key


@dataclass(frozen=True)
class Delegation:
    """代理: `delegate_id` may sign in place of `principal_id` from `starts_on` to `ends_on` inclusive."""

    principal_id: int
    delegate_id: int
    starts_on: date
    ends_on: date

    def valid_on(self, day: date) -> bool:
        return self.starts_on <= day <= self.ends_on


@dataclass(frozen=True)
class ChainContext:
    """What verification needs to know beyond the signatures themselves."""

    preparer_id: int
    roles: Mapping[int, frozenset[Role]]
    public_keys: Mapping[str, PublicKeyInfo]
    delegations: Sequence[Delegation] = ()
    names: Mapping[int, str] = field(default_factory=dict)

    def name(self, user_id: int) -> str:
        return self.names.get(user_id, f"#{user_id}")


@dataclass(frozen=True)
class Signature:
    """One approval step as stored: enough to re-check it without trusting anything else."""

    step: ApprovalStep
    signer_id: int
    key_id: str
    content_hash: str
    signed_at: datetime  # timezone-aware
    signature: bytes
    on_behalf_of: int | None = None  # the principal when the signer is a delegate (代理)


def signing_day(moment: datetime) -> date:
    return moment.astimezone(COUNTY_TZ).date()


def statement_bytes(
    *,
    content_hash: str,
    step: ApprovalStep,
    signer_id: int,
    on_behalf_of: int | None,
    signed_at: datetime,
    previous: bytes | None,
) -> bytes:
    """The exact bytes an approver signs: binds the voucher hash to this step and the one before."""
    return canonical_bytes(
        {
            "kind": STATEMENT_KIND,
            "content_hash": content_hash,
            "step": step,
            "signer": signer_id,
            "on_behalf_of": on_behalf_of,
            "signed_at": signed_at,
            "previous": previous.hex() if previous else "",
        }
    )


# ---------------------------------------------------------------- checks of one step


def next_step(signatures: Sequence[Signature]) -> ApprovalStep | None:
    """The step that comes after the given signatures, or None when the chain is complete."""
    return CHAIN[len(signatures)] if len(signatures) < len(CHAIN) else None


def _authority_errors(
    ctx: ChainContext,
    step: ApprovalStep,
    signer_id: int,
    on_behalf_of: int | None,
    day: date,
    earlier_signers: Sequence[int],
) -> list[ChainError]:
    """Whether `signer_id` may sign `step` on `day`: preparer rule, distinctness, role or delegation."""
    errors: list[ChainError] = []
    required = REQUIRED_ROLES[step]
    who = ctx.name(signer_id)
    if step is ApprovalStep.PREPARER:
        if signer_id != ctx.preparer_id:
            errors.append(
                _error(
                    ChainErrorCode.PREPARER_MISMATCH,
                    step,
                    f"第一個簽章應由承辦人 {ctx.name(ctx.preparer_id)} 簽署，實為 {who}",
                    f"the first signature must be the preparer {ctx.name(ctx.preparer_id)}'s, not {who}'s",
                )
            )
    elif ctx.preparer_id in (signer_id, on_behalf_of):
        errors.append(
            _error(
                ChainErrorCode.SIGNER_IS_PREPARER,
                step,
                f"{who} 是本憑單的承辦人，不得核章",
                f"{who} prepared this voucher and may not approve it",
            )
        )
    if signer_id in earlier_signers:
        errors.append(
            _error(
                ChainErrorCode.DUPLICATE_SIGNER,
                step,
                f"{who} 已簽過本憑單的前一關，各關簽核人必須不同",
                f"{who} already signed an earlier step; every step needs a different person",
            )
        )
    if on_behalf_of is None:
        if not ctx.roles.get(signer_id, frozenset()) & required:
            errors.append(
                _error(
                    ChainErrorCode.MISSING_ROLE,
                    step,
                    f"{who} 不具{STEP_LABEL_ZH[step]}的角色",
                    f"{who} does not hold the role this step requires ({step.value})",
                )
            )
        return errors
    principal = ctx.name(on_behalf_of)
    covering = [
        d
        for d in ctx.delegations
        if d.principal_id == on_behalf_of and d.delegate_id == signer_id and d.valid_on(day)
    ]
    if not covering:
        errors.append(
            _error(
                ChainErrorCode.DELEGATION_INVALID,
                step,
                f"{who} 於 {day.isoformat()} 並無 {principal} 的有效代理",
                f"{who} holds no delegation from {principal} valid on {day.isoformat()}",
            )
        )
    if not ctx.roles.get(on_behalf_of, frozenset()) & required:
        errors.append(
            _error(
                ChainErrorCode.MISSING_ROLE,
                step,
                f"被代理人 {principal} 不具{STEP_LABEL_ZH[step]}的角色",
                f"the principal {principal} does not hold the role this step requires ({step.value})",
            )
        )
    if on_behalf_of in earlier_signers:
        errors.append(
            _error(
                ChainErrorCode.DUPLICATE_SIGNER,
                step,
                f"被代理人 {principal} 已簽過前一關",
                f"the principal {principal} already signed an earlier step",
            )
        )
    return errors


def _signature_errors(
    sig: Signature, ctx: ChainContext, current_hash: str, previous: bytes | None
) -> list[ChainError]:
    step = sig.step
    errors: list[ChainError] = []
    if sig.content_hash != current_hash:
        errors.append(
            _error(
                ChainErrorCode.CONTENT_CHANGED,
                step,
                "憑單內容在簽章後已被修改，簽章失效",
                "the voucher was changed after this signature; the signature no longer applies",
            )
        )
    key = ctx.public_keys.get(sig.key_id)
    if key is None:
        errors.append(
            _error(
                ChainErrorCode.UNKNOWN_KEY,
                step,
                f"找不到簽章金鑰 {sig.key_id}",
                f"signing key {sig.key_id} is unknown",
            )
        )
        return errors
    if key.owner_id != sig.signer_id:
        errors.append(
            _error(
                ChainErrorCode.KEY_NOT_SIGNERS,
                step,
                f"金鑰 {sig.key_id} 不屬於簽章人 {ctx.name(sig.signer_id)}",
                f"key {sig.key_id} does not belong to the signer {ctx.name(sig.signer_id)}",
            )
        )
    message = statement_bytes(
        content_hash=sig.content_hash,
        step=step,
        signer_id=sig.signer_id,
        on_behalf_of=sig.on_behalf_of,
        signed_at=sig.signed_at,
        previous=previous,
    )
    try:
        Ed25519PublicKey.from_public_bytes(key.public_key).verify(sig.signature, message)
    except (InvalidSignature, ValueError):
        errors.append(
            _error(
                ChainErrorCode.BAD_SIGNATURE,
                step,
                "數位簽章驗證失敗（簽章或其前一關已被竄改）",
                "the digital signature does not verify (it or the step before it was tampered with)",
            )
        )
    return errors


def verify_chain(
    content: VoucherContent,
    signatures: Sequence[Signature],
    ctx: ChainContext,
    *,
    require_complete: bool = True,
) -> list[ChainError]:
    """Every problem with a voucher's approval chain; an empty list means the chain is good.

    With `require_complete` (the payment step) a chain short of the agency head's signature is an
    error; the audit view passes False to check a voucher still in approval.
    """
    errors: list[ChainError] = []
    current = voucher_hash(content)
    if len(signatures) > len(CHAIN):
        errors.append(
            _error(
                ChainErrorCode.TOO_MANY,
                None,
                f"簽章數 {len(signatures)} 超過簽核關數 {len(CHAIN)}",
                f"{len(signatures)} signatures for a {len(CHAIN)}-step chain",
            )
        )
    previous: bytes | None = None
    earlier: list[int] = []
    for position, sig in enumerate(signatures[: len(CHAIN)]):
        expected = CHAIN[position]
        if sig.step is not expected:
            errors.append(
                _error(
                    ChainErrorCode.OUT_OF_ORDER,
                    sig.step,
                    f"第 {position + 1} 關應為{STEP_LABEL_ZH[expected]}",
                    f"step {position + 1} should be {expected.value}",
                )
            )
        errors += _signature_errors(sig, ctx, current, previous)
        errors += _authority_errors(
            ctx, sig.step, sig.signer_id, sig.on_behalf_of, signing_day(sig.signed_at), earlier
        )
        earlier.append(sig.signer_id)
        if sig.on_behalf_of is not None:
            earlier.append(sig.on_behalf_of)
        previous = sig.signature
    if require_complete and len(signatures) < len(CHAIN):
        missing = "、".join(STEP_LABEL_ZH[s] for s in CHAIN[len(signatures) :])
        errors.append(
            _error(
                ChainErrorCode.INCOMPLETE,
                None,
                f"簽核未完成，尚缺：{missing}",
                "approval incomplete; missing: " + ", ".join(s.value for s in CHAIN[len(signatures) :]),
            )
        )
    return errors


# ---------------------------------------------------------------- signing and rejecting


class SigningRefusedError(Exception):
    def __init__(self, errors: Sequence[ChainError]) -> None:
        super().__init__("; ".join(e.message_en for e in errors))
        self.errors = list(errors)


def check_can_sign(
    content: VoucherContent,
    signatures: Sequence[Signature],
    ctx: ChainContext,
    *,
    signer_id: int,
    on_behalf_of: int | None,
    at: datetime,
) -> list[ChainError]:
    """Why `signer_id` may not sign the next step now (empty list: they may)."""
    errors = verify_chain(content, signatures, ctx, require_complete=False)
    if errors:
        return errors
    step = next_step(signatures)
    if step is None:
        return [
            _error(
                ChainErrorCode.CHAIN_COMPLETE,
                None,
                "本憑單已完成全部簽核",
                "every step of this voucher is already signed",
            )
        ]
    earlier = [s.signer_id for s in signatures] + [
        s.on_behalf_of for s in signatures if s.on_behalf_of is not None
    ]
    return _authority_errors(ctx, step, signer_id, on_behalf_of, signing_day(at), earlier)


def sign_next(
    content: VoucherContent,
    signatures: Sequence[Signature],
    ctx: ChainContext,
    *,
    signer_id: int,
    key_id: str,
    private_key: Ed25519PrivateKey,
    at: datetime,
    on_behalf_of: int | None = None,
) -> Signature:
    """Sign the next step after checking every rule; raises SigningRefusedError with the reasons."""
    errors = check_can_sign(
        content, signatures, ctx, signer_id=signer_id, on_behalf_of=on_behalf_of, at=at
    )
    key = ctx.public_keys.get(key_id)
    own_public = private_key.public_key().public_bytes_raw()
    if key is None or key.owner_id != signer_id or key.public_key != own_public:
        errors.append(
            _error(
                ChainErrorCode.KEY_NOT_SIGNERS,
                next_step(signatures),
                "簽章金鑰與簽章人不符",
                "the signing key is not the signer's registered key",
            )
        )
    if errors:
        raise SigningRefusedError(errors)
    step = next_step(signatures)
    assert step is not None  # check_can_sign refused a complete chain
    content_hash = voucher_hash(content)
    message = statement_bytes(
        content_hash=content_hash,
        step=step,
        signer_id=signer_id,
        on_behalf_of=on_behalf_of,
        signed_at=at,
        previous=signatures[-1].signature if signatures else None,
    )
    return Signature(
        step=step,
        signer_id=signer_id,
        key_id=key_id,
        content_hash=content_hash,
        signed_at=at,
        signature=private_key.sign(message),
        on_behalf_of=on_behalf_of,
    )


@dataclass(frozen=True)
class Rejection:
    """退回: the voucher goes back to its preparer; its signatures are void and it must be re-signed."""

    step: ApprovalStep
    rejected_by: int
    on_behalf_of: int | None
    reason: str
    at: datetime
    returned_to: int


def reject(
    content: VoucherContent,
    signatures: Sequence[Signature],
    ctx: ChainContext,
    *,
    rejected_by: int,
    reason: str,
    at: datetime,
    on_behalf_of: int | None = None,
) -> Rejection:
    """Only the person due to sign the next approval step may reject, and only with a reason."""
    errors: list[ChainError] = []
    if not reason.strip():
        errors.append(
            _error(
                ChainErrorCode.REASON_REQUIRED,
                None,
                "退回必須填寫理由",
                "a rejection needs a reason",
            )
        )
    step = next_step(signatures)
    if step is None or step is ApprovalStep.PREPARER:
        errors.append(
            _error(
                ChainErrorCode.OUT_OF_ORDER,
                step,
                "本憑單目前不在待核章狀態，無法退回",
                "this voucher is not awaiting approval, so it cannot be rejected",
            )
        )
    else:
        earlier = [s.signer_id for s in signatures]
        errors += _authority_errors(ctx, step, rejected_by, on_behalf_of, signing_day(at), earlier)
    if errors:
        raise SigningRefusedError(errors)
    assert step is not None
    return Rejection(step, rejected_by, on_behalf_of, reason.strip(), at, ctx.preparer_id)


def describe_signature(sig: Signature, ctx: ChainContext) -> str:
    """How a signature is shown on the voucher, delegation included: 「主辦會計 王小明（代理 李大華）」."""
    text = f"{STEP_LABEL_ZH[sig.step]} {ctx.name(sig.signer_id)}"
    if sig.on_behalf_of is not None:
        text += f"（代理 {ctx.name(sig.on_behalf_of)}）"
    return text
