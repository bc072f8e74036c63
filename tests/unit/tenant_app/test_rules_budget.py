"""Budget, allotment, amendment and transfer (流用) rules as pure functions."""

from __future__ import annotations

from dataclasses import replace

from tenant_app.rules.budget import (
    LineState,
    check_allotment,
    check_amendment,
    check_transfer,
    period_reached,
    transfer_limit,
)
from tenant_app.rules.errors import ErrorCode


def line(id: int = 1, **changes: object) -> LineState:
    base = LineState(id=id, agency_id=1, fiscal_year_id=1, programme_code="01", object_code="2000",
                     is_personnel=False, budget=100_000, allotted=50_000)
    return replace(base, **changes)  # type: ignore[arg-type]


def codes(errors: list) -> set[ErrorCode]:
    return {e.code for e in errors}


def test_allotment_within_budget_passes_and_over_budget_is_refused_with_amounts() -> None:
    state = line(allotted=60_000, allotted_pending=30_000)  # 10 000 left to allot
    assert check_allotment(state, 5, 10_000) == []
    errors = check_allotment(state, 5, 10_001)
    assert codes(errors) == {ErrorCode.ALLOTMENT_OVER_BUDGET}
    assert errors[0].entry["unallotted"] == 10_000
    assert "10,001" in errors[0].message_zh


def test_allotment_period_must_be_1_to_13_and_amount_positive() -> None:
    assert codes(check_allotment(line(), 0, 10)) == {ErrorCode.PERIOD_OUT_OF_RANGE}
    assert codes(check_allotment(line(), 14, 10)) == {ErrorCode.PERIOD_OUT_OF_RANGE}
    assert check_allotment(line(), 13, 10) == []
    assert codes(check_allotment(line(), 3, 0)) == {ErrorCode.MONEY_NOT_POSITIVE}


def test_amendment_cut_cannot_go_below_allotted() -> None:
    state = line(allotted=90_000)  # unallotted 10 000
    assert check_amendment(state, 5_000_000) == []
    assert check_amendment(state, -10_000) == []
    assert codes(check_amendment(state, -10_001)) == {ErrorCode.AMENDMENT_BELOW_ALLOTTED}
    assert codes(check_amendment(state, 0)) == {ErrorCode.MONEY_NOT_POSITIVE}


def test_transfer_limit_is_twenty_percent_of_the_amended_budget() -> None:
    assert transfer_limit(line(budget=100_000)) == 20_000
    assert transfer_limit(line(budget=100_000, amended=-50_000)) == 10_000
    assert transfer_limit(line(budget=99)) == 19  # floored: never more than 20%


def test_transfer_within_rules_passes() -> None:
    assert check_transfer(line(1), line(2, object_code="3000"), 20_000) == []


def test_transfer_out_over_twenty_percent_counts_earlier_transfers() -> None:
    source = line(1, transferred_out=15_000)
    errors = check_transfer(source, line(2), 5_001)
    assert codes(errors) == {ErrorCode.TRANSFER_OVER_LIMIT_OUT}
    assert errors[0].entry["limit"] == 20_000 and errors[0].entry["total_after"] == 20_001


def test_transfer_in_over_twenty_percent_of_the_target_is_refused() -> None:
    target = line(2, budget=10_000, allotted=0)  # may receive at most 2 000
    assert codes(check_transfer(line(1), target, 2_001)) == {ErrorCode.TRANSFER_OVER_LIMIT_IN}
    assert check_transfer(line(1), target, 2_000) == []


def test_nothing_flows_into_personnel_costs() -> None:
    errors = check_transfer(line(1), line(2, object_code="1000", is_personnel=True), 100)
    assert codes(errors) == {ErrorCode.TRANSFER_INTO_PERSONNEL}
    assert "用人經費" in errors[0].message_zh
    # Out of personnel is allowed (only inflow is forbidden).
    assert check_transfer(line(1, is_personnel=True), line(2), 100) == []


def test_transfer_only_inside_one_programme_and_between_two_lines() -> None:
    assert codes(check_transfer(line(1), line(2, programme_code="02"), 100)) == {
        ErrorCode.TRANSFER_OTHER_PROGRAMME}
    assert codes(check_transfer(line(1), line(2, agency_id=2), 100)) == {ErrorCode.TRANSFER_OTHER_PROGRAMME}
    assert ErrorCode.TRANSFER_SAME_LINE in codes(check_transfer(line(1), line(1), 100))


def test_transfer_needs_the_source_balance_not_yet_certified() -> None:
    source = line(1, allotted=50_000, certified=45_000)  # available 5 000
    errors = check_transfer(source, line(2), 5_001)
    assert codes(errors) == {ErrorCode.TRANSFER_OVER_AVAILABLE}
    assert errors[0].entry["available"] == 5_000


def test_several_violations_are_all_reported() -> None:
    errors = check_transfer(line(1, allotted=0), line(2, is_personnel=True, budget=1_000), 30_000)
    assert {ErrorCode.TRANSFER_INTO_PERSONNEL, ErrorCode.TRANSFER_OVER_LIMIT_OUT,
            ErrorCode.TRANSFER_OVER_LIMIT_IN, ErrorCode.TRANSFER_OVER_AVAILABLE} <= codes(errors)


def test_period_reached_by_calendar() -> None:
    assert period_reached(2026, 11, 2026, 11)
    assert not period_reached(2026, 12, 2026, 11)
    assert not period_reached(2026, 13, 2026, 12)  # year-end adjustments only after the year
    assert period_reached(2025, 13, 2026, 1)
    assert not period_reached(2027, 1, 2026, 12)
