"""Change alerts (issue 16, decision 0024): nights that looked like loss, and the archive
before each that prune keeps until a person acknowledges it.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "change_flags",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("source_id", sa.Integer(), sa.ForeignKey("sources.id"), nullable=False),
        sa.Column("item", sa.String(255), nullable=False),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id"), nullable=True),
        sa.Column("archive_id", sa.Integer(), sa.ForeignKey("archives.id"), nullable=False),
        sa.Column("held_archive_id", sa.Integer(), sa.ForeignKey("archives.id"), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("acked_at", sa.DateTime(), nullable=True),
        sa.Column("acked_by", sa.String(64), nullable=True),
        sa.Column("ack_note", sa.Text(), nullable=True),
    )
    op.create_index("ix_change_flags_acked_at", "change_flags", ["acked_at"])


def downgrade() -> None:
    op.drop_index("ix_change_flags_acked_at", "change_flags")
    op.drop_table("change_flags")
