"""/healthz says whether the database answers and the schema is at the current revision."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tenant_app.app import create_app
from tenant_app.migrations import upgrade
from tenant_app.settings import Settings


def test_healthz_refuses_an_unmigrated_database_then_passes(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url, secret="health-test-secret")
    with TestClient(create_app(settings)) as client:
        response = client.get("/healthz")
        assert response.status_code == 503 and response.json()["migrations"] == "not current"
    upgrade(sqlite_url)
    with TestClient(create_app(settings)) as client:
        response = client.get("/healthz")
        assert response.status_code == 200 and response.json() == {"status": "ok", "county": "demo"}
        assert response.headers["server-timing"].startswith("app;dur=")


def test_healthz_reports_an_unreachable_database() -> None:
    settings = Settings(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none", secret="health-test")
    with TestClient(create_app(settings)) as client:
        response = client.get("/healthz")
        assert response.status_code == 503 and "database" in response.json()
