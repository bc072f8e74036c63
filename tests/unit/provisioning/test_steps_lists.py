"""provisioning.steps: the step lists of provision / resize / retire (names and order, with and without
--cold) over a real migrated inventory (SQLite, demo sample applied), the `check` steps' refusals,
the cold/template and golden-image pinning logic, and start/teardown against libvirt's test driver."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine

from inventory import queries
from inventory.db import make_engine, migrate, session_scope
from inventory.declare import apply
from inventory.enums import Lifecycle
from inventory.jobs import Step, StepContext, StepResult
from inventory.loader import load_sample, load_text
from inventory.placement import NoHostFits
from inventory.ports import PortRange, PortRanges
from inventory.queries import TenantNotFound
from provisioning import images, records, sites, steps
from provisioning.domain_xml import render_domain_xml
from provisioning.errors import ProvisioningError
from provisioning.hypervisor import DomainState, Hypervisor
from provisioning.images import GoldenImage
from provisioning.jobdata import BringUpChoice, GoldenPinned, Placed
from provisioning.platform import Platform
from provisioning.spec import DomainType
from provisioning.vm import BringUp
from tests.unit.provisioning.specs import keelung_spec

VM = "keelung-accounting-1"
PER_VM = ["disks", "start", "identity", "resize", "app-ready"]

TWO_VMS = """\
sites:
  - name: primary
    role: primary
    hosts:
      - {name: p1, vcpus: 4, memory_mb: 8192, disk_gb: 100}
  - name: secondary
    role: secondary
    hosts:
      - {name: s1, vcpus: 4, memory_mb: 8192, disk_gb: 100}
size_templates:
  - {name: small, vcpus: 1, memory_mb: 1024, data_disk_mb: 256}
  - {name: huge, vcpus: 8, memory_mb: 32768, data_disk_mb: 256}
networks:
  - {name: tenant-user, kind: user}
images:
  - {name: bookworm-tenant}
tenants:
  - slug: keelung
    name: 基隆市
    site: primary
    network: tenant-user
    image: bookworm-tenant
    vms:
      - {role: database, size: small}
      - {role: accounting, size: small}
  - slug: penghu
    name: 澎湖縣
    site: primary
    network: tenant-user
    image: bookworm-tenant
    vms:
      - {role: accounting, size: huge}
"""


# Ports of their own, below the ephemeral range and away from the ranges a demo on this machine serves
# (the check step refuses ports that another process holds).
PORTS = PortRanges(guest=PortRange(23100, 23399, "guest ports"),
                   gateway=PortRange(23000, 23099, "gateway ports"))


def _database(path: Path, text: str | None) -> Path:
    url = f"sqlite:///{path}"
    migrate(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        apply(session, load_sample() if text is None else load_text(text), actor="test", ports=PORTS)
    engine.dispose()
    return path


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrated once per module with the demo sample applied; each test works on its own copy."""
    return _database(tmp_path_factory.mktemp("inventory") / "demo.db", None)


@pytest.fixture(scope="module")
def two_vms_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _database(tmp_path_factory.mktemp("inventory") / "two.db", TWO_VMS)


def _engine(source: Path, tmp_path: Path) -> Iterator[Engine]:
    copy = tmp_path / "inventory.db"
    shutil.copy(source, copy)
    engine = make_engine(f"sqlite:///{copy}")
    yield engine
    engine.dispose()


@pytest.fixture
def engine(demo_db: Path, tmp_path: Path) -> Iterator[Engine]:
    yield from _engine(demo_db, tmp_path)


@pytest.fixture
def two_engine(two_vms_db: Path, tmp_path: Path) -> Iterator[Engine]:
    yield from _engine(two_vms_db, tmp_path)


@pytest.fixture
def platform(engine: Engine, tmp_path: Path) -> Platform:
    # A state folder where no site daemon runs: every site is down.
    return Platform(engine=engine, state_dir=tmp_path / "state", cache_dir=tmp_path / "cache",
                    domain_type=DomainType.QEMU)


class DriverPlatform(Platform):
    """Every site's libvirt is the in-memory test driver."""

    def hypervisor(self, site: str) -> Hypervisor:
        return Hypervisor(site, "test:///default")


