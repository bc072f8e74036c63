"""/healthz says whether the database answers and the schema is at the current revision."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from tenant_app.app import bind, build_app, create_app
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


def test_routes_built_before_the_county_is_known_serve_that_county_once_bound(tmp_path: Path) -> None:
    # A county VM's launcher builds the app in the saved template and binds its county after activation.
    app = build_app()
    database = tmp_path / "county.db"
    url = f"sqlite:///{database}"
    upgrade(url)
    bind(app, Settings(database_url=url, secret="bound-later-secret", county_id="penghu",
                       county_name="澎湖縣"))
    with TestClient(app) as client:
        response = client.get("/healthz")
        assert response.status_code == 200 and response.json()["county"] == "penghu"
        assert client.get("/openapi.json").json()["info"]["title"] == "澎湖縣 預算會計系統"
