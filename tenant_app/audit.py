"""Append-only audit log whose entries chain by hash, so any edit of history is detectable.

Entry n's hash = SHA-256 of the canonical form of (n, time, actor, action, payload, hash of entry
n-1). Editing an entry changes its hash and breaks the link from n+1; deleting one leaves a gap in
the gapless sequence and a broken link; reordering changes the sequence numbers each hash covers.
Dropping the *newest* entries cannot be seen from the table alone: `head()` gives the newest hash
so it can be anchored elsewhere (a backup manifest, a report footer) and compared later.

`append` runs inside the caller's transaction, so an audited change and its audit entry commit or
roll back together. Appends are serialised: on PostgreSQL by a transaction-scoped advisory lock,
on SQLite by the write lock the application's BEGIN IMMEDIATE already holds.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from tenant_app.canonical import canonical_bytes, canonical_hash
from tenant_app.models import AuditEvent

GENESIS_HASH = "0" * 64
# Any constant works; it only has to be the same for every writer of this database.
_PG_ADVISORY_KEY = 0x61756474  # "audt"


class AuditAction(StrEnum):
    """Actions written by this module's owners; other modules may pass their own StrEnum members."""

    VOUCHER_SIGNED = "voucher.signed"
    VOUCHER_REJECTED = "voucher.rejected"
    TREASURY_BATCH_EXPORTED = "treasury.batch_exported"
    TREASURY_CONFIRMATION_IMPORTED = "treasury.confirmation_imported"
    TREASURY_FILE_REFUSED = "treasury.file_refused"
    SIGNING_KEY_CREATED = "signing_key.created"
    REPORT_EXPORTED = "report.exported"


class AuditLogAppendOnlyError(Exception):
    """An attempt through the ORM to change or delete an audit entry."""


def _refuse_change(_mapper: object, _connection: object, target: AuditEvent) -> None:
    raise AuditLogAppendOnlyError(
        f"稽核紀錄只能新增，不得修改或刪除（第 {target.seq} 筆） / "
        f"the audit log is append-only: entry {target.seq} cannot be changed or deleted"
    )


# The application itself can only append: an ORM update or delete never reaches SQL. A change made
# behind its back (raw SQL, a restored file) is what `verify` is for.
event.listen(AuditEvent, "before_update", _refuse_change)
event.listen(AuditEvent, "before_delete", _refuse_change)


class AuditErrorCode(StrEnum):
    SEQUENCE_GAP = "sequence_gap"
    BROKEN_LINK = "broken_link"
    HASH_MISMATCH = "hash_mismatch"


@dataclass(frozen=True)
class AuditError:
    seq: int
    code: AuditErrorCode
    message_zh: str
    message_en: str


def _utc(moment: dt.datetime) -> dt.datetime:
    # SQLite hands timestamps back without a zone; they were written in UTC, so say so. Hashing
    # the UTC form makes the hash independent of the database and the session's time zone.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def entry_hash(seq: int, at: dt.datetime, actor: str, action: str, payload: str, prev_hash: str) -> str:
    return canonical_hash(
        {
            "seq": seq,
            "at": _utc(at).isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "payload": payload,
            "prev": prev_hash,
        }
    )


def _lock_tail(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_ADVISORY_KEY})


def append(
    session: Session,
    actor: str,
    action: str,
    payload: Mapping[str, Any] | None = None,
    *,
    at: dt.datetime | None = None,
) -> AuditEvent:
    """Add one entry at the end of the chain, in the caller's transaction (flushed, not committed)."""
    _lock_tail(session)
    tail = session.execute(
        select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
    ).first()
    seq, prev = (tail[0] + 1, tail[1]) if tail else (1, GENESIS_HASH)
    # Microseconds survive both databases' timestamp types; anything finer would not round-trip.
    moment = _utc(at or dt.datetime.now(dt.UTC))
    body = canonical_bytes(dict(payload or {})).decode("utf-8")
    event = AuditEvent(
        seq=seq,
        at=moment,
        actor=actor,
        action=str(action),
        payload=body,
        prev_hash=prev,
        hash=entry_hash(seq, moment, actor, str(action), body, prev),
    )
    session.add(event)
    session.flush()
    return event


def head(session: Session) -> tuple[int, str]:
    """(seq, hash) of the newest entry, or (0, GENESIS_HASH) for an empty log: the value to anchor."""
    tail = session.execute(
        select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
    ).first()
    return (tail[0], tail[1]) if tail else (0, GENESIS_HASH)


def verify(session: Session, *, batch: int = 2000) -> list[AuditError]:
    """Every break in the chain, oldest first; an empty list means history is intact."""
    errors: list[AuditError] = []
    expected_seq = 1
    prev = GENESIS_HASH
    rows = session.execute(
        select(
            AuditEvent.seq,
            AuditEvent.at,
            AuditEvent.actor,
            AuditEvent.action,
            AuditEvent.payload,
            AuditEvent.prev_hash,
            AuditEvent.hash,
        )
        .order_by(AuditEvent.seq)
        .execution_options(yield_per=batch)
    )
    for seq, at, actor, action, payload, prev_hash, stored in rows:
        if seq != expected_seq:
            errors.append(
                AuditError(
                    seq,
                    AuditErrorCode.SEQUENCE_GAP,
                    f"第 {expected_seq} 至 {seq - 1} 筆紀錄遺失（已被刪除）",
                    f"entries {expected_seq}..{seq - 1} are missing (deleted)",
                )
            )
        if prev_hash != prev:
            errors.append(
                AuditError(
                    seq,
                    AuditErrorCode.BROKEN_LINK,
                    f"第 {seq} 筆紀錄未接續前一筆（前筆被刪除、修改或順序被調換）",
                    f"entry {seq} does not follow the entry before it (deleted, edited or reordered)",
                )
            )
        if entry_hash(seq, at, actor, action, payload, prev_hash) != stored:
            errors.append(
                AuditError(
                    seq,
                    AuditErrorCode.HASH_MISMATCH,
                    f"第 {seq} 筆紀錄內容與其雜湊值不符（已被修改）",
                    f"entry {seq} does not match its hash (edited)",
                )
            )
        prev = stored
        expected_seq = seq + 1
    return errors


def payload_of(event: AuditEvent) -> dict[str, Any]:
    """The payload as data, for the audit view."""
    value = json.loads(event.payload)
    return value if isinstance(value, dict) else {"value": value}
