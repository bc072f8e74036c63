"""Who asks for a change: a signed-in user, an API token, or the operating-system user at the CLI.

Every use case takes an Actor, checks it against the role matrix (controlplane.roles) and records it
in the audit log, so the CLI, the API and the console are held to the same rules.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from enum import StrEnum

from controlplane.roles import Role


class ActorKind(StrEnum):
    USER = "user"  # a console session
    TOKEN = "token"  # a bearer token of the REST API
    OS_USER = "os-user"  # the CLI on the service's machine
    SYSTEM = "system"  # the service itself (schedules, takeover of a dead worker's jobs)


@dataclass(frozen=True)
class Actor:
    kind: ActorKind
    name: str
    role: Role
    # The county a COUNTY actor may see; None for every other role.
    tenant: str | None = None
    # Where the request came from: the client's address, or "cli"/"service".
    source: str = ""
    # The token's id when kind is TOKEN (audited, never the token itself).
    token_id: str | None = None

    def describe(self) -> str:
        return f"{self.kind.value}:{self.name}"


def cli_actor() -> Actor:
    """The CLI acts with the rights of whoever may run it: root (or the service's own user) on the
    service's machine, who could reach the database directly anyway."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = str(os.getuid())
    return Actor(ActorKind.OS_USER, name, Role.ADMIN, source="cli")


SYSTEM = Actor(ActorKind.SYSTEM, "countycloud", Role.ADMIN, source="service")
