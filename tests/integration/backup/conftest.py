"""Real restic and a real REST server (`rclone serve restic`) on 127.0.0.1, in a temporary state dir.

Each test gets its own state folder, a free port in 23100-23199 (the backup servers' block, above
the platform's default 23000 and below Linux's ephemeral range) and its own REST server, stopped at
the end by its pid file.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine

from backup import consistent, repository, restserver
from backup.repository import Pair
from backup.restic import Restic
from provisioning import records
from provisioning.platform import Platform
from provisioning.spec import DomainType
from tests.support import workers

TEST_PORTS = workers.share(range(23100, 23200))  # this xdist worker's part of the block


def free_port() -> int:
    for port in TEST_PORTS:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {TEST_PORTS}")


@dataclass
class Sites:
    state_dir: Path
    restic: Restic
    pair: Pair
    port: int


@pytest.fixture
def restic_runner(tmp_path: Path) -> Restic:
    return Restic(cache_dir=tmp_path / "restic-cache", timeout_s=120)


SERVER_FILES = ("rest-server.pid.lock", "rest-server.log")  # the making server's, not a copy's


@pytest.fixture(scope="session")
def made_repositories(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state folder with both sites' password files and repositories, made once per worker by
    `ensure_pair` (restic itself). `restic init` calibrates its key derivation, ~2.6 s of CPU that
    restic 0.14 has no option to skip: two per test were a good part of these tests' time. A copy is
    the same real repository (its id and keys shared with the other tests' copies, which never meet:
    each test has its own folder and restic cache). Tests of the making itself do not use it."""
    state_dir = tmp_path_factory.mktemp("made") / "state"
    port = free_port()
    made = repository.ensure_pair(Restic(cache_dir=state_dir.parent / "cache"), state_dir, "primary",
                                  "secondary", port)
    restserver.stop(made.offsite_server)
    return state_dir


def lay_repositories(made: Path, state_dir: Path) -> None:
    """Copy `made_repositories` into a test's state folder (before any backup is in it)."""
    shutil.copytree(made, state_dir, ignore=shutil.ignore_patterns(*SERVER_FILES), dirs_exist_ok=True)


def county_platform(engine: Engine, tmp_path: Path, made: Path) -> Platform:
    """A platform over `tmp_path` with keelung placed (ports, UUID, host: what a provisioned county
    has) and both sites' repositories laid from `made_repositories`."""
    records.place(engine, "keelung")
    lay_repositories(made, tmp_path / "state")
    return Platform(engine=engine, state_dir=tmp_path / "state", cache_dir=tmp_path / "cache",
                    domain_type=DomainType.QEMU)


def stop_rest_servers(platform: Platform, ports: Mapping[str, int]) -> None:
    """The REST servers the steps started, by site (restserver.stop checks its folder and port)."""
    for site, port in ports.items():
        restserver.stop(repository.site_backup(platform.state_dir, site).rest_server(port))


def producer(database: Path, scratch: Path) -> list[str]:
    """The command a round takes a database outside a guest with (the app's online backup)."""
    scratch.mkdir(exist_ok=True)
    return consistent.copy_argv(str(database), python=sys.executable, scratch_dir=str(scratch))


@pytest.fixture
def sites(tmp_path: Path, restic_runner: Restic, made_repositories: Path) -> Iterator[Sites]:
    state_dir = tmp_path / "state"
    lay_repositories(made_repositories, state_dir)
    port = free_port()
    pair = repository.ensure_pair(restic_runner, state_dir, "primary", "secondary", port)
    try:
        yield Sites(state_dir, restic_runner, pair, port)
    finally:
        restserver.stop(pair.offsite_server)


ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def county_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A county database made by the app itself: `python -m tenant_app migrate`, then `generate 60`
    (which seeds the demo county first). Tests copy it before changing it."""
    database = tmp_path_factory.mktemp("county") / "tenant.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TENANT_APP_DATABASE_URL": f"sqlite:///{database}",
           "TENANT_APP_SECRET": "figures-test-secret-0123456789abcdef"}
    for command in (["migrate"], ["generate", "60"]):
        subprocess.run([sys.executable, "-m", "tenant_app", *command], env=env, check=True, timeout=300,
                       capture_output=True)
    return database
