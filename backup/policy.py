"""Backup policy (pure): protection tiers, schedule, retention, RPO and offsite lag, and which
restore point to trust. Plain functions over plain data; no restic, no clock (callers pass `now`).

The tiers (ProtectionTier) and their settings are the inventory's: a county declares its tier and
the declaration each tier's interval and retention (inventory.schemas; defaults DEFAULT_TIERS).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from inventory.enums import ProtectionTier
from inventory.queries import TierSettings
from inventory.schemas import DEFAULT_TIERS

DEFAULT_INTERVAL = timedelta(seconds=60)


@dataclass(frozen=True)
class Retention:
    """restic's --keep-* options; None leaves an option out (0 would mean "keep none by this rule")."""

    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_monthly: int | None = None

    def __post_init__(self) -> None:
        values = (self.keep_last, self.keep_hourly, self.keep_daily, self.keep_monthly)
        if any(value is not None and value < 1 for value in values):
            raise ValueError(f"retention counts must be at least 1 (or left out): {self}")
        if all(value is None for value in values):
            # restic refuses `forget` without any policy; an empty one would be a mistake anyway.
            raise ValueError("a retention keeps something: give at least one --keep-* count")


@dataclass(frozen=True)
class TierPolicy:
    interval: timedelta
    retention: Retention


def policy_from(settings: TierSettings) -> TierPolicy:
    """A tier's policy from its settings as the inventory holds them."""
    return TierPolicy(timedelta(seconds=settings.interval_s),
                      Retention(settings.keep_last, settings.keep_hourly, settings.keep_daily,
                                settings.keep_monthly))


# The defaults, for a tier the inventory does not declare (inventory.schemas.DEFAULT_TIERS).
TIERS: dict[ProtectionTier, TierPolicy] = {
    tier: TierPolicy(timedelta(seconds=declared.interval_s), Retention(*declared.retention.counts()))
    for tier, declared in DEFAULT_TIERS.items()
}


# A round's restore point lands offsite seconds after the schedule finds its county due (the copy and
# two restic commands at once: 2-3 s from a TCG guest), and the schedule looks only every few
# seconds. Rounded exactly every `interval`, a county's newest offsite point would fall up to
# interval + those seconds behind its acknowledged writes; the tier's interval is the most it may fall
# behind (its RPO objective: the BackupLagOverRPO alert and the rpo_s read it so), so rounds
# start that much more often.
ROUND_LANDING = timedelta(seconds=5)


def round_period(interval: timedelta, tick: timedelta) -> timedelta:
    """How often a county of a tier with `interval` is backed up, when the schedule looks every `tick`
    and a round lands within ROUND_LANDING; never under half the interval (a short interval is not
    turned into a storm of rounds: its RPO then exceeds it by what is left over)."""
    return max(interval - tick - ROUND_LANDING, interval / 2)


def policy_of(tier: ProtectionTier) -> TierPolicy:
    """A tier's default policy (the county's own is policy_from(inventory.queries.protection_of))."""
    return TIERS[tier]


@dataclass(frozen=True)
class RestorePoint:
    """A snapshot as the policy sees it: where it is, when it was taken, and whether it was proven."""

    snapshot_id: str
    taken_at: datetime
    offsite: bool = False
    verified: bool = False


def rpo(point: RestorePoint | None, now: datetime) -> timedelta | None:
    """What restoring `point` now would lose: the time since it was taken (None: nothing to restore)."""
    if point is None:
        return None
    return max(now - point.taken_at, timedelta(0))


def newest(points: Iterable[RestorePoint]) -> RestorePoint | None:
    return max(points, key=lambda point: point.taken_at, default=None)


def offsite_lag(primary: Iterable[RestorePoint], offsite: Iterable[RestorePoint]) -> timedelta:
    """How far the offsite copy is behind the primary: from the newest offsite point to the newest
    primary one (zero when the offsite has caught up; the whole primary history when it has nothing)."""
    newest_primary = newest(primary)
    if newest_primary is None:
        return timedelta(0)
    newest_offsite = newest(offsite)
    if newest_offsite is None:
        oldest = min(point.taken_at for point in primary)
        return newest_primary.taken_at - oldest
    return max(newest_primary.taken_at - newest_offsite.taken_at, timedelta(0))


def to_copy(primary: Sequence[RestorePoint], copied_originals: Iterable[str]) -> list[RestorePoint]:
    """The primary's snapshots the offsite does not hold yet, oldest first.

    `copied_originals` are the source ids the offsite records for its copies (restic's `original`
    field), full or short: a prefix match counts, as restic's short ids are prefixes.
    """
    copied = list(copied_originals)

    def held(snapshot_id: str) -> bool:
        return any(snapshot_id.startswith(other) or other.startswith(snapshot_id) for other in copied)

    return sorted((point for point in primary if not held(point.snapshot_id)), key=lambda p: p.taken_at)


def with_offsite(primary: Sequence[RestorePoint], copied_originals: Iterable[str]) -> list[RestorePoint]:
    """The primary's points, each marked offsite when the offsite holds a copy of it (by restic's
    `original`), oldest first: what an operator's list of restore points shows."""
    missing = {point.snapshot_id for point in to_copy(primary, copied_originals)}
    return sorted(
        (replace(point, offsite=point.snapshot_id not in missing) for point in primary),
        key=lambda point: point.taken_at,
    )


def is_due(last_taken: datetime | None, now: datetime, interval: timedelta = DEFAULT_INTERVAL) -> bool:
    return last_taken is None or now - last_taken >= interval


def newest_verified_offsite(points: Iterable[RestorePoint]) -> RestorePoint | None:
    """The restore point a failover or a restore takes by default: the newest one that is offsite and
    was proven by a verification. None when there is none: the caller must then choose explicitly."""
    return newest(point for point in points if point.offsite and point.verified)


def rpo_seconds_worst(taken: Sequence[datetime], start: datetime, end: datetime) -> float:
    """Worst RPO over [start, end] given the times restore points appeared: the longest stretch of
    time during which the newest restore point was that old (measures the steady-write benchmark)."""
    if end < start:
        raise ValueError("the window ends before it starts")
    points = sorted(time for time in taken if time <= end)
    worst = 0.0
    # Without a point before the window, the window's start stands in for one (the writes began then).
    last = max((time for time in points if time <= start), default=start)
    for time in (time for time in points if time > start):
        # Just before `time` appears, the newest restore point is `last`.
        worst = max(worst, (time - last).total_seconds())
        last = time
    return max(worst, (end - last).total_seconds())
