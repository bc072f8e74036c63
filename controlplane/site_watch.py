"""The site watch in the service (issue 15): every site judged every second, outages recorded, and,
with the automatic setting on, the failover submitted once per outage after the grace period.

`countycloud serve` starts it (service.start_workers, setting `dr_watch`):

- the targets (`STATE_DIR/dr/targets.json`: each site's daemon and the counties running there) are
  written from the inventory at every tick where they changed (a failover moves counties);
- the service's own vantage point checks every site each second in a thread (dr.witness.run);
- the vantage points of `dr_witnesses` run as processes of their own (`python -m dr.witness`),
  started here, restarted if they die, and ending with the service even when it is killed;
- each second (five times a second while a site may be declared down any moment, and at the end of
  a grace period: dr.outage.hurry) `SiteWatch.tick` reads every vantage point's observations, judges
  every site (dr.health) and carries out dr.outage's decision: an outage opened or closed is audited (actor
  `system`), mirrored in the inventory's site status and logged; the failover is submitted through
  controlplane.dr_ops (audited as every job); the state goes to `STATE_DIR/dr/watch.json`, which the
  console (/dr) and /metrics read, and which a restarted service continues from;
- a site found SUSPECT has the restore points at its peer listed at once (dr.failover's
  prefetch_for_suspect): a failover that follows in this process takes them instead of listing.

Idempotence: an outage holds its one failover job. Besides the remembered state, a failover job of
the site created since the failure (another service process's, an operator's) is adopted rather than
doubled, and jobs.submit itself returns the unfinished job of the same arguments.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, select

from controlplane import audit
from controlplane.actors import SYSTEM
from controlplane.settings import Settings
from dr import observations, outage, records, watchstate, witness
from dr.health import SiteStatusReport, SiteVerdict, WatchRules
from dr.outage import Action, Decision, Outage, Policy, SiteFacts, WatchEvent
from dr.targets import SiteTarget, dr_dir, from_database, write_targets
from inventory import queries
from inventory.db import session_scope
from inventory.enums import SiteStatus
from inventory.jobs import Job, JobKind

log = logging.getLogger("countycloud.dr")

SERVICE_VANTAGE = "service"
PROJECT_ROOT = Path(__file__).resolve().parents[1]

Submit = Callable[[Outage], str]  # submits the outage's failover job; returns its id
Prefetch = Callable[[str], None]  # starts listing the restore points at a site, in the background

# While a site stays suspect, its restore points are listed again this often (the failover takes a
# listing at most dr.failover.SUSPECT_FRESH_S old).
PREFETCH_AGAIN_S = 10.0


def submit_failover(found: Outage) -> str:
    """The failover job of an outage, submitted as the service (audited like any job)."""
    from controlplane import bootstrap, dr_ops

    if found.to_site is None:
        raise ValueError(f"no site to fail {found.site} over to")
    return dr_ops.failover(SYSTEM, **failover_options(found, bootstrap.settings().dr_plan)).id


def prefetch_points(to_site: str) -> None:
    """The restore points at `to_site` listed now for a failover that may follow (dr.failover)."""
    from controlplane import bootstrap
    from dr import failover

    failover.prefetch_for_suspect(bootstrap.platform(), to_site)


def failover_options(found: Outage, plan_file: str) -> dict[str, object]:
    """The failover job's options for an outage: RTO counted from the failure, the plan if set."""
    return {"failed_site": found.site, "to_site": found.to_site, "failed_at": found.failed_since,
            "plan_file": plan_file or None}


def peer(sites: Sequence[str], site: str) -> str | None:
    """Where a site's counties go: the other site of a pair (none with more or fewer sites)."""
    others = [other for other in sites if other != site]
    return others[0] if len(others) == 1 else None


def failover_job_since(engine: Engine, site: str, since: float) -> str | None:
    """The first failover job of `site` created at or after `since` (epoch seconds)."""
    with session_scope(engine) as session:
        return session.scalars(
            select(Job.id).where(Job.kind == JobKind.FAILOVER, Job.target == site,
                                 Job.created_at >= datetime.fromtimestamp(since, UTC))
            .order_by(Job.created_at).limit(1)).first()


