"""People administration, delegations and the audit view through the web UI."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from tenant_app.db import make_engine, session_scope
from tenant_app.enums import Role
from tenant_app.models import AuditEvent, Delegation, User
from tenant_app.services.certification import today
from tests.integration.tenant_app.web_support import PASSWORD, County, csrf_of, login, make_app, seed_county


@pytest.fixture
def county(db_url: str) -> County:
    return seed_county(db_url)


@pytest.fixture
def client(county: County) -> Iterator[TestClient]:
    with TestClient(make_app(county.url)) as client:
        yield client


def _as(client: TestClient, username: str, password: str = PASSWORD) -> httpx.Response:
    client.cookies.clear()
    response = login(client, username, password)
    assert isinstance(response, httpx.Response)
    return response


def _post(client: TestClient, path: str, data: dict[str, object], page: str) -> httpx.Response:
    return client.post(path, data={**data, "csrf_token": csrf_of(client.get(page).text)})


def test_admin_creates_user_who_can_log_in_with_granted_agency_only(
    client: TestClient, county: County
) -> None:
    _as(client, "county_admin")
    form: dict[str, object] = {"username": "New.Clerk", "display_name": "新承辦", "role": "clerk",
                               "password": "long-enough-pw", "agency_ids": [str(county.agency_b)]}
    created = _post(client, "/admin/users", form, "/admin/users")
    assert created.status_code == 200 and "已建立使用者 new.clerk。" in created.text
    short = _post(client, "/admin/users", {"username": "x2", "display_name": "x", "role": "clerk",
                                           "password": "short"}, "/admin/users")
    assert short.status_code == 422 and "密碼至少需 10 個字元。" in short.text
    dup = _post(client, "/admin/users", {"username": "new.clerk", "display_name": "x", "role": "clerk",
                                         "password": "long-enough-pw"}, "/admin/users")
    assert dup.status_code == 422 and "帳號 new.clerk 已存在。" in dup.text
    home = _as(client, "new.clerk", "long-enough-pw")
    assert home.status_code == 200 and "乙機關" in home.text and "甲機關" not in home.text


def test_non_admin_cannot_reach_user_management(client: TestClient) -> None:
    for who in ("clerk", "auditor", "chief_accountant"):
        _as(client, who)
        assert client.get("/admin/users").status_code == 403


def test_deactivation_ends_sessions_and_token_works_until_revoked(client: TestClient, county: County) -> None:
    clerk_client = TestClient(client.app)
    _as(clerk_client, "clerk")
    assert clerk_client.get("/budget").status_code == 200
    _as(client, "county_admin")
    page = f"/admin/users/{county.users[Role.CLERK]}"
    issued = _post(client, f"{page}/tokens", {"name": "匯入", "days": "30"}, page)
    token = re.search(r"<code>(cct_[^<]+)</code>", issued.text)
    assert token and "只顯示這一次" in issued.text
    api = {"Authorization": f"Bearer {token.group(1)}"}
    assert client.get(f"/api/v1/budget-lines?agency_id={county.agency_a}", headers=api).status_code != 401
    token_id = re.search(r'/admin/tokens/(\d+)/revoke', client.get(page).text)
    assert token_id
    _post(client, f"/admin/tokens/{token_id.group(1)}/revoke", {}, page)
    assert client.get(f"/api/v1/budget-lines?agency_id={county.agency_a}", headers=api).status_code == 401

    updated = _post(client, page, {"display_name": "clerk 使用者", "role": "clerk", "active": "",
                                   "agency_ids": [str(county.agency_a)]}, page)
    assert "使用者資料已更新。" in updated.text
    # The clerk's open session ended with the deactivation.
    assert clerk_client.get("/budget", follow_redirects=False).status_code == 303
    assert _as(clerk_client, "clerk").status_code == 401


def test_admin_cannot_lock_themselves_out(client: TestClient, county: County) -> None:
    _as(client, "county_admin")
    page = f"/admin/users/{county.users[Role.COUNTY_ADMIN]}"
    refused = _post(client, page, {"display_name": "admin", "role": "clerk", "active": "1"}, page)
    assert refused.status_code == 409 and "不能停用自己" in refused.text


def test_delegation_is_used_for_signing_and_shown_on_the_voucher(client: TestClient, county: County) -> None:
    # The chief accountant names the accountant as delegate for today.
    _as(client, "chief_accountant")
    day = today().isoformat()
    bad = _post(client, "/delegations", {"delegate_id": str(county.users[Role.ACCOUNTANT]),
                                         "valid_from": day, "valid_to": "2000-01-01"}, "/delegations")
    assert bad.status_code == 422 and "代理迄日不得早於起日。" in bad.text
    made = _post(client, "/delegations", {"delegate_id": str(county.users[Role.ACCOUNTANT]),
                                          "valid_from": day, "valid_to": day, "reason": "公假"},
                 "/delegations")
    assert "代理設定已建立。" in made.text and "生效中" in made.text

    _as(client, "clerk")
    _post(client, "/certifications", {"budget_line_id": str(county.line_a1), "amount": "9000"},
          "/certifications")
    cert = re.search(r'certification_id=(\d+)', client.get("/certifications").text)
    assert cert
    created = _post(client, "/vouchers", {"certification_id": cert.group(1), "payee": "甲廠商", "period": "",
                                          "line_0_budget_line_id": str(county.line_a1),
                                          "line_0_amount": "9000", "einvoices": ""}, "/vouchers/new")
    voucher_url = str(created.url)
    _post(client, voucher_url.replace("http://testserver", "") + "/sign", {}, voucher_url)

    _as(client, "accountant")
    detail = client.get(voucher_url).text
    assert "代理 chief_accountant 使用者" in detail
    signed = _post(client, voucher_url.replace("http://testserver", "") + "/sign",
                   {"on_behalf_of": str(county.users[Role.CHIEF_ACCOUNTANT])}, voucher_url)
    assert "已簽核" in signed.text
    assert "主辦會計 accountant 使用者（代理 chief_accountant 使用者）" in signed.text


def test_delegation_form_refuses_self_and_foreign_delegates(client: TestClient, county: County) -> None:
    _as(client, "agency_head")
    day = (dt.date.today() + dt.timedelta(days=3)).isoformat()
    with session_scope(make_engine(county.url)) as db:
        outsider = User(username="outsider", display_name="外人", password_hash="x", role=Role.CLERK)
        db.add(outsider)
        db.flush()
        outsider_id = outsider.id
    refused = _post(client, "/delegations", {"delegate_id": str(outsider_id), "valid_from": day,
                                             "valid_to": day}, "/delegations")
    assert refused.status_code == 403 and "代理人須為同機關之在職人員。" in refused.text
    _as(client, "clerk")
    assert client.get("/delegations").status_code == 403


def test_auditor_sees_chain_verified_and_detects_an_edit(client: TestClient, county: County) -> None:
    _as(client, "clerk")
    _as(client, "auditor")
    page = client.get("/audit")
    assert page.status_code == 200
    assert "雜湊鏈驗證通過" in page.text and "auth.login" in page.text
    with session_scope(make_engine(county.url)) as db:
        first = db.scalars(select(AuditEvent.seq).order_by(AuditEvent.seq)).first()
        db.execute(update(AuditEvent).where(AuditEvent.seq == first).values(actor="mallory"))
    tampered = client.get("/audit")
    assert "雜湊鏈驗證未通過" in tampered.text and f"第 {first} 筆" in tampered.text
    _as(client, "clerk")
    assert client.get("/audit").status_code == 403


def test_signing_under_an_expired_delegation_is_refused(client: TestClient, county: County) -> None:
    yesterday = today() - dt.timedelta(days=1)
    with session_scope(make_engine(county.url)) as db:
        db.add(Delegation(principal_id=county.users[Role.CHIEF_ACCOUNTANT],
                          delegate_id=county.users[Role.ACCOUNTANT],
                          valid_from=yesterday - dt.timedelta(days=5), valid_to=yesterday, reason="已過期"))
    _as(client, "clerk")
    _post(client, "/certifications", {"budget_line_id": str(county.line_a1), "amount": "1000"},
          "/certifications")
    cert = re.search(r'certification_id=(\d+)', client.get("/certifications").text)
    assert cert
    created = _post(client, "/vouchers", {"certification_id": cert.group(1), "payee": "乙廠商", "period": "",
                                          "line_0_budget_line_id": str(county.line_a1),
                                          "line_0_amount": "1000", "einvoices": ""}, "/vouchers/new")
    path = str(created.url).replace("http://testserver", "")
    _post(client, f"{path}/sign", {}, path)
    _as(client, "accountant")
    detail = client.get(path).text
    assert 'id="sign-form"' not in detail  # the expired delegation is not offered
    forged = _post(client, f"{path}/sign", {"on_behalf_of": str(county.users[Role.CHIEF_ACCOUNTANT])}, path)
    assert forged.status_code == 403 and 'data-code="signatures_invalid"' in forged.text


def test_auditor_and_admin_cannot_be_delegates(client: TestClient, county: County) -> None:
    _as(client, "agency_head")
    page = client.get("/delegations").text
    assert "auditor 使用者" not in page and "county_admin 使用者" not in page
    assert "chief_accountant 使用者（主辦會計）" in page  # roles are labelled in zh-TW
    _as(client, "county_admin")
    day = today().isoformat()
    refused = _post(client, "/delegations", {"principal_id": str(county.users[Role.AGENCY_HEAD]),
                                             "delegate_id": str(county.users[Role.AUDITOR]),
                                             "valid_from": day, "valid_to": day}, "/delegations")
    assert refused.status_code == 422 and "稽核人員與系統管理者不能擔任簽核代理人。" in refused.text
    # The layout still names the logged-in user's own role.
    assert "county_admin 使用者</a>（系統管理者）" in refused.text
