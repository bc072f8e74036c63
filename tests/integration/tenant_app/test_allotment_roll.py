"""Allotments of a future month are pending; once the month arrives they count as allotted to date."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from tenant_app.db import make_engine, session_scope
from tenant_app.migrations import upgrade
from tenant_app.models import Agency, BudgetLine, FiscalYear
from tenant_app.services import budget
from tenant_app.services.chart import ensure_reference_data


def test_pending_allotments_roll_into_allotted_when_their_month_arrives(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    with session_scope(engine) as session:
        ensure_reference_data(session)
        year, agency = FiscalYear(year=2026), Agency(code="A", name="甲機關")
        session.add_all([year, agency])
        session.flush()
        line = BudgetLine(agency_id=agency.id, fiscal_year_id=year.id, programme_code="01",
                          programme_name="p", sub_item="s", object_code="2000", object_name="業務費",
                          budget=1_200)
        session.add(line)
        session.flush()
        for period in (1, 2, 3):
            budget.allot(session, line.id, period, 100, on=dt.date(2026, 1, 20))
        session.refresh(line)
        assert (line.allotted, line.allotted_pending, line.available) == (100, 200, 100)

        assert budget.apply_all_due(session, on=dt.date(2026, 2, 1)) == 1
        assert budget.apply_all_due(session, on=dt.date(2026, 2, 2)) == 0  # idempotent
        line = session.scalars(select(BudgetLine).execution_options(populate_existing=True)).one()
        assert (line.allotted, line.allotted_pending) == (200, 100)
        assert budget.apply_all_due(session, on=dt.date(2027, 1, 1)) == 1
        session.refresh(line)
        assert (line.allotted, line.allotted_pending, line.available) == (300, 0, 300)
    engine.dispose()
