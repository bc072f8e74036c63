"""Module-wide real components: one seeded county database (copied per server), the app under
uvicorn (plain and with 200 ms of server-side delay), a delaying proxy and the real HAProxy."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from monitoring.edge import RumListener
from monitoring.probes import ProbeAccount, Target
from provisioning.haproxy import HAPROXY, HAProxyGateway, ServerState

from .support import DelayProxy, app_server, gateway, seed_county

INJECTED_MS = 200.0


@dataclass(frozen=True)
class Seeded:
    template: Path  # a seeded SQLite file; each server gets its own copy
    account: ProbeAccount

    def copy(self, directory: Path, name: str) -> str:
        target = directory / f"{name}.db"
        shutil.copy(self.template, target)
        return f"sqlite:///{target}"


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    path = tmp_path_factory.mktemp("county") / "seed.db"
    account = seed_county(f"sqlite:///{path}")
    return Seeded(path, account)


class RumLines:
    """What the gateway logged, as the listener thread hands it over."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def add(self, lines: list[str]) -> None:
        with self._lock:
            self._lines.extend(lines)

    def take(self) -> list[str]:
        with self._lock:
            taken, self._lines = self._lines, []
        return taken


@dataclass(frozen=True)
class Platform:
    """Three counties behind the real gateway, all the same seeded data:
    base (app direct), slownet (a proxy adds 100 ms each way before the same app), slowapp (an app
    that waits 200 ms inside its own timing)."""

    gateway: HAProxyGateway
    rum: RumLines
    addresses: dict[str, int]
    app_ports: dict[str, int]
    account: ProbeAccount

    def target(self, county: str) -> Target:
        return Target(county, f"http://127.0.0.1:{self.addresses[county]}", self.account)


@pytest.fixture(scope="module")
def platform(seeded: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    if not HAPROXY.exists():
        pytest.skip("haproxy is not installed")
    work = tmp_path_factory.mktemp("platform")
    with (app_server(seeded.copy(work, "base"), log_path=work / "base.log") as base_port,
          app_server(seeded.copy(work, "slowapp"), server_delay_ms=INJECTED_MS,
                     log_path=work / "slowapp.log") as slow_app_port,
          DelayProxy(base_port, one_way_s=INJECTED_MS / 2000) as proxy):
        backends = {"base": base_port, "slownet": proxy.port, "slowapp": slow_app_port}
        with gateway(backends) as (gw, addresses):
            lines = RumLines()
            with RumListener(gw.paths.rum_socket, lines.add):
                for county in backends:
                    gw.wait_for(county, f"{county}-vm", ServerState.UP)
                yield Platform(gw, lines, addresses, backends, seeded.account)
