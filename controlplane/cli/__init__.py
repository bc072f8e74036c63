"""`countycloud`: the operator's command line. Each command group lives in its own module."""

from __future__ import annotations

import typer

from controlplane.cli import audit, backup, demo, dr, inventory, job, serve, site, template, tenant, user

app = typer.Typer(no_args_is_help=True, help="CountyCloud: county tenants on real VMs across two sites.")

for group in (site, inventory, tenant, job, template, demo, user, audit, serve, backup, dr):
    group.register(app)


def main() -> None:
    app()
