"""Fixtures shared by the whole suite. Package-specific fixtures live in conftest.py files beside
their tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import cheap_hashing, postgres


def pytest_configure(config: pytest.Config) -> None:
    cheap_hashing.install()  # tests/support/cheap_hashing.py: why the test process hashes cheaply


_JOBS_BEFORE = pytest.StashKey[int | None]()


def _environments_database() -> str:
    """The platform database the environment points at (scripts/test.sh: the VM suite's state folder)."""
    from controlplane.settings import Settings

    return Settings().database_url


def _jobs_in(url: str) -> int | None:
    """Job records in a SQLite platform database; None when there is none (or it is not SQLite)."""
    import sqlite3

    path = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
    if path is None or not path.exists():
        return None
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        try:
            return int(db.execute("SELECT count(*) FROM jobs").fetchone()[0])
        except sqlite3.OperationalError:  # no jobs table yet
            return None


def _fast_run(config: pytest.Config) -> bool:
    """The fast tests alone (scripts/test.sh's first run; the controller, not an xdist worker): none
    of them may act on the environment's state folder, which the VM tests and a local service use (a
    job left there is run by the next service started on it)."""
    return config.getoption("markexpr", "") == "not vm" and not hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    if _fast_run(session.config):
        session.config.stash[_JOBS_BEFORE] = _jobs_in(_environments_database())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _fast_run(session.config) or _JOBS_BEFORE not in session.config.stash:
        return
    url = _environments_database()
    before, after = session.config.stash[_JOBS_BEFORE] or 0, _jobs_in(url)
    if after is not None and after > before:
        print(f"\nFAILED: the fast tests wrote {after - before} job record(s) into the environment's "
              f"platform database ({url}): a test reaches controlplane.bootstrap without a state "
              "folder and database of its own (COUNTYCLOUD_STATE_DIR, COUNTYCLOUD_DATABASE_URL)")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
