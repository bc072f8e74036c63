"""Provision, resize and retire as step lists: named, idempotent steps over the inventory and the edges.

Check first, then act (Ganeti's check-then-exec): the `check` step validates everything a job needs
before anything is made. Every later step can be rerun after a crash and leaves the same state,
so a killed job is repaired by running the same command again.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from inventory import queries
from inventory.db import session_scope
from inventory.enums import Lifecycle
from inventory.jobs import Step, StepContext
from inventory.models import Vm
from provisioning import address, bringup, configure, disks, guest, images, seed, sites, templates
from provisioning.domain_xml import render_disk_xml, render_domain_xml
from provisioning.guest import agent_exec
from provisioning.hypervisor import DomainState, Hypervisor
from provisioning.platform import Platform, ensure_ssh_key
from provisioning.spec import new_uuid
from provisioning.vmplan import (
    VmPaths,
    VmPlan,
    app_env,
    cold_spec,
    forwards,
    hotplug_disks,
    machine_id,
    vm_paths,
)

ACTOR = "provisioning"
COLD = "cold"  # prefix of the template step's output when the job falls back to a cold boot
AGENT_TIMEOUT_S = 60.0
# Files of the guest's launcher (provisioning/image/files/launcher.py).
ACTIVATE_REQUEST = "/run/countycloud/activate-request"
ACTIVATION_ERROR = "/run/countycloud/activation-error"


class ProvisioningError(RuntimeError):
    """A precondition of a provisioning job does not hold; the message says what to do."""


# --- reading the inventory ---------------------------------------------------------------------

def _plan(vm: Vm) -> VmPlan:
    if vm.uuid is None or vm.ssh_port is None or vm.app_port is None or vm.host is None:
        raise ProvisioningError(f"{vm.name}: not placed yet (no host, uuid or ports); rerun the job")
    return VmPlan(
        name=vm.name, uuid=vm.uuid, tenant=vm.tenant.slug, county_name=vm.tenant.name,
        site=vm.host.site.name, vcpus=vm.vcpus, memory_mib=vm.memory_mb, data_disk_mib=vm.data_disk_mb,
        ssh_port=vm.ssh_port, app_port=vm.app_port, app_secret=vm.tenant.app_secret,
        settings={str(k): str(v) for k, v in (vm.tenant.settings or {}).items()},
    )


def load_plan(platform: Platform, vm_name: str) -> VmPlan:
    with session_scope(platform.engine) as session:
        return _plan(queries.get_vm(session, vm_name))


def vm_names(platform: Platform, tenant: str) -> list[str]:
    """Every VM of the tenant: provisioning a retired county brings all of them back."""
    with session_scope(platform.engine) as session:
        return [vm.name for vm in queries.vms_of(queries.get_tenant(session, tenant))]


# --- provision ---------------------------------------------------------------------------------

def _check(platform: Platform, tenant_slug: str) -> str:
    """Everything the job needs, validated before anything is made."""
    with session_scope(platform.engine) as session:
        tenant = queries.get_tenant(session, tenant_slug)
        if tenant.status is Lifecycle.RETIRING:
            raise ProvisioningError(
                f"tenant {tenant_slug} is being retired; finish that first "
                f"(`countycloud tenant retire {tenant_slug}`)")
        vms = queries.vms_of(tenant)
        if not vms:
            raise ProvisioningError(f"tenant {tenant_slug} declares no VMs")
        site_name = tenant.home_site.name
        vm_count = len(vms)
        forwards_of: dict[str, list[tuple[str, int]]] = {}
        for vm in vms:
            if vm.ssh_port is None or vm.app_port is None:
                raise ProvisioningError(f"{vm.name} has no ports; apply the inventory first")
            forwards_of[vm.name] = [("ssh", vm.ssh_port), ("app", vm.app_port)]
            queries.place_vm(session, vm)  # NoHostFits explains per host; rolled back by the check
        if tenant.gateway_port is None:
            raise ProvisioningError(f"tenant {tenant_slug} has no address port; apply the inventory first")
        session.rollback()  # the check decides nothing; `place` records
    if sites.state(platform.site(site_name)) is not sites.SiteState.UP:
        raise ProvisioningError(
            f"site {site_name} is down; start it with `countycloud site start {site_name}`")
    with platform.hypervisor(site_name) as hv:
        for vm_name, ports in forwards_of.items():
            if hv.state(vm_name) in (DomainState.RUNNING, DomainState.PAUSED):
                continue  # its QEMU holds these ports itself
            for purpose, port in ports:
                if not address.port_free(port):
                    raise ProvisioningError(
                        f"{vm_name}: its {purpose} port 127.0.0.1:{port} (allocated by the inventory) is in "
                        "use by another process; free it or change the inventory's port range")
    for tool in ("qemu-img", "mkfs.ext4", "haproxy"):
        if shutil.which(tool) is None:
            raise ProvisioningError(f"{tool} is not installed; run `make host` (scripts/host-setup.sh)")
    return f"tenant {tenant_slug}: {vm_count} VM(s) at site {site_name}, capacity and ports available"


def _place(platform: Platform, tenant_slug: str) -> str:
    placed = []
    with session_scope(platform.engine) as session:
        tenant = queries.get_tenant(session, tenant_slug)
        queries.set_status(tenant, Lifecycle.PROVISIONING, actor=ACTOR)
        for vm in queries.vms_of(tenant):
            host = queries.place_vm(session, vm)
            if vm.uuid is None or vm.mac is None:
                queries.record_vm_identity(vm, new_uuid(), _random_mac(), actor=ACTOR)
            if vm.status is not Lifecycle.ACTIVE:
                queries.set_status(vm, Lifecycle.PROVISIONING, actor=ACTOR)
            placed.append(f"{vm.name} on {host.name}")
    return "; ".join(placed)


def _random_mac() -> str:
    # 52:54:00 is QEMU's locally administered prefix.
    return "52:54:00:" + ":".join(f"{secrets.randbelow(256):02x}" for _ in range(3))


GOLDEN_PREFIX = "golden image "


def _golden(platform: Platform, ctx: StepContext) -> str:
    image = images.ensure(platform.cache_dir, log=ctx.log)
    return f"{GOLDEN_PREFIX}{image.key}"


def _image(platform: Platform, ctx: StepContext, site: str) -> images.GoldenImage:
    """The golden image this job pinned in its golden-image step (the app may change meanwhile), as
    present at the site."""
    recorded = str(ctx.previous.get("golden-image") or "")
    image = None
    if recorded.startswith(GOLDEN_PREFIX):
        image = images.load(platform.cache_dir, recorded.removeprefix(GOLDEN_PREFIX))
    if image is None:
        image = images.ensure(platform.cache_dir, log=ctx.log)
    return images.at_site(image, platform.site(site).images)


def _template(platform: Platform, tenant_slug: str, ctx: StepContext) -> str:
    """The site's prebooted templates (one per memory size), built if missing; any trouble means a
    cold boot, said plainly in the job's output."""
    site_name = _home_site(platform, tenant_slug)
    image = _image(platform, ctx, site_name)
    site = platform.site(site_name)
    sizes = sorted({load_plan(platform, name).memory_mib for name in vm_names(platform, tenant_slug)})
    try:
        with platform.hypervisor(site_name) as hv:
            for memory_mib in sizes:
                template = templates.build(hv, site, image, platform.domain_type, memory_mib, log=ctx.log)
                templates.check_usable(template)
    except Exception as error:  # any template fault falls back to a cold boot, never fails the job
        message = f"{COLD}: template unusable, falling back to a cold boot: {error}"
        ctx.log(message)
        return message
    return f"template {site_name}/{image.key} for {', '.join(f'{size} MiB' for size in sizes)}"


