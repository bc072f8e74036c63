"""Helpers for web tests: an app on a fresh database, and a browser-like client that logs in."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tenant_app.app import create_app
from tenant_app.db import Base, make_engine, session_scope
from tenant_app.enums import Role
from tenant_app.models import Agency, BudgetLine, FiscalYear, User, UserAgency
from tenant_app.security import passwords
from tenant_app.services import budget as budget_service
from tenant_app.services import certification
from tenant_app.services.chart import ensure_reference_data
from tenant_app.settings import Settings
from tests.support import snapshots

PASSWORD = "correct horse 正確"

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
SECRET = "test-secret-0123456789abcdef"


def make_app(database_url: str) -> FastAPI:
    return create_app(Settings(database_url=database_url, secret=SECRET, county_name="測試縣"))


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


@dataclass
class County:
    """A seeded county for web tests: agency A with two lines, agency B with one; a user per role."""

    url: str
    agency_a: int
    agency_b: int
    fiscal_year_id: int
    line_a1: int  # 業務費, 100,000 allotted to date
    line_a2: int  # 設備及投資, 50,000 allotted to date
    line_b1: int
    users: dict[Role, int]
    line_a3: int = 0  # 人事費 (personnel), 100,000 allotted: nothing may flow into it


def seed_county(url: str) -> County:
    """The web tests' county in the fresh database at `url`: built once per process and database kind,
    then copied (tests/support/snapshots.py)."""
    return replace(snapshots.restore(url, "tenant-app-web-county", _build_county), url=url)


def _build_county(url: str) -> County:
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    today = certification.today()
    digest = passwords.hash_password(PASSWORD)
    try:
        with session_scope(engine) as db:
            ensure_reference_data(db)
            year = FiscalYear(year=today.year)
            a, b = Agency(code="A01", name="甲機關"), Agency(code="B01", name="乙機關")
            db.add_all([year, a, b])
            db.flush()

            def line(agency: Agency, code: str, name: str, budget: int,
                     personnel: bool = False) -> BudgetLine:
                row = BudgetLine(agency_id=agency.id, fiscal_year_id=year.id, programme_code="P01",
                                 programme_name="一般行政", sub_item="行政管理", object_code=code,
                                 object_name=name, budget=budget, is_personnel=personnel)
                db.add(row)
                db.flush()
                return row

            a1 = line(a, "2000", "業務費", 500_000)
            a2 = line(a, "3000", "設備及投資", 200_000)
            b1 = line(b, "2000", "業務費", 300_000)
            a3 = line(a, "1000", "人事費", 1_000_000, personnel=True)
            db.flush()
            budget_service.allot(db, a1.id, 1, 100_000, on=today)
            budget_service.allot(db, a2.id, 1, 50_000, on=today)
            budget_service.allot(db, b1.id, 1, 80_000, on=today)
            budget_service.allot(db, a3.id, 1, 100_000, on=today)
            users: dict[Role, int] = {}
            for role in Role:
                user = User(username=role.value, display_name=f"{role.value} 使用者", password_hash=digest,
                            role=role)
                db.add(user)
                db.flush()
                db.add(UserAgency(user_id=user.id, agency_id=a.id))
                users[role] = user.id
            return County(url, a.id, b.id, year.id, a1.id, a2.id, b1.id, users, a3.id)
    finally:
        engine.dispose()
