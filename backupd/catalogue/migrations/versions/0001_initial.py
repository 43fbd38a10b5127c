"""The catalogue as backupd created it before migrations (``create_all``).

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Times are plain DateTime columns holding naive UTC (models.UTCDateTime converts at the edge);
revisions use only SQLAlchemy's own types, so a later change to models.py cannot alter them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.Integer(), primary_key=True)


def _time(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(), nullable=nullable)


def _str(name: str, length: int, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.String(length), nullable=nullable)


def _text(name: str, nullable: bool = True) -> sa.Column[str]:
    return sa.Column(name, sa.Text(), nullable=nullable)


def _ref(name: str, target: str, nullable: bool) -> sa.Column[int]:
    return sa.Column(name, sa.Integer(), sa.ForeignKey(target), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "hosts",
        _id(),
        _str("name", 64),
        _str("address", 255),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "sources",
        _id(),
        _ref("host_id", "hosts.id", nullable=False),
        _str("name", 64),
        _str("kind", 32),
        sa.UniqueConstraint("host_id", "name"),
    )
    op.create_table(
        "runs",
        _id(),
        _ref("source_id", "sources.id", nullable=False),
        _str("trigger", 16),
        _str("status", 16),
        _time("started_at"),
        _time("finished_at", nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("nbytes", sa.BigInteger(), nullable=False),
        _text("error"),
        _text("stderr_tail"),
    )
    op.create_index("ix_runs_source_id", "runs", ["source_id"])
    op.create_index("ix_runs_status", "runs", ["status"])
    op.create_table(
        "archives",
        _id(),
        _ref("run_id", "runs.id", nullable=True),
        _ref("source_id", "sources.id", nullable=False),
        _str("repository", 1024),
        _str("name", 255),
        _str("item", 255),
        _str("filename", 255),
        _time("created_at"),
        sa.Column("nbytes", sa.BigInteger(), nullable=False),
        _str("sha256", 64),
        sa.Column("original_size", sa.BigInteger(), nullable=False),
        sa.Column("compressed_size", sa.BigInteger(), nullable=False),
        sa.Column("deduplicated_size", sa.BigInteger(), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=False),
        _time("verified_at", nullable=True),
        _time("data_checked_at", nullable=True),
        _time("pruned_at", nullable=True),
        sa.UniqueConstraint("repository", "name"),
    )
    op.create_index("ix_archives_run_id", "archives", ["run_id"])
    op.create_index("ix_archives_source_id", "archives", ["source_id"])
    op.create_table(
        "alert_events",
        _id(),
        _time("created_at"),
        _str("kind", 32),
        _str("host", 64, nullable=True),
        _str("source", 64, nullable=True),
        _text("message", nullable=False),
        _ref("run_id", "runs.id", nullable=True),
        _time("sent_at", nullable=True),
    )
    op.create_table(
        "pending_cleanups",
        _id(),
        _time("created_at"),
        _str("host", 64),
        _str("source", 64),
        _ref("run_id", "runs.id", nullable=True),
        sa.Column("argv", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _text("last_error"),
    )
    op.create_table(
        "maintenance_runs",
        _id(),
        _str("job", 32),
        _str("host", 64, nullable=True),
        _str("trigger", 16),
        _str("status", 16),
        _time("started_at"),
        _time("finished_at", nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        _text("summary"),
        _text("error"),
        _text("stderr_tail"),
    )
    op.create_index("ix_maintenance_runs_job", "maintenance_runs", ["job"])
    op.create_index("ix_maintenance_runs_status", "maintenance_runs", ["status"])
    op.create_table(
        "queued_jobs",
        _id(),
        _str("job", 32),
        _str("host", 64, nullable=True),
        _str("source", 64, nullable=True),
        _str("trigger", 16),
        _str("state", 16),
        sa.Column("attempt", sa.Integer(), nullable=False),
        _time("enqueued_at"),
        _time("not_before"),
        _time("started_at", nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
    )


def downgrade() -> None:
    for table in (
        "queued_jobs",
        "maintenance_runs",
        "pending_cleanups",
        "alert_events",
        "archives",
        "runs",
        "sources",
        "hosts",
    ):
        op.drop_table(table)  # their indexes go with them
