"""歲出預算執行表: per budget line, what was budgeted, allotted, certified, spent, carried and left.

All aggregation happens in SQL: one GROUP BY per source table (allotments, certifications, paid
voucher lines), joined to the budget lines, so 50 000 vouchers become ~400 rows inside the
database and Python only touches the result.

Definitions (cumulative from period 1 to the chosen period):
  預算數   budget     statutory budget + amendments + transfers in − transfers out
  分配累計數 allotted  allotments of periods 1..p
  簽證數   certified  certifications dated in periods 1..p
  實支數   spent      lines of vouchers paid, dated in periods 1..p (certified or direct)
  保留數   carried    encumbrance still held: certified − paid against those certifications −
                     released; at year end (period 13) this is what is carried over
  賸餘數   remaining  budget − spent − carried
  執行率   rate       (spent + carried) ÷ allotted: what was executed of what was released so far
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields
from itertools import groupby

from sqlalchemy import Subquery, case, func, literal, select
from sqlalchemy.orm import Session

from tenant_app.enums import VoucherStatus
from tenant_app.models import (
    Agency,
    Allotment,
    BudgetLine,
    Certification,
    FiscalYear,
    PaymentVoucher,
    VoucherLine,
)
from tenant_app.reports.sheet import Cell, Column, ColumnKind, ReportHeader, Sheet, Subtotal


class _Derived:
    """賸餘數 and 執行率, derived the same way for a line and for the totals."""

    budget: int
    allotted: int
    spent: int
    carried: int

    @property
    def remaining(self) -> int:
        return self.budget - self.spent - self.carried

    @property
    def rate(self) -> float | None:
        return (self.spent + self.carried) / self.allotted if self.allotted else None


@dataclass(frozen=True)
class ExecutionRow(_Derived):
    agency_code: str
    programme_code: str
    programme_name: str
    sub_item: str
    object_code: str
    object_name: str
    budget: int
    allotted: int
    certified: int
    spent: int
    carried: int


@dataclass(frozen=True)
class ExecutionTotals(_Derived):
    budget: int
    allotted: int
    certified: int
    spent: int
    carried: int


@dataclass(frozen=True)
class ExecutionReport:
    fiscal_year: int
    period: int
    rows: list[ExecutionRow]

    def totals(self) -> ExecutionTotals:
        return sum_rows(self.rows)


def sum_rows(rows: Sequence[ExecutionRow]) -> ExecutionTotals:
    return ExecutionTotals(**{f.name: sum(getattr(r, f.name) for r in rows) for f in fields(ExecutionTotals)})


class UnknownFiscalYearError(LookupError):
    pass


def _allotted(period: int) -> Subquery:
    return (
        select(Allotment.budget_line_id.label("line_id"), func.sum(Allotment.amount).label("amount"))
        .where(Allotment.period <= period)
        .group_by(Allotment.budget_line_id)
        .subquery()
    )


def _certified(period: int, year_id: int) -> Subquery:
    return (
        select(
            Certification.budget_line_id.label("line_id"),
            func.sum(Certification.amount).label("amount"),
            func.sum(Certification.released_amount).label("released"),
        )
        .where(Certification.period <= period, Certification.fiscal_year_id == year_id)
        .group_by(Certification.budget_line_id)
        .subquery()
    )


def _spent(period: int, year_id: int) -> Subquery:
    # Payments against a certification are counted separately: they reduce what is carried.
    against_certification = func.sum(
        case((PaymentVoucher.certification_id.isnot(None), VoucherLine.amount), else_=0)
    )
    return (
        select(
            VoucherLine.budget_line_id.label("line_id"),
            func.sum(VoucherLine.amount).label("amount"),
            against_certification.label("on_certified"),
        )
        .join(PaymentVoucher, PaymentVoucher.id == VoucherLine.voucher_id)
        .where(
            PaymentVoucher.status == VoucherStatus.PAID,
            PaymentVoucher.period <= period,
            PaymentVoucher.fiscal_year_id == year_id,
        )
        .group_by(VoucherLine.budget_line_id)
        .subquery()
    )


def query(
    session: Session, *, year: int, period: int, agency_ids: Collection[int] | None = None
) -> ExecutionReport:
    """The execution report of one fiscal year up to `period`, for the given agencies (None: all)."""
    year_id = session.scalar(select(FiscalYear.id).where(FiscalYear.year == year))
    if year_id is None:
        raise UnknownFiscalYearError(f"fiscal year {year} does not exist")
    allotted = _allotted(period)
    certified = _certified(period, year_id)
    spent = _spent(period, year_id)
    zero = literal(0)
    stmt = (
        select(
            Agency.code,
            BudgetLine.programme_code,
            BudgetLine.programme_name,
            BudgetLine.sub_item,
            BudgetLine.object_code,
            BudgetLine.object_name,
            (
                BudgetLine.budget
                + BudgetLine.amended
                + BudgetLine.transferred_in
                - BudgetLine.transferred_out
            ).label("budget"),
            func.coalesce(allotted.c.amount, zero),
            func.coalesce(certified.c.amount, zero),
            func.coalesce(spent.c.amount, zero),
            (
                func.coalesce(certified.c.amount, zero)
                - func.coalesce(certified.c.released, zero)
                - func.coalesce(spent.c.on_certified, zero)
            ).label("carried"),
        )
        .join(Agency, Agency.id == BudgetLine.agency_id)
        .outerjoin(allotted, allotted.c.line_id == BudgetLine.id)
        .outerjoin(certified, certified.c.line_id == BudgetLine.id)
        .outerjoin(spent, spent.c.line_id == BudgetLine.id)
        .where(BudgetLine.fiscal_year_id == year_id)
        .order_by(Agency.code, BudgetLine.programme_code, BudgetLine.sub_item, BudgetLine.object_code)
    )
    if agency_ids is not None:
        stmt = stmt.where(BudgetLine.agency_id.in_(list(agency_ids)))
    rows = [ExecutionRow(*(r[:6]), *(int(v) for v in r[6:])) for r in session.execute(stmt)]
    return ExecutionReport(fiscal_year=year, period=period, rows=rows)


COLUMNS: Sequence[Column] = (
    Column("agency", "機關", "Agency", ColumnKind.TEXT, 8),
    Column("programme", "計畫", "Programme", ColumnKind.TEXT, 24),
    Column("sub_item", "分支計畫", "Sub-item", ColumnKind.TEXT, 16),
    Column("object", "用途別科目", "Object of expenditure", ColumnKind.TEXT, 20),
    Column("budget", "預算數", "Budget", ColumnKind.MONEY, 16),
    Column("allotted", "分配累計數", "Allotted to date", ColumnKind.MONEY, 16),
    Column("certified", "簽證數", "Certified", ColumnKind.MONEY, 16),
    Column("spent", "實支數", "Actual spent", ColumnKind.MONEY, 16),
    Column("carried", "保留數", "Carried over", ColumnKind.MONEY, 16),
    Column("remaining", "賸餘數", "Remaining", ColumnKind.MONEY, 16),
    Column("rate", "執行率", "Execution rate", ColumnKind.RATE, 10),
)

TITLE_ZH = "歲出預算執行表"
TITLE_EN = "Budget execution report"


def to_sheet(
    report: ExecutionReport, *, county_name: str, printed_at: dt.datetime, agency_name: str = ""
) -> Sheet:
    header = ReportHeader(
        county_name=county_name,
        title_zh=TITLE_ZH,
        title_en=TITLE_EN,
        fiscal_year=report.fiscal_year,
        period=report.period,
        printed_at=printed_at,
        agency_name=agency_name,
    )
    rows: list[tuple[Cell, ...]] = []
    # Lines come ordered by agency and programme: each programme closes with its 小計.
    for (agency, programme, name), group in groupby(
        report.rows, key=lambda r: (r.agency_code, r.programme_code, r.programme_name)
    ):
        members = list(group)
        for r in members:
            rows.append(
                (
                    r.agency_code,
                    f"{r.programme_code} {r.programme_name}",
                    r.sub_item,
                    f"{r.object_code} {r.object_name}",
                    r.budget,
                    r.allotted,
                    r.certified,
                    r.spent,
                    r.carried,
                    r.remaining,
                    r.rate,
                )
            )
        sub = sum_rows(members)
        rows.append(
            Subtotal(
                (
                    agency,
                    f"小計 {programme} {name}",
                    "",
                    "",
                    sub.budget,
                    sub.allotted,
                    sub.certified,
                    sub.spent,
                    sub.carried,
                    sub.remaining,
                    sub.rate,
                )
            )
        )
    t = report.totals()
    totals = ("合計", "", "", "", t.budget, t.allotted, t.certified, t.spent, t.carried, t.remaining, t.rate)
    return Sheet(
        header=header,
        columns=COLUMNS,
        rows=rows,
        totals=totals,
        notes=["執行率 =（實支數 + 保留數）÷ 分配累計數；保留數 = 簽證數 − 已支付簽證款 − 註銷數"],
    )
