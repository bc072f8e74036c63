"""Declaration → database: `plan` says what would change, `apply` makes it so.

Ganeti's shape: the whole change is computed and checked first (plan, then refusals), and only when
nothing is refused is anything written. The caller owns the transaction (`session_scope`), so a
failure half-way (e.g. a port taken by a concurrent apply, caught by a unique constraint) rolls back
the whole apply.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from inventory import journal
from inventory.enums import RELEASED, REMOVABLE, ChangeAction, Lifecycle, ObjectKind
from inventory.errors import InventoryError
from inventory.models import Host, Image, Network, ProtectionTierRow, Site, SizeTemplate, Tenant, Vm
from inventory.ports import PortRanges, allocate
from inventory.queries import used_ports
from inventory.schemas import Declaration, ProtectionTierDecl

# Dependency order: an object is added after what it refers to and removed before it.
KIND_ORDER = (
    ObjectKind.PROTECTION_TIER,  # tenants name a tier; nothing else refers to one
    ObjectKind.SITE,
    ObjectKind.HOST,
    ObjectKind.SIZE_TEMPLATE,
    ObjectKind.NETWORK,
    ObjectKind.IMAGE,
    ObjectKind.TENANT,
    ObjectKind.VM,
)

DEFAULT_ACTOR = "declaration"

State = dict[ObjectKind, dict[str, dict[str, Any]]]
T = TypeVar("T")


@dataclass(frozen=True)
class FieldDiff:
    field: str
    before: Any
    after: Any


@dataclass(frozen=True)
class Change:
    action: ChangeAction
    kind: ObjectKind
    name: str
    diffs: tuple[FieldDiff, ...] = ()

    def before(self) -> dict[str, Any]:
        return {diff.field: diff.before for diff in self.diffs}

    def after(self) -> dict[str, Any]:
        return {diff.field: diff.after for diff in self.diffs}

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "kind": self.kind.value,
            "name": self.name,
            "diffs": [
                journal.jsonable({"field": d.field, "before": d.before, "after": d.after}) for d in self.diffs
            ],
        }


class ApplyRefused(InventoryError):
    """The declaration asks for something that must not be done silently; nothing was changed."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__("refused, nothing changed:\n  " + "\n  ".join(reasons))


@dataclass
class _Objects:
    """Every inventory row by kind and name, loaded once per plan/apply."""

    sites: dict[str, Site] = field(default_factory=dict)
    hosts: dict[str, Host] = field(default_factory=dict)
    sizes: dict[str, SizeTemplate] = field(default_factory=dict)
    networks: dict[str, Network] = field(default_factory=dict)
    images: dict[str, Image] = field(default_factory=dict)
    tenants: dict[str, Tenant] = field(default_factory=dict)
    vms: dict[str, Vm] = field(default_factory=dict)
    tiers: dict[str, ProtectionTierRow] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session) -> _Objects:
        return cls(
            sites={o.name: o for o in session.scalars(select(Site))},
            hosts={o.name: o for o in session.scalars(select(Host))},
            sizes={o.name: o for o in session.scalars(select(SizeTemplate))},
            networks={o.name: o for o in session.scalars(select(Network))},
            images={o.name: o for o in session.scalars(select(Image))},
            tenants={o.slug: o for o in session.scalars(select(Tenant))},
            vms={o.name: o for o in session.scalars(select(Vm))},
            tiers={o.name.value: o for o in session.scalars(select(ProtectionTierRow))},
        )


# --- the two states, as plain dicts -------------------------------------------------------------


def _tier_fields(tier: ProtectionTierDecl) -> dict[str, Any]:
    keep_last, keep_hourly, keep_daily, keep_monthly = tier.retention.counts()
    return {"interval_s": tier.interval_s, "keep_last": keep_last, "keep_hourly": keep_hourly,
            "keep_daily": keep_daily, "keep_monthly": keep_monthly}


