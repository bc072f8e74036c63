"""backup.rounds: counties' rounds spread across their interval, at most `cap` at once, no county
waiting more than one interval, and a restart or a county added/removed not bunching them."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from backup.policy import ROUND_LANDING, round_period
from backup.rounds import EPOCH, CountyRound, latest_slot, offsets, plan

MINUTE = timedelta(seconds=60)
TICK = timedelta(seconds=5)
START = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)  # on a minute: offset 0 is due at once
COUNTIES = ["changhua", "chiayi", "hsinchu", "hualien", "keelung", "kinmen", "miaoli", "nantou",
            "penghu", "pingtung", "taitung", "yilan", "yunlin"]


def simulate(slugs_at: dict[datetime, Sequence[str]], start: datetime, end: datetime, *, cap: int = 2,
             duration: timedelta = timedelta(seconds=3), since: datetime | None = None,
             interval: timedelta = MINUTE, last: dict[str, datetime] | None = None,
             ) -> dict[str, list[datetime]]:
    """The schedule ticking every TICK from `start` to `end`; each backup takes `duration`.
    `slugs_at`: from which time on which counties are protected. Returns each county's start times."""
    started: dict[str, list[datetime]] = {}
    last_submitted = dict(last or {})
    running: dict[str, datetime] = {}  # slug -> ends at
    now = start
    changes = sorted(slugs_at.items())
    while now <= end:
        slugs = [slugs for at, slugs in changes if at <= now][-1]
        running = {slug: ends for slug, ends in running.items() if ends > now}
        counties = [CountyRound(slug, interval, last_submitted.get(slug), slug in running) for slug in slugs]
        done = plan(counties, now, cap=cap, since=since or start)  # the scheduler began at `start`
        assert len(running) + len(done.start) <= cap
        for slug in done.start:
            started.setdefault(slug, []).append(now)
            last_submitted[slug] = now
            running[slug] = now + duration
        now += TICK
    return started


def gaps(times: list[datetime]) -> list[timedelta]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def test_offsets_are_stable_and_spread_evenly_by_name() -> None:
    counties = [CountyRound(slug, MINUTE) for slug in reversed(COUNTIES)]
    placed = offsets(counties)
    assert placed == offsets([CountyRound(slug, MINUTE) for slug in COUNTIES])  # order of the list: none
    assert sorted(placed.values()) == [MINUTE * i / 13 for i in range(13)]
    assert placed["changhua"] == timedelta(0) and placed["yunlin"] == MINUTE * 12 / 13
    assert offsets([CountyRound("keelung", timedelta(minutes=5)), CountyRound("penghu", MINUTE)]) == {
        "keelung": timedelta(0), "penghu": timedelta(seconds=30)}  # each at its share of its own interval


def test_latest_slot_is_anchored_to_the_clock() -> None:
    offset = timedelta(seconds=20)
    assert latest_slot(START + timedelta(seconds=25), offset, MINUTE) == START + offset
    assert latest_slot(START + timedelta(seconds=19), offset, MINUTE) == START + offset - MINUTE
    assert latest_slot(START + offset, offset, MINUTE) == START + offset
    assert not (START - EPOCH) % MINUTE  # offset 0 falls on the minute
    with pytest.raises(ValueError):
        latest_slot(START, offset, timedelta(0))


def test_a_round_is_spread_across_the_interval_each_county_once() -> None:
    # the last county's slot (12/13 of a minute: 55.4 s) is served at the tick of 60 s
    started = simulate({START: COUNTIES}, START, START + MINUTE, cap=13, duration=timedelta(0))
    assert sorted(started) == sorted(COUNTIES)
    assert started["changhua"] == [START, START + MINUTE]  # offset 0: again a minute later
    assert all(len(times) == 1 for slug, times in started.items() if slug != "changhua")
    per_tick: dict[datetime, int] = {}
    for at in (times[0] for times in started.values()):
        per_tick[at] = per_tick.get(at, 0) + 1
    assert max(per_tick.values()) <= 2  # 13 counties over 12 ticks, never the whole round at once
    assert len(per_tick) >= 12


def test_steady_state_every_county_once_per_interval_never_more_than_the_cap() -> None:
    # 4 s backups, room for 2: 13 a minute fit, and none waits past its interval
    started = simulate({START: COUNTIES}, START, START + 10 * MINUTE, cap=2,
                       duration=timedelta(seconds=4))
    for slug in COUNTIES:
        assert len(started[slug]) in (10, 11)
        assert all(gap <= MINUTE + TICK for gap in gaps(started[slug])), slug
        assert all(gap >= MINUTE / 2 for gap in gaps(started[slug])), slug


