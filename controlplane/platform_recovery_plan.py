"""What a recovery of the platform database may do with the database it finds (docs/dr.md "The
control plane's own survival"), decided apart from reading that database: the rule that a live
platform database is never overwritten, and that a rerun finishes or leaves alone what an earlier
run did, is then one function over plain data, tested case by case without a database, restic or a
DR site (tests/unit/controlplane/test_platform_recovery.py)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from controlplane.errors import ControlPlaneError, ErrorCode


class RecoveryRefused(ControlPlaneError):
    """The recovery would overwrite something, or lacks what it needs; nothing was changed."""

    code = ErrorCode.CONFLICT


class TargetKind(StrEnum):
    MISSING = "missing"
    EMPTY = "empty"  # a database (or SQLite file) without a single table
    HOLDS = "holds"  # tables: a platform database, or something else


@dataclass(frozen=True)
class Target:
    """The configured database as found before a recovery."""

    kind: TargetKind
    where: str  # its URL, password hidden
    # Files beside a missing SQLite database that belong to the one that is gone (its write-ahead
    # log, its job checkpoints): SQLite would replay a stale WAL into the restored file.
    leftovers: tuple[str, ...] = ()
    counties: int = 0
    # The snapshot the newest audit event says the database was recovered from (None: that event is
    # no recovery, so the database has been used since, or never was recovered).
    recovered_from: str | None = None
    # The platform's tables and nothing in them: any `countycloud` command run before this one made
    # them (it migrates the database it is given).
    unused: bool = False


class Next(StrEnum):
    RESTORE = "restored"  # restore the snapshot, migrate, audit
    FINISH = "finished"  # the restore is in (a PostgreSQL recovery cut short): migrate, audit
    NOTHING = "already recovered"  # the database is this snapshot's recovery, unused since


def next_step(target: Target, wanted: str | None, unfinished: str | None) -> Next:
    """What a recovery does with the database as found (pure). `wanted`: the snapshot asked for
    (None: the newest); `unfinished`: the snapshot of a PostgreSQL recovery of this database that
    restored and did not reach its audit event. RecoveryRefused otherwise."""
    def asked(snapshot: str) -> bool:
        return wanted is None or snapshot.startswith(wanted)

    if target.kind is not TargetKind.HOLDS:
        if target.leftovers:
            raise RecoveryRefused(
                f"{target.where} is missing but files of the database that was there remain "
                f"({', '.join(target.leftovers)}): move them aside with it, then run this again")
        return Next.RESTORE
    if target.unused:
        raise RecoveryRefused(
            f"{target.where} has the platform's tables and nothing in them (another countycloud command "
            "made them): drop it, create it empty, then run this again")
    if target.recovered_from is not None and asked(target.recovered_from):
        return Next.NOTHING
    if target.recovered_from is None and unfinished is not None and asked(unfinished):
        return Next.FINISH
    raise RecoveryRefused(
        f"{target.where} holds a platform database in use ({target.counties} counties): a recovery "
        "never overwrites one; move it aside or point COUNTYCLOUD_DATABASE_URL at an empty database")
