"""Journal (傳票) rules: balanced, immutable once posted, reversed once, open periods, gapless numbers."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from tenant_app.enums import EventKind
from tenant_app.rules.errors import ErrorCode, RuleError, fmt

FIRST_PERIOD, LAST_PERIOD = 1, 13  # as rules.budget; 13 = year-end adjustments


@dataclass(frozen=True)
class JournalLineData:
    account_code: str
    debit: int = 0
    credit: int = 0
    budget_line_id: int | None = None


@dataclass(frozen=True)
class PostingRuleData:
    event_kind: EventKind
    debit_account: str
    credit_account: str


def lines_for_event(rule: PostingRuleData, amount: int, budget_line_id: int | None) -> list[JournalLineData]:
    """The two lines an event posts, by its rule (data): debit one account, credit the other."""
    return [JournalLineData(rule.debit_account, debit=amount, budget_line_id=budget_line_id),
            JournalLineData(rule.credit_account, credit=amount, budget_line_id=budget_line_id)]


def reversed_lines(lines: Sequence[JournalLineData]) -> list[JournalLineData]:
    """A reversal swaps debit and credit on every line, so original + reversal nets to zero."""
    return [JournalLineData(line.account_code, debit=line.credit, credit=line.debit,
                            budget_line_id=line.budget_line_id) for line in lines]


def check_balanced(lines: Sequence[JournalLineData]) -> list[RuleError]:
    errors: list[RuleError] = []
    if not lines:
        errors.append(RuleError(ErrorCode.JOURNAL_EMPTY, "傳票至少須有一筆分錄",
                                "a journal entry needs lines"))
    for line in lines:
        if line.debit < 0 or line.credit < 0 or (line.debit == 0) == (line.credit == 0):
            errors.append(RuleError(ErrorCode.JOURNAL_LINE_ONE_SIDED,
                                    f"科目 {line.account_code} 之分錄須只有借方或貸方且金額大於零",
                                    f"line on {line.account_code} must have exactly one positive side",
                                    {"account_code": line.account_code, "debit": line.debit,
                                     "credit": line.credit}))
    debit = sum(line.debit for line in lines)
    credit = sum(line.credit for line in lines)
    if debit != credit:
        errors.append(RuleError(ErrorCode.JOURNAL_UNBALANCED,
                                f"借貸不平衡：借方 {fmt(debit)}，貸方 {fmt(credit)}",
                                f"debits {debit} do not equal credits {credit}",
                                {"debit": debit, "credit": credit}))
    return errors


def check_immutable(entry_id: int) -> list[RuleError]:
    """Any attempt to change a posted entry is refused: corrections are reversals."""
    return [RuleError(ErrorCode.JOURNAL_IMMUTABLE, "已過帳之傳票不可修改，請以沖銷更正",
                      "posted journal entries cannot be changed; post a reversal instead",
                      {"journal_entry_id": entry_id})]


def check_reversible(entry_id: int, already_reversed_by: int | None, is_reversal: bool) -> list[RuleError]:
    if already_reversed_by is not None:
        return [RuleError(ErrorCode.JOURNAL_ALREADY_REVERSED, "此傳票已沖銷",
                          "this entry has already been reversed",
                          {"journal_entry_id": entry_id, "reversed_by": already_reversed_by})]
    if is_reversal:
        return [RuleError(ErrorCode.JOURNAL_ALREADY_REVERSED, "沖銷傳票不可再沖銷",
                          "a reversal cannot itself be reversed; post a new entry",
                          {"journal_entry_id": entry_id})]
    return []


def check_period_open(period: int, closed_periods: Collection[int]) -> list[RuleError]:
    if period in closed_periods:
        return [RuleError(ErrorCode.PERIOD_CLOSED, f"第 {period} 期已結帳，不可再記帳",
                          f"period {period} is closed", {"period": period})]
    return []


def check_close(period: int, closed_periods: Collection[int]) -> list[RuleError]:
    """月結 in order: a period closes once, and only after every earlier period.

    A period outside 1..13 is refused first, so the scan of earlier periods is at most 12 long.
    """
    if not FIRST_PERIOD <= period <= LAST_PERIOD:
        return [RuleError(ErrorCode.PERIOD_OUT_OF_RANGE, f"期別須在 {FIRST_PERIOD} 至 {LAST_PERIOD} 之間",
                          f"period must be between {FIRST_PERIOD} and {LAST_PERIOD}", {"period": period})]
    if period in closed_periods:
        return [RuleError(ErrorCode.PERIOD_ALREADY_CLOSED, f"第 {period} 期已結帳",
                          f"period {period} is already closed",
                          {"period": period})]
    open_before = [p for p in range(1, period) if p not in closed_periods]
    if open_before:
        return [RuleError(ErrorCode.PERIOD_EARLIER_OPEN, f"第 {open_before[0]} 期尚未結帳，請依序結帳",
                          f"period {open_before[0]} is still open; close periods in order",
                          {"period": period, "open": open_before})]
    return []


def check_line_references(lines: Sequence[JournalLineData], known_accounts: Collection[str],
                          line_agencies: Mapping[int, tuple[int, int]], agency_id: int,
                          fiscal_year_id: int) -> list[RuleError]:
    """Every account exists, and every budget line named is one of this agency's, in this year.

    `line_agencies` maps the budget lines that exist to their (agency, fiscal year).
    """
    errors: list[RuleError] = []
    for line in lines:
        if line.account_code not in known_accounts:
            errors.append(RuleError(ErrorCode.REFERENCE_NOT_FOUND, f"查無會計科目 {line.account_code}",
                                    f"account {line.account_code} does not exist",
                                    {"account_code": line.account_code}))
        if line.budget_line_id is None:
            continue
        owner = line_agencies.get(line.budget_line_id)
        if owner is None:
            errors.append(RuleError(ErrorCode.REFERENCE_NOT_FOUND, f"查無預算科目 {line.budget_line_id}",
                                    f"budget line {line.budget_line_id} does not exist",
                                    {"budget_line_id": line.budget_line_id}))
        elif owner != (agency_id, fiscal_year_id):
            errors.append(RuleError(ErrorCode.JOURNAL_LINE_OTHER_AGENCY,
                                    f"預算科目 {line.budget_line_id} 不屬於本機關本年度，不可記入本傳票",
                                    f"budget line {line.budget_line_id} belongs to another agency or year",
                                    {"budget_line_id": line.budget_line_id, "agency_id": agency_id,
                                     "fiscal_year_id": fiscal_year_id}))
    return errors


def check_gapless(numbers: Sequence[int]) -> list[RuleError]:
    """Numbers issued in one sequence are exactly 1..n."""
    ordered = sorted(numbers)
    if ordered == list(range(1, len(ordered) + 1)):
        return []
    missing = sorted(set(range(1, (ordered[-1] if ordered else 0) + 1)) - set(ordered))
    duplicates = sorted({n for n in ordered if ordered.count(n) > 1})
    return [RuleError(ErrorCode.NUMBERS_NOT_GAPLESS, "編號不連續或重複", "numbers have gaps or duplicates",
                      {"missing": missing[:20], "duplicates": duplicates[:20]})]
