"""Append-only audit log whose entries chain by hash, so any edit of history is detectable.

Entry n's hash = SHA-256 of the canonical form of (n, time, actor, action, payload, hash of entry
n-1). Editing an entry changes its hash and breaks the link from n+1; deleting one leaves a gap in
the gapless sequence and a broken link; reordering changes the sequence numbers each hash covers.

Dropping the *newest* entries cannot be seen from the chain alone (nothing links to them), so the
head is anchored outside the chain: every append also rewrites the one row of `audit_head` with
the new (seq, hash) and an HMAC of them under a key derived from the county's secret
(`anchor_key`, registered by the app and the CLI from their settings). The secret lives in the
VM's settings file, never in the database, so whoever can run SQL against the database can delete
the tail and rewrite the head row, but cannot sign it: `verify` reports an anchor that is ahead of
the table (TRUNCATED_TAIL), disagrees with it (HEAD_MISMATCH), or is missing or not signed with the
county's key (HEAD_UNANCHORED). An append that finds such a disagreement does not paper over it:
it first writes an `audit.head_mismatch` / `audit.head_anchored` entry saying what it found, into
the chain itself, and numbers on from the anchored head, so the evidence outlives the next append
(removing it would be another truncation, against the newly signed head).

Chosen over a head file beside the database because the row commits atomically with the entry
(a file written after the commit can lag it by a crash) and works the same on PostgreSQL, where
the database may be reachable by people with no access to the VM's files. Its limits, stated:
someone who also holds the county's secret (root in the VM) can re-sign any head; a head row and
tail saved earlier and put back together (a rollback to an older state of the whole log) are
indistinguishable from that older state; an emptied log with no head row looks like a new county.
Only a copy of `head()` kept off the VM (backup manifests) detects those. Changing the county's
secret makes the next append find a head it cannot verify, which it records (and verify reports)
like a forged one: a secret rotation is an event the auditors see in the log.

`append` runs inside the caller's transaction, so an audited change and its audit entry commit or
roll back together. Appends are serialised: on PostgreSQL by a transaction-scoped advisory lock,
on SQLite by the write lock the application's BEGIN IMMEDIATE already holds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import URL, event, insert, make_url, select, text, update
from sqlalchemy.orm import Session

from tenant_app.canonical import canonical_bytes, canonical_hash
from tenant_app.models import AuditEvent, AuditHead

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
    # Written by append itself when the anchored head and the table disagree (see the module doc).
    HEAD_MISMATCH = "audit.head_mismatch"
    HEAD_ANCHORED = "audit.head_anchored"


ANCHOR_ACTOR = "audit"
_HEAD_ROW = 1
_KEY_LABEL = b"tenant_app.audit.head.v1"
# Database URL (as rendered with its password) -> the key that signs that database's audit head.
_ANCHOR_KEYS: dict[str, bytes] = {}


def _url_text(url: str | URL) -> str:
    return make_url(url).render_as_string(hide_password=False)


def anchor_key(database_url: str | URL, secret: str) -> None:
    """Sign the audit head of this database with a key derived from the county's `secret`.

    Called by app.bind and the CLI with their settings. Writers without a key (tests that build a
    database directly) write an unsigned head, which the county's own app adopts, on the record.
    """
    key = hmac.new(secret.encode("utf-8"), _KEY_LABEL, hashlib.sha256).digest()
    _ANCHOR_KEYS[_url_text(database_url)] = key


def _key_for(session: Session) -> bytes | None:
    return _ANCHOR_KEYS.get(_url_text(session.get_bind().engine.url))


def head_mac(key: bytes, seq: int, entry_hash_: str) -> str:
    return hmac.new(key, f"{seq}:{entry_hash_}".encode(), hashlib.sha256).hexdigest()


class AnchorFinding(StrEnum):
    """How the anchored head compares with the table's newest entry."""

    FRESH = "fresh"  # no entries and no anchor: a new county
    AGREES = "agrees"
    MISSING = "missing"  # entries, but no anchor row
    UNSIGNED = "unsigned"  # the anchor agrees but was written without the key
    BAD_SIGNATURE = "bad_signature"  # the anchor agrees but its MAC is not this county's
    DISAGREES = "disagrees"  # the anchor names another (seq, hash) than the newest entry


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str
    mac: str


