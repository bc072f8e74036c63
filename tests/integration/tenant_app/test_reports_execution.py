"""Reports over data written by the application's services, on SQLite and PostgreSQL: the
execution report's figures, its reconciliation with the ledger, and exports that read back to the
screen's numbers."""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Iterator

import openpyxl
import pytest
from odf.opendocument import load as load_ods
from odf.table import TableCell, TableRow
from sqlalchemy import Engine

from tenant_app.db import make_engine, session_scope
from tenant_app.reports import execution, html, ledger, ods, xlsx
from tenant_app.reports.sheet import ColumnKind, ReportHeader, Sheet
from tenant_app.services.chart import ENCUMBRANCES, EXPENDITURE

from . import b_county

PRINTED = dt.datetime(2026, 4, 1, 1, 0, tzinfo=dt.UTC)


@pytest.fixture
def county(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    ids = b_county.build(engine)
    b_county.populate(engine, ids)
    yield engine
    engine.dispose()


def _by_object(report: execution.ExecutionReport) -> dict[str, execution.ExecutionRow]:
    return {r.object_code: r for r in report.rows}


def test_execution_report_figures_per_line(county: Engine) -> None:
    with session_scope(county) as s:
        report = execution.query(s, year=2026, period=3)
    rows = _by_object(report)
    office, roads, staff = rows["2000"], rows["3000"], rows["1000"]
    # 業務費: certified 120 000, of which 100 000 paid; 30 000 paid directly; period-5 payment excluded.
    assert (office.budget, office.allotted, office.certified) == (800_000, 600_000, 120_000)
    assert (office.spent, office.carried, office.remaining) == (130_000, 20_000, 650_000)
    assert office.rate == pytest.approx(150_000 / 600_000)
    # 設備及投資: 1 000 000 certified, 600 000 paid, 150 000 released; the period-4 one not yet.
    assert (roads.certified, roads.spent, roads.carried) == (1_000_000, 600_000, 250_000)
    assert roads.remaining == 5_000_000 - 600_000 - 250_000
    assert (staff.spent, staff.carried, staff.rate) == (0, 0, 0)
    year_end = _by_object(execution.query(s, year=2026, period=13))
    assert (year_end["2000"].spent, year_end["3000"].certified, year_end["3000"].carried) == (
        137_000,
        1_300_000,
        550_000,
    )


def test_execution_totals_equal_the_ledger(county: Engine) -> None:
    for period in (3, 13):
        with session_scope(county) as s:
            totals = execution.query(s, year=2026, period=period).totals()
            accounts = {t.code: t for t in ledger.account_totals(s, year=2026, period=period)}
        assert totals.spent == accounts[EXPENDITURE].debit - accounts[EXPENDITURE].credit
        assert totals.certified == accounts[ENCUMBRANCES].debit
        assert totals.carried == accounts[ENCUMBRANCES].balance


def test_trial_balance_and_balance_sheet_balance(county: Engine) -> None:
    with session_scope(county) as s:
        accounts = ledger.account_totals(s, year=2026, period=13)
    header = ReportHeader("基隆市", "試算表", "Trial balance", 2026, 13, PRINTED)
    trial = ledger.trial_balance_sheet(accounts, header)
    assert trial.totals is not None
    assert trial.totals[2] == trial.totals[3] and trial.totals[4] == trial.totals[5]
    sheet = ledger.balance_sheet_sheet(accounts, header)
    assert sheet.totals is not None and sheet.totals[3] == sheet.totals[4]


def _screen_numbers(page: str) -> list[int]:
    return [int(v) for v in re.findall(r'data-value="(-?\d+)"', page)]


def _sheet(engine: Engine) -> Sheet:
    with session_scope(engine) as s:
        report = execution.query(s, year=2026, period=3)
    return execution.to_sheet(report, county_name="基隆市", printed_at=PRINTED)


def test_exports_read_back_equal_the_screen(county: Engine) -> None:
    # Money columns only: rates are ratios whose data-value is a float, not matched by the pattern.
    money = [i for i, c in enumerate(execution.COLUMNS) if c.kind is ColumnKind.MONEY]
    screen = _screen_numbers(html.render(_sheet(county)))
    buf = io.BytesIO()
    xlsx.write(_sheet(county), buf)
    buf.seek(0)
    ws = openpyxl.load_workbook(buf).active
    assert ws is not None
    # Rows after the 3 header lines and the column labels, up to and including the totals row.
    xlsx_rows = [r for r in ws.iter_rows(min_row=5, values_only=True) if r[4] is not None]
    from_xlsx = [r[i] for r in xlsx_rows for i in money]
    buf = io.BytesIO()
    ods.write(_sheet(county), buf)
    buf.seek(0)
    table = load_ods(buf).spreadsheet.getElementsByType(TableRow)
    ods_rows = [cells for row in table[4:] if len(cells := row.getElementsByType(TableCell)) > 4]
    from_ods = [int(r[i].getAttribute("value")) for r in ods_rows for i in money]
    # Three budget lines, a 小計 after each of the two programmes, and the totals row.
    assert len(screen) == 6 * len(money)
    labels = [r[1] for r in xlsx_rows]
    assert labels[2] == "小計 P01 一般行政" and labels[4] == "小計 P02 道路養護"
    assert [a + b for a, b in zip(xlsx_rows[0][4:10], xlsx_rows[1][4:10], strict=True)] == list(
        xlsx_rows[2][4:10]
    )
    assert ws.cell(row=5 + 2, column=5).font.b  # the subtotal is bold
    assert from_xlsx == screen
    assert from_ods == screen
    with session_scope(county) as s:
        totals = execution.query(s, year=2026, period=3).totals()
    spent_column = [c.key for c in execution.COLUMNS].index("spent")
    assert xlsx_rows[-1][spent_column] == totals.spent


def test_general_ledger_streams_with_running_balance_and_totals(county: Engine) -> None:
    header = ReportHeader("基隆市", "總分類帳", "General ledger", 2026, 13, PRINTED)
    with session_scope(county) as s:
        sheet = ledger.ledger_sheet(s, header, year=2026, period=13)
        rows = list(sheet.rows)
        accounts = {t.code: t for t in ledger.account_totals(s, year=2026, period=13)}
    last_balance: dict[str, int] = {}
    for code, *_rest, balance in rows:
        assert isinstance(balance, int)
        last_balance[str(code)] = balance
    assert last_balance == {code: t.balance for code, t in accounts.items()}
    assert sheet.totals is not None and sheet.totals[5] == sheet.totals[6]
    buf = io.BytesIO()
    sheet.rows = iter(rows)
    ods.write(sheet, buf)
    buf.seek(0)
    read = [r.getElementsByType(TableCell) for r in load_ods(buf).spreadsheet.getElementsByType(TableRow)]
    assert len(read) == 3 + 1 + len(rows) + 1
    # The exported totals row carries the ledger's debit and credit totals, as numbers.
    debit_total = sum(t.debit for t in accounts.values())
    credit_total = sum(t.credit for t in accounts.values())
    assert [int(c.getAttribute("value")) for c in read[-1][5:7]] == [debit_total, credit_total]
    # And the body's debits, read back, add up to the same total.
    assert sum(int(r[5].getAttribute("value") or 0) for r in read[4:-1]) == debit_total