def _home_site(platform: Platform, tenant_slug: str) -> str:
    with session_scope(platform.engine) as session:
        return queries.get_tenant(session, tenant_slug).home_site.name


def _mode_is_cold(ctx: StepContext) -> bool:
    return bool(ctx.args.get("cold")) or str(ctx.previous.get("template") or COLD).startswith(COLD)


def _disks(platform: Platform, vm_name: str, ctx: StepContext) -> str:
    plan = load_plan(platform, vm_name)
    paths = vm_paths(platform.site(plan.site), plan.name)
    paths.directory.mkdir(parents=True, exist_ok=True)
    with platform.hypervisor(plan.site) as hv:
        running = hv.state(plan.name) is not DomainState.MISSING
    made = []
    if not running:
        # A system disk is disposable until its VM exists: always a fresh overlay on the right base
        # (a restored template must never see a disk written after its save).
        backing = _system_backing(platform, plan, ctx)
        disks.overlay(paths.system_disk, backing)
        made.append(f"system disk on {backing.name}")
    result = seed.make_data_disk(paths.data_disk, plan.data_disk_mib)
    made.append(f"data disk {result}")
    _write_seed(platform, plan, paths)
    made.append("seed disk")
    return ", ".join(made)


def _system_backing(platform: Platform, plan: VmPlan, ctx: StepContext) -> Path:
    image = _image(platform, ctx, plan.site)
    if _mode_is_cold(ctx):
        return image.disk
    return _site_template(platform, plan, image).system_disk


