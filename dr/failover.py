"""The failover job and the DR test job as step lists.

Failover: check -> fence -> restore-points -> recover -> report.
- check: the sites, the counties running at the failed site, the recovery plan's batches for them
  (tiers by order, `parallelism` at a time), the failure time RTO counts from;
- fence: dr.fence (destroy at the failed site if its daemon answers, else mark fenced);
- restore-points: each county's point at the offsite repository (the secondary's, read there): the
  one asked for, else the newest taken before the failure (the repository listed while the site is
  fenced: `prefetch_points`, or already while the service's site watch found the site suspect:
  `prefetch_for_suspect`);
- recover: the batches in order, each batch's counties at once (dr.bringup: restore, clone the
  site's template under the county's identity with the restored disk, activate, app ready, switch
  the address, probe through it); a county whose point does not verify comes back from the one
  before; a failed county does not stop the others, and the step fails at the end naming them;
- report: RTO and RPO per county (dr.report), kept with the job and as the site's last run.

DR test: the same restore and bring-up at the secondary under isolated names, UUIDs and ports, with
no fencing and no address switched (production keeps serving), then a report, then everything the
test made removed.

Every step is idempotent; `recover` keeps a record per county in the job's folder, so after a kill
-9 a rerun skips the counties that serve and never starts a second copy (one libvirt domain per
name and site).
"""

from __future__ import annotations

import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dr import bringup, fence, observations, outage, plans, records, report, restorepoints
from dr.bringup import CountyRun, Target
from dr.health import WatchRules
from dr.restorepoints import Point, PointError
from inventory.jobs import JobKind, Step, StepContext, StepResult, StepsBuilder
from provisioning import address, sites, vm
from provisioning.errors import ProvisioningError
from provisioning.platform import Platform

DEFAULT_PARALLELISM = 3
NO_PLAN_TIER = "all"
# The DR test's clones: their own ports, clear of the gateway's (21000-21999), the guests'
# (22000-22999), the backup servers' and restore clones' (23000-23399).
DR_TEST_PORTS = range(23400, 23600)
DR_TEST_SUFFIX = "drtest"
# Older points tried when the chosen one does not verify.
FALLBACK_POINTS = 3


class DrError(RuntimeError):
    pass


class FailoverArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    failed_site: str = "primary"
    to_site: str = "secondary"
    plan_file: str | None = None  # the recovery plan (YAML); None: one tier, DEFAULT_PARALLELISM at a time
    counties: list[str] | None = None  # only these (default: every county running at the failed site)
    points: dict[str, str] = {}  # county -> restore point id (default: the newest before the failure)
    failed_at: float | None = None  # epoch of the site failure; None: the site watch's, else the job's start
    cold: bool = False  # boot the golden image instead of cloning the template (for reference)


# --- results ------------------------------------------------------------------------------------

class Scope(StepResult):
    failed_site: str
    to_site: str
    failed_at: float
    batches: list[list[str]]
    tiers: dict[str, str]  # county -> tier
    tier_order: list[str]
    expected: dict[str, tuple[float, float]]  # tier -> (rto_s, rpo_s) the plan expects
    vms: dict[str, str]  # county -> its VM
    # DR test: county -> (name, uuid, ssh port, app port) of its isolated clone
    isolated: dict[str, tuple[str, str, int, int]] = Field(default_factory=dict)

    def summary(self) -> str:
        shown = " ".join("[" + " ".join(batch) + "]" for batch in self.batches)
        return f"{len(self.vms)} county(ies) from {self.failed_site} to {self.to_site}: {shown or 'none'}"


class Chosen(StepResult):
    points: dict[str, Point]
    fallbacks: dict[str, list[Point]] = Field(default_factory=dict)

    def summary(self) -> str:
        return "; ".join(f"{county} {point.short}" for county, point in sorted(self.points.items())) or "none"


class Recovered(StepResult):
    runs: list[CountyRun]

    def summary(self) -> str:
        return ", ".join(f"{run.county} ({run.how}, {sum(run.parts.values()):.1f} s)" for run in self.runs)


# --- pure parts ---------------------------------------------------------------------------------

