"""`countycloud dr failover | test | failback | report | watch`: disaster recovery between the two
sites."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from controlplane import dr_ops
from controlplane.actors import cli_actor
from controlplane.cli.common import EXIT_USAGE, console, errors, user_errors
from controlplane.cli.tenant import run_job
from dr.report import RunKind

dr_app = typer.Typer(no_args_is_help=True, help="Disaster recovery: failover, DR test, failback, reports.")
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
Counties = Annotated[list[str] | None, typer.Option("--county", help="Only this county (repeatable).")]
PlanFile = Annotated[str | None, typer.Option("--plan", help="The recovery plan (YAML).")]
Points = Annotated[list[str] | None, typer.Option(
    "--point", help="COUNTY=SNAPSHOT: restore this county from that point (repeatable).")]


def register(app: typer.Typer) -> None:
    app.add_typer(dr_app, name="dr")


def _points(given: list[str] | None) -> dict[str, str]:
    points = {}
    for item in given or []:
        county, _, snapshot = item.partition("=")
        if not county or not snapshot:
            errors.print(f"--point {item!r}: write COUNTY=SNAPSHOT")
            raise typer.Exit(EXIT_USAGE)
        points[county] = snapshot
    return points


def _show(kind: RunKind, as_json: bool) -> None:
    with user_errors():
        found = dr_ops.last_report(cli_actor(), kind)
    if as_json:
        console.print_json(json.dumps(found))
        return
    if found is None:
        console.print(f"no {kind.value} has run yet")
        return
    table = Table("county", "tier", "restore point", "RTO s", "RPO s", "parts (s)")
    for row in found["counties"]:
        parts = " ".join(f"{name} {seconds:.1f}" for name, seconds in row["parts"].items())
        table.add_row(row["county"], row["tier"], row["snapshot"][:8], f"{row['rto_s']:.1f}",
                      f"{row['rpo_s']:.1f}", parts)
    console.print(f"{kind.value} {found['job_id']}: {found['from_site']} -> {found['to_site']}, "
                  f"failure at {found['failed_at']}")
    console.print(table)


@dr_app.command("failover")
def failover_command(
    from_site: Annotated[str, typer.Option("--from", help="The failed site.")] = "primary",
    to_site: Annotated[str, typer.Option("--to", help="Where the counties come back.")] = "secondary",
    plan: PlanFile = None, county: Counties = None, point: Points = None,
    failed_at: Annotated[float | None, typer.Option(
        "--failed-at", help="When the site failed (epoch seconds); RTO counts from it. Default: when the "
        "site watch last saw the failed site alive, if it sees it failing; else now.",
    )] = None,
    cold: Annotated[bool, typer.Option(
        "--cold", help="Boot the image instead of cloning the template.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Fence the failed site, then bring every county running there up at the other site from its
    restore point, in the recovery plan's order, and move its address (a resumable job)."""
    with user_errors():
        request = dr_ops.request_failover(
            cli_actor(), failed_site=from_site, to_site=to_site, plan_file=plan, counties=county,
            points=_points(point), failed_at=failed_at, cold=cold)
    run_job(request, quiet=as_json)
    _show(RunKind.FAILOVER, as_json)


@dr_app.command("test")
def test_command(
    from_site: Annotated[str, typer.Option("--from", help="The site whose counties are tested.")] = "primary",
    to_site: Annotated[str, typer.Option("--to", help="Where they come up in isolation.")] = "secondary",
    plan: PlanFile = None, county: Counties = None, point: Points = None, as_json: JsonOption = False,
) -> None:
    """DR test: every county brought up at the other site under isolated names and ports, probed,
    reported and removed; no address is switched."""
    with user_errors():
        request = dr_ops.request_dr_test(cli_actor(), source_site=from_site, to_site=to_site, plan_file=plan,
                                         counties=county, points=_points(point))
    run_job(request, quiet=as_json)
    _show(RunKind.DR_TEST, as_json)


@dr_app.command("failback")
def failback_command(
    from_site: Annotated[str, typer.Option("--from", help="Where the counties run now.")] = "secondary",
    to_site: Annotated[str, typer.Option("--to", help="Their home site.")] = "primary",
    county: Counties = None, as_json: JsonOption = False,
) -> None:
    """Bring the counties home: drain, final copy, restore at home, switch, verify (0 writes lost)."""
    with user_errors():
        request = dr_ops.request_failback(cli_actor(), from_site=from_site, to_site=to_site, counties=county)
    run_job(request, quiet=as_json)
    _show(RunKind.FAILBACK, as_json)


@dr_app.command("report")
def report_command(
    kind: Annotated[RunKind, typer.Argument(help="failover, dr_test or failback")] = RunKind.FAILOVER,
    as_json: JsonOption = False,
) -> None:
    """The last run's report: per county the restore point, RTO, RPO and each part's time."""
    _show(kind, as_json)


@dr_app.command("watch")
def watch_command(as_json: JsonOption = False) -> None:
    """The site watch as the service last saw it: each site's verdict and what is done about it."""
    with user_errors():
        found = dr_ops.site_watch(cli_actor())
    if as_json:
        console.print_json(found.model_dump_json() if found is not None else "null")
        return
    if found is None:
        console.print("no site watch runs with this state folder (`countycloud serve` runs it)")
        return
    console.print(f"automatic failover: on, after {found.grace_s:.0f} s" if found.automatic
                  else "automatic failover: off (an operator decides: `countycloud dr failover`)")
    table = Table("site", "verdict", "what is done", "checked (UTC)")
    for view in found.sites.values():
        checked = datetime.fromtimestamp(view.checked_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(view.site, view.verdict.value, view.status_text, checked)
    console.print(table)
    for outage in found.outages.values():
        console.print(f"outage of {outage.site}: declared {outage.declared_at - outage.failed_since:.1f} s "
                      f"after it was last seen alive; failover job: {outage.failover_job or 'none'}")
