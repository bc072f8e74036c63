"""Which restore points were proven by a verification (a restore onto a VM that served the recorded
figures), kept in the platform database beside the inventory (revision 0006_backup).

Why a table and not a restic tag: `restic tag` rewrites a snapshot under a new id, which would break
the offsite copy's `original` link and the ids operators have already seen. A row names both the
snapshot that was restored (usually the offsite copy) and the primary's snapshot it was copied from,
so a point counts as verified in either repository's list.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Boolean, DateTime, Engine, Index, Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from inventory.db import Base, as_utc, session_scope
from inventory.models import NAME_LENGTH

SNAPSHOT_ID_LENGTH = 64


def utcnow() -> datetime:
    return datetime.now(UTC)


class BackupVerification(Base):
    __tablename__ = "backup_verifications"
    __table_args__ = (Index("ix_backup_verifications_tenant_snapshot", "tenant", "snapshot_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # A slug, not a foreign key: a retired county's proofs stay with its repository's history.
    tenant: Mapped[str] = mapped_column(String(NAME_LENGTH))
    snapshot_id: Mapped[str] = mapped_column(String(SNAPSHOT_ID_LENGTH))  # the one restored
    original_id: Mapped[str | None] = mapped_column(String(SNAPSHOT_ID_LENGTH))  # its primary source
    site: Mapped[str] = mapped_column(String(NAME_LENGTH))  # where it was restored
    ok: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[str] = mapped_column(Text, default="")
    job_id: Mapped[str | None] = mapped_column(String(64))
    verified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


@dataclass(frozen=True)
class Verification:
    tenant: str
    snapshot_id: str
    original_id: str | None
    site: str
    ok: bool
    detail: str
    verified_at: datetime

    def names(self, snapshot_id: str) -> bool:
        """Whether this verification proves `snapshot_id` (full or short id, either repository's)."""
        return any(known and (known.startswith(snapshot_id) or snapshot_id.startswith(known))
                   for known in (self.snapshot_id, self.original_id))


def record(engine: Engine, *, tenant: str, snapshot_id: str, original_id: str | None, site: str, ok: bool,
           detail: str = "", job_id: str | None = None, at: datetime | None = None) -> None:
    """Record a verification's outcome. A rerun of the same job records once (idempotent step)."""
    with session_scope(engine) as session:
        if job_id is not None and session.scalar(select(BackupVerification.id).where(
                BackupVerification.job_id == job_id, BackupVerification.snapshot_id == snapshot_id)):
            return
        session.add(BackupVerification(tenant=tenant, snapshot_id=snapshot_id, original_id=original_id,
                                       site=site, ok=ok, detail=detail[:4000], job_id=job_id,
                                       verified_at=at or utcnow()))


def of_tenant(engine: Engine, tenant: str) -> list[Verification]:
    """A county's verifications, oldest first."""
    with session_scope(engine) as session:
        rows = session.scalars(select(BackupVerification).where(BackupVerification.tenant == tenant)
                               .order_by(BackupVerification.verified_at, BackupVerification.id))
        return [Verification(row.tenant, row.snapshot_id, row.original_id, row.site, row.ok, row.detail,
                             as_utc(row.verified_at)) for row in rows]


def latest_for(verifications: Iterable[Verification], snapshot_id: str) -> Verification | None:
    """The newest verification of `snapshot_id` (pure)."""
    found = [v for v in verifications if v.names(snapshot_id)]
    return max(found, key=lambda v: v.verified_at, default=None)


def newest(verifications: Iterable[Verification]) -> Verification | None:
    return max(verifications, key=lambda v: v.verified_at, default=None)
