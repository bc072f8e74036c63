"""Which reports exist, and building and rendering any of them: the one entry point for routes,
the web UI, the bench and tests, so all of them show the same numbers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import IO

from sqlalchemy import select
from sqlalchemy.orm import Session

from tenant_app.models import Agency, County
from tenant_app.reports import execution, html, ledger, ods, xlsx
from tenant_app.reports.sheet import ReportHeader, Sheet


class ReportKind(StrEnum):
    EXECUTION = "execution"  # 歲出預算執行表
    LEDGER = "ledger"  # 總分類帳
    TRIAL_BALANCE = "trial-balance"  # 試算表
    BALANCE_SHEET = "balance-sheet"  # 平衡表


class ExportFormat(StrEnum):
    HTML = "html"
    XLSX = "xlsx"
    ODS = "ods"


MEDIA_TYPES = {
    ExportFormat.HTML: "text/html; charset=utf-8",
    ExportFormat.XLSX: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ExportFormat.ODS: "application/vnd.oasis.opendocument.spreadsheet",
}

TITLES = {
    ReportKind.EXECUTION: (execution.TITLE_ZH, execution.TITLE_EN),
    ReportKind.LEDGER: ("總分類帳", "General ledger"),
    ReportKind.TRIAL_BALANCE: ("試算表", "Trial balance"),
    ReportKind.BALANCE_SHEET: ("平衡表", "Balance sheet"),
}


@dataclass(frozen=True)
class ReportRequest:
    kind: ReportKind
    year: int
    period: int
    agency_ids: Collection[int] | None = None  # None: the whole county


def county_name(session: Session, fallback: str) -> str:
    return session.scalar(select(County.name).order_by(County.id).limit(1)) or fallback


def _agency_label(session: Session, agency_ids: Collection[int] | None) -> str:
    if agency_ids is None:
        return ""
    names = session.scalars(select(Agency.name).where(Agency.id.in_(list(agency_ids))).order_by(Agency.code))
    return "、".join(names)


def build(session: Session, request: ReportRequest, *, county: str, printed_at: dt.datetime) -> Sheet:
    """The report as a Sheet; the general ledger's rows stay a cursor until a writer consumes them."""
    title_zh, title_en = TITLES[request.kind]
    agency_name = _agency_label(session, request.agency_ids)
    header = ReportHeader(county, title_zh, title_en, request.year, request.period, printed_at, agency_name)
    year, period, agencies = request.year, request.period, request.agency_ids
    if request.kind is ReportKind.EXECUTION:
        report = execution.query(session, year=year, period=period, agency_ids=agencies)
        return execution.to_sheet(report, county_name=county, printed_at=printed_at, agency_name=agency_name)
    if request.kind is ReportKind.LEDGER:
        return ledger.ledger_sheet(session, header, year=year, period=period, agency_ids=agencies)
    totals = ledger.account_totals(session, year=year, period=period, agency_ids=agencies)
    if request.kind is ReportKind.TRIAL_BALANCE:
        return ledger.trial_balance_sheet(totals, header)
    return ledger.balance_sheet_sheet(totals, header)


def render(sheet: Sheet, fmt: ExportFormat, out: IO[bytes]) -> None:
    if fmt is ExportFormat.HTML:
        out.write(html.render(sheet).encode("utf-8"))
    elif fmt is ExportFormat.XLSX:
        xlsx.write(sheet, out)
    else:
        ods.write(sheet, out)


def filename(request: ReportRequest, fmt: ExportFormat) -> str:
    """ASCII file name, e.g. execution-2026-p03.xlsx (the zh-TW title goes in filename*)."""
    return f"{request.kind.value}-{request.year}-p{request.period:02d}.{fmt.value}"