@dataclass
class SiteWatch:
    """One service's judging of the sites: call `tick` every second."""

    engine: Engine
    state_dir: Path
    sites: Callable[[], list[str]]
    policy: Policy
    submit: Submit = submit_failover
    rules: WatchRules = field(default_factory=WatchRules)
    clock: Callable[[], float] = time.time
    prefetch: Prefetch | None = None  # given by the service; unit tests of the verdicts go without
    _targets: list[SiteTarget] | None = None
    _prefetched: dict[str, float] = field(default_factory=dict)  # site -> when its peer's points were listed
    state: watchstate.WatchState = field(init=False)
    reports: dict[str, SiteStatusReport] = field(init=False, default_factory=dict)  # the last tick's

    def __post_init__(self) -> None:
        self.state = watchstate.load(self.state_dir)  # a restarted service continues its outages

    def tick(self) -> dict[str, Decision]:
        now = self.clock()
        self.write_targets()
        names = self.sites()
        reports = observations.verdicts(self.state_dir, names, self.rules, now)
        outages = dict(self.state.outages)
        views = {}
        decisions = {}
        for site in names:
            report = reports[site]
            before = outages.get(site)
            self._prefetch_if_suspect(site, report, peer(names, site), now)
            decision = outage.decide(report, before, self._facts(site, names, report, reports, before),
                                     self.policy, now)
            found = decision.outage
            for event in decision.events:
                self._record(event, report, found or before, now)
            if found is not None and Action.SUBMIT_FAILOVER in decision.actions:
                found = self._submit(found, now)
            if found is None:
                outages.pop(site, None)
            else:
                outages[site] = found
            decisions[site] = decision
            views[site] = watchstate.SiteView(site=site, verdict=report.verdict, reason=report.reason,
                                              status=decision.status, status_args=dict(decision.status_args),
                                              checked_at=now)
        self.state = watchstate.WatchState(automatic=self.policy.automatic, grace_s=self.policy.grace_s,
                                           sites=views, outages=outages)
        self.reports = reports
        watchstate.save(self.state_dir, self.state)
        return decisions

    def hurry_in(self) -> float | None:
        """Seconds until the next tick is wanted when sooner than the grid's (dr.outage.hurry)."""
        return outage.hurry(self.reports, self.state.outages, self.rules, self.policy, self.clock())

    def _prefetch_if_suspect(self, site: str, report: SiteStatusReport, to_site: str | None,
                             now: float) -> None:
        """A suspect site's failover would list the restore points at its peer first: list them now,
        while the verdict waits out its hold (seconds of the first tier's RTO otherwise)."""
        if self.prefetch is None or to_site is None or report.verdict is not SiteVerdict.SUSPECT:
            return
        if now - self._prefetched.get(site, float("-inf")) < PREFETCH_AGAIN_S:
            return
        self._prefetched[site] = now
        try:
            self.prefetch(to_site)
        except Exception:  # the failover lists them itself
            log.exception("restore points at %s not listed ahead", to_site)

    def write_targets(self) -> None:
        with session_scope(self.engine) as session:
            targets = from_database(session, self.state_dir)
        if targets != self._targets:
            write_targets(self.state_dir, targets)
            self._targets = targets

    def _facts(self, site: str, names: list[str], report: SiteStatusReport,
               reports: dict[str, SiteStatusReport], known: Outage | None) -> SiteFacts:
        to_site = peer(names, site)
        to_verdict = reports[to_site].verdict if to_site in reports else SiteVerdict.UNKNOWN
        if report.verdict is not SiteVerdict.DOWN and known is None:
            return SiteFacts(counties=0, to_site=to_site, to_site_verdict=to_verdict)  # nothing to query
        counties = len({vm.tenant for vm in records.running_at(self.engine, site)})
        existing = None
        if known is None or known.failover_job is None:
            since = known.failed_since if known is not None else outage.failure_time(report)
            existing = failover_job_since(self.engine, site, since)
        return SiteFacts(counties=counties, to_site=to_site, to_site_verdict=to_verdict,
                         existing_job=existing)

    def _record(self, event: WatchEvent, report: SiteStatusReport, found: Outage | None, now: float) -> None:
        detail = {"reason": report.reason, "automatic": self.policy.automatic, "grace_s": self.policy.grace_s}
        if found is not None:
            detail |= {"declared_at": found.declared_at, "failed_since": found.failed_since,
                       "detected_s": round(found.declared_at - found.failed_since, 2),
                       "failover_job": found.failover_job}
        status = SiteStatus.DOWN if event is WatchEvent.SITE_DOWN else SiteStatus.UP
        (log.warning if status is SiteStatus.DOWN else log.info)("%s: %s", event.value, report.reason)
        try:
            with session_scope(self.engine) as session:
                audit.record(session, SYSTEM, event.value, report.site, detail=detail)
                declared = {site.name: site for site in queries.list_sites(session)}
                if report.site in declared:
                    queries.set_status(declared[report.site], status, actor="dr-watch",
                                       note=f"site watch at {now:.0f}")
        except Exception:  # the database away: the state file and the log still say it
            log.exception("could not record %s of %s", event.value, report.site)

    def _submit(self, found: Outage, now: float) -> Outage:
        try:
            job_id = self.submit(found)
        except Exception as error:
            log.exception("automatic failover of %s not submitted", found.site)
            return outage.not_submitted(found, str(error), now)
        log.warning("automatic failover of %s to %s submitted: job %s", found.site, found.to_site, job_id)
        return outage.submitted(found, job_id)


