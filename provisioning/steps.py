"""Provision, configure, resize and retire as step lists: named, idempotent steps over the public VM
operations (provisioning.vm) and the inventory records (provisioning.records).

Check first, then act (Ganeti's check-then-exec): the `check` step validates everything a job needs
before anything is made. Every later step can be rerun after a crash and leaves the same state,
so a killed job is repaired by running the same command again. Steps hand typed results
(provisioning.jobdata) to the steps after them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from typing import Any

from inventory.enums import Lifecycle
from inventory.jobs import Step, StepContext, StepResult
from provisioning import (
    address,
    bringup,
    configure,
    fencing,
    images,
    probe_accounts,
    records,
    sites,
    templates,
    vm,
)
from provisioning.errors import ProvisioningError
from provisioning.hypervisor import DomainState, HypervisorError
from provisioning.jobdata import (
    BringUpChoice,
    ConfigureArgs,
    GoldenPinned,
    Placed,
    ProvisionArgs,
    Ready,
    ResizeArgs,
    RetireArgs,
    Started,
    VmTarget,
)
from provisioning.platform import Platform, ensure_ssh_key
from provisioning.vm import BringUp

__all__ = ["ProvisioningError", "configure_steps", "provision_steps", "resize_steps", "retire_steps"]

REQUIRED_TOOLS = ("qemu-img", "mkfs.ext4", "haproxy")


# --- checks shared by the job kinds ------------------------------------------------------------

def _site_up(platform: Platform, site: str) -> bool:
    return sites.state(platform.site(site)) is sites.SiteState.UP


def _check(platform: Platform, tenant: str) -> str:
    """Everything a provision needs, validated before anything is made."""
    site, forwards_of = records.check_provision(platform.engine, tenant)
    if not _site_up(platform, site):
        raise ProvisioningError(f"site {site} is down; start it with `countycloud site start {site}`")
    with platform.hypervisor(site) as hv:
        for vm_name, ports in forwards_of.items():
            if hv.state(vm_name) in (DomainState.RUNNING, DomainState.PAUSED):
                continue  # its QEMU holds these ports itself
            for purpose, port in ports:
                if not address.port_free(port):
                    raise ProvisioningError(
                        f"{vm_name}: its {purpose} port 127.0.0.1:{port} (allocated by the inventory) is in "
                        "use by another process; free it or change the inventory's port range")
    for copy in _fenced_copies(platform, list(forwards_of)):
        if copy.site == site:
            raise ProvisioningError(
                f"{copy.vm} has a fenced copy at site {site}, left by a failover: `countycloud dr failback` "
                f"removes it if {tenant} is failed over; if it was retired meanwhile, "
                f"`countycloud tenant retire {tenant}` removes it")
    for tool in REQUIRED_TOOLS:
        if shutil.which(tool) is None:
            raise ProvisioningError(f"{tool} is not installed; run `make host` (scripts/host-setup.sh)")
    return f"tenant {tenant}: {len(forwards_of)} VM(s) at site {site}, capacity and ports available"


# --- provision ---------------------------------------------------------------------------------

def _golden(platform: Platform, ctx: StepContext) -> GoldenPinned:
    return GoldenPinned(key=images.ensure(platform.cache_dir, log=ctx.log).key)


def _image(platform: Platform, ctx: StepContext, site: str) -> images.GoldenImage:
    """The golden image this job pinned in its golden-image step (the app may change meanwhile), as
    present at the site."""
    pinned = ctx.result_or_none("golden-image", GoldenPinned)
    image = images.load(platform.cache_dir, pinned.key) if pinned else None
    if image is None:
        image = images.ensure(platform.cache_dir, log=ctx.log)
    return images.at_site(image, platform.site(site).images)


def _bring_up_choice(platform: Platform, ctx: StepContext, cold: bool) -> BringUpChoice:
    """The site's prebooted templates (one per memory size), built if missing; any trouble means a
    cold boot, said plainly in the job's output."""
    placed = ctx.result("place", Placed)
    if cold:
        return BringUpChoice(mode=BringUp.COLD, site=placed.site, reason="asked for (--cold)")
    image = _image(platform, ctx, placed.site)
    sizes = tuple(sorted({target.memory_mib for target in placed.vms}))
    try:
        with platform.hypervisor(placed.site) as hv:
            for memory_mib in sizes:
                template = templates.build(hv, platform.site(placed.site), image, platform.domain_type,
                                           memory_mib, log=ctx.log)
                templates.check_usable(template)
    except Exception as error:  # any template fault falls back to a cold boot, never fails the job
        ctx.log(f"template unusable, falling back to a cold boot: {error}")
        return BringUpChoice(mode=BringUp.COLD, site=placed.site, reason=f"template unusable: {error}")
    return BringUpChoice(mode=BringUp.CLONE, site=placed.site, sizes_mib=sizes)


