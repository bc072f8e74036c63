"""Request bodies of the JSON API (pydantic); money fields are Money (integer 元, floats refused)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tenant_app.api.money import Money


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CertifyIn(Body):
    budget_line_id: int
    amount: Money
    period: int | None = Field(default=None, ge=1, le=13)
    purpose: str = Field(default="", max_length=255)


class ReleaseIn(Body):
    amount: Money | None = None  # default: everything that remains


class AllotmentIn(Body):
    period: int
    amount: Money


class AmendmentIn(Body):
    amount: Money  # signed: a cut is negative
    reason: str = Field(min_length=1, max_length=1000)


class TransferIn(Body):
    from_line_id: int
    to_line_id: int
    amount: Money
    reason: str = Field(min_length=1, max_length=1000)


class VoucherLineIn(Body):
    budget_line_id: int
    amount: Money
    description: str = Field(default="", max_length=255)


class VoucherIn(Body):
    agency_id: int
    certification_id: int | None = None
    payee: str = Field(min_length=1, max_length=200)
    payee_account: str = Field(default="", max_length=64)
    amount: Money
    period: int
    description: str = ""
    lines: list[VoucherLineIn] = Field(min_length=1)
    einvoices: list[str] = []


class VoucherEditIn(Body):
    payee: str = Field(min_length=1, max_length=200)
    payee_account: str = Field(default="", max_length=64)
    amount: Money
    period: int
    description: str = ""
    lines: list[VoucherLineIn] = Field(min_length=1)
    einvoices: list[str] = []


class SignIn(Body):
    on_behalf_of: int | None = None  # the principal when signing as delegate (代理)


class RejectIn(Body):
    reason: str
    on_behalf_of: int | None = None


class ReverseIn(Body):
    period: int
    reason: str = ""


class JournalLineIn(Body):
    account_code: str
    debit: Money = 0
    credit: Money = 0
    budget_line_id: int | None = None


class ManualEntryIn(Body):
    agency_id: int
    fiscal_year_id: int
    period: int
    description: str = Field(min_length=1, max_length=255)
    lines: list[JournalLineIn] = Field(min_length=2)


class PeriodCloseIn(Body):
    agency_id: int
    fiscal_year_id: int
    period: int
