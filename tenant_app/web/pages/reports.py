"""報表: run a report on screen (B's HTML fragment inside our layout) and download it as XLSX / ODS.

The numbers come from tenant_app.reports.catalog, the one entry point the API, the bench and the
tests use, so screen and files cannot disagree. Scope: the agency chosen in this session.
"""

from __future__ import annotations

import datetime as dt
import io
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Response, status
from markupsafe import Markup

from tenant_app.reports import catalog
from tenant_app.reports.catalog import ExportFormat, ReportKind, ReportRequest
from tenant_app.reports.execution import UnknownFiscalYearError
from tenant_app.reports.reading import snapshot_session
from tenant_app.rules.budget import FIRST_PERIOD, LAST_PERIOD
from tenant_app.security.permissions import Action
from tenant_app.services.certification import today
from tenant_app.web.context import Page, WebRefusal, WebRoute, user_page

router = APIRouter(route_class=WebRoute, include_in_schema=False)


def _request(current: Page, kind: ReportKind, period: int) -> ReportRequest:
    current.require(Action.RUN_REPORTS)
    agency = current.require_agency()
    year = current.require_fiscal_year()
    if not FIRST_PERIOD <= period <= LAST_PERIOD:
        raise WebRefusal(f"期別須在 {FIRST_PERIOD} 至 {LAST_PERIOD} 之間。",
                         status.HTTP_422_UNPROCESSABLE_CONTENT)
    return ReportRequest(kind, year.year, period, [agency.id])


def _render_report(current: Page, report: ReportRequest, fmt: ExportFormat) -> bytes:
    """Build and render in B's snapshot session: a long report never holds the write lock."""
    current.db.rollback()  # end the page's own transaction (on SQLite: the write lock) first
    with snapshot_session(current.request.app.state.tenant.engine) as db:
        county = catalog.county_name(db, current.settings.county_name)
        try:
            sheet = catalog.build(db, report, county=county, printed_at=dt.datetime.now(dt.UTC))
        except UnknownFiscalYearError as error:
            raise WebRefusal(f"查無 {report.year} 會計年度。", status.HTTP_404_NOT_FOUND) from error
        out = io.BytesIO()
        catalog.render(sheet, fmt, out)  # inside the session: the ledger's rows are a live cursor
        return out.getvalue()


@router.get("/reports")
def reports(
    kind: ReportKind | None = None,
    period: int | None = None,
    current: Page = Depends(user_page),
) -> Response:
    current.require(Action.RUN_REPORTS)
    period = period or today().month  # evaluated per request: the server runs across months
    fragment = None
    if kind is not None:
        report = _request(current, kind, period)
        # B's fragment is rendered by its own autoescaping Jinja2 environment: safe to embed as is.
        fragment = Markup(_render_report(current, report, ExportFormat.HTML).decode("utf-8"))
    return current.render(
        "reports.html", kinds=[(k, catalog.TITLES[k][0]) for k in ReportKind], chosen=kind, period=period,
        periods=range(FIRST_PERIOD, LAST_PERIOD + 1), fragment=fragment,
        formats=[ExportFormat.XLSX, ExportFormat.ODS],
    )


@router.get("/reports/download")
def download(
    kind: ReportKind,
    fmt: ExportFormat = Query(ExportFormat.XLSX, alias="format"),
    period: int | None = None,
    current: Page = Depends(user_page),
) -> Response:
    period = period or today().month
    report = _request(current, kind, period)
    body = _render_report(current, report, fmt)
    title = f"{catalog.TITLES[kind][0]}-{report.year - 1911}年-第{period}期.{fmt.value}"
    disposition = (f"attachment; filename=\"{catalog.filename(report, fmt)}\"; "
                   f"filename*=UTF-8''{quote(title)}")
    return Response(body, media_type=catalog.MEDIA_TYPES[fmt],
                    headers={"Content-Disposition": disposition})
