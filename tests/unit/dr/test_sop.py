"""The SOP document says what the plan says, in both formats: tiers in order with their parallelism,
expected RTO and RPO and counties; each batch; who does each step; and text from the plan cannot
break the document (HTML escaped, Markdown table cells kept whole)."""

from __future__ import annotations

from html.parser import HTMLParser

import jinja2
import markupsafe
import pytest

from dr import plans, sop
from dr.plans import RecoveryPlan, failover_batches
from dr.sop import SopFormat, render_sop
from inventory.loader import load_sample

DECLARATION = load_sample()
NAMES = {tenant.slug: tenant.name for tenant in DECLARATION.tenants}
PLAN = plans.load_file(plans.sample_path(), plans.known_counties(DECLARATION))


class _Tables(HTMLParser):
    """Every table row's cell texts, and every tag opened (to see nothing was injected)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.tags: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def html_rows(text: str) -> list[list[str]]:
    parser = _Tables()
    parser.feed(text)
    return parser.rows


def markdown_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|--") and not line.startswith("|---:"):
            # split on | not preceded by a backslash
            cells, current, escaped = [], "", False
            for char in line.strip()[1:-1]:
                if char == "|" and not escaped:
                    cells.append(current.strip())
                    current = ""
                else:
                    current += char
                escaped = char == "\\" and not escaped
            cells.append(current.strip())
            rows.append([cell.replace("\\|", "|") for cell in cells])
    return rows


def tier_rows(fmt: SopFormat, plan: RecoveryPlan = PLAN) -> list[list[str]]:
    text = render_sop(plan, fmt, NAMES)
    rows = html_rows(text) if fmt is SopFormat.HTML else markdown_rows(text)
    header = next(i for i, row in enumerate(rows) if row and row[0].startswith("順序"))
    return rows[header + 1:header + 1 + len(plan.tiers)]


@pytest.mark.parametrize("fmt", list(SopFormat))
def test_the_tier_table_follows_the_plan(fmt: SopFormat) -> None:
    rows = tier_rows(fmt)
    expected = [
        [str(t.order), t.name, str(t.parallelism), sop._duration(t.rto_s), sop._duration(t.rpo_s),
         ", ".join(f"{NAMES[c]} ({c})" for c in t.counties)]
        for t in PLAN.tiers_in_order()
    ]
    assert rows == expected


@pytest.mark.parametrize("fmt", list(SopFormat))
def test_tiers_are_listed_by_order_not_by_their_place_in_the_file(fmt: SopFormat) -> None:
    reversed_plan = PLAN.model_copy(update={"tiers": list(reversed(PLAN.tiers))})
    assert [row[1] for row in tier_rows(fmt, reversed_plan)] == ["tier-1", "tier-2", "tier-3"]


@pytest.mark.parametrize("fmt", list(SopFormat))
def test_each_batch_is_listed_with_its_counties(fmt: SopFormat) -> None:
    text = render_sop(PLAN, fmt, NAMES)
    positions = []
    for batch in failover_batches(PLAN):
        line = next(line for line in text.splitlines() if f"Batch {batch.number}<" in line
                    or f"Batch {batch.number}：" in line)
        for county in batch.counties:
            assert f"{NAMES[county]} ({county})" in line
        positions.append(text.index(line))
    assert positions == sorted(positions)


@pytest.mark.parametrize("fmt", list(SopFormat))
def test_every_step_appears_in_order_with_who_does_it(fmt: SopFormat) -> None:
    text = render_sop(PLAN, fmt)

    def shown(value: str) -> str:
        return str(markupsafe.escape(value)) if fmt is SopFormat.HTML else value

    steps_at = text.index("作業步驟")
    cursor = steps_at
    for step in PLAN.steps:
        role = PLAN.role(step.role)
        found = text.index(shown(step.en), cursor)
        # the role's title is in the same item, just before the text
        item = text[cursor:found]
        assert role.title_zh in item and role.title_en in item
        assert ("automated" in item) == step.automated
        cursor = found
    for role in PLAN.roles:
        assert shown(role.who) in text[:steps_at]


def test_without_names_the_counties_are_shown_by_slug() -> None:
    rows = tier_rows(SopFormat.MARKDOWN)
    text = render_sop(PLAN, SopFormat.MARKDOWN)
    assert NAMES["taichung"] in rows[0][5]
    assert NAMES["taichung"] not in text
    assert "taichung, taoyuan, changhua" in text


HOSTILE = '<script>alert("x")</script> | & <b>'


def hostile_plan() -> RecoveryPlan:
    roles = [PLAN.roles[0].model_copy(update={"who": HOSTILE}), *PLAN.roles[1:]]
    return PLAN.model_copy(update={"roles": roles, "name": HOSTILE})


def test_html_escapes_what_the_plan_says() -> None:
    text = render_sop(hostile_plan(), SopFormat.HTML)
    parser = _Tables()
    parser.feed(text)
    assert "script" not in parser.tags and "b" not in parser.tags[parser.tags.index("body"):]
    assert "&lt;script&gt;" in text
    assert any(row[1] == HOSTILE for row in parser.rows)


def test_markdown_keeps_a_pipe_inside_its_cell() -> None:
    text = render_sop(hostile_plan(), SopFormat.MARKDOWN)
    role_rows = [row for row in markdown_rows(text) if row[0].startswith(PLAN.roles[0].title_zh)]
    assert role_rows == [[f"{PLAN.roles[0].title_zh} / {PLAN.roles[0].title_en}", HOSTILE]]
    assert "&lt;" not in text  # Markdown is not HTML-escaped


def test_a_missing_value_in_a_template_is_an_error_not_a_blank() -> None:
    with pytest.raises(jinja2.UndefinedError):
        sop._ENVIRONMENT.from_string("{{ plan.nothing_here }}").render(plan=PLAN)
