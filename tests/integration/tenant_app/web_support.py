"""Helpers for web tests: an app on a fresh database, and a browser-like client that logs in."""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tenant_app.app import create_app
from tenant_app.settings import Settings
from tenant_app.web.router import web_router

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
SECRET = "test-secret-0123456789abcdef"


def make_app(database_url: str) -> FastAPI:
    app = create_app(Settings(database_url=database_url, secret=SECRET, county_name="測試縣"))
    if not any(getattr(r, "path", None) == "/login" for r in app.routes):
        app.include_router(web_router)  # until app.py includes the web router itself
    return app


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "page has no CSRF field"
    return match.group(1)


def login(client: TestClient, username: str, password: str, follow: bool = True) -> object:
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token},
                       follow_redirects=follow)


def post_form(client: TestClient, path: str, data: dict[str, str], from_page: str) -> object:
    """POST a form the way a browser does: with the CSRF token of the page it was on."""
    token = csrf_of(client.get(from_page).text)
    return client.post(path, data={**data, "csrf_token": token})
