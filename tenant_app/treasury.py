"""Treasury (公庫) files: the signed payment batch we send, and the confirmation we import.

Both are canonical JSON documents (docs/treasury-files.md) signed with Ed25519 over the canonical
bytes of everything but the signature. Export takes approved vouchers whose chains verify, marks
them BATCHED and records the batch; import checks the whole confirmation (treasury signature,
the batch it answers, counts, totals, every voucher known, in the batch, not already paid) before
it writes anything, then pays the confirmed vouchers through the voucher service (which releases
their encumbrance and posts the journal) inside one savepoint: all or nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from tenant_app import audit, signing_keys, signing_store
from tenant_app.canonical import canonical_bytes, sha256_hex
from tenant_app.enums import NumberKind, TreasuryBatchStatus, VoucherStatus
from tenant_app.models import Agency, County, FiscalYear, PaymentVoucher, TreasuryBatch
from tenant_app.rules.errors import RuleViolationError
from tenant_app.services import vouchers as voucher_service
from tenant_app.services.numbering import issue_numbers

BATCH_FORMAT = "countycloud.treasury.payment-batch.v1"
CONFIRMATION_FORMAT = "countycloud.treasury.confirmation.v1"
MAX_FILE_BYTES = 20 * 1024 * 1024  # a year of one agency's payments is far below this


class PaymentResult(StrEnum):
    PAID = "paid"  # 已撥付
    RETURNED = "returned"  # 退回 (e.g. a closed bank account): back to APPROVED, may be re-batched


class TreasuryErrorCode(StrEnum):
    NOTHING_TO_BATCH = "nothing_to_batch"
    VOUCHER_NOT_APPROVED = "voucher_not_approved"
    CHAIN_INVALID = "chain_invalid"
    MALFORMED = "malformed"
    WRONG_FORMAT = "wrong_format"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    UNKNOWN_BATCH = "unknown_batch"
    BATCH_MISMATCH = "batch_mismatch"
    ALREADY_CONFIRMED = "already_confirmed"
    COUNT_MISMATCH = "count_mismatch"
    TOTAL_MISMATCH = "total_mismatch"
    UNKNOWN_VOUCHER = "unknown_voucher"
    DUPLICATE_VOUCHER = "duplicate_voucher"
    MISSING_VOUCHER = "missing_voucher"
    AMOUNT_MISMATCH = "amount_mismatch"
    ALREADY_PAID = "already_paid"
    PAYMENT_REFUSED = "payment_refused"


@dataclass(frozen=True)
class TreasuryError:
    code: TreasuryErrorCode
    message_zh: str
    message_en: str
    entry: Mapping[str, Any] = field(default_factory=dict)


class TreasuryFileError(Exception):
    """The file or the batch was refused; nothing has been written."""

    def __init__(self, errors: Sequence[TreasuryError]) -> None:
        super().__init__("; ".join(e.message_en for e in errors))
        self.errors = list(errors)


# ---------------------------------------------------------------- signing documents


def _signed_part(document: Mapping[str, Any]) -> bytes:
    return canonical_bytes({k: v for k, v in document.items() if k != "signature"})


def sign_document(document: Mapping[str, Any], key_id: str, private_key: Ed25519PrivateKey) -> bytes:
    """The file's bytes: canonical JSON with key_id and signature added, newline-terminated."""
    body = {**document, "key_id": key_id}
    signature = private_key.sign(_signed_part(body))
    return canonical_bytes({**body, "signature": signature.hex()}) + b"\n"


def parse_document(data: bytes, expected_format: str) -> tuple[dict[str, Any], list[TreasuryError]]:
    if len(data) > MAX_FILE_BYTES:
        return {}, [_err(TreasuryErrorCode.MALFORMED, "檔案過大", "file too large", size=len(data))]
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {}, [
            _err(TreasuryErrorCode.MALFORMED, f"檔案無法解析：{exc}", f"cannot parse the file: {exc}")
        ]
    if not isinstance(document, dict):
        return {}, [_err(TreasuryErrorCode.MALFORMED, "檔案內容不是物件", "the file is not a JSON object")]
    if document.get("format") != expected_format:
        return document, [
            _err(
                TreasuryErrorCode.WRONG_FORMAT,
                f"檔案格式不符，應為 {expected_format}",
                f"wrong format {document.get('format')!r}, expected {expected_format}",
            )
        ]
    return document, []


