"""Roles and what each may do: one matrix that every entry point (CLI, API, console) is held to.

A `county` actor is also scoped to its one tenant: it may read that county and nothing else.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"  # everything, including users and tokens of others
    CENTRAL_IT = "central-it"  # provision, resize, configure, retire, inventory
    OPERATOR = "operator"  # jobs, sites, backups, restores, DR
    AUDITOR = "auditor"  # reads everything, changes nothing
    COUNTY = "county"  # reads its own county only


class Action(StrEnum):
    READ = "read"  # sites, hosts, counties, VMs, jobs (a county: its own only)
    READ_AUDIT = "read-audit"
    PROVISION = "provision"
    RESIZE = "resize"
    CONFIGURE = "configure"
    RETIRE = "retire"
    INVENTORY_APPLY = "inventory-apply"
    JOB_CONTROL = "job-control"  # resume, cancel
    SITE_CONTROL = "site-control"
    BACKUP = "backup"  # run a backup, a verification
    RESTORE = "restore"
    DR = "dr"  # failover, failback, DR test
    MANAGE_USERS = "manage-users"
    OWN_TOKENS = "own-tokens"  # create and revoke one's own tokens


_ALL = frozenset(Action)
ALLOWED: dict[Role, frozenset[Action]] = {
    Role.ADMIN: _ALL,
    Role.CENTRAL_IT: frozenset({Action.READ, Action.PROVISION, Action.RESIZE, Action.CONFIGURE,
                                Action.RETIRE, Action.INVENTORY_APPLY, Action.JOB_CONTROL,
                                Action.OWN_TOKENS}),
    Role.OPERATOR: frozenset({Action.READ, Action.JOB_CONTROL, Action.SITE_CONTROL, Action.BACKUP,
                              Action.RESTORE, Action.DR, Action.OWN_TOKENS}),
    Role.AUDITOR: frozenset({Action.READ, Action.READ_AUDIT, Action.OWN_TOKENS}),
    Role.COUNTY: frozenset({Action.READ, Action.OWN_TOKENS}),
}


def allows(role: Role, action: Action) -> bool:
    return action in ALLOWED[role]
