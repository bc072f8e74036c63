"""The public API other packages use: lookups with helpful misses, journaled writes, placement."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select

from inventory import journal, queries
from inventory.db import session_scope
from inventory.declare import apply
from inventory.enums import ChangeAction, Lifecycle, ObjectKind, SiteStatus
from inventory.loader import load_text
from inventory.models import ChangeLogEntry
from inventory.placement import NoHostFits


@pytest.fixture
def applied(engine: Engine, small_text: str) -> Engine:
    with session_scope(engine) as session:
        apply(session, load_text(small_text))
    return engine


def test_get_tenant_miss_suggests_close_slugs(applied: Engine) -> None:
    with session_scope(applied) as session:
        with pytest.raises(queries.TenantNotFound, match="no tenant 'keelong'; did you mean 'keelung'"):
            queries.get_tenant(session, "keelong")
        with pytest.raises(queries.TenantNotFound, match=r"known: keelung, penghu"):
            queries.get_tenant(session, "taipei")


def test_get_tenant_on_an_empty_inventory_says_to_apply(engine: Engine) -> None:
    with session_scope(engine) as session, pytest.raises(queries.TenantNotFound, match="apply a declaration"):
        queries.get_tenant(session, "keelung")


def test_set_status_is_journaled_with_actor_and_note(applied: Engine) -> None:
    with session_scope(applied) as session:
        tenant = queries.get_tenant(session, "keelung")
        queries.set_status(tenant, Lifecycle.PROVISIONING, actor="job:42", note="provision started")
        queries.set_status(tenant, Lifecycle.PROVISIONING, actor="job:42")  # no change, no entry
    with session_scope(applied) as session:
        assert queries.get_tenant(session, "keelung").status is Lifecycle.PROVISIONING
        (entry,) = journal.history(session, ObjectKind.TENANT, "keelung", limit=1)
        assert (entry.actor, entry.action, entry.note) == ("job:42", ChangeAction.CHANGE, "provision started")
        assert (entry.before, entry.after) == ({"status": "planned"}, {"status": "provisioning"})
        entries = session.scalars(select(ChangeLogEntry).where(ChangeLogEntry.actor == "job:42")).all()
        assert len(entries) == 1


def test_set_status_refuses_a_status_of_the_wrong_kind(applied: Engine) -> None:
    with session_scope(applied) as session:
        with pytest.raises(TypeError):
            queries.set_status(queries.get_site(session, "primary"), Lifecycle.ACTIVE, actor="test")
        queries.set_status(queries.get_site(session, "primary"), SiteStatus.DOWN, actor="dr")
        assert queries.get_site(session, "primary").status is SiteStatus.DOWN


def test_place_vm_spreads_and_records_the_host(applied: Engine) -> None:
    with session_scope(applied) as session:
        hosts = [queries.place_vm(session, vm).name for vm in queries.list_vms(session)]
        assert sorted(hosts) == ["p1", "p1", "p2"]  # 3 VMs over 2 equal hosts at the home site
        vm = queries.get_vm(session, "keelung-accounting-1")
        assert queries.place_vm(session, vm) is vm.host  # placing again keeps it where it is
    with session_scope(applied) as session:
        (entry,) = journal.history(session, ObjectKind.VM, "keelung-accounting-1", limit=1)
        assert entry.after is not None and entry.after["host"] in {"p1", "p2"}
        assert queries.list_vms(session, site=queries.get_site(session, "secondary")) == []


def test_place_vm_at_another_site(applied: Engine) -> None:
    with session_scope(applied) as session:
        vm = queries.get_vm(session, "penghu-accounting-1")
        queries.place_vm(session, vm)
        host = queries.place_vm(session, vm, queries.get_site(session, "secondary"))
        assert host.name == "s1"


def test_place_vm_when_nothing_fits_explains_and_records_nothing(applied: Engine) -> None:
    with session_scope(applied) as session:
        vm = queries.get_vm(session, "keelung-accounting-1")
        vm.memory_mb = 20000  # more than 8192 MB × 1.5 on any host
        with pytest.raises(NoHostFits) as error:
            queries.place_vm(session, vm)
        assert "host p1: needs 20000 MB, 12288 MB free of 12288 MB" in str(error.value)
        assert vm.host is None


def test_retired_vms_release_their_capacity(applied: Engine) -> None:
    with session_scope(applied) as session:
        vm = queries.get_vm(session, "keelung-accounting-1")
        host = queries.place_vm(session, vm)
        used = {load.name: load.used_vcpus for load in queries.host_loads(session, host.site)}
        assert used[host.name] == 1
        queries.set_status(vm, Lifecycle.RETIRED, actor="test")
        used = {load.name: load.used_vcpus for load in queries.host_loads(session, host.site)}
        assert used[host.name] == 0
        queries.release_host(vm, actor="test", note="retired")
        assert vm.host is None


def test_record_identity_and_size(applied: Engine) -> None:
    with session_scope(applied) as session:
        vm = queries.get_vm(session, "keelung-accounting-1")
        queries.record_vm_identity(vm, "0b7f0d2e-8d54-4c3b-9f7e-3f1f2a6c9d10", "52:54:00:12:34:56")
        queries.record_vm_size(vm, 2, 2048, note="live resize")
    with session_scope(applied) as session:
        vm = queries.get_vm(session, "keelung-accounting-1")
        assert (vm.uuid, vm.mac, vm.vcpus, vm.memory_mb) == (
            "0b7f0d2e-8d54-4c3b-9f7e-3f1f2a6c9d10", "52:54:00:12:34:56", 2, 2048,
        )
        assert vm.needs_resize  # declared small (1 vCPU), really 2: the declaration wins at the next resize
        notes = [entry.note for entry in journal.history(session, ObjectKind.VM, vm.name)]
        assert "live resize" in notes


def test_used_ports_covers_guests_and_gateways(applied: Engine) -> None:
    with session_scope(applied) as session:
        used = queries.used_ports(session)
        expected = {p for vm in queries.list_vms(session) for p in (vm.ssh_port, vm.app_port) if p}
        expected |= {t.gateway_port for t in queries.list_tenants(session) if t.gateway_port}
        assert used == expected
        assert len(used) == 8  # 3 VMs × 2 + 2 tenants
