"""Conditional balance updates: the only way the services change a budget line's available balance.

Each is ONE UPDATE whose WHERE clause re-checks the balance, verified by its row count; the
CHECK constraint on budget_line stays behind it as the last line of defence.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, select, update
from sqlalchemy.orm import Session

from tenant_app.models import BudgetLine
from tenant_app.rules.budget import LineState


def available_expr() -> ColumnElement[int]:
    return BudgetLine.allotted - BudgetLine.certified - BudgetLine.paid_direct + BudgetLine.released


def spend_available(db: Connection | Session, budget_line_id: int, amount: int, **increments: Any) -> bool:
    """Add `amount` to the given running totals only if the line has that much available.

    `increments` name the columns that consume availability (certified, paid_direct) or the
    allotment moved out by a transfer; True when the row was updated.
    """
    values = {column: getattr(BudgetLine, column) + delta for column, delta in increments.items()}
    result = db.execute(
        update(BudgetLine)
        .where(BudgetLine.id == budget_line_id, available_expr() >= amount)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def add_totals(db: Connection | Session, budget_line_id: int, **increments: int) -> None:
    """Unconditional increments that cannot lower the available balance (e.g. released, allotted)."""
    values = {column: getattr(BudgetLine, column) + delta for column, delta in increments.items()}
    db.execute(update(BudgetLine).where(BudgetLine.id == budget_line_id).values(**values)
               .execution_options(synchronize_session=False))


def locked_line(session: Session, budget_line_id: int) -> BudgetLine | None:
    """The line, re-read and row-locked on PostgreSQL (SQLite's IMMEDIATE transaction already locks)."""
    query = (select(BudgetLine).where(BudgetLine.id == budget_line_id).with_for_update()
             .execution_options(populate_existing=True))
    return session.execute(query).scalar_one_or_none()


def state_of(line: BudgetLine) -> LineState:
    return LineState(**{name: getattr(line, name) for name in LineState.__dataclass_fields__})
