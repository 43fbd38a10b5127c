"""Restores, drills, reports and key exports; alert deduplication and delivery columns.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(), nullable=nullable)


def _str(name: str, length: int, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.String(length), nullable=nullable)


def _lifecycle() -> list[sa.Column[Any]]:
    """Columns every row of a started-then-finished action has."""
    return [
        _str("status", 16),
        _time("started_at"),
        _time("finished_at", nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table("alert_events") as batch:
        batch.add_column(_str("dedup_key", 255, nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch.create_index("ix_alert_events_dedup_key", ["dedup_key"])
    op.create_table(
        "restores",
        sa.Column("id", sa.Integer(), primary_key=True),
        _str("host", 64),
        _str("source", 64),
        sa.Column("archives", sa.JSON(), nullable=False),
        _str("target_kind", 16),
        sa.Column("target", sa.Text(), nullable=False),
        *_lifecycle(),
        _str("operator", 64, nullable=True),
        sa.Column("nbytes", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_restores_status", "restores", ["status"])
    op.create_table(
        "drills",
        sa.Column("id", sa.Integer(), primary_key=True),
        _str("host", 64),
        _str("source", 64),
        _str("repository", 1024),
        _str("archive", 255),
        _str("trigger", 16),
        *_lifecycle(),
        sa.Column("scratch", sa.Text(), nullable=True),
        sa.Column("rto_seconds", sa.Float(), nullable=True),
        sa.Column("nbytes", sa.BigInteger(), nullable=False),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
    )
    op.create_index("ix_drills_host", "drills", ["host"])
    op.create_index("ix_drills_status", "drills", ["status"])
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer(), primary_key=True),
        _time("created_at"),
        _time("period_start"),
        _time("period_end"),
        _str("verdict", 16),
        _str("subject", 255),
        sa.Column("recipients", sa.JSON(), nullable=False),
        _str("status", 16),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _time("next_attempt_at", nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        _time("sent_at", nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
    )
    op.create_index("ix_reports_status", "reports", ["status"])
    op.create_table(
        "key_exports",
        sa.Column("id", sa.Integer(), primary_key=True),
        _str("host", 64),
        _str("repository", 1024),
        _time("exported_at"),
        sa.Column("directory", sa.Text(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        _str("key_sha256", 64),
    )
    op.create_index("ix_key_exports_host", "key_exports", ["host"])


def downgrade() -> None:
    for table in ("key_exports", "reports", "drills", "restores"):
        op.drop_table(table)
    with op.batch_alter_table("alert_events") as batch:
        batch.drop_index("ix_alert_events_dedup_key")
        for column in ("last_error", "attempts", "dedup_key"):
            batch.drop_column(column)
