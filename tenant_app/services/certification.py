"""簽證 commits: a group of queued certifications checked in order against each locked line and
committed in one transaction with their gapless numbers and journal entries (group commit).

Used by the certification writer (one connection, one transaction per group) on both databases.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from tenant_app import audit
from tenant_app.enums import AuditAction, CertificationStatus, EventKind, NumberKind, SourceType
from tenant_app.rules.budget import check_period
from tenant_app.rules.certification import decide_in_order, insufficient_balance
from tenant_app.rules.errors import ErrorCode, RuleError
from tenant_app.rules.journal import check_period_open
from tenant_app.services import rawsql
from tenant_app.services.ids import reserve_ids
from tenant_app.services.numbering import issue_numbers
from tenant_app.services.posting import Posting, RuleBook, closed_periods, post

COUNTY_TZ = ZoneInfo("Asia/Taipei")
WRITER_ACTOR = "system:certification-writer"  # the users are named per certification in the payload

_SELECT_LINE = ("SELECT agency_id, fiscal_year_id, allotted - certified - paid_direct + released "
                "FROM budget_line WHERE id = :id")
# The ONE conditional update per line and group: it re-checks the balance itself, and the caller
# checks its row count; the CHECK constraint available_not_negative stands behind it.
_CERTIFY = ("UPDATE budget_line SET certified = certified + :total WHERE id = :id "
            "AND allotted - certified - paid_direct + released >= :total")


def today() -> dt.date:
    return dt.datetime.now(COUNTY_TZ).date()


@dataclass(frozen=True)
class CertifyRequest:
    budget_line_id: int
    amount: int
    user_id: int | None
    # Agencies the requesting user may act for; None means unrestricted (seed, bench, tests).
    allowed_agencies: frozenset[int] | None = None
    period: int | None = None  # defaults to the month of the entry date
    purpose: str = ""
    entry_date: dt.date = field(default_factory=today)

    @property
    def effective_period(self) -> int:
        return self.period if self.period is not None else self.entry_date.month


@dataclass(frozen=True)
class CertifyOutcome:
    accepted: bool
    budget_line_id: int
    amount: int
    available_seen: int | None = None  # the balance this request was checked against
    certification_id: int | None = None
    number: int | None = None
    journal_number: int | None = None
    errors: tuple[RuleError, ...] = ()

    @property
    def available_after(self) -> int | None:
        if self.available_seen is None:
            return None
        return self.available_seen - self.amount if self.accepted else self.available_seen


def refused(request: CertifyRequest, errors: list[RuleError], seen: int | None = None) -> CertifyOutcome:
    return CertifyOutcome(False, request.budget_line_id, request.amount, seen, errors=tuple(errors))


def commit_group(
    conn: Connection, book: RuleBook, requests: Sequence[CertifyRequest]
) -> list[CertifyOutcome]:
    """Decide and write a group of certifications inside the caller's open transaction.

    Lines are locked in id order (no deadlock with other lockers), each line's queued requests are
    decided in arrival order against its balance, and each line is then changed by ONE conditional
    UPDATE for the accepted total, checked by its row count.
    """
    outcomes: list[CertifyOutcome | None] = [None] * len(requests)
    by_line: dict[int, list[int]] = defaultdict(list)
    for index, request in enumerate(requests):
        by_line[request.budget_line_id].append(index)

    lock = "" if conn.dialect.name == "sqlite" else " FOR UPDATE"  # SQLite: the write lock is held
    lines: dict[int, tuple[int, int, int]] = {}
    for line_id in sorted(by_line):  # id order: no deadlock with other lockers of several lines
        row = rawsql.execute(conn, _SELECT_LINE + lock, {"id": line_id}).first()
        if row is not None:
            agency, year, available = (int(value) for value in row)
            lines[line_id] = (agency, year, available)
    closed_cache: dict[tuple[int, int], set[int]] = {}
    accepted_by_books: dict[tuple[int, int], list[int]] = defaultdict(list)

    for line_id, indexes in by_line.items():
        if line_id not in lines:
            for i in indexes:
                outcomes[i] = refused(requests[i], [RuleError(
                    ErrorCode.NOT_FOUND, f"查無預算科目 {line_id}", f"budget line {line_id} does not exist",
                    {"budget_line_id": line_id})])
            continue
        agency_id, year_id, available = lines[line_id]
        books = (agency_id, year_id)
        if books not in closed_cache:
            closed_cache[books] = closed_periods(conn, agency_id, year_id)
        candidates: list[int] = []
        for i in indexes:
            request = requests[i]
            errors = check_period(request.effective_period) + check_period_open(
                request.effective_period, closed_cache[books])
            if request.allowed_agencies is not None and agency_id not in request.allowed_agencies:
                errors.append(RuleError(ErrorCode.FORBIDDEN_AGENCY, "您沒有此機關的權限",
                                        "you are not granted this agency", {"agency_id": agency_id}))
            if errors:
                outcomes[i] = refused(request, errors, available)
            else:
                candidates.append(i)
        decisions = decide_in_order(available, [requests[i].amount for i in candidates])
        total = 0
        for i, decision in zip(candidates, decisions, strict=True):
            if decision.accepted:
                total += requests[i].amount
                accepted_by_books[books].append(i)
                outcomes[i] = CertifyOutcome(True, line_id, requests[i].amount, decision.balance_seen)
            else:
                outcomes[i] = refused(requests[i], [insufficient_balance(
                    line_id, decision.balance_seen, requests[i].amount)], decision.balance_seen)
        if total and rawsql.execute(conn, _CERTIFY, {"id": line_id, "total": total}).rowcount != 1:
            # The row is locked and was checked above, so this means a bug or a writer outside
            # the services: refuse the whole group rather than commit anything unverified.
            raise RuntimeError(f"conditional update of budget line {line_id} matched no row")

    for (agency_id, year_id), indexes in accepted_by_books.items():
        _write_certifications(conn, book, agency_id, year_id, requests, indexes, outcomes,
                              closed_cache[(agency_id, year_id)])
    done = [outcome for outcome in outcomes if outcome is not None]
    _audit_group(conn, requests, done)
    return done


def _audit_group(
    conn: Connection, requests: Sequence[CertifyRequest], outcomes: list[CertifyOutcome]
) -> None:
    """One hash-chained audit event per committed group, listing every certification in it.

    One event per group rather than per certification keeps the chain's serial tail (lock, read,
    insert) out of the per-request cost; nothing committed is missing from the log.
    """
    committed = [{"id": o.certification_id, "number": o.number, "budget_line_id": o.budget_line_id,
                  "amount": o.amount, "user_id": r.user_id}
                 for r, o in zip(requests, outcomes, strict=True) if o.accepted]
    if committed:
        with Session(bind=conn) as session:
            audit.append(session, WRITER_ACTOR, AuditAction.CERTIFY_GROUP, {"certifications": committed})


def _write_certifications(
    conn: Connection, book: RuleBook, agency_id: int, year_id: int, requests: Sequence[CertifyRequest],
    indexes: list[int], outcomes: list[CertifyOutcome | None], closed: set[int],
) -> None:
    numbers = issue_numbers(conn, agency_id, year_id, NumberKind.CERTIFICATION, len(indexes))
    now = dt.datetime.now(dt.UTC)
    rows = [{
        "agency_id": agency_id, "fiscal_year_id": year_id, "number": number,
        "budget_line_id": requests[i].budget_line_id, "period": requests[i].effective_period,
        "amount": requests[i].amount, "paid_amount": 0, "released_amount": 0,
        "purpose": requests[i].purpose, "status": CertificationStatus.ACTIVE.value,
        "created_by_id": requests[i].user_id, "created_at": now,
    } for i, number in zip(indexes, numbers, strict=True)]
    ids = reserve_ids(conn, "certification", len(rows))
    rawsql.insert_many(conn, "certification", [{"id": i, **row} for i, row in zip(ids, rows, strict=True)])
    postings = [Posting(EventKind.CERTIFY, requests[i].effective_period, requests[i].entry_date,
                        SourceType.CERTIFICATION, cert_id, f"簽證 {number}", requests[i].amount,
                        requests[i].budget_line_id, posted_by=requests[i].user_id)
                for i, cert_id, number in zip(indexes, ids, numbers, strict=True)]
    posted = post(conn, book, agency_id, year_id, postings, posted_by=None, closed=closed)
    for i, cert_id, number, entry in zip(indexes, ids, numbers, posted, strict=True):
        previous = outcomes[i]
        assert previous is not None
        outcomes[i] = CertifyOutcome(True, previous.budget_line_id, previous.amount, previous.available_seen,
                                     cert_id, number, entry.number)
