"""Settings come from TENANT_APP_* variables or the KEY=VALUE file the VM writes on first boot."""

from __future__ import annotations

from pathlib import Path

import pytest

from tenant_app.settings import SETTINGS_FILE_VARIABLE, Settings, load_settings


def test_defaults_bind_loopback_8080(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TENANT_APP_HOST", "TENANT_APP_PORT", SETTINGS_FILE_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)


def test_plain_key_value_file_named_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = tmp_path / "tenant.env"
    seed.write_text("TENANT_APP_DATABASE_URL=sqlite:////data/county.db\nTENANT_APP_COUNTY_ID=keelung\n"
                    "TENANT_APP_COUNTY_NAME=基隆市\nTENANT_APP_SECRET=s3cret-from-seed-disk\n"
                    "TENANT_APP_PORT=8081\n", encoding="utf-8")
    monkeypatch.setenv(SETTINGS_FILE_VARIABLE, str(seed))
    monkeypatch.delenv("TENANT_APP_PORT", raising=False)
    settings = load_settings()
    assert settings.database_url == "sqlite:////data/county.db"
    assert (settings.county_id, settings.county_name, settings.port) == ("keelung", "基隆市", 8081)


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed = tmp_path / "tenant.env"
    seed.write_text("TENANT_APP_PORT=8081\n", encoding="utf-8")
    monkeypatch.setenv("TENANT_APP_PORT", "9090")
    assert load_settings(seed).port == 9090


def test_short_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANT_APP_SECRET", "short")
    with pytest.raises(ValueError):
        load_settings()


def test_sqlite_synchronous_is_a_setting_and_reaches_the_connection(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy import text

    from tenant_app.db import DEFAULT_SYNCHRONOUS, Synchronous, make_engine

    monkeypatch.setenv("TENANT_APP_SQLITE_SYNCHRONOUS", "full")
    assert Settings().sqlite_synchronous is Synchronous.FULL
    monkeypatch.delenv("TENANT_APP_SQLITE_SYNCHRONOUS")
    assert Settings().sqlite_synchronous is DEFAULT_SYNCHRONOUS
    # PRAGMA synchronous answers 1 for NORMAL, 2 for FULL
    for mode, number in ((Synchronous.NORMAL, 1), (Synchronous.FULL, 2)):
        engine = make_engine(f"sqlite:///{tmp_path / mode.value}.db", synchronous=mode)
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA synchronous")).scalar() == number
        engine.dispose()
