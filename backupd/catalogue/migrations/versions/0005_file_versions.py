"""The index of file versions (issue 16): one row per version of each file of a tree item,
with the first and last archive that held it, so find, ls and diff answer without a
repository.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "file_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("source_id", sa.Integer(), sa.ForeignKey("sources.id"), nullable=False),
        sa.Column("item", sa.String(255), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("type", sa.String(1), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mode", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("gid", sa.BigInteger(), nullable=False),
        sa.Column("mtime", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("first_archive_id", sa.Integer(), sa.ForeignKey("archives.id"), nullable=False),
        sa.Column("last_archive_id", sa.Integer(), sa.ForeignKey("archives.id"), nullable=False),
    )
    op.create_index(
        "ix_file_versions_item_last", "file_versions", ["source_id", "item", "last_archive_id"]
    )
    op.create_index("ix_file_versions_item_path", "file_versions", ["source_id", "item", "path"])


def downgrade() -> None:
    op.drop_index("ix_file_versions_item_path", "file_versions")
    op.drop_index("ix_file_versions_item_last", "file_versions")
    op.drop_table("file_versions")
