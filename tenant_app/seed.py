"""The demo county: agencies, a user for every role, a fiscal year's budget and monthly allotments.

Idempotent: running it again finds the county and changes nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from tenant_app.enums import Role
from tenant_app.models import Agency, BudgetLine, County, FiscalYear, User, UserAgency
from tenant_app.security.passwords import hash_password
from tenant_app.services.approvals import ensure_user_key
from tenant_app.services.budget import allot
from tenant_app.services.certification import today
from tenant_app.services.chart import ensure_reference_data
from tenant_app.settings import Settings

DEMO_PASSWORD = "demo-pass-2026"

AGENCIES: tuple[tuple[str, str], ...] = (
    ("FIN", "財政處"),
    ("EDU", "教育處"),
    ("PWD", "工務處"),
)

# (programme code, programme name, sub-item, object code, object name, personnel?, budget 元)
LINES: tuple[tuple[str, str, str, str, str, bool, int], ...] = (
    ("01", "一般行政", "行政管理", "1000", "人事費", True, 48_000_000),
    ("01", "一般行政", "行政管理", "2000", "業務費", False, 12_000_000),
    ("01", "一般行政", "行政管理", "3000", "設備及投資", False, 6_000_000),
    ("02", "業務推動", "計畫執行", "2000", "業務費", False, 18_000_000),
    ("02", "業務推動", "計畫執行", "4000", "獎補助費", False, 9_600_000),
    ("02", "業務推動", "計畫執行", "3000", "設備及投資", False, 7_200_000),
)

# Users per agency (username suffix, role, display name) and county-wide users.
AGENCY_USERS: tuple[tuple[str, Role, str], ...] = (
    ("clerk", Role.CLERK, "承辦人"),
    ("accountant", Role.ACCOUNTANT, "會計"),
    ("chief", Role.CHIEF_ACCOUNTANT, "主辦會計"),
    ("head", Role.AGENCY_HEAD, "機關首長"),
)
COUNTY_USERS: tuple[tuple[str, Role, str], ...] = (
    ("admin", Role.COUNTY_ADMIN, "系統管理者"),
    ("auditor", Role.AUDITOR, "稽核人員"),
)


@dataclass(frozen=True)
class SeedResult:
    created: bool
    fiscal_year_id: int
    agency_ids: list[int]
    line_ids: list[int]


def ensure_fiscal_year(session: Session, year: int) -> FiscalYear:
    found = session.scalars(select(FiscalYear).where(FiscalYear.year == year)).first()
    if found is None:
        found = FiscalYear(year=year)
        session.add(found)
        session.flush()
    return found


def add_user(session: Session, username: str, role: Role, display_name: str, agency_ids: list[int],
             secret: str, password_hash: str) -> User:
    user = User(username=username, display_name=display_name, password_hash=password_hash, role=role,
                active=True)
    session.add(user)
    session.flush()
    session.add_all([UserAgency(user_id=user.id, agency_id=a) for a in agency_ids])
    if role in (Role.CLERK, Role.ACCOUNTANT, Role.CHIEF_ACCOUNTANT, Role.AGENCY_HEAD):
        ensure_user_key(session, user.id, secret)
    return user


def seed_demo(session: Session, settings: Settings, *, on: dt.date | None = None) -> SeedResult:
    day = on or today()
    ensure_reference_data(session)
    year = ensure_fiscal_year(session, day.year)
    existing = session.scalars(select(County)).first()
    if existing is not None:
        agencies = list(session.scalars(select(Agency.id).order_by(Agency.id)))
        lines = list(session.scalars(select(BudgetLine.id).where(BudgetLine.fiscal_year_id == year.id)
                                     .order_by(BudgetLine.id)))
        return SeedResult(False, year.id, agencies, lines)

    session.add(County(code=settings.county_id, name=settings.county_name))
    # One argon2 hash for every demo user: they share the demo password, and hashing is slow on purpose.
    password_hash = hash_password(DEMO_PASSWORD)
    agency_ids: list[int] = []
    line_ids: list[int] = []
    for code, name in AGENCIES:
        agency = Agency(code=code, name=name)
        session.add(agency)
        session.flush()
        agency_ids.append(agency.id)
        for suffix, role, label in AGENCY_USERS:
            add_user(session, f"{code.lower()}-{suffix}", role, f"{name}{label}", [agency.id],
                     settings.secret, password_hash)
        for programme, programme_name, sub_item, object_code, object_name, personnel, budget in LINES:
            line = BudgetLine(agency_id=agency.id, fiscal_year_id=year.id, programme_code=programme,
                              programme_name=programme_name, sub_item=sub_item, object_code=object_code,
                              object_name=object_name, is_personnel=personnel, budget=budget)
            session.add(line)
            session.flush()
            line_ids.append(line.id)
            monthly = budget // 12
            for period in range(1, 13):
                # The last month takes the rounding remainder so the year allots exactly the budget.
                amount = budget - monthly * 11 if period == 12 else monthly
                allot(session, line.id, period, amount, on=day)
    for suffix, role, label in COUNTY_USERS:
        add_user(session, suffix, role, label, agency_ids, settings.secret, password_hash)
    session.flush()
    return SeedResult(True, year.id, agency_ids, line_ids)