def _mode(ctx: StepContext) -> BringUp:
    choice = ctx.result_or_none("template", BringUpChoice)
    return choice.mode if choice else BringUp.COLD


def _template_for(platform: Platform, target: VmTarget, image: images.GoldenImage) -> templates.Template:
    template = templates.load(platform.site(target.site), image.key, target.memory_mib)
    if template is None:
        raise ProvisioningError(
            f"site {target.site}: template {image.key}-{target.memory_mib}m vanished; rerun the job")
    return template


def _disks(platform: Platform, target: VmTarget, ctx: StepContext) -> str:
    plan = records.load_plan(platform.engine, target.name)
    paths = vm.vm_disks(platform, target.site, target.name)
    image = _image(platform, ctx, target.site)
    backing = image.disk if _mode(ctx) is BringUp.COLD else _template_for(platform, target, image).system_disk
    new_database = not paths.data_disk.exists()
    with platform.hypervisor(target.site) as hv:
        made = vm.make_disks(hv, plan, paths, system_backing=backing, ssh_key=platform.ssh_key)
    if new_database and probe_accounts.load(platform.state_dir, plan.tenant) is not None:
        # The credentials kept were made in a database that is gone (a purged county created again):
        # kept, they would stop `tenant configure` from making the account in this one.
        probe_accounts.forget(platform.state_dir, plan.tenant)
        made.append("probe account of the earlier database forgotten")
    return ", ".join(made)


def _start(platform: Platform, target: VmTarget, ctx: StepContext) -> Started:
    plan = records.load_plan(platform.engine, target.name)
    paths = vm.vm_disks(platform, target.site, target.name)
    mode = _mode(ctx)
    fencing.refuse_if_fenced(platform, target.site, target.name)  # never a second writable copy
    with platform.hypervisor(target.site) as hv:
        # An existing VM is only started: it needs no image or template (which may be gone by now).
        exists = hv.state(target.name) is not DomainState.MISSING
        image = None if exists else _image(platform, ctx, target.site)
        template = _template_for(platform, target, image) if image and mode is BringUp.CLONE else None
        started = vm.start(hv, plan, paths, mode=mode, image=image, template=template,
                           domain_type=platform.domain_type)
    return Started(how=started.how, clone_s=started.clone_s, restore_s=started.restore_s)


def _identity(platform: Platform, target: VmTarget, ctx: StepContext) -> str:
    if _mode(ctx) is BringUp.COLD:
        return "skipped: a cold boot applies its seed disk at first boot"
    with platform.hypervisor(target.site) as hv:
        done = vm.activate(hv, target.name, vm.vm_disks(platform, target.site, target.name))
    return (f"agent answered after {done.agent_wait_s:.2f} s; activation requested; "
            f"hot-plugged {', '.join(done.plugged) or 'nothing (already attached)'}")


def _resize_to_plan(platform: Platform, target: VmTarget, _ctx: StepContext) -> str:
    with platform.hypervisor(target.site) as hv:
        return vm.resize(hv, target.name, target.vcpus, target.memory_mib)


def _app_ready(platform: Platform, target: VmTarget, _ctx: StepContext) -> Ready:
    with platform.hypervisor(target.site) as hv:
        waited = vm.wait_ready(hv, target.name, target.app_port, platform.boot_timeout_s)
    return Ready(port=target.app_port, waited_s=round(waited, 2), through="app")


def _address(platform: Platform) -> str:
    wanted = records.frontends(platform.engine)
    changed = vm.point_address(platform, wanted)
    return f"{len(wanted)} tenant address(es), {'reloaded' if changed else 'unchanged'}"


