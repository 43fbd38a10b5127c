"""Alembic environment, driven by backupd.catalogue.migrate (no alembic.ini).

The connection arrives in ``config.attributes["connection"]``, already inside the transaction
that holds the migration lock: Alembic then adds no transaction of its own, so the whole
upgrade (and the version stamp) commits or rolls back as one.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine
from sqlalchemy.pool import NullPool

from backupd.catalogue.models import Base


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite alters a table by copying it: batch mode lets later revisions do that
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = context.config.attributes.get("connection")
    if isinstance(connection, Connection):
        run(connection)
        return
    # a developer's `command.revision(alembic_config(url), autogenerate=True)`
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection and no sqlalchemy.url: see migrate.alembic_config")
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        run(conn)


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")
main()
