"""BENCH ONLY: the naive read-then-write certification that bench/certify.py measures as the reference.

It reads the balance, decides in Python and writes the computed total back, one request per
transaction, from the threadpool, with default (deferred) transactions. Under concurrency two
requests read the same balance and both commit: the over-commit the real path makes impossible.
Mounted only when TENANT_APP_ENABLE_NAIVE_CERTIFY is set.
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, create_engine, event, insert, update
from sqlalchemy.orm import Session

from tenant_app.api import API_V1
from tenant_app.api.errors import rule_response
from tenant_app.api.schemas import CertifyIn
from tenant_app.auth import Principal, require_action
from tenant_app.db import is_sqlite, sqlite_pragmas
from tenant_app.enums import CertificationStatus, NumberKind
from tenant_app.models import BudgetLine, Certification
from tenant_app.rules.certification import check_certification
from tenant_app.security.permissions import Action
from tenant_app.services.numbering import issue_numbers

router = APIRouter(prefix=API_V1, tags=["bench"])


def naive_engine(url: str) -> Engine:
    if is_sqlite(url):
        engine = create_engine(url, connect_args={"timeout": 10, "check_same_thread": False},
                               pool_size=40, max_overflow=0)
        event.listen(engine, "connect", sqlite_pragmas)
        return engine
    return create_engine(url, pool_size=40, max_overflow=0)


@router.post("/naive/certifications", status_code=201)
def naive_certify(body: CertifyIn, request: Request,
                  principal: Principal = Depends(require_action(Action.CERTIFY))) -> JSONResponse:
    engine: Engine = request.app.state.tenant.naive_engine
    with Session(engine) as session:
        line = session.get_one(BudgetLine, body.budget_line_id)
        errors = check_certification(line.id, line.available, body.amount)
        if errors:
            session.rollback()
            return rule_response(errors)
        session.execute(update(BudgetLine).where(BudgetLine.id == line.id)
                        .values(certified=line.certified + body.amount))  # the stale write
        (number,) = issue_numbers(session, line.agency_id, line.fiscal_year_id, NumberKind.CERTIFICATION)
        session.execute(insert(Certification).values(
            agency_id=line.agency_id, fiscal_year_id=line.fiscal_year_id, number=number,
            budget_line_id=line.id, period=body.period or dt.date.today().month, amount=body.amount,
            paid_amount=0, released_amount=0, status=CertificationStatus.ACTIVE,
            created_by_id=principal.user_id, created_at=dt.datetime.now(dt.UTC)))
        session.commit()
    return JSONResponse({"number": number, "amount": body.amount}, status_code=201)
