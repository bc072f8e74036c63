"""A county provisioned on a real VM, reached through its own HAProxy address."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from tests.integration.vm.conftest import INVENTORY, Cloud, needs_clones

pytestmark = pytest.mark.vm


@needs_clones
def test_county_serves_through_its_address_from_a_template_clone(cloud: Cloud, keelung: str) -> None:
    shown = cloud.json("tenant", "show", keelung)
    assert shown["status"] == "active"
    assert cloud.serving(keelung)
    port = cloud.address(keelung)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
        assert answer.status == 200
        # The app reports its own time, which probes use to split network from server time.
        assert "app;dur=" in answer.headers["Server-Timing"]
    job = cloud.json("job", "list", "--target", keelung)[0]
    steps = {step["name"]: step for step in cloud.json("job", "show", job["id"])["steps"]}
    assert all(step["status"] == "succeeded" for step in steps.values())
    assert "cloned the template state" in steps["keelung-accounting-1:start"]["output"]
    assert "activation requested" in steps["keelung-accounting-1:identity"]["output"]
    assert "converged" in steps["configure"]["output"]


def test_county_vm_has_its_own_identity_and_settings(cloud: Cloud, keelung: str) -> None:
    assert cloud.exec(keelung, "hostname").strip() == "keelung-accounting-1"
    settings = cloud.exec(keelung, "cat /etc/tenant-app.env")
    assert "TENANT_APP_COUNTY_ID=keelung" in settings
    assert "TENANT_APP_COUNTY_NAME=基隆市" in settings
    # The county's database lives on its data disk, not on the disposable system disk.
    assert "/srv/tenant-data" in cloud.exec(keelung, "findmnt -n -o TARGET LABEL=ccdata")
    assert cloud.exec(keelung, "test -s /srv/tenant-data/tenant.db && echo present").strip() == "present"


def test_live_resize_is_seen_inside_the_guest(cloud: Cloud, keelung: str) -> None:
    mem_total = "awk '/MemTotal/ {print $2}' /proc/meminfo"
    before_kib = int(cloud.exec(keelung, mem_total))
    cloud.cli("tenant", "resize", keelung, "--vcpus", "2", "--memory", "768")
    assert cloud.exec(keelung, "nproc").strip() == "2"
    total_kib = int(cloud.exec(keelung, mem_total))
    # 1024 -> 768 MiB: the balloon takes 256 MiB. (MemTotal is less than the size by what the kernel
    # keeps for itself, which grows with the VM's maximum: 4 GiB for a cold-booted one.)
    assert total_kib <= 768 * 1024
    assert abs((before_kib - total_kib) - 256 * 1024) <= 4 * 1024, (before_kib, total_kib)
    vm = cloud.json("tenant", "show", keelung)["vms"][0]
    assert (vm["vcpus"], vm["memory_mb"]) == (2, 768)
    # Beyond the maximum fixed when the template was saved: refused, the VM untouched.
    refused = cloud.cli("tenant", "resize", keelung, "--vcpus", "8", "--memory", "768", check=False)
    assert refused.returncode == 1
    assert "possible live" in refused.stderr
    assert cloud.exec(keelung, "nproc").strip() == "2"


def test_changed_settings_converge_with_ansible(cloud: Cloud, keelung: str, tmp_path: Path) -> None:
    declared = INVENTORY.read_text(encoding="utf-8").replace(
        "{slug: keelung, name: 基隆市, site: primary,",
        "{slug: keelung, name: 基隆市, site: primary, settings: {county_name: 基隆市政府},")
    changed = tmp_path / "counties.yaml"
    changed.write_text(declared, encoding="utf-8")
    cloud.cli("inventory", "apply", str(changed))
    cloud.cli("tenant", "configure", keelung)
    assert "TENANT_APP_COUNTY_NAME=基隆市政府" in cloud.exec(keelung, "cat /etc/tenant-app.env")
    assert cloud.serving(keelung)
    job = next(job for job in cloud.json("job", "list", "--target", keelung) if job["kind"] == "configure")
    steps = {step["name"]: step for step in cloud.json("job", "show", job["id"])["steps"]}
    assert "converged 1 VM(s)" in steps["configure"]["output"]
    run_dir = Path(steps["configure"]["output"].strip().rsplit("run folder ", 1)[1])
    assert (run_dir / "artifacts").is_dir(), "each playbook run's folder is kept with its job"
