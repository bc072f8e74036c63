"""The host end of a VM's guestfwd (provisioning/domain_xml.py): the TCP connection its QEMU chardev
keeps to a listener on 127.0.0.1, found and reset from the host.

Why a reset is needed at all: QEMU's guestfwd with a chardev (net/slirp.c) registers no event
handler on the chardev, and slirp hands the chardev's bytes to the newest guest socket to the
forwarded address (slirp_find_ctl_socket), closed or not. So the chardev's one host connection
is shared, over time, by every connection the guest opens: the guest closing its connection does
not close the host one (slirp keeps its end in CLOSE_WAIT for good, still taking bytes), and the
host one ending (the listener restarted) does not close the guest's. After a listener restart the
new server's greeting reaches an old or closed guest connection, and each later session starts off
by one (docs/backup.md, "The replicated tier").

What realigns the two ends, with nothing in the guest connected through the forward: abort the
chardev's socket (`ss -K`: a reset, so QEMU's socket reports a hang-up at once, which QEMU acts on
even while no guest socket reads, and it reconnects within its `reconnect=` interval); the
listener greets at once. A closed guest
connection that slirp still holds takes that greeting (the guest answers with a reset, and slirp
drops it), so repeat until a greeting stays unread in QEMU's socket: then no guest socket is left
to take it, and the guest's next connection reads it first.

The `cmd:` form of guestfwd (a process per guest connection) would not need this, but QEMU under
libvirt's seccomp sandbox (spawn=deny) dies on its first connection.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

LOOPBACK_HEX = "0100007F"  # 127.0.0.1 as /proc/net/tcp prints it (host byte order, x86)
ESTABLISHED = "01"
CLOSE_WAIT = "08"  # the listener closed it and the process has not noticed


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


@dataclass(frozen=True)
class Connection:
    local_port: int
    unread: int  # bytes received that the process has not read yet (rx_queue)


def parse_tcp_table(text: str, inodes: set[str], port: int,
                    states: tuple[str, ...] = (ESTABLISHED,)) -> list[Connection]:
    """Pure: the IPv4 connections in one of `states` in a /proc/net/tcp `text` whose socket is one of
    `inodes` and whose peer is 127.0.0.1:`port`, by local port."""
    found = []
    peer = f"{LOOPBACK_HEX}:{port:04X}"
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local, remote, state, queues, inode = fields[1], fields[2], fields[3], fields[4], fields[9]
        if remote == peer and state in states and inode in inodes:
            found.append(Connection(int(local.rsplit(":", 1)[1], 16), int(queues.split(":")[1], 16)))
    return sorted(found, key=lambda c: c.local_port)


def host_connections(pid: int, port: int, states: tuple[str, ...] = (ESTABLISHED,)) -> list[Connection]:
    """Process `pid`'s connections to 127.0.0.1:`port` (established ones, unless `states` says)."""
    inodes = _socket_inodes(pid)
    if not inodes:
        return []
    try:
        table = Path(f"/proc/{pid}/net/tcp").read_text()
    except OSError:
        return []
    return parse_tcp_table(table, inodes, port, states)


def abort_argv(local_port: int, port: int) -> list[str]:
    return ["ss", "-K", "-tn", "state", "established", "state", "close-wait",
            "src", f"127.0.0.1:{local_port}", "dst", f"127.0.0.1:{port}"]


def reset(pid: int, port: int) -> list[int]:
    """Abort process `pid`'s connections to 127.0.0.1:`port` (the chardev then reconnects); returns
    the local ports it aborted. Those the listener closed too: a listener restarted while no guest
    socket read from the forward leaves QEMU's socket in CLOSE_WAIT, where a FIN alone raises no
    hang-up QEMU acts on, so it never reconnects by itself (a failover bench's streams, 2026-12-05)."""
    aborted = [c.local_port for c in host_connections(pid, port, (ESTABLISHED, CLOSE_WAIT))]
    for local_port in aborted:
        subprocess.run(abort_argv(local_port, port), check=True, capture_output=True, timeout=30)
    return aborted


def wait_connected(pid: int, port: int, *, other_than: list[int], timeout_s: float) -> Connection | None:
    """A connection of `pid` to 127.0.0.1:`port` whose local port is not in `other_than`, once
    there (None after `timeout_s`: nothing listening there, or the process gone)."""
    deadline = time.monotonic() + timeout_s
    while True:
        fresh = [c for c in host_connections(pid, port) if c.local_port not in other_than]
        if fresh:
            return fresh[0]
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def holds_unread(pid: int, port: int, local_port: int, *, settle_s: float, timeout_s: float) -> bool:
    """Whether bytes the listener sent on that connection stay unread by the process: seen unread
    twice, `settle_s` apart, within `timeout_s` (QEMU reads what a guest socket can take at once;
    what it leaves is what no guest socket could take)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = {c.local_port: c.unread for c in host_connections(pid, port)}
        if local_port not in now:
            return False
        if now[local_port] > 0:
            time.sleep(settle_s)
            again = {c.local_port: c.unread for c in host_connections(pid, port)}
            return again.get(local_port, 0) > 0
        time.sleep(0.05)
    return False
