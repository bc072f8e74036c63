"""Protection tiers (issue 12): each county's tier (tenants.protection, default backup) and each
tier's backup interval and retention (protection_tiers), declared in the inventory YAML.

Revision ID: 0008_backup_tiers
Revises: 0007_monitoring
Create Date: 2026-12-04 21:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_backup_tiers"
down_revision: str | None = "0007_monitoring"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIER = sa.Enum("backup", "replicated", name="protectiontier", native_enum=False, length=32)


def upgrade() -> None:
    # Counties already declared are protected by backup rounds, as they were before tiers existed.
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("protection", _TIER, nullable=False, server_default="backup"))
    op.create_table(
        "protection_tiers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", _TIER, nullable=False),
        sa.Column("interval_s", sa.Integer(), nullable=False),
        sa.Column("keep_last", sa.Integer(), nullable=True),
        sa.Column("keep_hourly", sa.Integer(), nullable=True),
        sa.Column("keep_daily", sa.Integer(), nullable=True),
        sa.Column("keep_monthly", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_protection_tiers")),
        sa.UniqueConstraint("name", name=op.f("uq_protection_tiers_name")),
    )


def downgrade() -> None:
    op.drop_table("protection_tiers")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("protection")
