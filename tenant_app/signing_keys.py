"""Ed25519 key pairs of users and agencies, their private halves wrapped with the app secret.

Why stored-and-wrapped rather than derived from the secret: a key derived from (secret, user id)
would change whenever the secret is rotated, so every signature ever made would stop verifying
against the public key on record. A random key wrapped with AES-256-GCM under a key derived from
the secret survives a rotation (unwrap with the old secret, re-wrap with the new; the public key,
and so every past signature, stays valid), and a single user's key can be revoked and replaced
without touching anyone else's. The wrapped blob is bound to its key id (GCM associated data), so
copying one user's blob onto another user's row does not yield a usable key.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

WRAP_FORMAT = b"ccw1"  # version tag in front of every wrapped key, so the scheme can change later
_NONCE_LEN = 12
_HKDF_INFO = b"countycloud tenant_app signing-key wrap v1"


class KeyUnwrapError(Exception):
    """The wrapped key is damaged, belongs to another key id, or the secret is wrong."""


@dataclass(frozen=True)
class KeyPair:
    key_id: str
    public_key: bytes  # raw 32 bytes, stored in the clear in the database
    wrapped_private_key: bytes  # WRAP_FORMAT + nonce + AES-GCM(private raw bytes)


def _wrapping_key(app_secret: str) -> bytes:
    if not app_secret:
        raise ValueError("the app secret is empty; refusing to wrap signing keys with it")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
        app_secret.encode("utf-8")
    )


def wrap_private_key(app_secret: str, key_id: str, private_key: Ed25519PrivateKey) -> bytes:
    nonce = os.urandom(_NONCE_LEN)
    sealed = AESGCM(_wrapping_key(app_secret)).encrypt(
        nonce, private_key.private_bytes_raw(), key_id.encode("utf-8")
    )
    return WRAP_FORMAT + nonce + sealed


def unwrap_private_key(app_secret: str, key_id: str, wrapped: bytes) -> Ed25519PrivateKey:
    if not wrapped.startswith(WRAP_FORMAT):
        raise KeyUnwrapError(f"key {key_id}: unknown wrapping format")
    body = wrapped[len(WRAP_FORMAT) :]
    nonce, sealed = body[:_NONCE_LEN], body[_NONCE_LEN:]
    try:
        raw = AESGCM(_wrapping_key(app_secret)).decrypt(nonce, sealed, key_id.encode("utf-8"))
    except InvalidTag as exc:
        raise KeyUnwrapError(f"key {key_id}: cannot unwrap (wrong secret or key id, or damaged)") from exc
    return Ed25519PrivateKey.from_private_bytes(raw)


def rewrap(old_secret: str, new_secret: str, key_id: str, wrapped: bytes) -> bytes:
    """Secret rotation: the same private key under the new secret; the public key is unchanged."""
    return wrap_private_key(new_secret, key_id, unwrap_private_key(old_secret, key_id, wrapped))


def new_key_id() -> str:
    return "k_" + secrets.token_hex(8)


def generate(app_secret: str, key_id: str | None = None) -> KeyPair:
    key_id = key_id or new_key_id()
    private = Ed25519PrivateKey.generate()
    return KeyPair(
        key_id=key_id,
        public_key=private.public_key().public_bytes_raw(),
        wrapped_private_key=wrap_private_key(app_secret, key_id, private),
    )
