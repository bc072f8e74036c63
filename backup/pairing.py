"""Which offsite snapshot holds which primary restore point (pure).

A round writes both repositories at once (two `restic backup` of the same staged copy, same time,
same tags: backup/steps.py says why), so the offsite snapshot of a round is not a `restic copy`
and records no `original`. It is the primary's counterpart by the job that made both: the same
county tag and the same `job=ID` tag (a job makes one restore point). A snapshot that reached the
offsite by `restic copy` (a round whose offsite write failed, caught up later; the platform
database; any point made before rounds wrote both) is paired by its `original`, as restic does.

Everything that matches the two repositories' snapshots goes through here: the restore points list
(ops.merge_points), the offsite catch-up (ops.copy_offsite copies only the unpaired, so a point
written to both is never copied a second time), and a restore asked for by the primary's id at the
offsite (choose_snapshot's fallback).
"""

from __future__ import annotations

from collections.abc import Sequence

from backup.consistent import COUNTY_TAG
from backup.restic import Snapshot

JOB_TAG = "job"  # a round's snapshots carry job=ID (one restore point per job)


def job_key(snapshot: Snapshot) -> tuple[str, str] | None:
    """(county, job) of a round's snapshot; None for one without both tags (the platform database)."""
    county, job = snapshot.tag_value(COUNTY_TAG), snapshot.tag_value(JOB_TAG)
    return (county, job) if county and job else None


def partners(primary: Sequence[Snapshot], offsite: Sequence[Snapshot]) -> dict[str, Snapshot]:
    """Primary snapshot id -> the offsite snapshot holding the same restore point: the copy whose
    `original` names it, else the one written with it by the same job (no `original`)."""
    by_original = {snapshot.original: snapshot for snapshot in offsite if snapshot.original}
    by_job = {key: snapshot for snapshot in offsite
              if not snapshot.original and (key := job_key(snapshot)) is not None}
    found: dict[str, Snapshot] = {}
    for snapshot in primary:
        key = job_key(snapshot)
        partner = by_original.get(snapshot.id) or (by_job.get(key) if key is not None else None)
        if partner is not None:
            found[snapshot.id] = partner
    return found


def unpaired(primary: Sequence[Snapshot], offsite: Sequence[Snapshot]) -> list[Snapshot]:
    """The primary's snapshots the offsite does not hold yet, oldest first: what a catch-up copies."""
    held = partners(primary, offsite)
    return sorted((snapshot for snapshot in primary if snapshot.id not in held), key=lambda s: s.time)


def counterpart(wanted: str, offsite: Sequence[Snapshot], primary: Sequence[Snapshot]) -> Snapshot | None:
    """The offsite snapshot holding the point that the primary's snapshot `wanted` (full id, or a
    short one of at least 8 characters) holds; None when there is none."""
    asked = [snapshot for snapshot in primary if snapshot.id.startswith(wanted)]
    if len(wanted) < 8 or len(asked) != 1:
        return None
    return partners(asked, offsite).get(asked[0].id)
