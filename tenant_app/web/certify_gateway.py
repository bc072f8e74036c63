"""Hands a web certification to A's services: the app's certification writer when it runs one,
otherwise one group of one through `commit_group` on its own transaction.

Either way the balance is decided by the services' conditional update; nothing here checks it.
"""

from __future__ import annotations

from fastapi import Request
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from tenant_app.services.certification import CertifyOutcome, CertifyRequest, commit_group
from tenant_app.services.certify_writer import CertificationWriter
from tenant_app.services.posting import load_rule_book


def _commit_one(engine: Engine, request: CertifyRequest) -> CertifyOutcome:
    with engine.begin() as conn:
        return commit_group(conn, load_rule_book(conn), [request])[0]


async def certify(request: Request, certify_request: CertifyRequest) -> CertifyOutcome:
    state = request.app.state.tenant
    writer = getattr(state, "writer", None)
    if isinstance(writer, CertificationWriter):
        outcome, _db_seconds = await writer.certify(certify_request)
        return outcome
    return await run_in_threadpool(_commit_one, state.engine, certify_request)
