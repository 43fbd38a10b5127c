"""Indexes for status, the report and alerts at fleet scale (issue 14): the newest run,
success and failure of a source, its live archives, its newest drill, each found by an
index seek instead of a scan of the whole history.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = sa.text("pruned_at IS NULL")


def upgrade() -> None:
    op.create_index("ix_runs_source_started", "runs", ["source_id", "started_at", "id"])
    op.create_index(
        "ix_runs_source_status_finished", "runs", ["source_id", "status", "finished_at"]
    )
    op.create_index(
        "ix_archives_live",
        "archives",
        ["source_id", "item", "created_at", "original_size", "deduplicated_size"],
        sqlite_where=LIVE,
        postgresql_where=LIVE,
    )
    op.create_index("ix_drills_source_newest", "drills", ["host", "source", "id", "status"])


def downgrade() -> None:
    op.drop_index("ix_drills_source_newest", "drills")
    op.drop_index("ix_archives_live", "archives")
    op.drop_index("ix_runs_source_status_finished", "runs")
    op.drop_index("ix_runs_source_started", "runs")
