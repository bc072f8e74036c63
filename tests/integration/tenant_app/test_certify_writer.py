"""The certification writer: concurrent submissions are committed in groups, each request gets its
own outcome in order, and a bad request (unknown line, closed period, other agency) is refused
without sinking the rest of its group."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from tenant_app import hotline
from tenant_app.db import make_engine, session_scope
from tenant_app.enums import NumberKind
from tenant_app.models import BudgetLine, NumberCounter, PeriodClose
from tenant_app.rules.errors import ErrorCode
from tenant_app.services.certification import CertifyRequest
from tenant_app.services.certify_writer import CertificationWriter, WriterMode


async def _storm(writer: CertificationWriter, requests: list[CertifyRequest]) -> list:
    await writer.start()
    try:
        return await asyncio.gather(*(writer.certify(r) for r in requests))
    finally:
        await writer.stop()


@pytest.mark.parametrize("mode", [None, WriterMode.THREAD], ids=["default-mode", "thread-mode"])
def test_groups_commit_many_and_refuse_only_the_bad_ones(db_url: str, mode: WriterMode | None) -> None:
    line = hotline.prepare(db_url, 1_000)
    engine = make_engine(db_url)
    with session_scope(engine) as session:
        hot = session.get_one(BudgetLine, line.budget_line_id)
        session.add(PeriodClose(agency_id=hot.agency_id, fiscal_year_id=hot.fiscal_year_id, period=1))
        agency = hot.agency_id
    groups: list[int] = []
    writer = CertificationWriter(engine, mode=mode, on_group=groups.append)
    requests = []
    for i in range(120):
        kind = i % 6
        if kind == 1:
            requests.append(CertifyRequest(999_999, 5, None))  # unknown line
        elif kind == 2:
            requests.append(CertifyRequest(line.budget_line_id, 5, None, period=1))  # closed period
        elif kind == 3:
            requests.append(CertifyRequest(line.budget_line_id, 5, None, allowed_agencies=frozenset({-1})))
        else:
            granted = frozenset({agency})
            requests.append(CertifyRequest(line.budget_line_id, 20, None, allowed_agencies=granted))
    results = asyncio.run(_storm(writer, requests))

    assert max(groups) > 1 and sum(groups) == len(requests)
    codes = []
    for request, (outcome, db_seconds) in zip(requests, results, strict=True):
        assert outcome.budget_line_id == request.budget_line_id and outcome.amount == request.amount
        assert db_seconds > 0
        codes.append(None if outcome.accepted else outcome.errors[0].code)
    assert codes.count(ErrorCode.NOT_FOUND) == 20
    assert codes.count(ErrorCode.PERIOD_CLOSED) == 20
    assert codes.count(ErrorCode.FORBIDDEN_AGENCY) == 20
    accepted = [outcome for outcome, _ in results if outcome.accepted]
    # 60 good requests of 20 元 against 1 000 元: exactly 50 fit, the other 10 are told why not.
    assert len(accepted) == 50 and codes.count(ErrorCode.INSUFFICIENT_BALANCE) == 10
    assert sorted(o.number for o in accepted) == list(range(1, 51))
    done = hotline.committed(db_url, line.budget_line_id)
    assert (done.rows_total, done.line_certified, done.line_available) == (1_000, 1_000, 0)
    with session_scope(engine) as session:
        counter = session.scalars(select(NumberCounter.last_number).where(
            NumberCounter.kind == NumberKind.CERTIFICATION)).one()
        assert counter == 50  # refused requests used no number: no gap
    engine.dispose()
