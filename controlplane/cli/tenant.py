"""`countycloud tenant create | list | show | configure | resize | retire | exec`: counties on their VMs.

Each command asks the use-case layer (controlplane.operations), which holds the rules; this module
only parses arguments and prints.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from collections.abc import Callable
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from controlplane import bootstrap, jobs, operations
from controlplane.actors import cli_actor
from controlplane.cli.common import EXIT_FAILED, console, errors, user_errors
from controlplane.cli.job import job_progress
from inventory.jobs import StepStatus
from provisioning import configure, records

tenant_app = typer.Typer(no_args_is_help=True,
                         help="Counties: create, list, show, configure, resize, retire, exec.")
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def register(app: typer.Typer) -> None:
    app.add_typer(tenant_app, name="tenant")


def run_job(request: operations.JobRequest, quiet: bool = False) -> str:
    """Run (or resume, or follow) the requested job to its end; exit 1 with the failing step's message."""
    try:
        with user_errors():
            try:
                if quiet:
                    return operations.run(request).id
                with job_progress() as on_progress:
                    return operations.run(request, on_progress).id
            except jobs.JobFailed as error:
                errors.print(f"[bold red]job {error.job_id} failed[/]: {escape(error.error)}")
                errors.print("fix the cause, then rerun the same command "
                             f"(or `countycloud job resume {error.job_id}`)")
                raise typer.Exit(EXIT_FAILED) from None
    finally:
        jobs.shutdown()


@tenant_app.command("create")
def create_command(
    tenants: Annotated[list[str], typer.Argument(
        help="The counties' slugs, e.g. keelung; several are provisioned at once.", show_default=False)],
    cold: Annotated[bool, typer.Option("--cold", help="Boot from the golden image instead of cloning "
                                                      "the site's prebooted template.")] = False,
    no_wait: Annotated[bool, typer.Option(
        "--no-wait", help="Queue the jobs for the service's workers (`countycloud serve`); print their ids.",
    )] = False,
) -> None:
    """Provision declared counties: their VMs, addresses and configuration (a resumable job each)."""
    actor = cli_actor()
    with user_errors():  # an unknown county: a clear message, exit 2, nothing started
        requests = [operations.request_create(actor, tenant, cold=cold) for tenant in dict.fromkeys(tenants)]
    if no_wait:
        submit_all(requests)
        return
    if len(requests) == 1:
        job_id = run_job(requests[0])
        show_command(requests[0].target)
        console.print(f"[green]job {job_id} succeeded[/]")
        return
    create_many(requests)


def submit_all(requests: list[operations.JobRequest]) -> None:
    """Queue each job for the workers; a line `TARGET JOB_ID` each (a county already queued or
    running keeps its job)."""
    try:
        with user_errors():
            refs = [operations.submit(request) for request in requests]
    finally:
        jobs.shutdown()
    if not jobs.live_workers(bootstrap.engine()):
        errors.print("no worker is running: the jobs wait until `countycloud serve` starts")
    for ref in refs:
        console.print(f"{ref.target} {ref.id}", markup=False, highlight=False)


def create_many(requests: list[operations.JobRequest]) -> None:
    """One job per county, all at once in this process; a line as each county serves and finishes."""
    tenants = [request.target for request in requests]
    began = time.monotonic()
    said_serving: set[str] = set()
    lock = threading.Lock()

    def on_progress(tenant: str, view: jobs.JobView) -> None:
        serving = any(step.name == "health" and step.status == StepStatus.SUCCEEDED for step in view.steps)
        with lock:
            if serving and tenant not in said_serving:
                said_serving.add(tenant)
                console.print(f"{tenant}: serving {time.monotonic() - began:.1f} s after the start "
                              f"(job {view.id}; Ansible converges it next)")

    console.print(f"provisioning {len(tenants)} counties at once: {', '.join(tenants)}")
    _report_many(tenants, _run_many(requests, on_progress))


def _run_many(requests: list[operations.JobRequest],
              on_progress: Callable[[str, jobs.JobView], None] | None = None,
              ) -> dict[str, str | jobs.JobError]:
    try:
        with user_errors():
            return operations.run_many(requests, on_progress=on_progress)
    finally:
        jobs.shutdown()


def _report_many(tenants: list[str], outcomes: dict[str, str | jobs.JobError]) -> None:
    """A line per county's job; exit failed, naming what is left, when any failed."""
    failed = [tenant for tenant in tenants if isinstance(outcomes[tenant], jobs.JobError)]
    for tenant in tenants:
        outcome = outcomes[tenant]
        if isinstance(outcome, jobs.JobFailed):
            errors.print(f"[bold red]{tenant}: job {outcome.job_id} failed[/]: {escape(outcome.error)}")
        elif isinstance(outcome, jobs.JobError):
            errors.print(f"[bold red]{tenant}[/]: {escape(str(outcome))}")
        else:
            console.print(f"[green]{tenant}: job {outcome} succeeded[/]")
    if failed:
        errors.print(f"fix the cause, then rerun the same command: {len(tenants) - len(failed)} done, "
                     f"{len(failed)} to finish ({', '.join(failed)})")
        raise typer.Exit(EXIT_FAILED)


