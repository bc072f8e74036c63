"""provisioning.steps run twice: place, disks (cold, with real qemu-img / mkfs.ext4 / ssh-keygen on
tiny files), start (cold, on libvirt's test driver), resize to plan, record and retire bookkeeping.
Every step must leave the same state when it runs again after a crash."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from inventory import queries
from inventory.db import session_scope
from inventory.enums import Lifecycle
from inventory.jobs import StepContext, StepResult
from provisioning import disks, fencing, images, probe_accounts, seed, sites, steps
from provisioning.hypervisor import DomainState, Hypervisor
from provisioning.images import GoldenImage
from provisioning.jobdata import Placed
from provisioning.platform import Platform
from provisioning.spec import DomainType
from provisioning.vmplan import vm_paths
from tests.unit.provisioning.test_steps_lists import (  # noqa: F401 (fixtures)
    VM,
    DriverPlatform,
    demo_db,
    engine,
    names,
    run,
)

pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None
        for tool in ("qemu-img", "mkfs.ext4", "ssh-keygen")),
    reason="needs qemu-img, mkfs.ext4 and ssh-keygen")

KEY = "9" * 16


@pytest.fixture
def platform(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:  # noqa: F811
    monkeypatch.setattr(sites, "state", lambda _site: sites.SiteState.UP)
    platform = DriverPlatform(engine=engine, state_dir=tmp_path / "state", cache_dir=tmp_path / "cache",
                              domain_type=DomainType.QEMU)
    with Hypervisor("primary", "test:///default") as hv:
        before = set(hv.names())
        yield platform
        for name in set(hv.names()) - before:
            hv.undefine(name)


@pytest.fixture
def golden(platform: Platform) -> GoldenImage:
    folder = images.image_dir(platform.cache_dir, KEY)
    folder.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(folder / "golden.qcow2"), "1M"],
                   check=True)
    for boot_file in ("vmlinuz", "initrd.img"):
        (folder / boot_file).write_bytes(b"")
    (folder / "manifest.json").write_text(f'{{"key": "{KEY}"}}')
    image = images.load(platform.cache_dir, KEY)
    assert image is not None
    return image


def cold_ctx(golden: GoldenImage, placed: object) -> StepContext:
    """What the steps before a VM's steps handed on: the placement, the pinned image, a cold boot."""
    assert isinstance(placed, Placed)
    return StepContext(job_id="job-1", args={"tenant": "keelung", "cold": True},
                       artifacts=Path("/nonexistent"),
                       previous={"golden-image": {"key": golden.key},
                                 "place": placed.model_dump(mode="json"),
                                 "template": {"mode": "cold", "site": placed.site}})


def _identity(db: Engine) -> tuple[str | None, str | None, str | None, Lifecycle, Lifecycle]:
    with session_scope(db) as session:
        vm = queries.get_vm(session, VM)
        return (vm.uuid, vm.mac, vm.host.name if vm.host else None, vm.status, vm.tenant.status)


def test_place_records_identity_once_and_a_rerun_keeps_it(platform: Platform) -> None:
    listed = steps.provision_steps({"tenant": "keelung"}, platform)
    first = run(listed, "place")
    placed = _identity(platform.engine)
    uuid, mac, host, vm_status, tenant_status = placed
    assert isinstance(first, Placed) and first.summary() == f"{VM} on {host}"
    assert first.vm(VM).site == "primary"
    assert uuid and mac and mac.startswith("52:54:00:")
    assert (vm_status, tenant_status) == (Lifecycle.PROVISIONING, Lifecycle.PROVISIONING)
    assert run(listed, "place") == first
    assert _identity(platform.engine) == placed  # same uuid, mac and host after a rerun


