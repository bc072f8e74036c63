"""The log-in throttle through a real uvicorn server on 127.0.0.1, on SQLite and PostgreSQL (issue 14,
item 5): parallel wrong passwords are counted as they start, X-Forwarded-For from a peer that is not
a trusted proxy buys no fresh allowance, and behind the trusted gateway each client has its own."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tenant_app.db import make_engine, session_scope
from tenant_app.devserver import running_server
from tenant_app.migrations import upgrade
from tenant_app.models import AuditEvent
from tenant_app.security.sessions import COOKIE_NAME
from tenant_app.seed import DEMO_PASSWORD, seed_demo
from tenant_app.settings import Settings

from .web_support import csrf_of

USER = "fin-clerk"
PARALLEL = 30
LIMIT = 5  # failures per (user, client) in the window


def _seed(url: str) -> None:
    upgrade(url)
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            seed_demo(session, Settings(database_url=url))
    finally:
        engine.dispose()


async def _form(base: str) -> tuple[str, str]:
    """An anonymous session cookie and its CSRF token, as a browser gets them from the log-in page."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        page = await client.get("/login")
        return page.cookies[COOKIE_NAME], csrf_of(page.text)


async def _attempts(base: str, count: int, password: str, forwarded_for: str | None = None) -> list[int]:
    cookie, token = await _form(base)
    headers = {"Cookie": f"{COOKIE_NAME}={cookie}"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    form = {"username": USER, "password": password, "csrf_token": token}
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        responses = await asyncio.gather(*(client.post("/login", data=form, headers=headers)
                                           for _ in range(count)))
    return [r.status_code for r in responses]


def _clients_in_audit(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            payloads = session.scalars(select(AuditEvent.payload).where(
                AuditEvent.action == "auth.login_failed").order_by(AuditEvent.seq))
            return [json.loads(p)["client"] for p in payloads]
    finally:
        engine.dispose()


@pytest.mark.timeout(180)
@pytest.mark.real_password_cost  # the race is over the hash's time
def test_parallel_wrong_passwords_and_a_forged_forwarded_for(db_url: str, tmp_path: Path) -> None:
    _seed(db_url)
    with running_server(db_url, log_path=tmp_path / "server.log") as base:
        statuses = asyncio.run(_attempts(base, PARALLEL, "wrong password"))
        assert sorted(statuses) == [401] * LIMIT + [429] * (PARALLEL - LIMIT)
        # uvicorn believes X-Forwarded-For from 127.0.0.1 by default: the app must not.
        forged = asyncio.run(_attempts(base, 3, "wrong password", forwarded_for="203.0.113.50"))
        assert forged == [429] * 3
        right = asyncio.run(_attempts(base, 1, DEMO_PASSWORD, forwarded_for="203.0.113.51"))
        assert right == [429]  # throttled even with the right password, from this address
    assert _clients_in_audit(db_url) == ["127.0.0.1"] * LIMIT


@pytest.mark.timeout(180)
def test_behind_the_trusted_gateway_each_client_has_its_own_allowance(db_url: str, tmp_path: Path) -> None:
    _seed(db_url)
    env = {"TENANT_APP_TRUSTED_PROXIES": "127.0.0.1"}  # this test plays the gateway
    with running_server(db_url, extra_env=env, log_path=tmp_path / "server.log") as base:
        first = asyncio.run(_attempts(base, LIMIT + 2, "wrong", forwarded_for="198.51.100.1"))
        assert sorted(first) == [401] * LIMIT + [429] * 2
        # Another client of the gateway is not locked out by the first one's guessing ...
        other = asyncio.run(_attempts(base, 1, DEMO_PASSWORD, forwarded_for="198.51.100.2"))
        assert other == [303]
        # ... and the first cannot escape its count by prefixing an address of its choice: the
        # gateway's own (rightmost) entry names it.
        prefixed = asyncio.run(_attempts(base, 1, "wrong", forwarded_for="192.0.2.99, 198.51.100.1"))
        assert prefixed == [429]
        # One user guessed from many addresses: 20 failures in all, then refused from any address.
        for i in range(3, 6):
            spent = asyncio.run(_attempts(base, LIMIT, "wrong", forwarded_for=f"198.51.100.{i}"))
            assert spent == [401] * LIMIT
        assert asyncio.run(_attempts(base, 1, DEMO_PASSWORD, forwarded_for="198.51.100.9")) == [429]
    clients = _clients_in_audit(db_url)
    assert clients[:LIMIT] == ["198.51.100.1"] * LIMIT
    assert "127.0.0.1" not in clients and "192.0.2.99" not in clients
