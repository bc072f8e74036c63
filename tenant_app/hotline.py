"""One hot budget line with a known available balance and a clerk's token: the set-up shared by the
certification concurrency test and bench/certify.py."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from tenant_app.auth import issue_api_token
from tenant_app.db import make_engine, session_scope
from tenant_app.migrations import upgrade
from tenant_app.models import BudgetLine, Certification, User
from tenant_app.seed import seed_demo
from tenant_app.services.budget import allot
from tenant_app.settings import Settings

CLERK = "fin-clerk"


@dataclass(frozen=True)
class HotLine:
    budget_line_id: int
    available: int
    token: str


def prepare(database_url: str, available: int) -> HotLine:
    """Migrate, seed the demo county, add a line whose whole budget is allotted in period 1."""
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with session_scope(engine) as session:
            seeded = seed_demo(session, Settings(database_url=database_url))
            agency_id = seeded.agency_ids[0]
            line = BudgetLine(agency_id=agency_id, fiscal_year_id=seeded.fiscal_year_id, programme_code="99",
                              programme_name="壓力測試", sub_item=f"hot-{available}", object_code="2000",
                              object_name="業務費", is_personnel=False, budget=available)
            session.add(line)
            session.flush()
            allot(session, line.id, 1, available)
            clerk = session.scalars(select(User.id).where(User.username == CLERK)).one()
            token, _ = issue_api_token(session, clerk, actor="bench", name="hot line")
            return HotLine(line.id, available, token)
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Committed:
    rows_total: int  # sum of certification rows on the line
    rows_count: int
    line_certified: int  # the line's running total
    line_available: int


def committed(database_url: str, budget_line_id: int) -> Committed:
    engine = make_engine(database_url)
    try:
        with session_scope(engine) as session:
            total, count = session.execute(
                select(func.coalesce(func.sum(Certification.amount), 0), func.count())
                .where(Certification.budget_line_id == budget_line_id)).one()
            line = session.get_one(BudgetLine, budget_line_id)
            return Committed(int(total), int(count), line.certified, line.available)
    finally:
        engine.dispose()