def test_cold_disks_are_made_once_and_kept_on_rerun(platform: Platform, golden: GoldenImage) -> None:
    listed = steps.provision_steps({"tenant": "keelung", "cold": True}, platform)
    context = cold_ctx(golden, run(listed, "place"))
    first = run(listed, f"{VM}:disks", context)
    assert first == "system disk on golden.qcow2, data disk created, seed disk"
    paths = vm_paths(platform.site("primary"), VM)
    # Backed by the site's own copy of the golden image, not by the cache's file.
    site_copy = platform.site("primary").images / golden.key / "golden.qcow2"
    assert disks.backing_of(paths.system_disk) == site_copy
    assert seed.probe(paths.data_disk).get("LABEL") == seed.DATA_LABEL
    assert seed.probe(paths.seed_disk).get("LABEL") == seed.SEED_LABEL
    host_key = paths.host_key.read_bytes()
    data_inode = paths.data_disk.stat().st_ino

    again = run(listed, f"{VM}:disks", context)
    assert again == "system disk on golden.qcow2, data disk kept, seed disk"
    assert paths.host_key.read_bytes() == host_key  # the VM's SSH identity survives a rerun
    assert paths.data_disk.stat().st_ino == data_inode  # the county's data is never remade
    assert platform.ssh_key.exists() and platform.ssh_key.with_suffix(".pub").exists()


def test_a_new_data_disk_forgets_the_probe_account_of_an_earlier_database(
        platform: Platform, golden: GoldenImage) -> None:
    # A county purged and created again: its old probe credentials name a user its new database lacks.
    credentials = probe_accounts.ProbeCredentials("cc-probe", "old-secret", "old-token", 1, 2)
    probe_accounts.save(platform.state_dir, "keelung", credentials)
    listed = steps.provision_steps({"tenant": "keelung", "cold": True}, platform)
    context = cold_ctx(golden, run(listed, "place"))
    made = run(listed, f"{VM}:disks", context)
    assert made == ("system disk on golden.qcow2, data disk created, seed disk, "
                    "probe account of the earlier database forgotten")
    assert probe_accounts.load(platform.state_dir, "keelung") is None
    # A rerun keeps the data disk, and credentials made for it since are kept too.
    probe_accounts.save(platform.state_dir, "keelung", credentials)
    assert run(listed, f"{VM}:disks", context) == "system disk on golden.qcow2, data disk kept, seed disk"
    assert probe_accounts.load(platform.state_dir, "keelung") == credentials


def test_cold_start_defines_and_boots_then_a_rerun_is_a_no_op(
    platform: Platform, golden: GoldenImage
) -> None:
    listed = steps.provision_steps({"tenant": "keelung", "cold": True}, platform)
    context = cold_ctx(golden, run(listed, "place"))
    run(listed, f"{VM}:disks", context)
    started = run(listed, f"{VM}:start", context)
    assert isinstance(started, StepResult) and started.summary() == "defined and started (cold boot)"
    with platform.hypervisor("primary") as hv:
        info = hv.info(VM)
        xml = hv.xml(VM)
    assert info is not None and info.persistent and info.state is DomainState.RUNNING
    assert str(platform.site("primary").images / golden.key / "vmlinuz") in xml  # the site's own copy
    assert str(vm_paths(platform.site("primary"), VM).data_disk) in xml
    again = run(listed, f"{VM}:start", context)
    assert isinstance(again, StepResult) and again.summary() == "already running"
    skipped = run(listed, f"{VM}:identity", context)
    assert skipped == "skipped: a cold boot applies its seed disk at first boot"
    assert run(listed, f"{VM}:resize", context) == "already 1 vCPU / 1024 MiB"


def test_disks_of_a_running_vm_keep_its_system_disk(platform: Platform, golden: GoldenImage) -> None:
    listed = steps.provision_steps({"tenant": "keelung", "cold": True}, platform)
    context = cold_ctx(golden, run(listed, "place"))
    run(listed, f"{VM}:disks", context)
    run(listed, f"{VM}:start", context)
    system = vm_paths(platform.site("primary"), VM).system_disk
    inode = system.stat().st_ino
    output = run(listed, f"{VM}:disks", context)
    assert output is not None and not output.startswith("system disk")
    assert system.stat().st_ino == inode  # never replaced under a running guest


def test_record_marks_tenant_and_vms_active(platform: Platform) -> None:
    listed = steps.provision_steps({"tenant": "keelung"}, platform)
    run(listed, "place")
    assert run(listed, "record") == "tenant keelung active"
    assert run(listed, "record") == "tenant keelung active"
    assert _identity(platform.engine)[3:] == (Lifecycle.ACTIVE, Lifecycle.ACTIVE)


