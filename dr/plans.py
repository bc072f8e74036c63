"""The recovery plan: tiers of counties in order, each with its parallelism and expected RTO and RPO,
and who does what (the SOP's roles and steps). Read from YAML kept with the inventory; the failover's
batches and the SOP document (dr.sop) are both derived from it, so the document cannot drift from
what the job does.

Loading reuses the inventory loader's YAML handling (duplicate keys refused, every key and item keeps
its line) so a plan's problems read like a declaration's: `file:line: what is wrong`. Each cross-check
is a plain function from the plan (and the known county slugs) to a list of problems. Nothing here
touches the outside.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from importlib import resources
from itertools import pairwise
from pathlib import Path as FilePath

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from inventory.checks import Path, Problem, dotted
from inventory.loader import (
    DeclarationError,
    Located,
    StrictLoader,
    line_of,
    model_at,
    node_positions,
    yaml_problem,
)
from inventory.schemas import Declaration

SAMPLE = "recovery-plan.yaml"

_SLUG = r"^[a-z0-9][a-z0-9-]*$"


class PlanError(DeclarationError):
    """The recovery plan cannot be used; `problems` lists every one found, each with its line.

    A DeclarationError because the plan is part of the inventory's declaration files: the control
    plane already reports those as invalid input, one `file:line: message` per problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Role(_Strict):
    """Someone the SOP gives work to, named in both languages the operators read."""

    key: str = Field(pattern=_SLUG)
    title_zh: str = Field(min_length=1)
    title_en: str = Field(min_length=1)
    who: str = Field(min_length=1, description="the team or post that fills the role")


class Step(_Strict):
    """One step of the SOP, done by one role. `automated` steps are done by the failover job itself
    (the operator watches them in the console); the others are people's work."""

    role: str
    zh: str = Field(min_length=1)
    en: str = Field(min_length=1)
    automated: bool = False


class Tier(_Strict):
    """Counties recovered together: every county of a tier is serving before the next tier starts."""

    name: str = Field(pattern=_SLUG)
    order: int
    # Checked by `check_tiers`, not by a pydantic bound, so the message can say what to do.
    parallelism: int
    rto_s: int = Field(gt=0, description="expected seconds from site failure to serving at the secondary")
    rpo_s: int = Field(gt=0, description="expected seconds of writes lost at most")
    description_zh: str = ""
    description_en: str = ""
    counties: list[str]


class RecoveryPlan(_Strict):
    name: str = Field(min_length=1)
    roles: list[Role]
    steps: list[Step]
    tiers: list[Tier]

    def tiers_in_order(self) -> list[Tier]:
        return sorted(self.tiers, key=lambda tier: tier.order)

    def role(self, key: str) -> Role:
        return next(role for role in self.roles if role.key == key)


@dataclass(frozen=True)
class Batch:
    """Counties a failover starts at once; the next batch starts when all of these serve."""

    tier: str
    number: int  # 1-based across the whole run
    counties: tuple[str, ...]


def failover_batches(plan: RecoveryPlan) -> list[Batch]:
    """The batches a failover runs, in order: tiers by their `order`, each tier's counties in the
    order listed, at most `parallelism` at a time. A tier never shares a batch with the next, so a
    later tier cannot slow an earlier one."""
    batches: list[Batch] = []
    for tier in plan.tiers_in_order():
        if tier.parallelism < 1:  # only a plan built in code can get here: load_text refuses it
            raise ValueError(f"tier {tier.name!r}: parallelism must be at least 1")
        for start in range(0, len(tier.counties), tier.parallelism):
            chunk = tuple(tier.counties[start:start + tier.parallelism])
            batches.append(Batch(tier.name, len(batches) + 1, chunk))
    return batches


# --- cross-checks: each a plain function from the plan to its problems --------------------------------

def _duplicates(kind: str, named: Sequence[tuple[Path, str | int]]) -> list[Problem]:
    first: dict[str | int, Path] = {}
    problems = []
    for path, name in named:
        if name in first:
            problems.append(Problem(path, f"duplicate {kind} {name!r} (already at {dotted(first[name])})"))
        else:
            first[name] = path
    return problems


def check_tiers(plan: RecoveryPlan, known: Collection[str]) -> list[Problem]:
    problems = _duplicates("tier name", [(("tiers", i, "name"), t.name) for i, t in enumerate(plan.tiers)])
    problems += _duplicates(
        "tier order", [(("tiers", i, "order"), t.order) for i, t in enumerate(plan.tiers)]
    )
    if not plan.tiers:
        problems.append(Problem(("tiers",), "the plan has no tiers; put every county in one"))
    for i, tier in enumerate(plan.tiers):
        if tier.parallelism < 1:
            problems.append(Problem(
                ("tiers", i, "parallelism"),
                f"tier {tier.name!r}: parallelism must be at least 1 (got {tier.parallelism}); "
                "it is how many of the tier's counties are brought up at once",
            ))
        if not tier.counties:
            problems.append(Problem(
                ("tiers", i, "counties"),
                f"tier {tier.name!r} has no counties; remove it or move counties into it",
            ))
    return problems


