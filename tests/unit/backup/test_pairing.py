"""backup/pairing.py: which offsite snapshot holds which primary restore point."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backup import pairing, steps
from backup.restic import Snapshot, SnapshotNotFound

T0 = datetime(2026, 12, 5, 7, 0, tzinfo=UTC)


def snap(sid: str, minutes: int, *, job: str | None = None, county: str = "keelung",
         original: str | None = None) -> Snapshot:
    tags = (f"county={county}", *([f"job={job}"] if job else ()))
    return Snapshot(id=sid * (64 // len(sid)), short_id=(sid * 8)[:8], time=T0 + timedelta(minutes=minutes),
                    hostname=county, paths=("/tenant.db",), tags=tags, original=original)


def test_a_copy_pairs_by_original_and_a_point_written_with_it_by_county_and_job() -> None:
    written, copied, alone = snap("a1", 0, job="j1"), snap("a2", 1, job="j2"), snap("a3", 2, job="j3")
    offsite = [snap("b1", 0, job="j1"),  # written with a1 in the same job
               snap("b2", 1, job="j2", original=copied.id),  # restic copy of a2
               snap("b3", 2, job="j3", county="taipei")]  # another county's job of that name
    found = pairing.partners([written, copied, alone], offsite)
    assert found == {written.id: offsite[0], copied.id: offsite[1]}
    assert pairing.unpaired([alone, written, copied], offsite) == [alone]


def test_a_copy_is_paired_by_its_original_only_not_by_its_job() -> None:
    # a copy of another snapshot of the same job (never made by rounds) does not stand for this one
    primary = [snap("a1", 0, job="j1")]
    assert pairing.partners(primary, [snap("b1", 0, job="j1", original="f" * 64)]) == {}


def test_snapshots_without_a_job_pair_by_original_only() -> None:
    platform_db = Snapshot(id="c" * 64, short_id="cccccccc", time=T0, hostname="cp", paths=("/x",), tags=())
    copy = Snapshot(id="d" * 64, short_id="dddddddd", time=T0, hostname="cp", paths=("/x",), tags=(),
                    original=platform_db.id)
    assert pairing.partners([platform_db], [copy]) == {platform_db.id: copy}
    assert pairing.unpaired([platform_db], []) == [platform_db]


def test_counterpart_of_a_primary_id_at_the_offsite() -> None:
    primary = [snap("a1", 0, job="j1"), snap("a2", 1, job="j2")]
    offsite = [snap("b1", 0, job="j1"), snap("b2", 1, job="j2", original=primary[1].id)]
    assert pairing.counterpart("a1a1a1a1", offsite, primary) == offsite[0]
    assert pairing.counterpart(primary[1].id, offsite, primary) == offsite[1]
    assert pairing.counterpart("a1a1", offsite, primary) is None  # too short to name one
    assert pairing.counterpart("eeeeeeee", offsite, primary) is None


def test_choose_held_reads_the_primarys_list_only_when_the_id_is_not_found_here() -> None:
    primary = [snap("a1", 0, job="j1")]
    offsite = [snap("b1", 0, job="j1"), snap("b2", 1, job="j2", original="a2" * 32)]
    asked: list[int] = []

    def listed() -> list[Snapshot]:
        asked.append(1)
        return primary

    assert steps.choose_held(offsite, None, listed) == (offsite[1], "a2" * 32)  # newest, a copy
    assert steps.choose_held(offsite, "a2a2a2a2", listed) == (offsite[1], "a2" * 32)  # by its original
    assert asked == []
    assert steps.choose_held(offsite, "a1a1a1a1", listed) == (offsite[0], primary[0].id)  # written with it
    assert asked == [1]
    with pytest.raises(SnapshotNotFound):
        steps.choose_held(offsite, "eeeeeeee", listed)
    with pytest.raises(SnapshotNotFound):  # no primary to ask (at the primary itself, or none given)
        steps.choose_held(offsite, "a1a1a1a1")

    def lost() -> list[Snapshot]:
        raise OSError("the primary's site is gone")

    with pytest.raises(SnapshotNotFound, match="no restore point a1a1a1a1"):  # said as not found
        steps.choose_held(offsite, "a1a1a1a1", lost)