def batches_for(plan: plans.RecoveryPlan | None, moving: Sequence[str],
                parallelism: int = DEFAULT_PARALLELISM) -> tuple[list[list[str]], dict[str, str], list[str]]:
    """The batches for the counties that move, in the plan's order (its batches without the counties
    that do not move; counties the plan does not name last, `parallelism` at a time); also each
    county's tier and the tiers in order."""
    wanted = set(moving)
    batches: list[list[str]] = []
    tiers: dict[str, str] = {}
    order: list[str] = []
    if plan is not None:
        for batch in plans.failover_batches(plan):
            chosen = [county for county in batch.counties if county in wanted]
            if chosen:
                batches.append(chosen)
                tiers.update({county: batch.tier for county in chosen})
                if batch.tier not in order:
                    order.append(batch.tier)
    rest = [county for county in moving if county not in tiers]
    for start in range(0, len(rest), parallelism):
        batches.append(rest[start:start + parallelism])
    if rest:
        tiers.update({county: NO_PLAN_TIER for county in rest})
        order.append(NO_PLAN_TIER)
    return batches, tiers, order


def isolated_identity(job_id: str, vm_name: str, ports: tuple[int, int]) -> tuple[str, str, int, int]:
    """A DR test clone's own name, UUID and ports (stable for the job: a rerun finds its clone)."""
    name = f"{vm_name[:63 - len(DR_TEST_SUFFIX) - 1]}-{DR_TEST_SUFFIX}"
    uuid = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"countycloud:dr-test:{job_id}:{vm_name}"))
    return name, uuid, ports[0], ports[1]


def free_ports(count: int, is_free: Callable[[int], bool], ports: range = DR_TEST_PORTS) -> list[int]:
    found = [port for port in ports if is_free(port)][:count]
    if len(found) < count:
        raise DrError(f"{count} free ports needed in {ports.start}-{ports.stop - 1} for the DR test's clones")
    return found


def choose_points(available: Mapping[str, Sequence[Point]], counties: Sequence[str],
                  wanted: Mapping[str, str], before: float) -> Chosen:
    """Each county's point (asked for, else the newest before the failure) and the older ones to fall
    back to (none for a point asked for: the operator chose it). DrError names every county without."""
    points, backups, missing = {}, {}, []
    for county in counties:
        try:
            point = restorepoints.choose(available.get(county, []), wanted.get(county), before=before)
        except PointError as error:
            missing.append(f"{county}: {error}")
            continue
        points[county] = point
        if county not in wanted:
            backups[county] = restorepoints.fallbacks(available.get(county, []), point)[:FALLBACK_POINTS]
    if missing:
        raise DrError("no usable restore point for " + "; ".join(missing))
    return Chosen(points=points, fallbacks=backups)


# --- steps --------------------------------------------------------------------------------------

def _load_plan(platform: Platform, plan_file: str | None) -> plans.RecoveryPlan | None:
    if plan_file is None:
        return None
    return plans.load_file(plan_file, records.county_slugs(platform.engine))


# A failover or failback asked for but not begun within this long (its service was down, or its
# worker gone) is refused when it finally begins: the sites and counties it was asked for may be
# another world by then (seen: a request left by a test, run by a service started an hour later,
# fenced a county that had been created since). Resubmitting it is one command.
STALE_REQUEST_AFTER = timedelta(minutes=15)


def refuse_if_stale(what: str, submitted: datetime | None, now: datetime,
                    limit: timedelta = STALE_REQUEST_AFTER) -> None:
    """Pure: a DrError when the request waited longer than `limit` before its first step."""
    if submitted is not None and now - submitted > limit:
        raise DrError(f"this {what} was asked for at {submitted:%Y-%m-%d %H:%M:%S} UTC and only begins now "
                      f"({(now - submitted).total_seconds() / 60:.0f} min later, more than "
                      f"{limit.total_seconds() / 60:.0f}); nothing was done: ask for it again if it is "
                      "still wanted")


