"""Every table of the county application. Money columns are integer 元 (BigInteger).

Running totals on BudgetLine are what the certification hot path updates; the CHECK constraints
are the last line of defence behind the services' conditional updates.
Engineer B (signing, treasury, audit, reports) and engineer C (auth, web) build on these names.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tenant_app.db import Base
from tenant_app.enums import (
    AccountType,
    ApprovalStep,
    CertificationStatus,
    EventKind,
    FiscalYearStatus,
    JournalKind,
    NumberKind,
    Role,
    TreasuryBatchStatus,
    VoucherStatus,
)

Money = BigInteger

# The available balance of a budget line (see ACCOUNTING.md step 4); used in SQL and CHECKs.
AVAILABLE_SQL = "allotted - certified - paid_direct + released"


def _enum(kind: type[StrEnum], name: str) -> SAEnum:
    # Stored as VARCHAR + CHECK on both databases, so migrations stay portable.
    return SAEnum(kind, name=name, native_enum=False, create_constraint=True, length=32,
                  values_callable=lambda members: [m.value for m in members])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class County(Base):
    """The one county this installation serves."""

    __tablename__ = "county"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(100))


class FiscalYear(Base):
    __tablename__ = "fiscal_year"
    id: Mapped[int] = mapped_column(primary_key=True)
    year: Mapped[int] = mapped_column(Integer, unique=True)  # Gregorian; ROC year = year - 1911
    status: Mapped[FiscalYearStatus] = mapped_column(_enum(FiscalYearStatus, "fiscal_year_status"),
                                                     default=FiscalYearStatus.OPEN)

    @property
    def roc_year(self) -> int:
        return self.year - 1911


class Agency(Base):
    """機關."""

    __tablename__ = "agency"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(100))


class User(Base):
    __tablename__ = "app_user"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(_enum(Role, "role"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)

    grants: Mapped[list[UserAgency]] = relationship(back_populates="user", cascade="all, delete-orphan")


class SigningKey(Base):
    """An Ed25519 key of a user (approvals) or an agency (treasury batches); see signing_keys.py.

    The private key is stored wrapped with the app secret; retired keys stay to verify old signatures.
    """

    __tablename__ = "signing_key"
    __table_args__ = (CheckConstraint("(user_id IS NULL) <> (agency_id IS NULL)", name="one_owner"),)
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"), default=None, index=True)
    agency_id: Mapped[int | None] = mapped_column(ForeignKey("agency.id"), default=None, index=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    wrapped_private_key: Mapped[bytes] = mapped_column(LargeBinary)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class UserAgency(Base):
    """A grant: the user may see and act for this agency."""

    __tablename__ = "user_agency"
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id", ondelete="CASCADE"), primary_key=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agency.id", ondelete="CASCADE"), primary_key=True)

    user: Mapped[User] = relationship(back_populates="grants")


class ApiToken(Base):
    """A bearer token; only its SHA-256 is stored."""

    __tablename__ = "api_token"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class UserSession(Base):
    """A browser session (engineer C's auth.py); the cookie carries the id, the row the state."""

    __tablename__ = "user_session"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    agency_id: Mapped[int | None] = mapped_column(ForeignKey("agency.id"), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Delegation(Base):
    """代理: the delegate may sign for the principal between the two dates (inclusive)."""

    __tablename__ = "delegation"
    __table_args__ = (CheckConstraint("valid_from <= valid_to", name="dates_ordered"),
                      CheckConstraint("principal_id <> delegate_id", name="not_self"))
    id: Mapped[int] = mapped_column(primary_key=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    delegate_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    valid_from: Mapped[dt.date] = mapped_column(Date)
    valid_to: Mapped[dt.date] = mapped_column(Date)
    reason: Mapped[str] = mapped_column(String(255), default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class BudgetLine(Base):
    """One line of the statutory budget (法定預算) with the running totals the hot path updates.

    authorised = budget + amended + transferred_in - transferred_out
    available  = allotted - certified - paid_direct + released      (allotted = allotted to date)
    """

    __tablename__ = "budget_line"
    __table_args__ = (
        UniqueConstraint("agency_id", "fiscal_year_id", "programme_code", "sub_item", "object_code",
                         name="uq_budget_line_identity"),
        CheckConstraint(f"{AVAILABLE_SQL} >= 0", name="available_not_negative"),
        CheckConstraint("allotted + allotted_pending <= budget + amended + transferred_in - transferred_out",
                        name="allotted_within_authorised"),
        CheckConstraint("budget >= 0 AND allotted >= 0 AND allotted_pending >= 0 AND certified >= 0 "
                        "AND paid_on_certified >= 0 AND paid_direct >= 0 AND released >= 0 "
                        "AND transferred_in >= 0 AND transferred_out >= 0", name="totals_not_negative"),
        CheckConstraint("paid_on_certified + released <= certified", name="settled_within_certified"),
        Index("ix_budget_line_agency_year", "agency_id", "fiscal_year_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agency.id"))
    fiscal_year_id: Mapped[int] = mapped_column(ForeignKey("fiscal_year.id"))
    programme_code: Mapped[str] = mapped_column(String(32))  # 計畫
    programme_name: Mapped[str] = mapped_column(String(100))
    sub_item: Mapped[str] = mapped_column(String(100))  # 分支計畫 / 子目
    object_code: Mapped[str] = mapped_column(String(32))  # 用途別科目
    object_name: Mapped[str] = mapped_column(String(100))
    is_personnel: Mapped[bool] = mapped_column(Boolean, default=False)  # 用人經費
    budget: Mapped[int] = mapped_column(Money)  # 預算數 (statutory)
    amended: Mapped[int] = mapped_column(Money, default=0)  # net 追加減預算
    transferred_in: Mapped[int] = mapped_column(Money, default=0)  # 流入
    transferred_out: Mapped[int] = mapped_column(Money, default=0)  # 流出
    allotted: Mapped[int] = mapped_column(Money, default=0)  # 分配累計數 (periods reached)
    allotted_pending: Mapped[int] = mapped_column(Money, default=0)  # allotments of future periods
    certified: Mapped[int] = mapped_column(Money, default=0)  # 簽證數
    paid_on_certified: Mapped[int] = mapped_column(Money, default=0)  # 實支數 against certifications
    paid_direct: Mapped[int] = mapped_column(Money, default=0)  # 實支數 without certification
    released: Mapped[int] = mapped_column(Money, default=0)  # encumbrance given back unused

    agency: Mapped[Agency] = relationship()
    fiscal_year: Mapped[FiscalYear] = relationship()

    @property
    def authorised(self) -> int:
        return self.budget + self.amended + self.transferred_in - self.transferred_out

    @property
    def available(self) -> int:
        return self.allotted - self.certified - self.paid_direct + self.released


class Amendment(Base):
    """追加減預算: a separate document, never an edit of the statutory budget."""

    __tablename__ = "amendment"
    __table_args__ = (UniqueConstraint("agency_id", "fiscal_year_id", "number", name="uq_amendment_number"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agency.id"))
    fiscal_year_id: Mapped[int] = mapped_column(ForeignKey("fiscal_year.id"))
    number: Mapped[int] = mapped_column(Integer)
    budget_line_id: Mapped[int] = mapped_column(ForeignKey("budget_line.id"), index=True)
    amount: Mapped[int] = mapped_column(Money)  # signed: positive adds, negative cuts
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Allotment(Base):
    """分配預算 for one period (1..12, 13 = year-end adjustments)."""

    __tablename__ = "allotment"
    __table_args__ = (CheckConstraint("period BETWEEN 1 AND 13", name="period_range"),
                      CheckConstraint("amount > 0", name="amount_positive"))
    id: Mapped[int] = mapped_column(primary_key=True)
    budget_line_id: Mapped[int] = mapped_column(ForeignKey("budget_line.id"), index=True)
    period: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int] = mapped_column(Money)
    # True once the period has been reached and the amount counted in BudgetLine.allotted.
    applied: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Transfer(Base):
    """流用 between object codes inside one programme."""

    __tablename__ = "transfer"
    __table_args__ = (UniqueConstraint("agency_id", "fiscal_year_id", "number", name="uq_transfer_number"),
                      CheckConstraint("amount > 0", name="amount_positive"),
                      CheckConstraint("from_line_id <> to_line_id", name="distinct_lines"))
    id: Mapped[int] = mapped_column(primary_key=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agency.id"))
    fiscal_year_id: Mapped[int] = mapped_column(ForeignKey("fiscal_year.id"))
    number: Mapped[int] = mapped_column(Integer)
    from_line_id: Mapped[int] = mapped_column(ForeignKey("budget_line.id"), index=True)
    to_line_id: Mapped[int] = mapped_column(ForeignKey("budget_line.id"), index=True)
    amount: Mapped[int] = mapped_column(Money)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"), default=None)
    approved_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Certification(Base):
    """簽證: an encumbrance reserved against a budget line's available balance."""

    __tablename__ = "certification"
    __table_args__ = (
        UniqueConstraint("agency_id", "fiscal_year_id", "number", name="uq_certification_number"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("paid_amount >= 0 AND released_amount >= 0 "
                        "AND paid_amount + released_amount <= amount", name="settled_within_amount"),
        CheckConstraint("period BETWEEN 1 AND 13", name="period_range"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agency.id"))
    fiscal_year_id: Mapped[int] = mapped_column(ForeignKey("fiscal_year.id"))
    number: Mapped[int] = mapped_column(Integer)
    budget_line_id: Mapped[int] = mapped_column(ForeignKey("budget_line.id"), index=True)
    period: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int] = mapped_column(Money)
    paid_amount: Mapped[int] = mapped_column(Money, default=0)
    released_amount: Mapped[int] = mapped_column(Money, default=0)
    purpose: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[CertificationStatus] = mapped_column(_enum(CertificationStatus, "certification_status"),
                                                        default=CertificationStatus.ACTIVE)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class PaymentVoucher(Base):
    """付款憑單: paid against a certification, or directly for small items."""

    __tablename__ = "payment_voucher"
    __table_args__ = (UniqueConstraint("agency_id", "fiscal_year_id", "number", name="uq_voucher_number"),
                      CheckConstraint("amount > 0", name="amount_positive"),
                      Index("ix_payment_voucher_agency_year", "agency_id", "fiscal_year_id"))
    id: Mapped[int] = mapped_column(primary_key=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agency.id"))
    fiscal_year_id: Mapped[int] = mapped_column(ForeignKey("fiscal_year.id"))
    number: Mapped[int] = mapped_column(Integer)
    certification_id: Mapped[int | None] = mapped_column(ForeignKey("certification.id"), default=None,
                                                         index=True)
    payee: Mapped[str] = mapped_column(String(200))
    payee_account: Mapped[str] = mapped_column(String(64), default="")  # bank account for the treasury
    amount: Mapped[int] = mapped_column(Money)  # = sum of its lines
    period: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[VoucherStatus] = mapped_column(_enum(VoucherStatus, "voucher_status"),
                                                  default=VoucherStatus.DRAFT)
    preparer_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    reject_reason: Mapped[str | None] = mapped_column(Text, default=None)
    # Increments on every content edit, so signatures over an older content are visibly stale.
    revision: Mapped[int] = mapped_column(Integer, default=1)
    treasury_batch_id: Mapped[int | None] = mapped_column(ForeignKey("treasury_batch.id"), default=None)
    paid_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)

    lines: Mapped[list[VoucherLine]] = relationship(back_populates="voucher", cascade="all, delete-orphan",
                                                    order_by="VoucherLine.id")
    einvoices: Mapped[list[EInvoice]] = relationship(back_populates="voucher", cascade="all, delete-orphan",
                                                     order_by="EInvoice.id")
    signatures: Mapped[list[Signature]] = relationship(back_populates="voucher", cascade="all, delete-orphan",
                                                       order_by="Signature.id")


class VoucherLine(Base):
    __tablename__ = "voucher_line"
    __table_args__ = (CheckConstraint("amount > 0", name="amount_positive"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    voucher_id: Mapped[int] = mapped_column(ForeignKey("payment_voucher.id", ondelete="CASCADE"), index=True)
    budget_line_id: Mapped[int] = mapped_column(ForeignKey("budget_line.id"), index=True)
    description: Mapped[str] = mapped_column(String(255), default="")
    amount: Mapped[int] = mapped_column(Money)

    voucher: Mapped[PaymentVoucher] = relationship(back_populates="lines")


class EInvoice(Base):
    """電子發票 attached to a voucher; a number is used at most once in the county."""

    __tablename__ = "einvoice"
    id: Mapped[int] = mapped_column(primary_key=True)
    voucher_id: Mapped[int] = mapped_column(ForeignKey("payment_voucher.id", ondelete="CASCADE"), index=True)
    number: Mapped[str] = mapped_column(String(10), unique=True)
    amount: Mapped[int | None] = mapped_column(Money, default=None)

    voucher: Mapped[PaymentVoucher] = relationship(back_populates="einvoices")


class Signature(Base):
    """One approval step: an Ed25519 signature over the voucher's canonical content hash."""

    __tablename__ = "signature"
    __table_args__ = (UniqueConstraint("voucher_id", "step", name="uq_signature_step"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    voucher_id: Mapped[int] = mapped_column(ForeignKey("payment_voucher.id", ondelete="CASCADE"), index=True)
    step: Mapped[ApprovalStep] = mapped_column(_enum(ApprovalStep, "approval_step"))
    signer_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    # Set when the signer acted as delegate (代理) for this principal.
    on_behalf_of_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"), default=None)
    delegation_id: Mapped[int | None] = mapped_column(ForeignKey("delegation.id"), default=None)
    key_id: Mapped[str] = mapped_column(ForeignKey("signing_key.key_id"))
    content_hash: Mapped[str] = mapped_column(String(64))  # hex SHA-256 of the canonical content
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    signed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)

    voucher: Mapped[PaymentVoucher] = relationship(back_populates="signatures")


class TreasuryBatch(Base):
    """An electronic payment batch file sent to the treasury (公庫)."""

    __tablename__ = "treasury_batch"
    __table_args__ = (
        UniqueConstraint("agency_id", "fiscal_year_id", "number", name="uq_treasury_batch_number"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agency.id"))
    fiscal_year_id: Mapped[int] = mapped_column(ForeignKey("fiscal_year.id"))
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[TreasuryBatchStatus] = mapped_column(_enum(TreasuryBatchStatus, "treasury_batch_status"),
                                                        default=TreasuryBatchStatus.SENT)
    total: Mapped[int] = mapped_column(Money, default=0)
    file_hash: Mapped[str] = mapped_column(String(64), default="")
    signature: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    key_id: Mapped[str | None] = mapped_column(ForeignKey("signing_key.key_id"), default=None)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class Account(Base):
    """Chart of accounts (會計科目)."""

    __tablename__ = "account"
    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))  # zh-TW
    name_en: Mapped[str] = mapped_column(String(100))
    type: Mapped[AccountType] = mapped_column(_enum(AccountType, "account_type"))


class PostingRule(Base):
    """Data, not code: which accounts an event debits and credits, and the 傳票 kind it produces."""

    __tablename__ = "posting_rule"
    event_kind: Mapped[EventKind] = mapped_column(_enum(EventKind, "event_kind"), primary_key=True)
    journal_kind: Mapped[JournalKind] = mapped_column(_enum(JournalKind, "journal_kind"))
    debit_account: Mapped[str] = mapped_column(ForeignKey("account.code"))
    credit_account: Mapped[str] = mapped_column(ForeignKey("account.code"))
    description: Mapped[str] = mapped_column(String(255), default="")


class JournalEntry(Base):
    """傳票: posted on insert, never updated; a correction is a new entry with reversal_of set."""

    __tablename__ = "journal_entry"
    __table_args__ = (
        UniqueConstraint("agency_id", "fiscal_year_id", "kind", "number", name="uq_journal_entry_number"),
        CheckConstraint("period BETWEEN 1 AND 13", name="period_range"),
        Index("ix_journal_entry_agency_year_period", "agency_id", "fiscal_year_id", "period"),
        Index("ix_journal_entry_source", "source_type", "source_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agency.id"))
    fiscal_year_id: Mapped[int] = mapped_column(ForeignKey("fiscal_year.id"))
    kind: Mapped[JournalKind] = mapped_column(_enum(JournalKind, "journal_kind"))
    number: Mapped[int] = mapped_column(Integer)
    period: Mapped[int] = mapped_column(Integer)
    entry_date: Mapped[dt.date] = mapped_column(Date)
    event_kind: Mapped[EventKind] = mapped_column(_enum(EventKind, "event_kind"))
    # What the entry records, e.g. ("certification", 17): the link from a document to its 傳票.
    source_type: Mapped[str] = mapped_column(String(32), default="")
    source_id: Mapped[int | None] = mapped_column(Integer, default=None)
    description: Mapped[str] = mapped_column(String(255), default="")
    reversal_of_id: Mapped[int | None] = mapped_column(ForeignKey("journal_entry.id"), default=None,
                                                       unique=True)
    posted_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"), default=None)
    posted_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)

    lines: Mapped[list[JournalLine]] = relationship(back_populates="entry", order_by="JournalLine.id")


class JournalLine(Base):
    __tablename__ = "journal_line"
    __table_args__ = (
        CheckConstraint("debit >= 0 AND credit >= 0 AND (debit = 0 OR credit = 0) AND debit + credit > 0",
                        name="one_sided_positive"),
        Index("ix_journal_line_account", "account_code"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("journal_entry.id"), index=True)
    account_code: Mapped[str] = mapped_column(ForeignKey("account.code"))
    budget_line_id: Mapped[int | None] = mapped_column(ForeignKey("budget_line.id"), default=None, index=True)
    debit: Mapped[int] = mapped_column(Money, default=0)
    credit: Mapped[int] = mapped_column(Money, default=0)

    entry: Mapped[JournalEntry] = relationship(back_populates="lines")


class NumberCounter(Base):
    """The last number issued per (agency, fiscal year, kind); bumped inside the issuing transaction."""

    __tablename__ = "number_counter"
    agency_id: Mapped[int] = mapped_column(ForeignKey("agency.id"), primary_key=True)
    fiscal_year_id: Mapped[int] = mapped_column(ForeignKey("fiscal_year.id"), primary_key=True)
    kind: Mapped[NumberKind] = mapped_column(_enum(NumberKind, "number_kind"), primary_key=True)
    last_number: Mapped[int] = mapped_column(Integer, default=0)


class PeriodClose(Base):
    """月結 / 年結: once a row exists, the period is locked for that agency."""

    __tablename__ = "period_close"
    __table_args__ = (CheckConstraint("period BETWEEN 1 AND 13", name="period_range"),)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agency.id"), primary_key=True)
    fiscal_year_id: Mapped[int] = mapped_column(ForeignKey("fiscal_year.id"), primary_key=True)
    period: Mapped[int] = mapped_column(Integer, primary_key=True)
    closed_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"), default=None)
    closed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class AuditEvent(Base):
    """Append-only audit log; engineer B's audit.py computes prev_hash/hash chaining."""

    __tablename__ = "audit_event"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text, default="{}")  # canonical JSON
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHead(Base):
    """The audit chain's newest (seq, hash), rewritten by audit.append in the same transaction as
    each entry and signed with a key derived from the county's secret (which the database never
    holds), so that deleting the newest entries shows even though no later entry links to them."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # always 1: one row
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64), default="")  # "" when written without the key
