"""A new data disk holding a restored county database, laid out as the guest's launcher expects.

The launcher mounts the ext4 file system labelled `ccdata` at /srv/tenant-data and serves
/srv/tenant-data/tenant.db (provisioning/image/files/launcher.py): the database goes at the file
system's root. mkfs.ext4's `-d` fills the new file system from a folder, so no mount (and no root)
is needed; the launcher hands the files to the app's user at activation, whatever owner they carry.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from provisioning.seed import DATA_LABEL, EAGER_INIT, probe

DATABASE_NAME = "tenant.db"  # at the data disk's root = /srv/tenant-data/tenant.db in the guest


class RestoredDiskError(RuntimeError):
    pass


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise RestoredDiskError(f"{name} not found (install e2fsprogs)")
    return found


def make(path: Path, size_mib: int, database: Path) -> bool:
    """A sparse raw ext4 `ccdata` disk at `path` with `database` as its tenant.db; True when made
    now. An existing ccdata disk at `path` is kept (a rerun after a crash: it is only ever linked
    into place complete); anything else there is refused."""
    if path.exists():
        if probe(path).get("LABEL") == DATA_LABEL:
            return False
        raise RestoredDiskError(f"{path} exists and is not a {DATA_LABEL} disk; refusing to overwrite it")
    needed_mib = database.stat().st_size // (1 << 20) + 16  # the file, ext4's metadata and a journal
    if size_mib < needed_mib:
        raise RestoredDiskError(f"a {size_mib} MiB data disk cannot hold the {database.stat().st_size} "
                                f"byte database (needs at least {needed_mib} MiB)")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".restored-") as folder:
        content = Path(folder)
        # a hard link when possible: the database is not copied once more
        try:
            os.link(database, content / DATABASE_NAME)
        except OSError:
            shutil.copyfile(database, content / DATABASE_NAME)
        (content / DATABASE_NAME).chmod(0o600)
        try:
            with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as disk:
                disk.truncate(size_mib << 20)
            done = subprocess.run([_tool("mkfs.ext4"), "-q", "-F", "-L", DATA_LABEL, *EAGER_INIT,
                                   "-d", str(content), str(partial)],
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RestoredDiskError(
                    f"mkfs.ext4 -d failed (exit {done.returncode}): {done.stderr.strip()}")
            with partial.open("rb+") as disk:
                os.fsync(disk.fileno())
            os.link(partial, path)  # never replaces a disk that appeared meanwhile
        finally:
            partial.unlink(missing_ok=True)
    return True


def check_existing(path: Path) -> Path:
    """`path`, if it is a ccdata disk (one this module made); anything else is refused."""
    if probe(path).get("LABEL") != DATA_LABEL:
        raise RestoredDiskError(f"{path} exists and is not a {DATA_LABEL} disk")
    return path


def read_database(disk: Path, target: Path) -> Path:
    """Copy tenant.db out of a data disk image without mounting it (debugfs): for checks and tests."""
    done = subprocess.run([_tool("debugfs"), "-R", f"dump /{DATABASE_NAME} {target}", str(disk)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0 or not target.exists():
        raise RestoredDiskError(f"debugfs could not read /{DATABASE_NAME} from {disk}: {done.stderr.strip()}")
    return target
