"""The platform's own database (inventory, counties' secrets, jobs) into restic and back.

SQLite: a consistent copy by SQLite's online backup API (writers keep going meanwhile), checked with
`PRAGMA integrity_check`, then streamed into `restic backup --stdin`. PostgreSQL: `pg_dump
--format=custom` streamed straight into restic (a failed dump leaves no snapshot: see
Restic.backup_command). Restores go to a new SQLite file or into a new, empty PostgreSQL database,
never over the live one. restic encrypts what it stores, the secrets in the database included.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from backup.restic import BackupResult, Repository, Restic, Snapshot, SnapshotNotFound

PLATFORM_TAG = "platform-db"


class DumpFormat(StrEnum):
    SQLITE = "sqlite"  # a SQLite database file
    PG_CUSTOM = "pg-custom"  # pg_dump --format=custom


# The file name a snapshot holds, per format (restic --stdin-filename).
DUMP_FILENAME = {DumpFormat.SQLITE: "platform.sqlite", DumpFormat.PG_CUSTOM: "platform.pgdump"}
_FORMAT_TAG = "format"


class CopyCheck(StrEnum):
    """How a SQLite copy is checked before it is stored. On a 41 MB county database under load,
    integrity_check took 8-10 s and quick_check 3-4 s (docs/benchmarks.md): affordable for the
    platform database and for a daily verification, not in every 60-second county round."""

    FULL = "integrity_check"
    QUICK = "quick_check"
    NONE = "none"


class PlatformDbError(RuntimeError):
    """The platform database could not be copied, checked or restored; the message says why."""


@dataclass(frozen=True)
class PlatformBackup:
    result: BackupResult
    format: DumpFormat


def format_of(url: str | URL) -> DumpFormat:
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return DumpFormat.SQLITE
    if backend == "postgresql":
        return DumpFormat.PG_CUSTOM
    raise PlatformDbError(f"no backup method for a {backend} database")


def tags_for(fmt: DumpFormat) -> list[str]:
    return [PLATFORM_TAG, f"{_FORMAT_TAG}={fmt.value}"]


def sqlite_copy(source: Path, target: Path, check: CopyCheck = CopyCheck.FULL) -> Path:
    """A consistent copy of a live SQLite database by the online backup API, checked as asked."""
    if not source.exists():
        raise PlatformDbError(f"no SQLite database at {source}")
    with contextlib.closing(sqlite3.connect(source, timeout=30)) as live, \
            contextlib.closing(sqlite3.connect(target)) as copy:
        live.backup(copy)
        # The copy is a rollback-journal file: one self-contained file to store and to restore.
        copy.execute("PRAGMA journal_mode=DELETE")
    if check is not CopyCheck.NONE:
        check_sqlite(target, check)
    return target


def check_sqlite(path: Path, check: CopyCheck = CopyCheck.FULL) -> None:
    if check is CopyCheck.NONE:
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            verdict = [row[0] for row in db.execute(f"PRAGMA {check.value}")]
    except sqlite3.DatabaseError as error:  # too damaged to even check ("malformed", "not a database")
        verdict = [str(error)]
    if verdict != ["ok"]:
        raise PlatformDbError(f"{check.value} of {path}: {'; '.join(verdict[:10])}")


@contextlib.contextmanager
def _pg_environment(url: URL) -> Iterator[tuple[list[str], dict[str, str]]]:
    """libpq connection options as arguments and, for a password, a 0600 PGPASSFILE (never the
    command line, where `ps` would show it)."""
    args = []
    if url.host:
        args += ["--host", url.host]
    if url.port:
        args += ["--port", str(url.port)]
    if url.username:
        args += ["--username", url.username]
    env = {key: value for key, value in os.environ.items() if key != "PGPASSWORD"}
    with tempfile.TemporaryDirectory(prefix="countycloud-pg-") as folder:
        if url.password is not None:
            passfile = Path(folder) / "pgpass"
            fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                escaped = str(url.password).replace("\\", "\\\\").replace(":", "\\:")
                out.write(f"*:*:*:*:{escaped}\n")
            env["PGPASSFILE"] = str(passfile)
        yield args, env


def backup(restic: Restic, repo: Repository, database_url: str, scratch: Path, *,
           host: str | None = None, timeout_s: float | None = None) -> PlatformBackup:
    """One snapshot of the platform database, tagged `platform-db` and with its format."""
    url = make_url(database_url)
    fmt = format_of(url)
    if fmt is DumpFormat.SQLITE:
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=scratch, prefix="platform-db-") as folder:
            copy = sqlite_copy(Path(str(url.database)), Path(folder) / DUMP_FILENAME[fmt])
            with copy.open("rb") as source:
                result = restic.backup_stdin(repo, source, filename=DUMP_FILENAME[fmt], tags=tags_for(fmt),
                                             host=host, timeout_s=timeout_s)
        return PlatformBackup(result, fmt)
    with _pg_environment(url) as (args, env):
        producer = ["pg_dump", "--format=custom", "--no-owner", "--no-privileges", *args,
                    "--dbname", str(url.database)]
        result = restic.backup_command(repo, producer, filename=DUMP_FILENAME[fmt], tags=tags_for(fmt),
                                       host=host, env=env, timeout_s=timeout_s)
    return PlatformBackup(result, fmt)


def snapshots(restic: Restic, repo: Repository, *, no_lock: bool = False) -> list[Snapshot]:
    """The platform database's snapshots in `repo`, oldest first (`no_lock`: a reader that writes
    nothing into the repository, not even its lock)."""
    return restic.snapshots(repo, tags=[PLATFORM_TAG], no_lock=no_lock)


def newest(restic: Restic, repo: Repository) -> Snapshot:
    return choose(snapshots(restic, repo), None, repo.location)


def choose(found: list[Snapshot], wanted: str | None, location: str = "the repository") -> Snapshot:
    """Pure: the snapshot asked for (its id or a prefix of it, 8+ characters), else the newest of
    `found` (oldest first). SnapshotNotFound says what the repository holds."""
    if not found:
        raise SnapshotNotFound(f"snapshots {location}", "no platform database snapshot in the repository")
    if wanted is None:
        return found[-1]
    if len(wanted) < 8:
        raise SnapshotNotFound(f"snapshots {location}",
                               f"{wanted!r}: name a platform database snapshot by 8+ characters of its id")
    matches = [snapshot for snapshot in found if snapshot.id.startswith(wanted)]
    if len(matches) != 1:
        held = ", ".join(snapshot.short_id for snapshot in found[-5:])
        raise SnapshotNotFound(f"snapshots {location}",
                               f"no platform database snapshot {wanted} (the newest held: {held})")
    return matches[0]


def restore(restic: Restic, repo: Repository, snapshot: Snapshot, target_url: str, scratch: Path, *,
            timeout_s: float | None = None, no_lock: bool = False) -> None:
    """Restore a platform snapshot into a new database: a SQLite file that must not exist yet, or an
    existing, empty PostgreSQL database. The snapshot's format must match the target's."""
    fmt = DumpFormat(snapshot.tag_value(_FORMAT_TAG) or "")
    url = make_url(target_url)
    if format_of(url) is not fmt:
        raise PlatformDbError(f"snapshot {snapshot.short_id} holds a {fmt} dump; {url.get_backend_name()} "
                              "cannot take it")
    path_in_snapshot = "/" + DUMP_FILENAME[fmt]
    if fmt is DumpFormat.SQLITE:
        target = Path(str(url.database))
        if target.exists():
            raise PlatformDbError(f"{target} exists: a restore never overwrites a database")
        # Checked before it takes the database's name: a damaged copy never becomes the database.
        checking = target.with_name(f"{target.name}.restoring")
        try:
            restic.dump(repo, snapshot.id, path_in_snapshot, checking, timeout_s=timeout_s, no_lock=no_lock)
            check_sqlite(checking)
            os.replace(checking, target)
        finally:
            checking.unlink(missing_ok=True)
        return
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="platform-db-") as folder:
        dump = restic.dump(repo, snapshot.id, path_in_snapshot, Path(folder) / DUMP_FILENAME[fmt],
                           timeout_s=timeout_s, no_lock=no_lock).target
        with _pg_environment(url) as (args, env):
            done = subprocess.run(
                # One transaction: a restore that fails or is killed half-way leaves the database
                # empty, so it can simply be run again.
                ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
                 *args, "--dbname", str(url.database), str(dump)],
                env=env, capture_output=True, text=True, check=False, timeout=timeout_s or restic.timeout_s,
            )
    if done.returncode != 0:
        raise PlatformDbError(f"pg_restore into {url.database}: {done.stderr.strip()[-2000:]}")
