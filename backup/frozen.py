"""A county's database taken from its data disk on the host, under a guest-agent freeze.

The other way to take the database app-consistently (backup/consistent.py streams SQLite's online
backup out of the guest over SSH). Measured side by side on a real TCG guest with a 40 MB database
(docs/benchmarks.md, bench/backup.py --vm): the SSH stream took ~15 s (SSH set-up ~4 s, Python's
start in the guest, the copy and SSH's encryption of 40 MB all emulated), this way ~1.5 s, with the
county's writers held for ~0.4-0.6 s. So rounds take this way, and fall back to the SSH stream when
the guest agent does not answer or refuses.

Why it is app-consistent: `guest-fsfreeze-freeze-list` freezes the data file system only (the
county's system disk keeps working); the kernel writes every dirty page of the file system and
checkpoints ext4's journal before the freeze returns, so the data disk then holds every byte the app
had written, including WAL frames of commits it acknowledged (under synchronous=NORMAL a commit is a
write() without fsync: it is in the page cache, which the freeze writes out). While frozen, debugfs
reads `tenant.db` and `tenant.db-wal` straight from the raw disk file (only the files' blocks, not
the whole disk); then the file system is thawed. On the host, SQLite opens the pair, replays the WAL
(a transaction half-written when frozen has no commit frame and is left out, as after a crash) and
folds it into one file (journal_mode=DELETE), which is quick_checked.

A freeze left behind (the control plane killed between freeze and thaw) would stop the county's
writes: `take` first thaws whatever is frozen, so the step's rerun on resume releases it, and the
thaw is retried before an error is reported. When the agent cannot be reached to thaw (the site's
libvirt daemon died with the guest frozen: the guest itself runs on), `thaw_otherwise` is tried:
the caller's other way into the guest (backup.steps: `fsfreeze --unfreeze` over SSH, which goes
through QEMU's own forward, not the daemon).
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from backup.platformdb import CopyCheck, check_sqlite
from provisioning.vmplan import GUEST_DATA_DIR

DATABASE = "tenant.db"
WAL = "tenant.db-wal"
THAW_ATTEMPTS = 3


class FreezeFailed(RuntimeError):
    """The freeze could not be made (agent away or refusing): nothing was frozen, another way may
    be taken."""


class ThawFailed(RuntimeError):
    """The data file system may still be frozen: the county's writes wait until it is thawed."""


class ExtractFailed(RuntimeError):
    """The database could not be read out of the disk image."""


class Agent(Protocol):
    """What this module needs of provisioning.hypervisor.Hypervisor."""

    def agent(self, name: str, command: str, arguments: dict[str, Any] | None = None,
              timeout_s: int = 10) -> Any: ...


@dataclass(frozen=True)
class Taken:
    path: Path
    bytes: int
    frozen_s: float  # how long the county's writers were held
    wall_s: float


# --- pure parts --------------------------------------------------------------------------------

def debugfs_commands(out_dir: Path, names: Sequence[str] = (DATABASE, WAL)) -> str:
    """One debugfs session: the root listed (which files exist, their sizes), each file dumped."""
    return "ls -l /\n" + "".join(f"dump -p /{name} {out_dir / name}\n" for name in names)


def parse_listing(text: str) -> dict[str, int]:
    """Regular files at the root and their sizes, from debugfs' `ls -l /` lines
    (`INODE MODE (LINKS) UID GID SIZE DATE TIME NAME`)."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split(maxsplit=8)
        if len(parts) == 9 and parts[0].isdigit() and parts[1].startswith("100") and parts[5].isdigit():
            found[parts[8]] = int(parts[5])
    return found


def check_dumped(listed: Mapping[str, int], out_dir: Path) -> None:
    """Every file the listing names is dumped whole; the database itself must be there. A WAL
    listed but not read whole would lose acknowledged commits: refused, never skipped."""
    if DATABASE not in listed:
        raise ExtractFailed(f"no /{DATABASE} on the data disk (found {sorted(listed) or 'nothing'})")
    for name in (DATABASE, WAL):
        if name in listed:
            dumped = out_dir / name
            size = dumped.stat().st_size if dumped.exists() else -1
            if size != listed[name]:
                raise ExtractFailed(f"/{name}: {size} bytes read of {listed[name]}")


# --- edges -------------------------------------------------------------------------------------

def _debugfs() -> str:
    found = shutil.which("debugfs") or shutil.which("debugfs", path="/usr/sbin:/sbin")
    if found is None:
        raise ExtractFailed("debugfs not found (install e2fsprogs)")
    return found


def extract(disk: Path, out_dir: Path) -> dict[str, int]:
    """tenant.db (and its WAL, when there is one) out of a raw ext4 disk, without mounting it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    commands = out_dir / "debugfs.commands"
    commands.write_text(debugfs_commands(out_dir))
    done = subprocess.run([_debugfs(), "-f", str(commands), str(disk)], capture_output=True, text=True,
                          check=False, timeout=300)
    if done.returncode != 0:
        raise ExtractFailed(f"debugfs exited {done.returncode}: {done.stderr.strip()[-1000:]}")
    listed = parse_listing(done.stdout)
    check_dumped(listed, out_dir)
    return listed


