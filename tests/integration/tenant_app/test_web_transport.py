"""Served over TLS, a county's responses carry HSTS and its cookies the Secure flag; over plain HTTP
they do not (issue 14, item 8). TLS is known from the request's scheme, from X-Forwarded-Proto sent
by a trusted proxy (never from anyone else), or from the served_over_tls setting."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from tenant_app.reports.reading import dispose_readers
from tenant_app.security.sessions import COOKIE_NAME
from tenant_app.settings import Settings

from .web_support import PASSWORD, SECRET, County, csrf_of, seed_county

GATEWAY = ("10.0.2.2", 40000)  # a made-up peer address in the ASGI scope: no connection is made
STRANGER = ("203.0.113.7", 40000)


@pytest.fixture
def county(db_url: str) -> Iterator[County]:
    yield seed_county(db_url)
    dispose_readers()


def _client(county: County, *, base: str = "http://testserver", peer: tuple[str, int] = ("127.0.0.1", 1),
            **settings: object) -> TestClient:
    from tenant_app.app import create_app

    app = create_app(Settings(database_url=county.url, secret=SECRET, county_name="測試縣",
                              **settings))  # type: ignore[arg-type]
    return TestClient(app, base_url=base, client=peer)


def _log_in(client: TestClient,
            headers: dict[str, str] | None = None) -> tuple[httpx.Response, httpx.Response]:
    form = client.get("/login", headers=headers)
    done = client.post("/login", headers=headers, follow_redirects=False, data={
        "username": "clerk", "password": PASSWORD, "csrf_token": csrf_of(form.text)})
    return form, done


def _is_secure(response: httpx.Response) -> bool:
    cookies = response.headers.get_list("set-cookie")
    assert cookies and all(c.startswith(f"{COOKIE_NAME}=") for c in cookies)
    flags = {all("secure" in [p.strip().lower() for p in c.split(";")[1:]] for c in cookies)}
    assert len(flags) == 1
    return flags.pop()


def test_plain_http_has_neither_secure_cookies_nor_hsts(county: County) -> None:
    with _client(county) as client:
        form, done = _log_in(client)
    assert done.status_code == 303
    for response in (form, done):
        assert not _is_secure(response)
        assert "strict-transport-security" not in response.headers


def test_https_requests_get_hsts_and_secure_cookies(county: County) -> None:
    with _client(county, base="https://testserver") as client:
        form, done = _log_in(client)
        home = client.get("/")  # the Secure session cookie is sent back over HTTPS: still logged in
        health = client.get("/healthz")
    assert done.status_code == 303 and home.status_code == 200 and "clerk" in home.text
    for response in (form, done, home):
        assert _is_secure(response)
        assert response.headers["strict-transport-security"] == "max-age=31536000"
    assert health.headers["strict-transport-security"] == "max-age=31536000"


def test_the_trusted_gateways_forwarded_proto_is_believed(county: County) -> None:
    https = {"X-Forwarded-Proto": "https"}
    with _client(county, peer=GATEWAY, trusted_proxies="10.0.2.2") as client:
        form, done = _log_in(client, https)
        plain = client.get("/login", headers={"X-Forwarded-Proto": "http"})
    assert _is_secure(form) and _is_secure(done)
    assert form.headers["strict-transport-security"] == "max-age=31536000"
    assert not _is_secure(plain) and "strict-transport-security" not in plain.headers


def test_a_strangers_forwarded_proto_is_ignored(county: County) -> None:
    with _client(county, peer=STRANGER, trusted_proxies="10.0.2.2") as client:
        form = client.get("/login", headers={"X-Forwarded-Proto": "https"})
    assert not _is_secure(form) and "strict-transport-security" not in form.headers


def test_the_setting_marks_a_county_published_over_https_only(county: County) -> None:
    with _client(county, served_over_tls=True) as client:
        form = client.get("/login")
    assert _is_secure(form)
    assert form.headers["strict-transport-security"] == "max-age=31536000"
