"""A service app over a fresh database for API and console tests: the demo inventory applied, one
user (and token) per role, and the fake use-case backend (tests/unit/controlplane/fake_operations.py)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine

from controlplane import audit, auth, bootstrap
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
    real: bool = False  # the routes call controlplane.operations, not the fake

    def bearer(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}


def make_service(url: str, state_dir: Path, *, limits: auth.Limits | None = None,
                 real: bool = False) -> Iterator[Service]:
    """With `real`, the routes call controlplane.operations itself (wired through bootstrap, whose
    settings the caller points at `url` and `state_dir`); jobs are submitted but no worker runs."""
    migrate(url)
    audit.configure(state_dir)
    engine = bootstrap.engine() if real else make_engine(url)
    with session_scope(engine) as session:
        declare.apply(session, load_sample(), actor="test")
    fake = FakeOperations(engine)
    ops: Any = importlib.import_module("controlplane.operations") if real else fake
    generous = auth.Limits(max_failures_per_user=1000, max_failures_per_address=1000)
    ctx = ServiceContext(engine=engine, ops=ops, state_dir=state_dir, limits=limits or generous,
                         sse_poll_s=0.05, sse_max_s=20)
    service = Service(build_app(ctx), engine, fake, real=real)
    for name, (role, tenant) in ROLE_USERS.items():
        auth.create_user(engine, cli_actor(), name, role, tenant=tenant, password=PASSWORD)
        service.tokens[name] = auth.create_token(engine, cli_actor(), name, "tests")[1]
    try:
        yield service
    finally:
        if not real:
            engine.dispose()


def sign_in(client: Any, user: str) -> str:
    """A console session for `user` through the log-in form (a TestClient of the service's app);
    returns the session's CSRF token."""
    client.cookies.clear()
    client.get("/login")
    response = client.post("/login", data={"username": user, "password": PASSWORD, "next": "/",
                                           "csrf": client.cookies.get("cc_login_csrf") or ""},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    found = auth.session_actor(client.app.state.ctx.engine, client.cookies.get("cc_session") or "", "")
    assert found is not None
    return str(found[1])