def _check(platform: Platform, args: FailoverArgs, ctx: StepContext, *, isolated: bool) -> Scope:
    if not isolated:  # a DR test touches no production: late, it is still only a test
        refuse_if_stale("failover", records.submitted_at(platform.engine, ctx.job_id), datetime.now(UTC))
    if args.failed_site == args.to_site:
        raise DrError(f"cannot fail over {args.failed_site} to itself")
    if sites.state(platform.site(args.to_site)) is not sites.SiteState.UP:
        raise DrError(f"site {args.to_site} is down; start it with `countycloud site start {args.to_site}`")
    try:
        restorepoints.check_repository(platform, args.to_site)
    except PointError as error:
        raise DrError(str(error)) from None
    running = records.running_at(platform.engine, args.failed_site)
    vms = {vm.tenant: vm.vm for vm in running}
    if args.counties is not None:
        unknown = sorted(set(args.counties) - set(vms))
        if unknown:
            raise DrError(f"not running at {args.failed_site}: {', '.join(unknown)}")
        vms = {county: name for county, name in vms.items() if county in args.counties}
    plan = _load_plan(platform, args.plan_file)
    batches, tiers, order = batches_for(plan, sorted(vms))
    expected = {tier.name: (float(tier.rto_s), float(tier.rpo_s)) for tier in plan.tiers} if plan else {}
    chosen: dict[str, tuple[str, str, int, int]] = {}
    if isolated:
        ports = free_ports(2 * len(vms), address.port_free)
        for index, (county, name) in enumerate(sorted(vms.items())):
            chosen[county] = isolated_identity(ctx.job_id, name, (ports[2 * index], ports[2 * index + 1]))
    return Scope(failed_site=args.failed_site, to_site=args.to_site,
                 failed_at=_failure_time(platform, args, isolated=isolated),
                 batches=batches, tiers=tiers, tier_order=order, expected=expected, vms=vms, isolated=chosen)


def _failure_time(platform: Platform, args: FailoverArgs, *, isolated: bool) -> float:
    """What RTO counts from: the time asked for; else, for a failover, when the site watch's vantage
    points last saw the failed site alive (an operator's command comes seconds or minutes after the
    failure); else (a DR test, or no watch running) now."""
    if args.failed_at is not None:
        return args.failed_at
    now = time.time()
    if isolated:
        return now
    judged = observations.verdicts(platform.state_dir, [args.failed_site], WatchRules(), now)
    seen = outage.seen_failing_since(judged[args.failed_site])
    return seen if seen is not None and seen <= now else now


# The restore points are listed (one `restic snapshots`: a process and the repository key's
# derivation, 0.6-0.8 s measured) while the failed site is fenced rather than after: neither needs the
# other, and fencing waits up to its daemon question's timeout for a site that does not refuse but
# is unreachable. The check step starts the listing; the restore-points step takes it if it is this
# recent, else (a process resuming the job after a crash has none) it lists itself, as always.
PREFETCH_FRESH_S = 60.0
# A listing from the site's suspicion: the verdict follows within seconds (dr.health's hold_s);
# an older one is of a suspicion that passed, and points may have landed since.
SUSPECT_FRESH_S = 15.0


@dataclass(frozen=True)
class _Listing:
    site: str
    started: float  # time.monotonic()
    points: Future[dict[str, list[Point]]]


_listings: dict[str, _Listing] = {}  # job id -> its listing started early
_listings_lock = threading.Lock()


def prefetch_points(platform: Platform, job_id: str, site: str) -> None:
    """Start listing `site`'s restore points for the job's restore-points step (unless a listing from
    the failed site's suspicion is under way: a second `restic snapshots` would only compete with it
    for the cores)."""
    with _listings_lock:
        suspected = _listings.get(_suspect_key(site))
    if (job_id != _suspect_key(site) and suspected is not None
            and time.monotonic() - suspected.started <= SUSPECT_FRESH_S):
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dr-points")
    listing = _Listing(site, time.monotonic(), pool.submit(restorepoints.list_points, platform, site))
    pool.shutdown(wait=False)
    with _listings_lock:
        for stale in [job for job, old in _listings.items()
                      if listing.started - old.started > PREFETCH_FRESH_S]:  # a job that failed in between
            del _listings[stale]
        _listings[job_id] = listing


def _suspect_key(site: str) -> str:
    return f"suspect-of-site:{site}"


def prefetch_for_suspect(platform: Platform, to_site: str) -> None:
    """Start listing `to_site`'s restore points because the site whose counties would come back there
    is suspect: the verdict DOWN comes `hold_s` later (dr.health), and a failover then begun in this
    process (the watch's, or one asked for through the API) takes the listing instead of waiting
    for its own (0.4-0.6 s of tier-1's RTO). The site has already failed its checks, so the listing
    holds every point taken before the failure, but for an offsite copy still landing: that county
    then comes back from the point before (a worse RPO, never wrong data); and no listing older than
    SUSPECT_FRESH_S is taken."""
    prefetch_points(platform, _suspect_key(to_site), to_site)


