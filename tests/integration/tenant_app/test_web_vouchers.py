"""Voucher flow through the web UI: prepare → three signatures → pay, and the refusals on the way."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import httpx
import openpyxl
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tenant_app.db import make_engine, session_scope
from tenant_app.models import AuditEvent, PaymentVoucher
from tests.integration.tenant_app.web_support import PASSWORD, County, csrf_of, login, make_app, seed_county


@pytest.fixture
def county(db_url: str) -> County:
    return seed_county(db_url)


@pytest.fixture
def app_client(county: County) -> Iterator[TestClient]:
    with TestClient(make_app(county.url)) as client:
        yield client


def _as(client: TestClient, username: str) -> None:
    client.cookies.clear()
    response = login(client, username, PASSWORD)
    assert isinstance(response, httpx.Response) and response.status_code == 200, username


def _post(client: TestClient, path: str, data: dict[str, str], page: str) -> httpx.Response:
    return client.post(path, data={**data, "csrf_token": csrf_of(client.get(page).text)})


def _certify(client: TestClient, line: int, amount: int) -> None:
    ok = _post(client, "/certifications", {"budget_line_id": str(line), "amount": str(amount),
                                           "purpose": "購置投影機", "period": ""}, "/certifications")
    assert "簽證完成" in ok.text


def _prepare(client: TestClient, county: County, amount: int, invoice: str) -> tuple[httpx.Response, int]:
    new = client.get("/vouchers/new")
    cert_id = re.search(r'<option value="(\d+)"[^>]*>第 \d+ 號', new.text)
    assert cert_id, "the open certification is offered"
    response = _post(client, "/vouchers", {
        "certification_id": cert_id.group(1), "payee": "大同資訊股份有限公司", "payee_account": "004-1234567",
        "period": "", "description": "投影機", "einvoices": invoice,
        "line_0_budget_line_id": str(county.line_a2), "line_0_amount": f"{amount:,}",
        "line_0_description": "投影機一台",
    }, "/vouchers/new")
    voucher = re.search(r"/vouchers/(\d+)", str(response.url))
    return response, int(voucher.group(1)) if voucher else 0


def test_full_flow_prepare_sign_pay(app_client: TestClient, county: County) -> None:
    client = app_client
    _as(client, "clerk")
    _certify(client, county.line_a2, 30_000)
    created, voucher_id = _prepare(client, county, 30_000, "AB12345678")
    assert created.status_code == 200 and "付款憑單第 1 號已建立" in created.text
    assert "AB12345678" in created.text and "30,000" in created.text
    submitted = _post(client, f"/vouchers/{voucher_id}/sign", {}, f"/vouchers/{voucher_id}")
    assert "已簽核付款憑單第 1 號" in submitted.text
    assert '<strong id="next-step">主辦會計</strong>' in submitted.text
    # The preparer cannot also sign as chief accountant: no sign form, the reason instead, and a
    # forged POST is refused by the signing rule itself.
    assert 'id="sign-form"' not in submitted.text and 'id="why-not"' in submitted.text
    again = _post(client, f"/vouchers/{voucher_id}/sign", {}, f"/vouchers/{voucher_id}")
    assert again.status_code == 403 and "此操作未執行" in again.text

    _as(client, "chief_accountant")
    chief = _post(client, f"/vouchers/{voucher_id}/sign", {}, f"/vouchers/{voucher_id}")
    assert '<strong id="next-step">機關首長</strong>' in chief.text
    assert "簽章鏈驗證通過" in chief.text

    _as(client, "agency_head")
    head = _post(client, f"/vouchers/{voucher_id}/sign", {}, f"/vouchers/{voucher_id}")
    assert "已核准，可撥付" in head.text and "已核准" in head.text
    assert "機關首長 agency_head 使用者" in head.text

    _as(client, "accountant")
    waiting = client.get("/payments")
    assert "大同資訊股份有限公司" in waiting.text
    paid = _post(client, f"/vouchers/{voucher_id}/pay", {}, "/payments")
    assert "付款憑單第 1 號已撥付 30,000 元。" in paid.text
    assert '<span class="badge ok" id="voucher-status">已撥付</span>' in paid.text

    with session_scope(make_engine(county.url)) as db:
        assert db.scalars(select(PaymentVoucher.status)).one().value == "paid"
        actions = list(db.scalars(select(AuditEvent.action).order_by(AuditEvent.seq)))
    assert actions.count("voucher.signed") == 3
    assert "voucher.pay" in actions and "voucher.create" in actions


def test_duplicate_einvoice_and_bad_format_are_refused(app_client: TestClient, county: County) -> None:
    client = app_client
    _as(client, "clerk")
    _certify(client, county.line_a2, 20_000)
    _, first = _prepare(client, county, 5_000, "CD00000001")
    assert first
    duplicate, none = _prepare(client, county, 5_000, "CD00000001")
    assert duplicate.status_code == 422 and none == 0
    assert "電子發票 CD00000001 已被使用" in duplicate.text
    bad, _ = _prepare(client, county, 5_000, "12345")
    assert bad.status_code == 422 and "電子發票號碼格式錯誤：12345" in bad.text


def test_reject_needs_reason_and_returns_to_preparer(app_client: TestClient, county: County) -> None:
    client = app_client
    _as(client, "clerk")
    _certify(client, county.line_a2, 10_000)
    _, voucher_id = _prepare(client, county, 10_000, "EF00000001")
    _post(client, f"/vouchers/{voucher_id}/sign", {}, f"/vouchers/{voucher_id}")
    _as(client, "chief_accountant")
    empty = _post(client, f"/vouchers/{voucher_id}/reject", {"reason": " "}, f"/vouchers/{voucher_id}")
    assert empty.status_code == 422 and "退回必須填寫理由。" in empty.text
    rejected = _post(client, f"/vouchers/{voucher_id}/reject", {"reason": "發票抬頭錯誤"},
                     f"/vouchers/{voucher_id}")
    assert "已退回承辦人" in rejected.text and "發票抬頭錯誤" in rejected.text
    assert '<span class="badge bad" id="voucher-status">已退回</span>' in rejected.text


def test_unapproved_voucher_is_not_paid_and_other_agency_is_hidden(
    app_client: TestClient, county: County
) -> None:
    client = app_client
    _as(client, "clerk")
    _certify(client, county.line_a2, 10_000)
    _, voucher_id = _prepare(client, county, 10_000, "GH00000001")
    _as(client, "accountant")
    refused = _post(client, f"/vouchers/{voucher_id}/pay", {}, "/payments")
    assert refused.status_code >= 400 and "此操作未執行" in refused.text
    # The auditor has no PAY right at all.
    _as(client, "auditor")
    assert client.get("/payments").status_code == 403
    # A user of agency A cannot open a voucher of another agency by guessing its id.
    with session_scope(make_engine(county.url)) as db:
        voucher = db.get_one(PaymentVoucher, voucher_id)
        voucher.agency_id = county.agency_b
    _as(client, "clerk")
    assert client.get(f"/vouchers/{voucher_id}").status_code == 403



def test_execution_report_on_screen_and_as_xlsx_after_payment(
    app_client: TestClient, county: County
) -> None:
    client = app_client
    _as(client, "clerk")
    _certify(client, county.line_a2, 12_345)
    _, voucher_id = _prepare(client, county, 12_345, "JK00000001")
    _post(client, f"/vouchers/{voucher_id}/sign", {}, f"/vouchers/{voucher_id}")
    for who in ("chief_accountant", "agency_head"):
        _as(client, who)
        _post(client, f"/vouchers/{voucher_id}/sign", {}, f"/vouchers/{voucher_id}")
    _as(client, "accountant")
    _post(client, f"/vouchers/{voucher_id}/pay", {}, "/payments")
    _as(client, "auditor")  # read-only users can run reports
    report = client.get("/reports", params={"kind": "execution", "period": "13"})
    assert report.status_code == 200
    assert "歲出預算執行表" in report.text
    assert 'data-value="12345">12,345</td>' in report.text  # spent on the equipment line
    download = client.get("/reports/download",
                          params={"kind": "execution", "format": "xlsx", "period": "13"})
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("application/vnd.openxmlformats")
    sheet = openpyxl.load_workbook(io.BytesIO(download.content), read_only=True).active
    assert sheet is not None
    values = [cell for row in sheet.iter_rows(values_only=True) for cell in row]
    assert 12_345 in values


def _approved(client: TestClient, county: County, amount: int, invoice: str) -> int:
    _as(client, "clerk")
    _certify(client, county.line_a2, amount)
    _, voucher_id = _prepare(client, county, amount, invoice)
    _post(client, f"/vouchers/{voucher_id}/sign", {}, f"/vouchers/{voucher_id}")
    for who in ("chief_accountant", "agency_head"):
        _as(client, who)
        _post(client, f"/vouchers/{voucher_id}/sign", {}, f"/vouchers/{voucher_id}")
    return voucher_id


def test_treasury_batch_file_is_downloaded_and_vouchers_marked_batched(
    app_client: TestClient, county: County
) -> None:
    client = app_client
    voucher_id = _approved(client, county, 8_000, "LM00000001")
    _as(client, "accountant")
    batch = _post(client, "/payments/batch", {}, "/payments")
    assert batch.status_code == 200
    assert batch.headers["content-disposition"] == 'attachment; filename="treasury-batch-00001.json"'
    document = batch.json()
    assert document["format"] == "countycloud.treasury.payment-batch.v1" and "signature" in document
    assert [p["amount"] for p in document["payments"]] == [8_000]
    assert "已送公庫" in client.get(f"/vouchers/{voucher_id}").text
    again = _post(client, "/payments/batch", {}, "/payments")
    assert again.status_code == 409 and 'data-code="nothing_to_batch"' in again.text


def test_edit_after_rejection_voids_signatures_and_restarts_approval(
    app_client: TestClient, county: County
) -> None:
    client = app_client
    _as(client, "clerk")
    _certify(client, county.line_a2, 6_000)
    _, voucher_id = _prepare(client, county, 6_000, "NP00000001")
    _post(client, f"/vouchers/{voucher_id}/sign", {}, f"/vouchers/{voucher_id}")
    _as(client, "chief_accountant")
    assert client.get(f"/vouchers/{voucher_id}/edit").status_code == 403  # only the preparer edits
    _post(client, f"/vouchers/{voucher_id}/reject", {"reason": "受款人名稱有誤"}, f"/vouchers/{voucher_id}")
    _as(client, "clerk")
    form = client.get(f"/vouchers/{voucher_id}/edit")
    assert form.status_code == 200 and "修改付款憑單第 1 號" in form.text and "NP00000001" in form.text
    edited = _post(client, f"/vouchers/{voucher_id}/edit", {
        "payee": "正確廠商股份有限公司", "period": "", "description": "", "einvoices": "NP00000001",
        "line_0_budget_line_id": str(county.line_a2), "line_0_amount": "5,000",
    }, f"/vouchers/{voucher_id}/edit")
    assert "已修改（第 2 版），原有簽核作廢" in edited.text
    assert "正確廠商股份有限公司" in edited.text and "尚未簽核。" in edited.text
    assert '<span class="num" id="voucher-amount">5,000</span>' in edited.text
    resubmitted = _post(client, f"/vouchers/{voucher_id}/sign", {}, f"/vouchers/{voucher_id}")
    assert '<strong id="next-step">主辦會計</strong>' in resubmitted.text