def _site_template(platform: Platform, plan: VmPlan, image: images.GoldenImage) -> templates.Template:
    template = templates.load(platform.site(plan.site), image.key, plan.memory_mib)
    if template is None:
        raise ProvisioningError(
            f"site {plan.site}: template {image.key}-{plan.memory_mib}m vanished; rerun the job")
    return template


def _write_seed(platform: Platform, plan: VmPlan, paths: VmPaths) -> None:
    """The seed disk: settings and this VM's own identity (host key made once, kept across reruns)."""
    if not paths.host_key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", plan.name, "-f",
                        str(paths.host_key)], check=True, capture_output=True)
    public_key = ensure_ssh_key(platform.ssh_key).with_suffix(".pub").read_text().strip()
    seed.build_seed_image(
        paths.seed_disk, settings=app_env(plan), hostname=plan.name, authorized_keys=[public_key],
        identity={
            "machine-id": (machine_id(plan) + "\n").encode(),
            "random-seed": secrets.token_bytes(512),
            "ssh_host_ed25519_key": paths.host_key.read_bytes(),
            "ssh_host_ed25519_key.pub": paths.host_key.with_suffix(".pub").read_bytes(),
        },
    )


def _start(platform: Platform, vm_name: str, ctx: StepContext) -> str:
    plan = load_plan(platform, vm_name)
    paths = vm_paths(platform.site(plan.site), plan.name)
    with platform.hypervisor(plan.site) as hv:
        state = hv.state(plan.name)
        if state in (DomainState.RUNNING, DomainState.PAUSED):
            hv.make_persistent(plan.name)  # a crash between restore and define left it transient
            _remove_clone_state(paths)  # ... and maybe the copy it was restored from
            return "already running"
        info = hv.info(plan.name)
        if info is not None and info.persistent:
            hv.start(plan.name)  # an existing VM (e.g. after an outage) boots from its own disks
            return "started the existing VM (boot)"
        image = _image(platform, ctx, plan.site)
        if _mode_is_cold(ctx):
            _remove_clone_state(paths)  # a copy left by an earlier attempt by clone
            spec = cold_spec(plan, paths, image, platform.domain_type)
            hv.define(render_domain_xml(spec))
            hv.start(plan.name)
            return "defined and started (cold boot)"
        template = _site_template(platform, plan, image)
        began = time.monotonic()
        paths.clone_state.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        templates.write_clone_state(
            template, name=plan.name, uuid=plan.uuid, system_disk=paths.system_disk, forwards=forwards(plan),
            agent_socket=paths.agent_socket, serial_log=paths.serial_log, destination=paths.clone_state,
        )
        cloned = time.monotonic() - began
        try:
            hv.restore(paths.clone_state)
        finally:
            _remove_clone_state(paths)
        hv.make_persistent(plan.name)
        restored = time.monotonic() - began - cloned
        return f"cloned the template state in {cloned:.2f} s, restored in {restored:.2f} s"


