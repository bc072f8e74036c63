"""N payment vouchers with a realistic spread, for tests and benchmarks; bulk inserts, one transaction.

Spread: amounts log-normal (median ~18 000 元, a long tail of large purchases), lines weighted by
their balance, periods up to the current month with a year-end rush, half against a certification
(簽證) and half paid directly, 60% with an e-invoice; 90% paid, the rest still waiting. Every
voucher, certification and payment posts its journal entries by the posting rules, and the lines'
running totals are updated, so reports reconcile with the ledger. Generated vouchers carry no
signatures (they stand for history imported before online approval), so they are not re-verified.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select

from tenant_app.enums import (
    JOURNAL_NUMBER_KIND,
    CertificationStatus,
    EventKind,
    NumberKind,
    Role,
    SourceType,
    VoucherStatus,
)
from tenant_app.models import BudgetLine, FiscalYear, User, UserAgency
from tenant_app.rules.journal import lines_for_event
from tenant_app.services import rawsql
from tenant_app.services.certification import today
from tenant_app.services.ids import reserve_ids
from tenant_app.services.numbering import issue_numbers
from tenant_app.services.posting import load_rule_book

# Never spend more than this share of a line's available balance, so generated data leaves room.
SPEND_SHARE = 0.9
SIGMA = 1.1  # spread of the log-normal amounts
PAYEES = (
    "大同文具行",
    "全國電子",
    "中華電信",
    "台灣電力公司",
    "自來水公司",
    "好鄰居便利商店",
    "正大營造",
    "永豐印刷",
    "建國資訊",
    "和平保全",
    "光華清潔",
    "福利餐飲",
)
INVOICE_TRACKS = ("AB", "CD", "EF", "GH", "JK", "LM", "NP", "QR")


@dataclass
class Summary:
    vouchers: int = 0
    certifications: int = 0
    journal_entries: int = 0


@dataclass
class _Books:
    """Rows for one (agency, fiscal year), collected in memory and then bulk inserted."""

    certifications: list[dict[str, Any]] = field(default_factory=list)
    vouchers: list[dict[str, Any]] = field(default_factory=list)
    voucher_lines: list[dict[str, Any]] = field(default_factory=list)
    einvoices: list[dict[str, Any]] = field(default_factory=list)
    # (event, budget line, amount, source kind, index of the source row in its list, period)
    postings: list[tuple[EventKind, int, int, SourceType, int, int]] = field(default_factory=list)


def _period(rng: random.Random, last: int) -> int:
    # Spending rises towards the end of the year (the year-end rush); never beyond `last`.
    return min(last, max(1, int(last * rng.betavariate(2.2, 1.3)) + 1))


def generate(engine: Engine, count: int, *, seed: int = 2026, fiscal_year: int | None = None) -> Summary:
    rng = random.Random(seed)
    day = today()
    with engine.begin() as conn:
        year = conn.execute(select(FiscalYear).where(FiscalYear.year == (fiscal_year or day.year))).one()
        last_period = 12 if year.year < day.year else day.month
        lines = conn.execute(
            select(
                BudgetLine.id,
                BudgetLine.agency_id,
                BudgetLine.allotted - BudgetLine.certified - BudgetLine.paid_direct + BudgetLine.released,
            )
            .where(BudgetLine.fiscal_year_id == year.id)
            .order_by(BudgetLine.id)
        ).all()
        room = {line_id: int(available * SPEND_SHARE) for line_id, _, available in lines}
        agency_of = {line_id: agency for line_id, agency, _ in lines}
        weights = [max(r, 0) for r in room.values()]
        # Log-normal amounts whose mean spends about 80% of the room over `count` vouchers: a
        # long tail of large purchases over many small ones, whatever the county's size.
        mean = max(1_000.0, 0.8 * sum(weights) / max(count, 1))
        mu = math.log(mean) - SIGMA**2 / 2
        line_ids = list(room)
        book = load_rule_book(conn)
        grants = conn.execute(
            select(UserAgency.agency_id, User.id)
            .join(User, User.id == UserAgency.user_id)
            .where(User.role.in_([Role.CLERK, Role.ACCOUNTANT]))
        ).all()
        preparers = {agency: user for agency, user in grants}
        fallback_preparer = conn.execute(select(User.id).order_by(User.id).limit(1)).scalar_one()
        books: dict[int, _Books] = defaultdict(_Books)
        now = dt.datetime.now(dt.UTC)
        invoice_serial = rng.randrange(10_000_000, 50_000_000)
        totals: dict[int, dict[str, int]] = defaultdict(
            lambda: {"certified": 0, "paid_on_certified": 0, "paid_direct": 0}
        )
        made = 0
        for line_id in rng.choices(line_ids, weights=weights, k=count * 2):
            if made == count:
                break
            amount = max(100, min(int(rng.lognormvariate(mu, SIGMA)) // 10 * 10, 5_000_000))
            if amount > room[line_id]:
                continue
            room[line_id] -= amount
            made += 1
            target = books[agency_of[line_id]]
            period = _period(rng, last_period)
            paid = rng.random() < 0.9
            voucher: dict[str, Any] = {
                "agency_id": agency_of[line_id],
                "fiscal_year_id": year.id,
                "certification_id": None,
                "payee": rng.choice(PAYEES),
                "payee_account": "",
                "amount": amount,
                "period": period,
                "description": "",
                "status": (VoucherStatus.PAID if paid else VoucherStatus.APPROVED).value,
                "preparer_id": None,
                "reject_reason": None,
                "revision": 1,
                "treasury_batch_id": None,
                "paid_at": now if paid else None,
                "created_at": now,
            }
            if rng.random() < 0.5:
                target.certifications.append(
                    {
                        "agency_id": agency_of[line_id],
                        "fiscal_year_id": year.id,
                        "budget_line_id": line_id,
                        "period": period,
                        "amount": amount,
                        "paid_amount": amount if paid else 0,
                        "released_amount": 0,
                        "purpose": "",
                        "status": (CertificationStatus.SETTLED if paid else CertificationStatus.ACTIVE).value,
                        "created_by_id": None,
                        "created_at": now,
                    }
                )
                cert_index = len(target.certifications) - 1
                voucher["certification_id"] = cert_index  # an index until the ids are reserved
                totals[line_id]["certified"] += amount
                target.postings.append(
                    (EventKind.CERTIFY, line_id, amount, SourceType.CERTIFICATION, cert_index, period)
                )
            voucher_index = len(target.vouchers)
            if paid and voucher["certification_id"] is not None:
                totals[line_id]["paid_on_certified"] += amount
                for event in (EventKind.PAY_CERTIFIED, EventKind.SETTLE_ENCUMBRANCE):
                    target.postings.append(
                        (event, line_id, amount, SourceType.VOUCHER, voucher_index, period)
                    )
            elif paid:
                totals[line_id]["paid_direct"] += amount
                target.postings.append(
                    (EventKind.PAY_DIRECT, line_id, amount, SourceType.VOUCHER, voucher_index, period)
                )
            voucher["preparer_id"] = preparers.get(agency_of[line_id], fallback_preparer)
            target.vouchers.append(voucher)
            target.voucher_lines.append({"budget_line_id": line_id, "description": "", "amount": amount})
            if rng.random() < 0.6:
                invoice_serial += 1
                target.einvoices.append(
                    {
                        "index": len(target.vouchers) - 1,
                        "number": f"{rng.choice(INVOICE_TRACKS)}{invoice_serial % 10**8:08d}",
                        "amount": amount,
                    }
                )

        summary = Summary()
        for agency_id, target in books.items():
            summary = _write(conn, book, agency_id, year.id, target, summary)
        for line_id, increments in totals.items():
            rawsql.execute(
                conn,
                "UPDATE budget_line SET certified = certified + :certified, "
                "paid_on_certified = paid_on_certified + :paid_on_certified, "
                "paid_direct = paid_direct + :paid_direct WHERE id = :id",
                {"id": line_id, **increments},
            )
    return summary


def _write(conn: Any, book: Any, agency_id: int, year_id: int, target: _Books, summary: Summary) -> Summary:
    cert_ids = reserve_ids(conn, "certification", len(target.certifications))
    cert_numbers = issue_numbers(
        conn, agency_id, year_id, NumberKind.CERTIFICATION, len(target.certifications)
    )
    rawsql.insert_many(
        conn,
        "certification",
        [
            {"id": i, "number": n, **row}
            for i, n, row in zip(cert_ids, cert_numbers, target.certifications, strict=True)
        ],
    )
    voucher_ids = reserve_ids(conn, "payment_voucher", len(target.vouchers))
    voucher_numbers = issue_numbers(conn, agency_id, year_id, NumberKind.VOUCHER, len(target.vouchers))
    for row in target.vouchers:
        if row["certification_id"] is not None:
            row["certification_id"] = cert_ids[row["certification_id"]]
    rawsql.insert_many(
        conn,
        "payment_voucher",
        [
            {"id": i, "number": n, **row}
            for i, n, row in zip(voucher_ids, voucher_numbers, target.vouchers, strict=True)
        ],
    )
    rawsql.insert_many(
        conn,
        "voucher_line",
        [{"voucher_id": i, **row} for i, row in zip(voucher_ids, target.voucher_lines, strict=True)],
    )
    rawsql.insert_many(
        conn,
        "einvoice",
        [
            {"voucher_id": voucher_ids[row["index"]], "number": row["number"], "amount": row["amount"]}
            for row in target.einvoices
        ],
    )

    # Journal: numbers per 傳票 kind, entries and their two lines each, by the posting rules.
    by_kind: dict[Any, list[int]] = defaultdict(list)
    for index, (event, *_rest) in enumerate(target.postings):
        by_kind[book.journal_kinds[event]].append(index)
    numbers: dict[int, tuple[Any, int]] = {}
    for kind, indexes in by_kind.items():
        for index, number in zip(
            indexes,
            issue_numbers(conn, agency_id, year_id, JOURNAL_NUMBER_KIND[kind], len(indexes)),
            strict=True,
        ):
            numbers[index] = (kind, number)
    entry_ids = reserve_ids(conn, "journal_entry", len(target.postings))
    day = today()
    entries, lines = [], []
    for index, (event, line_id, amount, source, source_index, period) in enumerate(target.postings):
        kind, number = numbers[index]
        source_id = (
            cert_ids[source_index] if source is SourceType.CERTIFICATION else voucher_ids[source_index]
        )
        entries.append(
            {
                "id": entry_ids[index],
                "agency_id": agency_id,
                "fiscal_year_id": year_id,
                "kind": kind.value,
                "number": number,
                "period": period,
                "entry_date": dt.date(day.year, min(period, 12), 1),
                "event_kind": event.value,
                "source_type": source.value,
                "source_id": source_id,
                "description": "generated",
                "reversal_of_id": None,
                "posted_by_id": None,
                "posted_at": dt.datetime.now(dt.UTC),
            }
        )
        for line in lines_for_event(book.rule(event), amount, line_id):
            lines.append(
                {
                    "entry_id": entry_ids[index],
                    "account_code": line.account_code,
                    "budget_line_id": line.budget_line_id,
                    "debit": line.debit,
                    "credit": line.credit,
                }
            )
    rawsql.insert_many(conn, "journal_entry", entries)
    rawsql.insert_many(conn, "journal_line", lines)
    return Summary(
        summary.vouchers + len(target.vouchers),
        summary.certifications + len(target.certifications),
        summary.journal_entries + len(entries),
    )
