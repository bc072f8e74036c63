"""Signed approval chains: hashing, the three steps, every refusal, tampering detected."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from tenant_app import signing_keys
from tenant_app.canonical import NotCanonicalError, canonical_bytes
from tenant_app.enums import ApprovalStep, Role
from tenant_app.signing import (
    ChainContext,
    ChainErrorCode,
    Delegation,
    PublicKeyInfo,
    Signature,
    SigningRefusedError,
    VoucherContent,
    VoucherLine,
    check_can_sign,
    describe_signature,
    reject,
    sign_next,
    verify_chain,
    voucher_hash,
)

SECRET = "unit-test-secret"
CLERK, CHIEF, HEAD, OTHER_CLERK, DEPUTY = 1, 2, 3, 4, 5
AT = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)  # 10:00 in Taipei


def _voucher(**changes: object) -> VoucherContent:
    base = VoucherContent(
        agency="A01",
        fiscal_year=2026,
        number="115-000123",
        payee="大同文具行",
        amount=12_500,
        lines=(VoucherLine("P1-01-業務費", 10_000, "文具"), VoucherLine("P1-02-業務費", 2_500, "郵資")),
        invoices=("AB12345678", "CD87654321"),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


class People:
    """Users, their keys and roles, as the database would hand them to the signing rules."""

    def __init__(self, delegations: tuple[Delegation, ...] = ()) -> None:
        self.private: dict[int, tuple[str, Ed25519PrivateKey]] = {}
        keys: dict[str, PublicKeyInfo] = {}
        for user in (CLERK, CHIEF, HEAD, OTHER_CLERK, DEPUTY):
            pair = signing_keys.generate(SECRET)
            private = signing_keys.unwrap_private_key(SECRET, pair.key_id, pair.wrapped_private_key)
            self.private[user] = (pair.key_id, private)
            keys[pair.key_id] = PublicKeyInfo(pair.key_id, user, pair.public_key)
        self.ctx = ChainContext(
            preparer_id=CLERK,
            roles={
                CLERK: frozenset({Role.CLERK}),
                OTHER_CLERK: frozenset({Role.CLERK}),
                CHIEF: frozenset({Role.CHIEF_ACCOUNTANT}),
                HEAD: frozenset({Role.AGENCY_HEAD}),
                DEPUTY: frozenset({Role.ACCOUNTANT}),
            },
            public_keys=keys,
            delegations=delegations,
            names={CLERK: "陳承辦", CHIEF: "林主計", HEAD: "王首長", DEPUTY: "李代理"},
        )

    def sign(
        self,
        content: VoucherContent,
        chain: list[Signature],
        user: int,
        *,
        at: datetime = AT,
        on_behalf_of: int | None = None,
    ) -> list[Signature]:
        key_id, private = self.private[user]
        sig = sign_next(
            content,
            chain,
            self.ctx,
            signer_id=user,
            key_id=key_id,
            private_key=private,
            at=at,
            on_behalf_of=on_behalf_of,
        )
        return [*chain, sig]

    def full_chain(self, content: VoucherContent) -> list[Signature]:
        chain = self.sign(content, [], CLERK)
        chain = self.sign(content, chain, CHIEF)
        return self.sign(content, chain, HEAD)


def _codes(errors: list) -> set[ChainErrorCode]:
    return {e.code for e in errors}


# ------------------------------------------------------------------ canonical content


def test_hash_ignores_line_and_invoice_order_but_not_content() -> None:
    v = _voucher()
    shuffled = _voucher(lines=tuple(reversed(v.lines)), invoices=tuple(reversed(v.invoices)))
    assert voucher_hash(v) == voucher_hash(shuffled)
    assert voucher_hash(v) != voucher_hash(_voucher(amount=12_501))
    assert voucher_hash(v) != voucher_hash(_voucher(payee="大同文具行 "))


def test_hash_treats_composed_and_decomposed_text_alike() -> None:
    composed = _voucher(payee="Café 文具")
    decomposed = _voucher(payee="Cafe\u0301 文具")
    assert voucher_hash(composed) == voucher_hash(decomposed)


def test_floats_and_naive_datetimes_have_no_canonical_form() -> None:
    with pytest.raises(NotCanonicalError):
        voucher_hash(_voucher(amount=12.5))
    with pytest.raises(NotCanonicalError):
        canonical_bytes({"at": datetime(2026, 1, 1)})
    assert canonical_bytes({"b": 1, "a": "甲"}) == '{"a":"甲","b":1}'.encode()


# ------------------------------------------------------------------ the happy path


def test_three_distinct_authorised_signatures_verify() -> None:
    people = People()
    v = _voucher()
    chain = people.full_chain(v)
    assert [s.step for s in chain] == [
        ApprovalStep.PREPARER,
        ApprovalStep.CHIEF_ACCOUNTANT,
        ApprovalStep.AGENCY_HEAD,
    ]
    assert verify_chain(v, chain, people.ctx) == []


def test_incomplete_chain_is_an_error_only_when_completeness_is_required() -> None:
    people = People()
    v = _voucher()
    chain = people.sign(v, [], CLERK)
    chain = people.sign(v, chain, CHIEF)
    errors = verify_chain(v, chain, people.ctx)
    assert _codes(errors) == {ChainErrorCode.INCOMPLETE}
    assert "機關首長" in errors[0].message_zh and "agency_head" in errors[0].message_en
    assert verify_chain(v, chain, people.ctx, require_complete=False) == []


# ------------------------------------------------------------------ tampering


def test_editing_a_signed_voucher_invalidates_every_signature() -> None:
    people = People()
    chain = people.full_chain(_voucher())
    errors = verify_chain(_voucher(amount=99_999), chain, people.ctx)
    changed = [e for e in errors if e.code is ChainErrorCode.CONTENT_CHANGED]
    assert len(changed) == 3
    assert "修改" in changed[0].message_zh


def test_a_forged_signature_byte_is_detected() -> None:
    people = People()
    v = _voucher()
    chain = people.full_chain(v)
    bad = bytearray(chain[1].signature)
    bad[0] ^= 1
    chain[1] = dataclasses.replace(chain[1], signature=bytes(bad))
    errors = verify_chain(v, chain, people.ctx)
    # The forged step fails, and so does the one after it: it signed the original bytes.
    assert [e.step for e in errors if e.code is ChainErrorCode.BAD_SIGNATURE] == [
        ApprovalStep.CHIEF_ACCOUNTANT,
        ApprovalStep.AGENCY_HEAD,
    ]


def test_dropping_the_middle_step_breaks_the_chain() -> None:
    people = People()
    v = _voucher()
    chain = people.full_chain(v)
    errors = verify_chain(v, [chain[0], chain[2]], people.ctx)
    assert ChainErrorCode.OUT_OF_ORDER in _codes(errors)
    assert ChainErrorCode.BAD_SIGNATURE in _codes(errors)


def test_a_signature_moved_to_another_voucher_does_not_verify() -> None:
    people = People()
    chain = people.full_chain(_voucher())
    errors = verify_chain(_voucher(number="115-000124"), chain, people.ctx)
    assert ChainErrorCode.CONTENT_CHANGED in _codes(errors)


def test_a_key_of_someone_else_is_refused() -> None:
    people = People()
    v = _voucher()
    chain = people.full_chain(v)
    clerk_key = chain[0].key_id
    chain[1] = dataclasses.replace(chain[1], key_id=clerk_key)
    assert ChainErrorCode.KEY_NOT_SIGNERS in _codes(verify_chain(v, chain, people.ctx))
    chain[1] = dataclasses.replace(chain[1], key_id="k_missing")
    assert ChainErrorCode.UNKNOWN_KEY in _codes(verify_chain(v, chain, people.ctx))


# ------------------------------------------------------------------ who may sign


def test_the_preparer_may_not_approve_their_own_voucher() -> None:
    people = People()
    people.ctx = dataclasses.replace(
        people.ctx, roles={**people.ctx.roles, CLERK: frozenset({Role.CLERK, Role.CHIEF_ACCOUNTANT})}
    )
    v = _voucher()
    chain = people.sign(v, [], CLERK)
    with pytest.raises(SigningRefusedError) as refused:
        people.sign(v, chain, CLERK)
    assert ChainErrorCode.SIGNER_IS_PREPARER in _codes(refused.value.errors)
    assert any("承辦人" in e.message_zh for e in refused.value.errors)


def test_only_the_preparer_signs_the_first_step() -> None:
    people = People()
    with pytest.raises(SigningRefusedError) as refused:
        people.sign(_voucher(), [], OTHER_CLERK)
    assert _codes(refused.value.errors) == {ChainErrorCode.PREPARER_MISMATCH}


def test_one_person_cannot_sign_two_steps() -> None:
    people = People()
    people.ctx = dataclasses.replace(
        people.ctx,
        roles={**people.ctx.roles, CHIEF: frozenset({Role.CHIEF_ACCOUNTANT, Role.AGENCY_HEAD})},
    )
    v = _voucher()
    chain = people.sign(v, [], CLERK)
    chain = people.sign(v, chain, CHIEF)
    with pytest.raises(SigningRefusedError) as refused:
        people.sign(v, chain, CHIEF)
    assert _codes(refused.value.errors) == {ChainErrorCode.DUPLICATE_SIGNER}


def test_a_signer_without_the_role_is_refused() -> None:
    people = People()
    v = _voucher()
    chain = people.sign(v, [], CLERK)
    with pytest.raises(SigningRefusedError) as refused:
        people.sign(v, chain, OTHER_CLERK)
    assert _codes(refused.value.errors) == {ChainErrorCode.MISSING_ROLE}


def test_a_chain_signed_outside_the_rules_fails_verification_too() -> None:
    """Verification re-checks authority: a chain written straight into the database is caught."""
    people = People()
    v = _voucher()
    chain = people.sign(v, [], CLERK)
    chain = people.sign(v, chain, CHIEF)
    chain = people.sign(v, chain, HEAD)
    # The head loses the role afterwards (or never had it): the stored chain no longer holds.
    people.ctx = dataclasses.replace(people.ctx, roles={**people.ctx.roles, HEAD: frozenset()})
    assert _codes(verify_chain(v, chain, people.ctx)) == {ChainErrorCode.MISSING_ROLE}


# ------------------------------------------------------------------ delegation (代理)


def test_a_delegate_signs_within_the_delegation_and_it_shows() -> None:
    people = People((Delegation(HEAD, DEPUTY, date(2026, 3, 1), date(2026, 3, 10)),))
    v = _voucher()
    chain = people.sign(v, [], CLERK)
    chain = people.sign(v, chain, CHIEF)
    chain = people.sign(v, chain, DEPUTY, on_behalf_of=HEAD)
    assert verify_chain(v, chain, people.ctx) == []
    assert describe_signature(chain[2], people.ctx) == "機關首長 李代理（代理 王首長）"


def test_an_expired_delegation_is_refused_by_the_taipei_date() -> None:
    people = People((Delegation(HEAD, DEPUTY, date(2026, 3, 1), date(2026, 3, 10)),))
    v = _voucher()
    chain = people.sign(v, [], CLERK)
    chain = people.sign(v, chain, CHIEF)
    # 2026-03-10 16:30 UTC is already 2026-03-11 in Taipei: one day past the delegation.
    late = datetime(2026, 3, 10, 16, 30, tzinfo=UTC)
    with pytest.raises(SigningRefusedError) as refused:
        people.sign(v, chain, DEPUTY, at=late, on_behalf_of=HEAD)
    assert _codes(refused.value.errors) == {ChainErrorCode.DELEGATION_INVALID}
    assert "2026-03-11" in refused.value.errors[0].message_zh
    # An hour earlier it is still the 10th in Taipei and the delegation holds.
    people.sign(v, chain, DEPUTY, at=late - timedelta(hours=1), on_behalf_of=HEAD)


def test_delegation_from_someone_without_the_role_gives_nothing() -> None:
    people = People((Delegation(OTHER_CLERK, DEPUTY, date(2026, 1, 1), date(2026, 12, 31)),))
    v = _voucher()
    chain = people.sign(v, [], CLERK)
    with pytest.raises(SigningRefusedError) as refused:
        people.sign(v, chain, DEPUTY, on_behalf_of=OTHER_CLERK)
    assert _codes(refused.value.errors) == {ChainErrorCode.MISSING_ROLE}


# ------------------------------------------------------------------ rejection and completion


def test_rejection_needs_a_reason_and_returns_to_the_preparer() -> None:
    people = People()
    v = _voucher()
    chain = people.sign(v, [], CLERK)
    with pytest.raises(SigningRefusedError) as refused:
        reject(v, chain, people.ctx, rejected_by=CHIEF, reason="  ", at=AT)
    assert _codes(refused.value.errors) == {ChainErrorCode.REASON_REQUIRED}
    rejection = reject(v, chain, people.ctx, rejected_by=CHIEF, reason="發票抬頭錯誤", at=AT)
    assert rejection.returned_to == CLERK
    assert rejection.step is ApprovalStep.CHIEF_ACCOUNTANT
    assert rejection.reason == "發票抬頭錯誤"


def test_only_the_next_approver_may_reject() -> None:
    people = People()
    v = _voucher()
    chain = people.sign(v, [], CLERK)
    with pytest.raises(SigningRefusedError) as refused:
        reject(v, chain, people.ctx, rejected_by=HEAD, reason="不同意", at=AT)
    assert ChainErrorCode.MISSING_ROLE in _codes(refused.value.errors)


def test_a_complete_chain_takes_no_more_signatures() -> None:
    people = People()
    v = _voucher()
    chain = people.full_chain(v)
    errors = check_can_sign(v, chain, people.ctx, signer_id=DEPUTY, on_behalf_of=None, at=AT)
    assert _codes(errors) == {ChainErrorCode.CHAIN_COMPLETE}


# ------------------------------------------------------------------ key storage


def test_wrapped_keys_need_the_right_secret_and_key_id() -> None:
    pair = signing_keys.generate(SECRET)
    private = signing_keys.unwrap_private_key(SECRET, pair.key_id, pair.wrapped_private_key)
    assert private.public_key().public_bytes_raw() == pair.public_key
    assert private.private_bytes_raw() not in pair.wrapped_private_key
    with pytest.raises(signing_keys.KeyUnwrapError):
        signing_keys.unwrap_private_key("another-secret", pair.key_id, pair.wrapped_private_key)
    with pytest.raises(signing_keys.KeyUnwrapError):
        signing_keys.unwrap_private_key(SECRET, "k_other", pair.wrapped_private_key)


def test_secret_rotation_keeps_the_public_key() -> None:
    pair = signing_keys.generate(SECRET)
    rewrapped = signing_keys.rewrap(SECRET, "rotated-secret", pair.key_id, pair.wrapped_private_key)
    private = signing_keys.unwrap_private_key("rotated-secret", pair.key_id, rewrapped)
    assert private.public_key().public_bytes_raw() == pair.public_key


# ------------------------------------------------------------------ properties

_PEOPLE = People()
_SIGNED = _voucher()
_CHAIN = _PEOPLE.full_chain(_SIGNED)


@settings(max_examples=60, deadline=None)
@given(
    field=st.sampled_from(["payee", "amount", "number", "invoices", "lines", "payee_account"]),
    salt=st.integers(min_value=1, max_value=10**9),
)
def test_any_edit_of_a_signed_voucher_is_detected(field: str, salt: int) -> None:
    changes: dict[str, object] = {
        "payee": f"{_SIGNED.payee}{salt}",
        "amount": _SIGNED.amount + salt,
        "number": f"{_SIGNED.number}-{salt}",
        "invoices": (*_SIGNED.invoices, f"ZZ{salt % 10**8:08d}"),
        "lines": (*_SIGNED.lines, VoucherLine("P9", salt)),
        "payee_account": f"000-{salt}",
    }
    edited = dataclasses.replace(_SIGNED, **{field: changes[field]})  # type: ignore[arg-type]
    errors = verify_chain(edited, _CHAIN, _PEOPLE.ctx)
    assert [e.code for e in errors].count(ChainErrorCode.CONTENT_CHANGED) == 3


@settings(max_examples=40, deadline=None)
@given(order=st.permutations(range(3)))
def test_only_the_signing_order_verifies(order: list[int]) -> None:
    chain = [_CHAIN[i] for i in order]
    errors = verify_chain(_SIGNED, chain, _PEOPLE.ctx)
    assert (errors == []) == (list(order) == [0, 1, 2])