def _remove_clone_state(paths: VmPaths) -> None:
    for leftover in paths.clone_state_files:
        leftover.unlink(missing_ok=True)


def _identity(platform: Platform, vm_name: str, ctx: StepContext) -> str:
    """Make a restored clone this county's VM: its waiting launcher takes the clock from the request,
    then identity, settings and data from the disks as they appear (provisioning/image/files/launcher.py)."""
    if _mode_is_cold(ctx):
        return "skipped: a cold boot applies its seed disk at first boot"
    plan = load_plan(platform, vm_name)
    paths = vm_paths(platform.site(plan.site), plan.name)
    with platform.hypervisor(plan.site) as hv:
        waited = hv.wait_for_agent(plan.name, timeout_s=AGENT_TIMEOUT_S)
        # The request first: the launcher sets the clock from it before the disks can appear.
        guest.write_file(hv, plan.name, ACTIVATE_REQUEST, f"{time.time():.6f}\n".encode())
        attached = hv.xml(plan.name)
        plugged = []
        for disk in hotplug_disks(paths):
            if f"dev='{disk.target}'" not in attached:
                hv.attach_disk(plan.name, render_disk_xml(disk))
                plugged.append(disk.target)
    return (f"agent answered after {waited:.2f} s; activation requested; "
            f"hot-plugged {', '.join(plugged) or 'nothing (already attached)'}")


def _resize_to_plan(platform: Platform, vm_name: str, _ctx: StepContext) -> str:
    plan = load_plan(platform, vm_name)
    with platform.hypervisor(plan.site) as hv:
        return resize_guest(hv, plan.name, plan.vcpus, plan.memory_mib)


def resize_guest(hv: Hypervisor, vm_name: str, vcpus: int, memory_mib: int) -> str:
    """`resize_live`, then the guest onlines the vCPUs it was given."""
    before = hv.info(vm_name)
    done = resize_live(hv, vm_name, vcpus, memory_mib)
    if before is not None and vcpus > before.vcpus:
        online_vcpus(hv, vm_name)
    return done


def online_vcpus(hv: Hypervisor, vm_name: str) -> None:
    """Hot-added vCPUs arrive offline. No udev rule onlines them in a clone (it runs without udevd,
    see templates.build), so provisioning does, through the agent. Idempotent."""
    agent_exec(hv, vm_name, ["/bin/sh", "-c",
                             "for c in /sys/devices/system/cpu/cpu[0-9]*/online; do echo 1 > $c; done"],
               check=False)


def resize_live(hv: Hypervisor, vm_name: str, vcpus: int, memory_mib: int) -> str:
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


def _app_ready(platform: Platform, vm_name: str, _ctx: StepContext) -> str:
    plan = load_plan(platform, vm_name)
    try:
        waited = address.wait_healthy(plan.app_port, timeout_s=platform.boot_timeout_s)
    except address.NotHealthy as error:
        with platform.hypervisor(plan.site) as hv:
            reason = guest.read_file(hv, plan.name, ACTIVATION_ERROR)
        if reason:
            said = reason.decode().strip()
            raise ProvisioningError(f"{plan.name}: activation failed in the guest: {said}") from error
        raise
    return f"app healthy on 127.0.0.1:{plan.app_port} after {waited:.1f} s"


def _address(platform: Platform) -> str:
    with session_scope(platform.engine) as session:
        frontends = address.frontends(queries.list_tenants(session))
    changed = address.apply(platform.haproxy_dir, frontends)
    return f"{len(frontends)} tenant address(es), {'reloaded' if changed else 'unchanged'}"


