"""The failback job: counties running at the secondary after a failover go home, nothing lost.

check -> unfence -> drain -> final-copy -> stop -> recover -> verify -> switch -> report.
- unfence: the fenced copies at the home site are undefined there (their disks kept) and forgotten;
- drain: each county's VM out of its address (marked FENCED: it must never serve again as it is),
  so no write can be acknowledged at the secondary from now on;
- final-copy: the database copied consistently out of the drained guest (SQLite's online backup,
  over SSH, as a backup round does), integrity-checked; its figures recorded;
- stop: the secondary's VM undefined (its disks kept);
- recover: dr.bringup at the home site from the final copy (its app answers; no address yet);
- verify: the served database's figures equal the final copy's: every committed write came home
  (before any new write can reach it);
- replicas: a replicated county's replica at the secondary set aside (its stream ended at the
  failover); the stream resumes from home with a new replica;
- switch: the address back home, probed through it.
Protection resumes from the home site by itself: backup rounds run where the county runs.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from backup import consistent, figures, replication
from backup.platformdb import CopyCheck, check_sqlite
from dr import bringup, fence, records, report, restorepoints
from dr.bringup import Target
from dr.failover import DEFAULT_PARALLELISM, DrError, Recovered, Scope, locked_log, refuse_if_stale
from dr.restorepoints import Point
from inventory import queries
from inventory.db import session_scope
from inventory.jobs import Step, StepContext, StepResult
from provisioning import address, sites, vm
from provisioning import records as provisioning_records
from provisioning.platform import Platform

DRAIN_SETTLE_S = 1.0  # requests already inside the app finish (HAProxy reloads hitlessly)

T = TypeVar("T")


def each_county(counties: Iterable[str], work: Callable[[str], T]) -> dict[str, T]:
    """`work` for every county, DEFAULT_PARALLELISM at a time as a failover's tier runs (each
    county's downtime is its own: one after the other, the last of 13 waited for all the others).
    Every county's work ends before the first error is raised; each is idempotent, so a rerun of the
    step redoes only what did not finish."""
    with ThreadPoolExecutor(max_workers=DEFAULT_PARALLELISM, thread_name_prefix="failback") as pool:
        futures = {county: pool.submit(work, county) for county in sorted(counties)}
    return {county: future.result() for county, future in futures.items()}


class FailbackArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    from_site: str = "secondary"
    to_site: str = "primary"
    counties: list[str] | None = None


class Drained(StepResult):
    at: float
    vms: dict[str, str]

    def summary(self) -> str:
        return f"{len(self.vms)} county(ies) out of their addresses"


class FinalCopies(StepResult):
    points: dict[str, Point]

    def summary(self) -> str:
        return ", ".join(f"{county} ({len(point.recorded)} figures)"
                         for county, point in sorted(self.points.items()))


def away_from_home(platform: Platform, from_site: str, to_site: str) -> dict[str, str]:
    """county -> VM, for the counties whose home is `to_site` and who run at `from_site`."""
    with session_scope(platform.engine) as session:
        found = {}
        for tenant in queries.list_tenants(session):
            if tenant.home_site.name == to_site and tenant.current_site.name == from_site:
                vms = queries.vms_of(tenant)
                if len(vms) == 1:
                    found[tenant.slug] = vms[0].name
        return found


def _check(platform: Platform, args: FailbackArgs, ctx: StepContext) -> Scope:
    refuse_if_stale("failback", records.submitted_at(platform.engine, ctx.job_id), datetime.now(UTC))
    if sites.state(platform.site(args.to_site)) is not sites.SiteState.UP:
        raise DrError(f"site {args.to_site} is down; start it with `countycloud site start {args.to_site}`")
    vms = away_from_home(platform, args.from_site, args.to_site)
    if args.counties is not None:
        unknown = sorted(set(args.counties) - set(vms))
        if unknown:
            raise DrError(f"not running at {args.from_site} away from {args.to_site}: {', '.join(unknown)}")
        vms = {county: name for county, name in vms.items() if county in args.counties}
    return Scope(failed_site=args.from_site, to_site=args.to_site, failed_at=time.time(),
                 batches=[sorted(vms)] if vms else [], tiers={county: "failback" for county in vms},
                 tier_order=["failback"], expected={}, vms=vms)


def _unfence(platform: Platform, ctx: StepContext) -> str:
    scope = ctx.result("check", Scope)
    removed = fence.unfence(platform, scope.to_site, list(scope.vms.values()), log=ctx.log)
    return f"{len(removed)} fenced copy(ies) removed at {scope.to_site}"


def _drain(platform: Platform, ctx: StepContext) -> Drained:
    scope = ctx.result("check", Scope)
    began = time.time()
    for county, name in sorted(scope.vms.items()):
        records.mark_fenced(platform.engine, name, note=f"drained at {scope.failed_site} for failback")
        ctx.log(f"{county}: {name} out of its address")
    vm.point_address(platform, provisioning_records.frontends(platform.engine))
    time.sleep(DRAIN_SETTLE_S)
    return Drained(at=began, vms=scope.vms)


def final_point(county: str, job_id: str, at: float, recorded: dict[str, str]) -> Point:
    tag = hashlib.sha256(f"{job_id}:{county}".encode()).hexdigest()[:8]
    return Point(county=county, snapshot_id=tag, taken_at=at, recorded=recorded)


def _final_copy(platform: Platform, ctx: StepContext) -> FinalCopies:
    scope = ctx.result("check", Scope)
    workdir = ctx.artifacts / "counties"
    workdir.mkdir(parents=True, exist_ok=True)
    log = locked_log(ctx)

    def copy(county: str) -> Point:
        plan = records.county_plan(platform.engine, county, scope.failed_site)
        point = final_point(county, ctx.job_id, time.time(), {})
        target, marker = restorepoints.staged_paths(workdir, point)
        if not marker.exists():
            consistent.stage(consistent.guest_copy_argv(platform.ssh_key, plan.ssh_port), target)
            check_sqlite(target, CopyCheck.FULL)
            marker.touch()
        found = figures.read(target)
        log(f"{county}: final copy, {found.summary()}")
        return point.model_copy(update={"recorded": found.tags()})
    return FinalCopies(points=each_county(scope.vms, copy))


def _stop(platform: Platform, ctx: StepContext) -> str:
    scope = ctx.result("check", Scope)
    with platform.hypervisor(scope.failed_site) as hv:
        for name in scope.vms.values():
            vm.tear_down(hv, name, vm.vm_disks(platform, scope.failed_site, name), purge=False)
    return f"{len(scope.vms)} VM(s) undefined at {scope.failed_site}, their data disks kept"


def _recover(platform: Platform, ctx: StepContext) -> Recovered:
    scope, copies = ctx.result("check", Scope), ctx.result("final-copy", FinalCopies)
    workdir = ctx.artifacts / "counties"
    log = locked_log(ctx)

    def recover(county: str) -> bringup.CountyRun:
        plan = records.county_plan(platform.engine, county, scope.to_site)
        target = Target(scope.to_site, plan, switch=False)  # switched after `verify`
        return bringup.bring_up(platform, county, copies.points[county], target, workdir, log=log)
    return Recovered(runs=list(each_county(scope.vms, recover).values()))


def _verify(platform: Platform, ctx: StepContext) -> str:
    scope, copies = ctx.result("check", Scope), ctx.result("final-copy", FinalCopies)

    def verify(county: str) -> None:
        plan = records.county_plan(platform.engine, county, scope.to_site)
        served = ctx.artifacts / "counties" / f"{county}-served.db"
        consistent.stage(consistent.guest_copy_argv(platform.ssh_key, plan.ssh_port), served)
        differ = figures.differences(copies.points[county].recorded, figures.read(served))
        if differ:
            raise DrError(f"{county}: the database served at {scope.to_site} differs from the final copy: "
                          + "; ".join(differ))
        served.unlink()
    said = each_county(scope.vms, verify)
    return f"{len(said)} county(ies) serve exactly their final state: 0 committed writes lost"


def _replicas(platform: Platform, ctx: StepContext) -> str:
    """Each county's replica at the site it comes from set aside: its stream ended at the failover,
    and the county comes home with the final copy, which is newer. Left served, its states would be
    a later failover's choice over the backups taken at home (replication.set_aside)."""
    scope = ctx.result("check", Scope)
    kept = [county for county in sorted(scope.vms)
            if replication.set_aside(platform, county, ctx.job_id, scope.failed_site) is not None]
    for county in kept:
        ctx.log(f"{county}: its replica at {scope.failed_site} set aside; the stream resumes at home")
    return f"{len(kept)} replica(s) set aside"


