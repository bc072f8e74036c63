"""Public operations on one county VM: make its disks, clone or boot it, activate it, attach its data
disk, resize it, wait until it serves, tear it down, point an address at it.

Each takes the site it acts at and the disks it acts on as arguments (VmDisks), never the county's
home site read from the inventory: provisioning, restore verification, failover and DR tests bring a
county up where they choose, with the data disk they choose, by calling these. Every operation is
idempotent: run again after a crash, it leaves the same state.
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from provisioning import address, chardev, disks, guest, images, seed, templates
from provisioning.domain_xml import render_disk_xml, render_domain_xml
from provisioning.errors import ProvisioningError
from provisioning.gateway import Frontend
from provisioning.guest import agent_exec
from provisioning.hypervisor import AgentTimeout, DomainState, Hypervisor, HypervisorError
from provisioning.platform import Platform, ensure_ssh_key
from provisioning.spec import DomainType
from provisioning.vmplan import (
    VmPaths,
    VmPlan,
    app_env,
    cold_spec,
    forwards,
    guestfwd,
    hotplug_disks,
    machine_id,
    vm_paths,
)

AGENT_TIMEOUT_S = 60.0
# Files of the guest's launcher (provisioning/image/files/launcher.py).
LAUNCHER_RUN = "/run/countycloud"
ACTIVATE_REQUEST = f"{LAUNCHER_RUN}/activate-request"
ACTIVATION_ERROR = f"{LAUNCHER_RUN}/activation-error"
# A live resize never takes a VM below this: the guest's kernel and app need it.
MIN_MEMORY_MIB = 256


class BringUp(StrEnum):
    CLONE = "clone"  # restore a copy of the site's prebooted template (seconds)
    COLD = "cold"  # boot the golden image (a minute under TCG)


def vm_disks(platform: Platform, site: str, vm_name: str, *, data_disk: Path | None = None) -> VmPaths:
    """The VM's files at `site`; `data_disk` puts another data disk under it (a restored one)."""
    return vm_paths(platform.site(site), vm_name, data_disk=data_disk)


# --- disks -------------------------------------------------------------------------------------

def make_disks(hv: Hypervisor, plan: VmPlan, paths: VmPaths, *, system_backing: Path,
               ssh_key: Path) -> list[str]:
    """System overlay (only while no domain uses it), data disk (kept if present), seed disk."""
    paths.directory.mkdir(parents=True, exist_ok=True)
    made = []
    if hv.state(plan.name) is DomainState.MISSING:
        # A system disk is disposable until its VM exists: always a fresh overlay on the right base
        # (a restored template must never see a disk written after its save).
        disks.overlay(paths.system_disk, system_backing)
        made.append(f"system disk on {system_backing.name}")
    made.append(f"data disk {seed.make_data_disk(paths.data_disk, plan.data_disk_mib)}")
    write_seed(plan, paths, ssh_key)
    made.append("seed disk")
    return made


def write_seed(plan: VmPlan, paths: VmPaths, ssh_key: Path) -> None:
    """The seed disk: settings and this VM's own identity (host key made once, kept across reruns)."""
    if not paths.host_key.exists():
        private, public = seed.new_host_key(plan.name)
        paths.host_key.with_suffix(".pub").write_bytes(public)
        paths.host_key.touch(mode=0o600)
        paths.host_key.write_bytes(private)
    public_key = ensure_ssh_key(ssh_key).with_suffix(".pub").read_text().strip()
    seed.build_seed_image(
        paths.seed_disk, settings=app_env(plan), hostname=plan.name, authorized_keys=[public_key],
        identity={
            "machine-id": (machine_id(plan) + "\n").encode(),
            "random-seed": secrets.token_bytes(512),
            "ssh_host_ed25519_key": paths.host_key.read_bytes(),
            "ssh_host_ed25519_key.pub": paths.host_key.with_suffix(".pub").read_bytes(),
        },
    )


# --- start -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Started:
    how: str
    clone_s: float | None = None
    restore_s: float | None = None


