"""qcow2 disks through qemu-img: linked clones (overlays) and what a disk is backed by."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def overlay(disk: Path, backing: Path) -> None:
    """A fresh linked clone of `backing` at `disk` (replacing what was there): ~0.02 s."""
    disk.unlink(missing_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(backing), "-F", "qcow2", str(disk)],
                   check=True, capture_output=True, text=True)


def backing_of(disk: Path) -> Path | None:
    """The file a qcow2 disk is a linked clone of (None for a standalone disk or no disk)."""
    if not disk.exists():
        return None
    # -U: read the header even while QEMU holds the image open.
    info = subprocess.run(["qemu-img", "info", "--output=json", "-U", str(disk)], capture_output=True,
                          text=True, check=False)
    if info.returncode != 0:
        return None
    backing = json.loads(info.stdout).get("backing-filename")
    return Path(backing) if backing else None
