"""`countycloud`: the operator's command line. Each command group lives in its own module."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="CountyCloud: county tenants on real VMs across two sites.")


def _register() -> None:
    # Groups register themselves on import; a group missing from this tree is simply absent.
    import importlib

    for name in ("site", "inventory", "tenant", "job", "template", "demo"):
        try:
            module = importlib.import_module(f"controlplane.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"controlplane.cli.{name}":
                raise
            continue
        module.register(app)


def main() -> None:
    _register()
    app()
