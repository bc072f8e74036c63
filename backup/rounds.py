"""Which counties' backup rounds to start now (pure): each county has a stable place (its offset)
inside its interval, so a round of every county is spread across the interval instead of landing at
one moment, and at most `cap` backups run at once.

Why: a round is a copy of the county's database over SSH from a TCG guest plus two restic commands;
13 of them at the same second took both cores from everything else on the machine.

Rules (the schedule's fire calls `plan` every tick, a few seconds apart):
- A county's slots are EPOCH + offset + k x interval: anchored to the wall clock, not to when the
  service started, so a restart keeps every county's place.
- Offsets spread the counties evenly by sorted position: the i-th of n counties sits at i/n of its
  interval. A county added or removed moves the others' offsets; that is safe because of the next
  rule, which bounds the gap whatever the offsets do.
- A county is due when no backup of it was submitted since its latest slot, none is in flight, and
  the last one was submitted at least half an interval ago (an offset moved later does not back a
  county up twice in a row). So a county's gap between rounds is at most one interval (plus a tick),
  as long as the cap leaves room: a county's latest slot is always within the last interval.
- Slots before `since` (when this scheduler began) are not owed: after a restart a county whose slot
  fell while the service was down waits for its next slot, so the restart does not make every
  county due at once.
- Due counties start longest-unserved first (then by slot), up to `cap` backups in flight; the
  rest wait for the next tick (their slot is still unserved, so they stay due).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# Slots are counted from here; intervals that divide a minute or an hour then put offset 0 on the
# minute (or hour) itself.
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class CountyRound:
    """What the planner knows of one protected county."""

    slug: str
    interval: timedelta
    # When its newest backup job was submitted (scheduled or asked for), None when none is known.
    last_submitted: datetime | None = None
    # A backup job of it is queued or running now.
    in_flight: bool = False


@dataclass(frozen=True)
class Plan:
    start: list[str]  # submit these now, in this order
    waiting: list[str]  # due, but the cap is reached: the next tick takes them first
    in_flight: int  # backups queued or running before this plan


def offsets(counties: Sequence[CountyRound]) -> dict[str, timedelta]:
    """Each county's offset inside its interval: the i-th by name of n at i/n of its interval."""
    ordered = sorted(county.slug for county in counties)
    intervals = {county.slug: county.interval for county in counties}
    return {slug: intervals[slug] * index / len(ordered) for index, slug in enumerate(ordered)}


def latest_slot(now: datetime, offset: timedelta, interval: timedelta) -> datetime:
    """The county's newest slot at or before `now`."""
    if interval <= timedelta(0):
        raise ValueError("an interval is positive")
    periods = (now - EPOCH - offset) // interval
    return EPOCH + offset + interval * periods


def plan(counties: Sequence[CountyRound], now: datetime, *, cap: int,
         since: datetime | None = None) -> Plan:
    """The rounds to start at `now`: see the module's rules."""
    if cap < 1:
        raise ValueError("at least one backup must be allowed to run")
    placed = offsets(counties)
    in_flight = sum(1 for county in counties if county.in_flight)
    due: list[tuple[datetime, datetime, str]] = []
    for county in counties:
        if county.in_flight:
            continue
        slot = latest_slot(now, placed[county.slug], county.interval)
        if since is not None and slot < since:
            continue
        last = county.last_submitted
        if last is not None and (last >= slot or now - last < county.interval / 2):
            continue
        # Longest without a backup first (never backed up: first of all), then by slot: under a
        # sustained overload a county's latest slot keeps moving on, so the slot alone would starve it.
        due.append((last or datetime.min.replace(tzinfo=UTC), slot, county.slug))
    due.sort()
    room = max(cap - in_flight, 0)
    return Plan(start=[slug for *_, slug in due[:room]], waiting=[slug for *_, slug in due[room:]],
                in_flight=in_flight)
