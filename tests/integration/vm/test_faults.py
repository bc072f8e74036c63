"""Faults during provisioning: a killed CLI, a port already taken, an unusable template."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from inventory.db import session_scope
from inventory.jobs import Job, JobStep, StepStatus
from tests.integration.vm.conftest import ROOT, STATE_DIR, Cloud, ColdBoot, needs_clones

pytestmark = pytest.mark.vm


def _step_status(cloud: Cloud, target: str, suffix: str) -> StepStatus | None:
    with session_scope(cloud.platform_engine()) as session:
        step = session.scalars(
            select(JobStep).join(Job).where(Job.target == target, JobStep.name.endswith(suffix))
            .order_by(Job.created_at.desc())
        ).first()
        return step.status if step else None


def test_kill_9_mid_provision_then_rerun_is_consistent(cloud: Cloud, retired_after: list[str]) -> None:
    retired_after.append("hsinchu-city")
    process = subprocess.Popen([sys.executable, "-m", "controlplane", *cloud.create_args("hsinchu-city")],
                               cwd=ROOT, env=cloud.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 600
    # Kill it in the middle of bringing the VM up: once the restore step has started.
    while _step_status(cloud, "hsinchu-city", ":start") not in (StepStatus.RUNNING, StepStatus.SUCCEEDED):
        assert process.poll() is None, "the job ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    cloud.create("hsinchu-city")  # the same command again repairs and finishes the job
    shown = cloud.json("tenant", "show", "hsinchu-city")
    assert shown["status"] == "active" and cloud.serving("hsinchu-city")
    listed = cloud.json("job", "list", "--target", "hsinchu-city")
    jobs = [job for job in listed if job["kind"] == "provision"]
    assert len(jobs) == 1, "the rerun continued the killed job instead of starting another"
    from provisioning import sites
    from provisioning.hypervisor import Hypervisor

    site = sites.site_paths(STATE_DIR, "primary")
    with Hypervisor("primary", site.uri) as hv:
        assert hv.names().count("hsinchu-city-accounting-1") == 1
        info = hv.info("hsinchu-city-accounting-1")
        assert info is not None and info.persistent
    # No copy of the template state is left behind (they live in the site's scratch folder on tmpfs).
    scratch = sorted(p.name for p in site.scratch.iterdir()) if site.scratch.exists() else []
    assert not [name for name in scratch if name.startswith("hsinchu-city-accounting-1.sav")], scratch


def test_port_clash_is_refused_before_anything_is_made(cloud: Cloud, retired_after: list[str]) -> None:
    retired_after.append("changhua")
    vm = cloud.json("tenant", "show", "changhua")["vms"][0]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", vm["ssh_port"]))
        squatter.listen()
        refused = cloud.cli(*cloud.create_args("changhua"), check=False)
    assert refused.returncode == 1
    assert f"127.0.0.1:{vm['ssh_port']}" in refused.stderr and "in use" in refused.stderr
    from provisioning import sites
    from provisioning.hypervisor import Hypervisor

    with Hypervisor("primary", sites.site_paths(STATE_DIR, "primary").uri) as hv:
        assert "changhua-accounting-1" not in hv.names(), "nothing may be left running"
    cloud.create("changhua")  # the port is free again: the same command finishes the job
    assert cloud.serving("changhua")


@needs_clones
def test_unusable_template_falls_back_to_a_cold_boot(cloud: Cloud, cold_boot: ColdBoot,
                                                      retired_after: list[str]) -> None:
    # Its `tenant create` began with the session (conftest's cold_boot): here it is waited for.
    retired_after.append(cold_boot.county)
    try:
        status, output = cold_boot.wait()
        assert status == 0, output[-3000:]
        job = cloud.json("job", "list", "--target", cold_boot.county)[0]
        steps = {step["name"]: step for step in cloud.json("job", "show", job["id"])["steps"]}
        said = steps["template"]["output"]
        assert said.startswith("template unusable, falling back to a cold boot")
        assert "cold boot: template unusable" in said  # the step's typed result: a cold boot chosen
        assert str(cold_boot.broken_template / "state.sav") in said, "the refusal names the file"
        assert "defined and started (cold boot)" in steps[f"{cold_boot.county}-accounting-1:start"]["output"]
        assert cloud.serving(cold_boot.county)
    finally:
        import shutil

        shutil.rmtree(cold_boot.broken_template, ignore_errors=True)
