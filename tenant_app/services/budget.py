"""Budget documents: allotments (分配預算), amendments (追加減預算) and transfers (流用)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from tenant_app.enums import FiscalYearStatus, NumberKind
from tenant_app.models import Allotment, Amendment, BudgetLine, FiscalYear, Transfer
from tenant_app.rules.budget import check_allotment, check_amendment, check_transfer, period_reached
from tenant_app.rules.errors import ErrorCode, RuleError, RuleViolationError, refuse_if
from tenant_app.services.balances import add_totals, locked_line, spend_available, state_of
from tenant_app.services.certification import today
from tenant_app.services.numbering import issue_numbers


def _line(session: Session, budget_line_id: int) -> BudgetLine:
    line = locked_line(session, budget_line_id)
    if line is None:
        raise RuleViolationError([RuleError(ErrorCode.NOT_FOUND, f"查無預算科目 {budget_line_id}",
                                            f"budget line {budget_line_id} does not exist",
                                            {"budget_line_id": budget_line_id})], status=404)
    return line


def allot(session: Session, budget_line_id: int, period: int, amount: int, *, user_id: int | None = None,
          on: dt.date | None = None) -> Allotment:
    """Record an allotment; it counts as allotted to date once its month has arrived."""
    line = _line(session, budget_line_id)
    refuse_if(check_allotment(state_of(line), period, amount))
    day = on or today()
    reached = period_reached(line.fiscal_year.year, period, day.year, day.month)
    if reached:
        add_totals(session, line.id, allotted=amount)
    else:
        add_totals(session, line.id, allotted_pending=amount)
    allotment = Allotment(budget_line_id=line.id, period=period, amount=amount, applied=reached,
                          created_by_id=user_id)
    session.add(allotment)
    session.flush()
    return allotment


def apply_due_allotments(session: Session, fiscal_year_id: int, *, on: dt.date | None = None) -> int:
    """Move allotments whose month has arrived from pending into allotted-to-date; returns how many."""
    day = on or today()
    year = session.get_one(FiscalYear, fiscal_year_id)
    due = session.scalars(
        select(Allotment).join(BudgetLine, BudgetLine.id == Allotment.budget_line_id)
        .where(BudgetLine.fiscal_year_id == fiscal_year_id, Allotment.applied.is_(False))
        .with_for_update()
    ).all()
    moved = 0
    for allotment in due:
        if period_reached(year.year, allotment.period, day.year, day.month):
            add_totals(session, allotment.budget_line_id, allotted=allotment.amount,
                       allotted_pending=-allotment.amount)
            allotment.applied = True
            moved += 1
    session.flush()
    return moved


def apply_all_due(session: Session, *, on: dt.date | None = None) -> int:
    """apply_due_allotments for every open fiscal year: run at start-up and then periodically."""
    years = session.scalars(select(FiscalYear.id).where(FiscalYear.status == FiscalYearStatus.OPEN)).all()
    return sum(apply_due_allotments(session, year_id, on=on) for year_id in years)


def amend(session: Session, budget_line_id: int, amount: int, reason: str, *,
          user_id: int | None = None) -> Amendment:
    line = _line(session, budget_line_id)
    refuse_if(check_amendment(state_of(line), amount))
    add_totals(session, line.id, amended=amount)
    (number,) = issue_numbers(session, line.agency_id, line.fiscal_year_id, NumberKind.AMENDMENT)
    amendment = Amendment(agency_id=line.agency_id, fiscal_year_id=line.fiscal_year_id, number=number,
                          budget_line_id=line.id, amount=amount, reason=reason, created_by_id=user_id)
    session.add(amendment)
    session.flush()
    return amendment


def transfer(session: Session, from_line_id: int, to_line_id: int, amount: int, reason: str, *,
             user_id: int | None = None, approved_by: int | None = None) -> Transfer:
    """流用: budget authority and its allotment move together from one object code to another."""
    # Lock in id order so two opposite transfers cannot deadlock.
    first, second = sorted((from_line_id, to_line_id))
    lines = {first: _line(session, first), second: _line(session, second)}
    source, target = lines[from_line_id], lines[to_line_id]
    refuse_if(check_transfer(state_of(source), state_of(target), amount))
    if not spend_available(session, source.id, amount, transferred_out=amount, allotted=-amount):
        refuse_if(check_transfer(state_of(_line(session, source.id)), state_of(target), amount))
        raise RuntimeError(f"conditional update of budget line {source.id} matched no row")
    add_totals(session, target.id, transferred_in=amount, allotted=amount)
    (number,) = issue_numbers(session, source.agency_id, source.fiscal_year_id, NumberKind.TRANSFER_DOCUMENT)
    document = Transfer(agency_id=source.agency_id, fiscal_year_id=source.fiscal_year_id, number=number,
                        from_line_id=source.id, to_line_id=target.id, amount=amount, reason=reason,
                        created_by_id=user_id, approved_by_id=approved_by)
    session.add(document)
    session.flush()
    return document