@tenant_app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    with user_errors():
        rows = operations.list_tenants(cli_actor())
    if as_json:
        console.print_json(json.dumps(rows, ensure_ascii=False))
        return
    table = Table("tenant", "name", "status", "site", "VMs", "address")
    for row in rows:
        table.add_row(row["tenant"], row["name"], row["status"], row["site"], str(len(row["vms"])),
                      row["address"] or "")
    console.print(table)


@tenant_app.command("show")
def show_command(tenant: str, as_json: JsonOption = False) -> None:
    with user_errors():
        row = operations.show_tenant(cli_actor(), tenant, probe_health=True)  # a CLI may wait
    if as_json:
        console.print_json(json.dumps(row, ensure_ascii=False))
        return
    console.print(f"[bold]{row['name']}[/] ({row['tenant']}) — {row['status']} at site {row['site']}")
    if row["address"]:
        console.print(f"address: {row['address']}  healthy: {row['healthy']}")
    table = Table("vm", "role", "status", "vCPU", "memory MB", "host", "ssh", "app")
    for vm in row["vms"]:
        table.add_row(vm["name"], vm["role"], vm["status"], str(vm["vcpus"]), str(vm["memory_mb"]),
                      vm["host"] or "", str(vm["ssh_port"] or ""), str(vm["app_port"] or ""))
    console.print(table)


@tenant_app.command("configure")
def configure_command(tenant: str) -> None:
    """Converge a running county to its declared settings with Ansible (after `inventory apply`)."""
    with user_errors():
        request = operations.request_configure(cli_actor(), tenant)
    job_id = run_job(request)
    console.print(f"[green]tenant {tenant} converged[/] (job {job_id})")


@tenant_app.command("resize")
def resize_command(
    tenant: str,
    vcpus: Annotated[int | None, typer.Option(help="vCPUs, changed live (default: as now).")] = None,
    memory: Annotated[int | None, typer.Option(help="Memory in MB, changed live by balloon "
                                                     "(default: as now).")] = None,
    vm: Annotated[str | None, typer.Option(help="Which VM, when the tenant has several.")] = None,
) -> None:
    """Resize a running VM live (vCPUs up to its maximum, memory by balloon). A size the VM cannot
    take is refused before any job exists (exit 2)."""
    with user_errors():
        request = operations.request_resize(cli_actor(), tenant, vcpus=vcpus, memory_mb=memory, vm=vm)
    run_job(request)
    console.print(f"[green]{request.target}: {request.args['vcpus']} vCPU, {request.args['memory_mb']} MB[/]")


@tenant_app.command("retire")
def retire_command(
    tenants: Annotated[list[str], typer.Argument(
        help="The counties' slugs; several are retired at once.", show_default=False)],
    purge: Annotated[bool, typer.Option("--purge", help="Also delete the county's data disk.")] = False,
) -> None:
    """Stop and undefine the county's VMs, remove their system disks (data kept unless --purge)."""
    actor = cli_actor()
    with user_errors():  # an unknown county: a clear message, exit 2, nothing retired
        requests = [operations.request_retire(actor, tenant, purge=purge)
                    for tenant in dict.fromkeys(tenants)]
    for request in requests:
        for job_id in request.cancel_first:
            console.print(f"{request.target}: cancelling unfinished job {job_id}")
    kept = "" if purge else " (data disk kept)"
    if len(requests) == 1:
        run_job(requests[0])
        console.print(f"[green]tenant {requests[0].target} retired[/]{kept}")
        return
    _report_many([request.target for request in requests], _run_many(requests))


@tenant_app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec_command(
    tenant: str,
    command: Annotated[list[str], typer.Argument(help="The command, after --.")],
    vm: Annotated[str | None, typer.Option(help="Which VM, when the tenant has several.")] = None,
) -> None:
    """Run one command in the county's VM over SSH (fabric); exits with the command's own code. Each
    argument reaches the guest as it was given (quoted for the guest's shell)."""
    platform = bootstrap.platform()
    with user_errors():
        name = operations.vm_of(tenant, vm)
        plan = records.load_plan(platform.engine, name)
    try:
        result = configure.ssh_run(plan, platform.ssh_key, guest_command(command))
    except Exception as error:  # paramiko/fabric raise many types; the operator needs the reason
        errors.print(f"{name}: SSH to 127.0.0.1:{plan.ssh_port} failed: {error}")
        raise typer.Exit(EXIT_FAILED) from None
    console.out(result.stdout, end="")
    if result.stderr:
        errors.out(result.stderr, end="")
    raise typer.Exit(result.rc)


def guest_command(argv: list[str]) -> str:
    """The command line the guest's shell runs: every argument quoted, so `sh -c 'echo a; echo b'`
    stays three arguments (joined with spaces it became `sh -c echo`)."""
    return shlex.join(argv)
