"""the audit chain's head anchored in its own signed row (audit_head)

An existing log's head is copied in unsigned: the application's first append under the county's
key adopts it and records that adoption in the chain (tenant_app/audit.py).

Revision ID: 0003_audit_head
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003_audit_head"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("mac", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO audit_head (id, seq, hash, mac) "
               "SELECT 1, seq, hash, '' FROM audit_event ORDER BY seq DESC LIMIT 1")


def downgrade() -> None:
    op.drop_table("audit_head")
