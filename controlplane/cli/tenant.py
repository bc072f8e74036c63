"""`countycloud tenant create | list | show | resize | retire | exec`: counties on their VMs."""

from __future__ import annotations

import json
import threading
import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from controlplane import bootstrap, jobs
from controlplane.cli.common import EXIT_FAILED, EXIT_USAGE, console, errors, user_errors
from controlplane.cli.job import job_progress
from inventory.db import session_scope
from inventory.enums import Lifecycle
from inventory.jobs import JobKind, StepStatus
from inventory.queries import get_tenant, get_vm, list_tenants, vms_of
from provisioning import address, configure, steps

tenant_app = typer.Typer(no_args_is_help=True,
                         help="Counties: create, list, show, configure, resize, retire, exec.")
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def register(app: typer.Typer) -> None:
    app.add_typer(tenant_app, name="tenant")


def run_job(kind: JobKind, target: str, args: dict[str, Any], quiet: bool = False) -> str:
    """Run (or resume) the job for this target to its end; exit 1 with the failing step's message."""
    bootstrap.register_job_builders()
    platform = bootstrap.platform()
    try:
        with user_errors():
            if quiet:
                return jobs.start(platform.engine, kind, target, args, context=platform,
                                  artifacts_root=platform.artifacts_dir)
            with job_progress() as on_progress:
                return jobs.start(platform.engine, kind, target, args, context=platform,
                                  artifacts_root=platform.artifacts_dir, on_progress=on_progress)
    except jobs.JobFailed as error:
        errors.print(f"[bold red]job {error.job_id} failed[/]: {escape(error.error)}")
        errors.print("fix the cause, then rerun the same command "
                     f"(or `countycloud job resume {error.job_id}`)")
        raise typer.Exit(EXIT_FAILED) from None
    except jobs.JobError as error:
        errors.print(f"[red]{escape(str(error))}[/]")
        raise typer.Exit(EXIT_FAILED) from None
    finally:
        jobs.shutdown()


def _tenant_row(tenant: Any) -> dict[str, Any]:
    return {
        "tenant": tenant.slug, "name": tenant.name, "status": tenant.status.value,
        "site": tenant.home_site.name,
        "address": f"http://127.0.0.1:{tenant.gateway_port}/" if tenant.gateway_port else None,
        "vms": [
            {"name": vm.name, "role": vm.role.value, "status": vm.status.value, "vcpus": vm.vcpus,
             "memory_mb": vm.memory_mb, "host": vm.host.name if vm.host else None,
             "ssh_port": vm.ssh_port, "app_port": vm.app_port}
            for vm in vms_of(tenant)
        ],
    }


@tenant_app.command("create")
def create_command(
    tenants: Annotated[list[str], typer.Argument(
        help="The counties' slugs, e.g. keelung; several are provisioned at once.", show_default=False)],
    cold: Annotated[bool, typer.Option("--cold", help="Boot from the golden image instead of cloning "
                                                      "the site's prebooted template.")] = False,
) -> None:
    """Provision declared counties: their VMs, addresses and configuration (a resumable job each)."""
    chosen = list(dict.fromkeys(tenants))
    with user_errors(), session_scope(bootstrap.engine()) as session:
        for tenant in chosen:
            get_tenant(session, tenant)  # an unknown county: a clear message, exit 2, nothing started
    if len(chosen) == 1:
        job_id = run_job(JobKind.PROVISION, chosen[0], {"tenant": chosen[0], "cold": cold})
        show_command(chosen[0])
        console.print(f"[green]job {job_id} succeeded[/]")
        return
    create_many(chosen, cold)


def create_many(tenants: list[str], cold: bool) -> None:
    """One job per county, all at once in this process; a line as each county serves and finishes."""
    bootstrap.register_job_builders()
    platform = bootstrap.platform()
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
    try:
        with user_errors():
            outcomes = jobs.start_many(
                platform.engine, JobKind.PROVISION, {t: {"tenant": t, "cold": cold} for t in tenants},
                context=platform, artifacts_root=platform.artifacts_dir, on_progress=on_progress)
    except jobs.JobError as error:
        errors.print(f"[red]{escape(str(error))}[/]")
        raise typer.Exit(EXIT_FAILED) from None
    finally:
        jobs.shutdown()
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
    with user_errors(), session_scope(bootstrap.engine()) as session:
        rows = [_tenant_row(tenant) for tenant in list_tenants(session)]
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
    with user_errors(), session_scope(bootstrap.engine()) as session:
        row = _tenant_row(get_tenant(session, tenant))
    if row["address"]:
        port = int(row["address"].rsplit(":", 1)[1].strip("/"))
        row["healthy"] = address.healthy(port)
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


