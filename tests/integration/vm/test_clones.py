"""Two counties cloned from one prebooted template share nothing that makes a machine itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from provisioning import disks, sites
from provisioning.address import healthy
from provisioning.hypervisor import Hypervisor
from tests.integration.vm.conftest import STATE_DIR, Cloud, needs_clones

pytestmark = pytest.mark.vm

IDENTITY = {
    "machine-id": "cat /etc/machine-id",
    "hostname": "hostname",
    "ssh host key": "cat /etc/ssh/ssh_host_ed25519_key.pub",
    "app secret": "grep ^TENANT_APP_SECRET= /etc/tenant-app.env",
    # Clones restore the same kernel RNG state; activation reseeds it with bytes of their own.
    "random bytes": "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'",
}


@pytest.fixture(scope="module")
def taichung(cloud: Cloud) -> str:
    cloud.create("taichung")
    return "taichung"


@needs_clones
def test_two_clones_of_one_template_are_distinct(cloud: Cloud, keelung: str, taichung: str) -> None:
    site = sites.site_paths(STATE_DIR, "primary")
    bases = {disks.backing_of(site.disks / "vms" / f"{county}-accounting-1" / "system.qcow2")
             for county in (keelung, taichung)}
    assert len(bases) == 1 and None not in bases, "both counties are linked clones of one frozen disk"
    # The site's QEMUs run without transparent huge pages (sites.py), so a clone keeps only the
    # memory it restored and touched.
    qemus = sites.qemu_pids(site)
    assert len(qemus) >= 2
    for pid in qemus:
        assert "THP_enabled:\t0" in Path(f"/proc/{pid}/status").read_text()
    for what, command in IDENTITY.items():
        first, second = cloud.exec(keelung, command).strip(), cloud.exec(taichung, command).strip()
        assert first and second, what
        assert first != second, f"{what} is shared by two clones: {first}"


def _presented_host_key(ssh_port: int) -> str:
    scan = subprocess.run(["ssh-keyscan", "-t", "ed25519", "-T", "20", "-p", str(ssh_port), "127.0.0.1"],
                          capture_output=True, text=True, timeout=60, check=True)
    return " ".join(scan.stdout.split()[1:3])  # "[127.0.0.1]:PORT ssh-ed25519 KEY" -> type and key


@needs_clones
def test_sshd_presents_each_clones_own_host_key(cloud: Cloud, keelung: str, taichung: str) -> None:
    # sshd is not restarted at activation (launcher.py): its per-connection child must read the new key.
    presented = {}
    for county in (keelung, taichung):
        on_disk = " ".join(cloud.exec(county, "cat /etc/ssh/ssh_host_ed25519_key.pub").split()[:2])
        presented[county] = _presented_host_key(cloud.json("tenant", "show", county)["vms"][0]["ssh_port"])
        assert presented[county] == on_disk, county
    assert presented[keelung] != presented[taichung]


def test_retire_removes_the_vm_and_keeps_the_data(cloud: Cloud, taichung: str) -> None:
    port = cloud.address(taichung)
    cloud.cli("tenant", "retire", taichung)
    assert cloud.json("tenant", "show", taichung)["status"] == "retired"
    site = sites.site_paths(STATE_DIR, "primary")
    with Hypervisor("primary", site.uri) as hv:
        assert "taichung-accounting-1" not in hv.names()
    vm_dir = site.disks / "vms" / "taichung-accounting-1"
    assert not (vm_dir / "system.qcow2").exists()
    assert (vm_dir / "data.img").exists(), "retire without --purge keeps the county's data"
    assert not healthy(port), "a retired county's address no longer serves"