def test_rounds_every_round_period_keep_the_offsite_point_within_the_tiers_interval() -> None:
    # A write acknowledged just after a round's copy is offsite when the next round lands: the lag is
    # the gap between two starts plus a round's landing. Rounds every interval overshoot the tier's
    # RPO by the tick and the landing; every round_period they stay within it.
    landing = ROUND_LANDING - timedelta(seconds=1)

    def worst_lag(interval: timedelta) -> timedelta:
        started = simulate({START: COUNTIES}, START, START + 10 * MINUTE, cap=2, duration=landing,
                           interval=interval)
        return max(max(gaps(started[slug])) for slug in COUNTIES) + landing

    assert worst_lag(MINUTE) > MINUTE
    assert worst_lag(round_period(MINUTE, TICK)) <= MINUTE


def test_the_cap_holds_the_rest_until_a_place_frees() -> None:
    counties = [CountyRound(slug, MINUTE) for slug in ("a", "b", "c", "d")]
    at = START + MINUTE * 3 / 4  # all four slots (0, 15, 30, 45 s) served by now
    done = plan(counties, at, cap=2)
    assert done.start == ["a", "b"] and done.waiting == ["c", "d"] and done.in_flight == 0
    busy = [CountyRound("a", MINUTE, at, in_flight=True), CountyRound("b", MINUTE, at, in_flight=True),
            *counties[2:]]
    assert plan(busy, at + TICK, cap=2).start == []
    freed = [CountyRound("a", MINUTE, at), CountyRound("b", MINUTE, at, in_flight=True), *counties[2:]]
    assert plan(freed, at + 2 * TICK, cap=2).start == ["c"]  # the oldest slot waiting first
    # backups asked for by hand count against the cap too
    assert plan([CountyRound("a", MINUTE), CountyRound("x", MINUTE, at, True),
                 CountyRound("y", MINUTE, at, True)], at, cap=2).start == []
    with pytest.raises(ValueError):
        plan(counties, at, cap=0)


def test_a_slow_machine_past_the_cap_serves_everyone_in_turn() -> None:
    # Backups of 20 s with room for 2: 13 counties need 130 s a round, more than the interval: every
    # county still gets its turn, in slot order, and none starves.
    started = simulate({START: COUNTIES}, START, START + 10 * MINUTE, cap=2, duration=timedelta(seconds=20))
    counts = [len(started[slug]) for slug in COUNTIES]
    assert min(counts) >= max(counts) - 1 and min(counts) >= 4


def test_a_new_county_joins_within_an_interval_and_nobody_waits_longer() -> None:
    joined = START + 3 * MINUTE + timedelta(seconds=17)
    before = COUNTIES[:-1]
    started = simulate({START: before, joined: COUNTIES}, START, START + 6 * MINUTE, cap=2)
    assert started["yunlin"][0] - joined <= MINUTE
    for slug in before:
        assert all(gap <= MINUTE + TICK for gap in gaps(started[slug])), slug


def test_a_removed_county_stops_and_nobody_waits_longer() -> None:
    removed = START + 2 * MINUTE + timedelta(seconds=33)
    rest = [slug for slug in COUNTIES if slug != "hsinchu"]
    started = simulate({START: COUNTIES, removed: rest}, START, START + 5 * MINUTE, cap=2)
    assert max(started["hsinchu"]) < removed
    for slug in rest:
        assert all(gap <= MINUTE + TICK for gap in gaps(started[slug])), slug


def test_a_restart_does_not_make_every_county_due_at_once() -> None:
    # The service was down for five minutes: every county's last backup is old.
    restarted = START + timedelta(minutes=10, seconds=2)
    old = {slug: START for slug in COUNTIES}
    first = plan([CountyRound(slug, MINUTE, old[slug]) for slug in COUNTIES], restarted, cap=13,
                 since=restarted)
    assert first.start == [] and first.waiting == []  # every slot before the restart is not owed now
    started = simulate({restarted: COUNTIES}, restarted, restarted + MINUTE, cap=13,
                       duration=timedelta(0), since=restarted, last=old)
    assert sorted(started) == sorted(COUNTIES)  # each within one interval of the restart, at its place
    assert len({times[0] for times in started.values()}) >= 11
    # without the restart guard, all 13 would have been due at the first tick
    assert len(plan([CountyRound(slug, MINUTE, old[slug]) for slug in COUNTIES], restarted,
                    cap=13).start) == 13
