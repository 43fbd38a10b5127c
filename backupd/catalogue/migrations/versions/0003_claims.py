"""Claims: who is sending a queued report or alert, or running an owed cleanup (decision 0012).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Every row starts unclaimed (NULL): a report or alert queued before the upgrade is sent by
the first sender that claims it, an owed cleanup run by the first start that claims it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLAIMED = ("reports", "alert_events", "pending_cleanups")


def _claim() -> list[sa.Column[Any]]:
    return [
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("claimed_at", sa.DateTime(), nullable=True),
    ]


def upgrade() -> None:
    for table in CLAIMED:
        with op.batch_alter_table(table) as batch:
            for column in _claim():
                batch.add_column(column)
    op.create_table(
        "alert_keys",
        sa.Column("dedup_key", sa.String(255), primary_key=True),
        *_claim(),
    )


def downgrade() -> None:
    op.drop_table("alert_keys")
    for table in CLAIMED:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("claimed_at")
            batch.drop_column("claimed_by")
