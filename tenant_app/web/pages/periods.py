"""結帳: which periods of the year are closed (月結 / 年結), and closing the next one.

The order and the lock are A's rules (services.journal.close_period): periods close in order and
a closed period accepts no more postings.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Response
from sqlalchemy import select

from tenant_app import audit
from tenant_app.domains import PeriodParam
from tenant_app.enums import AuditAction
from tenant_app.models import PeriodClose
from tenant_app.rules.budget import FIRST_PERIOD, LAST_PERIOD
from tenant_app.security.permissions import Action
from tenant_app.services import journal
from tenant_app.web import queries
from tenant_app.web.context import Page, WebRoute, form_page, user_page

router = APIRouter(route_class=WebRoute, include_in_schema=False)


@router.get("/periods")
def periods(current: Page = Depends(user_page)) -> Response:
    current.require(Action.CLOSE_PERIOD)
    agency = current.require_agency()
    year = current.require_fiscal_year()
    closed = {row.period: row for row in current.db.scalars(select(PeriodClose).where(
        PeriodClose.agency_id == agency.id, PeriodClose.fiscal_year_id == year.id))}
    next_open = next((p for p in range(FIRST_PERIOD, LAST_PERIOD + 1) if p not in closed), None)
    return current.render(
        "periods.html", periods=range(FIRST_PERIOD, LAST_PERIOD + 1), closed=closed, next_open=next_open,
        names=queries.user_names(current.db, {row.closed_by_id for row in closed.values()}),
    )


@router.post("/periods/close")
def close(period: Annotated[PeriodParam, Form()], current: Page = Depends(form_page)) -> Response:
    user = current.require(Action.CLOSE_PERIOD)
    agency = current.require_agency()
    year = current.require_fiscal_year()
    journal.close_period(current.db, agency.id, year.id, period, user_id=user.user_id)
    audit.append(current.db, user.username, AuditAction.PERIOD_CLOSE,
                 {"agency_id": agency.id, "fiscal_year_id": year.id, "period": period})
    current.db.commit()
    label = "年結" if period == LAST_PERIOD else "月結"
    return current.redirect("/periods", f"第 {period} 期已{label}，該期不再接受過帳。")
