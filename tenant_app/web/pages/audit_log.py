"""稽核紀錄 (auditors): the hash-chained audit log, newest first, with the chain verified on view.

Verification is B's audit.verify over the whole chain: an edited, deleted or reordered entry is
reported with its sequence number. The newest hash is shown so it can be noted down and compared
later (dropping the newest entries cannot be seen from the table alone).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from sqlalchemy import select

from tenant_app import audit
from tenant_app.domains import IdParam
from tenant_app.models import AuditEvent
from tenant_app.security.permissions import Action
from tenant_app.web.context import Page, WebRoute, user_page

router = APIRouter(route_class=WebRoute, include_in_schema=False)

PAGE_SIZE = 100


@router.get("/audit")
def audit_log(before: IdParam | None = None, action: str = "", actor: str = "",
              current: Page = Depends(user_page)) -> Response:
    current.require(Action.VIEW_AUDIT)
    query = select(AuditEvent)
    if before is not None:
        query = query.where(AuditEvent.seq < before)
    if action:
        query = query.where(AuditEvent.action == action)
    if actor:
        query = query.where(AuditEvent.actor == actor)
    events = current.db.scalars(query.order_by(AuditEvent.seq.desc()).limit(PAGE_SIZE)).all()
    errors = audit.verify(current.db)
    head_seq, head_hash = audit.head(current.db)
    current.db.rollback()  # read-only: release SQLite's write lock before rendering
    return current.render(
        "audit.html", events=[(e, audit.payload_of(e)) for e in events], errors=errors, head_seq=head_seq,
        head_hash=head_hash, action=action, actor=actor,
        older=events[-1].seq if len(events) == PAGE_SIZE else None,
    )
