"""The real-VM suite: counties provisioned on the site daemons through the `countycloud` CLI.

Everything here boots or clones real guests, so it runs once per session on one platform database
(PostgreSQL, as in production; the unit suite covers SQLite), in its own state folder and port
ranges, and purges what it made at the end. Tests that need a running county share one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import postgres

ROOT = Path(__file__).resolve().parents[3]
INVENTORY = Path(__file__).with_name("counties.yaml")
STATE_DIR = Path(os.environ.get("COUNTYCLOUD_STATE_DIR", "/var/lib/countycloud-test"))
# COUNTYCLOUD_TEST_COLD=1 boots every county instead of cloning a template: only to measure what the
# templates save the suite (docs/benchmarks.md); tests that assert the clone path are skipped then.
COLD = os.environ.get("COUNTYCLOUD_TEST_COLD") == "1"
# The suite's backup REST server (the secondary site's repository): a port kept for backup servers
# (23000-23009), clear of guest ports.
REST_PORT = 23007
# The primary's REST server, for a county backed up while failed over (its offsite is the primary).
# Not REST_PORT + 1, the derived default: test_backup.py's secondary server has that one.
PRIMARY_REST_PORT = 23006
REST_ENV = {"COUNTYCLOUD_BACKUP_REST_PORT": str(REST_PORT),
            "COUNTYCLOUD_BACKUP_REST_PORTS": f'{{"primary": {PRIMARY_REST_PORT}}}'}


@dataclass
class Cloud:
    env: dict[str, str]

    def cli(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "controlplane", *args], cwd=ROOT, env=self.env,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"countycloud {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def create_args(self, county: str) -> list[str]:
        """`tenant create` as this suite runs it: every county by cold boot under COUNTYCLOUD_TEST_COLD."""
        return ["tenant", "create", county, *(("--cold",) if COLD else ())]

    def create(self, county: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.cli(*self.create_args(county), *extra)

    def exec(self, county: str, command: str) -> str:
        """A shell command line in the county's VM (`tenant exec` quotes each argument, so the line
        goes to the guest's shell as one argument of `sh -c`)."""
        return self.cli("tenant", "exec", county, "--", "sh", "-c", command).stdout

    def address(self, county: str) -> int:
        return int(self.json("tenant", "show", county)["address"].rsplit(":", 1)[1].strip("/"))

    def serving(self, county: str, within_s: float = 60) -> bool:
        """The county answers /healthz 200 through its address within the bound (a TCG guest on a
        busy host may miss one answer; a county that is down never passes)."""
        from provisioning.address import NotHealthy, wait_healthy

        try:
            wait_healthy(self.address(county), timeout_s=within_s)
        except NotHealthy:
            return False
        return True

    def backup_now(self, county: str) -> None:
        """A backup of the county (restore point at both sites), its offsite copy through REST_PORT
        (PRIMARY_REST_PORT while it runs at the secondary)."""
        Cloud(env={**self.env, **REST_ENV}).cli("backup", "now", county)

    def platform_backup(self) -> Any:
        """`countycloud platform backup` (the schedule's copy of the platform database, offsite through
        REST_PORT): what it printed."""
        offsite = Cloud(env={**self.env, "COUNTYCLOUD_BACKUP_REST_PORT": str(REST_PORT)})
        return offsite.json("platform", "backup")

    def stop_rest_server(self) -> None:
        from backup import repository, restserver

        restserver.stop(repository.site_backup(STATE_DIR, "secondary").rest_server(REST_PORT))
        # a county backed up while failed over copied to the primary's own server (the next port)
        restserver.stop(repository.site_backup(STATE_DIR, "primary").rest_server(PRIMARY_REST_PORT))

    def platform_engine(self) -> Any:
        from inventory.db import make_engine

        return make_engine(self.env["COUNTYCLOUD_DATABASE_URL"])


@pytest.fixture(scope="session")
def cloud() -> Iterator[Cloud]:
    database = postgres.fresh_database("platform")
    env = {
        **os.environ,
        "COUNTYCLOUD_STATE_DIR": str(STATE_DIR),
        "COUNTYCLOUD_DATABASE_URL": database,
        # Ports of their own, so the suite never meets the demo's or a benchmark's guests.
        "COUNTYCLOUD_GUEST_PORT_FIRST": "24000", "COUNTYCLOUD_GUEST_PORT_LAST": "24999",
        "COUNTYCLOUD_GATEWAY_PORT_FIRST": "25000", "COUNTYCLOUD_GATEWAY_PORT_LAST": "25499",
    }
    cloud = Cloud(env=env)
    _purge_leftovers(cloud)
    cloud.cli("setup", timeout=3000)
    cloud.cli("inventory", "apply", str(INVENTORY))
    yield cloud
    # The database goes with the session, so the VMs go the quick way, not by a `tenant retire` job per
    # county (a CLI start each: two minutes for ten counties). Retire is tested on its own.
    _purge_leftovers(cloud)
    cloud.stop_rest_server()  # a failed test's, which would otherwise serve on after the session
    postgres.drop_database(database)