def listed_points(platform: Platform, job_id: str, site: str) -> dict[str, list[Point]]:
    """`site`'s restore points: a listing started while the failed site was suspect or the job's own
    early one, if recent, else listed now. An early listing that failed is listed again now, so the
    step fails (or not) as it did without it."""
    with _listings_lock:
        suspected = _listings.pop(_suspect_key(site), None)
        early = _listings.pop(job_id, None)
    now = time.monotonic()
    for listing, fresh_s in ((suspected, SUSPECT_FRESH_S), (early, PREFETCH_FRESH_S)):
        if listing is None or listing.site != site or now - listing.started > fresh_s:
            continue
        try:
            return listing.points.result()
        except Exception:  # the listing below says what is wrong, if anything still is
            pass
    return restorepoints.list_points(platform, site)


def _fence(platform: Platform, ctx: StepContext) -> fence.Fenced:
    scope = ctx.result("check", Scope)
    running = [vm for vm in records.running_at(platform.engine, scope.failed_site) if vm.tenant in scope.vms]
    return fence.fence(platform, scope.failed_site, running, job_id=ctx.job_id, log=ctx.log)


def _points(platform: Platform, args: FailoverArgs, ctx: StepContext) -> Chosen:
    scope = ctx.result("check", Scope)
    available = listed_points(platform, ctx.job_id, scope.to_site)
    chosen = choose_points(available, sorted(scope.vms), args.points, scope.failed_at)
    replicated = {county: restorepoints.newest_replicated(platform, county, scope.to_site, scope.failed_at)
                  for county in chosen.points if county not in args.points}
    return with_replicated(chosen, replicated)


def with_replicated(chosen: Chosen, replicated: Mapping[str, Point | None]) -> Chosen:
    """Pure: each county's replicated state where it is newer than its backup point, the backup
    point then first among its fallbacks (a state that does not restore falls back to it)."""
    points, fallbacks = dict(chosen.points), {k: list(v) for k, v in chosen.fallbacks.items()}
    for county, state in replicated.items():
        point, before = restorepoints.prefer_replicated(points[county], state)
        if before:
            points[county] = point
            fallbacks[county] = [*before, *fallbacks.get(county, [])][:FALLBACK_POINTS]
    return Chosen(points=points, fallbacks=fallbacks)


def _target(platform: Platform, scope: Scope, county: str, args: FailoverArgs) -> Target:
    plan = records.county_plan(platform.engine, county, scope.to_site)
    if county in scope.isolated:
        name, uuid, ssh_port, app_port = scope.isolated[county]
        return Target(site=scope.to_site, plan=replace(plan, name=name, uuid=uuid, ssh_port=ssh_port,
                                                          app_port=app_port), switch=False, cold=args.cold)
    return Target(site=scope.to_site, plan=plan, switch=True, cold=args.cold)


def _recover_one(platform: Platform, args: FailoverArgs, scope: Scope, chosen: Chosen, county: str,
                 workdir: Path, log: Callable[[str], None]) -> CountyRun:
    target = _target(platform, scope, county, args)
    tried = [chosen.points[county], *chosen.fallbacks.get(county, [])]
    for attempt, point in enumerate(tried):
        try:
            return bringup.bring_up(platform, county, point, target, workdir, log=log)
        except PointError as error:
            if attempt + 1 == len(tried):
                raise
            log(f"{county}: {error}; trying the restore point before it ({tried[attempt + 1].short})")
    raise AssertionError("unreachable")


def locked_log(ctx: StepContext) -> Callable[[str], None]:
    """The step's log for counties worked on in threads: one line at a time."""
    lock = threading.Lock()

    def log(line: str) -> None:
        with lock:
            ctx.log(line)
    return log


