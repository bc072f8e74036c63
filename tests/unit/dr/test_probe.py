"""The check edge and its files: a daemon that accepts and never answers is silent within the timeout
with one question in flight; counties are counted; targets follow where VMs run; observation files
round-trip and tolerate garbage."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dr import observations
from dr.health import Observation
from dr.probe import DaemonCheck, Prober
from dr.targets import (
    SiteTarget,
    from_database,
    from_inventory,
    read_targets,
    targets_path,
    write_targets,
)
from inventory.enums import Lifecycle, SiteRole, VmRole
from inventory.models import Host, Site, Tenant, Vm
from provisioning.sites import site_paths

ANSWERING = "test:///default"  # libvirt's built-in test driver: always answers


class _Healthz(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def county_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def hung_daemon() -> Iterator[str]:
    """A libvirt socket whose daemon accepts connections and never answers (a paused libvirtd)."""
    folder = tempfile.mkdtemp(prefix="drh-")
    path = os.path.join(folder, "libvirt-sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(16)
    yield f"qemu:///system?socket={path}"
    listener.close()
    shutil.rmtree(folder, ignore_errors=True)


def _daemon_threads(site: str) -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == f"dr-daemon-{site}")


def test_an_answering_daemon_is_up() -> None:
    assert DaemonCheck("a").answered(ANSWERING, timeout_s=5.0)


def test_a_daemon_that_never_answers_is_silent_within_the_timeout_with_one_question_in_flight(
    hung_daemon: str,
) -> None:
    check = DaemonCheck("hung")
    for _ in range(4):
        started = time.monotonic()
        assert not check.answered(hung_daemon, timeout_s=0.3)
        assert time.monotonic() - started < 1.0
        assert _daemon_threads("hung") == 1


def test_a_missing_daemon_is_silent_at_once(tmp_path: Path) -> None:
    started = time.monotonic()
    assert not DaemonCheck("gone").answered(f"qemu:///system?socket={tmp_path}/no-sock", timeout_s=2.0)
    assert time.monotonic() - started < 1.0


def test_an_observation_counts_the_counties_that_answer(county_port: int, closed_port: int) -> None:
    prober = Prober("witness", timeout_s=1.0)
    try:
        target = SiteTarget(site="primary", libvirt_uri=ANSWERING,
                            counties={"keelung": county_port, "penghu": closed_port})
        (seen,) = prober.observe_all([target])
    finally:
        prober.close()
    assert (seen.vantage, seen.site, seen.daemon_ok) == ("witness", "primary", True)
    assert (seen.counties_checked, seen.counties_ok) == (2, 1)
    assert not seen.site_failed


def test_a_silent_daemon_with_an_answering_county_is_not_a_failed_site(
    hung_daemon: str, county_port: int
) -> None:
    prober = Prober("witness", timeout_s=0.3)
    try:
        seen = prober.observe(SiteTarget(site="p", libvirt_uri=hung_daemon, counties={"a": county_port}))
    finally:
        prober.close()
    assert not seen.daemon_ok and seen.counties_ok == 1
    assert not seen.site_failed
    assert seen.took_s < 1.0


def _vm(name: str, tenant: Tenant, host: Host | None, port: int | None,
        role: VmRole = VmRole.ACCOUNTING, status: Lifecycle = Lifecycle.ACTIVE) -> Vm:
    return Vm(name=name, tenant=tenant, host=host, app_port=port, role=role, status=status)


def test_targets_list_each_serving_vm_at_the_site_it_runs_at(tmp_path: Path) -> None:
    primary, secondary = Site(name="primary", role=SiteRole.PRIMARY), Site(name="secondary",
                                                                          role=SiteRole.SECONDARY)
    p1, s1 = Host(name="p1", site=primary), Host(name="s1", site=secondary)
    keelung, penghu, kinmen = (Tenant(slug=s, home_site=primary) for s in ("keelung", "penghu", "kinmen"))
    vms = [
        _vm("keelung-accounting", keelung, p1, 20001),
        _vm("keelung-database", keelung, p1, 20002, role=VmRole.DATABASE),  # not what users reach
        _vm("penghu-accounting", penghu, s1, 20003),  # runs at the secondary (after a failover)
        _vm("kinmen-accounting", kinmen, None, None, status=Lifecycle.PLANNED),  # not placed yet
    ]
    targets = from_inventory(tmp_path, [secondary, primary], vms)
    assert targets == [
        SiteTarget(site="primary", libvirt_uri=site_paths(tmp_path, "primary").uri,
                   counties={"keelung": 20001}),
        SiteTarget(site="secondary", libvirt_uri=site_paths(tmp_path, "secondary").uri,
                   counties={"penghu": 20003}),
    ]
    write_targets(tmp_path, targets)
    assert read_targets(targets_path(tmp_path)) == targets


def test_no_targets_file_means_nothing_to_check(tmp_path: Path) -> None:
    assert read_targets(targets_path(tmp_path)) == []


def _observation(vantage: str, at: float) -> Observation:
    return Observation(vantage=vantage, site="primary", at=at, took_s=0.01, daemon_ok=True,
                       counties_checked=1, counties_ok=1)


def test_observation_files_round_trip_and_skip_a_garbage_line(tmp_path: Path) -> None:
    mine = [_observation("witness", 100.0), _observation("witness", 101.0)]
    theirs = [_observation("secondary", 100.5)]
    observations.write(tmp_path, "witness", mine)
    observations.write(tmp_path, "secondary", theirs)
    with observations.path_of(tmp_path, "secondary").open("a") as out:
        out.write("{not json\n")
    found = sorted(observations.read(tmp_path), key=lambda o: o.at)
    assert found == sorted(mine + theirs, key=lambda o: o.at)
    # Only whole files, no temporary leftovers.
    assert sorted(p.name for p in observations.observations_dir(tmp_path).iterdir()) == [
        "secondary.jsonl", "witness.jsonl"]


def test_recent_keeps_the_window() -> None:
    kept = observations.recent([_observation("w", t) for t in (10.0, 20.0, 30.0)], now=35.0, keep_s=15.0)
    assert [o.at for o in kept] == [20.0, 30.0]


@pytest.mark.parametrize("name", ["../etc", "Witness", "", "a/b"])
def test_a_vantage_name_that_is_no_file_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="vantage point"):
        observations.path_of(tmp_path, name)


def test_targets_from_the_database_follow_placement(sqlite_url: str, tmp_path: Path) -> None:
    from inventory import declare, queries
    from inventory.db import make_engine, migrate, session_scope
    from inventory.loader import load_sample

    migrate(sqlite_url)
    with session_scope(make_engine(sqlite_url)) as session:
        declare.apply(session, load_sample())
        taichung = queries.get_vm(session, next(
            vm.name for vm in queries.vms_of(queries.get_tenant(session, "taichung"))))
        penghu = queries.get_vm(session, next(
            vm.name for vm in queries.vms_of(queries.get_tenant(session, "penghu"))))
        queries.place_vm(session, taichung)
        queries.place_vm(session, penghu, queries.get_site(session, "secondary"))
        session.flush()
        targets = {t.site: t for t in from_database(session, tmp_path)}
        assert taichung.app_port is not None and penghu.app_port is not None
        assert targets["primary"].counties == {"taichung": taichung.app_port}
        assert targets["secondary"].counties == {"penghu": penghu.app_port}
        assert targets["primary"].libvirt_uri == site_paths(tmp_path, "primary").uri
