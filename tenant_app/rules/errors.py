"""The refusal record every rule returns: a stable code, a zh-TW message, an English message, the entry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    # money at the boundary
    MONEY_NOT_INTEGER = "money_not_integer"
    MONEY_NOT_POSITIVE = "money_not_positive"
    MONEY_OUT_OF_RANGE = "money_out_of_range"
    # numbers and requests at the edge (tenant_app/domains.py, api/limits.py)
    NOT_INTEGER = "not_integer"
    ID_OUT_OF_RANGE = "id_out_of_range"
    NUMBER_OUT_OF_RANGE = "number_out_of_range"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    JSON_TOO_DEEP = "json_too_deep"
    MALFORMED_JSON = "malformed_json"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    # what the database refused (a constraint behind the services' own checks)
    REFERENCE_NOT_FOUND = "reference_not_found"
    DUPLICATE = "duplicate"
    CONSTRAINT_VIOLATED = "constraint_violated"
    # budget, allotment, transfer
    ALLOTMENT_OVER_BUDGET = "allotment_over_budget"
    PERIOD_OUT_OF_RANGE = "period_out_of_range"
    AMENDMENT_BELOW_ALLOTTED = "amendment_below_allotted"
    TRANSFER_OVER_LIMIT_OUT = "transfer_over_limit_out"
    TRANSFER_OVER_LIMIT_IN = "transfer_over_limit_in"
    TRANSFER_INTO_PERSONNEL = "transfer_into_personnel"
    TRANSFER_OTHER_PROGRAMME = "transfer_other_programme"
    TRANSFER_SAME_LINE = "transfer_same_line"
    TRANSFER_OVER_AVAILABLE = "transfer_over_available"
    # certification and payment
    INSUFFICIENT_BALANCE = "insufficient_balance"
    CERTIFICATION_OVER_REMAINING = "certification_over_remaining"
    CERTIFICATION_NOT_ACTIVE = "certification_not_active"
    VOUCHER_LINES_MISMATCH = "voucher_lines_mismatch"
    VOUCHER_LINE_OTHER_BUDGET_LINE = "voucher_line_other_budget_line"
    VOUCHER_NOT_EDITABLE = "voucher_not_editable"
    VOUCHER_NOT_APPROVED = "voucher_not_approved"
    SIGNATURES_INVALID = "signatures_invalid"
    EINVOICE_FORMAT = "einvoice_format"
    EINVOICE_DUPLICATE = "einvoice_duplicate"
    # journal and periods
    JOURNAL_UNBALANCED = "journal_unbalanced"
    JOURNAL_EMPTY = "journal_empty"
    JOURNAL_LINE_ONE_SIDED = "journal_line_one_sided"
    JOURNAL_IMMUTABLE = "journal_immutable"
    JOURNAL_ALREADY_REVERSED = "journal_already_reversed"
    JOURNAL_LINE_OTHER_AGENCY = "journal_line_other_agency"
    PERIOD_CLOSED = "period_closed"
    PERIOD_ALREADY_CLOSED = "period_already_closed"
    PERIOD_EARLIER_OPEN = "period_earlier_open"
    NUMBERS_NOT_GAPLESS = "numbers_not_gapless"
    # lookups and access
    NOT_FOUND = "not_found"
    FORBIDDEN_AGENCY = "forbidden_agency"
    FORBIDDEN_ROLE = "forbidden_role"
    UNAUTHENTICATED = "unauthenticated"
    INVALID_INPUT = "invalid_input"


@dataclass(frozen=True)
class RuleError:
    code: ErrorCode
    message_zh: str
    message_en: str
    # The offending entry as plain data (ids, amounts, balances), shown to the user and in the API.
    entry: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code.value, "message": self.message_zh, "message_en": self.message_en,
                "detail": dict(self.entry)}


class RuleViolationError(Exception):
    """Raised by a service when a rule refused the operation; nothing has been written."""

    def __init__(self, errors: list[RuleError], *, status: int = 422) -> None:
        super().__init__("; ".join(e.message_en for e in errors))
        self.errors = errors
        self.status = status


def refuse_if(errors: list[RuleError], *, status: int = 422) -> None:
    if errors:
        raise RuleViolationError(errors, status=status)


def fmt(amount: int) -> str:
    """Thousands separators, as users read amounts."""
    return f"{amount:,}"
