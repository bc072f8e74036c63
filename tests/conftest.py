"""Fixtures shared by the whole suite. Package-specific fixtures live in conftest.py files beside
their tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import cheap_hashing, postgres


def pytest_configure(config: pytest.Config) -> None:
    cheap_hashing.install()  # tests/support/cheap_hashing.py: why the test process hashes cheaply


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`--dist loadgroup` (scripts/test.sh): pytest-xdist 3.8 marks a grouped test by suffixing its
    node id, which pytest 9 no longer reads from where xdist writes it, so every group was scattered.
    Suffix it where pytest 9 keeps the id (a no-op where xdist's own suffix took)."""
    if not getattr(config.option, "loadgroup", False):
        return
    try:
        from _pytest.nodeid import coerce_node_id  # pytest >= 9
    except ImportError:
        return
    for item in items:
        names = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                        for mark in item.iter_markers("xdist_group")})
        if names and "@" not in item.nodeid:
            item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(names)}")  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _password_cost(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests marked `real_password_cost` (races that the hash's half second widens) hash as deployed."""
    if request.node.get_closest_marker("real_password_cost") is None:
        yield
        return
    cheap_hashing.restore()
    try:
        yield
    finally:
        cheap_hashing.install()


@pytest.fixture(autouse=True)
def _fresh_wiring() -> Iterator[None]:
    """controlplane.bootstrap wires settings and the database once per process: each test gets the
    settings of its own environment, and its engine is closed after it."""
    from controlplane import bootstrap

    cached = (bootstrap.settings, bootstrap.engine, bootstrap.platform)
    for wiring in cached:
        wiring.cache_clear()
    yield
    if bootstrap.engine.cache_info().currsize:
        bootstrap.engine().dispose()
    for wiring in cached:
        wiring.cache_clear()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: every test that takes it runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    url = postgres.fresh_database()
    try:
        yield url
    finally:
        postgres.drop_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    url = postgres.fresh_database()
    try:
        yield url
    finally:
        postgres.drop_database(url)