def desired_state(declaration: Declaration) -> State:
    state: State = {kind: {} for kind in KIND_ORDER}
    # Only declared tiers are stored: one left out has the defaults (inventory.queries.protection_tiers).
    for tier in declaration.protection_tiers:
        state[ObjectKind.PROTECTION_TIER][tier.name.value] = _tier_fields(tier)
    for site in declaration.sites:
        state[ObjectKind.SITE][site.name] = {"role": site.role}
        for host in site.hosts:
            state[ObjectKind.HOST][host.name] = {
                "site": site.name,
                "vcpus": host.vcpus,
                "memory_mb": host.memory_mb,
                "disk_gb": host.disk_gb,
                "cpu_allocation_ratio": host.cpu_allocation_ratio,
                "ram_allocation_ratio": host.ram_allocation_ratio,
            }
    for size in declaration.size_templates:
        state[ObjectKind.SIZE_TEMPLATE][size.name] = {
            "vcpus": size.vcpus,
            "memory_mb": size.memory_mb,
            "data_disk_mb": size.data_disk_mb,
        }
    for network in declaration.networks:
        state[ObjectKind.NETWORK][network.name] = {
            "kind": network.kind,
            "bridge": network.bridge,
            "vlan": network.vlan,
        }
    for image in declaration.images:
        state[ObjectKind.IMAGE][image.name] = {"description": image.description}
    for tenant in declaration.tenants:
        state[ObjectKind.TENANT][tenant.slug] = {
            "name": tenant.name,
            "site": tenant.site,
            "network": tenant.network,
            "image": tenant.image,
            "settings": dict(tenant.settings),
            "protection": tenant.protection,
        }
        for name, vm in tenant.vm_names():
            state[ObjectKind.VM][name] = {"tenant": tenant.slug, "role": vm.role, "size": vm.size}
    return state


def current_state(session: Session) -> State:
    return _state_of(_Objects.load(session))


def _state_of(objects: _Objects) -> State:
    state: State = {kind: {} for kind in KIND_ORDER}
    for name, row in objects.tiers.items():
        state[ObjectKind.PROTECTION_TIER][name] = {
            "interval_s": row.interval_s, "keep_last": row.keep_last, "keep_hourly": row.keep_hourly,
            "keep_daily": row.keep_daily, "keep_monthly": row.keep_monthly,
        }
    for site in objects.sites.values():
        state[ObjectKind.SITE][site.name] = {"role": site.role}
    for host in objects.hosts.values():
        state[ObjectKind.HOST][host.name] = {
            "site": host.site.name,
            "vcpus": host.vcpus,
            "memory_mb": host.memory_mb,
            "disk_gb": host.disk_gb,
            "cpu_allocation_ratio": host.cpu_allocation_ratio,
            "ram_allocation_ratio": host.ram_allocation_ratio,
        }
    for size in objects.sizes.values():
        state[ObjectKind.SIZE_TEMPLATE][size.name] = {
            "vcpus": size.vcpus,
            "memory_mb": size.memory_mb,
            "data_disk_mb": size.data_disk_mb,
        }
    for network in objects.networks.values():
        state[ObjectKind.NETWORK][network.name] = {
            "kind": network.kind,
            "bridge": network.bridge,
            "vlan": network.vlan,
        }
    for image in objects.images.values():
        state[ObjectKind.IMAGE][image.name] = {"description": image.description}
    for tenant in objects.tenants.values():
        state[ObjectKind.TENANT][tenant.slug] = {
            "name": tenant.name,
            "site": tenant.home_site.name,
            "network": tenant.network.name,
            "image": tenant.image.name,
            "settings": dict(tenant.settings),
            "protection": tenant.protection,
        }
    for vm in objects.vms.values():
        state[ObjectKind.VM][vm.name] = {"tenant": vm.tenant.slug, "role": vm.role, "size": vm.size.name}
    return state


