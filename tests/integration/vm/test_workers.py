"""Two service workers share the platform database; one is killed -9 in the middle of a 13-county
create. The other takes over its jobs: every county serves, with one domain, one set of disks and
its own ports each (issue 11: "kill -9 of a worker in the middle of a 13-county create")."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests.integration.vm.conftest import ROOT, STATE_DIR, Cloud

pytestmark = pytest.mark.vm

COUNTIES = ["yilan", "hualien", "taitung", "nantou", "yunlin", "chiayi-county", "pingtung", "miaoli",
            "tainan", "kaohsiung", "taoyuan", "new-taipei", "lienchiang"]
TAKEOVER_BOUND_S = 30.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _worker(cloud: Cloud) -> subprocess.Popen[str]:
    """`countycloud serve` in the foreground, in its own process group (so kill -9 takes it whole)."""
    return subprocess.Popen(
        [sys.executable, "-m", "controlplane", "serve", "--port", str(_free_port())],
        # Only the jobs under test: the backup schedule's rounds (a database copied out of a TCG guest
        # each) and the probes took the cores from the 13 creates (seen in the merged suite). Both are
        # tested on their own, and so is the site watch (four vantage points asking 13 TCG guests for
        # /healthz every second).
        cwd=ROOT, env={**cloud.env, "COUNTYCLOUD_BACKUP_SCHEDULE": "false",
                       "COUNTYCLOUD_MONITORING": "false", "COUNTYCLOUD_DR_WATCH": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _all_jobs(cloud: Cloud) -> list[dict[str, object]]:
    rows = cloud.json("job", "list", "--limit", "500")
    return [row for row in rows if row["kind"] == "provision" and row["target"] in COUNTIES]


def _jobs(cloud: Cloud) -> dict[str, dict[str, object]]:
    """The newest provision job of each of the thirteen."""
    newest: dict[str, dict[str, object]] = {}
    for row in _all_jobs(cloud):  # newest first
        newest.setdefault(str(row["target"]), row)
    return newest


def _wait_workers(cloud: Cloud, count: int, timeout_s: float = 60) -> None:
    from controlplane import jobs

    engine = cloud.platform_engine()
    deadline = time.monotonic() + timeout_s
    while len(jobs.live_workers(engine)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} live workers after {timeout_s} s"
        time.sleep(0.5)
    engine.dispose()


def test_a_killed_workers_jobs_finish_on_the_other_worker_once(
        cloud: Cloud, retired_after: list[str]) -> None:
    # Retired when the test ends, passed or not: the tests after this one (a failover, a site outage)
    # need the cores these 13 TCG guests would idle on (keelung stopped answering SSH beside them).
    retired_after.extend(COUNTIES)
    first = _worker(cloud)
    second: subprocess.Popen[str] | None = None
    try:
        _wait_workers(cloud, 1)
        submitted = cloud.cli("tenant", "create", "--no-wait", *COUNTIES)
        ids = dict(line.split() for line in submitted.stdout.splitlines() if line.strip())
        assert sorted(ids) == sorted(COUNTIES)
        # Kill it once some counties are on their way (VM steps under way), not before any started.
        deadline = time.monotonic() + 300
        while True:
            started = [row for row in _jobs(cloud).values() if row["status"] == "running"]
            if len(started) >= 2:
                break
            assert first.poll() is None, first.stderr.read() if first.stderr else "worker died"
            assert time.monotonic() < deadline, "no job started on the first worker"
            time.sleep(0.5)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        killed_at = time.monotonic()
        second = _worker(cloud)
        deadline = time.monotonic() + 900
        taken_over_s = None
        while True:
            rows = _jobs(cloud)
            if taken_over_s is None and any(row["status"] == "running" for row in rows.values()):
                taken_over_s = time.monotonic() - killed_at
            if all(rows[county]["status"] == "succeeded" for county in COUNTIES):
                break
            failed = {county: rows[county].get("error") for county in COUNTIES
                      if rows[county]["status"] == "failed"}
            assert not failed, failed
            assert second.poll() is None, second.stderr.read() if second.stderr else "worker died"
            assert time.monotonic() < deadline, {county: rows[county]["status"] for county in COUNTIES}
            time.sleep(1)
        assert taken_over_s is not None and taken_over_s <= TAKEOVER_BOUND_S + 15, taken_over_s
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=30)

    # Each county: the one job we were given, done; serving through its own address.
    assert sorted((str(row["target"]), row["id"]) for row in _all_jobs(cloud)) == sorted(ids.items())
    for county in COUNTIES:
        assert cloud.serving(county), f"{county} does not serve through its address"
    # No duplicate domain, disk or port.
    from provisioning import sites
    from provisioning.hypervisor import Hypervisor

    paths = sites.site_paths(STATE_DIR, "primary")
    with Hypervisor("primary", paths.uri) as hv:
        domains = [name for name in hv.names() if not name.startswith("cc-template-")]
    vms = [f"{county}-accounting-1" for county in COUNTIES]
    assert all(Counter(domains)[vm] == 1 for vm in vms), domains
    assert all((paths.disks / "vms" / vm / "system.qcow2").exists() for vm in vms)
    tenants = [row for row in cloud.json("tenant", "list") if row["tenant"] in COUNTIES]
    ports = [port for row in tenants for vm in row["vms"] for port in (vm["ssh_port"], vm["app_port"])]
    addresses = [row["address"] for row in tenants]
    assert len(set(ports)) == len(ports) == 2 * len(COUNTIES)
    assert len(set(addresses)) == len(addresses) == len(COUNTIES)
