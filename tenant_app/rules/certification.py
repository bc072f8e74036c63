"""簽證 rules: an encumbrance only within the available balance, decided in arrival order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tenant_app.rules.errors import ErrorCode, RuleError, fmt


def insufficient_balance(budget_line_id: int, available: int, amount: int) -> RuleError:
    return RuleError(
        ErrorCode.INSUFFICIENT_BALANCE,
        f"可用餘額不足：餘額 {fmt(available)} 元，申請 {fmt(amount)} 元",
        f"insufficient available balance: {available} available, {amount} requested",
        {"budget_line_id": budget_line_id, "available": available, "requested": amount},
    )


def check_certification(budget_line_id: int, available: int, amount: int) -> list[RuleError]:
    if amount <= available:
        return []
    return [insufficient_balance(budget_line_id, available, amount)]


@dataclass(frozen=True)
class Decision:
    accepted: bool
    balance_seen: int  # the available balance when this request's turn came


def decide_in_order(available: int, amounts: Sequence[int]) -> list[Decision]:
    """The writer's batch decision: each request, in arrival order, against what the earlier left.

    Equivalent to running the conditional UPDATE once per request; a refused request does not
    consume balance, so a later smaller request may still fit.
    """
    decisions: list[Decision] = []
    for amount in amounts:
        if 0 < amount <= available:
            decisions.append(Decision(True, available))
            available -= amount
        else:
            decisions.append(Decision(False, available))
    return decisions