def diff(current: State, desired: State) -> list[Change]:
    """Pure: the changes that turn `current` into `desired`, adds and changes in dependency order,
    then removals in reverse dependency order (the order `apply` performs them in)."""
    forward: list[Change] = []
    for kind in KIND_ORDER:
        have, want = current[kind], desired[kind]
        for name, fields in want.items():
            if name not in have:
                diffs = tuple(FieldDiff(key, None, value) for key, value in fields.items())
                forward.append(Change(ChangeAction.ADD, kind, name, diffs))
            else:
                diffs = tuple(
                    FieldDiff(key, have[name].get(key), value)
                    for key, value in fields.items()
                    if have[name].get(key) != value
                )
                if diffs:
                    forward.append(Change(ChangeAction.CHANGE, kind, name, diffs))
    removals: list[Change] = []
    for kind in reversed(KIND_ORDER):
        have, want = current[kind], desired[kind]
        for name in sorted(set(have) - set(want)):
            diffs = tuple(FieldDiff(key, value, None) for key, value in have[name].items())
            removals.append(Change(ChangeAction.REMOVE, kind, name, diffs))
    return forward + removals


def plan(session: Session, declaration: Declaration) -> list[Change]:
    """What `apply` would change, without changing anything. Empty when the database matches."""
    return diff(current_state(session), desired_state(declaration))


# --- refusals (the check phase) ------------------------------------------------------------------


def _not_removable(vms: Iterable[Vm]) -> list[Vm]:
    return [vm for vm in vms if vm.status not in REMOVABLE]


def _listing(vms: list[Vm]) -> str:
    return ", ".join(f"{vm.name}: {vm.status}" for vm in vms)


def _shrink_below_use(change: Change, host: Host) -> list[str]:
    """A host whose new capacity is less than what its VMs already take: say which resource."""
    after = change.after()
    holding = [vm for vm in host.vms if vm.status not in RELEASED]

    def new(field: str) -> Any:
        return after.get(field, getattr(host, field))

    offered = {
        "vCPUs": (new("vcpus") * new("cpu_allocation_ratio"), sum(vm.vcpus for vm in holding)),
        "MB of memory": (new("memory_mb") * new("ram_allocation_ratio"), sum(vm.memory_mb for vm in holding)),
        "MB of disk": (new("disk_gb") * 1024, sum(vm.data_disk_mb for vm in holding)),
    }
    return [
        f"host {host.name} would offer {int(capacity)} {what} but its VMs already take {used}; "
        "move or retire VMs first, or keep the larger capacity"
        for what, (capacity, used) in offered.items()
        if used > capacity
    ]


def refusals(changes: list[Change], objects: _Objects) -> list[str]:
    """Why the changes must not be applied as they stand (empty: go ahead)."""
    reasons: list[str] = []
    removed_tenants = {
        c.name for c in changes if c.action is ChangeAction.REMOVE and c.kind is ObjectKind.TENANT
    }
    for change in changes:
        if change.action is ChangeAction.REMOVE and change.kind is ObjectKind.TENANT:
            busy = _not_removable(objects.tenants[change.name].vms)
            if busy:
                reasons.append(
                    f"tenant {change.name} still has {len(busy)} VM(s) that are not retired "
                    f"({_listing(busy)}); "
                    f"retire them first (countycloud tenant retire {change.name}), then apply again"
                )
        elif change.action is ChangeAction.REMOVE and change.kind is ObjectKind.VM:
            vm = objects.vms[change.name]
            if vm.tenant.slug not in removed_tenants and vm.status not in REMOVABLE:
                reasons.append(
                    f"VM {vm.name} is {vm.status}; retire it before removing it from the declaration"
                )
        elif change.kind is ObjectKind.HOST and change.action is not ChangeAction.ADD:
            moves = change.action is ChangeAction.REMOVE or "site" in change.after()
            busy = _not_removable(objects.hosts[change.name].vms)
            if moves and busy:
                what = "removed" if change.action is ChangeAction.REMOVE else "moved to another site"
                reasons.append(
                    f"host {change.name} cannot be {what}: it runs {len(busy)} VM(s) ({_listing(busy)}); "
                    "retire them or move them to another host first"
                )
            elif change.action is ChangeAction.CHANGE:
                reasons += _shrink_below_use(change, objects.hosts[change.name])
        elif (
            change.kind is ObjectKind.TENANT
            and change.action is ChangeAction.CHANGE
            and "site" in change.after()
        ):
            placed = [vm for vm in _not_removable(objects.tenants[change.name].vms) if vm.host is not None]
            if placed:
                reasons.append(
                    f"tenant {change.name} cannot change its home site while its VMs run at "
                    f"{change.before()['site']} ({_listing(placed)}); moving a running county is a "
                    "failover or a migration, not an edit"
                )
    return reasons


