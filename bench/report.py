"""Report speed: a county with 50 000 vouchers; the budget-execution report as HTML, XLSX and ODS,
and a 50 000-row general-ledger export as streamed ODS against odfpy's object tree.

The county is generated straight into a fresh database by bulk INSERTs (fast, realistic spread:
8 agencies × 50 budget lines, skewed line use, log-normal amounts, later months busier, ~60 %
of vouchers against a certification, ~95 % paid, journal entries for every certification and
payment). Each timing covers the whole path a download takes: the SQL aggregation, building the
Sheet and writing the file (median of --repeat runs). odfpy is timed on --odfpy-sample rows of
the same ledger and extrapolated linearly to the full row count (stated in the output).

Last line: {"vouchers", "html_s", "xlsx_s", "ods_s", "query_s", "ledger_rows", "ledger_ods_s",
"odfpy_s_extrapolated", "odfpy_ratio"}.
Run: .venv/bin/python bench/report.py [--vouchers 50000] [--postgres]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from odf.opendocument import OpenDocumentSpreadsheet  # noqa: E402
from odf.table import Table, TableCell, TableRow  # noqa: E402
from odf.text import P  # noqa: E402
from sqlalchemy import Engine, insert  # noqa: E402

from tenant_app.db import Base, make_engine, session_scope  # noqa: E402
from tenant_app.enums import (  # noqa: E402
    CertificationStatus,
    EventKind,
    JournalKind,
    Role,
    SourceType,
    VoucherStatus,
)
from tenant_app.models import (  # noqa: E402
    Agency,
    Allotment,
    BudgetLine,
    Certification,
    County,
    FiscalYear,
    JournalEntry,
    JournalLine,
    PaymentVoucher,
    User,
    UserAgency,
    VoucherLine,
)
from tenant_app.reports import catalog, execution, ledger, ods  # noqa: E402
from tenant_app.reports.catalog import ExportFormat, ReportKind, ReportRequest  # noqa: E402
from tenant_app.reports.reading import snapshot_session  # noqa: E402
from tenant_app.reports.sheet import ReportHeader, Sheet, format_cell  # noqa: E402
from tenant_app.services.chart import (  # noqa: E402
    ENCUMBRANCES,
    EXPENDITURE,
    FUND_BALANCE,
    RESERVE_FOR_ENCUMBRANCES,
    TREASURY_DEPOSIT,
    ensure_reference_data,
)

YEAR = 2026
AGENCIES = 8
LINES_PER_AGENCY = 50
OBJECTS = (
    ("1000", "人事費", True),
    ("2000", "業務費", False),
    ("3000", "設備及投資", False),
    ("4000", "獎補助費", False),
    ("5000", "債務費", False),
)
PAYEES = (
    "大同文具行",
    "中華電信",
    "台灣電力公司",
    "自來水公司",
    "宏碁資訊",
    "全聯實業",
    "統一超商",
    "聯合工程行",
)
CHUNK = 5000


def _chunks(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), CHUNK):
        yield rows[start : start + CHUNK]


class Journal:
    """Collects journal entries with gapless numbers per agency and kind, for one bulk insert."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.lines: list[dict[str, Any]] = []
        self.numbers: dict[tuple[int, JournalKind], int] = {}

    def post(
        self,
        agency: int,
        year_id: int,
        kind: JournalKind,
        event: EventKind,
        period: int,
        source: SourceType,
        source_id: int,
        lines: Sequence[tuple[str, int, int, int | None]],
    ) -> None:
        key = (agency, kind)
        self.numbers[key] = self.numbers.get(key, 0) + 1
        entry_id = len(self.entries) + 1
        self.entries.append(
            {
                "id": entry_id,
                "agency_id": agency,
                "fiscal_year_id": year_id,
                "kind": kind,
                "number": self.numbers[key],
                "period": period,
                "entry_date": dt.date(YEAR, min(period, 12), 15),
                "event_kind": event,
                "source_type": source.value,
                "source_id": source_id,
                "description": f"{source.value} {source_id}",
                "posted_at": dt.datetime.now(dt.UTC),
            }
        )
        for account, debit, credit, line_id in lines:
            self.lines.append(
                {
                    "entry_id": entry_id,
                    "account_code": account,
                    "debit": debit,
                    "credit": credit,
                    "budget_line_id": line_id,
                }
            )


