"""provisioning.vmplan: the pure functions over one county VM's plan (paths, env, identity, cold spec)."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from provisioning import seed, vmplan
from provisioning.domain_xml import render_domain_xml
from provisioning.images import GoldenImage
from provisioning.sites import site_paths
from provisioning.spec import DiskFormat, DomainType, SpecError, UserNetwork
from provisioning.vmplan import VmPlan

PLAN = VmPlan(
    name="keelung-accounting-1", uuid="c7a5fdbd-cdaf-4455-926a-d65c16db1809", tenant="keelung",
    county_name="基隆市", site="primary", vcpus=1, memory_mib=1024, data_disk_mib=256,
    ssh_port=42001, app_port=42002, app_secret="s3cret-value", settings={"county_name": "基隆市"},
)
IMAGE = GoldenImage(key="0123456789abcdef", disk=Path("/cache/images/0123456789abcdef/golden.qcow2"),
                    kernel=Path("/cache/images/0123456789abcdef/vmlinuz"),
                    initrd=Path("/cache/images/0123456789abcdef/initrd.img"))


def test_paths_sit_in_the_vms_folder_of_the_site() -> None:
    site = site_paths(Path("/state"), "primary")
    paths = vmplan.vm_paths(site, PLAN.name)
    assert paths.directory == Path("/state/sites/primary/disks/vms/keelung-accounting-1")
    assert {p.name for p in (paths.system_disk, paths.seed_disk, paths.data_disk, paths.agent_socket,
                             paths.serial_log, paths.host_key)} == {
        "system.qcow2", "seed.img", "data.img", "agent.sock", "console.log", "ssh_host_ed25519_key"}
    assert all(p.parent == paths.directory for p in (paths.system_disk, paths.data_disk))
    # The clone's copy of the template state lives in memory, in a folder of the site's own.
    assert paths.clone_state == site.scratch / "keelung-accounting-1.sav"
    assert site.scratch.parent == Path("/dev/shm")
    assert site.scratch != site_paths(Path("/state"), "secondary").scratch
    assert site.scratch != site_paths(Path("/other-state"), "primary").scratch


def test_two_sites_never_share_a_vm_folder() -> None:
    primary = vmplan.vm_paths(site_paths(Path("/state"), "primary"), PLAN.name)
    secondary = vmplan.vm_paths(site_paths(Path("/state"), "secondary"), PLAN.name)
    assert primary.directory != secondary.directory


def test_forwards_map_the_recorded_host_ports_to_ssh_and_the_app() -> None:
    pairs = [(f.host_port, f.guest_port) for f in vmplan.forwards(PLAN)]
    assert pairs == [(42001, 22), (42002, 8080)]


def test_machine_id_is_32_lower_hex_and_follows_the_uuid() -> None:
    machine = vmplan.machine_id(PLAN)
    assert machine == "c7a5fdbdcdaf4455926ad65c16db1809"
    other = dataclasses.replace(PLAN, uuid="0b6f3c1e-6d7a-4c35-9a1e-7f1f0e2d9c11")
    assert vmplan.machine_id(other) != machine
    other_id = vmplan.machine_id(other)
    assert len(other_id) == 32 and other_id == other_id.lower()


def test_app_env_carries_identity_secret_and_a_database_on_the_data_disk() -> None:
    env = vmplan.app_env(PLAN)
    assert env["TENANT_APP_COUNTY_ID"] == "keelung"
    assert env["TENANT_APP_COUNTY_NAME"] == "基隆市"
    assert env["TENANT_APP_SECRET"] == "s3cret-value"
    assert env["TENANT_APP_DATABASE_URL"] == f"sqlite:///{vmplan.GUEST_DATA_DIR}/tenant.db"
    assert env["TENANT_APP_PORT"] == "8080"
    # Only the gateway, as the guest sees it under QEMU user networking, may say who the client is.
    assert env["TENANT_APP_TRUSTED_PROXIES"] == "10.0.2.2"
    # The env file is valid for the seed disk (upper-case keys, no quotes or newlines).
    assert "TENANT_APP_SECRET=s3cret-value\n" in seed.render_env(env)


def test_declared_settings_become_upper_case_app_settings_and_win() -> None:
    plan = dataclasses.replace(PLAN, settings={"county_name": "基隆市政府", "fiscal_year": "2027"})
    env = vmplan.app_env(plan)
    assert env["TENANT_APP_FISCAL_YEAR"] == "2027"
    assert env["TENANT_APP_COUNTY_NAME"] == "基隆市政府"  # "unless the file says otherwise"


def test_settings_digest_is_stable_and_changes_with_any_setting() -> None:
    digest = vmplan.settings_digest(PLAN)
    assert digest == vmplan.settings_digest(dataclasses.replace(PLAN))
    assert len(digest) == 16
    changed = [
        dataclasses.replace(PLAN, app_secret="rotated"),
        dataclasses.replace(PLAN, settings={**PLAN.settings, "fiscal_year": "2027"}),
        dataclasses.replace(PLAN, tenant="keelung-city"),
    ]
    digests = {vmplan.settings_digest(plan) for plan in changed}
    assert digest not in digests and len(digests) == 3


def test_settings_digest_ignores_what_is_not_a_setting() -> None:
    # Size and ports are changed by resize / placement, not by the configure step.
    moved = dataclasses.replace(PLAN, vcpus=2, memory_mib=2048, ssh_port=42011, app_port=42012)
    assert vmplan.settings_digest(moved) == vmplan.settings_digest(PLAN)


def test_hotplug_disks_are_the_seed_read_only_and_the_data_disk() -> None:
    paths = vmplan.vm_paths(site_paths(Path("/state"), "primary"), PLAN.name)
    seed_disk, data_disk = vmplan.hotplug_disks(paths)
    assert (seed_disk.target, seed_disk.path, seed_disk.readonly, seed_disk.fmt) == (
        "vdb", paths.seed_disk, True, DiskFormat.RAW)
    assert (data_disk.target, data_disk.path, data_disk.readonly, data_disk.fmt) == (
        "vdc", paths.data_disk, False, DiskFormat.RAW)
    assert {seed_disk.serial, data_disk.serial} == {"ccseed", "ccdata"}


def test_cold_spec_boots_the_golden_kernel_from_its_own_clone_with_every_disk() -> None:
    paths = vmplan.vm_paths(site_paths(Path("/state"), "primary"), PLAN.name)
    spec = vmplan.cold_spec(PLAN, paths, IMAGE, DomainType.QEMU)
    assert (spec.name, spec.uuid, spec.vcpus, spec.memory_mib) == (PLAN.name, PLAN.uuid, 1, 1024)
    # A boot pays nothing for its maximums: room to grow live.
    assert (spec.max_vcpus, spec.max_memory_mib) == (vmplan.COLD_MAX_VCPUS, vmplan.COLD_MAX_MEMORY_MIB)
    assert (spec.max_vcpus, spec.max_memory_mib) >= (4, 4096)
    assert (spec.kernel, spec.initrd, spec.cmdline) == (IMAGE.kernel, IMAGE.initrd, IMAGE.cmdline)
    assert [d.target for d in spec.disks] == ["vda", "vdb", "vdc"]
    assert spec.disk("vda").path == paths.system_disk and spec.disk("vda").fmt is DiskFormat.QCOW2
    assert isinstance(spec.network, UserNetwork)
    assert [(f.host_port, f.guest_port) for f in spec.network.forwards] == [(42001, 22), (42002, 8080)]
    assert spec.agent_socket == paths.agent_socket and spec.serial_log == paths.serial_log

    domain = ET.fromstring(render_domain_xml(spec))
    assert domain.get("type") == "qemu"
    assert domain.findtext("name") == PLAN.name
    assert [d.find("source").get("file") for d in domain.iter("disk")] == [  # type: ignore[union-attr]
        str(paths.system_disk), str(paths.seed_disk), str(paths.data_disk)]


def test_cold_spec_maxima_never_fall_below_the_plan() -> None:
    big = dataclasses.replace(PLAN, vcpus=vmplan.COLD_MAX_VCPUS * 2,
                              memory_mib=vmplan.COLD_MAX_MEMORY_MIB * 2)
    paths = vmplan.vm_paths(site_paths(Path("/state"), "primary"), big.name)
    spec = vmplan.cold_spec(big, paths, IMAGE, DomainType.KVM)
    assert (spec.max_vcpus, spec.max_memory_mib) == (big.vcpus, big.memory_mib)
    assert spec.domain_type is DomainType.KVM


def test_cold_spec_refuses_a_plan_name_libvirt_would_not_take() -> None:
    bad = dataclasses.replace(PLAN, name="Keelung_App")
    paths = vmplan.vm_paths(site_paths(Path("/state"), "primary"), bad.name)
    with pytest.raises(SpecError, match="name must be"):
        vmplan.cold_spec(bad, paths, IMAGE, DomainType.QEMU)