def _switch(platform: Platform, ctx: StepContext) -> Recovered:
    """Each verified county back behind its address, probed through it; its run's times completed."""
    scope, recovered = ctx.result("check", Scope), ctx.result("recover", Recovered)
    runs = []
    for run in recovered.runs:
        plan = records.county_plan(platform.engine, run.county, scope.to_site)
        began = time.monotonic()
        gateway = bringup.switch_address(platform, run.county, scope.to_site, plan, note="failed back")
        switched = time.monotonic()
        address.wait_healthy(gateway, timeout_s=bringup.PROBE_TIMEOUT_S)
        parts = {**run.parts, "switch": round(switched - began, 3),
                 "probe": round(time.monotonic() - switched, 3)}
        runs.append(run.model_copy(update={"parts": parts, "serving_at": time.time(),
                                           "address_port": gateway}))
    return Recovered(runs=runs)


def _report(platform: Platform, ctx: StepContext) -> report.Report:
    scope, recovered = ctx.result("check", Scope), ctx.result("switch", Recovered)
    drained = ctx.result("drain", Drained)
    done = report.build(report.RunKind.FAILBACK, ctx.job_id, scope.failed_site, scope.to_site, drained.at,
                        recovered.runs, scope.tiers, scope.tier_order, zero_rpo=True)
    (ctx.artifacts / "report.json").write_text(done.model_dump_json(indent=1))
    report.save_last(platform.state_dir, done)
    return done


def failback_steps(raw: Mapping[str, Any], platform: Platform) -> list[Step]:
    args = FailbackArgs.model_validate(raw)
    return [
        Step("check", lambda ctx: _check(platform, args, ctx),
             "the home site is up; the counties away from it"),
        Step("unfence", lambda ctx: _unfence(platform, ctx), "fenced copies at home removed (disks kept)"),
        Step("drain", lambda ctx: _drain(platform, ctx), "out of their addresses: no write accepted"),
        Step("final-copy", lambda ctx: _final_copy(platform, ctx), "consistent copy of each database"),
        Step("stop", lambda ctx: _stop(platform, ctx), "the secondary's VMs undefined (disks kept)"),
        Step("recover", lambda ctx: _recover(platform, ctx), "at home from the final copy (no address)"),
        Step("verify", lambda ctx: _verify(platform, ctx), "served figures equal the final copy's"),
        Step("replicas", lambda ctx: _replicas(platform, ctx), "the ended streams' replicas set aside"),
        Step("switch", lambda ctx: _switch(platform, ctx), "addresses back home, probed through them"),
        Step("report", lambda ctx: _report(platform, ctx), "downtime per county"),
    ]
