"""A seeded demo county behind a TestClient, with a bearer token per demo user (core API tests)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from tenant_app.app import create_app
from tenant_app.auth import forget_cached_principals, issue_api_token
from tenant_app.db import make_engine, session_scope
from tenant_app.migrations import upgrade
from tenant_app.models import BudgetLine, User
from tenant_app.seed import seed_demo
from tenant_app.settings import Settings
from tests.support import snapshots

USERS = ("fin-clerk", "fin-accountant", "fin-chief", "fin-head", "edu-clerk", "auditor")


@dataclass
class County:
    client: TestClient
    engine: Engine
    tokens: dict[str, str]
    user_ids: dict[str, int]
    fiscal_year_id: int
    fin_agency_id: int

    def auth(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[username]}"}

    def line(self, agency_id: int, object_code: str, programme: str = "01") -> BudgetLine:
        with session_scope(self.engine) as session:
            return session.scalars(select(BudgetLine).where(
                BudgetLine.agency_id == agency_id, BudgetLine.object_code == object_code,
                BudgetLine.programme_code == programme)).one()

    def balance(self, line_id: int) -> dict[str, int]:
        response = self.client.get(f"/api/v1/budget-lines/{line_id}", headers=self.auth("fin-clerk"))
        assert response.status_code == 200, response.text
        return response.json()


SECRET = "core-test-secret-0123456789"


@dataclass(frozen=True)
class _Seeded:
    tokens: dict[str, str]
    user_ids: dict[str, int]
    fiscal_year_id: int
    fin_agency_id: int


def _seed(database_url: str) -> _Seeded:
    """The migrated demo county with a token per user; built once per process and database kind,
    then copied for each test (tests/support/snapshots.py)."""
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with session_scope(engine) as session:
            seeded = seed_demo(session, Settings(database_url=database_url, secret=SECRET))
            users = {u.username: u.id
                     for u in session.scalars(select(User).where(User.username.in_(USERS)))}
            tokens = {name: issue_api_token(session, uid, actor="test")[0] for name, uid in users.items()}
    finally:
        engine.dispose()
    return _Seeded(tokens, users, seeded.fiscal_year_id, seeded.agency_ids[0])


@contextmanager
def seeded_county(database_url: str) -> Iterator[County]:
    settings = Settings(database_url=database_url, secret=SECRET)
    seeded = snapshots.restore(database_url, "tenant-app-core-county", _seed)
    engine = make_engine(database_url)
    forget_cached_principals()
    try:
        with TestClient(create_app(settings)) as client:
            yield County(client, engine, dict(seeded.tokens), dict(seeded.user_ids), seeded.fiscal_year_id,
                         seeded.fin_agency_id)
    finally:
        engine.dispose()
