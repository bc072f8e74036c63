"""What the service does about a site the watch declares down: the outage's lifecycle and the
automatic failover, as a plain function of the verdicts, the remembered outages and the clock.

Each tick (every second; sooner while a site may be declared down any moment, or when a grace
period ends: `hurry`) the service judges every site (dr.health over every vantage point's
observations) and calls `decide` per site:

- a site newly DOWN opens an **outage** (event SITE_DOWN: audited, shown on the console and in the
  metrics), remembered with when the quorum's evidence was in (`declared_at`) and when the site was
  last seen alive (`failed_since`, what the failover's RTO counts from);
- the outage lasts until the site is judged UP again (event SITE_UP). SUSPECT or UNKNOWN do not end
  it: a site flapping between DOWN and SUSPECT is one outage, so it gets one failover at most;
- a failover is due (action SUBMIT_FAILOVER) only when the automatic setting is on, the grace period
  has passed since `declared_at`, counties still run at the failed site, the site they go to is UP,
  and the outage has no failover job yet. Once a job is recorded for the outage (submitted here, or
  found: an operator pressed the button, another service process submitted it) no other is ever
  submitted for it, whatever happens to that job. A failed submission is retried after `retry_s`.

Nothing here reads a file, the database or the clock: dr.watchstate keeps the outages,
controlplane.site_watch carries out the actions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from dr.health import Opinion, SiteStatusReport, SiteVerdict, WatchRules

RETRY_S = 30.0  # a failed submission (database away, a conflicting job) is tried again this much later


class WatchEvent(StrEnum):
    """What is recorded (the audit log's action names)."""

    SITE_DOWN = "dr.site-down"
    SITE_UP = "dr.site-up"


class Action(StrEnum):
    SUBMIT_FAILOVER = "submit-failover"


class Policy(BaseModel):
    """The setting: automatic failover after `grace_s`, or (the default) an operator decides."""

    model_config = ConfigDict(frozen=True)

    automatic: bool = False
    grace_s: float = Field(default=30.0, ge=0)
    retry_s: float = Field(default=RETRY_S, gt=0)


class Outage(BaseModel):
    """One site's outage, from the watch declaring it down until it is judged up again."""

    model_config = ConfigDict(frozen=True)

    site: str
    declared_at: float  # when the quorum's evidence was in (the detection)
    failed_since: float  # the latest moment a deciding vantage point saw it alive: the failure's time
    noticed_at: float  # the tick that first saw the verdict DOWN
    to_site: str | None = None  # where its counties would go
    failover_job: str | None = None  # the one failover job of this outage, once there is one
    attempt_at: float | None = None  # the last failed submission
    attempt_error: str | None = None


@dataclass(frozen=True)
class SiteFacts:
    """What the edge knows of one site at this tick besides its verdict."""

    counties: int  # counties running there now (dr.records.running_at)
    to_site: str | None  # the other site, where its counties would go
    to_site_verdict: SiteVerdict  # the watch's verdict on that site
    existing_job: str | None = None  # a failover job of this site made since the outage was declared


class Status(StrEnum):
    """What the watch does about a site now (the console shows it, translated: STATUS_TEXT's keys)."""

    UP = "up"
    SUSPECT = "suspect"
    UNKNOWN = "unknown"
    RECOVERED = "recovered"
    FAILOVER_JOB = "failover-job"
    NOTHING_THERE = "nothing-there"
    WAITING_FOR_OPERATOR = "waiting-for-operator"
    GRACE = "grace"
    TARGET_NOT_UP = "target-not-up"
    RETRYING = "retrying"
    SUBMITTING = "submitting"


# English, with the status' values in braces; the console's i18n translates these very strings.
STATUS_TEXT: dict[Status, str] = {
    Status.UP: "up",
    Status.SUSPECT: "suspect: a vantage point sees a failure",
    Status.UNKNOWN: "unknown: no fresh observation",
    Status.RECOVERED: "up again: the outage is over",
    Status.FAILOVER_JOB: "down; failover job {job}",
    Status.NOTHING_THERE: "down; no county runs there",
    Status.WAITING_FOR_OPERATOR: "down; waiting for an operator (automatic failover is off)",
    Status.GRACE: "down; automatic failover in {seconds} s",
    Status.TARGET_NOT_UP: "down; the automatic failover waits for {site} to be up ({verdict})",
    Status.RETRYING: "down; the failover was not submitted ({error}); trying again in {seconds} s",
    Status.SUBMITTING: "down; submitting the failover",
}

_OF_VERDICT = {SiteVerdict.UP: Status.UP, SiteVerdict.SUSPECT: Status.SUSPECT,
               SiteVerdict.UNKNOWN: Status.UNKNOWN, SiteVerdict.DOWN: Status.UNKNOWN}


@dataclass(frozen=True)
class Decision:
    outage: Outage | None  # the outage after this tick (None: the site is not out)
    events: tuple[WatchEvent, ...] = ()
    actions: tuple[Action, ...] = ()
    status: Status = Status.UNKNOWN  # what the watch does about this site now
    status_args: tuple[tuple[str, str], ...] = ()

    @property
    def status_text(self) -> str:
        return STATUS_TEXT[self.status].format(**dict(self.status_args))


def _status(outage: Outage | None, events: tuple[WatchEvent, ...], status: Status,
            actions: tuple[Action, ...] = (), **args: object) -> Decision:
    return Decision(outage, events, actions, status, tuple((key, str(value)) for key, value in args.items()))


def failure_time(report: SiteStatusReport) -> float:
    """When the site failed, at the latest: after every deciding vantage point last saw it alive. The
    latest of those moments is the tightest bound, so the RTO counted from it never flatters."""
    seen_alive = [o.failing_since for o in report.opinions
                  if o.opinion is Opinion.FAILED and o.failing_since is not None]
    if seen_alive:
        return max(seen_alive)
    return report.declared_at if report.declared_at is not None else 0.0


def seen_failing_since(report: SiteStatusReport) -> float | None:
    """When the site failed, at the latest, as far as the watch can tell now: `failure_time` once it
    is DOWN; while SUSPECT, the latest moment a vantage point that sees it failing last saw it alive.
    None when no vantage point sees it failing (no watch runs, or the site is up): an operator's
    failover begun before the verdict then counts its RTO from the failure, not from the command."""
    if report.verdict is SiteVerdict.DOWN:
        return failure_time(report)
    if report.verdict is not SiteVerdict.SUSPECT:
        return None
    seen_alive = [o.failing_since for o in report.opinions
                  if o.opinion in (Opinion.FAILING, Opinion.FAILED) and o.failing_since is not None]
    return max(seen_alive) if seen_alive else None


def decide(report: SiteStatusReport, outage: Outage | None, facts: SiteFacts, policy: Policy,
           now: float) -> Decision:
    """This tick's decision for one site (see the module's text)."""
    if outage is None:
        if report.verdict is not SiteVerdict.DOWN:
            return _status(None, (), _OF_VERDICT[report.verdict])
        declared = report.declared_at if report.declared_at is not None else now
        outage = Outage(site=report.site, declared_at=declared, failed_since=failure_time(report),
                        noticed_at=now, to_site=facts.to_site)
        return _during(outage, facts, policy, now, (WatchEvent.SITE_DOWN,))
    if report.verdict is SiteVerdict.UP:
        return _status(None, (WatchEvent.SITE_UP,), Status.RECOVERED)
    return _during(outage, facts, policy, now, ())


def _during(outage: Outage, facts: SiteFacts, policy: Policy, now: float,
            events: tuple[WatchEvent, ...]) -> Decision:
    if outage.failover_job is None and facts.existing_job is not None:
        outage = outage.model_copy(update={"failover_job": facts.existing_job})
    if outage.failover_job is not None:
        return _status(outage, events, Status.FAILOVER_JOB, job=outage.failover_job)
    if facts.counties == 0:
        return _status(outage, events, Status.NOTHING_THERE)
    if not policy.automatic:
        return _status(outage, events, Status.WAITING_FOR_OPERATOR)
    due_at = outage.declared_at + policy.grace_s
    if now < due_at:
        return _status(outage, events, Status.GRACE, seconds=f"{due_at - now:.0f}")
    if facts.to_site is None or facts.to_site_verdict is not SiteVerdict.UP:
        return _status(outage, events, Status.TARGET_NOT_UP, site=facts.to_site or "-",
                       verdict=facts.to_site_verdict.value)
    if outage.attempt_at is not None and now - outage.attempt_at < policy.retry_s:
        return _status(outage, events, Status.RETRYING, error=outage.attempt_error or "",
                       seconds=f"{outage.attempt_at + policy.retry_s - now:.0f}")
    return _status(outage, events, Status.SUBMITTING, (Action.SUBMIT_FAILOVER,))


def submitted(outage: Outage, job_id: str) -> Outage:
    return outage.model_copy(update={"failover_job": job_id, "attempt_at": None, "attempt_error": None})


def not_submitted(outage: Outage, error: str, now: float) -> Outage:
    return outage.model_copy(update={"attempt_at": now, "attempt_error": error[:300]})


# While a site may be declared down any moment, the watch looks this often rather than every second.
# The quorum's evidence lands in a vantage point's file at any moment of the second, and a tick on the
# one-second grid noticed it up to a second later (half a second on average): that much later the
# automatic failover was submitted, in issue 15's 10 s for the first tier. A tick reads a few small
# files and writes one; five a second, for the few seconds of a suspicion, cost nothing that shows.
HURRY_S = 0.2


def hurry(reports: Mapping[str, SiteStatusReport], outages: Mapping[str, Outage], rules: WatchRules,
          policy: Policy, now: float) -> float | None:
    """Seconds until the next tick is wanted, when that is sooner than the regular one; else None.

    - HURRY_S while a site is SUSPECT and a vantage point saw it alive within `hold_s` +
      `stale_after_s`: its failure may be held by a quorum at any moment. A suspicion older than that
      (one vantage point cut off from a site for an hour) gets no hurry: had the others seen the
      failure, the site would be DOWN by now.
    - the end of an outage's grace period (automatic failover on, no job yet): the submission is due
      then, not at the next tick of the grid.
    """
    wanted: list[float] = []
    for report in reports.values():
        if report.verdict is not SiteVerdict.SUSPECT:
            continue
        recent = [o for o in report.opinions if o.opinion in (Opinion.FAILING, Opinion.FAILED)
                  and o.failing_since is not None
                  and now - o.failing_since <= rules.hold_s + rules.stale_after_s]
        if recent:
            wanted.append(HURRY_S)
    if policy.automatic:
        wanted += [found.declared_at + policy.grace_s - now for found in outages.values()
                   if found.failover_job is None and found.declared_at + policy.grace_s > now]
    return max(0.0, min(wanted)) if wanted else None
