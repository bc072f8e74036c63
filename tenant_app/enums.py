"""Closed sets of values used by the models, the rules and the API (stored as their string value)."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    CLERK = "clerk"  # 承辦人
    ACCOUNTANT = "accountant"  # 會計
    CHIEF_ACCOUNTANT = "chief_accountant"  # 主辦會計
    AGENCY_HEAD = "agency_head"  # 機關首長
    COUNTY_ADMIN = "county_admin"  # 管理者
    AUDITOR = "auditor"  # 稽核 (read-only)


class FiscalYearStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class CertificationStatus(StrEnum):
    ACTIVE = "active"  # encumbrance held
    SETTLED = "settled"  # paid and/or released in full


class VoucherStatus(StrEnum):
    DRAFT = "draft"
    IN_APPROVAL = "in_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    BATCHED = "batched"  # sent to the treasury in a payment batch
    PAID = "paid"


class ApprovalStep(StrEnum):
    PREPARER = "preparer"  # 承辦人
    CHIEF_ACCOUNTANT = "chief_accountant"  # 主辦會計
    AGENCY_HEAD = "agency_head"  # 機關首長


# The order in which a voucher collects its signatures.
APPROVAL_CHAIN: tuple[ApprovalStep, ...] = (
    ApprovalStep.PREPARER,
    ApprovalStep.CHIEF_ACCOUNTANT,
    ApprovalStep.AGENCY_HEAD,
)


class TreasuryBatchStatus(StrEnum):
    SENT = "sent"
    CONFIRMED = "confirmed"


class EventKind(StrEnum):
    """Business events that post journal entries through PostingRule rows."""

    CERTIFY = "certify"  # encumbrance reserved
    RELEASE = "release"  # encumbrance released unused
    PAY_CERTIFIED = "pay_certified"  # expenditure against a certification
    PAY_DIRECT = "pay_direct"  # expenditure without prior certification
    SETTLE_ENCUMBRANCE = "settle_encumbrance"  # encumbrance consumed by a payment
    ADJUST = "adjust"  # manual adjustment (轉帳)


class JournalKind(StrEnum):
    """The three kinds of 傳票; each has its own gapless number sequence."""

    RECEIPT = "receipt"  # 收入傳票
    PAYMENT = "payment"  # 支出傳票
    TRANSFER = "transfer"  # 轉帳傳票


class NumberKind(StrEnum):
    """Sequences kept gapless per agency and fiscal year."""

    CERTIFICATION = "certification"
    VOUCHER = "voucher"
    AMENDMENT = "amendment"
    TRANSFER_DOCUMENT = "transfer_document"
    TREASURY_BATCH = "treasury_batch"
    JOURNAL_RECEIPT = "journal_receipt"
    JOURNAL_PAYMENT = "journal_payment"
    JOURNAL_TRANSFER = "journal_transfer"


JOURNAL_NUMBER_KIND: dict[JournalKind, NumberKind] = {
    JournalKind.RECEIPT: NumberKind.JOURNAL_RECEIPT,
    JournalKind.PAYMENT: NumberKind.JOURNAL_PAYMENT,
    JournalKind.TRANSFER: NumberKind.JOURNAL_TRANSFER,
}


class AccountType(StrEnum):
    ASSET = "asset"
    LIABILITY = "liability"
    EQUITY = "equity"  # fund balance
    REVENUE = "revenue"
    EXPENDITURE = "expenditure"
    BUDGETARY = "budgetary"  # budget control accounts (預算控制)


class SourceType(StrEnum):
    """The kind of document a journal entry records (JournalEntry.source_type)."""

    CERTIFICATION = "certification"
    VOUCHER = "voucher"
    OPENING = "opening"
    MANUAL = "manual"
    REVERSAL = "reversal"


class AuditAction(StrEnum):
    """What the API writes to the hash-chained audit log (tenant_app.audit)."""

    ALLOT = "budget.allot"
    AMEND = "budget.amend"
    TRANSFER = "budget.transfer"
    CERTIFY_GROUP = "certification.group"
    RELEASE = "certification.release"
    VOUCHER_CREATE = "voucher.create"
    VOUCHER_EDIT = "voucher.edit"
    VOUCHER_PAY = "voucher.pay"
    JOURNAL_REVERSE = "journal.reverse"
    JOURNAL_MANUAL = "journal.manual"
    PERIOD_CLOSE = "period.close"
