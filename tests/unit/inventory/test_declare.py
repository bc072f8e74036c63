"""plan / apply: idempotent, ports allocated without collision, refusals that change nothing."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import Engine, func, select

from inventory import queries
from inventory.db import make_engine, migrate, session_scope
from inventory.declare import ApplyRefused, Change, apply, plan
from inventory.enums import ChangeAction, Lifecycle, ObjectKind
from inventory.loader import load_sample, load_text
from inventory.models import ChangeLogEntry, Tenant, Vm
from inventory.ports import PortRange, PortRanges, PortsExhausted
from inventory.schemas import Declaration


def apply_text(
    engine: Engine, text: str, actor: str = "test", ports: PortRanges | None = None
) -> list[Change]:
    with session_scope(engine) as session:
        return apply(session, load_text(text), actor=actor, ports=ports)


def test_plan_then_apply_then_plan_is_empty_on_both_databases(db_url: str) -> None:
    migrate(db_url)
    engine = make_engine(db_url)
    demo = load_sample()
    try:
        with session_scope(engine) as session:
            planned = plan(session, demo)
        with session_scope(engine) as session:
            applied = apply(session, demo)
        with session_scope(engine) as session:
            assert plan(session, demo) == []
            assert apply(session, demo) == []  # a second apply changes nothing
            assert len(queries.list_tenants(session)) == 13
            assert len(queries.list_vms(session)) == 13
        # apply did what plan said (plus the ports it allocated).
        assert [(c.action, c.kind, c.name) for c in planned] == [(c.action, c.kind, c.name) for c in applied]
        assert Counter(c.kind for c in planned) == {
            ObjectKind.SITE: 2,
            ObjectKind.HOST: 6,
            ObjectKind.SIZE_TEMPLATE: 3,
            ObjectKind.NETWORK: 1,
            ObjectKind.IMAGE: 1,
            ObjectKind.TENANT: 13,
            ObjectKind.VM: 13,
        }
    finally:
        engine.dispose()


def test_plan_does_not_write(engine: Engine, small_text: str) -> None:
    with session_scope(engine) as session:
        assert plan(session, load_text(small_text))
    with session_scope(engine) as session:
        assert queries.list_sites(session) == []
        assert session.scalar(select(func.count()).select_from(ChangeLogEntry)) == 0


def test_apply_allocates_distinct_ports_and_plans_new_objects(engine: Engine, small_text: str) -> None:
    changes = apply_text(engine, small_text)
    with session_scope(engine) as session:
        vms = queries.list_vms(session)
        tenants = queries.list_tenants(session)
        guest_ports = [port for vm in vms for port in (vm.ssh_port, vm.app_port)]
        assert len(guest_ports) == len(set(guest_ports)) == 6
        assert all(22000 <= port <= 22999 for port in guest_ports if port is not None)
        gateway_ports = [tenant.gateway_port for tenant in tenants]
        assert sorted(gateway_ports) == [21000, 21001]  # type: ignore[type-var]
        assert {vm.status for vm in vms} == {tenant.status for tenant in tenants} == {Lifecycle.PLANNED}
        assert all(vm.host is None for vm in vms)  # placement is provisioning's step, not apply's
        keelung = queries.get_tenant(session, "keelung")
        assert len(keelung.app_secret) >= 32
        assert keelung.settings == {"county_name": "基隆市"}
        vm = queries.get_vm(session, "keelung-accounting-1")
        assert (vm.vcpus, vm.memory_mb, vm.data_disk_mb) == (1, 1024, 256)
    vm_add = next(c for c in changes if c.name == "keelung-accounting-1")
    assert {d.field for d in vm_add.diffs} >= {"ssh_port", "app_port"}


def test_new_vms_never_reuse_ports_already_in_use(engine: Engine, small_text: str) -> None:
    apply_text(engine, small_text)
    with session_scope(engine) as session:
        before = queries.used_ports(session)
    grown = small_text.replace(
        "      - {role: database, size: small}\n",
        "      - {role: database, size: small}\n      - {role: finance, size: small}\n",
    )
    apply_text(engine, grown)
    with session_scope(engine) as session:
        new = queries.get_vm(session, "keelung-finance-1")
        assert new.ssh_port not in before and new.app_port not in before
        assert len(queries.used_ports(session)) == len(before) + 2


def test_exhausted_port_range_changes_nothing(engine: Engine, small_text: str) -> None:
    tiny = PortRanges(guest=PortRange(42000, 42003), gateway=PortRange(41000, 41999))  # 4 ports, 6 needed
    with pytest.raises(PortsExhausted):
        apply_text(engine, small_text, ports=tiny)
    with session_scope(engine) as session:
        assert queries.list_sites(session) == []


def test_app_secret_is_generated_once(engine: Engine, small_text: str) -> None:
    apply_text(engine, small_text)
    with session_scope(engine) as session:
        secret = queries.get_tenant(session, "keelung").app_secret
    apply_text(engine, small_text.replace("name: 基隆市", "name: 基隆市政府"))
    with session_scope(engine) as session:
        tenant = queries.get_tenant(session, "keelung")
        assert tenant.name == "基隆市政府"
        assert tenant.app_secret == secret


def test_change_is_planned_field_by_field_and_journaled(engine: Engine, small_text: str) -> None:
    apply_text(engine, small_text)
    changed = small_text.replace(
        "{name: p2, vcpus: 4, memory_mb: 8192", "{name: p2, vcpus: 8, memory_mb: 8192"
    )
    with session_scope(engine) as session:
        changes = plan(session, load_text(changed))
    assert len(changes) == 1
    (change,) = changes
    assert (change.action, change.kind, change.name) == (ChangeAction.CHANGE, ObjectKind.HOST, "p2")
    assert [(d.field, d.before, d.after) for d in change.diffs] == [("vcpus", 4, 8)]
    apply_text(engine, changed, actor="alice")
    with session_scope(engine) as session:
        entry = session.scalars(select(ChangeLogEntry).order_by(ChangeLogEntry.id.desc())).first()
        assert entry is not None
        assert (entry.actor, entry.object_kind, entry.object_name) == ("alice", ObjectKind.HOST, "p2")
        assert (entry.before, entry.after) == ({"vcpus": 4}, {"vcpus": 8})


def test_planned_vm_follows_new_size_built_one_waits_for_resize(engine: Engine, small_text: str) -> None:
    apply_text(engine, small_text)
    with session_scope(engine) as session:
        queries.set_status(queries.get_vm(session, "penghu-accounting-1"), Lifecycle.ACTIVE, actor="test")
    apply_text(
        engine, small_text.replace("{role: accounting, size: small}", "{role: accounting, size: medium}")
    )
    with session_scope(engine) as session:
        planned = queries.get_vm(session, "keelung-accounting-1")
        assert (planned.size.name, planned.vcpus, planned.memory_mb) == ("medium", 2, 2048)
        assert not planned.needs_resize
        built = queries.get_vm(session, "penghu-accounting-1")
        assert (built.size.name, built.vcpus, built.memory_mb) == ("medium", 1, 1024)
        assert built.needs_resize


def _without_keelung(text: str) -> str:
    start = text.index("  - slug: keelung")
    end = text.index("  - slug: penghu")
    return text[:start] + text[end:]


def test_removing_tenant_with_running_vms_is_refused_and_changes_nothing(
    engine: Engine, small_text: str
) -> None:
    apply_text(engine, small_text)
    with session_scope(engine) as session:
        queries.set_status(queries.get_vm(session, "keelung-accounting-1"), Lifecycle.ACTIVE, actor="test")
        journal_before = session.scalar(select(func.count()).select_from(ChangeLogEntry))
    # Also change something else: a refused apply must not apply that either.
    text = _without_keelung(small_text).replace("name: 澎湖縣", "name: 澎湖")
    with pytest.raises(ApplyRefused) as refused:
        apply_text(engine, text)
    message = str(refused.value)
    assert "tenant keelung still has 1 VM(s) that are not retired (keelung-accounting-1: active)" in message
    assert "countycloud tenant retire keelung" in message
    with session_scope(engine) as session:
        assert queries.get_tenant(session, "keelung").vms
        assert queries.get_tenant(session, "penghu").name == "澎湖縣"
        assert session.scalar(select(func.count()).select_from(ChangeLogEntry)) == journal_before


def test_removing_a_tenant_whose_vms_are_retired_or_never_built(engine: Engine, small_text: str) -> None:
    apply_text(engine, small_text)
    with session_scope(engine) as session:
        queries.set_status(queries.get_vm(session, "keelung-accounting-1"), Lifecycle.RETIRED, actor="test")
        freed = {queries.get_tenant(session, "keelung").gateway_port}
    changes = apply_text(engine, _without_keelung(small_text))
    assert [(c.action, c.kind, c.name) for c in changes] == [
        (ChangeAction.REMOVE, ObjectKind.VM, "keelung-accounting-1"),
        (ChangeAction.REMOVE, ObjectKind.VM, "keelung-database-1"),
        (ChangeAction.REMOVE, ObjectKind.TENANT, "keelung"),
    ]
    with session_scope(engine) as session:
        with pytest.raises(queries.TenantNotFound):
            queries.get_tenant(session, "keelung")
        assert session.scalar(select(func.count()).select_from(Vm)) == 1
        assert not freed & queries.used_ports(session)
        removed = session.scalars(select(ChangeLogEntry).where(ChangeLogEntry.object_name == "keelung")).all()
        assert [entry.action for entry in removed] == [ChangeAction.ADD, ChangeAction.REMOVE]
        assert removed[-1].before is not None and removed[-1].before["name"] == "基隆市"


def test_removing_one_active_vm_is_refused(engine: Engine, small_text: str) -> None:
    apply_text(engine, small_text)
    with session_scope(engine) as session:
        queries.set_status(queries.get_vm(session, "keelung-database-1"), Lifecycle.ACTIVE, actor="test")
    with pytest.raises(ApplyRefused, match="VM keelung-database-1 is active; retire it"):
        apply_text(engine, small_text.replace("      - {role: database, size: small}\n", ""))


def test_removing_a_host_that_runs_vms_is_refused(engine: Engine, small_text: str) -> None:
    apply_text(engine, small_text)
    with session_scope(engine) as session:
        vm = queries.get_vm(session, "keelung-accounting-1")
        host = queries.place_vm(session, vm)
        queries.set_status(vm, Lifecycle.ACTIVE, actor="test")
        name = host.name
    text = small_text.replace(f"      - {{name: {name}, vcpus: 4, memory_mb: 8192, disk_gb: 100}}\n", "")
    with pytest.raises(ApplyRefused, match=f"host {name} cannot be removed: it runs 1 VM"):
        apply_text(engine, text)


def test_moving_a_tenant_with_placed_vms_to_another_site_is_refused(engine: Engine, small_text: str) -> None:
    apply_text(engine, small_text)
    with session_scope(engine) as session:
        vm = queries.get_vm(session, "penghu-accounting-1")
        queries.place_vm(session, vm)
        queries.set_status(vm, Lifecycle.ACTIVE, actor="test")
    moved = small_text[: small_text.index("  - slug: penghu")] + small_text[
        small_text.index("  - slug: penghu") :
    ].replace("site: primary", "site: secondary")
    with pytest.raises(ApplyRefused, match="tenant penghu cannot change its home site"):
        apply_text(engine, moved)


def test_production_inventory_places_all_54_vms_spread_over_the_primary_hosts(engine: Engine) -> None:
    production: Declaration = load_sample("production.yaml")
    with session_scope(engine) as session:
        apply(session, production)
    with session_scope(engine) as session:
        for vm in queries.list_vms(session):
            queries.place_vm(session, vm)
    with session_scope(engine) as session:
        vms = queries.list_vms(session)
        assert len(vms) == 54
        assert {vm.host.site.name for vm in vms if vm.host} == {"primary"}
        loads = {
            load.name: load.used_vcpus
            for load in queries.host_loads(session, queries.get_site(session, "primary"))
        }
        assert sum(loads.values()) == sum(vm.vcpus for vm in vms)
        assert max(loads.values()) - min(loads.values()) <= 4  # spread, not stacked
        assert session.scalar(select(func.count()).select_from(Tenant)) == 13
        assert plan(session, production) == []


def test_shrinking_a_host_below_what_its_vms_take_is_refused(engine: Engine, small_text: str) -> None:
    apply_text(engine, small_text)
    with session_scope(engine) as session:
        for vm in queries.list_vms(session):
            queries.place_vm(session, vm, queries.get_site(session, "primary"))
        p1_used = sum(vm.memory_mb for vm in queries.get_host(session, "p1").vms)
    assert p1_used == 2048
    # p1 would offer 1024 MB × 1.5 = 1536 MB of memory, less than the 2048 MB its two VMs take.
    shrunk = small_text.replace(
        "{name: p1, vcpus: 4, memory_mb: 8192", "{name: p1, vcpus: 4, memory_mb: 1024"
    )
    with pytest.raises(
        ApplyRefused, match="host p1 would offer 1536 MB of memory but its VMs already take 2048"
    ):
        apply_text(engine, shrunk)
    # Shrinking while staying above the use is fine.
    apply_text(
        engine,
        small_text.replace("{name: p1, vcpus: 4, memory_mb: 8192", "{name: p1, vcpus: 4, memory_mb: 2048"),
    )
