"""The SOP document (標準作業程序), rendered from the recovery plan as Markdown or HTML.

Rendered from the same plan the failover job runs, so the order, parallelism and expected RTO and
RPO an operator reads are the ones the job follows. Headings are in Traditional Chinese with the
English alongside: the operators are Taiwanese county IT staff. Pure: plan in, text out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import jinja2

from dr.plans import Batch, RecoveryPlan, Role, Step, Tier, failover_batches


class SopFormat(StrEnum):
    MARKDOWN = "markdown"
    HTML = "html"


_TEMPLATES = {SopFormat.MARKDOWN: "sop.md.j2", SopFormat.HTML: "sop.html.j2"}


def _markdown_cell(value: object) -> str:
    """Text safe inside a Markdown table cell: a `|` would end the cell, a newline the row."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("dr", "templates"),
    undefined=jinja2.StrictUndefined,  # a missing field is a bug, never a blank in the SOP
    # Autoescape the HTML document only: escaping Markdown would print "&amp;" to the reader.
    autoescape=lambda name: bool(name and name.endswith(".html.j2")),
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_ENVIRONMENT.filters["cell"] = _markdown_cell


@dataclass(frozen=True)
class _TierView:
    tier: Tier
    batches: list[Batch]
    names: list[str]  # the tier's counties as people call them, in the order recovered


@dataclass(frozen=True)
class _StepView:
    number: int
    step: Step
    role: Role


def _duration(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


_ENVIRONMENT.filters["duration"] = _duration


def render_sop(plan: RecoveryPlan, fmt: SopFormat, county_names: Mapping[str, str] | None = None) -> str:
    """The SOP for `plan` as `fmt`. `county_names` (slug -> name, e.g. 臺中市) labels the counties;
    a county without one is shown by its slug."""
    names = county_names or {}
    batches = failover_batches(plan)
    tiers = [
        _TierView(
            tier=tier,
            batches=[batch for batch in batches if batch.tier == tier.name],
            names=[_label(county, names) for county in tier.counties],
        )
        for tier in plan.tiers_in_order()
    ]
    roles = {role.key: role for role in plan.roles}
    steps = [_StepView(number, step, roles[step.role]) for number, step in enumerate(plan.steps, start=1)]
    template = _ENVIRONMENT.get_template(_TEMPLATES[fmt])
    return template.render(
        plan=plan, tiers=tiers, steps=steps, roles=plan.roles, batch_count=len(batches),
        county_count=sum(len(tier.counties) for tier in plan.tiers),
        label=lambda county: _label(county, names),
    )


def _label(county: str, names: Mapping[str, str]) -> str:
    return f"{names[county]} ({county})" if county in names else county
