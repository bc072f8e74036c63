"""Canonical bytes for anything we sign or chain by hash (vouchers, approvals, audit entries, files).

One encoding everywhere: JSON with sorted keys, no insignificant whitespace, UTF-8 (not \\u escapes,
so a Chinese payee hashes the same whatever produced it), and strings NFC-normalised because the
same 全形 name typed on two keyboards can arrive as different code-point sequences. Floats are
refused: money is integer 元 and a float's text form is not stable across producers.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from enum import Enum
from typing import Any


class NotCanonicalError(TypeError):
    """A value that has no single canonical text form (a float, an unknown object)."""


def _normalise(value: Any) -> Any:
    # bool before int: bool is an int subclass but must stay a JSON boolean.
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, Enum):
        return _normalise(value.value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        raise NotCanonicalError(f"floats have no canonical form (money is integer 元): {value!r}")
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise NotCanonicalError(f"naive datetime is ambiguous: {value!r}")
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return {str(_normalise(k)): _normalise(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [_normalise(v) for v in value]
    raise NotCanonicalError(f"no canonical form for {type(value).__name__}")


def canonical_bytes(value: Any) -> bytes:
    """The one byte string that stands for `value` when hashing or signing."""
    return json.dumps(
        _normalise(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_hash(value: Any) -> str:
    return sha256_hex(canonical_bytes(value))