def _health(platform: Platform, tenant_slug: str) -> str:
    with session_scope(platform.engine) as session:
        port = queries.get_tenant(session, tenant_slug).gateway_port
    assert port is not None  # the check step guarantees it
    waited = address.wait_healthy(port, timeout_s=60)
    return f"healthy through its address 127.0.0.1:{port} after {waited:.1f} s"


def _serving(platform: Platform, tenant_slug: str) -> str:
    # Its app answers (app-ready): HAProxy need not wait for its next check to send it requests.
    plans = [load_plan(platform, name) for name in vm_names(platform, tenant_slug)]
    address.vouch_serving(platform.haproxy_dir, tenant_slug, {plan.name: plan.app_port for plan in plans})
    healthy = _health(platform, tenant_slug)
    bringup.end(platform.locks_dir, tenant_slug)
    return healthy


def _configure(platform: Platform, tenant_slug: str, ctx: StepContext) -> str:
    plans = [load_plan(platform, name) for name in vm_names(platform, tenant_slug)]
    return configure.converge(plans, ensure_ssh_key(platform.ssh_key), ctx.artifacts)


def _configure_after_others(platform: Platform, tenant_slug: str, ctx: StepContext) -> str:
    """Provisioning's converge: after every county coming up now serves (see bringup.py)."""
    bringup.end(platform.locks_dir, tenant_slug)  # a rerun that starts here must not wait on itself
    plans = [load_plan(platform, name) for name in vm_names(platform, tenant_slug)]
    # Before the turn: a county whose guest already serves its declared settings waits for no one.
    digests = configure.guest_digests(plans, platform.hypervisor)
    if not configure.unconverged(plans, digests):
        return configure.skipped(plans)
    with bringup.converge_turn(platform.locks_dir) as turn:
        converged = configure.converge_stale(
            plans, digests, lambda stale: configure.converge(stale, ensure_ssh_key(platform.ssh_key),
                                                             ctx.artifacts))
    if not turn.waited_for:
        return converged
    note = "waited" if not turn.gave_up else "gave up waiting after"
    return (f"{note} {turn.waited_s:.1f} s for {len(turn.waited_for)} county(ies) coming up "
            f"({', '.join(turn.waited_for)}); {converged}")


def _coming_up(platform: Platform, tenant_slug: str, step: Step) -> Step:
    """A step on the way to serving: it holds back other counties' converges while it runs."""
    def run(ctx: StepContext) -> str | None:
        bringup.begin(platform.locks_dir, tenant_slug)
        return step.run(ctx)

    return Step(step.name, run, step.description)


def _record_active(platform: Platform, tenant_slug: str) -> str:
    with session_scope(platform.engine) as session:
        tenant = queries.get_tenant(session, tenant_slug)
        for vm in queries.vms_of(tenant):
            queries.set_status(vm, Lifecycle.ACTIVE, actor=ACTOR)
        queries.set_status(tenant, Lifecycle.ACTIVE, actor=ACTOR)
    return f"tenant {tenant_slug} active"


def _vm_step(vm: str, what: str, action: Callable[[Platform, str, StepContext], str], platform: Platform,
             description: str) -> Step:
    def run(ctx: StepContext) -> str:
        return action(platform, vm, ctx)

    return Step(f"{vm}:{what}", run, description)


def _in_place(platform: Platform, vm: str, step: Step, *, first: bool = False, last: bool = False) -> Step:
    """A step of a VM's way from restore (or boot) to serving, which takes one of the machine's
    `bringup_places` (bringup.py): the first step waits for a place, the last one frees it, and a
    failing one frees it too (a rerun takes it again at the first step)."""
    def run(ctx: StepContext) -> str | None:
        waited = bringup.take_place(platform.locks_dir, vm, platform.bringup_places) if first else 0.0
        try:
            said = step.run(ctx)
        except BaseException:
            bringup.leave_place(vm)
            raise
        if last:
            bringup.leave_place(vm)
        if waited >= 0.1:
            said = f"waited {waited:.1f} s for a place to come up in; {said}"
        return said

    return Step(step.name, run, step.description)


