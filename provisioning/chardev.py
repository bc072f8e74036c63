"""The host end of a VM's guestfwd (provisioning/domain_xml.py): the TCP connection its QEMU chardev
keeps to a listener on 127.0.0.1, found and reset from the host.

Why a reset is needed at all: QEMU's guestfwd with a chardev (net/slirp.c) registers no event
handler on the chardev, and slirp hands the chardev's bytes to whichever guest socket to the
forwarded address it finds first. So the chardev's one host connection is shared, over time, by
every connection the guest opens: the guest closing its connection does not close the host one,
and the host one ending (the listener restarted) does not close the guest's. After a listener
restart the new server's greeting reaches an old guest connection, and each later session starts
off by one (docs/backup.md, "The replicated tier"). What realigns them is a guest with no
connection open and a host connection that is new: aborting the chardev's socket (`ss -K`, a
reset QEMU sees at once; a plain close is not noticed while no guest socket reads) makes QEMU
reconnect within its `reconnect=` interval, and the new server's greeting waits in that socket
until the guest's next connection reads it.

The `cmd:` form of guestfwd (a process per guest connection) would not need this, but QEMU under
libvirt's seccomp sandbox (spawn=deny) dies on its first connection.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

LOOPBACK_HEX = "0100007F"  # 127.0.0.1 as /proc/net/tcp prints it (host byte order, x86)
ESTABLISHED = "01"


def _socket_inodes(pid: int) -> set[str]:
    fds = Path(f"/proc/{pid}/fd")
    inodes = set()
    try:
        entries = list(fds.iterdir())
    except OSError:
        return set()
    for fd in entries:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def parse_tcp_table(text: str, inodes: set[str], port: int) -> list[int]:
    """Pure: the local ports of the established IPv4 connections in a /proc/net/tcp `text` whose
    socket is one of `inodes` and whose peer is 127.0.0.1:`port`."""
    found = []
    peer = f"{LOOPBACK_HEX}:{port:04X}"
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if remote == peer and state == ESTABLISHED and inode in inodes:
            found.append(int(local.rsplit(":", 1)[1], 16))
    return sorted(found)


def host_connections(pid: int, port: int) -> list[int]:
    """The local ports of process `pid`'s established connections to 127.0.0.1:`port`."""
    inodes = _socket_inodes(pid)
    if not inodes:
        return []
    try:
        table = Path(f"/proc/{pid}/net/tcp").read_text()
    except OSError:
        return []
    return parse_tcp_table(table, inodes, port)


def abort_argv(local_port: int, port: int) -> list[str]:
    return ["ss", "-K", "-tn", "state", "established", "src", f"127.0.0.1:{local_port}",
            "dst", f"127.0.0.1:{port}"]


def reset(pid: int, port: int) -> list[int]:
    """Abort process `pid`'s connections to 127.0.0.1:`port` (the chardev then reconnects); returns
    the local ports it aborted."""
    aborted = host_connections(pid, port)
    for local_port in aborted:
        subprocess.run(abort_argv(local_port, port), check=True, capture_output=True, timeout=30)
    return aborted


def wait_connected(pid: int, port: int, *, other_than: list[int], timeout_s: float) -> int | None:
    """The local port of a connection of `pid` to 127.0.0.1:`port` not in `other_than`, once there
    (None after `timeout_s`: nothing listening there, or the process gone)."""
    deadline = time.monotonic() + timeout_s
    while True:
        fresh = [p for p in host_connections(pid, port) if p not in other_than]
        if fresh:
            return fresh[0]
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)
