"""The typed arguments of provisioning's jobs and the typed results their steps hand on.

Arguments are validated when a job is asked for and again when it is rebuilt from its record;
results are recorded with the job as JSON (inventory.jobs.StepResult), never as text a later step
would parse.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from inventory.jobs import StepResult
from provisioning.vm import BringUp

# The most a VM can be given; the live maximum of a running VM is checked by its job's check step.
MAX_VCPUS = 64
MAX_MEMORY_MIB = 1024 * 1024


class JobArgs(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class ProvisionArgs(JobArgs):
    tenant: str = Field(min_length=1, max_length=63)
    cold: bool = False


class ConfigureArgs(JobArgs):
    tenant: str = Field(min_length=1, max_length=63)


VcpuCount = Annotated[int, Field(ge=1, le=MAX_VCPUS)]
MemoryMiB = Annotated[int, Field(ge=1, le=MAX_MEMORY_MIB)]


class ResizeAsked(JobArgs):
    """A resize as asked: a size left out stays as it is."""

    vcpus: VcpuCount | None = None
    memory_mb: MemoryMiB | None = None


class ResizeArgs(JobArgs):
    vm: str = Field(min_length=1, max_length=120)
    vcpus: VcpuCount
    memory_mb: MemoryMiB


class RetireArgs(JobArgs):
    tenant: str = Field(min_length=1, max_length=63)
    purge: bool = False


# --- results -----------------------------------------------------------------------------------

class VmTarget(BaseModel):
    """What the per-VM steps need of a placed VM (no secrets: this is recorded with the job)."""

    model_config = ConfigDict(frozen=True)

    name: str
    site: str
    memory_mib: int
    vcpus: int
    app_port: int


class Placed(StepResult):
    site: str
    vms: tuple[VmTarget, ...]
    hosts: dict[str, str]

    def summary(self) -> str:
        return "; ".join(f"{vm} on {host}" for vm, host in self.hosts.items())

    def vm(self, name: str) -> VmTarget:
        return next(vm for vm in self.vms if vm.name == name)


class GoldenPinned(StepResult):
    key: str

    def summary(self) -> str:
        return f"golden image {self.key}"


class BringUpChoice(StepResult):
    mode: BringUp
    site: str
    sizes_mib: tuple[int, ...] = ()
    reason: str = ""

    def summary(self) -> str:
        if self.mode is BringUp.COLD:
            return f"cold boot: {self.reason}"
        return f"template {self.site} for {', '.join(f'{size} MiB' for size in self.sizes_mib)}"


class Started(StepResult):
    how: str
    clone_s: float | None = None
    restore_s: float | None = None

    def summary(self) -> str:
        if self.clone_s is None:
            return self.how
        return f"cloned the template state in {self.clone_s:.2f} s, restored in {self.restore_s or 0:.2f} s"


class Ready(StepResult):
    port: int
    waited_s: float
    through: str  # "app" (its forward) or "address" (the tenant address)

    def summary(self) -> str:
        where = "app healthy on" if self.through == "app" else "healthy through its address"
        return f"{where} 127.0.0.1:{self.port} after {self.waited_s:.1f} s"