def _recover(platform: Platform, args: FailoverArgs, ctx: StepContext) -> Recovered:
    scope, chosen = ctx.result("check", Scope), ctx.result("restore-points", Chosen)
    workdir = ctx.artifacts / "counties"
    workdir.mkdir(parents=True, exist_ok=True)
    log = locked_log(ctx)
    runs: list[CountyRun] = []
    failed: dict[str, str] = {}
    for number, batch in enumerate(scope.batches, 1):
        began = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(batch), thread_name_prefix="dr-county") as pool:
            futures = {county: pool.submit(_recover_one, platform, args, scope, chosen, county, workdir, log)
                       for county in batch}
        for county, future in futures.items():
            error = future.exception()
            if error is None:
                runs.append(future.result())
            else:
                failed[county] = f"{type(error).__name__}: {error}"
                log(f"{county}: FAILED: {failed[county]}")
        log(f"batch {number} [{' '.join(batch)}] ({scope.tiers.get(batch[0], '')}): "
            f"{time.monotonic() - began:.1f} s; {time.time() - scope.failed_at:.1f} s after the failure")
    if failed:
        raise DrError(f"{len(failed)} county(ies) not recovered (rerun to retry them): "
                      + "; ".join(f"{county}: {why}" for county, why in failed.items()))
    return Recovered(runs=runs)


def _report(platform: Platform, kind: report.RunKind, ctx: StepContext) -> report.Report:
    scope, recovered = ctx.result("check", Scope), ctx.result("recover", Recovered)
    fenced = ctx.result_or_none("fence", fence.Fenced)
    done = report.build(kind, ctx.job_id, scope.failed_site, scope.to_site, scope.failed_at, recovered.runs,
                        scope.tiers, scope.tier_order, expected=scope.expected,
                        fence=fenced.model_dump(mode="json") if fenced else None)
    (ctx.artifacts / "report.json").write_text(done.model_dump_json(indent=1))
    report.save_last(platform.state_dir, done)
    return done


def _clean_up(platform: Platform, ctx: StepContext) -> str:
    """The DR test's clones, their disks and restored disks removed; production untouched."""
    scope, recovered = ctx.result("check", Scope), ctx.result_or_none("recover", Recovered)
    removed = []
    with platform.hypervisor(scope.to_site) as hv:
        for county, (name, _uuid, _ssh, _app) in sorted(scope.isolated.items()):
            vm.tear_down(hv, name, vm.vm_disks(platform, scope.to_site, name), purge=True)
            removed.append(name)
            for restored in (platform.site(scope.to_site).disks / "restored").glob(f"{name}-*.img"):
                restored.unlink()
            del county
    for scratch in (ctx.artifacts / "counties").glob("*-tenant.db"):
        scratch.unlink()
    served = len(recovered.runs) if recovered else 0
    return f"removed {len(removed)} clone(s) and their disks ({served} had served)"


def failover_steps(raw: Mapping[str, Any], platform: Platform) -> list[Step]:
    args = FailoverArgs.model_validate(raw)
    def check(ctx: StepContext) -> Scope:
        scope = _check(platform, args, ctx, isolated=False)
        prefetch_points(platform, ctx.job_id, scope.to_site)  # listed while the site is fenced
        return scope

    return [
        Step("check", check, "sites, the counties to move, the plan's batches, the failure time"),
        Step("fence", lambda ctx: _fence(platform, ctx), "no county writable at two sites"),
        Step("restore-points", lambda ctx: _points(platform, args, ctx), "each county's restore point"),
        Step("recover", lambda ctx: _recover(platform, args, ctx),
             "by batches: restore, clone, activate, switch the address, probe"),
        Step("report", lambda ctx: _report(platform, report.RunKind.FAILOVER, ctx), "RTO and RPO per county"),
    ]


def dr_test_steps(raw: Mapping[str, Any], platform: Platform) -> list[Step]:
    args = FailoverArgs.model_validate(raw)
    return [
        Step("check", lambda ctx: _check(platform, args, ctx, isolated=True),
             "the counties, their batches, isolated names and ports"),
        Step("restore-points", lambda ctx: _points(platform, args, ctx), "each county's restore point"),
        Step("recover", lambda ctx: _recover(platform, args, ctx),
             "by batches: restore, clone under an isolated name, probe (no address switched)"),
        Step("report", lambda ctx: _report(platform, report.RunKind.DR_TEST, ctx), "RTO and RPO per county"),
        Step("clean-up", lambda ctx: _clean_up(platform, ctx), "the test's clones and disks removed"),
    ]


def builders() -> dict[JobKind, StepsBuilder]:
    """What the control plane registers (controlplane/bootstrap.register_job_builders)."""
    from dr import failback

    return {JobKind.FAILOVER: failover_steps, JobKind.DR_TEST: dr_test_steps,
            JobKind.FAILBACK: failback.failback_steps}


__all__ = ["DrError", "FailoverArgs", "ProvisioningError", "builders", "dr_test_steps", "failover_steps"]
