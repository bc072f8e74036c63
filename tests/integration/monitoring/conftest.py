"""Module-wide real components: one seeded county database (copied per server), the app under
uvicorn (plain and with 200 ms of server-side delay), a delaying proxy and the real HAProxy."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from monitoring.probes import ProbeAccount, Target
from monitoring.rum import Gap, RingRead
from provisioning.haproxy import HAPROXY, HAProxyGateway, ServerState

from .support import DelayProxy, app_server, gateway, request_log_reader, seed_county

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
    """What the gateway logged, as the request-log reader's thread hands it over."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self.gaps: list[Gap] = []
        self._lock = threading.Lock()

    def add(self, read: RingRead) -> None:
        with self._lock:
            self._lines.extend(read.lines)
            if read.gap is not None:
                self.gaps.append(read.gap)

    def take(self) -> list[str]:
        with self._lock:
            taken, self._lines = self._lines, []
        return taken


@dataclass(frozen=True)
class Platform:
    """Three counties behind the real gateway, all served by ONE app process, each through a TCP
    proxy on 127.0.0.1: base (no delay), slownet (its proxy holds every chunk 100 ms each way),
    slowapp (no delay; its requests carry the test delay header, so the app waits 200 ms inside its
    own timing)."""

    gateway: HAProxyGateway
    rum: RumLines
    proxy: DelayProxy
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
    # Every county reaches the app through a proxy (the same hops); only slownet's one delays.
    with (app_server(seeded.copy(work, "base"), log_path=work / "base.log") as base_port,
          DelayProxy(base_port, one_way_s=INJECTED_MS / 2000) as proxy,
          DelayProxy(base_port, one_way_s=0.0) as plain):
        backends = {"base": plain.port, "slownet": proxy.port, "slowapp": plain.port}
        with gateway(backends) as (gw, addresses):
            lines = RumLines()
            with request_log_reader(gw, lines.add):
                for county in backends:
                    gw.wait_for(county, f"{county}-vm", ServerState.UP)
                yield Platform(gw, lines, proxy, addresses, backends, seeded.account)
