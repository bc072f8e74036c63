"""The replicated tier's plain logic: where a site keeps the replicas it receives, the guest's
Litestream configuration, and a replica's newest state read from its LTX files (no process run).

A replicated county's guest runs Litestream (backup/replication.py installs it), which streams the
county database's WAL changes as LTX files over SFTP through the VM's guestfwd to the replica
target (`rclone serve sftp`, backup/replicaserver.py) that the secondary site serves from
`SITE/replica/served`: county C's replica is `served/counties/C/ltx/LEVEL/MINTXID-MAXTXID.ltx`.
"""

from __future__ import annotations

import bisect
import os
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from provisioning.sites import site_paths
from provisioning.spec import GUESTFWD_ADDRESS, GUESTFWD_PORT

COUNTIES = "counties"
# In the guest (backup/replication.py puts them there; the image is left as it is).
GUEST_DIR = "/opt/litestream"
GUEST_BINARY = f"{GUEST_DIR}/litestream"
GUEST_VERSION_FILE = f"{GUEST_DIR}/version"
GUEST_CONFIG = "/etc/litestream/litestream.yml"
GUEST_KEY = "/etc/litestream/replica_key"
GUEST_UNIT = "countycloud-litestream.service"
# How often Litestream ships the WAL's new frames: the floor of the tier's RPO.
SYNC_INTERVAL = "1s"
LTX_MAGIC = b"LTX1"
_LTX_HEADER = struct.Struct(">4sIIIQQq")  # magic, flags, page size, commit, min txid, max txid, ms


@dataclass(frozen=True)
class ReplicaSite:
    """A site's replica files. Only `served` is exposed (by the SFTP server)."""

    site: str
    root: Path

    @property
    def served(self) -> Path:
        return self.root / "served"

    def county_dir(self, tenant: str) -> Path:
        return self.served / COUNTIES / tenant

    def sftp_path(self, tenant: str) -> str:
        """The county's replica as the SFTP server shows it (its root is `served`)."""
        return f"/{COUNTIES}/{tenant}"

    def set_aside_dir(self, tenant: str, label: str) -> Path:
        """Where a county's replica of an ended lineage is kept: outside `served`, so neither the
        SFTP server nor a failover's choice of state sees it."""
        return self.root / "set-aside" / f"{tenant}-{label}"

    @property
    def host_key(self) -> Path:
        return self.root / "host_ed25519"

    @property
    def client_key(self) -> Path:
        """The key guests log in with (pushed into each replicated county's guest, 0600)."""
        return self.root / "client_ed25519"

    @property
    def authorized_keys(self) -> Path:
        return self.root / "authorized_keys"

    @property
    def pidfile(self) -> Path:
        return self.root / "sftp-server.pid"

    @property
    def logfile(self) -> Path:
        return self.root / "sftp-server.log"


def replica_site(state_dir: Path, site: str) -> ReplicaSite:
    return ReplicaSite(site=site, root=site_paths(state_dir, site).root / "replica")


def litestream_config(*, database: str, tenant: str, host_key_line: str, sync_interval: str = SYNC_INTERVAL,
                      site: ReplicaSite) -> str:
    """The guest's /etc/litestream/litestream.yml: `database` to the county's replica through the
    guestfwd (GUESTFWD_ADDRESS:GUESTFWD_PORT is the host's target). The key is a file path, so the
    configuration holds no secret; the target's host key is pinned."""
    if "\n" in host_key_line or '"' in host_key_line:
        raise ValueError("a host key line is one line without quotes")
    return (
        "# Written by CountyCloud (backup/replication.py): the replicated tier's stream.\n"
        "logging:\n  level: info\n"
        "dbs:\n"
        f"  - path: {database}\n"
        "    replica:\n"
        "      type: sftp\n"
        f"      host: {GUESTFWD_ADDRESS}:{GUESTFWD_PORT}\n"
        "      user: litestream\n"
        f"      key-path: {GUEST_KEY}\n"
        f'      host-key: "{host_key_line}"\n'
        f"      path: {site.sftp_path(tenant)}\n"
        f"      sync-interval: {sync_interval}\n"
    )


def local_ltx_dir(database: str) -> str:
    """Where Litestream 0.5 keeps, beside `database`, the LTX files it cut from the database's WAL
    (level 0, named MINTXID-MAXTXID.ltx) before and while it sends them."""
    folder, _, name = database.rpartition("/")
    return f"{folder}/.{name}-litestream/ltx/0"


def local_position(names: list[str]) -> int | None:
    """Pure: the newest transaction among Litestream's local LTX file names (None: none yet)."""
    ends = []
    for name in names:
        stem, dot, suffix = name.strip().rpartition(".")
        first, dash, last = stem.partition("-")
        if not (dot and dash and suffix == "ltx"):
            continue
        try:
            int(first, 16)
            ends.append(int(last, 16))
        except ValueError:
            continue
    return max(ends, default=None)


