"""傳票 and 結帳 through the web UI: entries posted by 簽證 are listed, reversed, periods closed in order."""

from __future__ import annotations

import re
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


def _as(client: TestClient, username: str) -> None:
    client.cookies.clear()
    login(client, username, PASSWORD)


def _post(client: TestClient, path: str, data: dict[str, str], page: str) -> httpx.Response:
    return client.post(path, data={**data, "csrf_token": csrf_of(client.get(page).text)})


def test_certification_posts_an_entry_that_can_be_reversed_once(client: TestClient, county: County) -> None:
    _as(client, "clerk")
    _post(client, "/certifications", {"budget_line_id": str(county.line_a1), "amount": "7000"},
          "/certifications")
    page = client.get("/journal")
    assert page.status_code == 200 and "簽證 1" in page.text
    assert '<td class="num">7,000</td>' in page.text
    assert '<span class="badge bad">已沖銷</span>' not in page.text
    entry_id = re.search(r'data-entry-id="(\d+)"', page.text)
    assert entry_id
    # A clerk may not post or reverse journal entries.
    refused = _post(client, f"/journal/{entry_id.group(1)}/reverse", {"reason": "x"}, "/journal")
    assert refused.status_code == 403

    _as(client, "accountant")
    reversed_page = _post(client, f"/journal/{entry_id.group(1)}/reverse", {"reason": "金額誤植"},
                          "/journal")
    assert reversed_page.status_code == 200 and "已沖銷傳票第 1 號" in reversed_page.text
    assert '<span class="badge bad">已沖銷</span>' in reversed_page.text
    again = _post(client, f"/journal/{entry_id.group(1)}/reverse", {"reason": "再一次"}, "/journal")
    assert again.status_code == 409 and "此操作未執行" in again.text


def test_manual_entry_must_balance_and_have_a_description(client: TestClient, county: County) -> None:
    _as(client, "accountant")
    page = client.get("/journal").text
    accounts = re.findall(r'<option value="([0-9A-Za-z]+)">', page.split('id="debit_account"')[1])
    assert len(accounts) >= 2
    ok = _post(client, "/journal", {"debit_account": accounts[0], "credit_account": accounts[1],
                                    "amount": "1,500", "period": "", "description": "調整"}, "/journal")
    assert ok.status_code == 200 and "已過帳轉帳傳票第" in ok.text
    missing = _post(client, "/journal", {"debit_account": accounts[0], "credit_account": accounts[1],
                                         "amount": "1500", "description": " "}, "/journal")
    assert missing.status_code == 422 and "請填寫摘要。" in missing.text


def test_periods_close_in_order_and_closed_period_refuses_postings(
    client: TestClient, county: County
) -> None:
    _as(client, "chief_accountant")
    page = client.get("/periods")
    assert page.status_code == 200 and "結帳第 1 期" in page.text
    out_of_order = _post(client, "/periods/close", {"period": "3"}, "/periods")
    assert out_of_order.status_code == 409 and "此操作未執行" in out_of_order.text
    closed = _post(client, "/periods/close", {"period": "1"}, "/periods")
    assert "第 1 期已月結" in closed.text and "結帳第 2 期" in closed.text
    refused = _post(client, "/certifications", {"budget_line_id": str(county.line_a1), "amount": "10",
                                                "period": "1"}, "/certifications")
    assert refused.status_code == 422 and "簽證未通過" in refused.text
    _as(client, "clerk")
    assert client.get("/periods").status_code == 403


def test_filters_accept_all_and_refuse_unknown_values(client: TestClient, county: County) -> None:
    _as(client, "clerk")
    _post(client, "/certifications", {"budget_line_id": str(county.line_a1), "amount": "500"},
          "/certifications")
    assert "簽證 1" in client.get("/journal", params={"kind": "", "period": ""}).text  # 全部
    assert "簽證 1" not in client.get("/journal", params={"kind": "receipt"}).text
    bad = client.get("/journal", params={"kind": "bogus"})
    assert bad.status_code == 422 and "種類不正確：bogus" in bad.text
    assert client.get("/vouchers", params={"status": ""}).status_code == 200
    assert client.get("/vouchers", params={"status": "nope"}).status_code == 422
