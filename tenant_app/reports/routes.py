"""Report downloads under /api/v1/reports: /{kind}?format=html|xlsx|ods&year=&period=&agency=.

`agency` (an agency id) narrows the report to one agency, which must be granted to the caller;
without it the report covers every agency granted to the caller. HTML is the fragment the web UI
embeds; XLSX and ODS come as attachments.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterator
from typing import IO
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from tenant_app.auth import Principal, check_agency, require_action
from tenant_app.domains import IdParam, PeriodParam, YearParam
from tenant_app.reports import catalog
from tenant_app.reports.catalog import ExportFormat, ReportKind, ReportRequest
from tenant_app.reports.execution import UnknownFiscalYearError
from tenant_app.reports.reading import snapshot_session
from tenant_app.security.permissions import Action

router = APIRouter(prefix="/api/v1/reports", tags=["reports"])

_SPOOL_BYTES = 8 * 1024 * 1024  # larger exports (a year's ledger) spill to a temporary file
_CHUNK = 256 * 1024


def _chunks(spool: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := spool.read(_CHUNK):
            yield chunk
    finally:
        spool.close()


@router.get("/{kind}", response_model=None)
def download(
    request: Request,
    kind: ReportKind,
    year: YearParam,
    period: PeriodParam = 13,
    agency: IdParam | None = None,
    fmt: ExportFormat = Query(ExportFormat.HTML, alias="format"),
    principal: Principal = Depends(require_action(Action.RUN_REPORTS)),
) -> Response:
    if agency is not None:
        check_agency(principal, agency)
    agencies = [agency] if agency is not None else sorted(principal.agency_ids)
    report = ReportRequest(kind, year, period, agencies)
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 - closed by _chunks
    # A snapshot that takes no write lock: a long report never holds up certifications.
    with snapshot_session(request.app.state.tenant.engine) as db:
        county = catalog.county_name(db, request.app.state.tenant.settings.county_name)
        try:
            sheet = catalog.build(db, report, county=county, printed_at=dt.datetime.now(dt.UTC))
            # Rendered while the session is open (the ledger's rows are a live cursor), then streamed.
            catalog.render(sheet, fmt, spool)
        except UnknownFiscalYearError:
            spool.close()
            return JSONResponse(
                {
                    "code": "unknown_fiscal_year",
                    "message": f"查無 {year} 會計年度",
                    "message_en": f"fiscal year {year} does not exist",
                },
                status_code=404,
            )
        except BaseException:
            spool.close()
            raise
    spool.seek(0)
    if fmt is ExportFormat.HTML:
        return HTMLResponse(spool.read().decode("utf-8"))
    name = catalog.filename(report, fmt)
    title = f"{catalog.TITLES[kind][0]}-{year - 1911}年-第{period}期.{fmt.value}"
    disposition = f"attachment; filename=\"{name}\"; filename*=UTF-8''{quote(title)}"
    return StreamingResponse(
        _chunks(spool),
        media_type=catalog.MEDIA_TYPES[fmt],
        headers={"Content-Disposition": disposition},
    )
