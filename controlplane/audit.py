"""The audit log: every change, who made it (user, token or OS user), from where, and its job, in a
hash chain that `verify` checks.

Each event's hash covers all its fields and the previous event's hash, so editing a row or deleting
one in the middle breaks the chain at that row. Deleting the newest rows (a truncated tail) leaves a
valid shorter chain, which only something outside the table can reveal: after every commit that
appended events, the chain's head (seq, hash) is written to an anchor file in the state folder
(`audit-anchor/<database>.json`, only ever moved forward). `verify` then requires the anchored event
to still be there with the same hash.

What the anchor does not cover (its documented limit): events committed after the last anchor write
(a process killed between its commit and the file write, at most that process's last transaction);
someone able to write both the database and the state folder; and, with several service machines on
one PostgreSQL, each machine anchors what it appended or saw, so a machine's file protects the chain
up to that point only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, select, update
from sqlalchemy.orm import Session

from controlplane.actors import Actor
from controlplane.models import AuditEvent, AuditHead
from inventory.db import as_utc, session_scope

GENESIS = "0" * 64  # what the first event follows (seeded in audit_head by revision 0003_service)
HEAD_ROW = 1
_PENDING = "countycloud.audit.pending_head"
_HOOKED = "countycloud.audit.hooked"

_state_dir: Path | None = None


def configure(state_dir: Path) -> None:
    """Where the anchor files go (the service and the CLI pass settings.state_dir; tests a tmp dir)."""
    global _state_dir
    _state_dir = state_dir


def _anchor_root() -> Path:
    if _state_dir is not None:
        return _state_dir
    from controlplane.settings import load

    return load().state_dir


def anchor_path(engine: Engine) -> Path:
    """The anchor file of this database: one per database, so several databases may share a state
    folder (tests) without mixing their chains."""
    ident = engine.url.render_as_string(hide_password=True)
    return _anchor_root() / "audit-anchor" / f"{hashlib.sha256(ident.encode()).hexdigest()[:16]}.json"


# ---------------------------------------------------------------- hashing (pure)


def _iso(value: datetime) -> str:
    # SQLite gives naive datetimes back, PostgreSQL aware ones in the session's zone: hash UTC always.
    return as_utc(value).astimezone(UTC).isoformat(timespec="microseconds")


def _canonical_detail(detail: dict[str, Any] | None) -> dict[str, Any]:
    # What is hashed must be exactly what reading the row back gives: round-trip through JSON now.
    loaded = json.loads(json.dumps(detail or {}, default=str))
    return loaded if isinstance(loaded, dict) else {"value": loaded}


def event_hash(fields: dict[str, Any]) -> str:
    """SHA-256 of an event's fields and its prev_hash, as canonical JSON."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _fields(row: AuditEvent) -> dict[str, Any]:
    return {
        "seq": row.seq, "at": _iso(row.at), "actor_kind": str(row.actor_kind), "actor_name": row.actor_name,
        "role": str(row.role), "source": row.source, "token_id": row.token_id, "action": row.action,
        "target": row.target, "job_id": row.job_id, "detail": row.detail or {}, "prev_hash": row.prev_hash,
    }


# ---------------------------------------------------------------- appending


def record(session: Session, actor: Actor, action: str, target: str, *, job_id: str | None = None,
           detail: dict[str, Any] | None = None) -> None:
    """Append one event in the caller's transaction: it commits (or rolls back) with the change it
    describes. Concurrent appends are serialised by the head row (see AuditHead)."""
    # The UPDATE comes first: it takes the lock before the head is read, so no two transactions can
    # read the same head and both append after it.
    session.execute(update(AuditHead).where(AuditHead.id == HEAD_ROW).values(seq=AuditHead.seq + 1))
    head = session.execute(
        select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == HEAD_ROW)
        .execution_options(populate_existing=True)
    ).one()
    seq, prev_hash = int(head.seq), str(head.hash)
    row = AuditEvent(
        seq=seq, at=datetime.now(UTC), actor_kind=actor.kind, actor_name=actor.name, role=actor.role,
        source=actor.source[:120], token_id=actor.token_id, action=action, target=target[:200],
        job_id=job_id, detail=_canonical_detail(detail), prev_hash=prev_hash,
    )
    row.hash = event_hash(_fields(row))
    session.add(row)
    session.execute(update(AuditHead).where(AuditHead.id == HEAD_ROW).values(hash=row.hash))
    session.flush()
    session.info[_PENDING] = (seq, row.hash)
    if not session.info.get(_HOOKED):
        session.info[_HOOKED] = True
        event.listen(session, "after_commit", _after_commit)
        event.listen(session, "after_rollback", _after_rollback)


