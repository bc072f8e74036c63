"""The monitoring page's reads from indexes (monitoring.storage): a covering index for a month of
one transaction's chart bars, and (county, source, hour) for each transaction's latest hour.

Revision ID: 0010_monitoring_chart
Revises: 0009_fencing
Create Date: 2026-12-04 21:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010_monitoring_chart"
down_revision: str | None = "0009_fencing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHART_COLUMNS = ["county", "source", "transaction", "hour", "count", "p50_network", "p50_queue", "p50_app",
                 "p50_db", "p95_total"]


def upgrade() -> None:
    op.create_index("ix_monitoring_rollups_chart", "monitoring_rollups", CHART_COLUMNS)
    op.create_index("ix_monitoring_rollups_county_source_hour", "monitoring_rollups",
                    ["county", "source", "hour"])


def downgrade() -> None:
    op.drop_index("ix_monitoring_rollups_county_source_hour", table_name="monitoring_rollups")
    op.drop_index("ix_monitoring_rollups_chart", table_name="monitoring_rollups")
