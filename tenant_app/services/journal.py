"""Journal corrections and period close (月結 / 年結)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from tenant_app.enums import EventKind, JournalKind, SourceType
from tenant_app.models import Account, Agency, BudgetLine, FiscalYear, JournalEntry, JournalLine, PeriodClose
from tenant_app.rules.errors import ErrorCode, RuleError, RuleViolationError, refuse_if
from tenant_app.rules.journal import (
    JournalLineData,
    check_close,
    check_immutable,
    check_line_references,
    check_reversible,
    reversed_lines,
)
from tenant_app.services.certification import today
from tenant_app.services.posting import Posted, Posting, closed_periods, load_rule_book, post
from tenant_app.services.vouchers import not_found


def reverse(session: Session, entry_id: int, *, period: int, user_id: int | None, reason: str = "",
            on: dt.date | None = None) -> Posted:
    """沖銷: a new entry with every line's sides swapped, in an open period; the original stays."""
    original = session.execute(select(JournalEntry).where(JournalEntry.id == entry_id).with_for_update()
                               ).scalar_one_or_none()
    if original is None:
        raise not_found("傳票", entry_id)
    reversed_by = session.scalars(select(JournalEntry.id)
                                  .where(JournalEntry.reversal_of_id == entry_id)).first()
    refuse_if(check_reversible(entry_id, reversed_by, original.reversal_of_id is not None), status=409)
    lines = [JournalLineData(ln.account_code, ln.debit, ln.credit, ln.budget_line_id)
             for ln in original.lines]
    (posted,) = post(session, load_rule_book(session), original.agency_id, original.fiscal_year_id,
                     [Posting(EventKind(original.event_kind), period, on or today(), SourceType.REVERSAL,
                              original.id, reason or f"沖銷傳票 {original.number}",
                              lines=tuple(reversed_lines(lines)), reversal_of_id=original.id,
                              journal_kind=JournalKind(original.kind))], posted_by=user_id)
    return posted


def post_manual(session: Session, agency_id: int, fiscal_year_id: int, period: int,
                lines: Sequence[JournalLineData], *, description: str, user_id: int | None,
                on: dt.date | None = None) -> Posted:
    """A 轉帳傳票 typed by an accountant; balanced, on this agency's own accounts and lines, or refused."""
    _check_references(session, agency_id, fiscal_year_id, lines)
    (posted,) = post(session, load_rule_book(session), agency_id, fiscal_year_id,
                     [Posting(EventKind.ADJUST, period, on or today(), SourceType.MANUAL, None, description,
                              lines=tuple(lines), journal_kind=JournalKind.TRANSFER)], posted_by=user_id)
    return posted


def _check_references(session: Session, agency_id: int, fiscal_year_id: int,
                      lines: Sequence[JournalLineData]) -> None:
    """What the foreign keys would refuse, refused first with a message that names it."""
    if session.get(Agency, agency_id) is None or session.get(FiscalYear, fiscal_year_id) is None:
        raise RuleViolationError([RuleError(
            ErrorCode.REFERENCE_NOT_FOUND, "查無此機關或會計年度", "the agency or fiscal year does not exist",
            {"agency_id": agency_id, "fiscal_year_id": fiscal_year_id})])
    codes = {line.account_code for line in lines}
    known = set(session.scalars(select(Account.code).where(Account.code.in_(codes))))
    line_ids = {line.budget_line_id for line in lines if line.budget_line_id is not None}
    rows = session.execute(select(BudgetLine.id, BudgetLine.agency_id, BudgetLine.fiscal_year_id)
                           .where(BudgetLine.id.in_(line_ids)))
    owners = {row.id: (row.agency_id, row.fiscal_year_id) for row in rows}
    refuse_if(check_line_references(lines, known, owners, agency_id, fiscal_year_id))


def close_period(session: Session, agency_id: int, fiscal_year_id: int, period: int, *,
                 user_id: int | None) -> PeriodClose:
    closed = closed_periods(session, agency_id, fiscal_year_id)
    errors = check_close(period, closed)
    # Out of range is a bad request (422); closed already or out of order is a conflict (409).
    refuse_if(errors, status=422 if errors and errors[0].code is ErrorCode.PERIOD_OUT_OF_RANGE else 409)
    row = PeriodClose(agency_id=agency_id, fiscal_year_id=fiscal_year_id, period=period, closed_by_id=user_id)
    session.add(row)
    session.flush()
    return row


def _refuse_change(_mapper: object, _connection: object, target: JournalEntry | JournalLine) -> None:
    entry_id = target.id if isinstance(target, JournalEntry) else target.entry_id
    raise RuleViolationError(check_immutable(entry_id), status=409)


# Posted entries are immutable: any ORM update or delete of them is refused before reaching SQL.
for _model in (JournalEntry, JournalLine):
    event.listen(_model, "before_update", _refuse_change)
    event.listen(_model, "before_delete", _refuse_change)
