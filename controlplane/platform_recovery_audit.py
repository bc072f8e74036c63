"""The audit chain across a recovery of the platform database. The recovered database carries the
chain as it was when the copy was taken, while the anchor file beside it (controlplane.audit) may
still hold the lost database's later head; the recovery's own event continues the copy's chain, and
the lost anchor is kept aside rather than overwritten, so that the audit check passes on the
recovered database and what was lost with the old one stays on record."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from sqlalchemy import select

from controlplane import audit
from controlplane.actors import Actor
from controlplane.models import AuditEvent
from inventory.db import make_engine, session_scope

RECOVER_ACTION = "platform.recover"


def record(url: str, actor: Actor, detail: dict[str, Any]) -> audit.Anchor:
    """The recovery's audit event in the database at `url`; the chain's head after it."""
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            audit.record(session, actor, RECOVER_ACTION, str(detail["snapshot"])[:8], detail=detail)
    finally:
        engine.dispose()
    return head(url)


def head(url: str) -> audit.Anchor:
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            newest = session.execute(select(AuditEvent.seq, AuditEvent.hash)
                                     .order_by(AuditEvent.seq.desc()).limit(1)).one()
        return audit.Anchor(int(newest.seq), str(newest.hash))
    finally:
        engine.dispose()


def settle_anchor(url: str, head: audit.Anchor) -> None:
    """The database's anchor file made the recovered chain's: an anchor the chain does not hold
    (the lost database's, whose events after the copy are gone with it) is kept aside, not lost."""
    engine = make_engine(url)
    try:
        path = audit.anchor_path(engine)
        try:
            found = audit.read_anchor(path)
        except ValueError:
            found = audit.Anchor(-1, "")
        if found is not None and found != head:
            with session_scope(engine) as session:
                held = session.scalar(select(AuditEvent.hash).where(AuditEvent.seq == found.seq))
            if held != found.hash:
                os.replace(path, path.with_name(f"{path.name}.lost-{int(time.time())}"))
        audit.write_anchor(path, head)
    finally:
        engine.dispose()


def lost_anchor_seq(url: str) -> int | None:
    """How far the lost database's chain reached, as its anchor file says (None: no readable one)."""
    engine = make_engine(url)
    try:
        with contextlib.suppress(ValueError):
            found = audit.read_anchor(audit.anchor_path(engine))
            return found.seq if found is not None else None
        return None
    finally:
        engine.dispose()
