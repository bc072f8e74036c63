"""Budget page and 簽證 through the web UI: balances shown, certification accepted or refused with figures."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.integration.tenant_app.web_support import PASSWORD, County, csrf_of, login, make_app, seed_county


@pytest.fixture
def county(db_url: str) -> County:
    return seed_county(db_url)


@pytest.fixture
def client(county: County) -> Iterator[TestClient]:
    with TestClient(make_app(county.url)) as client:
        yield client


def _certify(client: TestClient, line: int, amount: str, purpose: str = "辦公用品") -> httpx.Response:
    token = csrf_of(client.get("/certifications").text)
    return client.post("/certifications", data={"budget_line_id": str(line), "amount": amount,
                                                "purpose": purpose, "period": "", "csrf_token": token})


def test_budget_page_shows_lines_with_separators(client: TestClient, county: County) -> None:
    login(client, "clerk", PASSWORD)
    page = client.get("/budget")
    assert page.status_code == 200
    assert "預算與餘額" in page.text and "業務費" in page.text
    assert '<td class="num available">100,000</td>' in page.text
    assert "民國" in page.text  # ROC year beside the Gregorian one


def test_certify_then_refuse_over_balance(client: TestClient, county: County) -> None:
    login(client, "clerk", PASSWORD)
    ok = _certify(client, county.line_a1, "60,000")
    assert ok.status_code == 200
    assert "簽證完成：第 1 號，金額 60,000 元，簽證後可用餘額 40,000 元。" in ok.text
    refused = _certify(client, county.line_a1, "50000")
    assert refused.status_code == 422
    assert "簽證未通過" in refused.text
    assert '<dd id="refusal-available">40,000 元</dd>' in refused.text
    assert '<dd id="refusal-requested">50,000 元</dd>' in refused.text
    assert "可用餘額不足：餘額 40,000 元，申請 50,000 元" in refused.text
    budget = client.get("/budget").text
    assert '<td class="num available">40,000</td>' in budget  # the refused one reserved nothing


def test_float_and_foreign_line_are_refused_by_the_form(client: TestClient, county: County) -> None:
    login(client, "clerk", PASSWORD)
    decimal = _certify(client, county.line_a1, "100.5")
    assert decimal.status_code == 422 and "須為整數元，不接受小數" in decimal.text
    foreign = _certify(client, county.line_b1, "100")
    assert foreign.status_code == 422 and "請選擇本機關的預算科目。" in foreign.text


def test_auditor_cannot_certify(client: TestClient, county: County) -> None:
    login(client, "auditor", PASSWORD)
    page = client.get("/certifications")
    assert page.status_code == 200 and 'id="certify-form"' not in page.text
    token = csrf_of(page.text)
    refused = client.post("/certifications", data={"budget_line_id": str(county.line_a1), "amount": "10",
                                                   "csrf_token": token})
    assert refused.status_code == 403 and "您的角色沒有「簽證」的權限。" in refused.text


def test_certify_needs_csrf(client: TestClient, county: County) -> None:
    login(client, "clerk", PASSWORD)
    refused = client.post("/certifications", data={"budget_line_id": str(county.line_a1), "amount": "10"})
    assert refused.status_code == 403 and "CSRF" in refused.text
    assert '<td class="num available">100,000</td>' in client.get("/budget").text


def _transfer(client: TestClient, source: int, target: int, amount: str) -> httpx.Response:
    token = csrf_of(client.get("/budget").text)
    return client.post("/budget/transfer", data={"from_line_id": str(source), "to_line_id": str(target),
                                                 "amount": amount, "reason": "調整", "csrf_token": token})


def test_transfer_rules_explained_and_applied(client: TestClient, county: County) -> None:
    login(client, "chief_accountant", PASSWORD)
    over = _transfer(client, county.line_a1, county.line_a2, "50,000")  # 20% of 200,000 may flow in
    assert over.status_code == 422 and "流用未執行" in over.text
    assert 'data-code="transfer_over_limit_in"' in over.text
    personnel = _transfer(client, county.line_a1, county.line_a3, "1,000")
    assert personnel.status_code == 422 and 'data-code="transfer_into_personnel"' in personnel.text
    ok = _transfer(client, county.line_a1, county.line_a2, "30,000")
    assert ok.status_code == 200 and "流用第 1 號完成：30,000 元。" in ok.text
    assert '<td class="num available">70,000</td>' in ok.text  # out of 業務費
    assert '<td class="num available">80,000</td>' in ok.text  # into 設備及投資


def test_clerk_has_no_transfer_form(client: TestClient, county: County) -> None:
    login(client, "clerk", PASSWORD)
    assert 'id="transfer-form"' not in client.get("/budget").text
    assert _transfer(client, county.line_a1, county.line_a2, "100").status_code == 403


def test_release_gives_the_encumbrance_back(client: TestClient, county: County) -> None:
    login(client, "clerk", PASSWORD)
    _certify(client, county.line_a1, "25,000")
    page = client.get("/certifications").text
    cert_id = re.search(r'/certifications/(\d+)/release', page)
    assert cert_id
    token = csrf_of(page)
    released = client.post(f"/certifications/{cert_id.group(1)}/release", data={"csrf_token": token})
    assert "已解除保留 25,000 元" in released.text
    assert '<td class="num available">100,000</td>' in client.get("/budget").text
    again = client.post(f"/certifications/{cert_id.group(1)}/release", data={"csrf_token": token})
    assert again.status_code == 422 and "此操作未執行" in again.text


def test_malformed_form_gets_a_zh_page_not_json(client: TestClient, county: County) -> None:
    login(client, "clerk", PASSWORD)
    token = csrf_of(client.get("/certifications").text)
    response = client.post("/certifications",
                           data={"budget_line_id": "abc", "amount": "1", "csrf_token": token})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("text/html")
    assert "表單資料不完整或格式錯誤" in response.text


def test_browsing_does_not_wait_for_the_sqlite_write_lock(sqlite_url: str) -> None:
    county = seed_county(sqlite_url)
    with TestClient(make_app(county.url)) as client:
        login(client, "clerk", PASSWORD)
        holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # what the certification writer holds while it commits
            started = time.monotonic()
            page = client.get("/budget")
            elapsed = time.monotonic() - started
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    assert page.status_code == 200 and "業務費" in page.text
    assert elapsed < 5  # a page that needed the lock would wait out the 10 s busy timeout
