"""Backup verifications: which restore points were proven by restoring them (backup.verifications).

Revision ID: 0006_backup
Revises: 0005_running_site
Create Date: 2026-12-04 17:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_backup"
down_revision: str | None = "0005_running_site"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "backup_verifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("snapshot_id", sa.String(length=64), nullable=False),
        sa.Column("original_id", sa.String(length=64), nullable=True),
        sa.Column("site", sa.String(length=63), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_backup_verifications_tenant_snapshot", "backup_verifications",
                    ["tenant", "snapshot_id"])


def downgrade() -> None:
    op.drop_index("ix_backup_verifications_tenant_snapshot", table_name="backup_verifications")
    op.drop_table("backup_verifications")
