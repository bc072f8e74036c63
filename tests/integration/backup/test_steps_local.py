"""backup/steps.py steps run with real restic, a real REST server and real mkfs.ext4 / debugfs, on
the demo inventory, each run twice (a rerun after a crash must leave the same state). The steps that
need a guest (copy over SSH; disks/start/activate/prove/tear-down on a VM) are left to the VM test:
here `copy` is stood in for by a staged county database made by the app itself."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from backup import consistent, figures, pairing, repository, restored, steps
from backup.figures import Figures
from backup.restic import Restic
from backup.steps import Chosen, Fetched, Snapshotted, Staged
from inventory.jobs import Step, StepContext, StepResult
from provisioning.platform import Platform
from tests.integration.backup.conftest import county_platform, free_port, stop_rest_servers
from tests.unit.provisioning.test_steps_lists import demo_db, engine  # noqa: F401 (fixtures)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def platform(engine: Engine, tmp_path: Path, port: int,  # noqa: F811
             made_repositories: Path) -> Iterator[Platform]:
    platform = county_platform(engine, tmp_path, made_repositories)
    yield platform
    stop_rest_servers(platform, {"secondary": port})


def run(step_list: list[Step], name: str, ctx: StepContext) -> Any:
    [step] = [step for step in step_list if step.name == name]
    result = step.run(ctx)
    if isinstance(result, StepResult):  # what a later step reads back is the checkpointed JSON
        ctx.previous = {**ctx.previous, name: result.model_dump(mode="json")}
    return result


def test_backup_round_then_restore_onto_a_new_data_disk(platform: Platform, county_db: Path,
                                                       tmp_path: Path, port: int) -> None:
    backup = steps.backup_steps({"tenant": "keelung", "rest_port": port}, platform)
    artifacts = tmp_path / "job-b"
    artifacts.mkdir()
    ctx = StepContext(job_id="job-b", args={}, artifacts=artifacts)
    assert "repositories" in run(backup, "check", ctx)
    assert "repositories" in run(backup, "check", ctx)  # made once, found the second time

    # `copy` needs the guest; its result is a staged app database, as here
    staged = artifacts / "tenant.db"
    shutil.copy(county_db, staged)
    ctx.previous = {"copy": Staged(path=str(staged), bytes=staged.stat().st_size).model_dump(mode="json")}
    found = run(backup, "figures", ctx)
    assert isinstance(found, Figures) and found.vouchers == 60

    first = run(backup, "snapshot", ctx)
    assert isinstance(first, Snapshotted) and not first.reused
    assert not staged.exists()  # the staged copy is removed once stored
    again = run(backup, "snapshot", ctx)  # a rerun after a kill: the same restore point, not a second
    assert isinstance(again, Snapshotted) and again.reused and again.snapshot_id == first.snapshot_id
    # written into the offsite repository at once, and found there by the rerun too
    assert first.offsite_id is not None and again.offsite_id == first.offsite_id
    ctx.previous = {**ctx.previous, "snapshot": first.model_dump(mode="json")}

    restic = Restic(cache_dir=tmp_path / "cache-check")
    pair = repository.pair(platform.state_dir, "primary", "secondary", port)
    [point] = restic.snapshots(pair.primary, tags=["county=keelung"])
    assert figures.from_tags(point.tags) == found.tags()
    assert point.hostname == "keelung"

    assert run(backup, "offsite", ctx).startswith(f"written with the snapshot as {first.offsite_id}")
    [offsite_point] = restic.snapshots(pair.offsite, tags=["county=keelung"])
    assert offsite_point.id.startswith(first.offsite_id) and offsite_point.original is None
    # one point in two repositories: the same time, tags and host, paired by its job
    assert (offsite_point.time, offsite_point.tags, offsite_point.hostname) == (point.time, point.tags,
                                                                                 point.hostname)
    assert pairing.partners([point], [offsite_point]) == {point.id: offsite_point}
    # the time given to both (`--time`, read by restic in its own zone) is the time it was made
    assert abs(datetime.now(UTC) - point.time) < timedelta(minutes=2)
    assert figures.from_tags(offsite_point.tags) == found.tags()
    # the catch-up's way when the offsite write did not happen: restic copy, found there afterwards
    restic.forget_ids(pair.offsite, [offsite_point.id])
    alone = first.model_copy(update={"offsite_id": None, "offsite_error": "offsite away"})
    ctx.previous = {**ctx.previous, "snapshot": alone.model_dump(mode="json")}
    assert run(backup, "offsite", ctx).startswith("copied 1")
    [offsite_point] = restic.snapshots(pair.offsite, tags=["county=keelung"])
    assert offsite_point.original == point.id
    assert run(backup, "offsite", ctx).startswith(f"already there as {offsite_point.short_id}")
    assert "primary: kept 1, forgot 0; offsite: kept 1, forgot 0" in run(backup, "retention", ctx)

    # verify from the offsite repository: choose it, fetch and check it, make a new data disk
    verify = steps.restore_steps({"tenant": "keelung", "rest_port": port}, platform)
    rctx = StepContext(job_id="job-r", args={}, artifacts=tmp_path / "job-r")
    rctx.artifacts.mkdir()
    chosen = run(verify, "check", rctx)
    assert isinstance(chosen, Chosen)
    assert chosen.snapshot_id == offsite_point.id and chosen.recorded == found.tags()
    assert chosen.clone_name.startswith("keelung-verify-") and chosen.ssh_port != chosen.app_port
    fetched = run(verify, "fetch", rctx)
    assert isinstance(fetched, Fetched) and fetched.figures == found
    assert "made" in run(verify, "data-disk", rctx)
    assert "kept" in run(verify, "data-disk", rctx)
    disk = steps.restored_disk(platform.site("secondary").disks, chosen)
    from_disk = restored.read_database(disk, tmp_path / "from-disk.db")
    assert figures.read(from_disk) == found


def test_fetch_refuses_a_restore_point_whose_figures_differ(platform: Platform, county_db: Path,
                                                           tmp_path: Path, port: int) -> None:
    restic = Restic(cache_dir=tmp_path / "cache")
    pair = repository.ensure_pair(restic, platform.state_dir, "primary", "secondary", port)
    recorded = figures.read(county_db)
    wrong = recorded.model_copy(update={"vouchers": recorded.vouchers + 1})
    consistent.store(restic, pair.primary, county_db, "keelung", tags=figures.to_tags(wrong))
    verify = steps.restore_steps({"tenant": "keelung", "rest_port": port, "from_site": "primary",
                                  "site": "primary"}, platform)
    rctx = StepContext(job_id="job-x", args={}, artifacts=tmp_path / "job-x")
    rctx.artifacts.mkdir()
    run(verify, "check", rctx)
    with pytest.raises(figures.FiguresError, match="vouchers: recorded 61, restored 60"):
        run(verify, "fetch", rctx)


def test_restored_disk_refuses_what_is_not_a_ccdata_disk_and_a_disk_too_small(county_db: Path,
                                                                              tmp_path: Path) -> None:
    other = tmp_path / "other.img"
    other.write_bytes(b"someone's data")
    with pytest.raises(restored.RestoredDiskError, match="refusing"):
        restored.make(other, 64, county_db)
    assert other.read_bytes() == b"someone's data"
    with pytest.raises(restored.RestoredDiskError, match="cannot hold"):
        restored.make(tmp_path / "small.img", 8, county_db)
    assert not (tmp_path / "small.img").exists()


def test_in_place_swap_keeps_the_disk_before_and_a_rerun_changes_nothing(platform: Platform,
                                                                         tmp_path: Path) -> None:
    in_place = steps.restore_steps({"tenant": "keelung", "mode": "in-place", "site": "primary"}, platform)
    chosen = Chosen(snapshot_id="a1b2c3d4" + "0" * 56, taken_at="2026-12-04T00:00:00+00:00", recorded={},
                    clone_name="keelung-accounting-1", clone_uuid="u", ssh_port=1, app_port=2)
    ctx = StepContext(job_id="job-s", args={}, artifacts=tmp_path,
                      previous={"check": chosen.model_dump(mode="json")})
    own = platform.site("primary").disks / "vms" / "keelung-accounting-1" / "data.img"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"the county's disk before")
    new = steps.restored_disk(platform.site("primary").disks, chosen)
    new.parent.mkdir(parents=True)
    new.write_bytes(b"restored")
    said = run(in_place, "swap", ctx)
    kept = own.with_name("data.img.before-a1b2c3d4")
    assert str(kept) in said
    assert own.read_bytes() == b"restored" and kept.read_bytes() == b"the county's disk before"
    assert not new.exists()
    assert "already swapped" in run(in_place, "swap", ctx)
    assert own.read_bytes() == b"restored" and kept.read_bytes() == b"the county's disk before"


def test_a_round_asks_restic_nothing_it_knows_already(platform: Platform, county_db: Path, tmp_path: Path,
                                                      port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Repositories made: the check finds their config without restic; a job's first snapshot attempt
    does not look for its own snapshot (only a rerun can find one). Each restic command is a key
    derivation (~0.5 s), which the ≤ 2 s round cannot afford twice over."""
    backup = steps.backup_steps({"tenant": "keelung", "rest_port": port}, platform)
    warm = StepContext(job_id="job-warm", args={}, artifacts=tmp_path)
    run(backup, "check", warm)  # makes both repositories

    def refused(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("restic asked")

    monkeypatch.setattr(Restic, "is_initialized", refused)
    monkeypatch.setattr(Restic, "snapshots", refused)
    artifacts = tmp_path / "job-d"
    artifacts.mkdir()
    ctx = StepContext(job_id="job-d", args={}, artifacts=artifacts)
    assert "repositories" in run(backup, "check", ctx)
    staged = artifacts / "tenant.db"
    shutil.copy(county_db, staged)
    ctx.previous = {"copy": Staged(path=str(staged), bytes=staged.stat().st_size).model_dump(mode="json")}
    run(backup, "figures", ctx)
    first = run(backup, "snapshot", ctx)
    assert isinstance(first, Snapshotted) and not first.reused
    assert (artifacts / steps.SNAPSHOT_MARK).exists()  # a rerun will look
    monkeypatch.undo()
    again = run(backup, "snapshot", ctx)
    assert isinstance(again, Snapshotted) and again.reused and again.snapshot_id == first.snapshot_id


def test_a_rerun_that_finds_the_offsite_point_alone_writes_the_primarys_only(
        platform: Platform, county_db: Path, tmp_path: Path, port: int) -> None:
    backup = steps.backup_steps({"tenant": "keelung", "rest_port": port}, platform)
    artifacts = tmp_path / "job-o"
    artifacts.mkdir()
    ctx = StepContext(job_id="job-o", args={}, artifacts=artifacts)
    run(backup, "check", ctx)
    staged = artifacts / "tenant.db"
    shutil.copy(county_db, staged)
    ctx.previous = {**ctx.previous,
                    "copy": Staged(path=str(staged), bytes=staged.stat().st_size).model_dump(mode="json")}
    run(backup, "figures", ctx)
    first = run(backup, "snapshot", ctx)
    restic = Restic(cache_dir=tmp_path / "cache-check")
    pair = repository.pair(platform.state_dir, "primary", "secondary", port)
    # as if the attempt had been killed after the offsite's write, before the primary's
    restic.forget_ids(pair.primary, [first.snapshot_id])
    shutil.copy(county_db, staged)
    again = run(backup, "snapshot", ctx)
    assert isinstance(again, Snapshotted) and not again.reused and again.offsite_id == first.offsite_id
    [point] = restic.snapshots(pair.primary, tags=["job=job-o"])
    [offsite_point] = restic.snapshots(pair.offsite, tags=["job=job-o"])  # not written a second time
    assert point.time == offsite_point.time and pairing.partners([point], [offsite_point])
