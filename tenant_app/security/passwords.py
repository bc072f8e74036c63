"""Password hashing with argon2 (pwdlib).

One module-level hasher so every caller uses the same parameters; `verify_and_update` lets the login
path upgrade old hashes when the parameters change.
"""

from __future__ import annotations

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

_HASHER = PasswordHash((Argon2Hasher(),))

# A hash of a random password, verified against when the username does not exist, so a login for an
# unknown user costs the same time as one with a wrong password (no user enumeration by timing).
_DUMMY_HASH = _HASHER.hash("countycloud-no-such-user")


def hash_password(password: str) -> str:
    if not password:
        raise ValueError("password must not be empty")
    return _HASHER.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """True when `password` matches `password_hash`; a missing hash still costs one verification."""
    if password_hash is None:
        _HASHER.verify(password, _DUMMY_HASH)
        return False
    try:
        return _HASHER.verify(password, password_hash)
    except Exception:  # a malformed stored hash is a failed login, not a server error
        return False


def verify_and_update(password: str, password_hash: str) -> tuple[bool, str | None]:
    """(valid, new hash or None): the login path stores the new hash when the parameters changed."""
    try:
        return _HASHER.verify_and_update(password, password_hash)
    except Exception:
        return False, None