def provision_steps(args: Mapping[str, Any], platform: Platform) -> list[Step]:
    tenant = str(args["tenant"])
    steps = [
        Step("check", lambda ctx: _check(platform, tenant), "validate tenant, site, capacity, ports, tools"),
        Step("place", lambda ctx: _place(platform, tenant), "choose hosts, record identity"),
        Step("golden-image", lambda ctx: _golden(platform, ctx), "build or reuse the golden image"),
    ]
    if not args.get("cold"):
        steps.append(Step("template", lambda ctx: _template(platform, tenant, ctx),
                          "the site's prebooted template (cold boot if unusable)"))
    for name in vm_names(platform, tenant):
        steps += [
            _vm_step(name, "disks", _disks, platform, "system, data and seed disks"),
            _in_place(platform, name, _vm_step(name, "start", _start, platform, "restore a clone or boot"),
                      first=True),
            _in_place(platform, name, _vm_step(name, "identity", _identity, platform,
                                               "clock, disks, unique identity, settings")),
            _in_place(platform, name, _vm_step(name, "resize", _resize_to_plan, platform,
                                               "live resize to its size")),
            _in_place(platform, name, _vm_step(name, "app-ready", _app_ready, platform, "the app answers"),
                      last=True),
        ]
    steps.append(Step("address", lambda ctx: _address(platform), "render and reload HAProxy"))
    steps = [_coming_up(platform, tenant, step) for step in steps]
    return [
        *steps,
        Step("health", lambda ctx: _serving(platform, tenant), "healthy through the tenant address"),
        Step("configure", lambda ctx: _configure_after_others(platform, tenant, ctx),
             "Ansible converges the declared settings (after the counties coming up serve)"),
        Step("record", lambda ctx: _record_active(platform, tenant), "mark the tenant active"),
    ]


# --- configure -------------------------------------------------------------------------------

def _check_configure(platform: Platform, tenant_slug: str) -> str:
    plans = [load_plan(platform, name) for name in vm_names(platform, tenant_slug)]
    for plan in plans:
        if not address.healthy(plan.app_port):
            raise ProvisioningError(f"{plan.name} is not serving; provision it first "
                                    f"(`countycloud tenant create {tenant_slug}`)")
    return f"{len(plans)} VM(s) serving"


def configure_steps(args: Mapping[str, Any], platform: Platform) -> list[Step]:
    """Converge a running county to its declared settings (after `inventory apply` changed them)."""
    tenant = str(args["tenant"])
    return [
        Step("check", lambda ctx: _check_configure(platform, tenant), "the county's VMs are serving"),
        Step("configure", lambda ctx: _configure(platform, tenant, ctx), "Ansible converges the settings"),
        Step("health", lambda ctx: _health(platform, tenant), "healthy through the tenant address"),
    ]


# --- resize ------------------------------------------------------------------------------------

def _check_resize(platform: Platform, vm_name: str, vcpus: int, memory_mib: int) -> str:
    plan = load_plan(platform, vm_name)
    with platform.hypervisor(plan.site) as hv:
        info = hv.info(plan.name)
        if info is None or info.state is not DomainState.RUNNING:
            raise ProvisioningError(f"{vm_name} is not running; a live resize needs a running VM")
        xml = hv.xml(plan.name)
    max_vcpus = int(xml.split("</vcpu>")[0].rsplit(">", 1)[1])
    if not 1 <= vcpus <= max_vcpus:
        raise ProvisioningError(f"{vm_name}: {vcpus} vCPUs asked, between 1 and {max_vcpus} possible live")
    if not 256 <= memory_mib <= info.max_memory_mib:
        raise ProvisioningError(
            f"{vm_name}: {memory_mib} MiB asked, between 256 and {info.max_memory_mib} MiB possible live")
    return f"{vm_name}: {info.vcpus} vCPU / {info.memory_mib} MiB -> {vcpus} / {memory_mib}"


