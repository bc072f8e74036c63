"""預算與餘額: the chosen agency's budget lines with every running total and the available balance."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from tenant_app.security.permissions import Action
from tenant_app.web import queries
from tenant_app.web.context import Page, WebRoute, user_page

router = APIRouter(route_class=WebRoute, include_in_schema=False)


@router.get("/budget")
def budget(current: Page = Depends(user_page)) -> Response:
    current.require(Action.VIEW)
    agency = current.require_agency()
    year = current.require_fiscal_year()
    lines = queries.budget_lines(current.db, agency.id, year.id)
    totals = {
        "authorised": sum(v.state.authorised for v in lines),
        "allotted": sum(v.state.allotted for v in lines),
        "certified": sum(v.state.certified for v in lines),
        "paid": sum(v.state.paid_on_certified + v.state.paid_direct for v in lines),
        "available": sum(v.state.available for v in lines),
    }
    return current.render("budget.html", lines=lines, totals=totals)