def _after_commit(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    bind = session.get_bind()
    if pending is not None and isinstance(bind, Engine):
        # The event is committed whatever happens here: a failed anchor write must not look like a
        # failed change to the caller (verify reports an anchor behind the table, which is allowed).
        with contextlib.suppress(OSError):
            write_anchor(anchor_path(bind), Anchor(*pending))


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


# ---------------------------------------------------------------- the anchor


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_anchor(path: Path) -> Anchor | None:
    try:
        data = json.loads(path.read_text())
        return Anchor(int(data["seq"]), str(data["hash"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"audit anchor {path} is unreadable: {error}") from None


def write_anchor(path: Path, anchor: Anchor) -> None:
    """Move the anchor forward to `anchor` (never back: two processes may commit in one order and
    write their anchors in the other). Atomic: a new file is renamed over the old one."""
    with _locked(path):
        current = None
        with contextlib.suppress(ValueError):
            current = read_anchor(path)
        if current is not None and current.seq >= anchor.seq:
            return
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"seq": anchor.seq, "hash": anchor.hash}) + "\n")
        os.replace(temporary, path)


# ---------------------------------------------------------------- verifying


@dataclass
class VerifyReport:
    events: int = 0
    head: Anchor | None = None
    anchor: Anchor | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_chain(rows: list[AuditEvent], anchor: Anchor | None, recorded_head: Anchor | None) -> VerifyReport:
    """Every way the rows can disagree with the chain, the anchor and the head row (pure)."""
    report = VerifyReport(events=len(rows), anchor=anchor)
    expected_prev, expected_seq = GENESIS, 1
    for row in rows:
        if row.seq != expected_seq:
            missing = f"{expected_seq}" if row.seq == expected_seq + 1 else f"{expected_seq}-{row.seq - 1}"
            report.problems.append(f"event {missing} is missing (deleted from the middle of the chain)")
        if row.prev_hash != expected_prev:
            report.problems.append(
                f"event {row.seq}: does not follow event {row.seq - 1} (prev_hash differs)")
        if event_hash(_fields(row)) != row.hash:
            report.problems.append(f"event {row.seq}: its content was changed after it was recorded "
                                   f"({row.action} {row.target} by {row.actor_name})")
        expected_prev, expected_seq = row.hash, row.seq + 1
    last = rows[-1] if rows else None
    report.head = Anchor(last.seq, last.hash) if last else None
    if recorded_head is not None and recorded_head.seq > 0 and (
        last is None or (recorded_head.seq, recorded_head.hash) != (last.seq, last.hash)
    ):
        report.problems.append(f"the chain ends at event {last.seq if last else 0}, but its head row says "
                               f"{recorded_head.seq}: events were removed from the end")
    if anchor is not None and anchor.seq > 0:
        by_seq = {row.seq: row for row in rows}
        anchored = by_seq.get(anchor.seq)
        if last is None or last.seq < anchor.seq:
            report.problems.append(
                f"the chain ends at event {last.seq if last else 0}, but event {anchor.seq} was anchored: "
                f"the tail was truncated")
        elif anchored is None or anchored.hash != anchor.hash:
            report.problems.append(
                f"event {anchor.seq} differs from the anchored one: the chain was rewritten")
    return report


def verify(engine: Engine, anchor: Anchor | Path | None) -> VerifyReport:
    """Check the whole chain against itself, its head row and the anchor (an Anchor, or a file)."""
    if isinstance(anchor, Path):
        anchor = read_anchor(anchor)
    with session_scope(engine) as session:
        rows = list(session.scalars(select(AuditEvent).order_by(AuditEvent.seq)))
        head_row = session.get(AuditHead, HEAD_ROW)
        recorded = Anchor(head_row.seq, head_row.hash) if head_row else None
        session.expunge_all()
    report = check_chain(rows, anchor, recorded)
    if head_row is None:
        report.problems.append("the audit head row is missing")
    return report


def list_events(engine: Engine, *, limit: int = 100, target: str | None = None,
                before_seq: int | None = None) -> list[AuditEvent]:
    """Newest first."""
    with session_scope(engine) as session:
        query = select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(limit)
        if target is not None:
            query = query.where(AuditEvent.target == target)
        if before_seq is not None:
            query = query.where(AuditEvent.seq < before_seq)
        rows = list(session.scalars(query))
        session.expunge_all()
        return rows


def event_json(row: AuditEvent) -> dict[str, Any]:
    return {**_fields(row), "hash": row.hash}