def _health(platform: Platform, tenant: str) -> Ready:
    port = records.gateway_port(platform.engine, tenant)
    return Ready(port=port, waited_s=round(address.wait_healthy(port, timeout_s=60), 2), through="address")


def _serving(platform: Platform, tenant: str, ctx: StepContext) -> Ready:
    # Its app answers (app-ready): HAProxy need not wait for its next check to send it requests.
    placed = ctx.result("place", Placed)
    vm.vouch_serving(platform, tenant, {target.name: target.app_port for target in placed.vms})
    healthy = _health(platform, tenant)
    bringup.end(platform.locks_dir, tenant)
    return healthy


def _probe_account(platform: Platform, tenant: str, ctx: StepContext) -> str:
    """The county's probe account (monitoring), made in its database; the platform keeps the
    credentials (provisioning.probe_accounts). Not fatal: the county serves without it, and until a
    rerun of `countycloud tenant configure` monitoring reports it as having no probe account."""
    if probe_accounts.load(platform.state_dir, tenant) is not None:
        return "probe account already kept"
    try:
        site, vm_name = probe_accounts.serving_vm(platform.engine, tenant)
        with platform.hypervisor(site) as hv:
            return probe_accounts.ensure_in_guest(hv, vm_name, platform.state_dir, tenant)
    except (ProvisioningError, HypervisorError) as error:
        ctx.log(f"probe account not made: {error}")
        return f"no probe account (monitoring cannot probe {tenant}): {error}"


def _configure(platform: Platform, tenant: str, ctx: StepContext) -> str:
    """`tenant configure`: Ansible converges the VMs a converge would change (configure.in_sync)."""
    plans = records.load_plans(platform.engine, tenant)
    return configure.converge_only(
        plans, configure.out_of_sync(plans, platform.hypervisor),
        lambda stale: configure.converge(stale, ensure_ssh_key(platform.ssh_key), ctx.artifacts))


def _configure_after_others(platform: Platform, tenant: str, ctx: StepContext) -> str:
    """Provisioning's converge: after every county coming up now serves (see bringup.py)."""
    bringup.end(platform.locks_dir, tenant)  # a rerun that starts here must not wait on itself
    plans = records.load_plans(platform.engine, tenant)
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


def _record_active(platform: Platform, tenant: str) -> str:
    records.mark_tenant(platform.engine, tenant, Lifecycle.ACTIVE, with_vms=True)
    return f"tenant {tenant} active"


VmAction = Callable[[Platform, VmTarget, StepContext], "str | StepResult"]


def _vm_step(platform: Platform, vm_name: str, what: str, action: VmAction, description: str) -> Step:
    def run(ctx: StepContext) -> str | StepResult:
        return action(platform, ctx.result("place", Placed).vm(vm_name), ctx)

    return Step(f"{vm_name}:{what}", run, description)


def _coming_up(platform: Platform, tenant: str, step: Step) -> Step:
    """A step on the way to serving: it holds back other counties' converges while it runs."""
    def run(ctx: StepContext) -> str | StepResult | None:
        bringup.begin(platform.locks_dir, tenant)
        return step.run(ctx)

    return Step(step.name, run, step.description)


def _in_place(platform: Platform, vm_name: str, step: Step, *, first: bool = False,
              last: bool = False) -> Step:
    """A step of a VM's way from restore (or boot) to serving, which takes one of the machine's
    `bringup_places` (bringup.py): the first step waits for a place, the last one frees it, and a
    failing one frees it too (a rerun takes it again at the first step)."""
    def run(ctx: StepContext) -> str | StepResult | None:
        waited = bringup.take_place(platform.locks_dir, vm_name, platform.bringup_places) if first else 0.0
        try:
            said = step.run(ctx)
        except BaseException:
            bringup.leave_place(vm_name)
            raise
        if last:
            bringup.leave_place(vm_name)
        if waited >= 0.1:
            ctx.log(f"waited {waited:.1f} s for a place to come up in")
        return said

    return Step(step.name, run, step.description)


