"""Chat and push notifications (issue 17, decision 0027): delivery of each alert per
Apprise URL ("channel"), with the claims that keep it to one sender.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _claim() -> list[sa.Column[Any]]:
    return [
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("claimed_at", sa.DateTime(), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "alert_channels",
        sa.Column("channel", sa.String(64), primary_key=True),
        sa.Column("label", sa.String(255), nullable=False),
        sa.Column("since", sa.DateTime(), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "alert_channel_keys",
        sa.Column("channel", sa.String(64), primary_key=True),
        sa.Column("dedup_key", sa.String(255), primary_key=True),
        *_claim(),
    )
    op.create_table(
        "alert_sends",
        sa.Column("alert_id", sa.Integer(), sa.ForeignKey("alert_events.id"), primary_key=True),
        sa.Column("channel", sa.String(64), primary_key=True),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        *_claim(),
    )


def downgrade() -> None:
    op.drop_table("alert_sends")
    op.drop_table("alert_channel_keys")
    op.drop_table("alert_channels")
