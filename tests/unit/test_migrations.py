"""Catalogue schema migrations on SQLite: models and revisions agree, and start-up migration
adopts a pre-migration catalogue, refuses a newer one untouched, copies before it changes
anything, rolls a failed revision back, and lets only one of several starters migrate."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from backupd.catalogue import Base, Catalogue
from backupd.catalogue.migrate import (
    BASELINE,
    MIGRATIONS,
    alembic_config,
    known_revisions,
    upgrade_to_head,
)
from backupd.errors import CatalogueError

HEAD = known_revisions()[-1]


def url(path: Path) -> str:
    return f"sqlite:///{path}"


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


def execute(path: Path, script: str) -> None:
    with closing(sqlite3.connect(path)) as db, db:
        db.executescript(script)


def tables(path: Path) -> set[str]:
    return {str(r[0]) for r in query(path, "SELECT name FROM sqlite_master WHERE type='table'")}


def revision(path: Path) -> list[str]:
    return [str(r[0]) for r in query(path, "SELECT version_num FROM alembic_version")]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def migrate_to(path: Path, rev: str) -> None:
    engine = create_engine(url(path))
    try:
        with engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, rev)
    finally:
        engine.dispose()


def legacy_catalogue(path: Path) -> None:
    """What ``create_all`` made before migrations: revision 0001 is exactly that schema (the
    same DDL; test_models_and_migrations_agree checked it while 0001 was the head), without
    the version table. Built from 0001 so that this test outlives later model changes."""
    migrate_to(path, BASELINE)
    execute(path, "DROP TABLE alembic_version")


def add_rows(path: Path) -> None:
    execute(
        path,
        """
            INSERT INTO hosts (id, name, address) VALUES (1, 'web1', '10.0.0.1');
            INSERT INTO sources (id, host_id, name, kind) VALUES (1, 1, 'maindb', 'postgresql');
            INSERT INTO runs (id, source_id, "trigger", status, started_at, finished_at, nbytes)
              VALUES (1, 1, 'manual', 'succeeded', '2026-01-02 03:04:05', '2026-01-02 03:05:00', 7);
        """,
    )


def with_revision(tmp_path: Path, body: str) -> Path:
    """A copy of the shipped migrations plus one more revision after the head."""
    location = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, location, ignore=shutil.ignore_patterns("__pycache__"))
    number = f"{int(HEAD) + 1:04d}"
    header = f"""
        import sqlalchemy as sa
        from alembic import op

        revision = "{number}"
        down_revision = "{HEAD}"
        branch_labels = None
        depends_on = None
    """
    text = textwrap.dedent(header) + textwrap.dedent(body)
    (location / "versions" / f"{number}_test.py").write_text(text)
    return location


# Rebuilds `sources` (batch mode copies it) while runs reference its rows: foreign keys must
# be off during the copy and intact after it.
ADD_COLUMN = """
    def upgrade():
        with op.batch_alter_table("sources", recreate="always") as batch:
            batch.add_column(sa.Column("note", sa.Text(), nullable=True))
"""

FAILING = """
    def upgrade():
        with op.batch_alter_table("sources", recreate="always") as batch:
            batch.add_column(sa.Column("note", sa.Text(), nullable=True))
        op.execute("INSERT INTO hosts (name, address) VALUES ('half', 'way')")
        raise RuntimeError("this revision breaks halfway")