def start(hv: Hypervisor, plan: VmPlan, paths: VmPaths, *, mode: BringUp, image: images.GoldenImage | None,
          template: templates.Template | None, domain_type: DomainType) -> Started:
    """Clone the template (or boot the image) as this VM; an existing VM is only started."""
    state = hv.state(plan.name)
    if state in (DomainState.RUNNING, DomainState.PAUSED):
        hv.make_persistent(plan.name)  # a crash between restore and define left it transient
        remove_clone_state(paths)  # ... and maybe the copy it was restored from
        return Started("already running")
    info = hv.info(plan.name)
    if info is not None and info.persistent:
        hv.start(plan.name)  # an existing VM (e.g. after an outage) boots from its own disks
        return Started("started the existing VM (boot)")
    if image is None:
        raise ProvisioningError(f"{plan.name}: no golden image given to boot or clone it from")
    if mode is BringUp.COLD:
        remove_clone_state(paths)  # a copy left by an earlier attempt by clone
        hv.define(render_domain_xml(cold_spec(plan, paths, image, domain_type)))
        hv.start(plan.name)
        return Started("defined and started (cold boot)")
    if template is None:
        raise ProvisioningError(f"{plan.name}: no prebooted template to clone at site {hv.site}")
    began = time.monotonic()
    paths.clone_state.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    templates.write_clone_state(
        template, name=plan.name, uuid=plan.uuid, system_disk=paths.system_disk, forwards=forwards(plan),
        agent_socket=paths.agent_socket, serial_log=paths.serial_log, destination=paths.clone_state,
        guestfwd=guestfwd(plan),
    )
    cloned = time.monotonic() - began
    try:
        hv.restore(paths.clone_state)
    finally:
        remove_clone_state(paths)
    hv.make_persistent(plan.name)
    return Started("cloned the template", round(cloned, 3), round(time.monotonic() - began - cloned, 3))


def remove_clone_state(paths: VmPaths) -> None:
    for leftover in paths.clone_state_files:
        leftover.unlink(missing_ok=True)


# --- activate ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Activated:
    agent_wait_s: float
    plugged: tuple[str, ...]


def activate(hv: Hypervisor, vm_name: str, paths: VmPaths) -> Activated:
    """Make a restored clone this county's VM: its waiting launcher takes the clock from the request,
    then identity, settings and data from the disks as they appear (provisioning/image/files/launcher.py).
    The data disk attached is `paths.data_disk`, whichever disk the caller chose."""
    waited = hv.wait_for_agent(vm_name, timeout_s=AGENT_TIMEOUT_S)
    # The request first: the launcher sets the clock from it before the disks can appear.
    request_activation(hv, vm_name)
    return Activated(round(waited, 3), attach_disks(hv, vm_name, paths))


def request_activation(hv: Hypervisor, vm_name: str) -> None:
    """Write the host's time as the launcher's activation request.

    A restored clone always has the launcher's folder: its launcher made it before the template was
    saved. A VM booting from its own disks (an existing VM started again, or a rerun while it still
    boots) answers through its agent before its launcher has run, and the folder is not there yet.
    Such a launcher needs no request (its clock is the host's from boot, and it finds its disks by
    label), but it takes one as well: the folder is made once, and the two paths stay one.
    """
    stamp = f"{time.time():.6f}\n".encode()
    try:
        guest.write_file(hv, vm_name, ACTIVATE_REQUEST, stamp)
    except AgentTimeout:
        raise
    except HypervisorError:
        agent_exec(hv, vm_name, ["/bin/mkdir", "-p", LAUNCHER_RUN])
        guest.write_file(hv, vm_name, ACTIVATE_REQUEST, stamp)


def attach_disks(hv: Hypervisor, vm_name: str, paths: VmPaths) -> tuple[str, ...]:
    """Hot-plug the seed and data disks that are not attached yet; returns the targets plugged."""
    attached = hv.disk_targets(vm_name)
    plugged = []
    for disk in hotplug_disks(paths):
        if disk.target not in attached:
            hv.attach_disk(vm_name, render_disk_xml(disk))
            plugged.append(disk.target)
    return tuple(plugged)


# --- resize ------------------------------------------------------------------------------------

def check_resize(hv: Hypervisor, vm_name: str, vcpus: int, memory_mib: int) -> str:
    """Refuse a live resize the running VM cannot take, before anything changes."""
    info = hv.info(vm_name)
    if info is None or info.state is not DomainState.RUNNING:
        raise ProvisioningError(f"{vm_name} is not running; a live resize needs a running VM")
    max_vcpus = hv.max_vcpus(vm_name)
    if not 1 <= vcpus <= max_vcpus:
        raise ProvisioningError(f"{vm_name}: {vcpus} vCPUs asked, between 1 and {max_vcpus} possible live")
    if not MIN_MEMORY_MIB <= memory_mib <= info.max_memory_mib:
        raise ProvisioningError(f"{vm_name}: {memory_mib} MiB asked, between {MIN_MEMORY_MIB} and "
                                f"{info.max_memory_mib} MiB possible live")
    return f"{vm_name}: {info.vcpus} vCPU / {info.memory_mib} MiB -> {vcpus} / {memory_mib}"


def resize(hv: Hypervisor, vm_name: str, vcpus: int, memory_mib: int) -> str:
    """`resize_live`, then the guest onlines the vCPUs it was given."""
    before = hv.info(vm_name)
    done = resize_live(hv, vm_name, vcpus, memory_mib)
    if before is not None and vcpus > before.vcpus:
        online_vcpus(hv, vm_name)
    return done


