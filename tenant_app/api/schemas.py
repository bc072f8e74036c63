"""Request bodies of the JSON API (pydantic). Every number is one of tenant_app/domains.py's
declared domains (ids, periods, money in integer 元), every list and string is bounded."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from tenant_app.domains import (
    MAX_EINVOICES,
    MAX_LINES,
    MAX_TEXT,
    Amount,
    Id,
    LineAmount,
    Period,
    SignedAmount,
)

EInvoiceNumber = Annotated[str, Field(max_length=32)]  # 2 letters + 8 digits; the rules check the format


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CertifyIn(Body):
    budget_line_id: Id
    amount: Amount
    period: Period | None = None
    purpose: str = Field(default="", max_length=255)


class ReleaseIn(Body):
    amount: Amount | None = None  # default: everything that remains


class AllotmentIn(Body):
    period: Period
    amount: Amount


class AmendmentIn(Body):
    amount: SignedAmount  # signed: a cut is negative
    reason: str = Field(min_length=1, max_length=MAX_TEXT)


class TransferIn(Body):
    from_line_id: Id
    to_line_id: Id
    amount: Amount
    reason: str = Field(min_length=1, max_length=MAX_TEXT)


class VoucherLineIn(Body):
    budget_line_id: Id
    amount: Amount
    description: str = Field(default="", max_length=255)


class VoucherIn(Body):
    agency_id: Id
    certification_id: Id | None = None
    payee: str = Field(min_length=1, max_length=200)
    payee_account: str = Field(default="", max_length=64)
    amount: Amount
    period: Period
    description: str = Field(default="", max_length=MAX_TEXT)
    lines: list[VoucherLineIn] = Field(min_length=1, max_length=MAX_LINES)
    einvoices: list[EInvoiceNumber] = Field(default=[], max_length=MAX_EINVOICES)


class VoucherEditIn(Body):
    payee: str = Field(min_length=1, max_length=200)
    payee_account: str = Field(default="", max_length=64)
    amount: Amount
    period: Period
    description: str = Field(default="", max_length=MAX_TEXT)
    lines: list[VoucherLineIn] = Field(min_length=1, max_length=MAX_LINES)
    einvoices: list[EInvoiceNumber] = Field(default=[], max_length=MAX_EINVOICES)


class SignIn(Body):
    on_behalf_of: Id | None = None  # the principal when signing as delegate (代理)


class RejectIn(Body):
    reason: str = Field(max_length=MAX_TEXT)
    on_behalf_of: Id | None = None


class ReverseIn(Body):
    period: Period
    reason: str = Field(default="", max_length=255)


class JournalLineIn(Body):
    account_code: str = Field(min_length=1, max_length=16)
    debit: LineAmount = 0
    credit: LineAmount = 0
    budget_line_id: Id | None = None


class ManualEntryIn(Body):
    agency_id: Id
    fiscal_year_id: Id
    period: Period
    description: str = Field(min_length=1, max_length=255)
    lines: list[JournalLineIn] = Field(min_length=2, max_length=MAX_LINES)


class PeriodCloseIn(Body):
    agency_id: Id
    fiscal_year_id: Id
    period: Period
