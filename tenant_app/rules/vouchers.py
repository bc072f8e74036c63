"""Payment voucher rules: lines, e-invoices (電子發票), what may be edited and what may be paid."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from tenant_app.enums import VoucherStatus
from tenant_app.rules.errors import ErrorCode, RuleError, fmt

# Two uppercase letters (字軌) and eight digits, e.g. AB12345678.
EINVOICE_PATTERN = re.compile(r"[A-Z]{2}[0-9]{8}")

EDITABLE_STATUSES = frozenset({VoucherStatus.DRAFT, VoucherStatus.REJECTED, VoucherStatus.IN_APPROVAL})


@dataclass(frozen=True)
class VoucherLineData:
    budget_line_id: int
    amount: int
    description: str = ""


@dataclass(frozen=True)
class CertificationState:
    id: int
    budget_line_id: int
    amount: int
    paid_amount: int
    released_amount: int
    active: bool

    @property
    def remaining(self) -> int:
        return self.amount - self.paid_amount - self.released_amount


def check_einvoice_format(numbers: Sequence[str]) -> list[RuleError]:
    return [
        RuleError(ErrorCode.EINVOICE_FORMAT,
                  f"電子發票號碼格式錯誤：{number}（應為兩個大寫英文字母加八位數字）",
                  f"e-invoice number {number!r} is not two uppercase letters and eight digits",
                  {"einvoice": number})
        for number in numbers if not EINVOICE_PATTERN.fullmatch(number)
    ]


def check_einvoice_unique(numbers: Sequence[str], already_used: Collection[str]) -> list[RuleError]:
    """Each number at most once: not twice on this voucher, not on any other voucher."""
    errors: list[RuleError] = []
    seen: set[str] = set()
    for number in numbers:
        if number in seen or number in already_used:
            errors.append(RuleError(ErrorCode.EINVOICE_DUPLICATE, f"電子發票 {number} 已被使用",
                                    f"e-invoice {number} has already been used", {"einvoice": number}))
        seen.add(number)
    return errors


def check_lines(amount: int, lines: Sequence[VoucherLineData]) -> list[RuleError]:
    errors: list[RuleError] = []
    if not lines or any(line.amount <= 0 for line in lines):
        errors.append(RuleError(ErrorCode.MONEY_NOT_POSITIVE, "憑單須至少一筆明細且各筆金額大於零",
                                "a voucher needs at least one line and every line amount must be positive"))
    total = sum(line.amount for line in lines)
    if total != amount:
        errors.append(RuleError(ErrorCode.VOUCHER_LINES_MISMATCH,
                                f"明細合計 {fmt(total)} 元與憑單金額 {fmt(amount)} 元不符",
                                f"lines total {total} but the voucher amount is {amount}",
                                {"amount": amount, "lines_total": total}))
    return errors


def check_against_certification(
    certification: CertificationState, amount: int, lines: Sequence[VoucherLineData]
) -> list[RuleError]:
    """A voucher against a 簽證 spends that certification's line, up to what is left of it."""
    errors: list[RuleError] = []
    if not certification.active:
        errors.append(RuleError(ErrorCode.CERTIFICATION_NOT_ACTIVE, "此簽證已結清，不可再支付",
                                "this certification is settled and cannot be paid against",
                                {"certification_id": certification.id}))
    if any(line.budget_line_id != certification.budget_line_id for line in lines):
        errors.append(RuleError(ErrorCode.VOUCHER_LINE_OTHER_BUDGET_LINE, "明細之預算科目須與簽證相同",
                                "every line must be on the certification's budget line",
                                {"certification_id": certification.id,
                                 "budget_line_id": certification.budget_line_id}))
    if amount > certification.remaining:
        errors.append(RuleError(ErrorCode.CERTIFICATION_OVER_REMAINING,
                                f"支付 {fmt(amount)} 元超過簽證餘額 {fmt(certification.remaining)} 元",
                                f"payment of {amount} exceeds the certification's remaining "
                                f"{certification.remaining}",
                                {"certification_id": certification.id, "remaining": certification.remaining,
                                 "requested": amount}))
    return errors


def check_editable(status: VoucherStatus) -> list[RuleError]:
    if status in EDITABLE_STATUSES:
        return []
    return [RuleError(ErrorCode.VOUCHER_NOT_EDITABLE, f"憑單狀態為 {status.value}，不可修改",
                      f"a voucher in status {status.value} cannot be changed", {"status": status.value})]


def check_payable(status: VoucherStatus, chain_errors: Sequence[RuleError]) -> list[RuleError]:
    """Paid only once approved (or batched to the treasury) and with a chain that verifies now."""
    errors: list[RuleError] = []
    if status not in (VoucherStatus.APPROVED, VoucherStatus.BATCHED):
        errors.append(RuleError(ErrorCode.VOUCHER_NOT_APPROVED,
                                f"憑單狀態為 {status.value}，尚未核准，不可付款",
                                f"a voucher in status {status.value} is not approved and cannot be paid",
                                {"status": status.value}))
    return errors + list(chain_errors)