# --- apply (the exec phase) ----------------------------------------------------------------------


def apply(
    session: Session,
    declaration: Declaration,
    *,
    actor: str = DEFAULT_ACTOR,
    ports: PortRanges | None = None,
) -> list[Change]:
    """Make the database match the declaration; return what changed (ports allocated included).

    ApplyRefused (nothing changed) when a change would drop something still in use. Applying the
    same declaration twice changes nothing the second time.
    """
    ports = ports or PortRanges()
    objects = _Objects.load(session)
    changes = diff(_state_of(objects), desired_state(declaration))
    reasons = refusals(changes, objects)
    if reasons:
        raise ApplyRefused(reasons)

    writer = _Writer(session, objects, actor, ports)
    done = [writer.apply(change) for change in changes]
    session.flush()
    return done


class _Writer:
    def __init__(self, session: Session, objects: _Objects, actor: str, ports: PortRanges) -> None:
        self.session = session
        self.objects = objects
        self.actor = actor
        self.ports = ports
        self.used = used_ports(session)

    def apply(self, change: Change) -> Change:
        if change.action is ChangeAction.REMOVE:
            self._remove(change)
            done = change
        elif change.action is ChangeAction.ADD:
            done = self._add(change)
        else:
            self._update(change)
            done = change
        journal.record(
            self.session,
            actor=self.actor,
            kind=change.kind,
            name=change.name,
            action=change.action,
            before=done.before() if done.action is not ChangeAction.ADD else None,
            after=done.after() if done.action is not ChangeAction.REMOVE else None,
        )
        return done

    # Adds -----------------------------------------------------------------------------------------

    def _add(self, change: Change) -> Change:
        fields = change.after()
        extra: list[FieldDiff] = []
        o = self.objects
        match change.kind:
            case ObjectKind.PROTECTION_TIER:
                row = ProtectionTierRow(name=change.name)
                o.tiers[change.name] = self._new(self._set(row, fields))
            case ObjectKind.SITE:
                o.sites[change.name] = self._new(Site(name=change.name, role=fields["role"]))
            case ObjectKind.HOST:
                host = Host(name=change.name, site=o.sites[fields["site"]])
                self._set(host, fields, skip={"site"})
                o.hosts[change.name] = self._new(host)
            case ObjectKind.SIZE_TEMPLATE:
                o.sizes[change.name] = self._new(self._set(SizeTemplate(name=change.name), fields))
            case ObjectKind.NETWORK:
                o.networks[change.name] = self._new(self._set(Network(name=change.name), fields))
            case ObjectKind.IMAGE:
                o.images[change.name] = self._new(self._set(Image(name=change.name), fields))
            case ObjectKind.TENANT:
                (port,) = self._ports(1, gateway=True)
                tenant = Tenant(
                    slug=change.name,
                    name=fields["name"],
                    status=Lifecycle.PLANNED,
                    home_site=o.sites[fields["site"]],
                    network=o.networks[fields["network"]],
                    image=o.images[fields["image"]],
                    settings=fields["settings"],
                    protection=fields["protection"],
                    gateway_port=port,
                    app_secret=secrets.token_urlsafe(32),
                )
                o.tenants[change.name] = self._new(tenant)
                extra = [FieldDiff("gateway_port", None, port)]
            case ObjectKind.VM:
                size = o.sizes[fields["size"]]
                ssh_port, app_port = self._ports(2, gateway=False)
                vm = Vm(
                    name=change.name,
                    tenant=o.tenants[fields["tenant"]],
                    role=fields["role"],
                    size=size,
                    vcpus=size.vcpus,
                    memory_mb=size.memory_mb,
                    data_disk_mb=size.data_disk_mb,
                    status=Lifecycle.PLANNED,
                    ssh_port=ssh_port,
                    app_port=app_port,
                )
                o.vms[change.name] = self._new(vm)
                extra = [FieldDiff("ssh_port", None, ssh_port), FieldDiff("app_port", None, app_port)]
        return Change(change.action, change.kind, change.name, change.diffs + tuple(extra))

    def _ports(self, count: int, *, gateway: bool) -> list[int]:
        port_range = self.ports.gateway if gateway else self.ports.guest
        allocated = allocate(count, port_range, self.used)
        self.used.update(allocated)
        return allocated

    def _new(self, obj: T) -> T:
        self.session.add(obj)
        return obj

    @staticmethod
    def _set(obj: T, fields: dict[str, Any], skip: Iterable[str] = ()) -> T:
        for key, value in fields.items():
            if key not in skip:
                setattr(obj, key, value)
        return obj

    # Changes --------------------------------------------------------------------------------------

    def _update(self, change: Change) -> None:
        after = change.after()
        o = self.objects
        match change.kind:
            case ObjectKind.PROTECTION_TIER:
                self._set(o.tiers[change.name], after)
            case ObjectKind.SITE:
                self._set(o.sites[change.name], after)
            case ObjectKind.HOST:
                host = o.hosts[change.name]
                if "site" in after:
                    host.site = o.sites[after["site"]]
                self._set(host, after, skip={"site"})
            case ObjectKind.SIZE_TEMPLATE:
                size = self._set(o.sizes[change.name], after)
                for vm in o.vms.values():
                    if vm.size is size:
                        self._follow_size(vm)
            case ObjectKind.NETWORK:
                self._set(o.networks[change.name], after)
            case ObjectKind.IMAGE:
                self._set(o.images[change.name], after)
            case ObjectKind.TENANT:
                tenant = o.tenants[change.name]
                if "site" in after:
                    tenant.home_site = o.sites[after["site"]]
                if "network" in after:
                    tenant.network = o.networks[after["network"]]
                if "image" in after:
                    tenant.image = o.images[after["image"]]
                self._set(tenant, after, skip={"site", "network", "image"})
            case ObjectKind.VM:
                vm = o.vms[change.name]
                if "size" in after:
                    vm.size = o.sizes[after["size"]]
                    self._follow_size(vm)
                self._set(vm, after, skip={"size", "tenant"})

    def _follow_size(self, vm: Vm) -> None:
        # A VM not built yet simply takes its new size; a built one keeps what it really has until
        # a resize job changes it (vm.needs_resize tells that job it is due).
        if vm.status is not Lifecycle.PLANNED:
            return
        before = {"vcpus": vm.vcpus, "memory_mb": vm.memory_mb, "data_disk_mb": vm.data_disk_mb}
        vm.vcpus, vm.memory_mb, vm.data_disk_mb = vm.size.vcpus, vm.size.memory_mb, vm.size.data_disk_mb
        after = {"vcpus": vm.vcpus, "memory_mb": vm.memory_mb, "data_disk_mb": vm.data_disk_mb}
        if before != after:
            journal.record(
                self.session, actor=self.actor, kind=ObjectKind.VM, name=vm.name, action=ChangeAction.CHANGE,
                before=before, after=after, note=f"follows size template {vm.size.name}",
            )

    # Removals -------------------------------------------------------------------------------------

    def _remove(self, change: Change) -> None:
        o = self.objects
        match change.kind:
            case ObjectKind.VM:
                self.session.delete(o.vms.pop(change.name))
            case ObjectKind.TENANT:
                self.session.flush()  # its VMs' deletions first: they refer to it
                self.session.delete(o.tenants.pop(change.name))
            case ObjectKind.HOST:
                host = o.hosts.pop(change.name)
                for vm in list(host.vms):  # only planned or retired ones remain (see refusals)
                    vm.host = None
                self.session.flush()
                self.session.delete(host)
            case ObjectKind.SITE:
                self.session.flush()
                self.session.delete(o.sites.pop(change.name))
            case ObjectKind.SIZE_TEMPLATE:
                self.session.flush()
                self.session.delete(o.sizes.pop(change.name))
            case ObjectKind.NETWORK:
                self.session.flush()
                self.session.delete(o.networks.pop(change.name))
            case ObjectKind.IMAGE:
                self.session.flush()
                self.session.delete(o.images.pop(change.name))
            case ObjectKind.PROTECTION_TIER:  # back to its defaults
                self.session.delete(o.tiers.pop(change.name))
