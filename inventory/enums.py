"""The explicit status and kind choices of the inventory (NetBox style: named choices, never free strings).

They are `StrEnum`s so a value compares equal to its string, prints as itself in tables and JSON,
and is stored as that plain string in the database (non-native enums: SQLite and PostgreSQL alike).
"""

from __future__ import annotations

from enum import StrEnum


class SiteRole(StrEnum):
    PRIMARY = "primary"
    SECONDARY = "secondary"


class SiteStatus(StrEnum):
    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"


class NetworkKind(StrEnum):
    # QEMU user-mode networking with forwards on 127.0.0.1 (these machines; see the network rule).
    USER = "user"
    # A host bridge, optionally on a VLAN (production).
    BRIDGE = "bridge"


class VmRole(StrEnum):
    ACCOUNTING = "accounting"
    FINANCE = "finance"
    DATABASE = "database"


class ProtectionTier(StrEnum):
    """How a county's database is protected (issue 12; the backup package acts on it).

    BACKUP: restic rounds on the tier's interval; the RPO is about one interval plus a round.
    REPLICATED: the same rounds, plus the database's changes streamed continuously to the secondary
    site between them (Litestream in the guest, over a guestfwd, to the secondary's replica target:
    backup/replication.py).
    """

    BACKUP = "backup"
    REPLICATED = "replicated"


class Lifecycle(StrEnum):
    """Status of a tenant or a VM, from declaration to retirement."""

    PLANNED = "planned"
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    FAILED = "failed"
    RETIRING = "retiring"
    RETIRED = "retired"
    # A VM at a failed site that must never serve again as it is: its site is down or unreachable,
    # its county runs elsewhere, and a returning site must not start it or put it back in an address.
    FENCED = "fenced"


# A VM in one of these states has nothing real behind it (never built, or already torn down), so its
# record may be dropped from the inventory; in any other state it must be retired first.
REMOVABLE = frozenset({Lifecycle.PLANNED, Lifecycle.RETIRED})

# A VM in one of these states no longer holds capacity on its host.
RELEASED = frozenset({Lifecycle.RETIRED})


class ObjectKind(StrEnum):
    """The kinds of inventory object that a plan or the change log names."""

    SITE = "site"
    HOST = "host"
    SIZE_TEMPLATE = "size_template"
    NETWORK = "network"
    IMAGE = "image"
    TENANT = "tenant"
    VM = "vm"
    PROTECTION_TIER = "protection_tier"


class ChangeAction(StrEnum):
    ADD = "add"
    CHANGE = "change"
    REMOVE = "remove"
