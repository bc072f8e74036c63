"""Posting journal entries (傳票) by the posting rules, in bulk, inside the caller's transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from tenant_app.enums import JOURNAL_NUMBER_KIND, EventKind, JournalKind, SourceType
from tenant_app.models import PostingRule
from tenant_app.rules.errors import refuse_if
from tenant_app.rules.journal import (
    JournalLineData,
    PostingRuleData,
    check_balanced,
    check_period_open,
    lines_for_event,
)
from tenant_app.services import rawsql
from tenant_app.services.ids import connection_of, reserve_ids
from tenant_app.services.numbering import issue_numbers


@dataclass(frozen=True)
class RuleBook:
    """The posting rules loaded once; the hot path reuses them for every batch."""

    rules: dict[EventKind, PostingRuleData]
    journal_kinds: dict[EventKind, JournalKind]

    def rule(self, event: EventKind) -> PostingRuleData:
        return self.rules[event]


def load_rule_book(db: Connection | Session) -> RuleBook:
    rows = db.execute(select(PostingRule.event_kind, PostingRule.journal_kind, PostingRule.debit_account,
                             PostingRule.credit_account)).all()
    return RuleBook(
        rules={EventKind(r[0]): PostingRuleData(EventKind(r[0]), r[2], r[3]) for r in rows},
        journal_kinds={EventKind(r[0]): JournalKind(r[1]) for r in rows},
    )


@dataclass(frozen=True)
class Posting:
    """One entry to post: lines are given explicitly, or derived from the event's rule and amount."""

    event_kind: EventKind
    period: int
    entry_date: dt.date
    source_type: SourceType
    source_id: int | None
    description: str = ""
    amount: int = 0
    budget_line_id: int | None = None
    lines: tuple[JournalLineData, ...] = ()
    reversal_of_id: int | None = None
    journal_kind: JournalKind | None = None  # defaults to the rule's kind
    posted_by: int | None = None  # defaults to post()'s posted_by (a group posts for many users)


@dataclass(frozen=True)
class Posted:
    entry_id: int
    kind: JournalKind
    number: int


def closed_periods(db: Connection | Session, agency_id: int, fiscal_year_id: int) -> set[int]:
    rows = rawsql.execute(connection_of(db), "SELECT period FROM period_close WHERE agency_id = :agency_id "
                          "AND fiscal_year_id = :fiscal_year_id",
                          {"agency_id": agency_id, "fiscal_year_id": fiscal_year_id})
    return {int(row[0]) for row in rows}


def post(
    db: Connection | Session, book: RuleBook, agency_id: int, fiscal_year_id: int,
    postings: Sequence[Posting], *, posted_by: int | None, closed: set[int] | None = None,
) -> list[Posted]:
    """Post entries with gapless numbers per 傳票 kind; refuses unbalanced entries and closed periods."""
    if not postings:
        return []
    if closed is None:
        closed = closed_periods(db, agency_id, fiscal_year_id)
    prepared: list[tuple[Posting, JournalKind, list[JournalLineData]]] = []
    for posting in postings:
        lines = list(posting.lines) or lines_for_event(book.rule(posting.event_kind), posting.amount,
                                                       posting.budget_line_id)
        refuse_if(check_balanced(lines) + check_period_open(posting.period, closed))
        kind = posting.journal_kind or book.journal_kinds[posting.event_kind]
        prepared.append((posting, kind, lines))

    numbers: dict[JournalKind, list[int]] = {}
    for kind in {k for _, k, _ in prepared}:
        count = sum(1 for _, k, _ in prepared if k is kind)
        numbers[kind] = list(issue_numbers(db, agency_id, fiscal_year_id, JOURNAL_NUMBER_KIND[kind], count))
    next_index = dict.fromkeys(numbers, 0)
    rows: list[dict[str, Any]] = []
    issued: list[tuple[JournalKind, int]] = []
    for posting, kind, _ in prepared:
        number = numbers[kind][next_index[kind]]
        next_index[kind] += 1
        issued.append((kind, number))
        rows.append({
            "agency_id": agency_id, "fiscal_year_id": fiscal_year_id, "kind": kind.value,
            "number": number, "period": posting.period, "entry_date": posting.entry_date,
            "event_kind": posting.event_kind.value,
            "source_type": posting.source_type.value, "source_id": posting.source_id,
            "description": posting.description, "reversal_of_id": posting.reversal_of_id,
            "posted_by_id": posting.posted_by if posting.posted_by is not None else posted_by,
            "posted_at": dt.datetime.now(dt.UTC),
        })
    conn = connection_of(db)
    ids = reserve_ids(conn, "journal_entry", len(rows))
    rawsql.insert_many(conn, "journal_entry", [{"id": i, **row} for i, row in zip(ids, rows, strict=True)])
    rawsql.insert_many(conn, "journal_line", [
        {"entry_id": entry_id, "account_code": line.account_code, "budget_line_id": line.budget_line_id,
         "debit": line.debit, "credit": line.credit}
        for entry_id, (_, _, lines) in zip(ids, prepared, strict=True) for line in lines
    ])
    return [Posted(entry_id, kind, number) for entry_id, (kind, number) in zip(ids, issued, strict=True)]
