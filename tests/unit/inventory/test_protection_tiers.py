"""Protection tiers in the declaration: a county's `protection`, each tier's interval and retention;
validated with the line and what to do, planned field by field, stored, defaults when undeclared."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select

from inventory import queries
from inventory.db import session_scope
from inventory.declare import apply, plan
from inventory.enums import ChangeAction, ObjectKind, ProtectionTier
from inventory.loader import DeclarationError, load_text
from inventory.models import ChangeLogEntry
from inventory.schemas import DEFAULT_TIERS

TIERS = """\
protection_tiers:
  - name: replicated
    interval_s: 30
    retention: {keep_last: 120, keep_daily: 7}
"""


def with_tiers(small_text: str, tiers: str = TIERS) -> str:
    """The small declaration with `tiers` and penghu on the replicated tier."""
    text = small_text.replace("tenants:\n", tiers + "tenants:\n", 1)
    return text.replace("    name: 澎湖縣\n", "    name: 澎湖縣\n    protection: replicated\n", 1)


def error_of(text: str) -> DeclarationError:
    with pytest.raises(DeclarationError) as caught:
        load_text(text, "counties.yaml")
    return caught.value


def line_of(text: str, needle: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_a_county_is_on_the_backup_tier_unless_it_says_otherwise(small_text: str) -> None:
    declared = load_text(with_tiers(small_text))
    assert [(t.slug, t.protection) for t in declared.tenants] == [
        ("keelung", ProtectionTier.BACKUP), ("penghu", ProtectionTier.REPLICATED)]
    tiers = declared.tiers()
    assert tiers[ProtectionTier.REPLICATED].interval_s == 30
    assert tiers[ProtectionTier.REPLICATED].retention.counts() == (120, None, 7, None)
    assert tiers[ProtectionTier.BACKUP] == DEFAULT_TIERS[ProtectionTier.BACKUP]  # not declared: defaults
    assert DEFAULT_TIERS[ProtectionTier.BACKUP].interval_s == 60


@pytest.mark.parametrize(("bad", "needle", "said"), [
    ("    protection: replicated\n", "protection: mirrored", "tenants[1].protection"),
    ("    interval_s: 30\n", "interval_s: 5", "greater than or equal to 10"),
    ("    interval_s: 30\n", "interval_s: \"30\"", "protection_tiers[0].interval_s"),
    ("    retention: {keep_last: 120, keep_daily: 7}\n", "retention: {}", "a retention keeps something"),
    ("    retention: {keep_last: 120, keep_daily: 7}\n", "retention: {keep_last: 0}", "greater than 0"),
    ("    retention: {keep_last: 120, keep_daily: 7}\n", "retention: {keep_yearly: 3}", "keep_yearly"),
    ("  - name: replicated\n", "  - name: gold", "protection_tiers[0].name"),
])
def test_bad_tiers_are_refused_with_their_line(small_text: str, bad: str, needle: str, said: str) -> None:
    text = with_tiers(small_text)
    assert bad in text
    text = text.replace(bad, bad.replace(bad.strip(), needle.strip()), 1)
    error = error_of(text)
    assert error.problems[0].line == line_of(text, needle.strip())
    assert said in str(error)


def test_a_tier_declared_twice(small_text: str) -> None:
    twice = TIERS + "  - {name: replicated, interval_s: 60, retention: {keep_last: 5}}\n"
    error = error_of(with_tiers(small_text, twice))
    said = "duplicate protection tier name 'replicated' (already declared at protection_tiers[0].name)"
    assert said in str(error)


def test_plan_apply_store_and_change_tiers(engine: Engine, small_text: str) -> None:
    with session_scope(engine) as session:
        apply(session, load_text(small_text))
        assert queries.protection_of(session, "penghu").interval_s == 60  # nothing declared: defaults
    text = with_tiers(small_text)
    with session_scope(engine) as session:
        changes = plan(session, load_text(text))
    assert [(c.action, c.kind, c.name) for c in changes] == [
        (ChangeAction.ADD, ObjectKind.PROTECTION_TIER, "replicated"),
        (ChangeAction.CHANGE, ObjectKind.TENANT, "penghu")]
    assert [(d.field, d.before, d.after) for d in changes[1].diffs] == [
        ("protection", ProtectionTier.BACKUP, ProtectionTier.REPLICATED)]
    assert changes[0].after() == {"interval_s": 30, "keep_last": 120, "keep_hourly": None, "keep_daily": 7,
                                  "keep_monthly": None}
    with session_scope(engine) as session:
        apply(session, load_text(text), actor="alice")
        assert plan(session, load_text(text)) == []
        penghu, keelung = queries.protection_of(session, "penghu"), queries.protection_of(session, "keelung")
        assert (penghu.tier, penghu.interval_s, penghu.keep_last, penghu.keep_daily) == (
            ProtectionTier.REPLICATED, 30, 120, 7)
        assert (keelung.tier, keelung.interval_s, keelung.keep_last) == (ProtectionTier.BACKUP, 60, 60)
        logged = session.scalars(select(ChangeLogEntry).where(
            ChangeLogEntry.object_kind == ObjectKind.PROTECTION_TIER)).one()
        assert (logged.actor, logged.object_name, logged.after["interval_s"]) == ("alice", "replicated", 30)

    shorter = text.replace("keep_last: 120", "keep_last: 10")
    with session_scope(engine) as session:
        [change] = plan(session, load_text(shorter))
        assert [(d.field, d.before, d.after) for d in change.diffs] == [("keep_last", 120, 10)]
        apply(session, load_text(shorter))
        assert queries.protection_of(session, "penghu").keep_last == 10

    # the tiers' section dropped: the stored tier goes, the replicated tier is back to its defaults
    undeclared = shorter.replace(TIERS.replace("keep_last: 120", "keep_last: 10"), "")
    with session_scope(engine) as session:
        [change] = plan(session, load_text(undeclared))
        assert (change.action, change.kind, change.name) == (
            ChangeAction.REMOVE, ObjectKind.PROTECTION_TIER, "replicated")
        apply(session, load_text(undeclared))
        assert queries.protection_of(session, "penghu").interval_s == 60
        assert queries.protection_of(session, "penghu").tier is ProtectionTier.REPLICATED
