"""Server-side login sessions (UserSession rows): create at log-in, look up per request, delete at log-out."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tenant_app.models import UserSession
from tenant_app.security.sessions import DEFAULT_MAX_AGE_S, new_secret_token, session_id_digest


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(moment: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes even for timezone-aware columns; they were stored as UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def create(db: Session, user_id: int, *, ttl_s: int = DEFAULT_MAX_AGE_S,
           now: dt.datetime | None = None) -> tuple[str, UserSession]:
    """A new session for `user_id`: returns the raw id (for the cookie) and the stored row."""
    now = now or _utcnow()
    raw_id = new_secret_token()
    row = UserSession(
        id=session_id_digest(raw_id),
        user_id=user_id,
        csrf_token=new_secret_token(),
        created_at=now,
        expires_at=now + dt.timedelta(seconds=ttl_s),
    )
    db.add(row)
    db.flush()
    return raw_id, row


def load(db: Session, raw_id: str | None, *, now: dt.datetime | None = None,
         purge: bool = True) -> UserSession | None:
    """The live session named by the cookie's id; an expired one gives None (and is deleted when
    `purge`: read-only sessions leave it for the next writing request)."""
    if not raw_id:
        return None
    row = db.get(UserSession, session_id_digest(raw_id))
    if row is None:
        return None
    if _aware(row.expires_at) <= (now or _utcnow()):
        if purge:
            db.delete(row)
            db.flush()
        return None
    return row


def end(db: Session, raw_id: str | None) -> None:
    if raw_id:
        db.execute(delete(UserSession).where(UserSession.id == session_id_digest(raw_id)))


def end_all_for_user(db: Session, user_id: int) -> int:
    """Log a user out everywhere (deactivation, password change); returns how many sessions ended."""
    ids = db.scalars(select(UserSession.id).where(UserSession.user_id == user_id)).all()
    db.execute(delete(UserSession).where(UserSession.user_id == user_id))
    return len(ids)
