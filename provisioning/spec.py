"""The typed VM spec: plain, frozen, validated data that domain_xml.py renders to libvirt XML.

Validation happens on construction, so a spec that exists is a spec that renders: every later step
(render, define, clone) can trust it without re-checking (Ganeti's "check before exec").
"""

from __future__ import annotations

import dataclasses
import re
import uuid as uuidlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from provisioning.errors import ProvisioningError

# The host side of every port forward. Not a field anywhere, so no spec can carry another address:
# the network rule forbids any other host address on these machines.
LOOPBACK = "127.0.0.1"

# Direct kernel boot: the golden image is a bare ext4 file system on vda, not a partitioned disk.
DEFAULT_CMDLINE = "root=/dev/vda rw console=ttyS0 quiet"

# Without a smaller TCG translation cache QEMU's RSS roughly doubles (DESIGN.md facts table). A
# county VM filled 128 MiB of it by the end of its first converge; 64 MiB keeps a clone under 400 MB
# (docs/benchmarks.md has the comparison).
DEFAULT_TB_CACHE_MIB = 64

_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_TARGET_RE = re.compile(r"^vd[a-z]$")
# virtio-blk passes at most 20 bytes of serial to the guest; longer ones are silently cut.
_SERIAL_RE = re.compile(r"^[A-Za-z0-9_-]{1,20}$")
# Linux interface names: at most 15 bytes (IFNAMSIZ - 1).
_BRIDGE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_MAC_RE = re.compile(r"^(?:[0-9a-f]{2}:){5}[0-9a-f]{2}$")


class SpecError(ProvisioningError, ValueError):
    """A VM spec that cannot describe a valid guest; the message says which field and why."""


class DomainType(StrEnum):
    QEMU = "qemu"  # TCG: pure emulation, works everywhere
    KVM = "kvm"  # hardware virtualisation: only where the CPU exposes vmx/svm


class DiskFormat(StrEnum):
    QCOW2 = "qcow2"
    RAW = "raw"


def detect_domain_type(cpuinfo_text: str) -> DomainType:
    """KVM only when a `flags` line of /proc/cpuinfo shows vmx (Intel) or svm (AMD).

    /dev/kvm existing is not enough: on these nested machines it exists but KVM does not work.
    """
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags" and {"vmx", "svm"} & set(value.split()):
            return DomainType.KVM
    return DomainType.QEMU


def _check_abs(label: str, path: Path) -> None:
    # libvirt resolves relative paths against its own working directory, not ours.
    if not path.is_absolute():
        raise SpecError(f"{label} must be an absolute path, got {str(path)!r}")


