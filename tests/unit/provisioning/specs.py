"""Specs shared by the provisioning unit tests: one county VM, built the way provisioning builds it."""

from __future__ import annotations

from pathlib import Path

from provisioning.spec import (
    BridgeNetwork,
    Disk,
    DiskFormat,
    DomainType,
    Forward,
    UserNetwork,
    VMSpec,
)

KEELUNG_UUID = "c7a5fdbd-cdaf-4455-926a-d65c16db1809"


def keelung_spec(**overrides: object) -> VMSpec:
    base = VMSpec(
        name="keelung-app",
        uuid=KEELUNG_UUID,
        vcpus=1,
        max_vcpus=4,
        memory_mib=1024,
        max_memory_mib=4096,
        domain_type=DomainType.QEMU,
        kernel=Path("/var/lib/countycloud/images/g1/vmlinuz"),
        initrd=Path("/var/lib/countycloud/images/g1/initrd.img"),
        disks=(
            Disk(Path("/var/lib/countycloud/vms/keelung-app/system.qcow2"), "vda", DiskFormat.QCOW2),
            Disk(Path("/var/lib/countycloud/vms/keelung-app/seed.img"), "vdb", DiskFormat.RAW,
                 readonly=True, serial="ccseed"),
            Disk(Path("/var/lib/countycloud/data/keelung/data.img"), "vdc", DiskFormat.RAW, serial="ccdata"),
        ),
        network=UserNetwork((Forward(22001, 22), Forward(28001, 8080))),
        agent_socket=Path("/run/countycloud/keelung-app.agent"),
        serial_log=Path("/var/log/countycloud/keelung-app.serial.log"),
    )
    return base.with_overrides(**overrides) if overrides else base


BRIDGE = BridgeNetwork(bridge="br-keelung", vlan=112, mac="52:54:00:4b:45:01")
