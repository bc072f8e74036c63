"""The recovery plan: the sample loads for the demo's 13 counties; every kind of mistake is refused
with the file and the line to fix; the failover's batches follow the tiers' order and parallelism."""

from __future__ import annotations

from pathlib import Path

import pytest

from dr import plans
from dr.plans import Batch, PlanError, RecoveryPlan, Tier, failover_batches
from inventory.loader import load_sample

KNOWN = plans.known_counties(load_sample())

HEAD = """\
name: test plan
roles:
  - {key: operator, title_zh: 維運, title_en: Operator, who: central IT}
steps:
  - {role: operator, zh: 執行切換, en: Run the failover}
tiers:
"""


def plan_text(*tiers: str) -> str:
    return HEAD + "".join(tiers)


def tier(name: str, order: int, counties: list[str], parallelism: int = 2) -> str:
    return (f"  - name: {name}\n    order: {order}\n    parallelism: {parallelism}\n"
            f"    rto_s: 30\n    rpo_s: 60\n    counties: [{', '.join(counties)}]\n")


def line_of(text: str, needle: str, nth: int = 1) -> int:
    found = [number for number, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(found) >= nth, f"{needle!r} not in the text {nth} time(s)"
    return found[nth - 1]


def problems(text: str, known: list[str] = KNOWN) -> list[str]:
    with pytest.raises(PlanError) as caught:
        plans.load_text(text, known, "plan.yaml")
    return caught.value.lines()


def test_the_sample_plan_puts_each_demo_county_in_exactly_one_tier() -> None:
    plan = plans.load_file(plans.sample_path(), KNOWN)
    listed = [county for tier in plan.tiers for county in tier.counties]
    assert sorted(listed) == sorted(KNOWN)
    assert len(KNOWN) == 13
    # Every step is done by a declared role: the SOP can say who does it.
    assert {step.role for step in plan.steps} <= {role.key for role in plan.roles}


def test_the_sample_plan_batches_cover_every_county_once_in_tier_order() -> None:
    plan = plans.load_file(plans.sample_path(), KNOWN)
    batches = failover_batches(plan)
    in_batches = [county for batch in batches for county in batch.counties]
    assert sorted(in_batches) == sorted(KNOWN)
    orders = [next(t.order for t in plan.tiers if t.name == batch.tier) for batch in batches]
    assert orders == sorted(orders)
    assert [batch.number for batch in batches] == list(range(1, len(batches) + 1))


SMALL = ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize(
    ("tiers", "expected"),
    [
        # one tier, parallelism 2: pairs in the listed order, the remainder last
        ([Tier(name="t1", order=1, parallelism=2, rto_s=10, rpo_s=5, counties=["a", "b", "c", "d", "e"])],
         [Batch("t1", 1, ("a", "b")), Batch("t1", 2, ("c", "d")), Batch("t1", 3, ("e",))]),
        # tiers run by `order`, not by their place in the file; a tier never shares a batch
        ([Tier(name="late", order=2, parallelism=5, rto_s=30, rpo_s=60, counties=["d", "e"]),
          Tier(name="early", order=1, parallelism=5, rto_s=10, rpo_s=5, counties=["c", "a", "b"])],
         [Batch("early", 1, ("c", "a", "b")), Batch("late", 2, ("d", "e"))]),
        # parallelism 1: one county at a time
        ([Tier(name="t1", order=1, parallelism=1, rto_s=10, rpo_s=5, counties=["b", "a"]),
          Tier(name="t2", order=7, parallelism=3, rto_s=10, rpo_s=5, counties=["c", "d", "e"])],
         [Batch("t1", 1, ("b",)), Batch("t1", 2, ("a",)), Batch("t2", 3, ("c", "d", "e"))]),
    ],
)
def test_batches_follow_order_and_parallelism(tiers: list[Tier], expected: list[Batch]) -> None:
    plan = RecoveryPlan(name="p", roles=[], steps=[], tiers=tiers)
    assert failover_batches(plan) == expected


def test_batches_refuse_a_plan_built_in_code_with_parallelism_zero() -> None:
    plan = RecoveryPlan(name="p", roles=[], steps=[], tiers=[
        Tier(name="t1", order=1, parallelism=0, rto_s=10, rpo_s=5, counties=["a"])])
    with pytest.raises(ValueError, match="parallelism"):
        failover_batches(plan)


# Each bad plan, the line its problem must be reported on (a needle and which occurrence), and words
# the message must contain.
CASES = [
    ("unknown county",
     plan_text(tier("t1", 1, ["a", "b", "c"]), tier("t2", 2, ["d", "e", "zz"])),
     ("counties: [d, e, zz]", 1), ["unknown county 'zz'"]),
    ("county in two tiers",
     plan_text(tier("t1", 1, ["a", "b", "c"]), tier("t2", 2, ["d", "e", "b"])),
     ("counties: [d, e, b]", 1), ["county 'b' is already in tier 't1'", "exactly one tier"]),
    ("county twice in one tier",
     plan_text(tier("t1", 1, ["a", "b", "c", "d", "e", "a"])),
     ("counties: [a", 1), ["county 'a' is already in tier 't1'"]),
    ("county in no tier",
     plan_text(tier("t1", 1, ["a", "b", "c"]), tier("t2", 2, ["d"])),
     ("tiers:", 1), ["counties in no tier: e"]),
    ("empty tier",
     plan_text(tier("t1", 1, SMALL), tier("t2", 2, [])),
     ("counties: []", 1), ["tier 't2' has no counties"]),
    ("parallelism zero",
     plan_text(tier("t1", 1, ["a", "b"]), tier("t2", 2, ["c", "d", "e"], parallelism=0)),
     ("parallelism: 0", 1), ["tier 't2': parallelism must be at least 1 (got 0)"]),
    ("parallelism negative",
     plan_text(tier("t1", 1, SMALL, parallelism=-2)),
     ("parallelism: -2", 1), ["parallelism must be at least 1 (got -2)"]),
    ("two tiers with one order",
     plan_text(tier("t1", 1, ["a", "b"]), tier("t2", 1, ["c", "d", "e"])),
     ("order: 1", 2), ["duplicate tier order 1"]),
    ("two tiers with one name",
     plan_text(tier("t1", 1, ["a", "b"]), tier("t1", 2, ["c", "d", "e"])),
     ("name: t1", 2), ["duplicate tier name 't1'"]),
    ("a later tier expecting a shorter RTO",
     plan_text(tier("t1", 1, ["a", "b"]), tier("t2", 2, ["c", "d", "e"])).replace("rto_s: 30", "rto_s: 20", 2)
     .replace("rto_s: 20", "rto_s: 30", 1),
     ("rto_s: 20", 1), ["tier 't2' expects an RTO of 20 s, less than tier 't1' before it (30 s)"]),
    ("a step by an undeclared role",
     plan_text(tier("t1", 1, SMALL)).replace("{role: operator", "{role: dba"),
     ("{role: dba", 1), ["unknown role 'dba'", "roles: operator"]),
    ("a misspelt key",
     plan_text(tier("t1", 1, SMALL)).replace("parallelism: 2", "paralelism: 2"),
     ("paralelism", 1), ["unknown key 'paralelism'", "allowed:", "parallelism"]),
    ("a missing key",
     plan_text(tier("t1", 1, SMALL)).replace("    rpo_s: 60\n", ""),
     ("- name: t1", 1), ["missing required key 'rpo_s'"]),
    ("an RTO that is not positive",
     plan_text(tier("t1", 1, SMALL)).replace("rto_s: 30", "rto_s: 0"),
     ("rto_s: 0", 1), ["tiers[0].rto_s", "greater than 0"]),
    ("a duplicate key",
     plan_text(tier("t1", 1, SMALL)).replace("    rpo_s: 60\n", "    rpo_s: 60\n    rpo_s: 5\n"),
     ("rpo_s: 5", 1), ["duplicate key 'rpo_s'"]),
    ("broken YAML",
     plan_text(tier("t1", 1, SMALL)).replace("    rto_s: 30", "   rto_s: 30"),
     ("rto_s: 30", 1), ["invalid YAML"]),
    ("a county that is not a name",
     plan_text(tier("t1", 1, SMALL)).replace("counties: [a, b", "counties: [a, {b: 1}"),
     ("counties: [a", 1), ["tiers[0].counties[1]", "valid string"]),
]


@pytest.mark.parametrize(("text", "where", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_mistake_is_reported_with_its_line(text: str, where: tuple[str, int], words: list[str]) -> None:
    found = problems(text, SMALL)
    line = line_of(text, *where)
    matching = [p for p in found if all(word in p for word in words)]
    assert matching, f"no problem with {words} in {found}"
    assert matching[0].startswith(f"plan.yaml:{line}: "), (matching[0], line)


def test_a_misspelt_county_gets_a_suggestion() -> None:
    text = plans.sample_path().read_text(encoding="utf-8").replace("[taichung,", "[taichng,")
    found = problems(text)
    line = line_of(text, "[taichng,")
    assert f"plan.yaml:{line}: tiers[0].counties[0]: unknown county 'taichng'" in "\n".join(found)
    assert any("did you mean 'taichung'" in p for p in found)
    # and the real one, now in no tier, is named too
    assert any("counties in no tier: taichung" in p for p in found)


def test_every_problem_is_reported_at_once() -> None:
    text = plan_text(tier("t1", 1, ["a", "zz"], parallelism=0), tier("t2", 2, []))
    found = problems(text, SMALL)
    assert any("unknown county 'zz'" in p for p in found)
    assert any("parallelism must be at least 1" in p for p in found)
    assert any("tier 't2' has no counties" in p for p in found)
    assert any("counties in no tier: b, c, d, e" in p for p in found)


@pytest.mark.parametrize("text", ["", "- just a list\n", "just text\n"])
def test_a_file_that_is_no_plan_is_refused(text: str) -> None:
    (problem,) = problems(text, SMALL)
    assert "a recovery plan is a mapping with keys name, roles, steps, tiers" in problem


def test_an_unreadable_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PlanError) as caught:
        plans.load_file(missing, SMALL)
    assert caught.value.lines()[0].startswith(f"{missing}: cannot read the file")


def test_a_valid_plan_loads() -> None:
    plan = plans.load_text(plan_text(tier("t1", 1, ["a", "b"]), tier("t2", 2, ["c", "d", "e"])), SMALL)
    assert [t.name for t in plan.tiers_in_order()] == ["t1", "t2"]
