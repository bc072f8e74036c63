"""Log-in, CSRF, rate limit, log-out and agency scope through the web UI (TestClient, real app)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tenant_app import audit
from tenant_app.db import session_factory
from tenant_app.enums import Role
from tenant_app.models import AuditEvent, User, UserAgency
from tests.integration.tenant_app.web_support import csrf_of, login, make_app
from tests.unit.tenant_app import auth_support
from tests.unit.tenant_app.auth_support import PASSWORD, Fixture


@pytest.fixture
def county(tmp_path: Path) -> Iterator[Fixture]:
    fixture = auth_support.build(f"sqlite:///{tmp_path / 'web.db'}")
    yield fixture
    fixture.engine.dispose()


@pytest.fixture
def client(county: Fixture) -> Iterator[TestClient]:
    with TestClient(make_app(str(county.engine.url))) as client:
        yield client


def _audit_actions(county: Fixture) -> list[str]:
    """What users did; not the chain's own record of when signing its head began (audit.py)."""
    with county.session() as db:
        return list(db.scalars(select(AuditEvent.action).where(AuditEvent.actor != audit.ANCHOR_ACTOR)
                               .order_by(AuditEvent.seq)))


def test_anonymous_pages_redirect_to_login(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    page = client.get("/login")
    assert page.status_code == 200 and "登入" in page.text and 'lang="zh-Hant-TW"' in page.text


def test_login_then_home_shows_user_and_agency(client: TestClient) -> None:
    response = login(client, "clerk", PASSWORD)
    assert isinstance(response, httpx.Response)
    assert response.status_code == 200
    # One granted agency: chosen automatically, the user lands on it.
    assert "clerk 使用者</a>（承辦人）" in response.text
    assert "歡迎，clerk 使用者。" in response.text
    home = client.get("/")
    assert "甲機關" in home.text and "乙機關" not in home.text  # only granted agencies are offered


def test_login_form_without_or_with_wrong_csrf_is_refused(client: TestClient, county: Fixture) -> None:
    client.get("/login")
    for token in ("", "forged"):
        refused = client.post("/login", data={"username": "clerk", "password": PASSWORD, "csrf_token": token})
        assert refused.status_code == 403
        assert "表單驗證碼（CSRF）無效或已過期" in refused.text
    assert client.get("/", follow_redirects=False).status_code == 303  # still not logged in
    assert _audit_actions(county) == []  # refused before any credential was checked


def test_logged_in_form_with_stale_token_is_refused(client: TestClient, county: Fixture) -> None:
    anonymous_token = csrf_of(client.get("/login").text)
    login(client, "clerk", PASSWORD)
    # The token of the log-in page is rotated at log-in: replaying it is refused.
    refused = client.post("/agency", data={"agency_id": str(county.agency_a), "csrf_token": anonymous_token})
    assert refused.status_code == 403 and "CSRF" in refused.text
    # A cross-site POST without any token is refused too.
    assert client.post("/logout", data={}).status_code == 403


def test_wrong_password_then_throttle_429(client: TestClient, county: Fixture) -> None:
    for _ in range(5):
        failed = login(client, "clerk", "wrong")
        assert isinstance(failed, httpx.Response)
        assert failed.status_code == 401 and "帳號或密碼錯誤。" in failed.text
    blocked = login(client, "clerk", PASSWORD)
    assert isinstance(blocked, httpx.Response)
    assert blocked.status_code == 429
    assert "登入失敗次數過多" in blocked.text and int(blocked.headers["retry-after"]) > 0
    assert _audit_actions(county) == ["auth.login_failed"] * 5
    # Another user from the same client is not locked out.
    other = login(client, "accountant", PASSWORD)
    assert isinstance(other, httpx.Response) and other.status_code == 200


def test_logout_ends_the_server_side_session(client: TestClient, county: Fixture) -> None:
    login(client, "clerk", PASSWORD)
    old_cookie = client.cookies.get("tenant_session")
    home = client.get("/")
    out = client.post("/logout", data={"csrf_token": csrf_of(home.text)})
    assert "您已登出。" in out.text
    assert client.get("/", follow_redirects=False).status_code == 303
    # Replaying the old cookie does not bring the session back: it was deleted on the server.
    client.cookies.set("tenant_session", old_cookie or "")
    assert client.get("/", follow_redirects=False).status_code == 303
    assert _audit_actions(county) == ["auth.login", "auth.logout"]


def test_choosing_an_agency_not_granted_is_refused(client: TestClient, county: Fixture) -> None:
    login(client, "clerk", PASSWORD)
    token = csrf_of(client.get("/").text)
    refused = client.post("/agency", data={"agency_id": str(county.agency_b), "csrf_token": token})
    assert refused.status_code == 403 and "您沒有此機關的權限。" in refused.text


def test_deactivated_user_is_logged_out_on_next_request(client: TestClient, county: Fixture) -> None:
    login(client, "clerk", PASSWORD)
    assert client.get("/", follow_redirects=False).status_code == 200
    with session_factory(county.engine)() as db:
        db.get_one(User, county.users[Role.CLERK]).active = False
        db.commit()
    assert client.get("/", follow_redirects=False).status_code == 303


def test_open_redirect_after_login_is_neutralised(client: TestClient) -> None:
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"username": "clerk", "password": PASSWORD, "csrf_token": token,
                                           "next": "//evil.example/"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"


def test_static_css_is_served_locally(client: TestClient) -> None:
    css = client.get("/static/app.css")
    assert css.status_code == 200 and "td.num" in css.text
    assert client.get("/static/..%2Fcontext.py").status_code == 404


def test_pages_carry_security_headers_and_httponly_cookie(client: TestClient) -> None:
    page = client.get("/login")
    assert "script-src 'none'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie


def test_pages_needing_an_agency_send_a_multi_agency_user_to_choose(
    client: TestClient, county: Fixture
) -> None:
    with session_factory(county.engine)() as db:
        db.add(UserAgency(user_id=county.users[Role.AUDITOR], agency_id=county.agency_b))
        db.commit()
    login(client, "auditor", PASSWORD)  # two agencies: none chosen automatically
    response = client.get("/budget", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"
    home = client.get("/")
    assert "請先選擇要作業的機關。" in home.text and "甲機關" in home.text and "乙機關" in home.text