def _purge_leftovers(cloud: Cloud) -> None:
    """Every county VM in this state folder, gone (a crashed earlier run's, or this session's at its end)."""
    from provisioning import sites
    from provisioning.hypervisor import Hypervisor

    for name in ("primary", "secondary"):
        paths = sites.site_paths(STATE_DIR, name)
        sites.start(paths)
        with Hypervisor(name, paths.uri) as hv:
            for domain in hv.names():
                if not domain.startswith("cc-template-"):
                    hv.undefine(domain)
        for leftovers in (paths.disks / "vms", paths.scratch):
            if leftovers.exists():
                subprocess.run(["rm", "-rf", str(leftovers)], check=True)
    # An older fence ledger file names VMs of a database that is gone: imported into the new database,
    # provisioning would refuse them (the ledger is a table of the platform database now).
    (STATE_DIR / "dr" / "fenced.json").unlink(missing_ok=True)


@pytest.fixture(scope="session")
def keelung(cloud: Cloud) -> str:
    """A county provisioned from the primary site's template, shared by the tests that only use it."""
    cloud.create("keelung")
    return "keelung"


@pytest.fixture
def retired_after(cloud: Cloud) -> Iterator[list[str]]:
    """Counties a test names here are retired (purged) when it ends, passed or not: an idle TCG guest
    still costs the host CPU, which the later tests' guests (and their time bounds) need."""
    counties: list[str] = []
    yield counties
    if counties:  # at once: one CLI start, and the thirteen teardowns side by side
        cloud.cli("tenant", "retire", *counties, "--purge", check=False)


@contextmanager
def served(cloud: Cloud, settings: dict[str, str], within_s: float = 120) -> Iterator[str]:
    """`countycloud serve` (API, console, workers and what `settings` leave on) on the suite's platform,
    answering /healthz; its base URL. Stopped when the block ends."""
    from provisioning.address import healthy

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    process = subprocess.Popen([sys.executable, "-m", "controlplane", "serve", "--port", str(port)],
                               cwd=ROOT, env={**cloud.env, **settings}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + within_s
        while not healthy(port):
            assert process.poll() is None, process.stderr.read() if process.stderr else "serve exited"
            assert time.monotonic() < deadline, f"the service did not answer within {within_s} s"
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@dataclass
class ColdBoot:
    """`tenant create` of the one county whose template is broken (so it boots cold), started in the
    background when the session starts; its output goes to a file (a pipe could fill and stall it)."""

    county: str
    broken_template: Path
    process: subprocess.Popen[bytes]
    output: Path

    def wait(self, timeout_s: float = 900) -> tuple[int, str]:
        """The command's exit status and output, once it ended."""
        return self.process.wait(timeout=timeout_s), self.output.read_text(errors="replace")


@pytest.fixture(scope="session")
def cold_boot(cloud: Cloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ColdBoot]:
    """penghu (size `odd`, 896 MiB: the only county of that size) created while its template is a
    truncated state file: provisioning must fall back to booting the golden image."""
    import shutil

    from provisioning import images, sites, templates

    image = images.cached(Path(cloud.env.get("COUNTYCLOUD_CACHE_DIR", "/var/cache/countycloud")))
    assert image is not None, "setup built the golden image at the start of the session"
    broken = templates.template_dir(sites.site_paths(STATE_DIR, "primary"), image.key, 896)
    broken.mkdir(parents=True, exist_ok=True)
    (broken / "state.sav").write_bytes(b"LibvirtQemudSave" + b"\0" * 20)  # truncated
    (broken / "system.qcow2").write_bytes(b"")
    (broken / "manifest.json").write_text(json.dumps({
        "site": "primary", "image_key": image.key, "max_vcpus": 4, "max_memory_mib": 896, "vcpus": 1,
        "memory_mib": 896, "built_s": 0.0}))
    output = tmp_path_factory.mktemp("cold-boot") / "create.log"
    with output.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "controlplane", *cloud.create_args("penghu")],
                                   cwd=ROOT, env=cloud.env, stdout=sink, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        yield ColdBoot("penghu", broken, process, output)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(broken, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _cold_boot_first(request: pytest.FixtureRequest) -> None:
    """A cold boot holds a TCG core for minutes: it starts with the session, beside the tests before
    its own, rather than alone in the middle of the suite."""
    if not COLD and any("cold_boot" in getattr(item, "fixturenames", ()) for item in request.session.items):
        request.getfixturevalue("cold_boot")


needs_clones = pytest.mark.skipif(COLD, reason="asserts the template clone path; COUNTYCLOUD_TEST_COLD=1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A site outage kills every VM at that site: run it after everything else that needs them.
    items.sort(key=lambda item: item.get_closest_marker("outage") is not None)
