"""Read-only lookups the pages share: the agency's budget lines with their balances, names of users.

Balances come from the services' own LineState (available = allotted − certified − paid directly +
released), never recomputed here.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from tenant_app.models import BudgetLine, User
from tenant_app.rules.budget import LineState
from tenant_app.services.balances import state_of


@dataclass(frozen=True)
class LineView:
    line: BudgetLine
    state: LineState

    @property
    def label(self) -> str:
        line = self.line
        return f"{line.programme_code} {line.programme_name}／{line.sub_item}／{line.object_name}"


def budget_lines(db: Session, agency_id: int, fiscal_year_id: int) -> list[LineView]:
    lines = db.scalars(
        select(BudgetLine)
        .where(BudgetLine.agency_id == agency_id, BudgetLine.fiscal_year_id == fiscal_year_id)
        .order_by(BudgetLine.programme_code, BudgetLine.object_code, BudgetLine.id)
    ).all()
    return [LineView(line, state_of(line)) for line in lines]


def user_names(db: Session, ids: set[int | None]) -> dict[int, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return {u.id: u.display_name for u in db.scalars(select(User).where(User.id.in_(wanted)))}
