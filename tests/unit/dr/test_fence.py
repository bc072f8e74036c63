"""Fencing on plain data and on a real inventory (SQLite and PostgreSQL) with a fake hypervisor and
gateway; the fence ledger's table (concurrent writers, the import of the older file)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from dr import fence, records
from dr.records import RunningVm
from inventory import queries
from inventory.db import Base, make_engine, migrate, session_scope
from inventory.declare import apply
from inventory.enums import Lifecycle
from inventory.loader import load_text
from provisioning import fencing
from provisioning import records as provisioning_records
from provisioning.fencing import FencedCopy, FenceHow
from provisioning.sites import site_paths

DECLARATION = """\
sites:
  - name: primary
    role: primary
    hosts: [{name: p1, vcpus: 8, memory_mb: 16384, disk_gb: 100}]
  - name: secondary
    role: secondary
    hosts: [{name: s1, vcpus: 8, memory_mb: 16384, disk_gb: 100}]
size_templates:
  - {name: small, vcpus: 1, memory_mb: 1024, data_disk_mb: 64}
networks:
  - {name: tenant-user, kind: user}
images:
  - {name: bookworm-tenant}
tenants:
  - {slug: keelung, name: 基隆市, site: primary, network: tenant-user, image: bookworm-tenant,
     vms: [{role: accounting, size: small}]}
  - {slug: penghu, name: 澎湖縣, site: primary, network: tenant-user, image: bookworm-tenant,
     vms: [{role: accounting, size: small}]}
  - {slug: kinmen, name: 金門縣, site: secondary, network: tenant-user, image: bookworm-tenant,
     vms: [{role: accounting, size: small}]}
