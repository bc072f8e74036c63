"""backup/ops.py's pure parts: restore points merged across the two repositories, verified state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from backup import ops
from backup.restic import Snapshot
from backup.verifications import Verification

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def snap(sid: str, minutes: int, *, original: str | None = None, tags: tuple[str, ...] = ()) -> Snapshot:
    return Snapshot(id=sid * 8, short_id=sid * 2, time=T0 + timedelta(minutes=minutes), hostname="keelung",
                    paths=("/tenant.db",), tags=("county=keelung", *tags), original=original)


def proof(sid: str, ok: bool, minutes: int, original: str | None = None) -> Verification:
    return Verification("keelung", sid, original, "secondary", ok, "", T0 + timedelta(minutes=minutes))


def test_copies_pair_with_their_source_and_offsite_only_points_are_kept() -> None:
    primary = [snap("aaaa", 0, tags=("bytes=100", "fig-vouchers=3")), snap("bbbb", 1)]
    offsite = [snap("cccc", 0, original="aaaa" * 8), snap("dddd", -5, original="9999" * 8)]
    points = ops.merge_points(primary, offsite, [])
    assert [p.snapshot_id[:4] for p in points] == ["dddd", "aaaa", "bbbb"]
    old, a, b = points
    assert (old.primary, old.offsite, old.offsite_id) == (False, True, "dddd" * 8)
    assert (a.primary, a.offsite, a.offsite_id, a.bytes, a.figures) == (True, True, "cccc" * 8, 100,
                                                                        {"vouchers": "3"})
    assert (b.offsite, b.offsite_id, b.bytes) == (False, None, None)


def test_verified_is_the_newest_verification_of_the_point_or_its_copy() -> None:
    primary = [snap("aaaa", 0)]
    offsite = [snap("cccc", 0, original="aaaa" * 8)]
    # the offsite copy was restored and failed, then succeeded: verified
    [point] = ops.merge_points(primary, offsite, [proof("cccc" * 8, False, 1), proof("cccc" * 8, True, 2)])
    assert point.verified and point.verified_at == T0 + timedelta(minutes=2)
    # the newest one failed: not verified
    [point] = ops.merge_points(primary, offsite, [proof("cccc" * 8, True, 1), proof("cccc" * 8, False, 2)])
    assert not point.verified
    # a verification of another point proves nothing here
    [point] = ops.merge_points(primary, offsite, [proof("eeee" * 8, True, 1)])
    assert not point.verified and point.verified_at is None


def test_find_point_by_own_id_by_source_id_by_time_or_newest() -> None:
    offsite = [snap("cccc", 0, original="aaaa" * 8), snap("dddd", 5, original="bbbb" * 8)]
    assert ops.find_point(offsite, None).id == "dddd" * 8
    assert ops.find_point(offsite, "aaaaaaaa").id == "cccc" * 8
    assert ops.find_point(offsite, "dddddddd").id == "dddd" * 8
    assert ops.find_point(offsite, None, at_or_before=T0 + timedelta(minutes=3)).id == "cccc" * 8


def test_a_point_written_to_both_repositories_is_one_point_paired_by_its_job() -> None:
    primary = [snap("aaaa", 0, tags=("job=r1",)), snap("bbbb", 1, tags=("job=r2",))]
    offsite = [snap("cccc", 0, tags=("job=r1",)), snap("dddd", 1, tags=("job=r2",), original="bbbb" * 8)]
    points = ops.merge_points(primary, offsite, [proof("cccc" * 8, True, 5)])
    assert [(p.snapshot_id[:4], p.offsite_id and p.offsite_id[:4], p.primary, p.offsite, p.verified)
            for p in points] == [("aaaa", "cccc", True, True, True), ("bbbb", "dddd", True, True, False)]
