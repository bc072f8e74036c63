"""`countycloud template list | build SITE | remove SITE IMAGE`: the prebooted templates per site."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from controlplane import bootstrap
from controlplane.cli.common import EXIT_USAGE, console, errors, user_errors
from provisioning import images, sites, templates

template_app = typer.Typer(no_args_is_help=True, help="Prebooted templates: list, build, remove.")
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def register(app: typer.Typer) -> None:
    app.add_typer(template_app, name="template")


def _site(name: str) -> None:
    if name not in bootstrap.site_names():
        errors.print(f"unknown site {name!r}; sites: {', '.join(bootstrap.site_names())}")
        raise typer.Exit(EXIT_USAGE)


@template_app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    """Every site's templates, and whether each is for the current golden image."""
    platform = bootstrap.platform()
    current = images.image_key()
    rows: list[dict[str, Any]] = []
    for site in bootstrap.site_names():
        for template in templates.list_templates(platform.site(site)):
            size = template.state_file.stat().st_size if template.state_file.exists() else 0
            rows.append({"site": site, "image": template.image_key, "current": template.image_key == current,
                         "state_file_mb": round(size / 2**20), "max_vcpus": template.max_vcpus,
                         "max_memory_mib": template.max_memory_mib, "built_s": template.built_s,
                         "directory": str(template.directory)})
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("site", "golden image", "current", "state file", "max vCPU / MiB", "built in")
    for row in rows:
        table.add_row(row["site"], row["image"], "yes" if row["current"] else "[yellow]stale[/]",
                      f"{row['state_file_mb']} MB", f"{row['max_vcpus']} / {row['max_memory_mib']}",
                      f"{row['built_s']} s")
    console.print(table)


@template_app.command("build")
def build_command(
    site: str,
    memory: Annotated[list[int] | None, typer.Option(help="Memory sizes in MiB (default: those the "
                                                          "inventory's VMs use).")] = None,
) -> None:
    """Boot the current golden image once at SITE per memory size and save it (idempotent)."""
    _site(site)
    platform = bootstrap.platform()
    with user_errors():
        cached = images.ensure(platform.cache_dir, log=console.print)
        image = images.at_site(cached, platform.site(site).images)
        with platform.hypervisor(site) as hv:
            for memory_mib in memory or bootstrap.template_sizes():
                template = templates.build(hv, platform.site(site), image, platform.domain_type, memory_mib,
                                           log=console.print)
                console.print(f"[green]template {site}/{template.directory.name} ready[/] "
                              f"({template.state_file})")


@template_app.command("remove")
def remove_command(site: str, image: str) -> None:
    """Remove SITE's template for golden image IMAGE (refused while county VMs still sit on it)."""
    _site(site)
    platform = bootstrap.platform()
    paths = platform.site(site)
    with user_errors():
        if sites.state(paths) is sites.SiteState.UP:
            with platform.hypervisor(site) as hv:
                removed = templates.remove(hv, paths, image)
        else:  # a template is files only; a down site has no domain of it to undefine
            removed = templates.remove(None, paths, image)
    if not removed:
        errors.print(f"site {site} has no template for image {image}")
        raise typer.Exit(EXIT_USAGE)
    console.print(f"template {site}/{image} removed")