def resize_live(hv: Hypervisor, vm_name: str, vcpus: int, memory_mib: int) -> str:
    """Set vCPUs and memory of the running domain, only what differs."""
    info = hv.info(vm_name)
    if info is None:
        raise ProvisioningError(f"{vm_name}: no such domain at site {hv.site}")
    changes = []
    if info.vcpus != vcpus:
        hv.set_vcpus(vm_name, vcpus)
        changes.append(f"vCPUs {info.vcpus} -> {vcpus}")
    if info.memory_mib != memory_mib:
        hv.set_memory(vm_name, memory_mib)
        changes.append(f"memory {info.memory_mib} -> {memory_mib} MiB")
    return ", ".join(changes) or f"already {vcpus} vCPU / {memory_mib} MiB"


def online_vcpus(hv: Hypervisor, vm_name: str) -> None:
    """Hot-added vCPUs arrive offline. No udev rule onlines them in a clone (it runs without udevd,
    see templates.build), so provisioning does, through the agent. Idempotent."""
    agent_exec(hv, vm_name, ["/bin/sh", "-c",
                             "for c in /sys/devices/system/cpu/cpu[0-9]*/online; do echo 1 > $c; done"],
               check=False)


# --- ready -------------------------------------------------------------------------------------

def wait_ready(hv: Hypervisor, vm_name: str, app_port: int, timeout_s: float) -> float:
    """Until the app answers on its forward; a failed activation says why, from the guest."""
    try:
        return address.wait_healthy(app_port, timeout_s=timeout_s)
    except address.NotHealthy as error:
        reason = guest.read_file(hv, vm_name, ACTIVATION_ERROR)
        if reason:
            said = reason.decode().strip()
            raise ProvisioningError(f"{vm_name}: activation failed in the guest: {said}") from error
        raise


# --- the guestfwd ------------------------------------------------------------------------------

class GuestfwdError(ProvisioningError):
    pass


@dataclass(frozen=True)
class GuestfwdReset:
    resets: int  # host connections made before one kept the listener's greeting for the guest
    connected: int  # the local port of the one kept


def reset_guestfwd(hv: Hypervisor, vm_name: str, host_port: int, *, attempts: int = 60,
                   reconnect_s: float = 15.0, greeting_s: float = 1.0) -> GuestfwdReset:
    """The VM's guestfwd given a new host connection to 127.0.0.1:`host_port` whose greeting waits
    for the guest's next connection: its QEMU's connection aborted (the chardev reconnects by itself)
    until a new one's greeting stays unread, each one before it having been taken by a closed guest
    connection slirp still held (one each). Call it while nothing in the guest is connected through
    the forward (provisioning/chardev.py says why)."""
    pid = hv.qemu_pid(vm_name)
    if pid is None:
        raise GuestfwdError(f"{vm_name}: no QEMU process (not running at {hv.site})")
    for attempt in range(1, attempts + 1):
        aborted = chardev.reset(pid, host_port)
        connected = chardev.wait_connected(pid, host_port, other_than=aborted, timeout_s=reconnect_s)
        if connected is None:
            raise GuestfwdError(f"{vm_name}: its guestfwd did not reconnect to 127.0.0.1:{host_port} "
                                f"within {reconnect_s:.0f} s (is the listener up?)")
        if chardev.holds_unread(pid, host_port, connected.local_port, settle_s=0.5, timeout_s=greeting_s):
            return GuestfwdReset(attempt, connected.local_port)
    raise GuestfwdError(f"{vm_name}: after {attempts} new host connections of its guestfwd, a guest "
                        f"connection still took the listener's greeting")


# --- tear down ---------------------------------------------------------------------------------

def tear_down(hv: Hypervisor, vm_name: str, paths: VmPaths, *, purge: bool) -> list[str]:
    """Stop and undefine the VM and remove its disposable files; the data disk only with `purge`."""
    hv.undefine(vm_name)
    removed = []
    for leftover in (paths.system_disk, paths.seed_disk, *paths.clone_state_files, paths.agent_socket):
        if leftover.exists():
            leftover.unlink()
            removed.append(leftover.name)
    if purge:
        paths.data_disk.unlink(missing_ok=True)  # it may live outside the VM's folder (a restored one)
        if paths.directory.exists():
            shutil.rmtree(paths.directory)
        removed.append("data disk (purged)")
    return removed


# --- address -----------------------------------------------------------------------------------

def vouch_serving(platform: Platform, tenant: str, servers: Mapping[str, int]) -> list[str]:
    """Tell the gateway that these VMs of the county (name -> app port) serve now, whose app answers."""
    return address.vouch_serving(platform.haproxy_dir, tenant, servers)


def point_address(platform: Platform, wanted: Sequence[Frontend]) -> bool:
    """Make the gateway serve exactly these addresses (hitless reload); True if anything changed."""
    return address.apply(platform.haproxy_dir, list(wanted))
