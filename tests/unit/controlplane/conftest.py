"""Fixtures of the control plane's tests: a tmp state folder and platform database wired through the
settings, the CLI's command groups, and the demo inventory applied."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from controlplane import bootstrap, jobs
from controlplane.cli import inventory, site, template, tenant
from tests.support import workers

# Ports of their own, below the ephemeral range and away from the ranges a demo on this machine serves.
# Each pytest-xdist worker takes its own part of each block.
_GATEWAY = workers.share(range(23500, 23600))
_GUEST = workers.share(range(23600, 23900))
GATEWAY_PORTS = (_GATEWAY.start, _GATEWAY.stop - 1)
GUEST_PORTS = (_GUEST.start, _GUEST.stop - 1)


def _clear_caches() -> None:
    for cached in (bootstrap.settings, bootstrap.engine, bootstrap.platform):
        cached.cache_clear()


def _unbind_dbos_console() -> None:
    """DBOS binds its console log handler to the stderr of the moment it first starts: under CliRunner
    that is a captured stream, closed once the command returns, and every later DBOS start (in any
    test) would fail flushing it. Point it back at the real stderr."""
    for handler in logging.getLogger("dbos").handlers:
        if isinstance(handler, logging.StreamHandler) and getattr(handler.stream, "closed", False):
            handler.stream = sys.__stderr__  # not setStream: it flushes the closed one first


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    state_dir = tmp_path / "state"
    monkeypatch.chdir(tmp_path)  # no stray .env file is read
    monkeypatch.setenv("COUNTYCLOUD_STATE_DIR", str(state_dir))
    monkeypatch.setenv("COUNTYCLOUD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COUNTYCLOUD_DATABASE_URL", f"sqlite:///{tmp_path / 'countycloud.db'}")
    monkeypatch.setenv("COUNTYCLOUD_GATEWAY_PORT_FIRST", str(GATEWAY_PORTS[0]))
    monkeypatch.setenv("COUNTYCLOUD_GATEWAY_PORT_LAST", str(GATEWAY_PORTS[1]))
    monkeypatch.setenv("COUNTYCLOUD_GUEST_PORT_FIRST", str(GUEST_PORTS[0]))
    monkeypatch.setenv("COUNTYCLOUD_GUEST_PORT_LAST", str(GUEST_PORTS[1]))
    # `tenant create` registers the platform's real job builders process-wide: keep them to this test.
    monkeypatch.setattr(jobs, "_builders", dict(jobs._builders))
    monkeypatch.setattr(jobs._proc, "default_context", jobs._proc.default_context)
    _clear_caches()
    yield state_dir
    jobs.shutdown()
    _unbind_dbos_console()
    if bootstrap.engine.cache_info().currsize:
        bootstrap.engine().dispose()
    _clear_caches()


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    for group in (site, inventory, tenant, template):
        group.register(app)
    return app


@pytest.fixture
def applied(state: Path, cli: typer.Typer) -> Path:
    """The embedded demo inventory applied: 13 counties declared, none provisioned."""
    result = CliRunner().invoke(cli, ["inventory", "apply"])
    assert result.exit_code == 0, result.output
    return state


