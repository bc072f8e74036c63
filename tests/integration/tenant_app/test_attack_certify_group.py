"""Attack suite, issue 14 item 2: one bad certification must not fail the others in its group.

Two levels, on SQLite and PostgreSQL:
- over HTTP, against a real uvicorn server: 64 clients, 8 of them sending an id of 2**63, 56 valid;
- at the writer itself, with requests that slip past the edge (an id of 2**63 handed to the writer
  directly, a user id the foreign key refuses) queued in the same group as valid ones.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tenant_app import hotline
from tenant_app.db import make_engine, session_scope
from tenant_app.devserver import running_server
from tenant_app.models import User
from tenant_app.services.certification import CertifyOutcome, CertifyRequest
from tenant_app.services.certify_writer import CertificationWriter

CLIENTS = 64
BAD_CLIENTS = 8
ROUNDS = 4
HUGE = 2**63
AVAILABLE = 1_000_000  # far more than the valid clients ask for: every valid request must be accepted


async def _client(base: str, token: str, line_id: int, bad: bool, start: asyncio.Event
                  ) -> list[tuple[bool, int, dict[str, Any]]]:
    results = []
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"},
                                 timeout=30) as client:
        await start.wait()
        for _ in range(ROUNDS):
            body = {"budget_line_id": HUGE if bad else line_id, "amount": 1 if bad else 7}
            response = await client.post("/api/v1/certifications", json=body)
            results.append((bad, response.status_code, response.json()))
    return results


async def _storm(base: str, token: str, line_id: int) -> list[tuple[bool, int, dict[str, Any]]]:
    start = asyncio.Event()
    tasks = [asyncio.create_task(_client(base, token, line_id, i < BAD_CLIENTS, start))
             for i in range(CLIENTS)]
    await asyncio.sleep(0.2)  # every client connected and waiting: they arrive together
    start.set()
    return [result for batch in await asyncio.gather(*tasks) for result in batch]


@pytest.mark.timeout(180)
def test_item2_bad_certifications_do_not_fail_valid_ones_over_http(db_url: str, tmp_path: Path) -> None:
    line = hotline.prepare(db_url, AVAILABLE)
    with running_server(db_url, log_path=tmp_path / "server.log") as base:
        results = asyncio.run(_storm(base, line.token, line.budget_line_id))

    assert len(results) == CLIENTS * ROUNDS
    assert not [r for r in results if r[1] >= 500], [r for r in results if r[1] >= 500][:3]
    valid = [(status, body) for bad, status, body in results if not bad]
    bad = [(status, body) for is_bad, status, body in results if is_bad]
    assert all(status == 201 for status, _ in valid), [v for v in valid if v[0] != 201][:3]
    assert all(status == 422 and body["code"] == "id_out_of_range" for status, body in bad), bad[:3]
    db = hotline.committed(db_url, line.budget_line_id)
    assert db.rows_count == len(valid) and db.rows_total == 7 * len(valid) == db.line_certified


async def _one_group(writer: CertificationWriter, requests: list[CertifyRequest]) -> list[CertifyOutcome]:
    await writer.start()
    try:
        # Queued in one go, before the writer task runs: they are taken as one group.
        return [outcome for outcome, _ in await asyncio.gather(*(writer.certify(r) for r in requests))]
    finally:
        await writer.stop()


@pytest.mark.timeout(120)
def test_item2_writer_decides_each_request_on_its_own(db_url: str) -> None:
    line = hotline.prepare(db_url, AVAILABLE)
    engine = make_engine(db_url)
    try:
        with session_scope(engine) as session:
            clerk = session.scalars(select(User.id).where(User.username == hotline.CLERK)).one()
            nobody = max(session.scalars(select(User.id))) + 1000  # the foreign key refuses it
        requests = []
        for i in range(CLIENTS):
            if i % 8 == 3:  # past the edge: an id no column holds
                requests.append(CertifyRequest(HUGE, 1, clerk))
            elif i % 8 == 5:  # past every check but the database's foreign key
                requests.append(CertifyRequest(line.budget_line_id, 1, nobody))
            else:
                requests.append(CertifyRequest(line.budget_line_id, 10, clerk))
        groups: list[int] = []
        writer = CertificationWriter(engine, on_group=groups.append)
        outcomes = asyncio.run(_one_group(writer, requests))
    finally:
        engine.dispose()

    valid = [o for i, o in enumerate(outcomes) if i % 8 not in (3, 5)]
    assert len(valid) == 48
    assert all(o.accepted for o in valid), [o.errors for o in valid if not o.accepted][:2]
    huge = [o for i, o in enumerate(outcomes) if i % 8 == 3]
    assert all(not o.accepted and o.errors[0].code.value == "id_out_of_range" for o in huge)
    orphan = [o for i, o in enumerate(outcomes) if i % 8 == 5]
    assert all(not o.accepted and o.errors[0].code.value == "constraint_violated" for o in orphan), orphan[:2]
    assert sum(groups) == CLIENTS - len(huge) and max(groups) > len(orphan)  # they did share a group
    db = hotline.committed(db_url, line.budget_line_id)
    assert db.rows_count == 48 and db.rows_total == 480 == db.line_certified