def provision_steps(raw: Mapping[str, Any], platform: Platform) -> list[Step]:
    args = ProvisionArgs.model_validate(raw)
    tenant = args.tenant
    steps = [
        Step("check", lambda ctx: _check(platform, tenant), "validate tenant, site, capacity, ports, tools"),
        Step("place", lambda ctx: records.place(platform.engine, tenant), "choose hosts, record identity"),
        Step("golden-image", lambda ctx: _golden(platform, ctx), "build or reuse the golden image"),
        Step("template", lambda ctx: _bring_up_choice(platform, ctx, args.cold),
             "the site's prebooted template (cold boot if asked or unusable)"),
    ]
    for name in records.vm_names(platform.engine, tenant):
        steps += [
            _vm_step(platform, name, "disks", _disks, "system, data and seed disks"),
            _in_place(platform, name, _vm_step(platform, name, "start", _start, "restore a clone or boot"),
                      first=True),
            _in_place(platform, name, _vm_step(platform, name, "identity", _identity,
                                               "clock, disks, unique identity, settings")),
            _in_place(platform, name, _vm_step(platform, name, "resize", _resize_to_plan,
                                               "live resize to its size")),
            _in_place(platform, name, _vm_step(platform, name, "app-ready", _app_ready, "the app answers"),
                      last=True),
        ]
    steps.append(Step("address", lambda ctx: _address(platform), "render and reload HAProxy"))
    steps = [_coming_up(platform, tenant, step) for step in steps]
    return [
        *steps,
        Step("health", lambda ctx: _serving(platform, tenant, ctx), "healthy through the tenant address"),
        # No probe account here: it needs the county's fiscal year, which a new county has not got
        # yet, and `tenant-app probe-account` in a TCG guest beside counties coming up ran past its
        # 120 s for every one of 13 creates (taking the cores the others came up on), to fail anyway.
        # It is made once the county has its year: `tenant configure`, the demo after its seed.
        Step("configure", lambda ctx: _configure_after_others(platform, tenant, ctx),
             "Ansible converges the declared settings (after the counties coming up serve)"),
        Step("record", lambda ctx: _record_active(platform, tenant), "mark the tenant active"),
    ]


# --- configure -------------------------------------------------------------------------------

def _check_configure(platform: Platform, tenant: str) -> str:
    plans = records.load_plans(platform.engine, tenant)
    for plan in plans:
        if not address.healthy(plan.app_port):
            raise ProvisioningError(f"{plan.name} is not serving; provision it first "
                                    f"(`countycloud tenant create {tenant}`)")
    return f"{len(plans)} VM(s) serving"


def configure_steps(raw: Mapping[str, Any], platform: Platform) -> list[Step]:
    """Converge a running county to its declared settings (after `inventory apply` changed them)."""
    tenant = ConfigureArgs.model_validate(raw).tenant
    return [
        Step("check", lambda ctx: _check_configure(platform, tenant), "the county's VMs are serving"),
        Step("configure", lambda ctx: _configure(platform, tenant, ctx), "Ansible converges the settings"),
        Step("health", lambda ctx: _health(platform, tenant), "healthy through the tenant address"),
        Step("probe-account", lambda ctx: _probe_account(platform, tenant, ctx),
             "the monitoring probe's account, made if missing (needs the county's fiscal year)"),
    ]


# --- resize ------------------------------------------------------------------------------------

def check_resize(platform: Platform, vm_name: str, vcpus: int, memory_mib: int) -> str:
    """Also called before a resize job is created: a resize the VM cannot take never becomes a job."""
    plan = records.load_plan(platform.engine, vm_name)  # refuses a VM not placed yet
    with platform.hypervisor(plan.site) as hv:
        return vm.check_resize(hv, vm_name, vcpus, memory_mib)


def _resize(platform: Platform, vm_name: str, vcpus: int, memory_mib: int) -> str:
    with platform.hypervisor(records.vm_site(platform.engine, vm_name)) as hv:
        done = vm.resize(hv, vm_name, vcpus, memory_mib)
    records.record_size(platform.engine, vm_name, vcpus, memory_mib)
    return done