def check_rto_order(plan: RecoveryPlan, known: Collection[str]) -> list[Problem]:
    """A tier starts when the one before it has finished, and RTO counts from the site failure: a
    later tier cannot expect to be serving sooner than an earlier one."""
    problems = []
    ordered = sorted(enumerate(plan.tiers), key=lambda pair: pair[1].order)
    for (_, earlier), (index, later) in pairwise(ordered):
        if later.rto_s < earlier.rto_s:
            problems.append(Problem(
                ("tiers", index, "rto_s"),
                f"tier {later.name!r} expects an RTO of {later.rto_s} s, less than tier {earlier.name!r} "
                f"before it ({earlier.rto_s} s); RTO counts from the site failure and a tier starts when "
                "the one before it is serving",
            ))
    return problems


def check_counties(plan: RecoveryPlan, known: Collection[str]) -> list[Problem]:
    """Every known county in exactly one tier, and no county the inventory does not declare."""
    problems = []
    placed: dict[str, Path] = {}
    for i, tier in enumerate(plan.tiers):
        for j, county in enumerate(tier.counties):
            path: Path = ("tiers", i, "counties", j)
            if county in placed:
                problems.append(Problem(
                    path, f"county {county!r} is already in {_tier_at(plan, placed[county])} "
                    f"(at {dotted(placed[county])}); a county belongs to exactly one tier",
                ))
                continue
            placed[county] = path
            if county not in known:
                close = get_close_matches(county, list(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(
                    Problem(path, f"unknown county {county!r}: the inventory declares no such slug{hint}")
                )
    missing = sorted(set(known) - set(placed))
    if missing:
        problems.append(Problem(
            ("tiers",), f"counties in no tier: {', '.join(missing)}; every county needs a tier, "
            "or it would not be recovered",
        ))
    return problems


def _tier_at(plan: RecoveryPlan, path: Path) -> str:
    index = path[1]
    assert isinstance(index, int)
    return f"tier {plan.tiers[index].name!r}"


def check_roles(plan: RecoveryPlan, known: Collection[str]) -> list[Problem]:
    problems = _duplicates("role", [(("roles", i, "key"), r.key) for i, r in enumerate(plan.roles)])
    keys = [role.key for role in plan.roles]
    for i, step in enumerate(plan.steps):
        if step.role not in keys:
            problems.append(Problem(
                ("steps", i, "role"), f"unknown role {step.role!r} (roles: {', '.join(keys) or 'none'})"
            ))
    if not plan.steps:
        problems.append(Problem(("steps",), "the plan has no steps; the SOP must say who does what"))
    return problems


CHECKS: tuple[Callable[[RecoveryPlan, Collection[str]], list[Problem]], ...] = (
    check_tiers, check_rto_order, check_counties, check_roles,
)


def check(plan: RecoveryPlan, known: Collection[str]) -> list[Problem]:
    return [problem for each in CHECKS for problem in each(plan, known)]


def known_counties(declaration: Declaration) -> list[str]:
    """The county slugs a plan is checked against: every tenant the declaration names."""
    return [tenant.slug for tenant in declaration.tenants]


# --- loading -----------------------------------------------------------------------------------------

def _message(error: ErrorDetails) -> str:
    loc: Path = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        parent = model_at(loc[:-1], RecoveryPlan)
        allowed = f" (allowed: {', '.join(parent.model_fields)})" if parent else ""
        where = f" in {dotted(loc[:-1])}" if loc[:-1] else ""
        return f"unknown key '{loc[-1]}'{where}{allowed}"
    if error["type"] == "missing":
        where = f"{dotted(loc[:-1])}: " if loc[:-1] else ""
        return f"{where}missing required key '{loc[-1]}'"
    text = error["msg"].removeprefix("Value error, ")
    if not isinstance(error["input"], dict | list):
        text += f" (got {error['input']!r})"
    return f"{dotted(loc)}: {text}"


def load_text(text: str, known: Collection[str], source: str = "<recovery plan>") -> RecoveryPlan:
    """Parse, validate and cross-check a plan against the known county slugs; PlanError listing
    every problem with its line otherwise."""
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as error:
        raise PlanError(source, [yaml_problem(error)]) from None
    except yaml.YAMLError as error:
        raise PlanError(source, [Located(None, f"invalid YAML: {error}")]) from None
    finally:
        loader.dispose()
    if node is None or not isinstance(data, dict):
        line = node.start_mark.line + 1 if node is not None else 1
        raise PlanError(source, [Located(line, "a recovery plan is a mapping with keys "
                                               f"{', '.join(RecoveryPlan.model_fields)}")])
    lines: dict[Path, int] = {}
    node_positions(node, (), lines)
    try:
        plan = RecoveryPlan.model_validate(data)
    except ValidationError as error:
        raise PlanError(
            source, [Located(line_of(tuple(d["loc"]), lines), _message(d)) for d in error.errors()]
        ) from None
    problems = check(plan, known)
    if problems:
        raise PlanError(source, [Located(line_of(p.path, lines), f"{dotted(p.path)}: {p.message}")
                                 for p in problems])
    return plan


def load_file(path: str | FilePath, known: Collection[str]) -> RecoveryPlan:
    path = FilePath(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PlanError(str(path), [Located(None, f"cannot read the file: {error}")]) from None
    return load_text(text, known, str(path))


def sample_path(name: str = SAMPLE) -> FilePath:
    """The embedded sample plan (for the 13 counties of inventory/samples/demo.yaml)."""
    return FilePath(str(resources.files("inventory") / "samples" / name))
