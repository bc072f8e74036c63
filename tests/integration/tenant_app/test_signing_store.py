"""Signing vouchers in the database (SQLite and PostgreSQL): the chain, delegation, rejection,
an edit detected, keys stored wrapped, every step audited."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select, text

from tenant_app import audit, signing_keys, signing_store
from tenant_app.db import make_engine, session_scope
from tenant_app.enums import VoucherStatus
from tenant_app.models import PaymentVoucher, SigningKey
from tenant_app.signing import ChainErrorCode, SigningRefusedError

from . import b_county
from .b_county import SECRET, SIGNED_AT


@pytest.fixture
def county(db_url: str) -> Iterator[tuple[Engine, b_county.County_]]:
    engine = make_engine(db_url)
    ids = b_county.build(engine)
    yield engine, ids
    engine.dispose()


def _voucher(engine: Engine, ids: b_county.County_) -> int:
    with session_scope(engine) as s:
        return b_county.prepare_voucher(s, ids, [(ids.lines[1], 12_000)], invoice="AB00000001")


def _codes(errors: list) -> set[ChainErrorCode]:
    return {e.code for e in errors}


def test_three_signatures_approve_and_verify(county: tuple[Engine, b_county.County_]) -> None:
    engine, ids = county
    vid = _voucher(engine, ids)
    with session_scope(engine) as s:
        signing_store.sign_voucher(s, vid, ids.users["clerk"], SECRET, at=SIGNED_AT)
        assert s.get_one(PaymentVoucher, vid).status is VoucherStatus.IN_APPROVAL
        assert _codes(signing_store.verify_voucher(s, vid)) == {ChainErrorCode.INCOMPLETE}
        signing_store.sign_voucher(s, vid, ids.users["chief"], SECRET, at=SIGNED_AT)
        signing_store.sign_voucher(s, vid, ids.users["head"], SECRET, at=SIGNED_AT)
    with session_scope(engine) as s:
        assert s.get_one(PaymentVoucher, vid).status is VoucherStatus.APPROVED
        assert signing_store.verify_voucher(s, vid) == []
        assert signing_store.describe_chain(s, vid) == ["承辦人 陳承辦", "主辦會計 林主計", "機關首長 王首長"]
        assert audit.verify(s) == []
        assert [e.action for e in s.scalars(select(audit.AuditEvent).order_by(audit.AuditEvent.seq))].count(
            audit.AuditAction.VOUCHER_SIGNED
        ) == 3


def test_an_edit_in_the_database_after_approval_is_caught(county: tuple[Engine, b_county.County_]) -> None:
    engine, ids = county
    vid = _voucher(engine, ids)
    with session_scope(engine) as s:
        b_county.approve(s, ids, vid)
    with engine.begin() as conn:  # someone changes the bank account behind the application's back
        conn.execute(text("UPDATE payment_voucher SET payee_account = '999-000' WHERE id = :v"), {"v": vid})
    with session_scope(engine) as s:
        errors = signing_store.verify_voucher(s, vid)
    changed = [e for e in errors if e.code is ChainErrorCode.CONTENT_CHANGED]
    assert len(changed) == 3
    assert all("修改" in e.message_zh and "changed" in e.message_en for e in changed)


def test_the_preparer_and_other_agencies_cannot_approve(county: tuple[Engine, b_county.County_]) -> None:
    engine, ids = county
    vid = _voucher(engine, ids)
    with session_scope(engine) as s:
        signing_store.sign_voucher(s, vid, ids.users["clerk"], SECRET, at=SIGNED_AT)
    with pytest.raises(SigningRefusedError) as own, session_scope(engine) as s:
        signing_store.sign_voucher(s, vid, ids.users["clerk"], SECRET, at=SIGNED_AT)
    assert ChainErrorCode.SIGNER_IS_PREPARER in _codes(own.value.errors)
    # A chief accountant, but of another agency: holds no role for this voucher.
    with pytest.raises(SigningRefusedError) as foreign, session_scope(engine) as s:
        signing_store.sign_voucher(s, vid, ids.users["other_chief"], SECRET, at=SIGNED_AT)
    assert _codes(foreign.value.errors) == {ChainErrorCode.MISSING_ROLE}
    with session_scope(engine) as s:  # nothing half-written by the refusals
        voucher = s.get_one(PaymentVoucher, vid)
        assert len(voucher.signatures) == 1 and voucher.status is VoucherStatus.IN_APPROVAL


def test_a_delegate_signs_for_the_head_within_the_dates_only(county: tuple[Engine, b_county.County_]) -> None:
    engine, ids = county
    vid = _voucher(engine, ids)
    with session_scope(engine) as s:
        signing_store.sign_voucher(s, vid, ids.users["clerk"], SECRET, at=SIGNED_AT)
        signing_store.sign_voucher(s, vid, ids.users["chief"], SECRET, at=SIGNED_AT)
    late = dt.datetime(2026, 3, 20, 2, 0, tzinfo=dt.UTC)
    with pytest.raises(SigningRefusedError) as expired, session_scope(engine) as s:
        signing_store.sign_voucher(
            s, vid, ids.users["deputy"], SECRET, at=late, on_behalf_of=ids.users["head"]
        )
    assert _codes(expired.value.errors) == {ChainErrorCode.DELEGATION_INVALID}
    with session_scope(engine) as s:
        row = signing_store.sign_voucher(
            s, vid, ids.users["deputy"], SECRET, at=SIGNED_AT, on_behalf_of=ids.users["head"]
        )
        assert row.delegation_id is not None
    with session_scope(engine) as s:
        assert signing_store.verify_voucher(s, vid) == []
        assert signing_store.describe_chain(s, vid)[-1] == "機關首長 李代理（代理 王首長）"


def test_rejection_returns_to_the_preparer_and_voids_signatures(
    county: tuple[Engine, b_county.County_],
) -> None:
    engine, ids = county
    vid = _voucher(engine, ids)
    with session_scope(engine) as s:
        signing_store.sign_voucher(s, vid, ids.users["clerk"], SECRET, at=SIGNED_AT)
        signing_store.sign_voucher(s, vid, ids.users["chief"], SECRET, at=SIGNED_AT)
    with pytest.raises(SigningRefusedError) as no_reason, session_scope(engine) as s:
        signing_store.reject_voucher(s, vid, ids.users["head"], "", at=SIGNED_AT)
    assert _codes(no_reason.value.errors) == {ChainErrorCode.REASON_REQUIRED}
    with session_scope(engine) as s:
        rejection = signing_store.reject_voucher(s, vid, ids.users["head"], "金額與發票不符", at=SIGNED_AT)
        assert rejection.returned_to == ids.users["clerk"]
    with session_scope(engine) as s:
        voucher = s.get_one(PaymentVoucher, vid)
        assert voucher.status is VoucherStatus.REJECTED
        assert voucher.reject_reason == "金額與發票不符"
        assert voucher.signatures == []
        # The chief cannot sign a rejected voucher before the preparer resubmits it.
        with pytest.raises(SigningRefusedError) as early:
            signing_store.sign_voucher(s, vid, ids.users["chief"], SECRET, at=SIGNED_AT)
        assert ChainErrorCode.PREPARER_MISMATCH in _codes(early.value.errors)
    with session_scope(engine) as s:
        b_county.approve(s, ids, vid)
        assert signing_store.verify_voucher(s, vid) == []


def test_private_keys_are_stored_wrapped(county: tuple[Engine, b_county.County_]) -> None:
    engine, ids = county
    vid = _voucher(engine, ids)
    with session_scope(engine) as s:
        b_county.approve(s, ids, vid)
    with session_scope(engine) as s:
        keys = s.scalars(select(SigningKey).where(SigningKey.user_id.is_not(None))).all()
        assert len(keys) == 3
        for key in keys:
            private = signing_keys.unwrap_private_key(SECRET, key.key_id, key.wrapped_private_key)
            assert private.public_key().public_bytes_raw() == key.public_key
            assert private.private_bytes_raw() not in key.wrapped_private_key
            with pytest.raises(signing_keys.KeyUnwrapError):
                signing_keys.unwrap_private_key("not-the-secret", key.key_id, key.wrapped_private_key)