def verify_document(document: Mapping[str, Any], public_keys: Mapping[str, bytes]) -> list[TreasuryError]:
    key_id = document.get("key_id")
    key = public_keys.get(key_id) if isinstance(key_id, str) else None
    if key is None:
        return [
            _err(TreasuryErrorCode.UNKNOWN_KEY, f"未知的簽章金鑰 {key_id}", f"unknown signing key {key_id}")
        ]
    try:
        signature = bytes.fromhex(str(document.get("signature", "")))
        Ed25519PublicKey.from_public_bytes(key).verify(signature, _signed_part(document))
    except (ValueError, InvalidSignature):
        return [
            _err(
                TreasuryErrorCode.BAD_SIGNATURE,
                "檔案簽章驗證失敗（檔案已被修改或非由該金鑰簽署）",
                "the file's signature does not verify (altered, or not signed by that key)",
            )
        ]
    return []


def _err(code: TreasuryErrorCode, zh: str, en: str, **entry: Any) -> TreasuryError:
    return TreasuryError(code, zh, en, entry)


# ---------------------------------------------------------------- export: the payment batch


@dataclass(frozen=True)
class ExportedBatch:
    batch_id: int
    number: int
    total: int
    count: int
    file_hash: str
    data: bytes  # the file to hand to the treasury

    @property
    def filename(self) -> str:
        return f"treasury-batch-{self.number:05d}.json"


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def export_batch(
    session: Session,
    *,
    agency_id: int,
    fiscal_year_id: int,
    app_secret: str,
    user_id: int | None,
    voucher_ids: Sequence[int] | None = None,
    now: dt.datetime | None = None,
) -> ExportedBatch:
    """Batch approved vouchers (all of the agency's unbatched ones, or those named) into a signed file."""
    now = _aware(now or dt.datetime.now(dt.UTC))
    query = (
        select(PaymentVoucher)
        .where(PaymentVoucher.agency_id == agency_id, PaymentVoucher.fiscal_year_id == fiscal_year_id)
        .order_by(PaymentVoucher.number)
        .with_for_update()
    )
    if voucher_ids is None:
        query = query.where(
            PaymentVoucher.status == VoucherStatus.APPROVED, PaymentVoucher.treasury_batch_id.is_(None)
        )
    else:
        query = query.where(PaymentVoucher.id.in_(list(voucher_ids)))
    chosen = list(session.scalars(query))
    errors: list[TreasuryError] = []
    if voucher_ids is not None:
        for missing in sorted(set(voucher_ids) - {v.id for v in chosen}):
            errors.append(
                _err(
                    TreasuryErrorCode.UNKNOWN_VOUCHER,
                    f"查無付款憑單 {missing}（或不屬本機關年度）",
                    f"voucher {missing} not found in this agency and year",
                    voucher_id=missing,
                )
            )
    if not chosen and not errors:
        errors.append(
            _err(TreasuryErrorCode.NOTHING_TO_BATCH, "沒有待撥付的已核准憑單", "no approved vouchers")
        )
    for v in chosen:
        if v.status is not VoucherStatus.APPROVED or v.treasury_batch_id is not None:
            errors.append(
                _err(
                    TreasuryErrorCode.VOUCHER_NOT_APPROVED,
                    f"付款憑單第 {v.number} 號狀態為 {v.status.value}，不能送公庫",
                    f"voucher {v.number} is {v.status.value}, not approved and unbatched",
                    voucher=v.number,
                )
            )
            continue
        for chain_error in signing_store.verify_voucher(session, v.id):
            errors.append(
                _err(
                    TreasuryErrorCode.CHAIN_INVALID,
                    f"付款憑單第 {v.number} 號：{chain_error.message_zh}",
                    f"voucher {v.number}: {chain_error.message_en}",
                    voucher=v.number,
                )
            )
    if errors:
        raise TreasuryFileError(errors)

    agency = session.get_one(Agency, agency_id)
    year = session.get_one(FiscalYear, fiscal_year_id)
    county = session.scalar(select(County.code).order_by(County.id).limit(1)) or ""
    key = signing_store.ensure_agency_key(session, agency_id, app_secret)
    (number,) = issue_numbers(session, agency_id, fiscal_year_id, NumberKind.TREASURY_BATCH)
    payments = []
    for v in chosen:
        payments.append(
            {
                "voucher_number": v.number,
                "payee": v.payee,
                "payee_account": v.payee_account,
                "amount": v.amount,
                "content_hash": signing_store.stored_signatures(v)[-1].content_hash,
            }
        )
    total = sum(v.amount for v in chosen)
    document = {
        "format": BATCH_FORMAT,
        "county": county,
        "agency": agency.code,
        "fiscal_year": year.year,
        "batch_number": number,
        "created_at": now,
        "count": len(payments),
        "total": total,
        "payments": payments,
    }
    private = signing_keys.unwrap_private_key(app_secret, key.key_id, key.wrapped_private_key)
    data = sign_document(document, key.key_id, private)
    file_hash = sha256_hex(data)
    batch = TreasuryBatch(
        agency_id=agency_id,
        fiscal_year_id=fiscal_year_id,
        number=number,
        status=TreasuryBatchStatus.SENT,
        total=total,
        file_hash=file_hash,
        signature=bytes.fromhex(json.loads(data)["signature"]),
        key_id=key.key_id,
        created_by_id=user_id,
        created_at=now,
    )
    session.add(batch)
    session.flush()
    for v in chosen:
        v.status = VoucherStatus.BATCHED
        v.treasury_batch_id = batch.id
    session.flush()
    audit.append(
        session,
        f"user:{user_id}" if user_id is not None else "system",
        audit.AuditAction.TREASURY_BATCH_EXPORTED,
        {
            "batch": number,
            "agency": agency.code,
            "count": len(chosen),
            "total": total,
            "file_hash": file_hash,
        },
    )
    return ExportedBatch(batch.id, number, total, len(chosen), file_hash, data)