def _anchor(session: Session) -> Anchor | None:
    row = session.execute(
        select(AuditHead.seq, AuditHead.hash, AuditHead.mac).where(AuditHead.id == _HEAD_ROW)
    ).first()
    return Anchor(row[0], row[1], row[2]) if row else None


def compare_anchor(anchor: Anchor | None, tail: tuple[int, str] | None, key: bytes | None) -> AnchorFinding:
    """Without a key only agreement of (seq, hash) can be checked; with it, the signature too."""
    if anchor is None:
        return AnchorFinding.FRESH if tail is None else AnchorFinding.MISSING
    if tail is None or (anchor.seq, anchor.hash) != tail:
        return AnchorFinding.DISAGREES
    if key is None:
        return AnchorFinding.AGREES
    if not anchor.mac:
        return AnchorFinding.UNSIGNED
    if not hmac.compare_digest(anchor.mac, head_mac(key, anchor.seq, anchor.hash)):
        return AnchorFinding.BAD_SIGNATURE
    return AnchorFinding.AGREES


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
    TRUNCATED_TAIL = "truncated_tail"  # the anchored head is beyond the newest entry
    HEAD_MISMATCH = "head_mismatch"  # the anchored head names another entry than the newest
    HEAD_UNANCHORED = "head_unanchored"  # no anchor, or one not signed with the county's key


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


def _tail(session: Session) -> tuple[int, str] | None:
    row = session.execute(
        select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
    ).first()
    return (row[0], row[1]) if row else None


def _add(session: Session, seq: int, prev: str, moment: dt.datetime, actor: str, action: str,
         payload: Mapping[str, Any] | None) -> AuditEvent:
    body = canonical_bytes(dict(payload or {})).decode("utf-8")
    entry = AuditEvent(
        seq=seq,
        at=moment,
        actor=actor,
        action=str(action),
        payload=body,
        prev_hash=prev,
        hash=entry_hash(seq, moment, actor, str(action), body, prev),
    )
    session.add(entry)
    return entry


def _evidence(finding: AnchorFinding, anchor: Anchor | None, tail: tuple[int, str] | None,
              signed: bool) -> tuple[AuditAction, dict[str, Any]] | None:
    """The entry an append writes before its own when the anchor and the table disagree, and the
    first entry of a log signed from its start: a log then always shows when signing began, so an
    anchor later made to look unsigned ("written by a tool without the key") is a second adoption."""
    if finding is AnchorFinding.AGREES or (finding is AnchorFinding.FRESH and not signed):
        return None
    found = {"found_seq": tail[0] if tail else 0, "found_hash": tail[1] if tail else GENESIS_HASH}
    anchored = {"anchored_seq": anchor.seq, "anchored_hash": anchor.hash} if anchor else {}
    action = AuditAction.HEAD_MISMATCH if finding is AnchorFinding.DISAGREES else AuditAction.HEAD_ANCHORED
    return action, {"finding": finding.value, **anchored, **found}


def append(
    session: Session,
    actor: str,
    action: str,
    payload: Mapping[str, Any] | None = None,
    *,
    at: dt.datetime | None = None,
) -> AuditEvent:
    """Add one entry at the end of the chain, in the caller's transaction (flushed, not committed),
    and move the signed head to it."""
    _lock_tail(session)
    tail = _tail(session)
    anchor = _anchor(session)
    key = _key_for(session)
    finding = compare_anchor(anchor, tail, key)
    # Microseconds survive both databases' timestamp types; anything finer would not round-trip.
    moment = _utc(at or dt.datetime.now(dt.UTC))
    seq, prev = (tail[0], tail[1]) if tail else (0, GENESIS_HASH)
    if anchor is not None and finding is AnchorFinding.DISAGREES:
        # Number on from the anchored head: entries deleted from the tail stay a visible gap.
        seq = max(seq, anchor.seq)
    evidence = _evidence(finding, anchor, tail, signed=key is not None)
    if evidence is not None:
        proof = _add(session, seq + 1, prev, moment, ANCHOR_ACTOR, *evidence)
        seq, prev = proof.seq, proof.hash
    entry = _add(session, seq + 1, prev, moment, actor, action, payload)
    mac = head_mac(key, entry.seq, entry.hash) if key is not None else ""
    values = {"seq": entry.seq, "hash": entry.hash, "mac": mac}
    if anchor is None:
        session.execute(insert(AuditHead).values(id=_HEAD_ROW, **values))
    else:
        session.execute(update(AuditHead).where(AuditHead.id == _HEAD_ROW).values(**values))
    session.flush()
    return entry


