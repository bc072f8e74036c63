"""backup.policy: tiers, retention, RPO, offsite lag, what to copy, which point to trust."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backup.policy import (
    DEFAULT_INTERVAL,
    ProtectionTier,
    RestorePoint,
    Retention,
    is_due,
    newest_verified_offsite,
    offsite_lag,
    policy_of,
    round_period,
    rpo,
    rpo_seconds_worst,
    to_copy,
    with_offsite,
)

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def point(snapshot_id: str, seconds: float, *, offsite: bool = False, verified: bool = False) -> RestorePoint:
    return RestorePoint(snapshot_id, at(seconds), offsite=offsite, verified=verified)


def test_every_tier_has_a_policy_with_the_default_interval() -> None:
    for tier in ProtectionTier:
        assert policy_of(tier).interval == DEFAULT_INTERVAL == timedelta(seconds=60)
    assert ProtectionTier("replicated") is ProtectionTier.REPLICATED


def test_retention_refuses_zero_and_empty() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Retention(keep_last=0)
    with pytest.raises(ValueError, match="at least one"):
        Retention()
    assert Retention(keep_daily=7).keep_daily == 7


def test_rpo_is_the_age_of_the_point_and_none_without_one() -> None:
    assert rpo(point("a", 0), at(42)) == timedelta(seconds=42)
    assert rpo(None, at(42)) is None
    # a point stamped slightly in the future (clock skew) is not a negative loss
    assert rpo(point("a", 5), at(0)) == timedelta(0)


def test_offsite_lag() -> None:
    primary = [point("a", 0), point("b", 60), point("c", 120)]
    assert offsite_lag(primary, [point("a'", 0)]) == timedelta(seconds=120)
    assert offsite_lag(primary, [point("c'", 120)]) == timedelta(0)
    assert offsite_lag(primary, []) == timedelta(seconds=120)
    assert offsite_lag([], []) == timedelta(0)


def test_to_copy_lists_the_points_the_offsite_lacks_oldest_first() -> None:
    primary = [point("cccccccc11", 120), point("aaaaaaaa11", 0), point("bbbbbbbb11", 60)]
    # the offsite records full ids or short prefixes as `original`
    missing = to_copy(primary, ["aaaaaaaa"])
    assert [p.snapshot_id for p in missing] == ["bbbbbbbb11", "cccccccc11"]
    assert to_copy(primary, ["aaaaaaaa11", "bbbbbbbb", "cccccccc11"]) == []


def test_with_offsite_marks_the_points_that_have_a_copy() -> None:
    primary = [point("bbbbbbbb11", 60), point("aaaaaaaa11", 0)]
    marked = with_offsite(primary, ["aaaaaaaa"])
    assert [(p.snapshot_id, p.offsite) for p in marked] == [("aaaaaaaa11", True), ("bbbbbbbb11", False)]


def test_is_due() -> None:
    assert is_due(None, at(0))
    assert not is_due(at(0), at(59))
    assert is_due(at(0), at(60))
    assert is_due(at(0), at(10), timedelta(seconds=5))


def test_newest_verified_offsite_ignores_unverified_and_local_points() -> None:
    points = [
        point("old", 0, offsite=True, verified=True),
        point("newer-local", 100, offsite=False, verified=True),
        point("newest-unverified", 200, offsite=True, verified=False),
        point("mid", 50, offsite=True, verified=True),
    ]
    chosen = newest_verified_offsite(points)
    assert chosen is not None and chosen.snapshot_id == "mid"
    assert newest_verified_offsite([point("x", 0, offsite=True)]) is None


def test_worst_rpo_over_a_window() -> None:
    # points every 60 s, one late (at 150 instead of 120): the worst stretch is 90 s
    taken = [at(s) for s in (-10, 60, 150, 180)]
    assert rpo_seconds_worst(taken, at(0), at(200)) == pytest.approx(90)
    # nothing during the window: the whole window since the last point before it
    assert rpo_seconds_worst([at(-10)], at(0), at(30)) == pytest.approx(40)
    # no point at all: counted from the window's start
    assert rpo_seconds_worst([], at(0), at(30)) == pytest.approx(30)
    with pytest.raises(ValueError):
        rpo_seconds_worst([], at(10), at(0))


def test_a_tiers_policy_from_the_inventorys_settings() -> None:
    from backup.policy import policy_from
    from inventory.queries import TierSettings

    made = policy_from(TierSettings(ProtectionTier.REPLICATED, 30, 120, None, 7, None))
    assert made.interval == timedelta(seconds=30)
    assert made.retention == Retention(keep_last=120, keep_daily=7)
    with pytest.raises(ValueError, match="at least one"):
        policy_from(TierSettings(ProtectionTier.BACKUP, 60, None, None, None, None))


def test_round_period_leaves_room_for_the_tick_and_the_landing() -> None:
    tick = timedelta(seconds=5)
    assert round_period(timedelta(seconds=60), tick) == timedelta(seconds=50)
    assert round_period(timedelta(hours=1), tick) == timedelta(seconds=3590)
    # a short interval is not turned into a storm of rounds
    assert round_period(timedelta(seconds=12), tick) == timedelta(seconds=6)