def _check_port(label: str, port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise SpecError(f"{label} must be an integer 1-65535, got {port!r}")


@dataclass(frozen=True)
class Disk:
    path: Path
    target: str  # vda, vdb, vdc ...: the guest sees /dev/<target>
    fmt: DiskFormat
    readonly: bool = False
    serial: str | None = None  # shows up as /dev/disk/by-id/virtio-<serial> in the guest

    def __post_init__(self) -> None:
        _check_abs(f"disk {self.target} path", self.path)
        if not _TARGET_RE.match(self.target):
            raise SpecError(f"disk target must look like vda..vdz, got {self.target!r}")
        if not isinstance(self.fmt, DiskFormat):
            raise SpecError(f"disk {self.target} format must be a DiskFormat, got {self.fmt!r}")
        if self.serial is not None and not _SERIAL_RE.match(self.serial):
            raise SpecError(f"disk {self.target} serial must be 1-20 of [A-Za-z0-9_-], got {self.serial!r}")


@dataclass(frozen=True)
class Forward:
    """A TCP port of the guest reachable on the host's 127.0.0.1:host_port (and nowhere else)."""

    host_port: int
    guest_port: int

    def __post_init__(self) -> None:
        _check_port("forward host_port", self.host_port)
        _check_port("forward guest_port", self.guest_port)

    @property
    def host_address(self) -> str:
        return LOOPBACK


# Where a guest reaches the host's replica target through its guestfwd: an address inside the
# user-mode network that slirp answers itself (not a host, not routed anywhere), and a port.
GUESTFWD_ADDRESS = "10.0.2.100"
GUESTFWD_PORT = 9000
GUESTFWD_CHARDEV = "rep0"


@dataclass(frozen=True)
class GuestForward:
    """The guest's connections to GUESTFWD_ADDRESS:GUESTFWD_PORT carried to the host's
    127.0.0.1:host_port (a chardev socket that reconnects): the one way out under restrict=on."""

    host_port: int

    def __post_init__(self) -> None:
        _check_port("guestfwd host_port", self.host_port)

    @property
    def host_address(self) -> str:
        return LOOPBACK


@dataclass(frozen=True)
class UserNetwork:
    """QEMU user-mode networking with restrict=on: the guest reaches nothing, only forwards reach it
    (and, for a replicated county, its one guestfwd reaches the host's replica target)."""

    forwards: tuple[Forward, ...] = ()
    guestfwd: GuestForward | None = None

    def __post_init__(self) -> None:
        hosts = [f.host_port for f in self.forwards]
        guests = [f.guest_port for f in self.forwards]
        if len(set(hosts)) != len(hosts):
            raise SpecError(f"forward host ports must be unique, got {hosts}")
        if len(set(guests)) != len(guests):
            raise SpecError(f"forward guest ports must be unique, got {guests}")


@dataclass(frozen=True)
class BridgeNetwork:
    """The production variant: a host bridge, optionally a VLAN tag, a fixed MAC."""

    bridge: str
    vlan: int | None
    mac: str

    def __post_init__(self) -> None:
        if not _BRIDGE_RE.match(self.bridge):
            raise SpecError(f"bridge must be an interface name (1-15 of [A-Za-z0-9_.-]), got {self.bridge!r}")
        if self.vlan is not None and (
            isinstance(self.vlan, bool) or not isinstance(self.vlan, int) or not 1 <= self.vlan <= 4094
        ):
            raise SpecError(f"vlan must be 1-4094, got {self.vlan!r}")
        if not _MAC_RE.match(self.mac):
            raise SpecError(f"mac must be six lower-case hex pairs like 52:54:00:12:34:56, got {self.mac!r}")
        if int(self.mac[:2], 16) & 1:
            raise SpecError(f"mac must be unicast (first octet even), got {self.mac!r}")


Network = UserNetwork | BridgeNetwork


@dataclass(frozen=True, kw_only=True)
class VMSpec:
    name: str
    uuid: str
    vcpus: int
    max_vcpus: int  # fixed at define/save time: live resize goes up to here, not beyond
    memory_mib: int
    max_memory_mib: int  # the balloon inflates/deflates between 1 MiB and this
    domain_type: DomainType
    kernel: Path
    initrd: Path
    cmdline: str = DEFAULT_CMDLINE
    disks: tuple[Disk, ...]
    network: Network
    agent_socket: Path | None = None
    serial_log: Path | None = None
    tb_cache_mib: int = DEFAULT_TB_CACHE_MIB

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise SpecError(
                f"name must be 1-63 of [a-z0-9-], not starting or ending with '-', got {self.name!r}"
            )
        if not _UUID_RE.match(self.uuid):
            raise SpecError(f"uuid must be lower-case 8-4-4-4-12 hex, got {self.uuid!r}")
        if not isinstance(self.domain_type, DomainType):
            raise SpecError(f"domain_type must be a DomainType, got {self.domain_type!r}")
        for label, value in (("vcpus", self.vcpus), ("max_vcpus", self.max_vcpus),
                             ("memory_mib", self.memory_mib), ("max_memory_mib", self.max_memory_mib),
                             ("tb_cache_mib", self.tb_cache_mib)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"{label} must be a positive integer, got {value!r}")
        if self.vcpus > self.max_vcpus:
            raise SpecError(f"vcpus ({self.vcpus}) must not exceed max_vcpus ({self.max_vcpus})")
        if self.memory_mib > self.max_memory_mib:
            raise SpecError(
                f"memory_mib ({self.memory_mib}) must not exceed max_memory_mib ({self.max_memory_mib})"
            )
        _check_abs("kernel", self.kernel)
        _check_abs("initrd", self.initrd)
        if any(c in self.cmdline for c in "\n\r\0"):
            raise SpecError("cmdline must be a single line")
        if not self.disks:
            raise SpecError("a VM needs at least one disk (its system disk)")
        targets = [d.target for d in self.disks]
        if len(set(targets)) != len(targets):
            raise SpecError(f"disk targets must be unique, got {targets}")
        if not isinstance(self.network, UserNetwork | BridgeNetwork):
            raise SpecError(f"network must be a UserNetwork or BridgeNetwork, got {self.network!r}")
        if self.agent_socket is not None:
            _check_abs("agent_socket", self.agent_socket)
        if self.serial_log is not None:
            _check_abs("serial_log", self.serial_log)

    def with_overrides(self, **changes: Any) -> VMSpec:
        """A copy with some fields changed, validated again (dataclasses.replace re-runs __post_init__)."""
        return dataclasses.replace(self, **changes)

    def disk(self, target: str) -> Disk:
        for d in self.disks:
            if d.target == target:
                return d
        raise KeyError(target)


def new_uuid() -> str:
    """A fresh random UUID in the canonical form VMSpec accepts."""
    return str(uuidlib.uuid4())