def _resize(platform: Platform, vm_name: str, vcpus: int, memory_mib: int) -> str:
    plan = load_plan(platform, vm_name)
    with platform.hypervisor(plan.site) as hv:
        done = resize_guest(hv, plan.name, vcpus, memory_mib)
    with session_scope(platform.engine) as session:
        queries.record_vm_size(queries.get_vm(session, vm_name), vcpus, memory_mib, actor=ACTOR)
    return done


def resize_steps(args: Mapping[str, Any], platform: Platform) -> list[Step]:
    vm, vcpus, memory = str(args["vm"]), int(args["vcpus"]), int(args["memory_mb"])
    return [
        Step("check", lambda ctx: _check_resize(platform, vm, vcpus, memory), "within the live maximums"),
        Step("resize", lambda ctx: _resize(platform, vm, vcpus, memory), "set vCPUs and memory live"),
    ]


# --- retire ------------------------------------------------------------------------------------

def _check_retire(platform: Platform, tenant_slug: str) -> str:
    with session_scope(platform.engine) as session:
        tenant = queries.get_tenant(session, tenant_slug)
        if tenant.status is Lifecycle.RETIRED:
            return f"tenant {tenant_slug} is already retired"
        site = tenant.home_site.name
    if sites.state(platform.site(site)) is not sites.SiteState.UP:
        raise ProvisioningError(f"site {site} is down; start it to retire {tenant_slug}")
    return f"tenant {tenant_slug} at site {site}"


def _mark_retiring(platform: Platform, tenant_slug: str) -> str:
    with session_scope(platform.engine) as session:
        tenant = queries.get_tenant(session, tenant_slug)
        if tenant.status is not Lifecycle.RETIRED:
            queries.set_status(tenant, Lifecycle.RETIRING, actor=ACTOR)
    return "retiring"


def _teardown(platform: Platform, vm_name: str, ctx: StepContext) -> str:
    purge = bool(ctx.args.get("purge"))
    with session_scope(platform.engine) as session:
        vm = queries.get_vm(session, vm_name)
        site = vm.host.site.name if vm.host else queries.get_tenant(session, vm.tenant.slug).home_site.name
    paths = vm_paths(platform.site(site), vm_name)
    with platform.hypervisor(site) as hv:
        hv.undefine(vm_name)
    removed = []
    for disk in (paths.system_disk, paths.seed_disk, *paths.clone_state_files, paths.agent_socket):
        if disk.exists():
            disk.unlink()
            removed.append(disk.name)
    if purge and paths.directory.exists():
        shutil.rmtree(paths.directory)
        removed.append("data disk (purged)")
    return f"undefined; removed {', '.join(removed) or 'nothing'}" + ("" if purge else "; data disk kept")


def _record_retired(platform: Platform, tenant_slug: str) -> str:
    with session_scope(platform.engine) as session:
        tenant = queries.get_tenant(session, tenant_slug)
        for vm in queries.vms_of(tenant):
            queries.set_status(vm, Lifecycle.RETIRED, actor=ACTOR)
            queries.release_host(vm, actor=ACTOR, note="retired")
        queries.set_status(tenant, Lifecycle.RETIRED, actor=ACTOR)
    return f"tenant {tenant_slug} retired"


def retire_steps(args: Mapping[str, Any], platform: Platform) -> list[Step]:
    tenant = str(args["tenant"])
    steps = [
        Step("check", lambda ctx: _check_retire(platform, tenant), "the site is up"),
        Step("mark", lambda ctx: _mark_retiring(platform, tenant), "tenant retiring"),
    ]
    for name in vm_names(platform, tenant):
        steps.append(_vm_step(name, "teardown", _teardown, platform, "stop, undefine, remove disks"))
    steps += [
        Step("record", lambda ctx: _record_retired(platform, tenant), "tenant and VMs retired"),
        Step("address", lambda ctx: _address(platform), "drop its HAProxy frontend"),
    ]
    return steps