def witness_command(state_dir: Path, vantage: str, parent_pid: int) -> list[str]:
    return [sys.executable, "-m", "dr.witness", "--state-dir", str(state_dir), "--vantage", vantage,
            "--parent", str(parent_pid)]


@dataclass
class Running:
    """The watch of this process: its threads, its witness processes."""

    watch: SiteWatch
    witnesses: tuple[str, ...]
    interval_s: float = 1.0
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self) -> Running:
        state_dir = self.watch.state_dir
        dr_dir(state_dir).mkdir(parents=True, exist_ok=True)
        # The sites to check, before any vantage point looks: else its first look finds none.
        self.watch.write_targets()
        self.keep_witnesses()
        self.threads = [
            threading.Thread(target=witness.run, args=(state_dir, SERVICE_VANTAGE), daemon=True,
                             kwargs={"interval_s": self.interval_s, "stop": self.stop},
                             name="countycloud-dr-vantage"),
            threading.Thread(target=self._loop, daemon=True, name="countycloud-dr-watch"),
        ]
        for thread in self.threads:
            thread.start()
        return self

    def keep_witnesses(self) -> None:
        """Each witness process running (started again if it died)."""
        for vantage in self.witnesses:
            if self.stop.is_set():
                return
            process = self.processes.get(vantage)
            if process is not None and process.poll() is None:
                continue
            if process is not None:
                log.warning("witness %s ended (%s); starting it again", vantage, process.returncode)
            with open(dr_dir(self.watch.state_dir) / f"witness-{vantage}.log", "ab") as out:
                self.processes[vantage] = subprocess.Popen(
                    witness_command(self.watch.state_dir, vantage, os.getpid()), cwd=PROJECT_ROOT,
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def _loop(self) -> None:
        next_tick = time.monotonic()
        while not self.stop.is_set():
            try:
                self.keep_witnesses()
                self.watch.tick()
            except Exception:  # the database away for a moment: judge again next second
                log.exception("site watch tick failed")
            next_tick += self.interval_s
            if next_tick < time.monotonic():
                next_tick = time.monotonic()  # a slow tick shortens the wait, never piles ticks up
            try:
                sooner = self.watch.hurry_in()
            except Exception:  # never let the hurry stop the watch: the grid still ticks
                log.exception("site watch: no hurry computed")
                sooner = None
            if sooner is not None and time.monotonic() + sooner < next_tick:
                # A site may be declared down any moment (or a grace period ends): look then, and
                # continue the grid from there.
                next_tick = time.monotonic() + sooner
            self.stop.wait(max(0.0, next_tick - time.monotonic()))

    def close(self, timeout_s: float = 5.0) -> None:
        self.stop.set()
        for thread in self.threads:  # first: the watch thread would start an ended witness again
            thread.join(timeout_s)
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


_running: Running | None = None


def witnesses_of(setting: str) -> tuple[str, ...]:
    """The setting's comma-separated vantage names (each checked as dr.observations does)."""
    names = tuple(name.strip() for name in setting.split(",") if name.strip())
    for name in names:
        observations.path_of(Path("."), name)  # ValueError for a bad name, before anything starts
    if SERVICE_VANTAGE in names:
        raise ValueError(f"{SERVICE_VANTAGE!r} is the service's own vantage point, not a witness")
    return names


def start(engine: Engine, state_dir: Path, sites: Callable[[], list[str]], policy: Policy,
          witnesses: Sequence[str], *, submit: Submit = submit_failover, prefetch: Prefetch | None = None,
          interval_s: float = 1.0) -> Running:
    """Start this process's site watch (once; a second call returns the running one)."""
    global _running
    if _running is None:
        watch = SiteWatch(engine, state_dir, sites, policy, submit=submit, prefetch=prefetch)
        _running = Running(watch, tuple(witnesses), interval_s).start()
        log.info("site watch started (automatic failover %s, grace %.0f s, witnesses %s)",
                 "on" if policy.automatic else "off", policy.grace_s, ", ".join(witnesses) or "none")
    return _running


def start_from_settings(engine: Engine, settings: Settings) -> Running:
    from controlplane import bootstrap

    return start(engine, settings.state_dir, bootstrap.site_names,
                 Policy(automatic=settings.dr_automatic, grace_s=settings.dr_grace_s),
                 witnesses_of(settings.dr_witnesses), prefetch=prefetch_points)


def stop() -> None:
    global _running
    if _running is not None:
        _running.close()
        _running = None
