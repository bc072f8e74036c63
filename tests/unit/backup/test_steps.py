"""backup/steps.py: the step lists' names and order, and every pure part."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine

from backup import replica, replication, steps
from backup.figures import Figures, FiguresError
from backup.restic import Snapshot, SnapshotNotFound
from backup.steps import Chosen, RestoreMode
from inventory.jobs import JobKind, StepContext
from provisioning.platform import Platform
from provisioning.spec import DomainType
from provisioning.vmplan import VmPlan


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    # building a step list touches nothing: an empty engine and folders are enough
    return Platform(engine=create_engine("sqlite://"), state_dir=tmp_path / "state",
                    cache_dir=tmp_path / "cache", domain_type=DomainType.QEMU)


def names(step_list: list[steps.Step]) -> list[str]:
    return [step.name for step in step_list]


def test_builders_cover_backup_and_restore(platform: Platform) -> None:
    built = steps.builders()
    assert set(built) == {JobKind.BACKUP, JobKind.RESTORE}
    assert names(built[JobKind.BACKUP]({"tenant": "keelung"}, platform))[0] == "check"
    assert names(built[JobKind.RESTORE]({"tenant": "keelung"}, platform))[0] == "check"


def test_backup_round_order(platform: Platform) -> None:
    assert names(steps.backup_steps({"tenant": "keelung"}, platform)) == [
        "check", "copy", "figures", "snapshot", "offsite", "retention"]


def test_restore_step_lists_per_mode(platform: Platform) -> None:
    up = ["disks", "start", "activate", "prove", "record"]
    assert names(steps.restore_steps({"tenant": "keelung"}, platform)) == [
        "check", "fetch", "data-disk", *up, "tear-down"]
    assert names(steps.restore_steps({"tenant": "keelung", "mode": "copy"}, platform)) == [
        "check", "fetch", "data-disk", *up]
    in_place = {"tenant": "keelung", "mode": "in-place", "site": "primary"}
    assert names(steps.restore_steps(in_place, platform)) == [
        "check", "fetch", "data-disk", "stop", "swap", "replica", *up]


def test_an_in_place_restore_sets_the_countys_replica_aside(platform: Platform) -> None:
    held = replica.replica_site(platform.state_dir, replication.DEFAULT_SITE)
    stream = held.county_dir("keelung")
    stream.mkdir(parents=True)
    (stream / "0000000000000001-0000000000000009.ltx").write_bytes(b"the replaced database's states")
    in_place = {"tenant": "keelung", "mode": "in-place", "site": "primary"}
    [step] = [step for step in steps.restore_steps(in_place, platform) if step.name == "replica"]
    ctx = StepContext(job_id="restore-keelung-1", args=in_place, artifacts=platform.state_dir / "job")
    said = step.run(ctx)
    assert not stream.exists()  # the served folder no longer offers the old lineage
    kept = held.set_aside_dir("keelung", "restore-keelung-1")
    assert (kept / "0000000000000001-0000000000000009.ltx").exists() and str(kept) in said
    assert step.run(ctx) == said  # a rerun finds it set aside
    other = {"tenant": "penghu", "mode": "in-place", "site": "primary"}
    [step] = [step for step in steps.restore_steps(other, platform) if step.name == "replica"]
    assert step.run(ctx) == "no replica held"


def test_same_args_same_steps_and_unknown_args_refused(platform: Platform) -> None:
    args = {"tenant": "keelung", "mode": "verify", "snapshot": "abcd1234"}
    assert names(steps.restore_steps(args, platform)) == names(steps.restore_steps(dict(args), platform))
    with pytest.raises(ValidationError):
        steps.restore_steps({"tenant": "keelung", "mode": "sideways"}, platform)
    with pytest.raises(ValidationError):
        steps.backup_steps({"tenant": "keelung", "extra": 1}, platform)


def test_clone_name_is_a_hostname_stable_per_job_and_distinct_between_jobs() -> None:
    name = steps.clone_name("keelung", "job-1", RestoreMode.VERIFY)
    assert name == steps.clone_name("keelung", "job-1", RestoreMode.VERIFY)
    assert name != steps.clone_name("keelung", "job-2", RestoreMode.VERIFY)
    assert name.startswith("keelung-verify-")
    assert steps.clone_name("keelung", "job-1", RestoreMode.COPY).startswith("keelung-copy-")
    long = steps.clone_name("x" * 80, "job-1", RestoreMode.VERIFY)
    assert len(long) <= 63 and re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", long)
    assert steps.clone_uuid("job-1") == steps.clone_uuid("job-1") != steps.clone_uuid("job-2")


def test_choose_ports_skips_busy_ones_and_says_when_none_are_left() -> None:
    busy = {23200, 23202}
    assert steps.choose_ports(lambda port: port not in busy) == (23201, 23203)
    with pytest.raises(RuntimeError, match="no two free ports"):
        steps.choose_ports(lambda port: port == 23250)


def _snapshot(snapshot_id: str, minutes: int) -> Snapshot:
    return Snapshot(id=snapshot_id * 8, short_id=snapshot_id * 1, time=datetime(2026, 12, 4, tzinfo=UTC)
                    + timedelta(minutes=minutes), hostname="keelung", paths=("/tenant.db",), tags=())


def test_choose_snapshot_newest_by_default_by_full_or_short_id_otherwise() -> None:
    old, new = _snapshot("aaaaaaaa", 1), _snapshot("bbbbbbbb", 2)
    assert steps.choose_snapshot([new, old], None) is new
    assert steps.choose_snapshot([new, old], "aaaaaaaa") is old
    assert steps.choose_snapshot([new, old], old.id) is old
    with pytest.raises(SnapshotNotFound, match="no restore point cccc"):
        steps.choose_snapshot([new, old], "cccc")
    with pytest.raises(SnapshotNotFound, match="no restore point"):
        steps.choose_snapshot([], None)


def test_clone_plan_keeps_the_countys_size_settings_and_secret_with_its_own_identity(tmp_path: Path) -> None:
    county = VmPlan(name="keelung-accounting-1", uuid="u-1", tenant="keelung", county_name="Keelung",
                    site="primary", vcpus=2, memory_mib=1024, data_disk_mib=256, ssh_port=22000,
                    app_port=22001, app_secret="s3cret", settings={"locale": "zh-TW"})
    chosen = Chosen(snapshot_id="f" * 64, taken_at="2026-12-04T00:00:00+00:00", recorded={},
                    clone_name="keelung-verify-abc123", clone_uuid="u-2", ssh_port=23200, app_port=23201)
    clone = steps.clone_plan(county, chosen, "secondary")
    assert (clone.name, clone.uuid, clone.site, clone.ssh_port, clone.app_port) == (
        "keelung-verify-abc123", "u-2", "secondary", 23200, 23201)
    assert (clone.app_secret, clone.settings, clone.memory_mib, clone.data_disk_mib, clone.tenant) == (
        "s3cret", {"locale": "zh-TW"}, 1024, 256, "keelung")
    expected = tmp_path / "restored" / "keelung-verify-abc123-ffffffff.img"
    assert steps.restored_disk(tmp_path, chosen) == expected


def test_an_offsite_copy_is_found_by_the_primary_id_it_was_copied_from() -> None:
    when = datetime(2026, 12, 4, tzinfo=UTC)
    copy = Snapshot(id="c" * 64, short_id="c" * 8, time=when, hostname="keelung", paths=("/tenant.db",),
                    tags=(), original="a" * 64)
    other = Snapshot(id="d" * 64, short_id="d" * 8, time=when + timedelta(minutes=1), hostname="keelung",
                     paths=("/tenant.db",), tags=(), original="b" * 64)
    assert steps.choose_snapshot([copy, other], "a" * 8) is copy
    assert steps.choose_snapshot([copy, other], "d" * 8) is other
    with pytest.raises(SnapshotNotFound):
        steps.choose_snapshot([copy, other], "e" * 8)


def test_a_copys_own_name_must_be_a_hostname(platform: Platform) -> None:
    assert names(steps.restore_steps({"tenant": "keelung", "mode": "copy", "name": "keelung-audit-1"},
                                     platform))[0] == "check"
    for bad in ("Keelung", "-x", "a_b", "x" * 64):
        with pytest.raises(ValidationError):
            steps.restore_steps({"tenant": "keelung", "mode": "copy", "name": bad}, platform)


def test_a_point_made_under_another_secret_is_refused() -> None:
    when = datetime(2026, 12, 4, tzinfo=UTC)

    def made_under(tags: tuple[str, ...]) -> Snapshot:
        return Snapshot(id="c" * 64, short_id="c" * 8, time=when, hostname="keelung", paths=(), tags=tags)

    fingerprint = steps.secret_fingerprint("the-county-secret")
    assert "the-county-secret" not in fingerprint
    steps.check_secret(made_under((f"secret={fingerprint}",)), "the-county-secret")
    steps.check_secret(made_under(()), "the-county-secret")  # made before fingerprints were kept
    with pytest.raises(ValueError, match="another app secret"):
        steps.check_secret(made_under((f"secret={fingerprint}",)), "a-new-secret")


def test_the_retention_step_forgets_by_the_countys_tier(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from backup.policy import Retention
    from backup.restic import ForgetResult
    from inventory import declare, loader, queries
    from inventory.db import make_engine, migrate, session_scope
    from inventory.enums import ProtectionTier
    from inventory.jobs import StepContext
    from inventory.models import ProtectionTierRow

    url = f"sqlite:///{tmp_path / 'platform.db'}"
    migrate(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        declare.apply(session, loader.load_sample())
        session.add(ProtectionTierRow(name=ProtectionTier.REPLICATED, interval_s=30, keep_last=7,
                                      keep_daily=2))
        queries.get_tenant(session, "keelung").protection = ProtectionTier.REPLICATED
    platform = Platform(engine=engine, state_dir=tmp_path / "state", cache_dir=tmp_path / "cache",
                        domain_type=DomainType.QEMU)
    asked: list[tuple[str, object]] = []

    class FakeRestic:
        def forget(self, repo: str, retention: object, **_: object) -> object:
            asked.append((repo, retention))
            return ForgetResult(("a",), (), False, 0.0)

    monkeypatch.setattr(steps.records, "current_site", lambda _engine, _tenant: "primary")
    monkeypatch.setattr(steps, "_restic", lambda _platform, _site: FakeRestic())
    monkeypatch.setattr(steps, "_repositories", lambda *_: SimpleNamespace(primary="P", offsite="O"))
    default = Retention(keep_last=60, keep_hourly=48, keep_daily=31, keep_monthly=12)
    for slug, expected in (("keelung", Retention(keep_last=7, keep_daily=2)), ("penghu", default)):
        asked.clear()
        [retention] = [s for s in steps.backup_steps({"tenant": slug}, platform) if s.name == "retention"]
        said = retention.run(StepContext(job_id="j", args={}, artifacts=tmp_path))
        assert asked == [("P", expected), ("O", expected)] and "kept 1, forgot 0" in str(said)
    engine.dispose()


FIGURES = Figures(vouchers=3, certified_per_line={"1": 5}, debits=5, credits=5, unbalanced_entries=0)


class _NoHypervisor:
    def __enter__(self) -> object:
        return object()

    def __exit__(self, *_exc: object) -> None:
        return None


def _take_with(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, error: Exception | None, *,
               agent_thaws: bool = True) -> tuple[steps.Staged, list[list[str]], list[str]]:
    from backup import frozen

    staged_by: list[list[str]] = []
    logged: list[str] = []

    def take(_hv: object, _name: str, _disk: Path, target: Path, *, check: bool = True,
             thaw_otherwise: Callable[[], None] | None = None) -> frozen.Taken:
        # the round checks the copy itself, with its figures (figures.read_checked)
        assert check is False
        if error is not None:
            raise error
        if not agent_thaws:
            assert thaw_otherwise is not None
            thaw_otherwise()
        target.write_bytes(b"db")
        return frozen.Taken(path=target, bytes=2, frozen_s=0.3, wall_s=0.9)

    def stage(producer: list[str], target: Path) -> int:
        staged_by.append(list(producer))
        target.write_bytes(b"db!")
        return 3

    monkeypatch.setattr(steps.frozen, "take", take)
    monkeypatch.setattr(steps.consistent, "stage", stage)
    checked: list[bytes] = []

    def read_checked(path: Path) -> Figures:
        checked.append(path.read_bytes())
        return FIGURES

    monkeypatch.setattr(steps.figures, "read_checked", read_checked)
    fake = SimpleNamespace(hypervisor=lambda _site: _NoHypervisor(), ssh_key=tmp_path / "key")
    plan = SimpleNamespace(name="keelung-accounting-1", ssh_port=22001)
    done = steps.take_database(fake, "primary", plan, tmp_path / "t.db", logged.append,  # type: ignore[arg-type]
                               disk=tmp_path / "data.img")
    # whichever way, the copy handed on is the one checked and whose figures were read
    assert checked == [(tmp_path / "t.db").read_bytes()] and done.figures == FIGURES
    return done, staged_by, logged


def test_the_round_takes_the_database_by_freeze(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    done, staged_by, logged = _take_with(monkeypatch, tmp_path, None)
    assert done.way is steps.CopyWay.FREEZE and done.frozen_s == 0.3 and done.bytes == 2
    assert staged_by == [] and logged == []
    assert "by freeze (0.30 s frozen)" in done.summary()


def test_an_agent_that_does_not_freeze_falls_back_to_the_ssh_stream(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    from backup import frozen

    done, staged_by, logged = _take_with(monkeypatch, tmp_path, frozen.FreezeFailed("agent away"))
    assert done.way is steps.CopyWay.SSH and done.bytes == 3
    [argv] = staged_by
    assert argv[0] == "ssh" and "22001" in argv
    thaw, copy = argv[-1].split(" && exec ")
    assert "fsfreeze --unfreeze /srv/tenant-data" in thaw and "python3" in copy, "a lost freeze is not thawed"
    assert "agent away" in logged[0]


def test_a_thaw_the_agent_cannot_make_is_made_over_ssh(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    from backup import frozen

    unfrozen: list[int] = []
    monkeypatch.setattr(steps.consistent, "unfreeze", lambda _key, port: unfrozen.append(port))
    done, staged_by, logged = _take_with(monkeypatch, tmp_path, None, agent_thaws=False)
    assert done.way is steps.CopyWay.FREEZE and unfrozen == [22001] and not staged_by
    assert "thawed over SSH" in logged[0]

    def unreachable(_key: Path, _port: int) -> None:
        raise steps.consistent.CopyFailed("ssh exited 255: connection refused")

    monkeypatch.setattr(steps.consistent, "unfreeze", unreachable)
    with pytest.raises(frozen.ThawFailed, match="no thaw over SSH either: ssh exited 255"):
        _take_with(monkeypatch, tmp_path, None, agent_thaws=False)


def test_a_thaw_that_failed_fails_the_round(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from backup import frozen

    with pytest.raises(frozen.ThawFailed):
        _take_with(monkeypatch, tmp_path, frozen.ThawFailed("may still be frozen"))


def test_the_figures_step_hands_on_those_read_with_the_copy_else_reads_them(tmp_path: Path,
                                                                           platform: Platform) -> None:
    from inventory.jobs import StepContext

    [figures_step] = [step for step in steps.backup_steps({"tenant": "keelung"}, platform)
                      if step.name == "figures"]
    ctx = StepContext(job_id="j", args={}, artifacts=tmp_path)
    ctx.previous = {"copy": steps.Staged(path=str(tmp_path / "gone.db"), bytes=1,
                                         figures=FIGURES).model_dump(mode="json")}
    assert figures_step.run(ctx) == FIGURES  # not read again (the staged file is not even there)
    ctx.previous = {"copy": steps.Staged(path=str(tmp_path / "gone.db"), bytes=1).model_dump(mode="json")}
    with pytest.raises(FiguresError, match="no such database file"):  # a result recorded before: read
        figures_step.run(ctx)


def test_a_round_requested_before_the_county_moved_to_its_offsite_site_is_refused_at_check(
        platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    # Queued while the county ran at the primary, run after its failover to the secondary: the copy
    # would land in the repository it came from. Refused before anything is read or made.
    monkeypatch.setattr(steps.records, "current_site", lambda _engine, _tenant: "secondary")
    [check] = [step for step in steps.backup_steps({"tenant": "keelung", "offsite_site": "secondary"},
                                                    platform) if step.name == "check"]
    ctx = StepContext(job_id="backup-keelung-1", args={}, artifacts=platform.state_dir / "job")
    with pytest.raises(RuntimeError, match="keelung runs at secondary, this round's offsite site"):
        check.run(ctx)
    assert not platform.state_dir.exists()  # no repository or password file was made
