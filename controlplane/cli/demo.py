"""`countycloud demo` and `countycloud setup`: the README's first command, on embedded defaults."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from controlplane import auth, backup_ops, bootstrap, operations
from controlplane.actors import cli_actor
from controlplane.cli.common import EXIT_FAILED, EXIT_USAGE, console, errors, user_errors
from controlplane.cli.tenant import create_many, run_job, show_command
from inventory.db import session_scope
from inventory.declare import apply
from inventory.loader import load_sample
from inventory.ports import PortRange, PortRanges
from inventory.queries import get_tenant, list_tenants
from provisioning import configure, records
from provisioning.errors import ProvisioningError

FIRST_COUNTY = "keelung"  # 基隆市, the county the demo brings up first
# tenant_app's demo county (seeded inside the guest): a clerk of the finance agency.
SAMPLE_LOGIN = ("fin-clerk", "demo-pass-2026")
# Seeding inside a TCG guest took over 120 s on a busy 2-core host (make demo, 2026-12-04).
SEED_TIMEOUT_S = 900.0


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
    app.command("setup")(setup_command)


def setup_command(
    templates: Annotated[bool, typer.Option(help="Also build each site's prebooted template.")] = True,
) -> None:
    """Prepare this machine: SSH key, both site daemons, the golden image, the templates (idempotent)."""
    with user_errors():
        bootstrap.setup(log=console.print, with_templates=templates)
    console.print("[green]machine ready[/]")


def _apply_sample() -> None:
    settings = bootstrap.settings()
    ports = PortRanges(
        guest=PortRange(settings.guest_port_first, settings.guest_port_last, "guest ports"),
        gateway=PortRange(settings.gateway_port_first, settings.gateway_port_last, "gateway ports"),
    )
    with user_errors(), session_scope(bootstrap.engine()) as session:
        changes = apply(session, load_sample(), actor="demo", ports=ports)
    console.print(f"inventory: sample applied ({len(changes)} change(s))")


def _counties(count: int) -> list[str]:
    with session_scope(bootstrap.engine()) as session:
        slugs = [tenant.slug for tenant in list_tenants(session)]
    ordered = [FIRST_COUNTY] + [slug for slug in slugs if slug != FIRST_COUNTY]
    return ordered[:count]


def _seed_demo_data(county: str) -> None:
    """tenant_app's demo county inside the guest, so the sample login works (idempotent)."""
    platform = bootstrap.platform()
    with session_scope(platform.engine) as session:
        vm = next(vm.name for vm in get_tenant(session, county).vms)
    plan = records.load_plan(platform.engine, vm)
    result = configure.ssh_run(plan, platform.ssh_key, "tenant-app seed", timeout_s=SEED_TIMEOUT_S)
    if not result.ok:  # the county serves without its sample data; the demo still hands over the console
        errors.print(f"{county}: seeding demo data failed: {(result.stderr or result.stdout).strip()} "
                     f"(rerun: countycloud tenant exec {county} -- tenant-app seed)", markup=False)
        return
    # Provisioning made no probe account in a county without a fiscal year: the seed gave it one.
    from provisioning import probe_accounts

    try:
        with platform.hypervisor(plan.site) as hv:
            kept = probe_accounts.ensure_in_guest(hv, vm, platform.state_dir, county)
    except ProvisioningError as error:  # probes wait for it; the demo still hands over the console
        errors.print(f"{county}: no probe account yet: {error} "
                     f"(rerun: countycloud tenant configure {county})", markup=False)
        return
    console.print(kept, markup=False)


def _first_backup(county: str) -> None:
    """The county's first restore point at both sites now (snapshot, then its offsite copy: one
    BACKUP job, run here), rather than at the schedule's first place for it, up to a minute after
    the service starts. Right after seeding, so the point holds the demo data. A failure leaves the
    demo going: the schedule backs the county up anyway."""
    try:
        job_id = run_job(backup_ops.request_backup(cli_actor(), county), quiet=True)
    except typer.Exit:  # run_job said why
        errors.print(f"{county}: no first backup yet (rerun: countycloud backup now {county})")
        return
    console.print(f"{county}: first restore point, at both sites (job {job_id}; "
                  f"countycloud backup list {county})", markup=False)


def _start_service() -> tuple[str, str]:
    """The service (API, console, job workers) in the background, started once; its address and the
    admin's password (from the 0600 file written at its first start; printed here, never logged)."""
    from controlplane import service
    from controlplane.cli import serve

    settings = bootstrap.settings()
    address = f"http://{serve.HOST}:{settings.service_port}/"
    service.first_admin(service.context_from_settings(settings))
    if serve.running_pid(settings.state_dir) is None and \
            serve.start_background(settings.state_dir, settings.service_port, address) != 0:
        raise typer.Exit(EXIT_FAILED)
    password_file = settings.state_dir / auth.ADMIN_PASSWORD_FILE
    lines = password_file.read_text().splitlines() if password_file.exists() else []
    return address, lines[1] if len(lines) > 1 else f"(see {password_file})"


def demo_command(
    counties: Annotated[int, typer.Option(help="How many of the 13 sample counties to bring up.")] = 1,
    cold: Annotated[bool, typer.Option("--cold", help="Boot instead of cloning the template.")] = False,
) -> None:
    """Set up this machine, apply the sample inventory and bring 基隆市 (keelung) up on a real VM."""
    if not 1 <= counties <= 13:
        errors.print("--counties takes 1 to 13")
        raise typer.Exit(EXIT_USAGE)
    started = time.monotonic()
    with user_errors():
        bootstrap.setup(log=console.print, with_templates=not cold)
    _apply_sample()
    chosen = _counties(counties)
    console.rule(f"tenant create {' '.join(chosen)}")
    with user_errors():
        requests = [operations.request_create(cli_actor(), county, cold=cold) for county in chosen]
    if len(requests) == 1:
        run_job(requests[0])
    else:
        create_many(requests)  # together, as `tenant create A B C` does
    for county in chosen:
        _seed_demo_data(county)
        if county == FIRST_COUNTY:
            _first_backup(county)
    console.rule("ready")
    show_command(FIRST_COUNTY)
    with session_scope(bootstrap.engine()) as session:
        port = get_tenant(session, FIRST_COUNTY).gateway_port
    console_address, admin_password = _start_service()
    console.print(f"""
[bold green]基隆市 (keelung) is serving[/] after {time.monotonic() - started:.0f} s: http://127.0.0.1:{port}/
  sample login: {SAMPLE_LOGIN[0]} / {SAMPLE_LOGIN[1]}   (other roles: fin-chief, fin-head, auditor, admin)

[bold green]The CountyCloud console[/]: {console_address}  (API and its docs: {console_address}docs)
  sign in as admin / {admin_password}
  (the password is kept in {bootstrap.settings().state_dir / auth.ADMIN_PASSWORD_FILE}, readable by root only;
   stop the service with `countycloud serve --stop`)

Next, try (the CLI is .venv/bin/countycloud):
  countycloud tenant list
  countycloud tenant exec keelung -- uptime
  countycloud tenant resize keelung --vcpus 2
  countycloud tenant create yilan --no-wait  (the service's workers run it; watch it in the console)
  countycloud tenant create taichung        (any of the 13 sample counties; --cold boots instead)
  countycloud tenant create penghu kinmen   (several at once)
  countycloud job list
  countycloud site list
  countycloud demo --counties 13
""")
