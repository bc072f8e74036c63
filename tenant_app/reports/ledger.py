"""Reports over the journal: general ledger (總分類帳), trial balance (試算表), balance sheet (平衡表).

Sums and running balances are computed by the database (GROUP BY, and a window SUM for the
ledger's balance column), so a year's journal is never summed row by row in Python; the general
ledger streams from the cursor into the writers.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from tenant_app.enums import AccountType, JournalKind
from tenant_app.models import Account, FiscalYear, JournalEntry, JournalLine
from tenant_app.reports.execution import UnknownFiscalYearError
from tenant_app.reports.sheet import Cell, Column, ColumnKind, ReportHeader, Sheet

JOURNAL_KIND_ZH = {JournalKind.RECEIPT: "收", JournalKind.PAYMENT: "支", JournalKind.TRANSFER: "轉"}


def _year_id(session: Session, year: int) -> int:
    year_id = session.scalar(select(FiscalYear.id).where(FiscalYear.year == year))
    if year_id is None:
        raise UnknownFiscalYearError(f"fiscal year {year} does not exist")
    return year_id


def _scope(stmt: Select, year_id: int, period: int, agency_ids: Collection[int] | None) -> Select:
    stmt = stmt.where(JournalEntry.fiscal_year_id == year_id, JournalEntry.period <= period)
    if agency_ids is not None:
        stmt = stmt.where(JournalEntry.agency_id.in_(list(agency_ids)))
    return stmt


# ---------------------------------------------------------------- trial balance


@dataclass(frozen=True)
class AccountTotal:
    code: str
    name: str
    type: AccountType
    debit: int
    credit: int

    @property
    def balance(self) -> int:
        """Debit-positive balance."""
        return self.debit - self.credit


def account_totals(
    session: Session, *, year: int, period: int, agency_ids: Collection[int] | None = None
) -> list[AccountTotal]:
    stmt = (
        select(
            Account.code,
            Account.name,
            Account.type,
            func.coalesce(func.sum(JournalLine.debit), 0),
            func.coalesce(func.sum(JournalLine.credit), 0),
        )
        .select_from(JournalLine)
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .join(Account, Account.code == JournalLine.account_code)
        .group_by(Account.code, Account.name, Account.type)
        .order_by(Account.code)
    )
    stmt = _scope(stmt, _year_id(session, year), period, agency_ids)
    return [
        AccountTotal(code, name, AccountType(kind), int(debit), int(credit))
        for code, name, kind, debit, credit in session.execute(stmt)
    ]


TRIAL_COLUMNS: Sequence[Column] = (
    Column("code", "科目代號", "Account", ColumnKind.TEXT, 10),
    Column("name", "科目名稱", "Name", ColumnKind.TEXT, 22),
    Column("debit", "借方總額", "Debits", ColumnKind.MONEY, 18),
    Column("credit", "貸方總額", "Credits", ColumnKind.MONEY, 18),
    Column("debit_balance", "借方餘額", "Debit balance", ColumnKind.MONEY, 18),
    Column("credit_balance", "貸方餘額", "Credit balance", ColumnKind.MONEY, 18),
)


def trial_balance_sheet(totals: Sequence[AccountTotal], header: ReportHeader) -> Sheet:
    numbers = [(t.debit, t.credit, max(t.balance, 0), max(-t.balance, 0)) for t in totals]
    rows: list[tuple[Cell, ...]] = [(t.code, t.name, *n) for t, n in zip(totals, numbers, strict=True)]
    sums = [sum(n[i] for n in numbers) for i in range(4)]
    return Sheet(header, TRIAL_COLUMNS, rows, ("合計", "", *sums))


# ---------------------------------------------------------------- balance sheet


class BalanceSection(StrEnum):
    ASSETS = "資產"
    LIABILITIES = "負債"
    NET_ASSETS = "淨資產"
    BUDGETARY = "預算控制科目"


BALANCE_COLUMNS: Sequence[Column] = (
    Column("section", "類別", "Section", ColumnKind.TEXT, 14),
    Column("code", "科目代號", "Account", ColumnKind.TEXT, 10),
    Column("name", "科目名稱", "Name", ColumnKind.TEXT, 22),
    Column("debit_side", "資產方", "Assets side", ColumnKind.MONEY, 18),
    Column("credit_side", "負債及淨資產方", "Liabilities and net assets side", ColumnKind.MONEY, 18),
)


@dataclass(frozen=True)
class BalanceRow:
    section: BalanceSection
    code: str
    name: str
    debit_side: int | None
    credit_side: int | None

    def cells(self) -> tuple[Cell, ...]:
        return (self.section.value, self.code, self.name, self.debit_side, self.credit_side)


def balance_sheet_rows(totals: Sequence[AccountTotal]) -> list[BalanceRow]:
    """Assets on the left; liabilities, fund balance and this year's surplus on the right.

    Revenue and expenditure are not closed into the fund balance until year end, so their net is
    shown as 本期賸餘（短絀）; budgetary control accounts (歲出保留數 / 準備) balance each other and
    are listed on their own sides, as in a government unit's 平衡表.
    """
    rows: list[BalanceRow] = []
    surplus = 0
    for t in totals:
        if t.type is AccountType.ASSET:
            rows.append(BalanceRow(BalanceSection.ASSETS, t.code, t.name, t.balance, None))
        elif t.type is AccountType.LIABILITY:
            rows.append(BalanceRow(BalanceSection.LIABILITIES, t.code, t.name, None, -t.balance))
        elif t.type is AccountType.EQUITY:
            rows.append(BalanceRow(BalanceSection.NET_ASSETS, t.code, t.name, None, -t.balance))
        elif t.type in (AccountType.REVENUE, AccountType.EXPENDITURE):
            surplus -= t.balance
        elif t.balance >= 0:
            rows.append(BalanceRow(BalanceSection.BUDGETARY, t.code, t.name, t.balance, None))
        else:
            rows.append(BalanceRow(BalanceSection.BUDGETARY, t.code, t.name, None, -t.balance))
    rows.append(BalanceRow(BalanceSection.NET_ASSETS, "", "本期賸餘（短絀）", None, surplus))
    return rows


def balance_sheet_sheet(totals: Sequence[AccountTotal], header: ReportHeader) -> Sheet:
    rows = balance_sheet_rows(totals)
    left = sum(r.debit_side or 0 for r in rows)
    right = sum(r.credit_side or 0 for r in rows)
    return Sheet(header, BALANCE_COLUMNS, [r.cells() for r in rows], ("合計", "", "", left, right))


# ---------------------------------------------------------------- general ledger


LEDGER_COLUMNS: Sequence[Column] = (
    Column("code", "科目代號", "Account", ColumnKind.TEXT, 10),
    Column("name", "科目名稱", "Name", ColumnKind.TEXT, 16),
    Column("date", "日期", "Date", ColumnKind.DATE, 12),
    Column("voucher", "傳票號碼", "Entry", ColumnKind.TEXT, 12),
    Column("description", "摘要", "Description", ColumnKind.TEXT, 24),
    Column("debit", "借方", "Debit", ColumnKind.MONEY, 16),
    Column("credit", "貸方", "Credit", ColumnKind.MONEY, 16),
    Column("balance", "餘額", "Balance", ColumnKind.MONEY, 18),
)


def ledger_rows(
    session: Session, *, year: int, period: int, agency_ids: Collection[int] | None = None, batch: int = 5000
) -> Iterator[tuple[Cell, ...]]:
    """Every journal line of the year up to `period`, by account and date, with a running balance."""
    order = (JournalEntry.entry_date, JournalEntry.kind, JournalEntry.number, JournalLine.id)
    running = func.sum(JournalLine.debit - JournalLine.credit).over(
        partition_by=JournalLine.account_code, order_by=order
    )
    stmt = (
        select(
            JournalLine.account_code,
            Account.name,
            JournalEntry.entry_date,
            JournalEntry.kind,
            JournalEntry.number,
            JournalEntry.description,
            JournalLine.debit,
            JournalLine.credit,
            running,
        )
        .select_from(JournalLine)
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .join(Account, Account.code == JournalLine.account_code)
        .order_by(JournalLine.account_code, *order)
    )
    stmt = _scope(stmt, _year_id(session, year), period, agency_ids).execution_options(yield_per=batch)
    for code, name, day, kind, number, text, debit, credit, balance in session.execute(stmt):
        label = f"{JOURNAL_KIND_ZH[JournalKind(kind)]}-{number:06d}"
        yield (code, name, day, label, text, debit or None, credit or None, int(balance))


def ledger_sheet(
    session: Session,
    header: ReportHeader,
    *,
    year: int,
    period: int,
    agency_ids: Collection[int] | None = None,
) -> Sheet:
    totals = account_totals(session, year=year, period=period, agency_ids=agency_ids)
    debit = sum(t.debit for t in totals)
    credit = sum(t.credit for t in totals)
    rows = ledger_rows(session, year=year, period=period, agency_ids=agency_ids)
    return Sheet(header, LEDGER_COLUMNS, rows, ("合計", "", None, "", "", debit, credit, None))
