"""Fencing a failed site before any of its counties starts elsewhere: no county is ever writable at
two sites.

If the site's libvirtd answers, its county VMs are destroyed and undefined there (their disks are
kept). If it is silent, nothing can be done at the site: each VM is marked FENCED in the inventory
(so its server in its county's address is disabled, provisioning.address.DISABLED) and written
in the fence ledger (provisioning.fencing), so a site that comes back does not start it or put it
back behind an address. In both cases the addresses are rendered again at once.

`decide` is the rule over plain data; `fence` is the edge that carries it out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from dr import records
from dr.probe import DaemonCheck
from dr.records import RunningVm
from inventory.enums import Lifecycle
from inventory.jobs import StepResult
from provisioning import fencing, vm
from provisioning import records as provisioning_records
from provisioning.fencing import FencedCopy, FenceHow
from provisioning.platform import Platform

# How long the daemon has to answer before the site counts as unreachable (the watch's own timeout).
DAEMON_TIMEOUT_S = 0.8


@dataclass(frozen=True)
class FenceDecision:
    vm: str
    tenant: str
    how: FenceHow


def decide(vms: Sequence[RunningVm], daemon_answers: bool) -> list[FenceDecision]:
    """What to do with each VM of the failed site: destroy it there when its daemon answers, else mark
    it. Every VM is fenced either way (a fenced one again: idempotent)."""
    how = FenceHow.DESTROYED if daemon_answers else FenceHow.MARKED
    return [FenceDecision(vm=running.vm, tenant=running.tenant, how=how)
            for running in sorted(vms, key=lambda running: running.vm)]


class FencedVmResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    vm: str
    tenant: str
    how: FenceHow
    uuid: str


class Fenced(StepResult):
    site: str
    daemon_answered: bool
    vms: tuple[FencedVmResult, ...]
    addresses_changed: bool
    seconds: float

    def summary(self) -> str:
        how = "destroyed there" if self.daemon_answered else "marked fenced (daemon silent)"
        return (f"site {self.site}: {len(self.vms)} VM(s) {how}; addresses "
                f"{'reloaded' if self.addresses_changed else 'unchanged'} ({self.seconds:.2f} s)")


def fence(platform: Platform, site: str, vms: Sequence[RunningVm], *, job_id: str = "",
          daemon_answers: Callable[[], bool] | None = None, log: Callable[[str], None] = print) -> Fenced:
    """Fence every VM of `site` that its counties run there; idempotent."""
    began = time.monotonic()
    if daemon_answers is None:
        uri = platform.site(site).uri

        def daemon_answers() -> bool:
            return DaemonCheck(site).answered(uri, DAEMON_TIMEOUT_S)

    answered = daemon_answers()
    decisions = decide(vms, answered)
    uuids = {running.vm: running.uuid for running in vms}
    done = []
    if answered and decisions:
        with platform.hypervisor(site) as hv:
            for decision in decisions:
                hv.undefine(decision.vm)  # destroy, then undefine; its disks stay for the failback
                log(f"{decision.vm}: destroyed and undefined at {site}")
    for decision in decisions:
        status = next(running.status for running in vms if running.vm == decision.vm)
        if status is not Lifecycle.FENCED:
            records.mark_fenced(platform.engine, decision.vm, note=f"fenced at {site} ({decision.how.value})")
        fencing.record(platform, FencedCopy(site=site, vm=decision.vm, uuid=uuids[decision.vm],
                                                      how=decision.how, at=time.time(), job=job_id))
        done.append(FencedVmResult(vm=decision.vm, tenant=decision.tenant, how=decision.how,
                                   uuid=uuids[decision.vm]))
    # Their backends out of the addresses now: a returning site's copy must never take traffic.
    changed = vm.point_address(platform, provisioning_records.frontends(platform.engine))
    return Fenced(site=site, daemon_answered=answered, vms=tuple(done), addresses_changed=changed,
                  seconds=round(time.monotonic() - began, 3))


def unfence(platform: Platform, site: str, vm_names: Sequence[str], log: Callable[[str], None] = print
            ) -> list[str]:
    """After the site is back (failback): remove each fenced copy there (undefined, its disks kept),
    then forget it in the ledger. Returns the VMs removed."""
    names = [copy.vm for copy in fencing.fenced(platform, site) if copy.vm in vm_names]
    if names:
        with platform.hypervisor(site) as hv:
            for name in names:
                hv.undefine(name)
                log(f"{name}: fenced copy undefined at {site}")
    for name in names:
        fencing.clear(platform, site, name)
    return names
