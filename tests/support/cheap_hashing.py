"""Cheap argon2 parameters for the test process.

The platform and the tenant app hash passwords with pwdlib's default argon2id parameters (64 MiB,
three passes, four lanes): about half a second of both cores per hash or log-in, on purpose. The suite
creates users and logs in thousands of times, and none of its tests is about the cost of a hash, so
the test process hashes with the same algorithm (argon2id, still checked by the tests) at the
smallest cost. Subprocesses the tests start (servers, the CLI) keep the real parameters; a hash made
here verifies there and the other way round, since argon2 hashes carry their parameters.
Tests of races that a slow hash widens (parallel wrong passwords against the throttle) are marked
`real_password_cost` and run with the deployed parameters (tests/conftest.py).
"""

from __future__ import annotations

from typing import Any

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

CHEAP = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=8, parallelism=1),))
_DEPLOYED: dict[str, tuple[object, object]] = {}


def _modules() -> list[Any]:
    from controlplane import auth
    from tenant_app.security import passwords

    return [auth, passwords]


def install() -> None:
    for module in _modules():
        _DEPLOYED.setdefault(module.__name__, (module._HASHER, module._DUMMY_HASH))
        module._HASHER = CHEAP
        # The unknown-user path must still cost what a wrong password costs.
        module._DUMMY_HASH = CHEAP.hash("countycloud-no-such-user")


def restore() -> None:
    """The deployed parameters again (and the unknown-user hash made with them)."""
    for module in _modules():
        module._HASHER, module._DUMMY_HASH = _DEPLOYED[module.__name__]
