"""The FastAPI dependencies that guard the JSON API: bearer token, role, agency scope."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from tenant_app import auth
from tenant_app.db import session_factory
from tenant_app.enums import Role
from tenant_app.security.permissions import Action
from tests.unit.tenant_app import auth_support
from tests.unit.tenant_app.auth_support import Fixture


@pytest.fixture
def county(tmp_path: Path) -> Iterator[Fixture]:
    fixture = auth_support.build(f"sqlite:///{tmp_path / 'auth.db'}")
    auth.forget_cached_principals()
    yield fixture
    fixture.engine.dispose()


@pytest.fixture
def client(county: Fixture) -> TestClient:
    app = FastAPI()
    app.state.tenant = SimpleNamespace(sessions=session_factory(county.engine))

    @app.get("/me")
    def me(p: auth.Principal = Depends(auth.current_api_user)) -> dict[str, object]:
        return {"user": p.username, "role": p.role.value}

    @app.post("/close")
    def close(p: auth.Principal = Depends(auth.require_role(Role.CHIEF_ACCOUNTANT))) -> dict[str, str]:
        return {"closed_by": p.username}

    @app.post("/certify")
    def certify(p: auth.Principal = Depends(auth.require_action(Action.CERTIFY))) -> dict[str, str]:
        return {"by": p.username}

    @app.get("/agencies/{agency_id}/lines")
    def lines(agency_id: int, p: auth.Principal = Depends(auth.require_agency())) -> dict[str, int]:
        return {"agency": agency_id}

    return TestClient(app)


def _token(county: Fixture, role: Role) -> dict[str, str]:
    with county.session() as db:
        raw, _ = auth.issue_api_token(db, county.users[role], actor="test")
        db.commit()
    return {"Authorization": f"Bearer {raw}"}


def test_missing_and_bad_tokens_get_401_json(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        response = client.get("/me", headers=headers)
        assert response.status_code == 401
        assert response.json()["detail"]["code"] == "unauthenticated"
        assert response.headers["www-authenticate"] == "Bearer"


def test_valid_token_identifies_user(client: TestClient, county: Fixture) -> None:
    response = client.get("/me", headers=_token(county, Role.CLERK))
    assert response.status_code == 200 and response.json() == {"user": "clerk", "role": "clerk"}


def test_revoked_token_stops_working_at_once_despite_cache(client: TestClient, county: Fixture) -> None:
    headers = _token(county, Role.CLERK)
    assert client.get("/me", headers=headers).status_code == 200  # now cached
    with county.session() as db:
        assert auth.revoke_api_token(db, 1, actor="admin")
        db.commit()
    assert client.get("/me", headers=headers).status_code == 401


def test_role_refusal(client: TestClient, county: Fixture) -> None:
    refused = client.post("/close", headers=_token(county, Role.CLERK))
    assert refused.status_code == 403 and refused.json()["detail"]["code"] == "forbidden_role"
    assert client.post("/close", headers=_token(county, Role.CHIEF_ACCOUNTANT)).status_code == 200


def test_action_refusal_explains_in_zh(client: TestClient, county: Fixture) -> None:
    refused = client.post("/certify", headers=_token(county, Role.AUDITOR))
    assert refused.status_code == 403
    assert refused.json()["detail"]["message"] == "您的角色沒有「簽證」的權限。"
    assert client.post("/certify", headers=_token(county, Role.CLERK)).status_code == 200


def test_agency_scope(client: TestClient, county: Fixture) -> None:
    headers = _token(county, Role.CLERK)
    assert client.get(f"/agencies/{county.agency_a}/lines", headers=headers).status_code == 200
    refused = client.get(f"/agencies/{county.agency_b}/lines", headers=headers)
    assert refused.status_code == 403
    assert refused.json()["detail"] == {
        "code": "forbidden_agency",
        "message": f"您沒有機關 {county.agency_b} 的權限 (agency not granted)",
        "agency_id": county.agency_b,
    }
