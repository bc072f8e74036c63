"""The failover's pure parts: batches from the plan, restore point choice, the report's RTO and RPO,
the DR test's isolated identities, and putting a restored disk in place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from backup.restic import Snapshot
from dr import failover, records, report, restorepoints
from dr.bringup import CountyRun, place_data_disk
from dr.failover import DrError, batches_for, choose_points, isolated_identity
from dr.plans import RecoveryPlan, Role, Step, Tier
from dr.restorepoints import Point, PointError
from inventory.db import make_engine, migrate, session_scope
from inventory.jobs import Job, JobKind, JobStatus
from provisioning.errors import ProvisioningError
from provisioning.hypervisor import DomainState


def plan(*tiers: Tier) -> RecoveryPlan:
    return RecoveryPlan(name="test", roles=[Role(key="op", title_zh="維運", title_en="Op", who="ops")],
                        steps=[Step(role="op", zh="做", en="do")], tiers=list(tiers))


def tier(name: str, order: int, counties: list[str], parallelism: int = 2) -> Tier:
    return Tier(name=name, order=order, parallelism=parallelism, rto_s=10 * order, rpo_s=60,
                counties=counties)


def point(county: str, snapshot: str, at: float) -> Point:
    return Point(county=county, snapshot_id=snapshot, taken_at=at, recorded={"vouchers": "1"})


# --- batches -------------------------------------------------------------------------------------

def test_batches_follow_the_plan_without_the_counties_that_do_not_move() -> None:
    the_plan = plan(tier("later", 2, ["d", "e"]), tier("first", 1, ["a", "b", "c"]))
    batches, tiers, order = batches_for(the_plan, ["e", "c", "a", "b"])
    assert batches == [["a", "b"], ["c"], ["e"]]
    assert order == ["first", "later"] and tiers == {"a": "first", "b": "first", "c": "first", "e": "later"}


def test_counties_the_plan_does_not_name_come_last_and_without_a_plan_all_in_one_tier() -> None:
    moving = ["z", "a", "y", "x", "w"]
    batches, tiers, order = batches_for(plan(tier("first", 1, ["a"])), moving, parallelism=2)
    assert batches == [["a"], ["z", "y"], ["x", "w"]]
    assert order == ["first", failover.NO_PLAN_TIER] and tiers["w"] == failover.NO_PLAN_TIER
    assert batches_for(None, ["b", "a"], parallelism=3)[0] == [["b", "a"]]
    assert batches_for(None, []) == ([], {}, [])


# --- restore points --------------------------------------------------------------------------------

def test_points_by_county_reads_the_county_tag_and_the_figures() -> None:
    def snap(snapshot_id: str, county: str | None, second: int) -> Snapshot:
        tags = (f"county={county}", "fig-vouchers=7") if county else ("platform-db",)
        taken = datetime(2026, 12, 4, 12, 0, second, tzinfo=UTC)
        return Snapshot(id=snapshot_id, short_id=snapshot_id[:8], time=taken,
                        hostname=county or "platform", paths=("/tenant.db",), tags=tags)

    found = restorepoints.points_by_county([snap("b" * 64, "keelung", 30), snap("a" * 64, "keelung", 10),
                                            snap("c" * 64, None, 5), snap("d" * 64, "penghu", 1)])
    assert sorted(found) == ["keelung", "penghu"]
    assert [p.snapshot_id[0] for p in found["keelung"]] == ["a", "b"]
    assert found["keelung"][0].recorded == {"vouchers": "7"}


def test_choose_takes_the_newest_before_the_failure_or_the_one_asked_for() -> None:
    points = [point("k", "aaaa1111", 100.0), point("k", "bbbb2222", 200.0), point("k", "cccc3333", 300.0)]
    assert restorepoints.choose(points, None).snapshot_id == "cccc3333"
    assert restorepoints.choose(points, None, before=250.0).snapshot_id == "bbbb2222"
    assert restorepoints.choose(points, "aaaa").snapshot_id == "aaaa1111"
    with pytest.raises(PointError, match="no restore point zzz"):
        restorepoints.choose(points, "zzz")
    with pytest.raises(PointError, match="newer than the failure"):
        restorepoints.choose(points, None, before=50.0)
    with pytest.raises(PointError, match="take a backup first"):
        restorepoints.choose([], None)
    assert [p.snapshot_id for p in restorepoints.fallbacks(points, points[2])] == ["bbbb2222", "aaaa1111"]


def test_choose_points_names_every_county_without_one_and_no_fallback_for_a_chosen_point() -> None:
    available = {"k": [point("k", "aaaa1111", 100.0), point("k", "bbbb2222", 200.0)],
                 "p": [point("p", "cccc3333", 150.0)]}
    chosen = choose_points(available, ["k", "p"], {"p": "cccc"}, before=1000.0)
    assert chosen.points["k"].snapshot_id == "bbbb2222" and chosen.points["p"].snapshot_id == "cccc3333"
    assert [p.snapshot_id for p in chosen.fallbacks["k"]] == ["aaaa1111"] and "p" not in chosen.fallbacks
    with pytest.raises(DrError, match=r"no usable restore point for m: .*; n: "):
        choose_points(available, ["k", "m", "n"], {}, before=1000.0)


# --- report --------------------------------------------------------------------------------------

def run(county: str, taken_at: float, serving_at: float) -> CountyRun:
    return CountyRun(county=county, vm=f"{county}-accounting-1", site="secondary",
                     point=point(county, "abcdef0123", taken_at), how="cloned the template",
                     parts={"restore": 1.0, "start": 2.0}, started_at=serving_at - 3, serving_at=serving_at,
                     app_port=24001, address_port=25001)


def test_report_measures_rto_from_the_failure_and_rpo_to_the_restore_point() -> None:
    failed_at = 1_000.0
    done = report.build(report.RunKind.FAILOVER, "job-1", "primary", "secondary", failed_at,
                        [run("b", 950.0, 1_020.0), run("a", 990.0, 1_008.0)],
                        {"a": "first", "b": "later"}, ["first", "later"], expected={"first": (10.0, 60.0)})
    assert [c.county for c in done.counties] == ["a", "b"]  # in the order they served
    assert [(c.rto_s, c.rpo_s) for c in done.counties] == [(8.0, 10.0), (20.0, 50.0)]
    assert (done.rto_s, done.rto_first_tier_s, done.rpo_worst_s) == (20.0, 8.0, 50.0)
    assert done.counties[0].expected_rto_s == 10.0 and done.counties[1].expected_rto_s is None
    assert "RTO 20.0 s (first tier 8.0 s), worst RPO 50.0 s" in done.summary()
    back = report.build(report.RunKind.FAILBACK, "job-2", "secondary", "primary", failed_at,
                        [run("a", 1_000.0, 1_030.0)], {"a": "failback"}, ["failback"], zero_rpo=True)
    assert back.rpo_worst_s == 0.0 and back.rto_s == 30.0


def test_the_last_report_is_kept_per_kind(tmp_path: Path) -> None:
    done = report.build(report.RunKind.DR_TEST, "job-3", "primary", "secondary", 0.0, [run("a", 0.0, 5.0)],
                        {"a": "all"}, ["all"])
    report.save_last(tmp_path, done)
    assert report.load_last(tmp_path, report.RunKind.DR_TEST) == done
    assert report.load_last(tmp_path, report.RunKind.FAILOVER) is None


# --- DR test identities ----------------------------------------------------------------------------

def test_isolated_identity_is_stable_for_the_job_and_a_valid_hostname() -> None:
    first = isolated_identity("dr_test-primary-1", "x" * 63, (23400, 23401))
    assert first == isolated_identity("dr_test-primary-1", "x" * 63, (23400, 23401))
    assert len(first[0]) <= 63 and first[0].endswith("-drtest") and first[2:] == (23400, 23401)
    assert first[1] != isolated_identity("dr_test-primary-2", "x" * 63, (23400, 23401))[1]


def test_free_ports_skips_busy_ones_and_says_when_there_are_too_few() -> None:
    assert failover.free_ports(3, lambda port: port % 2 == 0, range(10, 20)) == [10, 12, 14]
    with pytest.raises(DrError, match="4 free ports"):
        failover.free_ports(4, lambda port: port == 10, range(10, 20))


# --- the restored disk in place ----------------------------------------------------------------------

def test_place_data_disk_moves_it_keeps_an_older_disk_and_refuses_under_a_serving_vm(tmp_path: Path) -> None:
    restored = tmp_path / "restored" / "vm-abcdef01.img"
    restored.parent.mkdir()
    restored.write_bytes(b"restored")
    own = tmp_path / "vms" / "vm" / "data.img"
    assert place_data_disk(restored, own, serving=False) == "in place"
    assert own.read_bytes() == b"restored" and not restored.exists(), "moved: the VM will write to it"
    newer = tmp_path / "restored" / "vm-99999999.img"
    newer.write_bytes(b"newer")
    with pytest.raises(ProvisioningError, match="refusing"):
        place_data_disk(newer, own, serving=True)
    said = place_data_disk(newer, own, serving=False)
    assert own.read_bytes() == b"newer" and "kept as data.img.before-" in said
    assert [p.read_bytes() for p in own.parent.glob("data.img.before-*")] == [b"restored"]


def test_metrics_give_the_last_rto_and_rpo_per_county(tmp_path: Path) -> None:
    from dr import metrics

    assert b"countycloud_dr_rto_seconds{" not in metrics.exposition(tmp_path)
    done = report.build(report.RunKind.FAILOVER, "job-1", "primary", "secondary", 1_000.0,
                        [run("keelung", 990.0, 1_012.5)], {"keelung": "tier-1"}, ["tier-1"])
    report.save_last(tmp_path, done)
    text = metrics.exposition(tmp_path).decode()
    assert 'countycloud_dr_rto_seconds{county="keelung",kind="failover",tier="tier-1"} 12.5' in text
    assert 'countycloud_dr_rpo_seconds{county="keelung",kind="failover",tier="tier-1"} 10.0' in text
    assert 'countycloud_dr_last_run_timestamp_seconds{kind="failover"} 1012.5' in text


def test_a_vm_a_killed_attempt_left_running_is_not_restored_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Its VM runs on the disk the killed attempt restored: a second restore would move that disk aside
    # under it. The bring-up goes on to start (which finds it running) without restoring.
    from dr import bringup
    from provisioning.sites import site_paths
    from provisioning.vmplan import VmPlan

    class ReachedStart(Exception):
        pass

    restored: list[object] = []
    opened: list[str] = []

    class Platform:
        def site(self, name: str) -> object:
            return site_paths(tmp_path / "state", name)

        @contextmanager
        def hypervisor(self, site: str) -> Iterator[object]:
            opened.append(site)
            if len(opened) > 1:
                raise ReachedStart
            yield SimpleNamespace(state=lambda name: DomainState.RUNNING if name == plan.name
                                  else DomainState.MISSING)

    plan = VmPlan(name="keelung-accounting-1", uuid="00000000-0000-4000-8000-000000000001", tenant="keelung",
                  county_name="基隆市", site="secondary", vcpus=1, memory_mib=1024, data_disk_mib=64,
                  ssh_port=24000, app_port=24001, app_secret="s", settings={})
    monkeypatch.setattr(bringup.restorepoints, "restore", lambda *args, **kwargs: restored.append(args))
    monkeypatch.setattr(bringup.address, "healthy", lambda port, timeout_s=2.0: False)
    said: list[str] = []
    with pytest.raises(ReachedStart):
        bringup.bring_up(Platform(), "keelung", run("keelung", 990.0, 1_010.0).point,  # type: ignore[arg-type]
                         bringup.Target(site="secondary", plan=plan, switch=True), tmp_path, log=said.append)
    assert restored == [], "restored again under a running VM"
    assert said == ["keelung: its VM already runs at secondary (an interrupted attempt's): "
                    "not restored again"]


def test_a_county_finished_by_a_killed_attempt_is_not_brought_up_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dr import bringup
    from provisioning.sites import site_paths
    from provisioning.vmplan import VmPlan

    class RestoredAgain(Exception):
        pass

    def restore(*_args: object, **_kwargs: object) -> Path:
        raise RestoredAgain

    class Platform:
        def site(self, name: str) -> object:
            return site_paths(tmp_path / "state", name)

        @contextmanager
        def hypervisor(self, _site: str) -> Iterator[object]:
            yield SimpleNamespace(state=lambda _name: DomainState.MISSING)  # no VM of an earlier attempt

    done = run("keelung", 990.0, 1_010.0)
    plan = VmPlan(name=done.vm, uuid="00000000-0000-4000-8000-000000000001", tenant="keelung",
                  county_name="基隆市", site="secondary", vcpus=1, memory_mib=1024, data_disk_mib=64,
                  ssh_port=24000, app_port=done.app_port, app_secret="s", settings={})
    target = bringup.Target(site="secondary", plan=plan, switch=True)
    bringup.record_path(tmp_path, "keelung").write_text(done.model_dump_json())
    monkeypatch.setattr(bringup.restorepoints, "restore", restore)
    monkeypatch.setattr(bringup.address, "healthy", lambda port, timeout_s=2.0: port == done.app_port)
    again = bringup.bring_up(Platform(), "keelung", done.point, target, tmp_path)  # type: ignore[arg-type]
    assert again == done, "the times measured by the first attempt are kept"
    # Its app does not answer any more: the record is not trusted and the county is brought up again.
    monkeypatch.setattr(bringup.address, "healthy", lambda port, timeout_s=2.0: False)
    with pytest.raises(RestoredAgain):
        bringup.bring_up(Platform(), "keelung", done.point, target, tmp_path)  # type: ignore[arg-type]


def test_a_newer_replicated_state_is_chosen_with_the_backup_point_to_fall_back_to() -> None:
    backup = Point(county="taipei", snapshot_id="a" * 64, taken_at=100.0)
    older = Point(county="taipei", snapshot_id="b" * 64, taken_at=50.0)
    kept = Point(county="keelung", snapshot_id="c" * 64, taken_at=100.0)
    chosen = failover.Chosen(points={"taipei": backup, "keelung": kept}, fallbacks={"taipei": [older]})
    newer = restorepoints.replica_point("taipei", 0x2A, 130.0)
    stale = restorepoints.replica_point("keelung", 0x07, 90.0)

    picked = failover.with_replicated(chosen, {"taipei": newer, "keelung": stale})
    assert picked.points == {"taipei": newer, "keelung": kept}
    assert picked.fallbacks["taipei"] == [backup, older]
    assert "keelung" not in picked.fallbacks
    assert newer.replicated and newer.txid == 0x2A and newer.short == "r000002a"
    assert not backup.replicated
    assert failover.with_replicated(chosen, {"taipei": None}).points["taipei"] == backup


# --- failback: the ended streams' replicas --------------------------------------------------------

def test_failback_sets_aside_the_replicas_of_the_counties_it_brings_home(tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    from backup import replica, replication
    from dr import failback
    from provisioning.platform import Platform
    from provisioning.spec import DomainType
    from tests.unit.backup.test_replica import put

    platform = Platform(engine=create_engine("sqlite://"), state_dir=tmp_path / "state",
                        cache_dir=tmp_path / "cache", domain_type=DomainType.QEMU)
    held = replica.replica_site(platform.state_dir, "secondary")
    for county in ("taipei", "yilan"):
        put(held.county_dir(county) / "ltx", 9, 1, 1, 1_000)
    scope = failover.Scope(failed_site="secondary", to_site="primary", failed_at=1.0, batches=[["taipei"]],
                           tiers={"taipei": "failback"}, tier_order=["failback"], expected={},
                           vms={"taipei": "taipei-1", "keelung": "keelung-1"})
    said: list[str] = []
    ctx = SimpleNamespace(job_id="j1", log=said.append, result=lambda name, _kind: scope)
    steps = [step.name for step in failback.failback_steps({}, platform)]
    assert steps.index("verify") < steps.index("replicas") < steps.index("switch")

    assert failback._replicas(platform, ctx) == "1 replica(s) set aside"  # type: ignore[arg-type]
    assert replication.newest(platform, "taipei") is None, "the ended lineage is still served"
    assert replication.newest(platform, "yilan") is not None, "a county not failing back keeps its replica"
    assert said == ["taipei: its replica at secondary set aside; the stream resumes at home"]


def test_failback_works_on_counties_a_few_at_a_time_and_finishes_all_before_failing() -> None:
    import threading
    import time as clock

    from dr import failback

    running, most, ended = [0], [0], []
    lock = threading.Lock()

    def work(county: str) -> str:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        clock.sleep(0.05)
        with lock:
            running[0] -= 1
            ended.append(county)
        if county == "b":
            raise DrError("b: the served database differs")
        return county.upper()

    counties = ["e", "d", "c", "b", "a"]
    with pytest.raises(DrError, match="b: the served"):
        failback.each_county(counties, work)
    assert sorted(ended) == sorted(counties), "a county's error stopped the others' work"
    assert 1 < most[0] <= failover.DEFAULT_PARALLELISM
    assert failback.each_county(["c", "a"], str.upper) == {"a": "A", "c": "C"}


def test_a_failover_or_failback_not_begun_within_its_time_is_refused() -> None:
    asked = datetime(2026, 12, 5, 10, 4, tzinfo=UTC)
    failover.refuse_if_stale("failover", asked, asked + failover.STALE_REQUEST_AFTER)  # just in time
    failover.refuse_if_stale("failover", None, asked)  # no record of when: not refused
    with pytest.raises(DrError, match=r"at 2026-12-05 10:04:00 UTC .*\(55 min later.*nothing was done"):
        failover.refuse_if_stale("failover", asked, asked + timedelta(minutes=55))


def test_submitted_at_reads_the_jobs_record(sqlite_url: str) -> None:
    migrate(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        at = datetime(2026, 12, 5, 10, 4, 14)
        with session_scope(engine) as session:
            session.add(Job(id="failover-primary-5792dc", kind=JobKind.FAILOVER, target="primary", args={},
                            status=JobStatus.PENDING, created_at=at))
        assert records.submitted_at(engine, "failover-primary-5792dc") == at.replace(tzinfo=UTC)
        assert records.submitted_at(engine, "failover-primary-000000") is None
    finally:
        engine.dispose()


# --- the restore points listed while the site is fenced ----------------------------------------------

class _Listings:
    """restorepoints.list_points faked: its answer's snapshot says the site and whether it was listed
    early (in the prefetch's thread) or by the step itself; after `delay_s`, or an error."""

    def __init__(self, delay_s: float = 0.0, fail_early: bool = False) -> None:
        self.delay_s, self.fail_early = delay_s, fail_early
        self.calls = 0

    def __call__(self, _platform: object, site: str) -> dict[str, list[Point]]:
        import threading
        import time

        self.calls += 1
        time.sleep(self.delay_s)
        early = threading.current_thread().name.startswith("dr-points")
        if early and self.fail_early:
            raise RuntimeError("restic: repository busy")
        return {"keelung": [point("keelung", f"{site}-{'early' if early else 'now'}", 1.0)]}


def _listed(platform: object, job: str, site: str = "secondary") -> str:
    return failover.listed_points(platform, job, site)["keelung"][0].snapshot_id  # type: ignore[arg-type]


def test_the_points_listed_early_are_taken_once_and_a_stale_one_is_listed_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    platform = SimpleNamespace()
    monkeypatch.setattr(restorepoints, "list_points", _Listings(delay_s=0.3))
    began = time.monotonic()
    failover.prefetch_points(platform, "job-a", "secondary")  # type: ignore[arg-type]
    assert time.monotonic() - began < 0.2, "the check does not wait for the listing"
    assert _listed(platform, "job-a") == "secondary-early"
    assert _listed(platform, "job-a") == "secondary-now"  # taken once: a rerun of the step lists again
    assert _listed(platform, "job-b") == "secondary-now"  # none started: a process resuming the job
    failover.prefetch_points(platform, "job-c", "primary")  # type: ignore[arg-type]
    assert _listed(platform, "job-c") == "secondary-now"  # another site's
    monkeypatch.setattr(failover, "PREFETCH_FRESH_S", 0.0)
    failover.prefetch_points(platform, "job-d", "secondary")  # type: ignore[arg-type]
    time.sleep(0.05)
    assert _listed(platform, "job-d") == "secondary-now"  # too old
    assert failover._listings == {}


def test_a_listing_from_the_suspicion_serves_the_failover_and_spares_its_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    platform = SimpleNamespace()
    listings = _Listings(delay_s=0.2)
    monkeypatch.setattr(restorepoints, "list_points", listings)
    failover.prefetch_for_suspect(platform, "secondary")  # type: ignore[arg-type]
    failover.prefetch_points(platform, "job-f", "secondary")  # type: ignore[arg-type]
    assert _listed(platform, "job-f") == "secondary-early"
    assert listings.calls == 1  # the job's check started no second `restic snapshots`
    assert _listed(platform, "job-g") == "secondary-now"  # taken once
    failover.prefetch_for_suspect(platform, "primary")  # type: ignore[arg-type]
    assert _listed(platform, "job-h") == "secondary-now"  # the points at another site
    failover._listings.clear()
    monkeypatch.setattr(failover, "SUSPECT_FRESH_S", 0.0)
    failover.prefetch_for_suspect(platform, "secondary")  # type: ignore[arg-type]
    time.sleep(0.05)
    assert _listed(platform, "job-i") == "secondary-now"  # a suspicion too old: listed again
    assert failover._listings == {}


def test_an_early_listing_that_failed_is_listed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    platform = SimpleNamespace()
    listings = _Listings(fail_early=True)
    monkeypatch.setattr(restorepoints, "list_points", listings)
    failover.prefetch_points(platform, "job-e", "secondary")  # type: ignore[arg-type]
    assert _listed(platform, "job-e") == "secondary-now"
    assert listings.calls == 2


# --- what RTO counts from ----------------------------------------------------------------------------

def _watched(state_dir: Path, now: float, alive_until: int, seconds: int = 10) -> None:
    """Three vantage points' checks of the primary, one a second over the last `seconds`: alive for
    the first `alive_until`, then failing (daemon silent, no county answering)."""
    from dr import observations
    from dr.health import Observation

    for vantage in ("service", "witness", "secondary"):
        observations.write(state_dir, vantage, [
            Observation(vantage=vantage, site="primary", at=now - seconds + i, took_s=0.01,
                        daemon_ok=i < alive_until, counties_checked=1, counties_ok=int(i < alive_until))
            for i in range(seconds)])


@pytest.mark.parametrize(("alive_until", "what"), [(5, "down"), (8, "suspect")])
def test_a_failover_asked_without_a_time_counts_from_the_watchs_last_sight_of_the_site(
        tmp_path: Path, alive_until: int, what: str) -> None:
    import time

    now = time.time()
    _watched(tmp_path, now, alive_until)
    platform = SimpleNamespace(state_dir=tmp_path)
    counted = failover._failure_time(platform, failover.FailoverArgs(), isolated=False)  # type: ignore[arg-type]
    last_alive = now - 10 + alive_until - 1
    # Declared down (failing 5 s) or still suspect (2 s): either way from the last sight, not from now.
    assert last_alive <= counted < last_alive + 1.0, (what, counted - now)
    asked = failover.FailoverArgs(failed_at=now - 100)
    assert failover._failure_time(platform, asked, isolated=False) == now - 100  # type: ignore[arg-type]
    # A DR test is timed from its own start.
    assert failover._failure_time(platform, failover.FailoverArgs(), isolated=True) >= now  # type: ignore[arg-type]


def test_a_failover_asked_without_a_time_and_no_watch_counts_from_its_start(tmp_path: Path) -> None:
    import time

    platform = SimpleNamespace(state_dir=tmp_path)
    began = time.time()
    assert failover._failure_time(platform, failover.FailoverArgs(), isolated=False) >= began  # type: ignore[arg-type]
    _watched(tmp_path, began, alive_until=10)  # the site up throughout
    assert failover._failure_time(platform, failover.FailoverArgs(), isolated=False) >= began  # type: ignore[arg-type]
