"""Cheap argon2 parameters for the test process.

The platform and the tenant app hash passwords with pwdlib's default argon2id parameters (64 MiB,
three passes, four lanes): about half a second of both cores per hash or log-in, on purpose. The suite
creates users and logs in thousands of times, and none of its tests is about the cost of a hash, so
the test process hashes with the same algorithm (argon2id, still checked by the tests) at the
smallest cost. Subprocesses the tests start (servers, the CLI) keep the real parameters; a hash made
here verifies there and the other way round, since argon2 hashes carry their parameters.
"""

from __future__ import annotations

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

CHEAP = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=8, parallelism=1),))


def install() -> None:
    from controlplane import auth
    from tenant_app.security import passwords

    for module in (auth, passwords):
        module._HASHER = CHEAP  # type: ignore[attr-defined]
        # The unknown-user path must still cost what a wrong password costs.
        module._DUMMY_HASH = CHEAP.hash("countycloud-no-such-user")  # type: ignore[attr-defined]
