"""Cross-reference checks of a declaration (beancount style): each is a plain function from the
declaration to a list of problems, each problem naming where it is and what to do about it.

Pydantic checks each section's shape; these check what only the whole file can tell: names used
twice, and references to sites, sizes, networks and images that are not declared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from difflib import get_close_matches

from inventory.schemas import Declaration

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a declaration: where (a path into the document) and what."""

    path: Path
    message: str


def _duplicates(kind: str, named: Iterable[tuple[Path, str]]) -> list[Problem]:
    first_seen: dict[str, Path] = {}
    problems = []
    for path, name in named:
        if name in first_seen:
            where = dotted(first_seen[name])
            problems.append(Problem(path, f"duplicate {kind} name '{name}' (already declared at {where})"))
        else:
            first_seen[name] = path
    return problems


def unique_names(declaration: Declaration) -> list[Problem]:
    problems = _duplicates("site", ((("sites", i, "name"), s.name) for i, s in enumerate(declaration.sites)))
    problems += _duplicates(
        "host",
        (
            (("sites", i, "hosts", j, "name"), host.name)
            for i, site in enumerate(declaration.sites)
            for j, host in enumerate(site.hosts)
        ),
    )
    problems += _duplicates(
        "size template",
        ((("size_templates", i, "name"), s.name) for i, s in enumerate(declaration.size_templates)),
    )
    problems += _duplicates(
        "network", ((("networks", i, "name"), n.name) for i, n in enumerate(declaration.networks))
    )
    problems += _duplicates(
        "image", ((("images", i, "name"), m.name) for i, m in enumerate(declaration.images))
    )
    problems += _duplicates(
        "tenant", ((("tenants", i, "slug"), t.slug) for i, t in enumerate(declaration.tenants))
    )
    problems += _duplicates(
        "protection tier",
        ((("protection_tiers", i, "name"), t.name.value) for i, t in enumerate(declaration.protection_tiers)),
    )
    # VM names need no check of their own: <slug>-<role>-<n> parses back uniquely (roles contain no
    # hyphen or digit), so unique slugs give unique VM names.
    return problems


def _reference(path: Path, kind: str, name: str, declared: list[str]) -> list[Problem]:
    if name in declared:
        return []
    hint = ""
    close = get_close_matches(name, declared, n=1)
    if close:
        hint = f"; did you mean '{close[0]}'?"
    listing = ", ".join(declared) if declared else "none"
    return [Problem(path, f"unknown {kind} '{name}' (declared: {listing}){hint}")]


def references(declaration: Declaration) -> list[Problem]:
    sites = [site.name for site in declaration.sites]
    sizes = [size.name for size in declaration.size_templates]
    networks = [network.name for network in declaration.networks]
    images = [image.name for image in declaration.images]
    problems = []
    for i, tenant in enumerate(declaration.tenants):
        problems += _reference(("tenants", i, "site"), "site", tenant.site, sites)
        problems += _reference(("tenants", i, "network"), "network", tenant.network, networks)
        problems += _reference(("tenants", i, "image"), "image", tenant.image, images)
        for j, vm in enumerate(tenant.vms):
            problems += _reference(("tenants", i, "vms", j, "size"), "size template", vm.size, sizes)
    return problems


def vm_name_length(declaration: Declaration) -> list[Problem]:
    problems = []
    for i, tenant in enumerate(declaration.tenants):
        for name, _ in tenant.vm_names():
            if len(name) > 63:
                problems.append(
                    Problem(("tenants", i, "slug"), f"VM name '{name}' is longer than 63 characters; "
                            "use a shorter tenant slug")
                )
    return problems


CHECKS: list[Callable[[Declaration], list[Problem]]] = [unique_names, references, vm_name_length]


def check(declaration: Declaration) -> list[Problem]:
    """Every problem every check finds, in check order."""
    return [problem for run in CHECKS for problem in run(declaration)]


def dotted(path: Path) -> str:
    """('tenants', 3, 'site') -> 'tenants[3].site'."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text