"""


@dataclass
class FakeHypervisor:
    undefined: list[str] = field(default_factory=list)

    def __enter__(self) -> FakeHypervisor:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def undefine(self, name: str) -> None:
        self.undefined.append(name)


@dataclass
class FakePlatform:
    engine: Engine
    state_dir: Path
    hv: FakeHypervisor = field(default_factory=FakeHypervisor)

    def site(self, name: str) -> Any:
        return site_paths(self.state_dir, name)

    def hypervisor(self, _site: str) -> FakeHypervisor:
        return self.hv


def declared_and_active(db_url: str, app_port: int | None = None) -> Engine:
    """The declaration migrated in, every county provisioned and active where it is declared (each
    VM's app on `app_port` + its number, when given)."""
    migrate(db_url)
    engine = make_engine(db_url)
    with session_scope(engine) as session:
        apply(session, load_text(DECLARATION))
    with session_scope(engine) as session:
        for number, tenant in enumerate(queries.list_tenants(session)):
            for vm in queries.vms_of(tenant):
                queries.place_vm(session, vm)
                queries.record_vm_identity(vm, f"00000000-0000-4000-8000-00000000000{number}",
                                           f"52:54:00:00:00:0{number}")
                if app_port is not None:
                    vm.app_port = app_port + number
                queries.set_status(vm, Lifecycle.ACTIVE, actor="test")
            queries.set_status(tenant, Lifecycle.ACTIVE, actor="test")
    return engine


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = declared_and_active(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def platform(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakePlatform:
    rendered: list[Any] = []

    def point_address(_platform: object, wanted: Any) -> bool:
        rendered.append(wanted)
        return True

    monkeypatch.setattr(fence.vm, "point_address", point_address)
    fake = FakePlatform(engine, tmp_path / "state")
    fake.rendered = rendered  # type: ignore[attr-defined]
    return fake


def backends(engine: Engine, county: str) -> list[str]:
    """The county's servers that may be sent a request (a fenced VM's stays in the config, disabled)."""
    [frontend] = [f for f in provisioning_records.frontends(engine) if f.tenant == county]
    return [backend.name for backend in frontend.backends if backend.enabled]


def test_decide_destroys_when_the_daemon_answers_and_marks_when_it_is_silent() -> None:
    vms = [RunningVm("penghu", "penghu-accounting-1", "u2", Lifecycle.ACTIVE),
           RunningVm("keelung", "keelung-accounting-1", "u1", Lifecycle.ACTIVE)]
    assert [(d.vm, d.how) for d in fence.decide(vms, daemon_answers=True)] == [
        ("keelung-accounting-1", FenceHow.DESTROYED), ("penghu-accounting-1", FenceHow.DESTROYED)]
    assert {d.how for d in fence.decide(vms, daemon_answers=False)} == {FenceHow.MARKED}
    assert fence.decide([], daemon_answers=False) == []


def test_running_at_lists_the_counties_running_at_the_site(engine: Engine) -> None:
    assert sorted(vm.tenant for vm in records.running_at(engine, "primary")) == ["keelung", "penghu"]
    assert [vm.tenant for vm in records.running_at(engine, "secondary")] == ["kinmen"]


def test_a_silent_site_is_fenced_by_marking_and_leaves_the_addresses(platform: FakePlatform) -> None:
    engine = platform.engine
    assert backends(engine, "keelung") == ["keelung-accounting-1"]
    running = records.running_at(engine, "primary")
    done = fence.fence(platform, "primary", running, job_id="failover-1",  # type: ignore[arg-type]
                       daemon_answers=lambda: False, log=lambda _line: None)
    assert done.daemon_answered is False and {vm.how for vm in done.vms} == {FenceHow.MARKED}
    assert platform.hv.undefined == [], "nothing is asked of a silent daemon"
    assert backends(engine, "keelung") == [] and backends(engine, "penghu") == []
    assert backends(engine, "kinmen") == ["kinmen-accounting-1"], "the other site's counties untouched"
    assert platform.rendered, "the addresses were rendered again"  # type: ignore[attr-defined]
    with session_scope(engine) as session:
        assert queries.get_vm(session, "keelung-accounting-1").status is Lifecycle.FENCED
    assert [(c.vm, c.how, c.job) for c in fencing.fenced(platform, "primary")] == [
        ("keelung-accounting-1", FenceHow.MARKED, "failover-1"),
        ("penghu-accounting-1", FenceHow.MARKED, "failover-1")]
    # A fenced copy never starts again at that site: provisioning asks the ledger first.
    with pytest.raises(fencing.FencedVm, match="fenced"):
        fencing.refuse_if_fenced(platform, "primary", "keelung-accounting-1")
    fencing.refuse_if_fenced(platform, "secondary", "keelung-accounting-1")


def test_fencing_again_is_idempotent(platform: FakePlatform) -> None:
    for _ in range(2):
        running = records.running_at(platform.engine, "primary")
        fence.fence(platform, "primary", running, daemon_answers=lambda: False,  # type: ignore[arg-type]
                    log=lambda _line: None)
    assert len(fencing.fenced(platform, "primary")) == 2


def test_an_answering_site_has_its_vms_destroyed_there(platform: FakePlatform) -> None:
    running = [vm for vm in records.running_at(platform.engine, "primary") if vm.tenant == "keelung"]
    done = fence.fence(platform, "primary", running, daemon_answers=lambda: True,  # type: ignore[arg-type]
                       log=lambda _line: None)
    assert done.daemon_answered is True
    assert platform.hv.undefined == ["keelung-accounting-1"]
    assert [c.how for c in fencing.fenced(platform, "primary")] == [FenceHow.DESTROYED]
    assert backends(platform.engine, "keelung") == []
    assert backends(platform.engine, "penghu") == ["penghu-accounting-1"]


def test_unfence_removes_the_copies_at_the_returning_site_and_forgets_them(platform: FakePlatform) -> None:
    running = records.running_at(platform.engine, "primary")
    fence.fence(platform, "primary", running, daemon_answers=lambda: False,  # type: ignore[arg-type]
                log=lambda _line: None)
    removed = fence.unfence(platform, "primary", ["keelung-accounting-1"],  # type: ignore[arg-type]
                            log=lambda _line: None)
    assert removed == ["keelung-accounting-1"] and platform.hv.undefined == ["keelung-accounting-1"]
    assert [c.vm for c in fencing.fenced(platform, "primary")] == ["penghu-accounting-1"]


def test_move_county_records_where_it_runs_and_readds_its_backend(platform: FakePlatform) -> None:
    engine = platform.engine
    fence.fence(platform, "primary", records.running_at(engine, "primary"),  # type: ignore[arg-type]
                daemon_answers=lambda: False, log=lambda _line: None)
    records.move_county(engine, "keelung", "secondary", note="test")
    records.move_county(engine, "keelung", "secondary", note="test")  # idempotent
    assert records.current_site(engine, "keelung") == "secondary"
    assert backends(engine, "keelung") == ["keelung-accounting-1"]
    assert [vm.tenant for vm in records.running_at(engine, "primary")] == ["penghu"]
    with session_scope(engine) as session:
        tenant = queries.get_tenant(session, "keelung")
        assert tenant.home_site.name == "primary" and tenant.running_site is not None
        assert queries.vms_of(tenant)[0].host.site.name == "secondary"  # type: ignore[union-attr]
    records.move_county(engine, "keelung", "primary", note="home")
    with session_scope(engine) as session:
        assert queries.get_tenant(session, "keelung").running_site is None


def test_a_county_retired_while_failed_over_comes_back_at_its_home(engine: Engine) -> None:
    """Retired while running at the secondary, a county runs nowhere: created again it is at its home,
    and its backup rounds take the home's pair (kept, a re-created county's rounds wrote the
    secondary's repository twice and their two forgets locked each other out: a bench, 2026-12-05)."""
    from provisioning import records as provisioning_records

    records.move_county(engine, "keelung", "secondary", note="failover")
    provisioning_records.mark_tenant(engine, "keelung", Lifecycle.RETIRING, with_vms=False)
    assert records.current_site(engine, "keelung") == "secondary"  # still there while it retires
    provisioning_records.mark_tenant(engine, "keelung", Lifecycle.RETIRED, with_vms=True, release_hosts=True)
    assert records.current_site(engine, "keelung") == "primary"
    with session_scope(engine) as session:
        assert queries.get_tenant(session, "keelung").running_site is None


def copy_of(vm: str, *, site: str = "primary", job: str = "j", how: FenceHow = FenceHow.MARKED) -> FencedCopy:
    return FencedCopy(site=site, vm=vm, uuid=f"uuid-{vm}", how=how, at=1_796_400_000.5, job=job)


def test_the_ledger_keeps_each_copys_first_entry_and_forgets_a_cleared_one(platform: FakePlatform) -> None:
    assert fencing.record(platform, copy_of("a", job="first")) is True
    assert fencing.record(platform, copy_of("a", job="second", how=FenceHow.DESTROYED)) is False
    assert fencing.record(platform, copy_of("a", site="secondary")) is True
    assert fencing.fenced(platform) == [copy_of("a", job="first"), copy_of("a", site="secondary")]
    assert fencing.is_fenced(platform, "primary", "a") and not fencing.is_fenced(platform, "primary", "b")
    assert fencing.clear(platform, "primary", "a") is True
    assert fencing.clear(platform, "primary", "a") is False
    assert [c.site for c in fencing.fenced(platform)] == ["secondary"]


def test_concurrent_writers_lose_no_entry(platform: FakePlatform) -> None:
    """Many threads (each its own connection) record at once, every VM twice: every entry is there,
    each added exactly once. The file ledger lost entries when two processes wrote it at once."""
    names = [f"vm-{number:02d}" for number in range(24)]
    added: list[bool] = []

    def write(batch: list[str]) -> None:
        for name in batch:
            added.append(fencing.record(platform, copy_of(name, job=threading.current_thread().name)))

    threads = [threading.Thread(target=write, args=(names[start::4] * 2,), name=f"w{start}")
               for start in range(4)]
    threads += [threading.Thread(target=write, args=(list(reversed(names[start::4])),), name=f"r{start}")
                for start in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(c.vm for c in fencing.fenced(platform, "primary")) == names
    assert added.count(True) == len(names) and len(added) == 3 * len(names)


def test_a_control_plane_on_the_databases_copy_knows_what_is_fenced(platform: FakePlatform,
                                                                   tmp_path: Path) -> None:
    """The ledger travels with the platform database: another state folder (a control plane started
    at the other site) over the same database refuses the fenced copy."""
    fence.fence(platform, "primary", records.running_at(platform.engine, "primary"),  # type: ignore[arg-type]
                daemon_answers=lambda: False, log=lambda _line: None)
    elsewhere = FakePlatform(platform.engine, tmp_path / "elsewhere")
    with pytest.raises(fencing.FencedVm):
        fencing.refuse_if_fenced(elsewhere, "primary", "keelung-accounting-1")
    assert not (platform.state_dir / "dr" / fencing.LEDGER_NAME).exists(), "no file written any more"


def test_an_older_ledger_file_is_imported_once(platform: FakePlatform) -> None:
    fencing.record(platform, copy_of("kept", job="table"))
    path = fencing.ledger_path(platform.state_dir)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({
        "primary": {"kept": {"uuid": "u", "how": "destroyed", "at": 1.0, "job": "file"},
                    "old": {"uuid": "u-old", "how": "marked", "at": 2.0, "job": "file"}},
        "secondary": {"other": {"uuid": "u2", "how": "destroyed", "at": 3.0}}}))
    with pytest.raises(fencing.FencedVm):
        fencing.refuse_if_fenced(platform, "primary", "old")
    assert not path.exists() and path.with_name(path.name + ".imported").exists()
    assert [(c.site, c.vm, c.how, c.job) for c in fencing.fenced(platform)] == [
        ("primary", "kept", FenceHow.MARKED, "table"),  # the table's entry wins
        ("primary", "old", FenceHow.MARKED, "file"),
        ("secondary", "other", FenceHow.DESTROYED, "")]
    assert fencing.clear(platform, "primary", "old") is True
    assert [c.vm for c in fencing.fenced(platform, "primary")] == ["kept"], "not imported a second time"


def test_the_migration_builds_the_ledgers_table(engine: Engine) -> None:
    with engine.connect() as connection:
        diffs = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert [d for d in diffs if "fenced_copies" in repr(d)] == []


def test_the_ledger_travels_in_the_platform_databases_backup_copy(tmp_path: Path) -> None:
    """The backup of the platform database (backup.platformdb's consistent SQLite copy) holds the
    ledger: a control plane started from the copy, with a state folder of its own, refuses the copy."""
    from backup import platformdb

    url = f"sqlite:///{tmp_path / 'live.db'}"
    migrate(url)
    live = make_engine(url)
    try:
        fencing.record(FakePlatform(live, tmp_path / "primary-state"), copy_of("keelung-accounting-1"))
        platformdb.sqlite_copy(tmp_path / "live.db", tmp_path / "restored.db")
    finally:
        live.dispose()
    restored = make_engine(f"sqlite:///{tmp_path / 'restored.db'}")
    try:
        elsewhere = FakePlatform(restored, tmp_path / "secondary-state")
        with pytest.raises(fencing.FencedVm):
            fencing.refuse_if_fenced(elsewhere, "primary", "keelung-accounting-1")
        assert [c.vm for c in fencing.fenced(elsewhere)] == ["keelung-accounting-1"]
    finally:
        restored.dispose()