def test_retire_bookkeeping_releases_hosts_and_a_retired_tenant_needs_no_site(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    provision = steps.provision_steps({"tenant": "keelung"}, platform)
    run(provision, "place")
    run(provision, "record")
    retire = steps.retire_steps({"tenant": "keelung"}, platform)
    assert run(retire, "mark") == "retiring"
    assert _identity(platform.engine)[4] is Lifecycle.RETIRING
    with pytest.raises(steps.ProvisioningError, match="being retired"):
        run(provision, "check")  # provisioning waits for the retirement to finish
    kept = probe_accounts.ProbeCredentials("cc-probe", "secret", "token", 1, 2)
    probe_accounts.save(platform.state_dir, "keelung", kept)
    assert run(retire, "record") == "tenant keelung retired"
    assert probe_accounts.load(platform.state_dir, "keelung") == kept, "retired without purge: data kept"
    uuid, _mac, host, vm_status, tenant_status = _identity(platform.engine)
    assert (host, vm_status, tenant_status) == (None, Lifecycle.RETIRED, Lifecycle.RETIRED)
    assert uuid is not None  # the identity is kept for a re-provision
    assert run(retire, "mark") == "retiring"  # a rerun does not reopen a finished retirement
    assert _identity(platform.engine)[4] is Lifecycle.RETIRED

    purged = steps.retire_steps({"tenant": "keelung", "purge": True}, platform)
    assert run(purged, "record") == "tenant keelung retired"
    assert probe_accounts.load(platform.state_dir, "keelung") is None, "purged: its probe account with it"

    monkeypatch.setattr(sites, "state", lambda _site: sites.SiteState.DOWN)
    assert run(retire, "check") == "tenant keelung is already retired"


class _SilentSiteHypervisor:
    """The failed site's daemon once it answers again: records what the retirement removes there."""

    def __init__(self, undefined: list[str]) -> None:
        self.undefined = undefined

    def __enter__(self) -> _SilentSiteHypervisor:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def undefine(self, name: str) -> None:
        self.undefined.append(name)

    def state(self, _name: str) -> DomainState:
        return DomainState.MISSING


def test_retiring_a_failed_over_county_removes_its_fenced_copy_once_the_site_answers(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    undefined: list[str] = []
    primary_hv = _SilentSiteHypervisor(undefined)
    driver_hypervisor = platform.hypervisor
    monkeypatch.setattr(platform, "hypervisor",
                        lambda site: primary_hv if site == "primary" else driver_hypervisor(site))
    provision = steps.provision_steps({"tenant": "keelung"}, platform)
    run(provision, "place")
    run(provision, "record")
    with session_scope(platform.engine) as session:  # failed over: it runs at the secondary
        secondary = queries.get_site(session, "secondary")
        queries.set_running_site(queries.get_tenant(session, "keelung"), secondary, actor="test")
    fencing.record(platform, fencing.FencedCopy(site="primary", vm=VM, uuid="u", how=fencing.FenceHow.MARKED,
                                                at=0.0))
    left_at_primary = vm_paths(platform.site("primary"), VM)
    left_at_primary.directory.mkdir(parents=True)
    left_at_primary.system_disk.write_bytes(b"overlay")
    left_at_primary.data_disk.write_bytes(b"county data")

    up = {"primary": sites.SiteState.DOWN, "secondary": sites.SiteState.UP}
    monkeypatch.setattr(sites, "state", lambda site: up[site.name])
    retire = steps.retire_steps({"tenant": "keelung"}, platform)
    assert "fenced-copies" in names(retire)
    said = run(retire, "fenced-copies")
    assert said == f"left fenced (site down; retire again once it is up): {VM} at primary"
    assert fencing.is_fenced(platform, "primary", VM) and undefined == []
    run(retire, "record")

    up["primary"] = sites.SiteState.UP
    # Created again before that: refused up front, saying what removes the copy.
    with pytest.raises(steps.ProvisioningError, match=r"fenced copy at site primary.*tenant retire keelung"):
        run(steps.provision_steps({"tenant": "keelung"}, platform), "check")
    again = steps.retire_steps({"tenant": "keelung"}, platform)
    assert run(again, "fenced-copies") == f"removed {VM} at primary"
    assert undefined == [VM] and not fencing.is_fenced(platform, "primary", VM)
    assert not left_at_primary.system_disk.exists()
    assert left_at_primary.data_disk.exists(), "not purged: its data disk is kept"
    assert run(again, "fenced-copies") == "none"  # a rerun finds nothing left to do
    run(steps.provision_steps({"tenant": "keelung"}, platform), "check")  # created again at its home