"""


# -- the migrations themselves -------------------------------------------------------------
def test_models_and_migrations_agree(tmp_path: Path) -> None:
    db = tmp_path / "catalogue.db"
    Catalogue(url(db)).engine.dispose()
    engine = create_engine(url(db))
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], "models.py and the migrations differ: write a revision"
    assert revision(db) == [HEAD]
    assert tables(db) == {*Base.metadata.tables, "alembic_version"}


def test_revision_files_are_numbered_in_order() -> None:
    """known_revisions() reads file names only (start-up does not import Alembic): each file
    must be named after its revision, which revises the one before it."""
    script = ScriptDirectory.from_config(alembic_config())
    scripts = list(reversed(list(script.walk_revisions())))
    assert [s.revision for s in scripts] == known_revisions()
    previous = None
    for s in scripts:
        assert Path(s.path).name.startswith(f"{s.revision}_")
        assert s.down_revision == previous
        previous = s.revision
    assert script.get_current_head() == HEAD
    assert known_revisions()[0] == BASELINE


# -- start-up: the cases -------------------------------------------------------------------
def test_new_database_is_migrated_private_and_in_wal_mode(tmp_path: Path) -> None:
    db = tmp_path / "state" / "catalogue.db"
    cat = Catalogue(url(db))
    with cat.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        for path in tmp_path.glob("state/catalogue.db*"):
            assert mode(path) == 0o600, path
    cat.engine.dispose()
    assert revision(db) == [HEAD]
    assert not list(tmp_path.glob("state/*.bak")), "nothing to copy in a new database"
    Catalogue(url(db)).engine.dispose()  # the next start finds it current
    assert revision(db) == [HEAD]


def test_in_memory_database_works() -> None:
    cat = Catalogue("sqlite://")
    assert cat.ensure_source("web1", "10.0.0.1", "maindb", "postgresql") == 1
    assert [s.source for s in cat.status()] == ["maindb"]


def test_create_all_catalogue_is_stamped_and_keeps_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "catalogue.db"
    legacy_catalogue(db)
    add_rows(db)
    cat = Catalogue(url(db))
    [row] = cat.status()
    assert (row.host, row.source, row.last_status) == ("web1", "maindb", "succeeded")
    assert row.last_success is not None and row.last_success.isoformat().endswith("+00:00")
    cat.engine.dispose()
    assert revision(db) == [HEAD]
    backup = tmp_path / "catalogue.db.pre-unversioned.bak"
    assert mode(backup) == 0o600
    assert "alembic_version" not in tables(backup)
    assert query(backup, "SELECT name FROM hosts") == [("web1",)]


def test_foreign_database_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    execute(db, "CREATE TABLE hosts (id INTEGER PRIMARY KEY, name TEXT)")
    before = digest(db)
    missing = "missing alert_events, archives, hosts.address, maintenance_runs"
    with pytest.raises(CatalogueError, match=f"not a backupd catalogue.*{missing}"):
        Catalogue(url(db))
    assert digest(db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


def test_newer_revision_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "catalogue.db"
    Catalogue(url(db)).engine.dispose()
    execute(db, "UPDATE alembic_version SET version_num = '0999'")
    before = digest(db)
    with pytest.raises(CatalogueError) as refused:
        Catalogue(url(db))
    message = str(refused.value)
    assert "schema revision 0999, newer than this backupd knows" in message
    assert f"its newest is {HEAD}" in message and "was not changed" in message
    assert refused.value.exit_code == 13
    assert digest(db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalogue.db"]


def test_unreachable_database_is_one_clear_error() -> None:
    bad = "postgresql+psycopg://postgres@/catalogue?host=/nonexistent&port=1"
    with pytest.raises(CatalogueError, match=r"^catalogue postgresql\+psycopg://.*/nonexistent"):
        Catalogue(bad)


CLOSER = """
import sys
from backupd.catalogue import Catalogue
c = Catalogue(sys.argv[1])
c.record_alert("other_process", "written by another process")
c.engine.dispose()
"""


def test_a_second_catalogue_in_a_process_keeps_the_first_ones_locks(tmp_path: Path) -> None:
    """Opening a catalogue must not close a descriptor of the file: that drops the process's
    POSIX locks, and the next process to close its last connection deletes the WAL the
    first catalogue still uses (each then sees its own writes only)."""
    url = f"sqlite:///{tmp_path / 'catalogue.db'}"
    first = Catalogue(url)
    assert first.alerts() == []
    second = Catalogue(url)
    assert second.alerts() == []
    subprocess.run([sys.executable, "-c", CLOSER, url], check=True)
    assert (tmp_path / "catalogue.db-wal").exists() and (tmp_path / "catalogue.db-shm").exists()
    assert [e.kind for e in first.alerts()] == ["other_process"]
    first.record_alert("first", "written by the first catalogue")
    with_a_fresh_one = Catalogue(url)
    assert [e.kind for e in with_a_fresh_one.alerts()] == ["other_process", "first"]
    for c in (first, second, with_a_fresh_one):
        c.engine.dispose()


# -- a database behind the code: copy, then migrate ------------------------------------------
def test_copy_is_written_before_migrating(tmp_path: Path) -> None:
    db = tmp_path / "catalogue.db"
    Catalogue(url(db)).engine.dispose()
    add_rows(db)
    engine = create_engine(url(db))
    upgrade_to_head(engine, with_revision(tmp_path, ADD_COLUMN))
    engine.dispose()
    new = f"{int(HEAD) + 1:04d}"
    assert revision(db) == [new]
    assert query(db, "SELECT name, note FROM sources") == [("maindb", None)]
    assert query(db, "PRAGMA foreign_key_check") == []
    backup = tmp_path / f"catalogue.db.pre-{HEAD}.bak"
    assert mode(backup) == 0o600
    assert revision(backup) == [HEAD]
    assert query(backup, "SELECT * FROM sources") == [(1, 1, "maindb", "postgresql")]
    assert not list(tmp_path.glob("*.partial"))


def test_failed_migration_is_rolled_back_and_the_copy_kept(tmp_path: Path) -> None:
    db = tmp_path / "catalogue.db"
    Catalogue(url(db)).engine.dispose()
    add_rows(db)
    engine = create_engine(url(db))
    with pytest.raises(CatalogueError) as failed:
        upgrade_to_head(engine, with_revision(tmp_path, FAILING))
    engine.dispose()
    backup = tmp_path / f"catalogue.db.pre-{HEAD}.bak"
    assert "this revision breaks halfway" in str(failed.value)
    assert f"rolled back; a copy from before is in {backup}" in str(failed.value)
    assert revision(db) == [HEAD]
    assert query(db, "SELECT name FROM hosts") == [("web1",)]
    assert "note" not in {str(r[1]) for r in query(db, "PRAGMA table_info(sources)")}
    assert query(backup, "SELECT name FROM hosts") == [("web1",)]


# -- several starters at once ---------------------------------------------------------------
STARTER = """
import logging, sys, time
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
from backupd.catalogue import Catalogue
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all start together
Catalogue(sys.argv[1]).engine.dispose()
"""


def test_concurrent_starters_migrate_once(tmp_path: Path) -> None:
    db = tmp_path / "catalogue.db"
    start = str(time.time() + 1.5)
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, url(db), start],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    logs = [p.communicate(timeout=60)[1] for p in starters]
    assert [p.returncode for p in starters] == [0, 0, 0, 0], logs
    migrated = [log for log in logs if "catalogue schema empty -> " in log]
    assert len(migrated) == 1, logs
    assert revision(db) == [HEAD]
