"""The service's own tables: users, their API tokens and console sessions, the log-in throttle, and
the hash-chained audit log. They live in the one platform database beside the inventory's (revision
0003_service of inventory/migrations) and use its declarative Base, so one migration tree covers all.

Enums are stored as plain strings (as in inventory.models) so the schema is the same on SQLite and
PostgreSQL and a new role needs no migration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from controlplane.actors import ActorKind
from controlplane.roles import Role
from inventory.db import Base
from inventory.models import NAME_LENGTH, enum_column

HASH_LENGTH = 64  # a SHA-256 in hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    role: Mapped[Role] = mapped_column(enum_column(Role))
    # The one county a `county` user may see (its slug); None for every other role. Not a foreign key:
    # a retired and purged county must not take its liaison's account (and audit trail) with it.
    tenant: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    # argon2 (pwdlib); None for an account that only uses tokens.
    password_hash: Mapped[str | None] = mapped_column(Text)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    password_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", order_by="ApiToken.created_at")


class ApiToken(Base):
    __tablename__ = "api_tokens"

    # The public id (shown in lists and audited); the secret part is only ever stored as its SHA-256.
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(120), default="")
    # A token is 256 random bits, so a plain SHA-256 is enough (no salt or slow hash needed: it
    # cannot be guessed, only stolen, and the hash makes a stolen database useless for it).
    token_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship(back_populates="tokens")


class ConsoleSession(Base):
    """A signed-in browser. Server-side so that signing out, disabling a user or changing a password
    ends its sessions at once (a signed cookie alone would stay valid until it expires)."""

    __tablename__ = "console_sessions"

    # SHA-256 of the cookie's random value: a leaked table does not give usable cookies.
    id: Mapped[str] = mapped_column(String(HASH_LENGTH), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(HASH_LENGTH))
    source: Mapped[str] = mapped_column(String(120), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LoginThrottle(Base):
    """Failed sign-ins per key ("user:NAME" or "addr:IP"), counted with one UPDATE so that parallel
    attempts (threads or several service processes) cannot slip past the limit."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AuditEvent(Base):
    """One change, chained to the one before it: `hash` covers every field and `prev_hash`, so an
    edited row, a removed middle row or a reordering breaks the chain (see controlplane.audit)."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor_kind: Mapped[ActorKind] = mapped_column(enum_column(ActorKind))
    actor_name: Mapped[str] = mapped_column(String(120))
    role: Mapped[Role] = mapped_column(enum_column(Role))
    source: Mapped[str] = mapped_column(String(120), default="")
    token_id: Mapped[str | None] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200), default="")
    job_id: Mapped[str | None] = mapped_column(String(80))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Unique: two events can never both follow the same one (a fork of the chain is refused).
    prev_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), unique=True)
    hash: Mapped[str] = mapped_column(String(HASH_LENGTH), unique=True)

    __table_args__ = (Index("ix_audit_events_at", "at"), Index("ix_audit_events_target", "target"))


class AuditHead(Base):
    """The chain's newest link, one row. Appending an event first updates this row, which takes the
    row lock (PostgreSQL) or the write lock (SQLite) until the caller commits: appends are serialised
    and each one reads the head left by the last committed one."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
