"""Budget, allotment (分配預算), amendment (追加減預算) and transfer (流用) rules."""

from __future__ import annotations

from dataclasses import dataclass

from tenant_app.rules.errors import ErrorCode, RuleError, fmt

FIRST_PERIOD = 1
LAST_PERIOD = 13  # 13 = year-end adjustments
# 流用: at most this share of a line's budget may flow out of it, or into it, in a year.
TRANSFER_LIMIT_PERCENT = 20


@dataclass(frozen=True)
class LineState:
    """A budget line's identity and running totals as plain data."""

    id: int
    agency_id: int
    fiscal_year_id: int
    programme_code: str
    object_code: str
    is_personnel: bool
    budget: int
    amended: int = 0
    transferred_in: int = 0
    transferred_out: int = 0
    allotted: int = 0
    allotted_pending: int = 0
    certified: int = 0
    paid_on_certified: int = 0
    paid_direct: int = 0
    released: int = 0

    @property
    def authorised(self) -> int:
        return self.budget + self.amended + self.transferred_in - self.transferred_out

    @property
    def available(self) -> int:
        return self.allotted - self.certified - self.paid_direct + self.released

    @property
    def unallotted(self) -> int:
        return self.authorised - self.allotted - self.allotted_pending


def check_period(period: int) -> list[RuleError]:
    if FIRST_PERIOD <= period <= LAST_PERIOD:
        return []
    return [RuleError(ErrorCode.PERIOD_OUT_OF_RANGE, f"期別 {period} 不在 1 至 13 之間",
                      f"period {period} is outside 1..13", {"period": period})]


def check_positive(amount: int, what: str = "amount") -> list[RuleError]:
    if amount > 0:
        return []
    return [RuleError(ErrorCode.MONEY_NOT_POSITIVE, f"金額須大於零（{what}：{amount}）",
                      f"{what} must be greater than zero, got {amount}", {what: amount})]


def check_allotment(line: LineState, period: int, amount: int) -> list[RuleError]:
    """An allotment only within the line's authorised budget."""
    errors = check_period(period) + check_positive(amount)
    if amount > line.unallotted:
        errors.append(RuleError(
            ErrorCode.ALLOTMENT_OVER_BUDGET,
            f"分配數 {fmt(amount)} 元超過尚未分配之預算 {fmt(line.unallotted)} 元",
            f"allotment of {amount} exceeds the unallotted budget of {line.unallotted}",
            {"budget_line_id": line.id, "amount": amount, "unallotted": line.unallotted},
        ))
    return errors


def check_amendment(line: LineState, amount: int) -> list[RuleError]:
    """A cut (negative amendment) may not take the budget below what is already allotted."""
    if amount == 0:
        return check_positive(amount)
    if amount < 0 and -amount > line.unallotted:
        return [RuleError(
            ErrorCode.AMENDMENT_BELOW_ALLOTTED,
            f"追減 {fmt(-amount)} 元將使預算低於已分配數（尚未分配 {fmt(line.unallotted)} 元）",
            f"a cut of {-amount} would take the budget below the allotted amount "
            f"(unallotted {line.unallotted})",
            {"budget_line_id": line.id, "amount": amount, "unallotted": line.unallotted},
        )]
    return []


def transfer_limit(line: LineState) -> int:
    """The most that may flow out of, or into, this line: 20% of its (amended) budget, floored."""
    return (line.budget + line.amended) * TRANSFER_LIMIT_PERCENT // 100


def check_transfer(source: LineState, target: LineState, amount: int) -> list[RuleError]:
    """流用: same programme, never into personnel costs, ≤ 20% out and in, covered by the source's balance.

    A transfer moves budget authority together with its allotment, so the source must have that much
    available (not yet certified or paid).
    """
    errors = check_positive(amount)
    entry = {"from_line_id": source.id, "to_line_id": target.id, "amount": amount}
    if source.id == target.id:
        errors.append(RuleError(ErrorCode.TRANSFER_SAME_LINE, "流出與流入不可為同一預算科目",
                                "a transfer needs two different budget lines", entry))
    if (source.agency_id, source.fiscal_year_id, source.programme_code) != (
        target.agency_id, target.fiscal_year_id, target.programme_code
    ):
        errors.append(RuleError(ErrorCode.TRANSFER_OTHER_PROGRAMME, "流用僅限同一機關、同一年度之同一計畫內",
                                "transfers are only allowed inside one programme of one agency and year",
                                entry))
    if target.is_personnel:
        errors.append(RuleError(ErrorCode.TRANSFER_INTO_PERSONNEL,
                                f"不得流入用人經費（{target.object_code}）",
                                f"nothing may flow into personnel costs ({target.object_code})", entry))
    out_after = source.transferred_out + amount
    if out_after > transfer_limit(source):
        errors.append(RuleError(
            ErrorCode.TRANSFER_OVER_LIMIT_OUT,
            f"流出累計 {fmt(out_after)} 元超過該科目預算 20%（{fmt(transfer_limit(source))} 元）",
            f"transfers out would total {out_after}, over 20% of the line's budget "
            f"({transfer_limit(source)})",
            {**entry, "limit": transfer_limit(source), "total_after": out_after},
        ))
    in_after = target.transferred_in + amount
    if in_after > transfer_limit(target):
        errors.append(RuleError(
            ErrorCode.TRANSFER_OVER_LIMIT_IN,
            f"流入累計 {fmt(in_after)} 元超過該科目預算 20%（{fmt(transfer_limit(target))} 元）",
            f"transfers in would total {in_after}, over 20% of the line's budget ({transfer_limit(target)})",
            {**entry, "limit": transfer_limit(target), "total_after": in_after},
        ))
    if amount > source.available:
        errors.append(RuleError(
            ErrorCode.TRANSFER_OVER_AVAILABLE,
            f"流出 {fmt(amount)} 元超過可用餘額 {fmt(source.available)} 元",
            f"transfer of {amount} exceeds the source's available balance of {source.available}",
            {**entry, "available": source.available},
        ))
    return errors


def period_reached(fiscal_year: int, period: int, today_year: int, today_month: int) -> bool:
    """Has the allotment period's month arrived? Period 13 (year-end adjustments) once the year is over."""
    if fiscal_year != today_year:
        return fiscal_year < today_year
    return period <= today_month
