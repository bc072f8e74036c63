"""`countycloud`: the operator's command line. Each command group lives in its own module."""

from __future__ import annotations

import typer

from controlplane.cli import (
    audit,
    backup,
    demo,
    dr,
    inventory,
    job,
    platform,
    serve,
    site,
    template,
    tenant,
    user,
)

app = typer.Typer(no_args_is_help=True, help="CountyCloud: county tenants on real VMs across two sites.")

for group in (site, inventory, tenant, job, template, demo, user, audit, serve, backup, dr, platform):
    group.register(app)


def main() -> None:
    import re

    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from controlplane import bootstrap
    from controlplane.cli.common import EXIT_USAGE, errors

    try:  # a bad COUNTYCLOUD_* value is the operator's input: named, not a traceback
        bootstrap.settings()
    except ValidationError as error:
        for problem in error.errors():
            name = "COUNTYCLOUD_" + "_".join(str(part) for part in problem["loc"]).upper()
            errors.print(f"{name}: {problem['msg']} (got {problem.get('input')!r})", markup=False)
        raise SystemExit(EXIT_USAGE) from None
    except SettingsError as error:  # a map setting that is not JSON (COUNTYCLOUD_BACKUP_REST_PORTS)
        field = re.search(r'field "(\w+)"', str(error))
        name = "COUNTYCLOUD_" + field.group(1).upper() if field else "a COUNTYCLOUD_* setting"
        errors.print(f"{name}: not valid JSON (a map, e.g. '{{\"primary\": 23001}}')", markup=False)
        raise SystemExit(EXIT_USAGE) from None
    app()