# ---------------------------------------------------------------- import: the confirmation


@dataclass(frozen=True)
class ImportedConfirmation:
    batch_number: int
    paid: list[int]  # voucher numbers
    returned: list[int]
    total_paid: int


def _check_results(
    document: Mapping[str, Any], batch_vouchers: Mapping[int, PaymentVoucher]
) -> tuple[list[TreasuryError], dict[int, PaymentResult]]:
    errors: list[TreasuryError] = []
    outcome: dict[int, PaymentResult] = {}
    results = document.get("results")
    if not isinstance(results, list):
        return [_err(TreasuryErrorCode.MALFORMED, "缺少 results 清單", "results list missing")], outcome
    total = 0
    for item in results:
        try:
            number, amount, result = (
                int(item["voucher_number"]),
                item["amount"],
                PaymentResult(item["result"]),
            )
            if not isinstance(amount, int) or isinstance(amount, bool):
                raise TypeError("amount must be an integer")
        except (KeyError, TypeError, ValueError) as exc:
            errors.append(
                _err(TreasuryErrorCode.MALFORMED, f"明細格式錯誤：{item!r}", f"bad result entry: {exc}")
            )
            continue
        if number in outcome:
            errors.append(
                _err(
                    TreasuryErrorCode.DUPLICATE_VOUCHER,
                    f"付款憑單第 {number} 號重複出現",
                    f"voucher {number} appears twice",
                    voucher=number,
                )
            )
            continue
        voucher = batch_vouchers.get(number)
        if voucher is None:
            errors.append(
                _err(
                    TreasuryErrorCode.UNKNOWN_VOUCHER,
                    f"付款憑單第 {number} 號不在本批次",
                    f"voucher {number} is not in this batch",
                    voucher=number,
                )
            )
            continue
        if voucher.status is VoucherStatus.PAID:
            errors.append(
                _err(
                    TreasuryErrorCode.ALREADY_PAID,
                    f"付款憑單第 {number} 號已付款，不可重複付款",
                    f"voucher {number} is already paid; refusing to pay it twice",
                    voucher=number,
                )
            )
        elif voucher.status is not VoucherStatus.BATCHED:
            errors.append(
                _err(
                    TreasuryErrorCode.VOUCHER_NOT_APPROVED,
                    f"付款憑單第 {number} 號狀態為 {voucher.status.value}",
                    f"voucher {number} is {voucher.status.value}, not batched",
                    voucher=number,
                )
            )
        if amount != voucher.amount:
            errors.append(
                _err(
                    TreasuryErrorCode.AMOUNT_MISMATCH,
                    f"付款憑單第 {number} 號金額 {amount:,} 與憑單 {voucher.amount:,} 不符",
                    f"voucher {number}: amount {amount} differs from the voucher's {voucher.amount}",
                    voucher=number,
                    amount=amount,
                    expected=voucher.amount,
                )
            )
        outcome[number] = result
        if result is PaymentResult.PAID:
            total += amount
    for number in sorted(set(batch_vouchers) - set(outcome)):
        errors.append(
            _err(
                TreasuryErrorCode.MISSING_VOUCHER,
                f"批次中的付款憑單第 {number} 號未見於回覆檔",
                f"voucher {number} of the batch is missing from the confirmation",
                voucher=number,
            )
        )
    if document.get("count") != len(results):
        errors.append(
            _err(
                TreasuryErrorCode.COUNT_MISMATCH,
                f"筆數 {document.get('count')} 與明細 {len(results)} 筆不符",
                f"count {document.get('count')} does not match {len(results)} entries",
            )
        )
    if document.get("total_paid") != total:
        errors.append(
            _err(
                TreasuryErrorCode.TOTAL_MISMATCH,
                f"撥付總額 {document.get('total_paid')} 與明細合計 {total:,} 不符",
                f"total_paid {document.get('total_paid')} does not equal the entries' sum {total}",
            )
        )
    return errors, outcome