def fold(out_dir: Path, *, check: bool = True) -> Path:
    """The WAL replayed into the database file (one file left), quick_checked unless the caller
    checks it itself (backup.figures.read_checked reads the figures during the check)."""
    database = out_dir / DATABASE
    db = sqlite3.connect(database)
    try:
        # A scratch copy: nothing needs it on the platter, restic reads it from the page cache (the
        # debugfs dumps are not synced either; a host crash reruns the copy). The checkpoint's two
        # fsyncs cost ~0.1 s per round for nothing.
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA journal_mode=DELETE")
    finally:
        db.close()
    if check:
        check_sqlite(database, CopyCheck.QUICK)
    return database


def thaw(hv: Agent, vm_name: str) -> int:
    """Thaw, retried; the number of file systems thawed. Raises ThawFailed when it never answers."""
    last: Exception | None = None
    for attempt in range(THAW_ATTEMPTS):
        try:
            return int(hv.agent(vm_name, "guest-fsfreeze-thaw", timeout_s=30) or 0)
        except Exception as error:
            last = error
            time.sleep(0.5 * (attempt + 1))
    raise ThawFailed(f"{vm_name}: data file system may still be frozen: {last}") from last


def thaw_or_otherwise(hv: Agent, vm_name: str, otherwise: Callable[[], None] | None) -> None:
    """Thaw through the agent; when it never answers, `otherwise` (which raises ThawFailed itself
    when it cannot thaw either). The agent's error is kept in the message."""
    try:
        thaw(hv, vm_name)
    except ThawFailed as error:
        if otherwise is None:
            raise
        try:
            otherwise()
        except ThawFailed as other:
            raise ThawFailed(f"{error}; and otherwise: {other}") from other


def _freeze(hv: Agent, vm_name: str, mountpoint: str,
            thaw_otherwise: Callable[[], None] | None) -> tuple[int, float]:
    """Freeze `mountpoint`: the number of file systems frozen and when the freeze began.

    A freeze left by a killed attempt is released first. The agent is asked about one only when the
    freeze is not made (a frozen agent refuses to freeze again), not before every round: each agent
    command is a guest-sync exchange plus the command with the TCG guest (~0.1 s together)."""
    frozen_at = time.monotonic()
    try:
        count = hv.agent(vm_name, "guest-fsfreeze-freeze-list", {"mountpoints": [mountpoint]}, timeout_s=30)
        if count:
            return int(count), frozen_at
        refused: Exception | None = None
    except Exception as error:
        count, refused = 0, error
    try:
        stale = hv.agent(vm_name, "guest-fsfreeze-status", timeout_s=10) == "frozen"
    except Exception as error:
        raise FreezeFailed(f"{vm_name}: no freeze of {mountpoint}: {refused or error}") from error
    if not stale:
        if refused is not None:
            raise FreezeFailed(f"{vm_name}: no freeze of {mountpoint}: {refused}") from refused
        return 0, frozen_at  # nothing frozen (no such mount): take() says so, after a thaw
    # ThawFailed: the county's writes may be held, an error, never a fallback
    thaw_or_otherwise(hv, vm_name, thaw_otherwise)
    frozen_at = time.monotonic()
    try:
        count = hv.agent(vm_name, "guest-fsfreeze-freeze-list", {"mountpoints": [mountpoint]}, timeout_s=30)
    except Exception as error:
        raise FreezeFailed(f"{vm_name}: no freeze of {mountpoint}: {error}") from error
    return int(count or 0), frozen_at


def take(hv: Agent, vm_name: str, disk: Path, target: Path, *, mountpoint: str = GUEST_DATA_DIR,
         check: bool = True, thaw_otherwise: Callable[[], None] | None = None) -> Taken:
    """The county's database as of one instant, at `target` (0600, replaced only when complete);
    quick_checked unless `check` is False (the caller checks it, see fold). `thaw_otherwise`:
    another way to thaw when the agent cannot be reached (see the module's text)."""
    began = time.monotonic()
    count, frozen_at = _freeze(hv, vm_name, mountpoint, thaw_otherwise)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".frozen-") as folder:
        try:
            if not count:
                raise FreezeFailed(f"{vm_name}: the agent froze no file system at {mountpoint}")
            extract(disk, Path(folder))
        finally:
            thaw_or_otherwise(hv, vm_name, thaw_otherwise)
            frozen_s = time.monotonic() - frozen_at
        database = fold(Path(folder), check=check)
        database.chmod(0o600)
        database.replace(target)
    return Taken(path=target, bytes=target.stat().st_size, frozen_s=frozen_s, wall_s=time.monotonic() - began)
