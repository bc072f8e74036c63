"""Monitoring's timings in the platform database (monitoring.storage): hourly rollups (DDSketches
and the summary the console draws) kept a year, raw samples kept a day.

Revision ID: 0007_monitoring
Revises: 0006_backup
Create Date: 2026-12-04 17:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_monitoring"
down_revision: str | None = "0006_backup"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "monitoring_rollups",
        sa.Column("county", sa.String(length=63), nullable=False),
        sa.Column("transaction", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("hour", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("sketches", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("p50_network", sa.Float(), nullable=True),
        sa.Column("p50_queue", sa.Float(), nullable=True),
        sa.Column("p50_app", sa.Float(), nullable=True),
        sa.Column("p50_db", sa.Float(), nullable=True),
        sa.Column("p95_total", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("county", "transaction", "source", "hour",
                                name=op.f("pk_monitoring_rollups")),
    )
    op.create_index("ix_monitoring_rollups_hour", "monitoring_rollups", ["hour"])
    op.create_table(
        "monitoring_samples",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("county", sa.String(length=63), nullable=False),
        sa.Column("transaction", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("total_ms", sa.Float(), nullable=False),
        sa.Column("network_ms", sa.Float(), nullable=False),
        sa.Column("queue_ms", sa.Float(), nullable=False),
        sa.Column("server_ms", sa.Float(), nullable=False),
        sa.Column("app_ms", sa.Float(), nullable=False),
        sa.Column("db_ms", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitoring_samples")),
    )
    op.create_index("ix_monitoring_samples_at", "monitoring_samples", ["at"])
    op.create_index("ix_monitoring_samples_county_at", "monitoring_samples", ["county", "at"])
    op.create_table(
        "monitoring_advice",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("county", sa.String(length=63), nullable=False),
        sa.Column("vm", sa.String(length=63), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("message", sa.String(length=500), nullable=False),
        sa.Column("change", sa.String(length=200), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=63), nullable=False),
        sa.Column("applied_at", sa.Float(), nullable=False),
        sa.Column("before", sa.JSON(), nullable=False),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitoring_advice")),
    )
    op.create_index(op.f("ix_monitoring_advice_county"), "monitoring_advice", ["county"])


def downgrade() -> None:
    op.drop_index(op.f("ix_monitoring_advice_county"), table_name="monitoring_advice")
    op.drop_table("monitoring_advice")
    op.drop_index("ix_monitoring_samples_county_at", table_name="monitoring_samples")
    op.drop_index("ix_monitoring_samples_at", table_name="monitoring_samples")
    op.drop_table("monitoring_samples")
    op.drop_index("ix_monitoring_rollups_hour", table_name="monitoring_rollups")
    op.drop_table("monitoring_rollups")