def _find_batch(
    session: Session, document: Mapping[str, Any]
) -> tuple[TreasuryBatch | None, list[TreasuryError]]:
    batch = session.scalar(
        select(TreasuryBatch)
        .join(Agency, Agency.id == TreasuryBatch.agency_id)
        .join(FiscalYear, FiscalYear.id == TreasuryBatch.fiscal_year_id)
        .where(
            Agency.code == str(document.get("agency")),
            FiscalYear.year == document.get("fiscal_year"),
            TreasuryBatch.number == document.get("batch_number"),
        )
        .with_for_update()
    )
    if batch is None:
        return None, [
            _err(
                TreasuryErrorCode.UNKNOWN_BATCH,
                f"查無批次 {document.get('batch_number')}",
                f"no batch {document.get('batch_number')} for that agency and year",
            )
        ]
    errors = []
    if batch.file_hash != document.get("batch_file_hash"):
        errors.append(
            _err(
                TreasuryErrorCode.BATCH_MISMATCH,
                "回覆檔所確認的批次檔與本系統送出的不同",
                "the confirmation answers a different batch file than the one we sent",
            )
        )
    if batch.status is TreasuryBatchStatus.CONFIRMED:
        errors.append(
            _err(
                TreasuryErrorCode.ALREADY_CONFIRMED,
                f"批次 {batch.number} 已匯入過回覆檔，不可重複付款",
                f"batch {batch.number} was already confirmed; refusing to pay twice",
            )
        )
    return batch, errors


