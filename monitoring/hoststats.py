"""Host and VM usage per site: the host from psutil (monitoring.edge.read_host), each VM from
libvirt's counters through provisioning's hypervisor edge (Hypervisor.usage).

Counters (CPU time, bytes) become rates between two readings; the functions here are pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from monitoring.edge import HostReading
from provisioning.hypervisor import Hypervisor

_NET_BYTES = re.compile(r"^net\.\d+\.(rx|tx)\.bytes$")
_BLOCK_BYTES = re.compile(r"^block\.\d+\.(rd|wr)\.bytes$")


@dataclass(frozen=True)
class HostUsage:
    site: str
    cpu_pct: float  # of all the host's cores
    memory_used_pct: float
    disk_used_pct: float
    load_1m: float


def host_usage(site: str, reading: HostReading) -> HostUsage:
    memory = 100.0 * (1 - reading.memory_available_bytes / reading.memory_total_bytes)
    disk = 100.0 * reading.disk_used_bytes / reading.disk_total_bytes if reading.disk_total_bytes else 0.0
    return HostUsage(site, reading.cpu_pct, memory, disk, reading.load_1m)


@dataclass(frozen=True)
class VmCounters:
    """One reading of a VM's counters (Hypervisor.usage's values for it) at a monotonic time."""

    at: float
    cpu_ns: float
    vcpus: int
    balloon_kib: float
    balloon_max_kib: float
    net_bytes: float  # received + sent, every interface
    disk_bytes: float  # read + written, every disk
    # From the guest's balloon driver (unused/available), when the guest reports them.
    memory_used_pct: float | None = None


def vm_counters(values: Mapping[str, float], at: float) -> VmCounters:
    return VmCounters(
        at=at, cpu_ns=values.get("cpu.time", 0.0), vcpus=int(values.get("vcpu.current", 1)) or 1,
        balloon_kib=values.get("balloon.current", 0.0), balloon_max_kib=values.get("balloon.maximum", 0.0),
        net_bytes=sum(v for k, v in values.items() if _NET_BYTES.match(k)),
        disk_bytes=sum(v for k, v in values.items() if _BLOCK_BYTES.match(k)),
        memory_used_pct=(100.0 * (1 - values["balloon.unused"] / values["balloon.available"])
                         if values.get("balloon.available") and "balloon.unused" in values else None),
    )


@dataclass(frozen=True)
class VmUsage:
    site: str
    vm: str
    cpu_pct: float  # of the VM's own vCPUs: 100 = every vCPU busy
    vcpus: int
    memory_mib: float  # what the balloon leaves the guest
    memory_max_mib: float
    net_bytes_per_s: float
    disk_bytes_per_s: float
    memory_used_pct: float | None = None


def vm_usage(site: str, vm: str, before: VmCounters, after: VmCounters) -> VmUsage:
    seconds = max(after.at - before.at, 1e-9)
    cpu = 100.0 * max(after.cpu_ns - before.cpu_ns, 0.0) / 1e9 / seconds / after.vcpus
    return VmUsage(site, vm, min(cpu, 100.0), after.vcpus, after.balloon_kib / 1024,
                   after.balloon_max_kib / 1024, max(after.net_bytes - before.net_bytes, 0.0) / seconds,
                   max(after.disk_bytes - before.disk_bytes, 0.0) / seconds, after.memory_used_pct)


def read_vms(hypervisor: Hypervisor, at: float) -> dict[str, VmCounters]:
    """Every running VM of a site, now (read-only)."""
    return {name: vm_counters(values, at) for name, values in hypervisor.usage().items()}


def vm_usages(site: str, before: Mapping[str, VmCounters], after: Mapping[str, VmCounters]) -> list[VmUsage]:
    """Rates for the VMs seen in both readings (a VM that just started has no rate yet)."""
    return [vm_usage(site, name, before[name], after[name]) for name in sorted(after) if name in before]
