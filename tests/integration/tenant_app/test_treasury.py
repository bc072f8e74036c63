"""Treasury files on SQLite and PostgreSQL: the signed batch out, the confirmation in, and every
bad confirmation refused with nothing written."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, select, text

from tenant_app import audit, treasury
from tenant_app.canonical import canonical_bytes
from tenant_app.db import make_engine, session_scope
from tenant_app.enums import TreasuryBatchStatus, VoucherStatus
from tenant_app.models import (
    BudgetLine,
    Certification,
    PaymentVoucher,
    PeriodClose,
    SigningKey,
    TreasuryBatch,
)
from tenant_app.reports import execution
from tenant_app.treasury import TreasuryErrorCode as Code

from . import b_county
from .b_county import SECRET

TREASURY_KEY = Ed25519PrivateKey.generate()
TREASURY_KEYS = {"treasury-2026": TREASURY_KEY.public_key().public_bytes_raw()}
PAID_ON = dt.date(2026, 3, 25)


@dataclass
class Setup:
    engine: Engine
    ids: b_county.County_
    vouchers: dict[str, int]
    cert: int


@pytest.fixture
def setup(db_url: str) -> Iterator[Setup]:
    engine = make_engine(db_url)
    ids = b_county.build(engine)
    cert = b_county.certify(engine, ids.lines[2], 500_000, 2)
    made = {}
    with session_scope(engine) as s:
        made["certified"] = b_county.prepare_voucher(
            s, ids, [(ids.lines[2], 400_000)], period=2, certification_id=cert
        )
        made["direct"] = b_county.prepare_voucher(
            s, ids, [(ids.lines[1], 30_000)], period=3, invoice="AB11112222"
        )
        made["draft"] = b_county.prepare_voucher(s, ids, [(ids.lines[1], 1_000)], period=3)
        b_county.approve(s, ids, made["certified"])
        b_county.approve(s, ids, made["direct"])
    yield Setup(engine, ids, made, cert)
    engine.dispose()


def _export(st: Setup) -> treasury.ExportedBatch:
    with session_scope(st.engine) as s:
        return treasury.export_batch(
            s,
            agency_id=st.ids.agency_id,
            fiscal_year_id=st.ids.year_id,
            app_secret=SECRET,
            user_id=st.ids.users["chief"],
        )


def _confirm(batch: bytes, **changes: object) -> bytes:
    document = treasury.build_confirmation(batch, paid_on=PAID_ON)
    document.update(changes)
    return treasury.sign_document(document, "treasury-2026", TREASURY_KEY)


def _import(st: Setup, data: bytes) -> treasury.ImportedConfirmation:
    with session_scope(st.engine) as s:
        return treasury.import_confirmation(
            s, data, treasury_keys=TREASURY_KEYS, user_id=st.ids.users["chief"]
        )


def _statuses(st: Setup) -> dict[str, VoucherStatus]:
    with session_scope(st.engine) as s:
        return {k: s.get_one(PaymentVoucher, v).status for k, v in st.vouchers.items()}


def _codes(refused: pytest.ExceptionInfo[treasury.TreasuryFileError]) -> set[Code]:
    return {e.code for e in refused.value.errors}


def test_the_batch_file_is_signed_by_the_agency_and_lists_the_approved(setup: Setup) -> None:
    batch = _export(setup)
    document = json.loads(batch.data)
    with session_scope(setup.engine) as s:
        key = s.scalars(select(SigningKey).where(SigningKey.agency_id == setup.ids.agency_id)).one()
        agency_keys = {key.key_id: key.public_key}
        row = s.get_one(TreasuryBatch, batch.batch_id)
        assert (row.status, row.total, row.file_hash) == (TreasuryBatchStatus.SENT, 430_000, batch.file_hash)
    assert treasury.verify_document(document, agency_keys) == []
    assert document["count"] == 2 and document["total"] == 430_000
    assert [p["payee_account"] for p in document["payments"]] == ["004-123456789012"] * 2
    assert batch.data == canonical_bytes(document) + b"\n"  # canonical, so its hash is reproducible
    tampered = {**document, "total": 1}
    assert {e.code for e in treasury.verify_document(tampered, agency_keys)} == {Code.BAD_SIGNATURE}
    assert _statuses(setup) == {
        "certified": VoucherStatus.BATCHED,
        "direct": VoucherStatus.BATCHED,
        "draft": VoucherStatus.DRAFT,
    }
    with pytest.raises(treasury.TreasuryFileError) as again:
        _export(setup)
    assert _codes(again) == {Code.NOTHING_TO_BATCH}


def test_confirmation_pays_releases_the_encumbrance_and_counts_in_reports(setup: Setup) -> None:
    batch = _export(setup)
    result = _import(setup, _confirm(batch.data))
    assert (result.paid, result.returned, result.total_paid) == ([1, 2], [], 430_000)
    assert _statuses(setup)["certified"] is VoucherStatus.PAID
    assert _statuses(setup)["direct"] is VoucherStatus.PAID
    with session_scope(setup.engine) as s:
        assert s.get_one(Certification, setup.cert).paid_amount == 400_000
        assert s.get_one(BudgetLine, setup.ids.lines[2]).paid_on_certified == 400_000
        assert s.get_one(TreasuryBatch, batch.batch_id).status is TreasuryBatchStatus.CONFIRMED
        assert execution.query(s, year=2026, period=13).totals().spent == 430_000
        assert audit.verify(s) == []
    # The same confirmation again: refused, nothing paid twice.
    with pytest.raises(treasury.TreasuryFileError) as twice:
        _import(setup, _confirm(batch.data))
    assert {Code.ALREADY_CONFIRMED, Code.ALREADY_PAID} <= _codes(twice)
    with session_scope(setup.engine) as s:
        assert execution.query(s, year=2026, period=13).totals().spent == 430_000


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("tampered", Code.BAD_SIGNATURE),
        ("unknown_key", Code.UNKNOWN_KEY),
        ("wrong_total", Code.TOTAL_MISMATCH),
        ("missing_voucher", Code.MISSING_VOUCHER),
        ("foreign_voucher", Code.UNKNOWN_VOUCHER),
        ("wrong_amount", Code.AMOUNT_MISMATCH),
        ("other_batch_file", Code.BATCH_MISMATCH),
        ("not_json", Code.MALFORMED),
        ("wrong_format", Code.WRONG_FORMAT),
    ],
)
def test_bad_confirmations_are_refused_and_nothing_is_written(
    setup: Setup, name: str, expected: Code
) -> None:
    batch = _export(setup)
    good = treasury.build_confirmation(batch.data, paid_on=PAID_ON)
    results = good["results"]
    if name == "tampered":
        signed = json.loads(_confirm(batch.data))
        signed["paid_on"] = "2026-03-26"
        data = canonical_bytes(signed)
    elif name == "unknown_key":
        data = treasury.sign_document(good, "treasury-2099", Ed25519PrivateKey.generate())
    elif name == "wrong_total":
        data = _confirm(batch.data, total_paid=good["total_paid"] + 1)
    elif name == "missing_voucher":
        data = _confirm(batch.data, results=results[:1], count=1, total_paid=results[0]["amount"])
    elif name == "foreign_voucher":
        extra = {"voucher_number": 99, "amount": 5, "result": "paid"}
        data = _confirm(batch.data, results=[*results, extra], count=3, total_paid=good["total_paid"] + 5)
    elif name == "wrong_amount":
        bent = [{**results[0], "amount": results[0]["amount"] + 1}, results[1]]
        data = _confirm(batch.data, results=bent, total_paid=good["total_paid"] + 1)
    elif name == "other_batch_file":
        data = _confirm(batch.data, batch_file_hash="0" * 64)
    elif name == "not_json":
        data = b"\xff\xfe not json"
    else:
        data = _confirm(batch.data, format="something.else")
    with pytest.raises(treasury.TreasuryFileError) as refused:
        _import(setup, data)
    assert expected in _codes(refused)
    assert all(e.message_zh and e.message_en for e in refused.value.errors)
    assert _statuses(setup)["certified"] is VoucherStatus.BATCHED
    with session_scope(setup.engine) as s:
        assert s.get_one(TreasuryBatch, batch.batch_id).status is TreasuryBatchStatus.SENT
        assert s.get_one(Certification, setup.cert).paid_amount == 0


def test_a_payment_refused_half_way_undoes_the_whole_import(setup: Setup) -> None:
    batch = _export(setup)
    with session_scope(setup.engine) as s:  # period 3 closes after batching: the second payment fails
        s.add(PeriodClose(agency_id=setup.ids.agency_id, fiscal_year_id=setup.ids.year_id, period=3))
    with pytest.raises(treasury.TreasuryFileError) as refused:
        _import(setup, _confirm(batch.data))
    assert _codes(refused) == {Code.PAYMENT_REFUSED}
    # The period-2 voucher was paid first inside the import, and is unpaid again.
    assert _statuses(setup)["certified"] is VoucherStatus.BATCHED
    with session_scope(setup.engine) as s:
        assert s.get_one(Certification, setup.cert).paid_amount == 0
        assert s.get_one(BudgetLine, setup.ids.lines[2]).paid_on_certified == 0


def test_returned_payments_go_back_to_approved_and_can_be_batched_again(setup: Setup) -> None:
    batch = _export(setup)
    document = treasury.build_confirmation(batch.data, paid_on=PAID_ON, returned={2: "帳戶已結清"})
    result = _import(setup, treasury.sign_document(document, "treasury-2026", TREASURY_KEY))
    assert (result.paid, result.returned) == ([1], [2])
    assert _statuses(setup)["direct"] is VoucherStatus.APPROVED
    second = _export(setup)
    assert second.number == batch.number + 1 and second.count == 1


def test_a_voucher_edited_after_approval_is_not_batched(setup: Setup) -> None:
    with setup.engine.begin() as conn:
        conn.execute(
            text("UPDATE payment_voucher SET payee = '冒名者' WHERE id = :v"), {"v": setup.vouchers["direct"]}
        )
    with pytest.raises(treasury.TreasuryFileError) as refused:
        _export(setup)
    assert _codes(refused) == {Code.CHAIN_INVALID}
    assert _statuses(setup)["certified"] is VoucherStatus.APPROVED  # nothing half-written
    with session_scope(setup.engine) as s:
        assert s.scalars(select(TreasuryBatch)).all() == []