def import_confirmation(
    session: Session,
    data: bytes,
    *,
    treasury_keys: Mapping[str, bytes],
    user_id: int | None,
) -> ImportedConfirmation:
    """Check the treasury's confirmation in full, then pay and return vouchers: all or nothing."""
    document, errors = parse_document(data, CONFIRMATION_FORMAT)
    if errors:
        raise TreasuryFileError(errors)
    errors = verify_document(document, treasury_keys)
    if errors:
        raise TreasuryFileError(errors)
    batch, errors = _find_batch(session, document)
    if batch is None:
        raise TreasuryFileError(errors)
    members = session.scalars(
        select(PaymentVoucher).where(PaymentVoucher.treasury_batch_id == batch.id).with_for_update()
    ).all()
    result_errors, outcome = _check_results(document, {v.number: v for v in members})
    errors += result_errors
    try:
        paid_on = dt.date.fromisoformat(str(document.get("paid_on")))
    except ValueError:
        errors.append(_err(TreasuryErrorCode.MALFORMED, "撥付日期格式錯誤", "paid_on is not a date"))
    if errors:
        raise TreasuryFileError(errors)

    by_number = {v.number: v for v in members}
    paid, returned = [], []
    # A savepoint: if any payment is refused half-way, every change of this import is undone even
    # when the caller goes on to commit its transaction.
    with session.begin_nested():
        for number in sorted(outcome):
            voucher = by_number[number]
            if outcome[number] is PaymentResult.RETURNED:
                voucher.status = VoucherStatus.APPROVED
                voucher.treasury_batch_id = None
                returned.append(number)
                continue
            try:
                voucher_service.pay_voucher(session, voucher.id, [], user_id=user_id, on=paid_on)
            except RuleViolationError as refused:
                raise TreasuryFileError(
                    [
                        _err(
                            TreasuryErrorCode.PAYMENT_REFUSED,
                            f"付款憑單第 {number} 號無法付款：{e.message_zh}",
                            f"voucher {number} cannot be paid: {e.message_en}",
                            voucher=number,
                        )
                        for e in refused.errors
                    ]
                ) from refused
            paid.append(number)
        batch.status = TreasuryBatchStatus.CONFIRMED
        batch.confirmed_at = dt.datetime.now(dt.UTC)
        session.flush()
        total_paid = sum(by_number[n].amount for n in paid)
        audit.append(
            session,
            f"user:{user_id}" if user_id is not None else "system",
            audit.AuditAction.TREASURY_CONFIRMATION_IMPORTED,
            {
                "batch": batch.number,
                "paid": paid,
                "returned": returned,
                "total_paid": total_paid,
                "file_hash": sha256_hex(data),
            },
        )
    return ImportedConfirmation(batch.number, paid, returned, total_paid)


# ---------------------------------------------------------------- the treasury's side (tests, demo)


def build_confirmation(
    batch_file: bytes,
    *,
    paid_on: dt.date,
    returned: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """What the treasury answers to a batch file: every payment paid, except those `returned`
    (voucher number -> reason). Sign it with `sign_document` and the treasury's key."""
    batch = json.loads(batch_file)
    returned = returned or {}
    results = []
    for p in batch["payments"]:
        entry: dict[str, Any] = {
            "voucher_number": p["voucher_number"],
            "amount": p["amount"],
            "result": PaymentResult.RETURNED if p["voucher_number"] in returned else PaymentResult.PAID,
        }
        if p["voucher_number"] in returned:
            entry["reason"] = returned[p["voucher_number"]]
        results.append(entry)
    return {
        "format": CONFIRMATION_FORMAT,
        "agency": batch["agency"],
        "fiscal_year": batch["fiscal_year"],
        "batch_number": batch["batch_number"],
        "batch_file_hash": sha256_hex(batch_file),
        "paid_on": paid_on,
        "count": len(results),
        "total_paid": sum(r["amount"] for r in results if r["result"] is PaymentResult.PAID),
        "results": results,
    }