def resize_steps(raw: Mapping[str, Any], platform: Platform) -> list[Step]:
    args = ResizeArgs.model_validate(raw)
    return [
        Step("check", lambda ctx: check_resize(platform, args.vm, args.vcpus, args.memory_mb),
             "within the live maximums"),
        Step("resize", lambda ctx: _resize(platform, args.vm, args.vcpus, args.memory_mb),
             "set vCPUs and memory live"),
    ]


# --- retire ------------------------------------------------------------------------------------

def _check_retire(platform: Platform, tenant: str) -> str:
    if records.tenant_status(platform.engine, tenant) is Lifecycle.RETIRED:
        return f"tenant {tenant} is already retired"
    site = records.current_site(platform.engine, tenant)
    if not _site_up(platform, site):
        raise ProvisioningError(f"site {site} is down; start it to retire {tenant}")
    return f"tenant {tenant} at site {site}"


def _mark_retiring(platform: Platform, tenant: str) -> str:
    if records.tenant_status(platform.engine, tenant) is not Lifecycle.RETIRED:
        records.mark_tenant(platform.engine, tenant, Lifecycle.RETIRING, with_vms=False)
    return "retiring"


def _teardown(platform: Platform, vm_name: str, purge: bool) -> str:
    site = records.vm_site(platform.engine, vm_name)
    with platform.hypervisor(site) as hv:
        removed = vm.tear_down(hv, vm_name, vm.vm_disks(platform, site, vm_name), purge=purge)
    return f"undefined; removed {', '.join(removed) or 'nothing'}" + ("" if purge else "; data disk kept")


def _teardown_step(platform: Platform, vm_name: str, purge: bool) -> Step:
    return Step(f"{vm_name}:teardown", lambda ctx: _teardown(platform, vm_name, purge),
                "stop, undefine, remove disks")


def _fenced_copies(platform: Platform, vm_names: list[str]) -> list[fencing.FencedCopy]:
    return [copy for copy in fencing.fenced(platform) if copy.vm in vm_names]


def _remove_fenced_copies(platform: Platform, tenant: str, purge: bool) -> str:
    """A county retired while failed over has a fenced copy at the site it left. Retired, it runs
    nowhere, so the fence protects nothing and would refuse the county created again: remove each copy
    whose site answers (as the retire's teardown does, data disk kept unless purged), then forget it.
    A copy at a site still down keeps its entry, so it can never start; this step removes it when the
    retirement is run again once the site is back."""
    done, left = [], []
    for copy in _fenced_copies(platform, records.vm_names(platform.engine, tenant)):
        if not _site_up(platform, copy.site):
            left.append(f"{copy.vm} at {copy.site}")
            continue
        with platform.hypervisor(copy.site) as hv:
            vm.tear_down(hv, copy.vm, vm.vm_disks(platform, copy.site, copy.vm), purge=purge)
        fencing.clear(platform, copy.site, copy.vm)
        done.append(f"{copy.vm} at {copy.site}")
    said = [f"removed {', '.join(done)}"] if done else []
    if left:
        said.append(f"left fenced (site down; retire again once it is up): {', '.join(left)}")
    return "; ".join(said) or "none"


def _record_retired(platform: Platform, tenant: str, purge: bool) -> str:
    records.mark_tenant(platform.engine, tenant, Lifecycle.RETIRED, with_vms=True, release_hosts=True)
    if purge:  # its database is gone, and the probe account with it
        probe_accounts.forget(platform.state_dir, tenant)
    return f"tenant {tenant} retired"


def retire_steps(raw: Mapping[str, Any], platform: Platform) -> list[Step]:
    args = RetireArgs.model_validate(raw)
    tenant = args.tenant
    steps = [
        Step("check", lambda ctx: _check_retire(platform, tenant), "the site is up"),
        Step("mark", lambda ctx: _mark_retiring(platform, tenant), "tenant retiring"),
    ]
    for name in records.vm_names(platform.engine, tenant):
        steps.append(_teardown_step(platform, name, args.purge))
    steps += [
        Step("fenced-copies", lambda ctx: _remove_fenced_copies(platform, tenant, args.purge),
             "fenced copies at the site it was failed over from removed"),
        Step("record", lambda ctx: _record_retired(platform, tenant, args.purge), "tenant and VMs retired"),
        Step("address", lambda ctx: _address(platform), "drop its HAProxy frontend"),
    ]
    return steps
