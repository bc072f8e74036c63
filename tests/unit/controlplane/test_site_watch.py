"""The site watch as the service runs it (controlplane.site_watch) over a migrated platform database
(SQLite and PostgreSQL) with counties at the primary, fake observations in the vantage points' files
and a fake clock: the targets written, an outage audited and mirrored in the site's status, the
failover submitted once (automatic only, after the grace period, not again after a restart, an
existing job adopted), the outage closed; then the threads and a real witness process started and
stopped, the service's hook reading the settings, and the CLI."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from controlplane import audit, site_watch
from controlplane.settings import Settings
from dr import observations, outage, targets, watchstate
from dr.health import Observation
from dr.outage import Outage, Policy, Status
from inventory import queries
from inventory.db import make_engine, migrate, session_scope
from inventory.enums import Lifecycle, SiteStatus
from inventory.jobs import Job, JobKind, JobStatus
from tests.unit.dr.test_fence import declared_and_active

T0 = 1_800_000_000.0
APP_PORT = 29310  # text only: nothing listens, the checks are faked


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """On SQLite and on PostgreSQL (job times compared as the database stores them)."""
    engine = declared_and_active(db_url, app_port=APP_PORT)
    yield engine
    engine.dispose()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    audit.configure(tmp_path / "state")
    return tmp_path / "state"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def observe(state_dir: Path, primary: str, until: int) -> None:
    """Each vantage point's observations of both sites, one a second from T0 up to `until`: the
    primary as `primary` says (U alive, F failed: daemon silent and no county answering), the
    secondary always alive."""
    for vantage in ("service", "witness", "primary", "secondary"):
        seen = []
        for second in range(until + 1):
            for site in ("primary", "secondary"):
                if site == vantage:
                    continue
                alive = site == "secondary" or primary[min(second, len(primary) - 1)] == "U"
                seen.append(Observation(vantage=vantage, site=site, at=T0 + second, took_s=0.01,
                                        daemon_ok=alive, counties_checked=2, counties_ok=2 if alive else 0))
        observations.write(state_dir, vantage, seen)


class Submits:
    def __init__(self) -> None:
        self.outages: list[Outage] = []

    def __call__(self, found: Outage) -> str:
        self.outages.append(found)
        return f"failover-primary-{len(self.outages)}"


def watch(engine: Engine, state_dir: Path, clock: Clock, policy: Policy,
          submits: Submits) -> site_watch.SiteWatch:
    return site_watch.SiteWatch(engine, state_dir, lambda: ["primary", "secondary"], policy, submit=submits,
                                clock=clock)


def run_until(watcher: site_watch.SiteWatch, clock: Clock, primary: str, first: int, last: int) -> None:
    for second in range(first, last + 1):
        observe(watcher.state_dir, primary, second)
        clock.now = T0 + second + 0.5
        watcher.tick()


def events(engine: Engine, action: str) -> list[dict[str, object]]:
    return [audit.event_json(row) for row in audit.list_events(engine, target="primary")
            if row.action == action]


def site_status(engine: Engine, name: str) -> SiteStatus:
    with session_scope(engine) as session:
        return queries.get_site(session, name).status


KILLED = "UUUU" + "F" * 100  # last seen alive at 3: declared at 6


def test_a_tick_writes_the_targets_and_the_state(engine: Engine, state_dir: Path) -> None:
    clock = Clock()
    watch(engine, state_dir, clock, Policy(), Submits()).tick()
    [primary, secondary] = targets.read_targets(targets.targets_path(state_dir))
    assert primary.counties == {"keelung": APP_PORT, "penghu": APP_PORT + 2}  # by name: kinmen is 1
    assert secondary.counties == {"kinmen": APP_PORT + 1}
    state = watchstate.load(state_dir)
    assert state.sites["primary"].status is Status.UNKNOWN and state.outages == {}


def test_manual_records_the_outage_and_submits_nothing(engine: Engine, state_dir: Path) -> None:
    clock, submits = Clock(), Submits()
    watcher = watch(engine, state_dir, clock, Policy(), submits)
    run_until(watcher, clock, KILLED, 0, 5)
    assert events(engine, "dr.site-down") == [] and site_status(engine, "primary") is not SiteStatus.DOWN
    run_until(watcher, clock, KILLED, 6, 60)
    [down] = events(engine, "dr.site-down")
    assert down["actor_kind"] == "system" and down["detail"]["failed_since"] == T0 + 3  # type: ignore[index]
    assert site_status(engine, "primary") is SiteStatus.DOWN
    assert site_status(engine, "secondary") is not SiteStatus.DOWN
    assert submits.outages == []
    shown = watchstate.load(state_dir)
    assert shown.sites["primary"].status is Status.WAITING_FOR_OPERATOR
    assert "waiting for an operator" in shown.sites["primary"].status_text
    assert shown.outages["primary"].failover_job is None


def test_automatic_submits_once_after_the_grace_even_across_a_restart(engine: Engine,
                                                                      state_dir: Path) -> None:
    clock, submits = Clock(), Submits()
    policy = Policy(automatic=True, grace_s=5)
    watcher = watch(engine, state_dir, clock, policy, submits)
    run_until(watcher, clock, KILLED, 0, 10)
    assert submits.outages == []  # declared at 6.01: due at 11.01
    run_until(watcher, clock, KILLED, 11, 30)
    [submitted] = submits.outages
    assert (submitted.site, submitted.to_site, submitted.failed_since) == ("primary", "secondary", T0 + 3)
    restarted = watch(engine, state_dir, clock, policy, submits)  # the service restarted mid-outage
    run_until(restarted, clock, KILLED, 31, 60)
    assert len(submits.outages) == 1
    assert watchstate.load(state_dir).outages["primary"].failover_job == "failover-primary-1"
    assert len(events(engine, "dr.site-down")) == 1


def test_a_failover_job_already_there_is_adopted(engine: Engine, state_dir: Path) -> None:
    with session_scope(engine) as session:  # an operator pressed the button as the site died
        session.add(Job(id="failover-primary-op", kind=JobKind.FAILOVER, target="primary", args={},
                        status=JobStatus.RUNNING, created_at=datetime.fromtimestamp(T0 + 5, UTC)))
        session.add(Job(id="failover-primary-old", kind=JobKind.FAILOVER, target="primary", args={},
                        status=JobStatus.SUCCEEDED, created_at=datetime.fromtimestamp(T0 - 3600, UTC)))
    clock, submits = Clock(), Submits()
    watcher = watch(engine, state_dir, clock, Policy(automatic=True, grace_s=0), submits)
    run_until(watcher, clock, KILLED, 0, 20)
    assert submits.outages == []
    assert watchstate.load(state_dir).outages["primary"].failover_job == "failover-primary-op"


def test_the_site_back_closes_the_outage(engine: Engine, state_dir: Path) -> None:
    clock, submits = Clock(), Submits()
    watcher = watch(engine, state_dir, clock, Policy(automatic=True, grace_s=0), submits)
    back = "UUUU" + "F" * 16 + "U" * 30
    run_until(watcher, clock, back, 0, 30)
    assert len(events(engine, "dr.site-up")) == 1 and len(submits.outages) == 1
    assert site_status(engine, "primary") is SiteStatus.UP
    assert watchstate.load(state_dir).outages == {}


def test_no_failover_when_no_county_runs_at_the_failed_site(engine: Engine, state_dir: Path) -> None:
    with session_scope(engine) as session:
        for slug in ("keelung", "penghu"):
            queries.set_status(queries.get_tenant(session, slug), Lifecycle.RETIRED, actor="test")
    clock, submits = Clock(), Submits()
    watcher = watch(engine, state_dir, clock, Policy(automatic=True, grace_s=0), submits)
    run_until(watcher, clock, KILLED, 0, 15)
    assert submits.outages == [] and len(events(engine, "dr.site-down")) == 1
    assert watchstate.load(state_dir).sites["primary"].status is Status.NOTHING_THERE


def test_the_watch_hurries_while_the_primary_may_be_declared_down(engine: Engine, state_dir: Path) -> None:
    clock, submits = Clock(), Submits()
    watcher = watch(engine, state_dir, clock, Policy(automatic=True, grace_s=0), submits)
    run_until(watcher, clock, KILLED, 0, 3)
    assert watcher.hurry_in() is None  # up: the one-second grid
    run_until(watcher, clock, KILLED, 4, 4)
    assert watcher.hurry_in() == outage.HURRY_S  # suspect: looked at five times a second
    run_until(watcher, clock, KILLED, 5, 6)
    assert len(submits.outages) == 1 and watcher.hurry_in() is None  # declared and submitted


def test_a_suspect_site_has_its_peer_s_restore_points_listed_before_the_verdict(engine: Engine,
                                                                                  state_dir: Path) -> None:
    clock, submits = Clock(), Submits()
    listed: list[tuple[str, float, int]] = []
    watcher = site_watch.SiteWatch(engine, state_dir, lambda: ["primary", "secondary"],
                                   Policy(automatic=True, grace_s=0), submit=submits, clock=clock,
                                   prefetch=lambda at: listed.append((at, clock.now, len(submits.outages))))
    run_until(watcher, clock, KILLED, 0, 3)
    assert listed == []  # up: nothing listed
    run_until(watcher, clock, KILLED, 4, 6)
    # Once, at the secondary, when the primary turned suspect: before the failover was submitted.
    assert listed == [("secondary", T0 + 4.5, 0)] and len(submits.outages) == 1
    flapping = "UUUUF" + "U" * 10 + "F" + "U" * 100  # suspect twice, 11 s apart, never down
    clock2 = Clock()
    listed.clear()
    again = site_watch.SiteWatch(engine, state_dir, lambda: ["primary", "secondary"], Policy(automatic=True,
                                 grace_s=0), submit=submits, clock=clock2,
                                 prefetch=lambda site: listed.append((site, clock2.now, 0)))
    run_until(again, clock2, flapping, 0, 18)
    assert [at - T0 for _site, at, _n in listed] == [4.5, 15.5]


def test_a_failed_listing_ahead_does_not_stop_the_watch(engine: Engine, state_dir: Path) -> None:
    clock, submits = Clock(), Submits()

    def broken(_site: str) -> None:
        raise RuntimeError("restic: no repository")

    watcher = site_watch.SiteWatch(engine, state_dir, lambda: ["primary", "secondary"],
                                   Policy(automatic=True, grace_s=0), submit=submits, clock=clock,
                                   prefetch=broken)
    run_until(watcher, clock, KILLED, 0, 6)
    assert len(submits.outages) == 1


class _Hurried(site_watch.SiteWatch):
    """A watch whose every tick asks for the next one in 0.05 s."""

    ticks: int = 0

    def tick(self) -> dict[str, outage.Decision]:
        self.ticks += 1
        return {}

    def write_targets(self) -> None:
        pass

    def hurry_in(self) -> float | None:
        return 0.05


def test_the_watch_thread_ticks_sooner_when_hurried(engine: Engine, state_dir: Path) -> None:
    hurried = _Hurried(engine, state_dir, lambda: [], Policy())
    running = site_watch.Running(hurried, (), interval_s=1.0)
    thread = threading.Thread(target=running._loop, daemon=True)
    thread.start()
    time.sleep(1.0)
    running.stop.set()
    thread.join(5)
    assert hurried.ticks >= 5, hurried.ticks  # one a second on the grid alone


def test_start_runs_the_watch_and_a_witness_process_and_stop_ends_them(engine: Engine,
                                                                       state_dir: Path) -> None:
    running = site_watch.start(engine, state_dir, lambda: ["primary", "secondary"], Policy(), ["witness"],
                               submit=Submits(), interval_s=0.5)
    try:
        assert site_watch.start(engine, state_dir, lambda: [], Policy(), []) is running  # once per process
        deadline = time.monotonic() + 60
        wanted = [observations.path_of(state_dir, "witness"), observations.path_of(state_dir, "service"),
                  watchstate.state_path(state_dir)]
        expected = {("witness", "primary"), ("service", "secondary")}

        def seen() -> set[tuple[str, str]]:
            return {(o.vantage, o.site) for o in observations.read(state_dir)}

        # Wait for both sites seen, not only for the files (a file written before the sites to check
        # were known holds no observation).
        while not (all(p.exists() for p in wanted) and expected <= seen()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(path.exists() for path in wanted), [str(p) for p in wanted if not p.exists()]
        assert expected <= seen()
        first = running.processes["witness"]
        first.kill()  # a witness that dies is started again by the watch's next tick
        first.wait()
        while running.processes["witness"] is first and time.monotonic() < deadline:
            time.sleep(0.1)
        process = running.processes["witness"]
        assert process is not first and process.poll() is None
    finally:
        site_watch.stop()
    assert process.poll() is not None
    assert not any(thread.is_alive() for thread in running.threads)


def test_the_service_starts_and_stops_the_watch_with_its_settings(
        state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from controlplane import bootstrap, service, workers

    assert Settings().dr_automatic is False and Settings().dr_watch is True
    monkeypatch.setenv("COUNTYCLOUD_DR_AUTOMATIC", "true")
    monkeypatch.setenv("COUNTYCLOUD_DR_GRACE_S", "12")
    monkeypatch.setenv("COUNTYCLOUD_DR_WITNESSES", "witness, secondary")
    monkeypatch.setenv("COUNTYCLOUD_MONITORING", "false")
    monkeypatch.setenv("COUNTYCLOUD_BACKUP_SCHEDULE", "false")
    bootstrap.settings.cache_clear()
    started: list[tuple[Policy, tuple[str, ...]]] = []
    stopped: list[bool] = []
    monkeypatch.setattr(workers, "run_workers", lambda *_args, **_kwargs: None)
    monkeypatch.setattr(site_watch, "start", lambda _engine, _state, _sites, policy, witnesses, **_kw:
                        started.append((policy, tuple(witnesses))))
    monkeypatch.setattr(site_watch, "stop", lambda: stopped.append(True))
    monkeypatch.setattr("controlplane.jobs.shutdown", lambda: None)
    ctx = service.context_from_settings(bootstrap.settings())
    service.start_workers(ctx)
    service.stop_workers(ctx)
    assert started == [(Policy(automatic=True, grace_s=12), ("witness", "secondary"))]
    assert stopped == [True]
    monkeypatch.setenv("COUNTYCLOUD_DR_WATCH", "false")
    bootstrap.settings.cache_clear()
    service.start_workers(ctx)
    assert len(started) == 1


def test_witness_names_are_checked() -> None:
    assert site_watch.witnesses_of("") == ()
    for bad in ("service", "Bad Name", "witness,../x"):
        with pytest.raises(ValueError):
            site_watch.witnesses_of(bad)


def test_the_watch_reaches_the_metrics(engine: Engine, state_dir: Path) -> None:
    from dr.metrics import exposition

    assert b"countycloud_dr_site_verdict" not in exposition(state_dir)  # no watch runs here
    clock = Clock()
    run_until(watch(engine, state_dir, clock, Policy(automatic=True, grace_s=600), Submits()), clock, KILLED,
              0, 8)
    text = exposition(state_dir).decode()
    assert 'countycloud_dr_site_verdict{site="primary",verdict="down"} 1.0' in text
    assert 'countycloud_dr_site_verdict{site="secondary",verdict="up"} 1.0' in text
    assert 'countycloud_dr_site_verdict{site="primary",verdict="up"} 0.0' in text
    assert 'countycloud_dr_outage_declared_timestamp_seconds{site="primary"}' in text
    assert 'countycloud_dr_outage_declared_timestamp_seconds{site="secondary"}' not in text
    assert "countycloud_dr_automatic_failover 1.0" in text


def test_the_cli_shows_the_watch(state: Path) -> None:
    import json

    import typer
    from typer.testing import CliRunner

    from controlplane.cli import dr as dr_cli

    app = typer.Typer()
    dr_cli.register(app)
    assert "no site watch runs" in CliRunner().invoke(app, ["dr", "watch"]).output
    engine = make_engine(Settings().database_url)
    try:
        migrate(Settings().database_url)
        audit.configure(state)
        clock = Clock()
        run_until(watch(engine, state, clock, Policy(), Submits()), clock, KILLED, 0, 8)
    finally:
        engine.dispose()
    shown = CliRunner().invoke(app, ["dr", "watch"])
    assert shown.exit_code == 0, shown.output
    assert "automatic failover: off" in shown.output and "primary" in shown.output
    assert "outage of primary: declared 3.0 s after it was last seen alive" in shown.output
    as_json = json.loads(CliRunner().invoke(app, ["dr", "watch", "--json"]).output)
    assert as_json["sites"]["primary"]["verdict"] == "down"
    assert as_json["sites"]["primary"]["status"] == "nothing-there"  # no county declared here


def test_the_failover_options_of_an_outage() -> None:
    found = Outage(site="primary", declared_at=T0 + 6, failed_since=T0 + 3, noticed_at=T0 + 6.5,
                   to_site="secondary")
    assert site_watch.failover_options(found, "") == {
        "failed_site": "primary", "to_site": "secondary", "failed_at": T0 + 3, "plan_file": None}
    assert site_watch.failover_options(found, "/etc/plan.yaml")["plan_file"] == "/etc/plan.yaml"
