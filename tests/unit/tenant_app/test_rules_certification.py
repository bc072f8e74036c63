"""簽證 rules: available balance checked in arrival order, refusals state the balance seen."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tenant_app.rules.certification import check_certification, decide_in_order
from tenant_app.rules.errors import ErrorCode


def test_certification_within_available_passes_and_beyond_is_explained() -> None:
    assert check_certification(7, 1_000, 1_000) == []
    (error,) = check_certification(7, 999, 1_000)
    assert error.code is ErrorCode.INSUFFICIENT_BALANCE
    assert error.entry == {"budget_line_id": 7, "available": 999, "requested": 1_000}
    assert "999" in error.message_zh and "1,000" in error.message_zh
    assert "999 available" in error.message_en


def test_decide_in_order_skips_a_large_request_and_still_fits_a_later_small_one() -> None:
    decisions = decide_in_order(100, [60, 50, 40, 1])
    assert [d.accepted for d in decisions] == [True, False, True, False]
    assert [d.balance_seen for d in decisions] == [100, 40, 40, 0]


def test_decide_in_order_refuses_zero_and_negative_amounts() -> None:
    assert [d.accepted for d in decide_in_order(100, [0, -5, 5])] == [False, False, True]


@given(st.integers(min_value=0, max_value=10_000), st.lists(st.integers(min_value=-5, max_value=3_000)))
def test_decide_in_order_never_commits_more_than_available(available: int, amounts: list[int]) -> None:
    decisions = decide_in_order(available, amounts)
    accepted = [a for a, d in zip(amounts, decisions, strict=True) if d.accepted]
    assert sum(accepted) <= available
    for amount, decision in zip(amounts, decisions, strict=True):
        # Each refusal is explained by the balance at its turn.
        assert decision.accepted == (0 < amount <= decision.balance_seen)