@dataclass
class Skeleton:
    year_id: int
    user_id: int
    agency_ids: list[int]
    line_rows: list[dict[str, Any]]


def skeleton(engine: Engine, rng: random.Random) -> Skeleton:
    """County, fiscal year, 8 agencies with a clerk each, 400 budget lines allotted by month."""
    Base.metadata.create_all(engine)
    with session_scope(engine) as s:
        ensure_reference_data(s)
        s.add(County(code="bench", name="效能測試縣"))
        year = FiscalYear(year=YEAR)
        agencies = [Agency(code=f"A{i:02d}", name=f"第{i}機關") for i in range(1, AGENCIES + 1)]
        s.add_all([year, *agencies])
        s.flush()
        clerks = [
            User(username=f"clerk{a.id}", display_name=f"承辦人{a.id}", password_hash="x", role=Role.CLERK)
            for a in agencies
        ]
        s.add_all(clerks)
        s.flush()
        s.add_all([UserAgency(user_id=u.id, agency_id=a.id) for u, a in zip(clerks, agencies, strict=True)])
        year_id, user_id, agency_ids = year.id, clerks[0].id, [a.id for a in agencies]

    line_rows: list[dict[str, Any]] = []
    for agency in agency_ids:
        for n in range(LINES_PER_AGENCY):
            code, name, personnel = OBJECTS[n % len(OBJECTS)]
            budget = rng.randrange(2_000_000, 60_000_000, 1200)
            line_rows.append(
                {
                    "id": len(line_rows) + 1,
                    "agency_id": agency,
                    "fiscal_year_id": year_id,
                    "programme_code": f"P{n // len(OBJECTS):02d}",
                    "programme_name": f"計畫{n // len(OBJECTS)}",
                    "sub_item": "執行",
                    "object_code": code,
                    "object_name": name,
                    "is_personnel": personnel,
                    "budget": budget,
                    "allotted": budget,  # a multiple of 12: the twelve monthly allotments add up to it
                }
            )
    allotments = [
        {"budget_line_id": line["id"], "period": p, "amount": line["budget"] // 12, "applied": True}
        for line in line_rows
        for p in range(1, 13)
    ]
    with engine.begin() as conn:
        for table, rows in ((BudgetLine, line_rows), (Allotment, allotments)):
            for chunk in _chunks(rows):
                conn.execute(insert(table), chunk)
    return Skeleton(year_id, user_id, agency_ids, line_rows)


def generate(engine: Engine, vouchers: int, generator: str, seed: int = 20261128) -> str:
    """Fill a fresh database; returns which generator made the vouchers."""
    rng = random.Random(seed)
    sk = skeleton(engine, rng)
    if generator == "app":
        from tenant_app.generate import generate as app_generate

        summary = app_generate(engine, vouchers, seed=seed, fiscal_year=YEAR)
        made_by = (
            f"tenant_app.generate ({summary.vouchers} vouchers, {summary.journal_entries} journal entries)"
        )
    else:
        bulk_vouchers(engine, rng, sk, vouchers)
        made_by = f"bench bulk generator ({vouchers} vouchers)"
    # Fresh statistics, as autovacuum would have gathered on a live county: without them
    # PostgreSQL plans the GROUP BY joins for empty tables (1.7 s instead of 0.1 s measured).
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    return made_by


def bulk_vouchers(engine: Engine, rng: random.Random, sk: Skeleton, vouchers: int) -> None:
    """The bench's own generator (written before tenant_app.generate existed), kept as --generator bulk."""
    year_id, user_id, agency_ids, line_rows = sk.year_id, sk.user_id, sk.agency_ids, sk.line_rows
    journal = Journal()
    for agency in agency_ids:  # opening funds
        total = sum(line["budget"] for line in line_rows if line["agency_id"] == agency)
        journal.post(
            agency,
            year_id,
            JournalKind.RECEIPT,
            EventKind.ADJUST,
            1,
            SourceType.OPENING,
            agency,
            [(TREASURY_DEPOSIT, total, 0, None), (FUND_BALANCE, 0, total, None)],
        )

    # Skewed line use (a few lines take most vouchers), later months busier.
    weights = list(
        itertools.accumulate(1.0 / (1 + (i % LINES_PER_AGENCY)) ** 0.8 for i in range(len(line_rows)))
    )
    periods = list(range(1, 13))
    period_weights = list(itertools.accumulate(0.5 + p / 6 for p in periods))
    by_agency = {a: [i for i, line in enumerate(line_rows) if line["agency_id"] == a] for a in agency_ids}
    voucher_rows: list[dict[str, Any]] = []
    vline_rows: list[dict[str, Any]] = []
    cert_rows: list[dict[str, Any]] = []
    numbers: dict[int, int] = {}
    cert_numbers: dict[int, int] = {}
    for vid in range(1, vouchers + 1):
        first = rng.choices(range(len(line_rows)), cum_weights=weights)[0]
        agency = line_rows[first]["agency_id"]
        own = by_agency[agency] if rng.random() < 0.2 else []
        picks = [first, *rng.sample(own, k=min(len(own), rng.randint(1, 2)))]
        period = rng.choices(periods, cum_weights=period_weights)[0]
        amounts = [max(100, int(rng.lognormvariate(9.5, 1.2))) for _ in picks]
        total = sum(amounts)
        paid = rng.random() < 0.95
        cert_id = None
        if rng.random() < 0.6:
            cert_numbers[agency] = cert_numbers.get(agency, 0) + 1
            cert_id = len(cert_rows) + 1
            # A certification for one line (the first) covering the voucher, sometimes with a margin
            # that is released; multi-line vouchers are paid directly.
            picks, amounts = picks[:1], [total]
            margin = rng.choice((0, 0, 0, total // 10))
            cert_rows.append(
                {
                    "id": cert_id,
                    "agency_id": agency,
                    "fiscal_year_id": year_id,
                    "number": cert_numbers[agency],
                    "budget_line_id": line_rows[picks[0]]["id"],
                    "period": period,
                    "amount": total + margin,
                    "paid_amount": total if paid else 0,
                    "released_amount": margin if paid else 0,
                    "purpose": "採購",
                    "status": CertificationStatus.SETTLED if paid else CertificationStatus.ACTIVE,
                    "created_at": dt.datetime.now(dt.UTC),
                }
            )
            journal.post(
                agency,
                year_id,
                JournalKind.TRANSFER,
                EventKind.CERTIFY,
                period,
                SourceType.CERTIFICATION,
                cert_id,
                [
                    (ENCUMBRANCES, total + margin, 0, line_rows[picks[0]]["id"]),
                    (RESERVE_FOR_ENCUMBRANCES, 0, total + margin, line_rows[picks[0]]["id"]),
                ],
            )
            if paid and margin:
                journal.post(
                    agency,
                    year_id,
                    JournalKind.TRANSFER,
                    EventKind.RELEASE,
                    period,
                    SourceType.CERTIFICATION,
                    cert_id,
                    [
                        (RESERVE_FOR_ENCUMBRANCES, margin, 0, line_rows[picks[0]]["id"]),
                        (ENCUMBRANCES, 0, margin, line_rows[picks[0]]["id"]),
                    ],
                )
        numbers[agency] = numbers.get(agency, 0) + 1
        voucher_rows.append(
            {
                "id": vid,
                "agency_id": agency,
                "fiscal_year_id": year_id,
                "number": numbers[agency],
                "certification_id": cert_id,
                "payee": rng.choice(PAYEES),
                "payee_account": "004-000000000000",
                "amount": total,
                "period": period,
                "description": "",
                "status": VoucherStatus.PAID if paid else VoucherStatus.APPROVED,
                "preparer_id": user_id,
                "revision": 1,
                "created_at": dt.datetime.now(dt.UTC),
            }
        )
        for pick, amount in zip(picks, amounts, strict=True):
            vline_rows.append(
                {
                    "voucher_id": vid,
                    "budget_line_id": line_rows[pick]["id"],
                    "amount": amount,
                    "description": "採購",
                }
            )
        if paid:
            pay_lines = [(EXPENDITURE, a, 0, line_rows[p]["id"]) for p, a in zip(picks, amounts, strict=True)]
            event = EventKind.PAY_CERTIFIED if cert_id else EventKind.PAY_DIRECT
            journal.post(
                agency,
                year_id,
                JournalKind.PAYMENT,
                event,
                period,
                SourceType.VOUCHER,
                vid,
                [*pay_lines, (TREASURY_DEPOSIT, 0, total, None)],
            )
            if cert_id:
                line_id = line_rows[picks[0]]["id"]
                journal.post(
                    agency,
                    year_id,
                    JournalKind.TRANSFER,
                    EventKind.SETTLE_ENCUMBRANCE,
                    period,
                    SourceType.VOUCHER,
                    vid,
                    [(RESERVE_FOR_ENCUMBRANCES, total, 0, line_id), (ENCUMBRANCES, 0, total, line_id)],
                )

    with engine.begin() as conn:
        for table, rows in (
            (Certification, cert_rows),
            (PaymentVoucher, voucher_rows),
            (VoucherLine, vline_rows),
            (JournalEntry, journal.entries),
            (JournalLine, journal.lines),
        ):
            for chunk in _chunks(rows):
                conn.execute(insert(table), chunk)


def _median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _report(engine: Engine, fmt: ExportFormat) -> bytes:
    with snapshot_session(engine) as s:  # as the download route reads: no write lock
        request = ReportRequest(ReportKind.EXECUTION, YEAR, 13)
        sheet = catalog.build(s, request, county="效能測試縣", printed_at=dt.datetime.now(dt.UTC))
        out = io.BytesIO()
        catalog.render(sheet, fmt, out)
        return out.getvalue()


def _ledger_sheet(engine: Engine, rows: int) -> tuple[Sheet, list[Sequence[Any]]]:
    """The first `rows` rows of the general ledger, materialised so both writers get the same."""
    with session_scope(engine) as s:
        header = ReportHeader("效能測試縣", "總分類帳", "General ledger", YEAR, 13, dt.datetime.now(dt.UTC))
        sheet = ledger.ledger_sheet(s, header, year=YEAR, period=13)
        taken = list(itertools.islice(sheet.rows, rows))
    return sheet, taken


def odfpy_tree(sheet: Sheet, rows: Sequence[Sequence[Any]], out: io.BytesIO) -> None:
    """The reference: the same sheet through odfpy's object tree (one Python object per cell)."""
    doc = OpenDocumentSpreadsheet()
    table = Table(name=sheet.name)
    for values in rows:
        tr = TableRow()
        for value, column in zip(values, sheet.columns, strict=True):
            text = format_cell(value, column.kind)
            if isinstance(value, int) and not isinstance(value, bool):
                cell = TableCell(valuetype="float", value=value)
            else:
                cell = TableCell(valuetype="string")
            cell.addElement(P(text=text))
            tr.addElement(cell)
        table.addElement(tr)
    doc.spreadsheet.addElement(table)
    doc.write(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vouchers", type=int, default=50_000)
    parser.add_argument("--ledger-rows", type=int, default=50_000)
    parser.add_argument("--odfpy-sample", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--generator",
        choices=("app", "bulk"),
        default="app",
        help="app: tenant_app.generate (A's, through the posting rules); bulk: this script's own",
    )
    parser.add_argument("--postgres", action="store_true", help="the suite's PostgreSQL instead of SQLite")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="bench-report-")
    if args.postgres:
        from tests.support import postgres

        url = postgres.fresh_database()
    else:
        url = f"sqlite:///{tmp.name}/county.db"
    engine = make_engine(url)
    started = time.perf_counter()
    made_by = generate(engine, args.vouchers, args.generator)
    print(f"generated by {made_by} on {engine.dialect.name} in {time.perf_counter() - started:.1f} s")

    def query() -> None:
        with session_scope(engine) as s:
            execution.query(s, year=YEAR, period=13)

    _report(engine, ExportFormat.HTML)  # warm-up: connections, templates, imports
    # Round-robin, so the machine's load (shared with other jobs) falls on every format alike.
    timed: dict[str, Callable[[], object]] = {
        "query": query,
        "html": lambda: _report(engine, ExportFormat.HTML),
        "xlsx": lambda: _report(engine, ExportFormat.XLSX),
        "ods": lambda: _report(engine, ExportFormat.ODS),
    }
    samples: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(args.repeat):
        for name, fn in timed.items():
            samples[name].append(_median_time(fn, 1))
    query_s, html_s, xlsx_s, ods_s = (statistics.median(samples[n]) for n in ("query", "html", "xlsx", "ods"))
    with session_scope(engine) as s:
        report = execution.query(s, year=YEAR, period=13)
        accounts = {t.code: t for t in ledger.account_totals(s, year=YEAR, period=13)}
    totals = report.totals()
    reconciled = (
        totals.spent == accounts[EXPENDITURE].balance and totals.carried == accounts[ENCUMBRANCES].balance
    )
    print(
        f"execution report: {len(report.rows)} lines; query {query_s:.3f} s; html {html_s:.3f} s; "
        f"xlsx {xlsx_s:.3f} s; ods {ods_s:.3f} s; reconciles with the ledger: {reconciled}"
    )

    started = time.perf_counter()
    sheet, rows = _ledger_sheet(engine, args.ledger_rows)
    ledger_query_s = time.perf_counter() - started

    def streamed() -> None:
        sheet.rows = iter(rows)
        ods.write(sheet, io.BytesIO())

    ledger_ods_s = _median_time(streamed, 1)
    sample = rows[: args.odfpy_sample]
    odfpy_sample_s = _median_time(lambda: odfpy_tree(sheet, sample, io.BytesIO()), 1)
    odfpy_s = odfpy_sample_s * len(rows) / max(1, len(sample))
    print(
        f"ledger: {len(rows)} rows (query + fetch {ledger_query_s:.2f} s); "
        f"streamed ODS {ledger_ods_s:.2f} s; "
        f"odfpy object tree {odfpy_sample_s:.2f} s for {len(sample)} rows, "
        f"{odfpy_s:.1f} s extrapolated to {len(rows)} (ratio {odfpy_s / ledger_ods_s:.0f}x)"
    )
    engine.dispose()
    if args.postgres:
        postgres.drop_database(url)
    tmp.cleanup()
    print(
        json.dumps(
            {
                "vouchers": args.vouchers,
                "generator": args.generator,
                "database": engine.dialect.name,
                "lines": len(report.rows),
                "html_s": round(html_s, 3),
                "xlsx_s": round(xlsx_s, 3),
                "ods_s": round(ods_s, 3),
                "query_s": round(query_s, 3),
                "reconciled": reconciled,
                "ledger_rows": len(rows),
                "ledger_ods_s": round(ledger_ods_s, 3),
                "odfpy_sample_rows": len(sample),
                "odfpy_s_extrapolated": round(odfpy_s, 2),
                "odfpy_ratio": round(odfpy_s / ledger_ods_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
