"""Journal rules: balance, posting by rule data, reversal, periods, gapless numbers."""

from __future__ import annotations

from tenant_app.enums import EventKind
from tenant_app.rules.errors import ErrorCode
from tenant_app.rules.journal import (
    JournalLineData,
    PostingRuleData,
    check_balanced,
    check_close,
    check_gapless,
    check_immutable,
    check_period_open,
    check_reversible,
    lines_for_event,
    reversed_lines,
)


def codes(errors: list) -> list[ErrorCode]:
    return [e.code for e in errors]


def test_balanced_entry_passes_and_unbalanced_is_refused_with_totals() -> None:
    assert check_balanced([JournalLineData("5101", debit=100), JournalLineData("1101", credit=100)]) == []
    errors = check_balanced([JournalLineData("5101", debit=100), JournalLineData("1101", credit=90)])
    assert codes(errors) == [ErrorCode.JOURNAL_UNBALANCED]
    assert errors[0].entry == {"debit": 100, "credit": 90}


def test_each_line_has_exactly_one_positive_side_and_entries_are_not_empty() -> None:
    assert codes(check_balanced([])) == [ErrorCode.JOURNAL_EMPTY]
    both = [JournalLineData("5101", debit=5, credit=5)]
    assert ErrorCode.JOURNAL_LINE_ONE_SIDED in codes(check_balanced(both))
    neither = [JournalLineData("5101"), JournalLineData("1101")]
    assert ErrorCode.JOURNAL_LINE_ONE_SIDED in codes(check_balanced(neither))
    negative = [JournalLineData("5101", debit=-5), JournalLineData("1101", credit=-5)]
    assert ErrorCode.JOURNAL_LINE_ONE_SIDED in codes(check_balanced(negative))


def test_posting_rule_data_decides_the_accounts() -> None:
    rule = PostingRuleData(EventKind.CERTIFY, debit_account="9101", credit_account="9201")
    lines = lines_for_event(rule, 700, budget_line_id=4)
    assert lines == [JournalLineData("9101", debit=700, budget_line_id=4),
                     JournalLineData("9201", credit=700, budget_line_id=4)]
    assert check_balanced(lines) == []


def test_reversal_swaps_sides_and_nets_to_zero() -> None:
    lines = [JournalLineData("5101", debit=100, budget_line_id=1), JournalLineData("1101", credit=100)]
    reversal = reversed_lines(lines)
    assert reversal == [JournalLineData("5101", credit=100, budget_line_id=1),
                        JournalLineData("1101", debit=100)]
    net: dict[str, int] = {}
    for line in lines + reversal:
        net[line.account_code] = net.get(line.account_code, 0) + line.debit - line.credit
    assert set(net.values()) == {0}


def test_an_entry_is_reversed_once_and_a_reversal_is_not_reversed() -> None:
    assert check_reversible(1, None, is_reversal=False) == []
    assert codes(check_reversible(1, 9, is_reversal=False)) == [ErrorCode.JOURNAL_ALREADY_REVERSED]
    assert codes(check_reversible(9, None, is_reversal=True)) == [ErrorCode.JOURNAL_ALREADY_REVERSED]


def test_posted_entries_are_immutable() -> None:
    (error,) = check_immutable(42)
    assert error.code is ErrorCode.JOURNAL_IMMUTABLE and error.entry == {"journal_entry_id": 42}
    assert "沖銷" in error.message_zh


def test_closed_period_refuses_postings() -> None:
    assert check_period_open(3, {1, 2}) == []
    assert codes(check_period_open(2, {1, 2})) == [ErrorCode.PERIOD_CLOSED]


def test_periods_close_once_and_in_order() -> None:
    assert check_close(1, set()) == []
    assert check_close(3, {1, 2}) == []
    assert codes(check_close(2, {1, 2})) == [ErrorCode.PERIOD_ALREADY_CLOSED]
    errors = check_close(4, {1, 3})
    assert codes(errors) == [ErrorCode.PERIOD_EARLIER_OPEN] and errors[0].entry["open"] == [2]


def test_gapless_numbers() -> None:
    assert check_gapless([]) == []
    assert check_gapless([3, 1, 2]) == []
    (gap,) = check_gapless([1, 2, 4])
    assert gap.code is ErrorCode.NUMBERS_NOT_GAPLESS and gap.entry["missing"] == [3]
    (dup,) = check_gapless([1, 2, 2])
    assert dup.entry["duplicates"] == [2]