@pytest.fixture
def up_platform(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    monkeypatch.setattr(sites, "state", lambda _site: sites.SiteState.UP)
    platform = DriverPlatform(engine=engine, state_dir=tmp_path / "state", cache_dir=tmp_path / "cache",
                                  domain_type=DomainType.QEMU)
    with Hypervisor("primary", "test:///default") as hv:  # keeps the shared test driver alive
        before = set(hv.names())
        yield platform
        for name in set(hv.names()) - before:
            hv.undefine(name)


def ctx(args: dict[str, Any] | None = None, previous: dict[str, str | None] | None = None,
        artifacts: Path = Path("/nonexistent")) -> StepContext:
    return StepContext(job_id="job-1", args=args or {}, artifacts=artifacts, previous=previous or {})


def names(step_list: list[Step]) -> list[str]:
    return [step.name for step in step_list]


def run(step_list: list[Step], name: str, context: StepContext | None = None) -> str | StepResult | None:
    [step] = [step for step in step_list if step.name == name]
    return step.run(context or ctx())


# --- step lists --------------------------------------------------------------------------------------

def test_provision_clones_a_template_by_default(platform: Platform) -> None:
    assert names(steps.provision_steps({"tenant": "keelung"}, platform)) == [
        "check", "place", "golden-image", "template",
        *(f"{VM}:{what}" for what in PER_VM),
        "address", "health", "configure", "record",
    ]


def test_provision_cold_has_the_same_steps_and_its_template_step_chooses_a_boot(platform: Platform) -> None:
    listed = names(steps.provision_steps({"tenant": "keelung", "cold": True}, platform))
    assert listed == names(steps.provision_steps({"tenant": "keelung"}, platform))
    run(steps.provision_steps({"tenant": "keelung"}, platform), "place")
    placed = run(steps.provision_steps({"tenant": "keelung"}, platform), "place")
    assert isinstance(placed, Placed)
    choice = run(steps.provision_steps({"tenant": "keelung", "cold": True}, platform), "template",
                 ctx(previous={"place": placed.model_dump(mode="json")}))
    assert choice == BringUpChoice(mode=BringUp.COLD, site="primary", reason="asked for (--cold)")


def test_every_step_has_a_unique_name_and_a_description(platform: Platform) -> None:
    for step_list in (steps.provision_steps({"tenant": "keelung"}, platform),
                      steps.retire_steps({"tenant": "keelung"}, platform),
                      steps.resize_steps({"vm": VM, "vcpus": 2, "memory_mb": 2048}, platform)):
        assert len(set(names(step_list))) == len(step_list)
        assert all(step.description for step in step_list)


def test_each_vm_gets_its_steps_in_name_order(two_engine: Engine, tmp_path: Path) -> None:
    platform = Platform(engine=two_engine, state_dir=tmp_path / "state", cache_dir=tmp_path / "cache",
                        domain_type=DomainType.QEMU)
    listed = names(steps.provision_steps({"tenant": "keelung", "cold": True}, platform))
    vm_steps = [name for name in listed if ":" in name]
    assert vm_steps == [f"keelung-accounting-1:{what}" for what in PER_VM] + [
        f"keelung-database-1:{what}" for what in PER_VM]
    retire = names(steps.retire_steps({"tenant": "keelung"}, platform))
    assert retire == ["check", "mark", "keelung-accounting-1:teardown", "keelung-database-1:teardown",
                      "fenced-copies", "record", "address"]


def test_resize_is_check_then_resize(platform: Platform) -> None:
    listed = names(steps.resize_steps({"vm": VM, "vcpus": 2, "memory_mb": 2048}, platform))
    assert listed == ["check", "resize"]


def test_retire_steps(platform: Platform) -> None:
    assert names(steps.retire_steps({"tenant": "keelung", "purge": True}, platform)) == [
        "check", "mark", f"{VM}:teardown", "fenced-copies", "record", "address"]


def test_unknown_tenant_is_refused_naming_close_matches(platform: Platform) -> None:
    with pytest.raises(TenantNotFound, match="no tenant 'keelungg'; did you mean 'keelung'"):
        steps.provision_steps({"tenant": "keelungg"}, platform)
    with pytest.raises(TenantNotFound, match="no tenant 'nosuch'"):
        steps.retire_steps({"tenant": "nosuch"}, platform)


# --- the check step's refusals ----------------------------------------------------------------------

def _check(platform: Platform, tenant: str = "keelung") -> str | None:
    return run(steps.provision_steps({"tenant": tenant}, platform), "check")


def test_check_refuses_a_tenant_being_retired(platform: Platform) -> None:
    with session_scope(platform.engine) as session:
        queries.set_status(queries.get_tenant(session, "keelung"), Lifecycle.RETIRING, actor="test")
    with pytest.raises(ProvisioningError) as failure:
        _check(platform)
    assert str(failure.value) == ("tenant keelung is being retired; finish that first "
                                  "(`countycloud tenant retire keelung`)")


def test_check_refuses_when_the_site_is_down_and_decides_nothing(platform: Platform) -> None:
    with pytest.raises(ProvisioningError) as failure:
        _check(platform)
    assert str(failure.value) == "site primary is down; start it with `countycloud site start primary`"
    with session_scope(platform.engine) as session:
        tenant = queries.get_tenant(session, "keelung")
        assert tenant.status is Lifecycle.PLANNED
        assert [vm.host for vm in tenant.vms] == [None]  # the trial placement was rolled back


def test_check_refuses_a_vm_without_ports(platform: Platform) -> None:
    with session_scope(platform.engine) as session:
        queries.get_vm(session, VM).ssh_port = None
    with pytest.raises(ProvisioningError, match=f"^{VM} has no ports; apply the inventory first$"):
        _check(platform)


def test_check_refuses_a_tenant_without_an_address_port(platform: Platform) -> None:
    with session_scope(platform.engine) as session:
        queries.get_tenant(session, "keelung").gateway_port = None
    with pytest.raises(ProvisioningError, match=r"^tenant keelung has no address port; apply the inventory"):
        _check(platform)


def test_check_refuses_when_no_host_fits(two_engine: Engine, tmp_path: Path) -> None:
    platform = Platform(engine=two_engine, state_dir=tmp_path / "state", cache_dir=tmp_path / "cache",
                        domain_type=DomainType.QEMU)
    with pytest.raises(NoHostFits, match="p1"):  # the reason is given per host
        _check(platform, "penghu")


def test_check_passes_when_everything_holds(up_platform: Platform) -> None:
    assert _check(up_platform) == (
        "tenant keelung: 1 VM(s) at site primary, capacity and ports available")


def test_check_refuses_a_port_another_process_holds(up_platform: Platform) -> None:
    with session_scope(up_platform.engine) as session:
        app_port = queries.get_vm(session, VM).app_port
    assert app_port is not None and 23100 <= app_port <= 23399
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", app_port))
        squatter.listen()
        with pytest.raises(ProvisioningError) as failure:
            _check(up_platform)
    assert str(failure.value) == (
        f"{VM}: its app port 127.0.0.1:{app_port} (allocated by the inventory) is in use by another "
        "process; free it or change the inventory's port range")
    assert _check(up_platform) is not None  # free again: the check passes


def test_check_refuses_a_missing_tool(up_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which
    monkeypatch.setattr(steps.shutil, "which", lambda tool: None if tool == "haproxy" else real_which(tool))
    with pytest.raises(ProvisioningError, match=r"^haproxy is not installed; run `make host`"):
        _check(up_platform)


# --- cold or template, and the pinned golden image ---------------------------------------------------

@pytest.mark.parametrize(("previous", "mode"), [
    ({"template": {"mode": "clone", "site": "primary", "sizes_mib": [1024]}}, BringUp.CLONE),
    ({"template": {"mode": "cold", "site": "primary", "reason": "template unusable: boom"}}, BringUp.COLD),
    ({}, BringUp.COLD),  # no template step ran: nothing to clone
    ({"template": None}, BringUp.COLD),
])
def test_mode_follows_the_template_step(previous: dict[str, Any], mode: BringUp) -> None:
    assert steps._mode(ctx(previous=previous)) is mode


def _built_image(cache: Path, key: str) -> GoldenImage:
    folder = images.image_dir(cache, key)
    folder.mkdir(parents=True)
    for name in images.SITE_FILES:
        (folder / name).write_bytes(b"")
    (folder / "manifest.json").write_text(f'{{"key": "{key}"}}')
    image = images.load(cache, key)
    assert image is not None
    return image


def test_image_is_the_one_the_job_pinned(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    pinned = _built_image(platform.cache_dir, "a" * 16)
    _built_image(platform.cache_dir, "b" * 16)  # a newer image built since the job began

    def no_build(*_args: object, **_kwargs: object) -> GoldenImage:
        raise AssertionError("a pinned image must not be rebuilt")

    monkeypatch.setattr(images, "ensure", no_build)
    at_site = steps._image(platform, ctx(previous={"golden-image": {"key": "a" * 16}}), "primary")
    assert at_site.key == pinned.key
    # The site's own copy: a hard link of the cached file, in the site's folder.
    assert at_site.disk.parent == platform.site("primary").images / pinned.key
    assert at_site.disk.stat().st_ino == pinned.disk.stat().st_ino


def test_image_falls_back_to_the_current_one_when_the_pinned_is_gone(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    current = _built_image(platform.cache_dir, "c" * 16)
    calls: list[Path] = []

    def ensure(cache_dir: Path, log: object = None) -> GoldenImage:
        calls.append(cache_dir)
        return current

    monkeypatch.setattr(images, "ensure", ensure)
    assert steps._image(platform, ctx(previous={"golden-image": {"key": "d" * 16}}), "primary").key \
        == current.key
    assert steps._image(platform, ctx(), "primary").key == current.key  # nothing pinned yet
    assert calls == [platform.cache_dir, platform.cache_dir]


def test_golden_step_output_pins_the_key(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    image = _built_image(platform.cache_dir, "e" * 16)
    monkeypatch.setattr(images, "ensure", lambda cache_dir, log=None: image)
    output = run(steps.provision_steps({"tenant": "keelung"}, platform), "golden-image")
    assert output == GoldenPinned(key="e" * 16)
    assert output.summary() == f"golden image {'e' * 16}"
    recorded = {"golden-image": output.model_dump(mode="json")}
    assert steps._image(platform, ctx(previous=recorded), "primary").key == image.key


def test_template_trouble_means_a_cold_boot_said_plainly(
    up_platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = _built_image(up_platform.cache_dir, "f" * 16)
    placed = run(steps.provision_steps({"tenant": "keelung"}, up_platform), "place")
    assert isinstance(placed, Placed)
    logged: list[str] = []

    def broken_build(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the template's guest never answered")

    monkeypatch.setattr(steps.templates, "build", broken_build)
    context = StepContext(job_id="job-1", args={"tenant": "keelung"}, artifacts=Path("/nonexistent"),
                          previous={"golden-image": {"key": image.key},
                                    "place": placed.model_dump(mode="json")}, _log=logged.append)
    output = run(steps.provision_steps({"tenant": "keelung"}, up_platform), "template", context)
    assert isinstance(output, BringUpChoice)
    assert output.mode is BringUp.COLD
    assert output.summary() == "cold boot: template unusable: the template's guest never answered"
    assert logged == ["template unusable, falling back to a cold boot: the template's guest never answered"]
    assert steps._mode(ctx(previous={"template": output.model_dump(mode="json")})) is BringUp.COLD


# --- resize checks -----------------------------------------------------------------------------------

def _placed_domain(platform: Platform, *, running: bool = True) -> str:
    """Place keelung's VM (uuid, host) and give the test driver a domain for it: 1 of 4 vCPUs, 1 of 4 GiB."""
    run(steps.provision_steps({"tenant": "keelung"}, platform), "place")
    plan = records.load_plan(platform.engine, VM)
    with platform.hypervisor("primary") as hv:
        hv.define(render_domain_xml(keelung_spec(name=VM, uuid=plan.uuid)))
        if running:
            hv.start(VM)
    return plan.uuid


def _resize_check(platform: Platform, vcpus: int, memory_mb: int) -> str | None:
    return run(steps.resize_steps({"vm": VM, "vcpus": vcpus, "memory_mb": memory_mb}, platform), "check")


def test_resize_check_within_maxima(up_platform: Platform) -> None:
    _placed_domain(up_platform)
    assert _resize_check(up_platform, 4, 4096) == f"{VM}: 1 vCPU / 1024 MiB -> 4 / 4096"


@pytest.mark.parametrize(("vcpus", "memory", "message"), [
    (5, 1024, f"{VM}: 5 vCPUs asked, between 1 and 4 possible live"),
    (2, 8192, f"{VM}: 8192 MiB asked, between 256 and 4096 MiB possible live"),
    (2, 128, f"{VM}: 128 MiB asked, between 256 and 4096 MiB possible live"),
])
def test_resize_check_refuses_beyond_the_maxima(up_platform: Platform, vcpus: int, memory: int,
                                                message: str) -> None:
    _placed_domain(up_platform)
    with pytest.raises(ProvisioningError) as failure:
        _resize_check(up_platform, vcpus, memory)
    assert str(failure.value) == message


def test_resize_args_refuse_no_vcpus_before_any_step(up_platform: Platform) -> None:
    with pytest.raises(ValidationError, match="vcpus"):
        steps.resize_steps({"vm": VM, "vcpus": 0, "memory_mb": 1024}, up_platform)


def test_resize_check_refuses_a_stopped_or_missing_vm(up_platform: Platform) -> None:
    _placed_domain(up_platform, running=False)
    with pytest.raises(ProvisioningError, match=f"{VM} is not running; a live resize needs a running VM"):
        _resize_check(up_platform, 2, 2048)
    with up_platform.hypervisor("primary") as hv:
        hv.undefine(VM)
    with pytest.raises(ProvisioningError, match="is not running"):
        _resize_check(up_platform, 2, 2048)


def test_resize_of_an_unplaced_vm_says_to_rerun(platform: Platform) -> None:
    with pytest.raises(ProvisioningError, match=f"^{VM}: not placed yet"):
        _resize_check(platform, 2, 2048)


# --- start and teardown against the test driver ------------------------------------------------------

def test_start_after_a_crash_between_restore_and_define_leaves_a_persistent_vm(up_platform: Platform) -> None:
    vm_uuid = _placed_domain(up_platform, running=False)
    with up_platform.hypervisor("primary") as hv:
        hv.undefine(VM)
        hv._conn.createXML(render_domain_xml(keelung_spec(name=VM, uuid=vm_uuid)), 0)  # restored, transient
    placed = run(steps.provision_steps({"tenant": "keelung"}, up_platform), "place")
    assert isinstance(placed, Placed)
    context = ctx({"tenant": "keelung"}, {"template": {"mode": "clone", "site": "primary"},
                                          "place": placed.model_dump(mode="json")})
    started = run(steps.provision_steps({"tenant": "keelung"}, up_platform), f"{VM}:start", context)
    assert isinstance(started, StepResult) and started.summary() == "already running"
    with up_platform.hypervisor("primary") as hv:
        info = hv.info(VM)
    assert info is not None and info.persistent, "a rerun must leave the clone defined, not transient"


def test_start_boots_an_existing_defined_vm(up_platform: Platform) -> None:
    _placed_domain(up_platform, running=False)
    placed = run(steps.provision_steps({"tenant": "keelung"}, up_platform), "place")
    assert isinstance(placed, Placed)
    output = run(steps.provision_steps({"tenant": "keelung"}, up_platform), f"{VM}:start",
                 ctx(previous={"place": placed.model_dump(mode="json")}))
    assert isinstance(output, StepResult) and output.summary() == "started the existing VM (boot)"
    with up_platform.hypervisor("primary") as hv:
        assert hv.state(VM) is DomainState.RUNNING


@pytest.mark.parametrize("purge", [False, True])
def test_teardown_undefines_removes_system_disks_and_keeps_data_unless_purged(
    up_platform: Platform, purge: bool
) -> None:
    _placed_domain(up_platform)
    folder = up_platform.site("primary").disks / "vms" / VM
    folder.mkdir(parents=True)
    for name in ("system.qcow2", "seed.img", "data.img", "ssh_host_ed25519_key"):
        (folder / name).write_bytes(b"x")
    # A partial copy of the template state, as a crash in the middle of cloning leaves it (on tmpfs).
    scratch = up_platform.site("primary").scratch
    scratch.mkdir(parents=True)
    (scratch / f"{VM}.sav.tmp").write_bytes(b"x")
    context = ctx({"tenant": "keelung", "purge": purge})
    step_list = steps.retire_steps({"tenant": "keelung", "purge": purge}, up_platform)
    try:
        output = run(step_list, f"{VM}:teardown", context)
        assert list(scratch.iterdir()) == []
    finally:
        shutil.rmtree(scratch)
    with up_platform.hypervisor("primary") as hv:
        assert hv.state(VM) is DomainState.MISSING
    assert not (folder / "system.qcow2").exists() and not (folder / "seed.img").exists()
    assert (folder / "data.img").exists() is not purge
    assert output is not None and output.startswith("undefined; removed system.qcow2, seed.img")
    assert output.endswith("data disk (purged)" if purge else "; data disk kept")
    assert run(step_list, f"{VM}:teardown", context) is not None  # rerun after it is all gone: no error


def test_retire_check_refuses_when_the_site_is_down(platform: Platform) -> None:
    with pytest.raises(ProvisioningError, match=r"^site primary is down; start it to retire keelung$"):
        run(steps.retire_steps({"tenant": "keelung"}, platform), "check")