def head(session: Session) -> tuple[int, str]:
    """(seq, hash) of the newest entry, or (0, GENESIS_HASH) for an empty log: the value to keep
    off the VM (a backup manifest) for the cases the signed anchor cannot catch."""
    return _tail(session) or (0, GENESIS_HASH)


def _anchor_error(seq: int, finding: AnchorFinding, anchored_seq: int, found_seq: int,
                  when_zh: str, when_en: str) -> AuditError:
    """The error for an anchor that did not agree with the table (now, or when an append found it)."""
    if finding is AnchorFinding.DISAGREES and anchored_seq > found_seq:
        return AuditError(
            seq,
            AuditErrorCode.TRUNCATED_TAIL,
            f"{when_zh}第 {found_seq + 1} 至 {anchored_seq} 筆（最新的紀錄）已被刪除",
            f"{when_en}the newest entries {found_seq + 1}..{anchored_seq} were deleted",
        )
    if finding is AnchorFinding.DISAGREES:
        return AuditError(
            seq,
            AuditErrorCode.HEAD_MISMATCH,
            f"{when_zh}最新紀錄與簽章錨點（第 {anchored_seq} 筆）不符（紀錄在系統之外被置換或新增）",
            f"{when_en}the newest entry is not the signed head (entry {anchored_seq}): "
            "entries were replaced or added outside the application",
        )
    return AuditError(
        seq,
        AuditErrorCode.HEAD_UNANCHORED,
        f"{when_zh}稽核鏈的錨點遺失或未以本縣金鑰簽章（{finding.value}），最新的紀錄可能已被刪除",
        f"{when_en}the chain's head anchor is missing or not signed with the county's key "
        f"({finding.value}): the newest entries may have been deleted",
    )


def _evidence_error(seq: int, action: str, payload: str, adoptions: int) -> AuditError | None:
    """An `audit.head_*` entry is a disagreement an append found; all are errors but one: the first
    time signing began, on a new log or by adopting a head written without the key (a log older
    than the anchor, or a set-up tool's). Any later start means the signed head was taken away."""
    if action not in (AuditAction.HEAD_MISMATCH, AuditAction.HEAD_ANCHORED):
        return None
    try:  # written by append, unless someone wrote it by hand: then it is no evidence of anything
        found = json.loads(payload)
        finding = AnchorFinding(found["finding"])
        anchored_seq, found_seq = int(found.get("anchored_seq", 0)), int(found.get("found_seq", 0))
    except (ValueError, TypeError, KeyError):
        finding, anchored_seq, found_seq = AnchorFinding.MISSING, 0, 0
    began = finding in (AnchorFinding.FRESH, AnchorFinding.UNSIGNED)
    if action == AuditAction.HEAD_ANCHORED and began and adoptions == 0:
        return None
    return _anchor_error(seq, finding, anchored_seq, found_seq,
                         f"第 {seq} 筆紀錄記載：", f"entry {seq} records that ")


def verify(session: Session, *, batch: int = 2000) -> list[AuditError]:
    """Every break in the chain, oldest first, then any disagreement with the signed head; an empty
    list means history is intact (as far as the database and the county's key can tell)."""
    errors: list[AuditError] = []
    anchor = _anchor(session)
    key = _key_for(session)
    expected_seq = 1
    prev = GENESIS_HASH
    last: tuple[int, str] | None = None
    adoptions = 0
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
        evidence = _evidence_error(seq, action, payload, adoptions)
        if action == AuditAction.HEAD_ANCHORED:
            adoptions += 1
        if evidence is not None:
            errors.append(evidence)
        prev = stored
        expected_seq = seq + 1
        last = (seq, stored)
    finding = compare_anchor(anchor, last, key)
    if finding not in (AnchorFinding.FRESH, AnchorFinding.AGREES):
        errors.append(_anchor_error(expected_seq - 1, finding, anchor.seq if anchor else 0,
                                    last[0] if last else 0, "", ""))
    return errors


def payload_of(event: AuditEvent) -> dict[str, Any]:
    """The payload as data, for the audit view."""
    value = json.loads(event.payload)
    return value if isinstance(value, dict) else {"value": value}
