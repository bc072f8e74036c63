"""A county's database taken app-consistently from its guest, over SSH: the fallback way.

Rounds take the database by a freeze of the guest's data file system and a read of its raw disk on
the host (backup/frozen.py: ~1 s against ~13 s for this way on a TCG guest, docs/benchmarks.md); this
way is taken when the guest agent does not freeze.

Inside the guest, a small Python program makes an online-backup copy of the app's SQLite database
(sqlite3's backup API: a consistent image of every committed transaction, WAL content included, while
the app keeps writing) and writes it to stdout. The host runs it over the platform's SSH forward
(`ssh -p SSH_PORT root@127.0.0.1`) and stages the bytes in a scratch file, where they are checked
(quick_check) and their figures computed (backup/figures.py) before `restic backup --stdin` stores
that very file with the figures as tags. Staging costs one write of the database on the host (a
county's database is tens of MB), and buys figures that are exactly those of the bytes stored.

The argv builders are pure functions; `stage` is the only side effect here.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from backup.restic import BackupResult, Repository, Restic
from provisioning.vmplan import GUEST_DATA_DIR

GUEST_DATABASE = f"{GUEST_DATA_DIR}/tenant.db"
# The guest's temporary copy: its system disk (never the data disk, which holds the county's data).
GUEST_SCRATCH_DIR = "/var/tmp"

# Run by python3 in the guest: argv[1] the database, argv[2] a scratch folder. The copy is made in one
# backup step (pages=-1): a copy made in several steps restarts whenever the app writes in between,
# and under steady writes might never finish. The database is opened read-only: the copy never
# writes to the county's data.
_COPY_PROGRAM = """\
import os, shutil, sqlite3, sys, tempfile
source = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True, timeout=30)
fd, path = tempfile.mkstemp(prefix="countycloud-backup-", suffix=".db", dir=sys.argv[2])
os.close(fd)
try:
    copy = sqlite3.connect(path)
    with copy:
        source.backup(copy, pages=-1)
    copy.close()
    source.close()
    with open(path, "rb") as image:
        shutil.copyfileobj(image, sys.stdout.buffer, 1 << 20)
    sys.stdout.buffer.flush()
finally:
    os.unlink(path)
"""

SSH_OPTIONS = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "ConnectTimeout=10", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR")


class CopyFailed(RuntimeError):
    """The database copy could not be made; the message carries the producer's own error."""


def copy_argv(database: str = GUEST_DATABASE, *, python: str = "python3",
              scratch_dir: str = GUEST_SCRATCH_DIR) -> list[str]:
    """The command that writes an online-backup copy of `database` to stdout (in the guest, or on
    any host with Python 3 for tests)."""
    return [python, "-c", _COPY_PROGRAM, database, scratch_dir]


def ssh_argv(ssh_key: Path, ssh_port: int, remote: Sequence[str]) -> list[str]:
    """`remote` run in the guest as root over its SSH forward on 127.0.0.1 (quoted for its shell)."""
    # Guest host keys are made by the platform and reached only on its own forwards: nothing to learn
    # from known_hosts (same reasoning as provisioning.configure).
    return ["ssh", "-i", str(ssh_key), "-p", str(ssh_port), *SSH_OPTIONS, "root@127.0.0.1",
            shlex.join(remote)]


def guest_copy_argv(ssh_key: Path, ssh_port: int) -> list[str]:
    return ssh_argv(ssh_key, ssh_port, copy_argv())


# The data file system thawed; `fsfreeze --unfreeze` of one that is not frozen fails with EINVAL
# (already thawed: fine); any other failure is fsfreeze's message and exit 1.
_UNFREEZE = (f"{{ out=$(fsfreeze --unfreeze {GUEST_DATA_DIR} 2>&1) || case \"$out\" in "
             f"*'Invalid argument'*) ;; *) echo \"$out\" >&2; exit 1;; esac; }}")


def thawed_copy_argv(ssh_key: Path, ssh_port: int) -> list[str]:
    """The guest's online-backup copy, its data file system thawed first in the same session: a
    freeze whose answer was lost (the agent's connection broke mid-call) would otherwise hold the
    copy's first write to SQLite's shared memory until the time-out."""
    return ssh_argv(ssh_key, ssh_port, ["sh", "-c", f"{_UNFREEZE} && exec {shlex.join(copy_argv())}"])


def unfreeze(ssh_key: Path, ssh_port: int, *, timeout_s: float = 60.0) -> None:
    """The guest's data file system thawed over SSH (QEMU's forward, not the site's daemons); one
    that was not frozen is left as it is. CopyFailed when it cannot (no SSH, or fsfreeze's error)."""
    argv = ssh_argv(ssh_key, ssh_port, ["sh", "-c", _UNFREEZE])
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as error:
        raise CopyFailed(f"ssh: no answer within {timeout_s:.0f} s") from error
    if done.returncode != 0:
        raise CopyFailed(f"ssh exited {done.returncode}: {done.stderr.strip()[-500:]}")


def stage(producer: Sequence[str], target: Path, *, timeout_s: float = 300.0) -> int:
    """Run `producer` with its stdout going to `target` (0600, replaced only when complete); the
    number of bytes. A failed producer leaves no target and raises CopyFailed with its stderr."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            try:
                done = subprocess.run(list(producer), stdout=out, stderr=subprocess.PIPE, timeout=timeout_s,
                                      check=False)
            except subprocess.TimeoutExpired as error:
                raise CopyFailed(f"{producer[0]}: no copy within {timeout_s:.0f} s") from error
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip()[-2000:]
            raise CopyFailed(f"{producer[0]} exited {done.returncode}: {said}")
        size = partial.stat().st_size
        if size == 0:
            raise CopyFailed(f"{producer[0]} wrote nothing")
        os.replace(partial, target)
        return size
    finally:
        partial.unlink(missing_ok=True)


COUNTY_TAG = "county"
DATABASE_FILENAME = "tenant.db"  # as stored: `restic dump SNAPSHOT /tenant.db > tenant.db`


def county_tag(slug: str) -> str:
    return f"{COUNTY_TAG}={slug}"


def store(restic: Restic, repo: Repository, staged: Path, slug: str, *, tags: Sequence[str] = (),
          taken_at: datetime | None = None, timeout_s: float | None = None) -> BackupResult:
    """The staged copy into `restic backup --stdin`, tagged with its county (and `tags`: its figures).
    Read from a file, so a stale lock met by restic is cleared and the same bytes read again."""
    with staged.open("rb") as source:
        return restic.backup_stdin(repo, source, filename=DATABASE_FILENAME, tags=[county_tag(slug), *tags],
                                   host=slug, taken_at=taken_at, timeout_s=timeout_s)
