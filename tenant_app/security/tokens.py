"""API bearer tokens: random secrets shown once, stored only as a SHA-256 digest.

SHA-256 (not argon2) is right here: a token has 256 bits of entropy, so it cannot be guessed from
its digest, and the lookup sits on the certification hot path where a slow hash would cost
tens of milliseconds per request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "cct_"  # makes a leaked token recognisable to secret scanners and in logs


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def digests_match(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)


def parse_bearer(authorization: str | None) -> str | None:
    """The token from an `Authorization: Bearer …` header, or None when absent or malformed."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