def _vm_of(tenant: str, vm: str | None) -> str:
    """The one VM a command acts on; refused (before any job starts) unless it has been provisioned."""
    with user_errors(), session_scope(bootstrap.engine()) as session:
        if vm is not None:
            chosen = [get_vm(session, vm)]
        else:
            chosen = vms_of(get_tenant(session, tenant))
            if len(chosen) != 1:
                names = ", ".join(v.name for v in chosen)
                errors.print(f"tenant {tenant} has {len(chosen)} VMs ({names}); name one with --vm")
                raise typer.Exit(EXIT_USAGE)
        name, status = chosen[0].name, chosen[0].status
    if status not in (Lifecycle.ACTIVE, Lifecycle.PROVISIONING):
        errors.print(f"{name} is {status.value}; provision it first (`countycloud tenant create {tenant}`)")
        raise typer.Exit(EXIT_FAILED)
    return name


@tenant_app.command("configure")
def configure_command(tenant: str) -> None:
    """Converge a running county to its declared settings with Ansible (after `inventory apply`)."""
    with user_errors(), session_scope(bootstrap.engine()) as session:
        get_tenant(session, tenant)
    job_id = run_job(JobKind.CONFIGURE, tenant, {"tenant": tenant})
    console.print(f"[green]tenant {tenant} converged[/] (job {job_id})")


@tenant_app.command("resize")
def resize_command(
    tenant: str,
    vcpus: Annotated[int, typer.Option(help="vCPUs, changed live.")],
    memory: Annotated[int, typer.Option(help="Memory in MB, changed live (balloon).")],
    vm: Annotated[str | None, typer.Option(help="Which VM, when the tenant has several.")] = None,
) -> None:
    """Resize a running VM live (vCPUs up to its maximum, memory by balloon)."""
    name = _vm_of(tenant, vm)
    run_job(JobKind.RESIZE, name, {"vm": name, "vcpus": vcpus, "memory_mb": memory})
    console.print(f"[green]{name}: {vcpus} vCPU, {memory} MB[/]")


@tenant_app.command("retire")
def retire_command(
    tenant: str,
    purge: Annotated[bool, typer.Option("--purge", help="Also delete the county's data disk.")] = False,
) -> None:
    """Stop and undefine the county's VMs, remove their system disks (data kept unless --purge)."""
    with user_errors(), session_scope(bootstrap.engine()) as session:
        get_tenant(session, tenant)
    # A provision or configure job left unfinished would otherwise be resumed by a later
    # `tenant create` against a county that no longer has its VMs.
    for job in jobs.list_jobs(bootstrap.engine(), target=tenant):
        if job.kind in (JobKind.PROVISION, JobKind.CONFIGURE) and job.status not in jobs.FINISHED:
            try:
                jobs.cancel(bootstrap.engine(), job.id)
            except jobs.JobError as error:  # e.g. its process is still running it
                errors.print(f"[red]{escape(str(error))}[/]")
                raise typer.Exit(EXIT_FAILED) from None
            console.print(f"cancelled unfinished job {job.id} ({job.kind.value})")
    run_job(JobKind.RETIRE, tenant, {"tenant": tenant, "purge": purge})
    console.print(f"[green]tenant {tenant} retired[/]" + ("" if purge else " (data disk kept)"))


@tenant_app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec_command(
    tenant: str,
    command: Annotated[list[str], typer.Argument(help="The command, after --.")],
    vm: Annotated[str | None, typer.Option(help="Which VM, when the tenant has several.")] = None,
) -> None:
    """Run one command in the county's VM over SSH (fabric); exits with the command's own code."""
    name = _vm_of(tenant, vm)
    platform = bootstrap.platform()
    with user_errors():
        plan = steps.load_plan(platform, name)
    try:
        result = configure.ssh_run(plan, platform.ssh_key, " ".join(command))
    except Exception as error:  # paramiko/fabric raise many types; the operator needs the reason
        errors.print(f"{name}: SSH to 127.0.0.1:{plan.ssh_port} failed: {error}")
        raise typer.Exit(EXIT_FAILED) from None
    console.out(result.stdout, end="")
    if result.stderr:
        errors.out(result.stderr, end="")
    raise typer.Exit(result.rc)
