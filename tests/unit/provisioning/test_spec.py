from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.spec import (
    LOOPBACK,
    BridgeNetwork,
    Disk,
    DiskFormat,
    DomainType,
    Forward,
    SpecError,
    UserNetwork,
    VMSpec,
    detect_domain_type,
    new_uuid,
)
from tests.unit.provisioning.specs import keelung_spec

CPUINFO_TCG = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep hypervisor lahf_lm
bugs\t\t: spectre_v1
"""


def test_detect_domain_type_is_qemu_without_vmx_or_svm() -> None:
    assert detect_domain_type(CPUINFO_TCG) is DomainType.QEMU


@pytest.mark.parametrize("flag", ["vmx", "svm"])
def test_detect_domain_type_is_kvm_with_flag(flag: str) -> None:
    assert detect_domain_type(CPUINFO_TCG.replace("hypervisor", f"hypervisor {flag}")) is DomainType.KVM


def test_detect_domain_type_ignores_vmx_outside_the_flags_line() -> None:
    # "vmx flags" lines (e.g. vmx_flags on newer kernels) and model names must not count as support.
    text = CPUINFO_TCG + "vmx flags\t: vnmi preemption_timer\nmodel name\t: svm emulator\n"
    assert detect_domain_type(text) is DomainType.QEMU


def test_detect_domain_type_does_not_match_substrings() -> None:
    assert detect_domain_type(CPUINFO_TCG.replace("hypervisor", "vmxfoo svmbar")) is DomainType.QEMU


def test_forward_host_side_is_always_loopback() -> None:
    assert Forward(2222, 22).host_address == LOOPBACK == "127.0.0.1"


@pytest.mark.parametrize("host, guest", [(0, 22), (65536, 22), (22, 0), (22, -1), (True, 22)])
def test_forward_rejects_out_of_range_ports(host: int, guest: int) -> None:
    with pytest.raises(SpecError, match="1-65535"):
        Forward(host, guest)


def test_user_network_rejects_duplicate_host_ports() -> None:
    with pytest.raises(SpecError, match="host ports must be unique"):
        UserNetwork((Forward(2222, 22), Forward(2222, 8080)))


def test_bridge_network_validates_vlan_and_mac() -> None:
    BridgeNetwork("br0", None, "52:54:00:00:00:01")
    with pytest.raises(SpecError, match="vlan"):
        BridgeNetwork("br0", 4095, "52:54:00:00:00:01")
    with pytest.raises(SpecError, match="mac"):
        BridgeNetwork("br0", 10, "52:54:00:00:00")
    with pytest.raises(SpecError, match="unicast"):
        BridgeNetwork("br0", 10, "01:00:5e:00:00:01")
    with pytest.raises(SpecError, match="bridge"):
        BridgeNetwork("a-bridge-name-too-long", 10, "52:54:00:00:00:01")


def test_disk_validates_target_serial_and_path() -> None:
    with pytest.raises(SpecError, match="target"):
        Disk(Path("/d.img"), "sda", DiskFormat.RAW)
    with pytest.raises(SpecError, match="serial"):
        Disk(Path("/d.img"), "vdb", DiskFormat.RAW, serial="x" * 21)
    with pytest.raises(SpecError, match="absolute"):
        Disk(Path("d.img"), "vdb", DiskFormat.RAW)
    with pytest.raises(SpecError, match="DiskFormat"):
        Disk(Path("/d.img"), "vdb", "qcow2")  # type: ignore[arg-type]


def test_spec_is_frozen(spec: VMSpec) -> None:
    with pytest.raises(AttributeError):
        spec.vcpus = 2  # type: ignore[misc]


def test_with_overrides_changes_only_the_given_fields(spec: VMSpec) -> None:
    bigger = spec.with_overrides(vcpus=2, memory_mib=2048)
    assert (bigger.vcpus, bigger.memory_mib) == (2, 2048)
    assert bigger.disks == spec.disks and bigger.network == spec.network
    assert spec.vcpus == 1  # the original is untouched


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"vcpus": 5}, "must not exceed max_vcpus"),
        ({"memory_mib": 8192}, "must not exceed max_memory_mib"),
        ({"vcpus": 0}, "positive integer"),
        ({"name": "Keelung"}, "name must be"),
        ({"name": "keelung_app"}, "name must be"),
        ({"name": "-keelung"}, "name must be"),
        ({"uuid": "not-a-uuid"}, "uuid"),
        ({"uuid": "C7A5FDBD-CDAF-4455-926A-D65C16DB1809"}, "uuid"),
        ({"kernel": Path("vmlinuz")}, "absolute"),
        ({"cmdline": "root=/dev/vda\ninit=/bin/sh"}, "single line"),
        ({"disks": ()}, "at least one disk"),
        ({"agent_socket": Path("agent.sock")}, "absolute"),
        ({"tb_cache_mib": 0}, "positive integer"),
        ({"network": "user"}, "network must be"),
    ],
)
def test_spec_validation_refuses(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        keelung_spec(**overrides)


def test_spec_refuses_duplicate_disk_targets(spec: VMSpec) -> None:
    dup = (*spec.disks, Disk(Path("/other.img"), "vdb", DiskFormat.RAW))
    with pytest.raises(SpecError, match="targets must be unique"):
        spec.with_overrides(disks=dup)


def test_spec_disk_lookup(spec: VMSpec) -> None:
    assert spec.disk("vdc").serial == "ccdata"
    with pytest.raises(KeyError):
        spec.disk("vdz")


def test_new_uuid_is_accepted_by_the_spec() -> None:
    assert keelung_spec(uuid=new_uuid()).uuid != keelung_spec().uuid
