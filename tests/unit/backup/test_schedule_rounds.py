"""controlplane.backup_schedule's rounds fire over a migrated platform database: which counties it
submits as the clock moves, the cap over jobs queued or running (asked-for ones included), that a
fresh process (a restart) does not submit every county at once, and each county's tier's interval
and retention."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from backup import ops
from backup.policy import Retention, round_period
from controlplane import backup_schedule, bootstrap
from inventory import declare, loader, queries
from inventory.db import session_scope
from inventory.enums import Lifecycle, ProtectionTier
from inventory.jobs import Job, JobKind, JobStatus
from inventory.models import ProtectionTierRow

START = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)  # on a minute: the first county's slot


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COUNTYCLOUD_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("COUNTYCLOUD_DATABASE_URL", f"sqlite:///{tmp_path / 'countycloud.db'}")
    monkeypatch.setenv("COUNTYCLOUD_BACKUP_CONCURRENCY", "2")
    engine = bootstrap.engine()
    with session_scope(engine) as session:
        declare.apply(session, loader.load_sample())  # 13 counties, one VM each
        for tenant in queries.list_tenants(session):
            queries.set_status(tenant, Lifecycle.ACTIVE, actor="test")
    monkeypatch.setattr(backup_schedule, "_began", None)
    yield engine


class Recorder:
    """Stands in for submit_round: records a BACKUP job row as jobs.submit would (pending)."""

    def __init__(self, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.engine, self.now = engine, START
        self.submitted: list[tuple[datetime, str]] = []
        monkeypatch.setattr(backup_schedule, "submit_round", self.submit)
        monkeypatch.setattr(backup_schedule, "datetime", self.Clock(self))

    class Clock:
        def __init__(self, outer: Recorder) -> None:
            self.outer = outer

        def now(self, tz: object = None) -> datetime:
            return self.outer.now

    def submit(self, slug: str) -> str:
        job_id = f"backup-{slug}-{len(self.submitted)}"
        add_job(self.engine, job_id, slug, self.now, JobStatus.PENDING)
        self.submitted.append((self.now, slug))
        return job_id

    def fire(self) -> list[str]:
        before = len(self.submitted)
        backup_schedule.rounds(self.now)
        return [slug for _, slug in self.submitted[before:]]


def add_job(engine: Engine, job_id: str, slug: str, at: datetime, status: JobStatus) -> None:
    with session_scope(engine) as session:
        session.add(Job(id=job_id, kind=JobKind.BACKUP, target=slug, args={}, status=status,
                        created_at=at, started_at=at if status is JobStatus.RUNNING else None))


def finish_all(engine: Engine) -> None:
    with session_scope(engine) as session:
        for job in session.query(Job).filter(Job.status.in_([JobStatus.PENDING, JobStatus.RUNNING])):
            job.status = JobStatus.SUCCEEDED


def test_the_rounds_tick_and_the_default_cap() -> None:
    assert backup_schedule.Schedule().rounds == "*/5 * * * * *"
    assert bootstrap.settings().backup_concurrency == 2


def test_a_round_is_spread_over_the_round_period(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # The sample's tiers keep 60 s; rounds come every 50 s, so each point lands within the 60 s
    # (backup.policy.round_period): 13 counties' places 3.85 s apart.
    period = round_period(timedelta(seconds=60), backup_schedule.ROUND_TICK)
    assert period == timedelta(seconds=50)
    clock = Recorder(engine, monkeypatch)
    per_fire = []
    for _tick in range(10):  # a period of fires, each round done before the next tick
        per_fire.append(clock.fire())
        finish_all(engine)
        clock.now += backup_schedule.ROUND_TICK
    assert sorted(slug for fired in per_fire for slug in fired) == sorted(
        slug for slug in _slugs(engine) if slug != "yunlin")  # the 13th's place (46.2 s) is at 50 s
    assert max(len(fired) for fired in per_fire) <= 2 and sum(1 for fired in per_fire if fired) >= 9
    # 50 s: yunlin (never backed up: first) and changhua's next round
    assert clock.fire() == ["yunlin", "changhua"]


def test_the_cap_counts_backups_asked_for_by_hand(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Recorder(engine, monkeypatch)
    clock.now = START + timedelta(seconds=30)
    clock.fire()  # this process's schedule begins: slots from now on are owed
    clock.now += timedelta(seconds=20)  # slots of four counties passed meanwhile (fires were late)
    add_job(engine, "backup-keelung-manual", "keelung", clock.now, JobStatus.RUNNING)
    fired = clock.fire()
    assert len(fired) == 1 and "keelung" not in fired  # one place left beside the asked-for one
    clock.now += backup_schedule.ROUND_TICK
    assert clock.fire() == []  # two running: the rest wait
    finish_all(engine)
    clock.now += backup_schedule.ROUND_TICK
    assert len(clock.fire()) == 2


def test_a_stuck_job_does_not_hold_a_place(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Recorder(engine, monkeypatch)
    long_ago = START - backup_schedule.ROUND_STALE_AFTER - timedelta(minutes=1)
    add_job(engine, "backup-a-stuck", "penghu", long_ago, JobStatus.RUNNING)
    add_job(engine, "backup-b-stuck", "taitung", long_ago, JobStatus.RUNNING)
    clock.fire()
    assert clock.submitted == [(START, "changhua")]


def test_a_restart_submits_no_county_at_once(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Recorder(engine, monkeypatch)
    for index, slug in enumerate(_slugs(engine)):  # backed up long ago, before the service stopped
        add_job(engine, f"backup-{slug}-old{index}", slug, START - timedelta(minutes=5), JobStatus.SUCCEEDED)
    clock.now = START + timedelta(seconds=32)  # restarted mid-minute
    assert clock.fire() == []  # every county's missed slot is before this process began
    seen: list[str] = []
    for _tick in range(10):
        clock.now += backup_schedule.ROUND_TICK
        seen += clock.fire()
        finish_all(engine)
    assert sorted(seen) == sorted(_slugs(engine))  # each at its own place within a round period (50 s)


def _slugs(engine: Engine) -> list[str]:
    with session_scope(engine) as session:
        return [tenant.slug for tenant in queries.list_tenants(session)]


def test_each_county_on_its_tiers_interval(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    with session_scope(engine) as session:
        session.add(ProtectionTierRow(name=ProtectionTier.REPLICATED, interval_s=30, keep_last=5))
        queries.get_tenant(session, "keelung").protection = ProtectionTier.REPLICATED
    states = {county.slug: county for county in backup_schedule.round_states(engine, START)}
    # rounded every 20 s and 50 s: within their tiers' 30 s and 60 s (backup.policy.round_period)
    assert states["keelung"].interval == timedelta(seconds=20)
    assert states["penghu"].interval == timedelta(seconds=50)  # the backup tier's default, 60 s
    clock = Recorder(engine, monkeypatch)
    clock.now = START - timedelta(seconds=1)
    clock.fire()  # the schedule begins
    rounds: list[str] = []
    for _tick in range(24):  # two minutes
        clock.now += backup_schedule.ROUND_TICK
        rounds += clock.fire()
        finish_all(engine)
    assert rounds.count("keelung") == 6 and rounds.count("penghu") == 2  # every 20 s; 50 s


def test_prune_forgets_each_county_by_its_tiers_retention(engine: Engine,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with session_scope(engine) as session:
        session.add(ProtectionTierRow(name=ProtectionTier.REPLICATED, interval_s=30, keep_daily=3))
        queries.get_tenant(session, "keelung").protection = ProtectionTier.REPLICATED
    kept = backup_schedule.retentions()
    assert kept["keelung"][1] == Retention(keep_daily=3)
    assert kept["penghu"][1] == Retention(keep_last=60, keep_hourly=48, keep_daily=31, keep_monthly=12)
    assert kept["penghu"][0] == ops.BackupSites("primary", "secondary", 23000)


def fail_over(engine: Engine, slug: str) -> None:
    with session_scope(engine) as session:
        queries.set_running_site(queries.get_tenant(session, slug), queries.get_site(session, "secondary"),
                                 actor="test")


HOME = ops.BackupSites("primary", "secondary", 23000)
AWAY = ops.BackupSites("secondary", "primary", 23001)  # the primary's own server, not the secondary's


def test_a_county_failed_over_is_backed_up_to_the_primarys_server(engine: Engine) -> None:
    fail_over(engine, "keelung")
    assert backup_schedule.county_sites("keelung") == AWAY
    assert backup_schedule.county_sites("penghu") == HOME
    grouped = backup_schedule.counties_by_pair()
    assert grouped[AWAY] == {"keelung"} and "keelung" not in grouped[HOME] and len(grouped[HOME]) == 12
    assert backup_schedule.retentions()["keelung"][0] == AWAY


def test_the_catch_up_copies_back_only_the_failed_over_countys_points(engine: Engine,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    fail_over(engine, "keelung")
    asked: dict[ops.BackupSites, object] = {}

    def copy_offsite(_platform: object, sites: ops.BackupSites, tenants: object = None) -> ops.CopyResult:
        asked[sites] = tenants
        return ops.CopyResult(copied={}, skipped=(), wall_s=0.0)

    monkeypatch.setattr(ops, "copy_offsite", copy_offsite)
    backup_schedule.offsite(START)
    # the platform's own pair copies everything (its database too); the other only keelung's
    assert asked == {HOME: None, AWAY: {"keelung"}}


def test_prune_forgets_per_pair_and_prunes_each_repository_once(engine: Engine,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    fail_over(engine, "keelung")
    forgot: list[tuple[str, str]] = []
    pruned: list[str] = []

    class Restic:
        def forget(self, repo: str, _keep: object, *, tags: list[str], group_by: str) -> None:
            forgot.append((repo, tags[0]))

        def prune(self, repo: str) -> None:
            pruned.append(repo)

    reached: list[tuple[str, str, int]] = []

    def reach(_platform: object, site: str, from_site: str, port: int) -> str:
        reached.append((site, from_site, port))
        return site

    monkeypatch.setattr(ops, "reach", reach)
    monkeypatch.setattr(ops, "restic_at", lambda _platform, _site: Restic())
    backup_schedule.prune(START)
    assert sorted(pruned) == ["primary", "secondary"]
    assert ("primary", "county=keelung") in forgot and ("secondary", "county=keelung") in forgot
    assert ("primary", "county=penghu") in forgot and ("secondary", "county=penghu") in forgot
    assert len(forgot) == 26  # 13 counties, each in both repositories, once
    # the primary's repository is reached through its own port for keelung's pair
    assert ("primary", "secondary", 23001) in reached and ("secondary", "primary", 23000) in reached
