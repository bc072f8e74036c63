"""Placement (pure): choose a host for a VM by capacity, with overcommit, spreading the load.

A host offers vcpus × cpu ratio vCPUs, memory × ram ratio MB and its disk without overcommit (a full
disk corrupts guests; a busy CPU only slows them). Among the hosts where the VM fits, the least
loaded one wins (load = the fullest of its three resources, after placing the VM), ties broken by
name, so the same inputs always give the same host. When nothing fits, NoHostFits says per host why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from inventory.errors import InventoryError


@dataclass(frozen=True)
class Need:
    vcpus: int
    memory_mb: int
    disk_mb: int


@dataclass(frozen=True)
class HostLoad:
    """A host's capacity and what its placed VMs already take."""

    name: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    cpu_ratio: float = 4.0
    ram_ratio: float = 1.5
    used_vcpus: int = 0
    used_memory_mb: int = 0
    used_disk_mb: int = 0

    @property
    def vcpu_capacity(self) -> int:
        return int(self.vcpus * self.cpu_ratio)

    @property
    def memory_capacity_mb(self) -> int:
        return int(self.memory_mb * self.ram_ratio)

    @property
    def disk_capacity_mb(self) -> int:
        return self.disk_gb * 1024

    def shortfalls(self, need: Need) -> list[str]:
        """Why `need` does not fit here, one phrase per resource short; empty when it fits."""
        reasons = []
        free_vcpus = self.vcpu_capacity - self.used_vcpus
        if need.vcpus > free_vcpus:
            reasons.append(
                f"needs {need.vcpus} vCPU, {max(free_vcpus, 0)} free of {self.vcpu_capacity} "
                f"({self.vcpus} × ratio {self.cpu_ratio:g})"
            )
        free_memory = self.memory_capacity_mb - self.used_memory_mb
        if need.memory_mb > free_memory:
            reasons.append(
                f"needs {need.memory_mb} MB, {max(free_memory, 0)} MB free of {self.memory_capacity_mb} MB "
                f"({self.memory_mb} MB × ratio {self.ram_ratio:g})"
            )
        free_disk = self.disk_capacity_mb - self.used_disk_mb
        if need.disk_mb > free_disk:
            reasons.append(
                f"needs {need.disk_mb} MB disk, {max(free_disk, 0)} MB free of {self.disk_capacity_mb} MB"
            )
        return reasons

    def load_with(self, need: Need) -> float:
        """The fullest resource's share after adding `need` (0.0 empty, 1.0 full)."""
        return max(
            (self.used_vcpus + need.vcpus) / max(self.vcpu_capacity, 1),
            (self.used_memory_mb + need.memory_mb) / max(self.memory_capacity_mb, 1),
            (self.used_disk_mb + need.disk_mb) / max(self.disk_capacity_mb, 1),
        )

    def plus(self, need: Need) -> HostLoad:
        """This host with `need` placed on it (for placing several VMs in a row)."""
        return HostLoad(
            name=self.name,
            vcpus=self.vcpus,
            memory_mb=self.memory_mb,
            disk_gb=self.disk_gb,
            cpu_ratio=self.cpu_ratio,
            ram_ratio=self.ram_ratio,
            used_vcpus=self.used_vcpus + need.vcpus,
            used_memory_mb=self.used_memory_mb + need.memory_mb,
            used_disk_mb=self.used_disk_mb + need.disk_mb,
        )


class NoHostFits(InventoryError):
    """No host can take the VM; `reasons` maps each host's name to why not."""

    def __init__(self, vm: str, reasons: dict[str, list[str]]) -> None:
        self.vm = vm
        self.reasons = reasons
        if reasons:
            lines = [f"host {host}: {'; '.join(why)}" for host, why in reasons.items()]
            detail = "\n  ".join(lines)
            message = f"no host can take {vm}:\n  {detail}"
        else:
            message = f"no host can take {vm}: the site has no hosts"
        super().__init__(message)


def choose_host(vm: str, need: Need, hosts: Sequence[HostLoad]) -> HostLoad:
    """The least loaded host on which `need` fits; NoHostFits (with every host's reason) otherwise."""
    fitting = [host for host in hosts if not host.shortfalls(need)]
    if not fitting:
        ordered = sorted(hosts, key=lambda host: host.name)
        raise NoHostFits(vm, {host.name: host.shortfalls(need) for host in ordered})
    return min(fitting, key=lambda host: (host.load_with(need), host.name))


def place_all(requests: Sequence[tuple[str, Need]], hosts: Sequence[HostLoad]) -> dict[str, str]:
    """Place several VMs in order, each seeing the load of the ones before; VM name → host name.

    All or nothing: NoHostFits for the first VM that does not fit.
    """
    current = {host.name: host for host in hosts}
    placed: dict[str, str] = {}
    for vm, need in requests:
        host = choose_host(vm, need, list(current.values()))
        current[host.name] = host.plus(need)
        placed[vm] = host.name
    return placed
