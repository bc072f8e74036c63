"""The DR use cases: failover, DR test and failback jobs, and the last report of each. Role
`operator` (Action.DR); the CLI, the API and the console call these, through operations' own
submit/run (authorize, validate, audit, job)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from controlplane import bootstrap
from controlplane.actors import Actor
from controlplane.errors import InvalidInput
from controlplane.operations import JobRef, JobRequest, authorize, submit
from controlplane.roles import Action
from dr import plans, records, report, watchstate
from dr.failback import FailbackArgs
from dr.failover import FailoverArgs
from inventory.jobs import JobKind


def _sites(*names: str) -> None:
    known = bootstrap.site_names()
    for name in names:
        if name not in known:
            raise InvalidInput(f"unknown site {name!r}; sites: {', '.join(known)}")


def _model(model: type[FailoverArgs] | type[FailbackArgs], values: dict[str, Any]) -> dict[str, Any]:
    from pydantic import ValidationError

    try:
        return model.model_validate(values).model_dump()
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise InvalidInput(problems) from None


def _failover_args(failed_site: str, to_site: str, plan_file: str | None, counties: list[str] | None,
                   points: dict[str, str] | None, failed_at: float | None, cold: bool) -> dict[str, Any]:
    _sites(failed_site, to_site)
    if failed_site == to_site:
        raise InvalidInput(f"cannot fail over {failed_site} to itself")
    if plan_file is not None:
        plan_file = str(Path(plan_file).resolve())
        plans.load_file(plan_file, records.county_slugs(bootstrap.engine()))  # PlanError: invalid input
    return _model(FailoverArgs, {"failed_site": failed_site, "to_site": to_site, "plan_file": plan_file,
                                 "counties": counties, "points": points or {}, "failed_at": failed_at,
                                 "cold": cold})


def request_failover(actor: Actor, *, failed_site: str = "primary", to_site: str = "secondary",
                     plan_file: str | None = None, counties: list[str] | None = None,
                     points: dict[str, str] | None = None, failed_at: float | None = None,
                     cold: bool = False) -> JobRequest:
    authorize(actor, Action.DR)
    args = _failover_args(failed_site, to_site, plan_file, counties, points, failed_at, cold)
    return JobRequest(actor, Action.DR, JobKind.FAILOVER, failed_site, args, site=to_site)


def request_dr_test(actor: Actor, *, source_site: str = "primary", to_site: str = "secondary",
                    plan_file: str | None = None, counties: list[str] | None = None,
                    points: dict[str, str] | None = None) -> JobRequest:
    authorize(actor, Action.DR)
    args = _failover_args(source_site, to_site, plan_file, counties, points, None, False)
    return JobRequest(actor, Action.DR, JobKind.DR_TEST, source_site, args, site=to_site)


def request_failback(actor: Actor, *, from_site: str = "secondary", to_site: str = "primary",
                     counties: list[str] | None = None) -> JobRequest:
    authorize(actor, Action.DR)
    _sites(from_site, to_site)
    args = _model(FailbackArgs, {"from_site": from_site, "to_site": to_site, "counties": counties})
    return JobRequest(actor, Action.DR, JobKind.FAILBACK, to_site, args, site=to_site)


def failover(actor: Actor, **options: Any) -> JobRef:
    return submit(request_failover(actor, **options))


def dr_test(actor: Actor, **options: Any) -> JobRef:
    return submit(request_dr_test(actor, **options))


def failback(actor: Actor, **options: Any) -> JobRef:
    return submit(request_failback(actor, **options))


def last_report(actor: Actor, kind: report.RunKind) -> dict[str, Any] | None:
    authorize(actor, Action.READ)
    found = report.load_last(bootstrap.settings().state_dir, kind)
    return found.model_dump(mode="json") if found else None


def site_watch(actor: Actor) -> watchstate.WatchState | None:
    """The site watch as the service last saw it (each site's verdict, open outages, the setting);
    None when no site watch runs with this state folder."""
    authorize(actor, Action.READ)
    state_dir = bootstrap.settings().state_dir
    return watchstate.load(state_dir) if watchstate.state_path(state_dir).exists() else None