def unit_text(user: str) -> str:
    """The guest's systemd unit: Litestream as the app's user (it owns the database's folder, where
    Litestream keeps its own state), restarted whenever it stops (the target away, the database not
    there yet on a template clone before activation)."""
    return (
        "[Unit]\n"
        "Description=Litestream: the county database streamed to the secondary site (replicated tier)\n"
        "After=tenant-app.service\n\n"
        "[Service]\n"
        f"User={user}\n"
        f"ExecStart={GUEST_BINARY} replicate -config {GUEST_CONFIG}\n"
        "Restart=always\n"
        "RestartSec=2\n"
        "NoNewPrivileges=yes\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


@dataclass(frozen=True)
class LtxHeader:
    min_txid: int
    max_txid: int
    timestamp: datetime  # when the transaction was written (the guest's clock)


class NotLtx(ValueError):
    pass


def parse_ltx_header(head: bytes) -> LtxHeader:
    """The first fields of an LTX file's header (superfly/ltx: big-endian, timestamp in ms)."""
    if len(head) < _LTX_HEADER.size:
        raise NotLtx(f"{len(head)} bytes is shorter than an LTX header")
    magic, _flags, _page_size, _commit, min_txid, max_txid, ms = _LTX_HEADER.unpack_from(head)
    if magic != LTX_MAGIC:
        raise NotLtx(f"magic {magic!r} is not {LTX_MAGIC!r}")
    return LtxHeader(min_txid, max_txid, datetime.fromtimestamp(ms / 1000, UTC))


@dataclass(frozen=True)
class ReplicaState:
    """A county's newest restorable replicated state."""

    tenant: str
    site: str
    txid: int
    at: datetime
    files: int

    def as_dict(self) -> dict[str, object]:
        return {"tenant": self.tenant, "site": self.site, "txid": f"{self.txid:016x}",
                "at": self.at.isoformat(), "files": self.files}


def newest_of(headers: list[LtxHeader]) -> LtxHeader | None:
    """Pure: the header that reaches the highest transaction (the newest when two files of two
    levels end at the same one)."""
    return max(headers, key=lambda h: (h.max_txid, h.timestamp), default=None)


@dataclass(frozen=True)
class LtxFile:
    """One file of a replica's folder as listed: LEVEL/MINTXID-MAXTXID.ltx, its size and header
    (None: shorter than a header or not LTX, e.g. a file the SFTP server is still writing)."""

    level: int
    name: str
    size: int
    header: LtxHeader | None

    def as_dict(self) -> dict[str, object]:
        head = self.header
        return {"level": self.level, "name": self.name, "size": self.size,
                "txids": f"{head.min_txid}-{head.max_txid}" if head else None,
                "at": head.timestamp.isoformat() if head else None}


def listing(site: ReplicaSite, tenant: str) -> list[LtxFile]:
    """The county's LTX files at `site` now, by level then name (a file gone meanwhile is left out)."""
    found = []
    for path in sorted((site.county_dir(tenant) / "ltx").glob("*/*.ltx")):
        try:
            with path.open("rb") as handle:
                head = handle.read(_LTX_HEADER.size)
                size = os.fstat(handle.fileno()).st_size
        except OSError:
            continue
        try:
            header: LtxHeader | None = parse_ltx_header(head)
        except NotLtx:
            header = None
        try:
            level = int(path.parent.name)
        except ValueError:
            continue
        found.append(LtxFile(level, path.name, size, header))
    return sorted(found, key=lambda f: (f.level, f.name))


def reached(files: list[LtxFile]) -> int:
    """Pure: the furthest transaction any complete file of a replica reaches (0: none), whether or
    not a restore can stop there: what says the stream got that far."""
    return max((f.header.max_txid for f in files if f.header is not None), default=0)


SNAPSHOT_LEVEL = 9  # Litestream 0.5 keeps full snapshots there; levels 0-8 hold changes


def restorable_ends(headers: list[LtxHeader], snapshots: list[LtxHeader] | None = None) -> set[int]:
    """Pure: every transaction `litestream restore -txid T` can rebuild from these files.

    Litestream 0.5's restore plan starts from the newest snapshot at or below T (or from nothing),
    then keeps taking, from any level, the file that starts at or before the next transaction and
    reaches furthest without passing T; T is restorable only when that chain ends exactly at T.
    Compaction makes this matter: once level 0's files are compacted into a level-1 file and
    removed (Litestream keeps them `l0-retention` longer), a transaction inside that level-1 file's
    range is no longer restorable although a file of it is still listed, and asking for it fails
    with Litestream's "no matching backup files available". A chain ends at a file's last
    transaction when some restorable end lies in [first - 1, last - 1] (files taken by last)."""
    ends = [0, *sorted({s.max_txid for s in snapshots or []})]
    reached = set(ends)
    for header in sorted(headers, key=lambda h: h.max_txid):
        below = bisect.bisect_left(ends, header.max_txid) - 1  # the highest end before its last txid
        if below >= 0 and ends[below] >= header.min_txid - 1 and header.max_txid not in reached:
            bisect.insort(ends, header.max_txid)
            reached.add(header.max_txid)
    reached.discard(0)
    return reached


def newest_restorable(files: list[LtxFile], before: datetime | None = None) -> LtxHeader | None:
    """Pure: the header of the newest state `litestream restore` can rebuild from `files` (written
    at or before `before`): the highest restorable end among the files' last transactions."""
    complete = [f for f in files if f.header is not None]
    snapshots = [f.header for f in complete if f.level == SNAPSHOT_LEVEL and f.header]
    changes = [f.header for f in complete if f.level != SNAPSHOT_LEVEL and f.header]
    ends = restorable_ends(changes, snapshots)
    candidates = [f.header for f in complete if f.header and f.header.max_txid in ends
                  and (before is None or f.header.timestamp <= before)]
    return newest_of(candidates)


def newest_state(site: ReplicaSite, tenant: str, before: datetime | None = None) -> ReplicaState | None:
    """The county's newest restorable replicated state at `site` (None: none there), or the newest
    one written at or before `before`. Reads the headers of the LTX files in the served folder
    (Litestream writes each under a temporary name and renames it when complete); a state inside a
    compacted file's range whose own files are gone is not offered (restorable_ends)."""
    files = listing(site, tenant)
    newest = newest_restorable(files, before)
    if newest is None:
        return None
    return ReplicaState(tenant=tenant, site=site.site, txid=newest.max_txid, at=newest.timestamp,
                        files=sum(1 for f in files if f.header is not None))
