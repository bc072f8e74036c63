"""A real outage of the primary site, watched by the service with automatic failover on: a paused
libvirtd (its county still serving) never starts a failover; a stopped site does, by itself, after
the grace period, and its county serves again at the secondary through the same address, while the
secondary's own county serves throughout."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from provisioning import sites
from provisioning.address import healthy
from tests.integration.vm.conftest import STATE_DIR, Cloud, needs_clones, served

pytestmark = [pytest.mark.vm, pytest.mark.outage, needs_clones]

GRACE_S = 10
# Longer than the grace period plus the watch's hold (3 s) and a check timeout: had the pause counted
# as a failure, the failover would have been submitted within it.
PAUSE_S = GRACE_S + 12
# Detection (~6 s), the grace period, then one county's restore, clone, activation and switch on a
# busy 2-core host.
FAILOVER_BOUND_S = 420
WATCH = {
    "COUNTYCLOUD_DR_WATCH": "true", "COUNTYCLOUD_DR_AUTOMATIC": "true",
    "COUNTYCLOUD_DR_GRACE_S": str(GRACE_S),
    # Only the watch: the schedule's and probes' jobs are tested on their own (see test_console).
    "COUNTYCLOUD_BACKUP_SCHEDULE": "false", "COUNTYCLOUD_MONITORING": "false",
}


def _watch(cloud: Cloud) -> Any:
    return cloud.json("dr", "watch")


def _verdicts(cloud: Cloud) -> dict[str, str]:
    found = _watch(cloud)
    return {site: view["verdict"] for site, view in (found or {}).get("sites", {}).items()}


def _wait_for(what: str, ready: Any, within_s: float, every_s: float = 2) -> Any:
    deadline = time.monotonic() + within_s
    while not (found := ready()):
        assert time.monotonic() < deadline, f"{what}: not within {within_s} s"
        time.sleep(every_s)
    return found


def _failover_jobs(cloud: Cloud) -> list[dict[str, Any]]:
    return [job for job in cloud.json("job", "list", "--target", "primary") if job["kind"] == "failover"]


def test_the_watch_fails_the_primary_over_by_itself_and_not_for_a_paused_daemon(
        cloud: Cloud, keelung: str) -> None:
    cloud.create("kinmen")  # at the secondary site
    primary_port, secondary_port = cloud.address(keelung), cloud.address("kinmen")
    assert healthy(primary_port) and healthy(secondary_port)
    cloud.backup_now(keelung)  # its restore point at the secondary (the test may run alone)
    failovers_before = {job["id"] for job in _failover_jobs(cloud)}
    try:
        with served(cloud, WATCH):
            _wait_for("the watch judges both sites up",
                      lambda: _verdicts(cloud) == {"primary": "up", "secondary": "up"}, within_s=60)

            # A paused daemon: the primary's libvirtd answers nothing, its county still serves.
            libvirtd = int(sites.site_paths(STATE_DIR, "primary").libvirtd_pidfile.read_text().strip())
            os.kill(libvirtd, signal.SIGSTOP)
            try:
                paused_until = time.monotonic() + PAUSE_S
                while time.monotonic() < paused_until:
                    assert _verdicts(cloud).get("primary") != "down", "a paused daemon declared the site down"
                    time.sleep(2)
                assert healthy(primary_port)
            finally:
                os.kill(libvirtd, signal.SIGCONT)
            assert {job["id"] for job in _failover_jobs(cloud)} == failovers_before
            assert cloud.json("tenant", "show", keelung)["running_site"] is None

            # The site itself goes: detected, fenced and failed over with no operator.
            cloud.cli("site", "stop", "primary")
            assert not healthy(primary_port), "the primary's county went down with its site"
            assert healthy(secondary_port), "the secondary's county kept serving"
            refused = cloud.cli("tenant", "create", "taichung", check=False)
            assert refused.returncode == 1 and "site primary is down" in refused.stderr

            outage = _wait_for("the watch's failover job",
                               lambda: (_watch(cloud) or {}).get("outages", {}).get("primary", {})
                               .get("failover_job"), within_s=120, every_s=1)
            _wait_for("keelung serving at the secondary",
                      lambda: cloud.json("tenant", "show", keelung)["running_site"] == "secondary"
                      and healthy(primary_port), within_s=FAILOVER_BOUND_S, every_s=3)
            job = cloud.json("job", "show", outage)
            assert job["kind"] == "failover" and job["target"] == "primary", job
            assert job["status"] == "succeeded", job["error"]
            assert {job["id"] for job in _failover_jobs(cloud)} - failovers_before == {outage}, \
                "one failover for one outage"
            shown = cloud.json("tenant", "show", keelung)
            assert shown["site"] == "primary" and shown["vms"][0]["site"] == "secondary"
            assert cloud.serving(keelung), "the county serves at the secondary through the same address"
            assert healthy(secondary_port), "the secondary's own county kept serving"
            # Recorded as the service's own doing: the outage, then the job it submitted.
            events = cloud.json("audit", "list", "--target", "primary")
            assert any(event["action"] == "dr.site-down" for event in events), events[:5]
            [submitted] = [event for event in events if event["job_id"] == outage]
            assert submitted["action"] == "dr" and submitted["actor_kind"] == "system", submitted
    finally:
        cloud.cli("site", "start", "primary")
        cloud.stop_rest_server()
