"""A service app over a fresh database for API and console tests: the demo inventory applied, one
user (and token) per role, and the fake use-case backend (tests/unit/controlplane/fake_operations.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy import Engine

from controlplane import audit, auth
from controlplane.actors import cli_actor
from controlplane.api.deps import ServiceContext
from controlplane.roles import Role
from controlplane.service import build_app
from inventory import declare
from inventory.db import make_engine, migrate, session_scope
from inventory.loader import load_sample
from tests.unit.controlplane.fake_operations import FakeOperations

PASSWORD = "a long test password"
# The demo inventory's counties: the county user is scoped to OWN; OTHER is another county.
OWN, OTHER = "keelung", "taichung"
ROLE_USERS: dict[str, tuple[Role, str | None]] = {
    "root": (Role.ADMIN, None),
    "central": (Role.CENTRAL_IT, None),
    "oper": (Role.OPERATOR, None),
    "auditor": (Role.AUDITOR, None),
    "liaison": (Role.COUNTY, OWN),
}


@dataclass
class Service:
    app: FastAPI
    engine: Engine
    ops: FakeOperations
    tokens: dict[str, str] = field(default_factory=dict)  # user name -> bearer secret

    def bearer(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}


def make_service(url: str, state_dir: Path, *, limits: auth.Limits | None = None) -> Iterator[Service]:
    migrate(url)
    audit.configure(state_dir)
    engine = make_engine(url)
    with session_scope(engine) as session:
        declare.apply(session, load_sample(), actor="test")
    ops = FakeOperations(engine)
    generous = auth.Limits(max_failures_per_user=1000, max_failures_per_address=1000)
    ctx = ServiceContext(engine=engine, ops=ops, state_dir=state_dir, limits=limits or generous,
                         sse_poll_s=0.05, sse_max_s=20)
    service = Service(build_app(ctx), engine, ops)
    for name, (role, tenant) in ROLE_USERS.items():
        auth.create_user(engine, cli_actor(), name, role, tenant=tenant, password=PASSWORD)
        service.tokens[name] = auth.create_token(engine, cli_actor(), name, "tests")[1]
    try:
        yield service
    finally:
        engine.dispose()
