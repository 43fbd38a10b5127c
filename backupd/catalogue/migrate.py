"""Catalogue schema migrations (Alembic), applied at every start, safely.

* A new database is migrated to the newest revision (head).
* A database made by backupd before migrations existed (``create_all``: tables, no
  ``alembic_version``) is checked to hold the baseline tables, stamped ``0001``, then upgraded.
* A database at a revision this code does not know (backupd was downgraded) is refused
  (``CatalogueError``) and left as it is.
* One starter migrates at a time (the daemon and ``backupctl`` may start together): SQLite
  holds its write lock (``BEGIN IMMEDIATE``), PostgreSQL an advisory lock, for the whole
  check-and-upgrade, which runs in that one transaction.
* An existing SQLite file is copied to ``<file>.pre-<revision>.bak`` (0600, SQLite's backup
  API) before anything in it changes.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from backupd.errors import CatalogueError

if TYPE_CHECKING:  # Alembic is imported only to migrate: it costs every start ~80 ms
    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().with_name("migrations")
BASELINE = "0001"  # the schema create_all made before migrations existed
EMPTY = "empty"  # no tables at all
UNVERSIONED = "unversioned"  # tables but no alembic_version: made by create_all
LOCK_WAIT_S = 300  # a starter waits this long for another one's migration
PG_LOCK_KEY = 0x6261636B757064  # b"backupd": one advisory lock id for the catalogue

# Tables and columns of revision 0001, to recognise a create_all catalogue before stamping it.
BASELINE_TABLES: dict[str, tuple[str, ...]] = {
    "hosts": ("id", "name", "address"),
    "sources": ("id", "host_id", "name", "kind"),
    "runs": (
        "id",
        "source_id",
        "trigger",
        "status",
        "started_at",
        "finished_at",
        "pid",
        "nbytes",
        "error",
        "stderr_tail",
    ),
    "archives": (
        "id",
        "run_id",
        "source_id",
        "repository",
        "name",
        "item",
        "filename",
        "created_at",
        "nbytes",
        "sha256",
        "original_size",
        "compressed_size",
        "deduplicated_size",
        "facts",
        "verified_at",
        "data_checked_at",
        "pruned_at",
    ),
    "alert_events": ("id", "created_at", "kind", "host", "source", "message", "run_id", "sent_at"),
    "pending_cleanups": (
        "id",
        "created_at",
        "host",
        "source",
        "run_id",
        "argv",
        "attempts",
        "last_error",
    ),
    "maintenance_runs": (
        "id",
        "job",
        "host",
        "trigger",
        "status",
        "started_at",
        "finished_at",
        "pid",
        "summary",
        "error",
        "stderr_tail",
    ),
    "queued_jobs": (
        "id",
        "job",
        "host",
        "source",
        "trigger",
        "state",
        "attempt",
        "enqueued_at",
        "not_before",
        "started_at",
        "pid",
    ),
}

# Alembic's env.py runs through module-level proxies (alembic.context, alembic.op): two
# threads of one process must not migrate at once. Other processes are kept out by the
# database lock.
_in_process = threading.Lock()


def alembic_config(url: str | None = None, script_location: Path = MIGRATIONS) -> Config:
    """An Alembic config without alembic.ini. With a URL it also serves a developer writing a
    revision: ``command.revision(alembic_config(url), "msg", autogenerate=True)``."""
    from alembic.config import Config

    cfg = Config()
    # Config values are %-interpolated: a literal % in a path or password must be doubled
    cfg.set_main_option("script_location", str(script_location).replace("%", "%%"))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def known_revisions(script_location: Path = MIGRATIONS) -> list[str]:
    """Revision ids, oldest first, read from the file names (``NNNN_slug.py``, revision
    ``NNNN`` revising the one before: tests hold every file to this), so that the check at
    each start needs no Alembic."""
    files = (script_location / "versions").glob("[0-9]*_*.py")
    return sorted(path.name.split("_", 1)[0] for path in files)


def upgrade_to_head(engine: Engine, script_location: Path = MIGRATIONS) -> None:
    """Bring the catalogue behind ``engine`` to the newest schema, or refuse to touch it."""
    known = known_revisions(script_location)
    where = engine.url.render_as_string(hide_password=True)
    own = _sqlite_engine(engine.url) if _is_sqlite_file(engine) else None
    try:
        with (own or engine).connect() as conn:
            if _state(conn, known) == known[-1]:
                return  # every start but the first after an upgrade: no lock, no write
        with _in_process, _locked(own or engine) as conn:
            _migrate(conn, alembic_config(script_location=script_location), known)
    except DBAPIError as e:  # cannot connect, locked too long, ...: one line, not a traceback
        raise CatalogueError(f"catalogue {where}: {_first_line(e.orig or e)}") from e
    finally:
        if own is not None:
            own.dispose()


def _migrate(conn: Connection, cfg: Config, known: Sequence[str]) -> None:
    """Under the lock: look again (another starter may have migrated meanwhile), then act."""
    from alembic import command

    head = known[-1]
    state = _state(conn, known)
    if state == head:
        return
    if state == UNVERSIONED:
        _check_baseline(conn)
    started = time.monotonic()
    backup = _backup_sqlite(conn, state) if state != EMPTY else None
    cfg.attributes["connection"] = conn
    try:
        if state == UNVERSIONED:
            log.warning("catalogue made before migrations: stamping it %s", BASELINE)
            command.stamp(cfg, BASELINE)
        command.upgrade(cfg, "head")
        _check_foreign_keys(conn)
    except Exception as e:
        raise _failed(conn, state, head, backup, e) from e
    log.info("catalogue schema %s -> %s in %.2f s", state, head, time.monotonic() - started)


def _state(conn: Connection, known: Sequence[str]) -> str:
    """The database's revision, EMPTY or UNVERSIONED; CatalogueError if this code does not
    know its revision."""
    tables = set(inspect(conn).get_table_names())
    heads = _version_rows(conn) if "alembic_version" in tables else []
    tables.discard("alembic_version")
    if not heads:
        return UNVERSIONED if tables else EMPTY
    unknown = sorted(set(heads) - set(known))
    where = conn.engine.url.render_as_string(hide_password=True)
    if unknown:
        raise CatalogueError(
            f"catalogue {where} has schema revision {', '.join(unknown)}, newer than this "
            f"backupd knows (its newest is {known[-1]}): a newer backupd used it. Install "
            "that version again; the catalogue was not changed"
        )
    if len(heads) > 1:
        raise CatalogueError(f"catalogue {where} has several schema revisions: {heads}")
    return heads[0]


def _version_rows(conn: Connection) -> list[str]:
    # read directly: Alembic's MigrationContext would log two INFO lines at every start
    return [str(rev) for (rev,) in conn.execute(text("SELECT version_num FROM alembic_version"))]


def _check_baseline(conn: Connection) -> None:
    """Stamp only what is recognisably a create_all catalogue: every baseline table and
    column present. Anything else (a foreign database, a much older backupd) is refused."""
    inspector = inspect(conn)
    present = set(inspector.get_table_names())
    missing = [t for t in BASELINE_TABLES if t not in present]
    for table in set(BASELINE_TABLES) & present:
        columns = {c["name"] for c in inspector.get_columns(table)}
        missing += [f"{table}.{c}" for c in BASELINE_TABLES[table] if c not in columns]
    if missing:
        where = conn.engine.url.render_as_string(hide_password=True)
        raise CatalogueError(
            f"catalogue {where} has tables but no schema revision, and is not a backupd "
            f"catalogue this version can adopt (missing {', '.join(sorted(missing))}); "
            "it was not changed"
        )


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A connection inside a transaction that only one starter at a time can be in. It
    commits only if the body finishes: a refusal or a failed revision leaves no trace."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock: a second starter waits
        elif engine.dialect.name == "postgresql":
            # also bounds waiting on table locks held by a long reader during the upgrade
            conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_WAIT_S}s'"))
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def _is_sqlite_file(engine: Engine) -> bool:
    database = engine.url.database
    return engine.dialect.name == "sqlite" and bool(database) and database != ":memory:"


def _sqlite_engine(url: URL) -> Engine:
    """A connection of our own to a SQLite file for the migration. Unlike the catalogue's,
    it does not switch the file to WAL before we know it is ours (that would change a
    foreign or newer file), and it keeps foreign keys off."""
    engine = create_engine(url, poolclass=NullPool)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite runs DDL outside any transaction: we say BEGIN and COMMIT ourselves
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={LOCK_WAIT_S * 1000}")
        # batch migrations copy and drop tables that others reference; checked afterwards
        cur.execute("PRAGMA foreign_keys=OFF")
        cur.close()

    return engine


def _check_foreign_keys(conn: Connection) -> None:
    """Foreign keys were off during a SQLite migration: make sure it broke none."""
    if conn.dialect.name != "sqlite":
        return
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise CatalogueError(f"the migration broke foreign keys: {broken[:5]}")


def _backup_sqlite(conn: Connection, revision: str) -> Path | None:
    """Copy the SQLite file as it is now to ``<file>.pre-<revision>.bak`` (0600).

    Read through a second connection: SQLite's backup cannot read from the connection that
    holds the write lock, and while we hold it nobody else can write. Written under a
    temporary name and renamed, so a half-written copy never carries the final name."""
    path = _main_file(conn)
    if path is None:
        return None
    target = path.with_name(f"{path.name}.pre-{revision}.bak")
    partial = target.with_name(target.name + ".partial")
    try:
        partial.unlink(missing_ok=True)
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        readonly = f"{path.absolute().as_uri()}?mode=ro"
        with (
            closing(sqlite3.connect(readonly, uri=True)) as source,
            closing(sqlite3.connect(partial)) as copy,
        ):
            source.backup(copy)
        os.replace(partial, target)
    except (OSError, sqlite3.Error) as e:
        partial.unlink(missing_ok=True)
        raise CatalogueError(
            f"cannot copy the catalogue to {target} before migrating it ({e}); it was not changed"
        ) from e
    log.info("catalogue copied to %s before migrating it", target)
    return target


def _main_file(conn: Connection) -> Path | None:
    """The database's file; None in memory."""
    if conn.dialect.name != "sqlite":
        return None
    for _seq, name, file in conn.exec_driver_sql("PRAGMA database_list"):
        if name == "main" and file:
            return Path(file)
    return None


def _failed(
    conn: Connection, state: str, head: str, backup: Path | None, error: Exception
) -> CatalogueError:
    where = conn.engine.url.render_as_string(hide_password=True)
    undone = conn.dialect.name in ("sqlite", "postgresql")  # both roll DDL back
    outcome = "it was rolled back" if undone else "it may be partly migrated"
    copy = f"; a copy from before is in {backup}" if backup else ""
    return CatalogueError(
        f"catalogue {where}: migrating schema {state} -> {head} failed ({_first_line(error)}); "
        f"{outcome}{copy}"
    )


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
