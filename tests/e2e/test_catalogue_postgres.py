"""The catalogue on a real PostgreSQL (``postgresql+psycopg://``): migrated at start like
SQLite, models and migrations agree there too, and times go in and come out as UTC whatever
the time zone of the values or of the database session."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from backupd.catalogue import Base, Catalogue, RunStatus
from backupd.catalogue.migrate import BASELINE, alembic_config, known_revisions
from backupd.errors import CatalogueError
from tests.harness.postgres import PostgresCluster

pytestmark = pytest.mark.e2e

HEAD = known_revisions()[-1]
DB = "backupd_catalogue"
# far from UTC, and not a whole hour: a time zone mix-up cannot hide
SESSION_TZ = "Asia/Kathmandu"  # +05:45
CHATHAM = timezone(timedelta(hours=12, minutes=45))


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> Iterator[str]:
    pg_cluster.psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    pg_cluster.createdb(DB)
    pg_cluster.psql(f"ALTER DATABASE {DB} SET timezone TO '{SESSION_TZ}'")
    yield (
        f"postgresql+psycopg://{pg_cluster.superuser}@/{DB}"
        f"?host={pg_cluster.socket_dir}&port={pg_cluster.port}"
    )
    pg_cluster.psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


def sql(cluster: PostgresCluster, query: str) -> str:
    return cluster.psql(query, db=DB)


def test_migrated_on_start_and_models_agree(pg_url: str, pg_cluster: PostgresCluster) -> None:
    Catalogue(pg_url).engine.dispose()
    assert sql(pg_cluster, "SELECT version_num FROM alembic_version") == HEAD
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], "models.py and the migrations differ on PostgreSQL"
    Catalogue(pg_url).engine.dispose()  # the next start finds it current
    assert sql(pg_cluster, "SELECT count(*) FROM alembic_version") == "1"


def test_catalogue_calls_round_trip_utc(pg_url: str, pg_cluster: PostgresCluster) -> None:
    cat = Catalogue(pg_url)
    src = cat.ensure_source("web1", "10.0.0.1", "maindb", "postgresql")
    assert cat.ensure_source("web1", "10.0.0.2", "maindb", "postgresql") == src
    run = cat.start_run(src, "manual")
    made = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=CHATHAM)
    cat.add_archive(
        run_id=run,
        source_id=src,
        repository="/store/web1",
        name="maindb.app.1",
        item="app",
        filename="app.pgdump",
        created_at=made,
        nbytes=5_000_000_000,
        sha256="ab" * 32,
        facts={"tables": {"orders": 15000}},
    )
    cat.finish_run(run, RunStatus.SUCCEEDED, nbytes=5_000_000_000)

    [status] = cat.status()
    assert (status.host, status.source, status.last_status) == ("web1", "maindb", "succeeded")
    assert status.last_success is not None and status.last_success.tzinfo is UTC
    assert abs(status.last_success - datetime.now(UTC)) < timedelta(minutes=1)
    assert cat.last_success("web1", "maindb") == status.last_run

    [archive] = cat.live_archives("/store/web1")
    assert archive.created_at == made and archive.created_at.tzinfo is UTC
    assert archive.created_at.isoformat() == "2026-03-03T16:21:07.890123+00:00"
    assert archive.nbytes == 5_000_000_000 and archive.facts == {"tables": {"orders": 15000}}
    # stored as UTC wall time, whatever the session's time zone
    assert sql(pg_cluster, "SELECT created_at FROM archives") == "2026-03-03 16:21:07.890123"
    assert sql(pg_cluster, "SHOW timezone") == SESSION_TZ
    assert sql(pg_cluster, "SELECT status FROM runs") == "succeeded"

    cat.mark_pruned("/store/web1", ["maindb.app.1"])
    assert cat.live_archives("/store/web1") == []
    assert [a.name for a in cat.archives("web1", "maindb")] == ["maindb.app.1"]

    alert = cat.record_alert("backup_failed", "web1/maindb: boom", host="web1", run_id=run)
    [event] = cat.alerts()
    assert (event.id, event.kind, event.run_id) == (alert, "backup_failed", run)
    assert event.created_at.tzinfo is UTC

    later = datetime(2026, 3, 4, 23, 30, tzinfo=CHATHAM)
    queued = cat.enqueue("backup", "web1", "maindb", "retry", 2, later)
    [job] = cat.queued_jobs()
    assert (job.id, job.attempt, job.not_before) == (queued, 2, later)
    assert job.not_before.isoformat() == "2026-03-04T10:45:00+00:00"
    cat.dequeue(queued)
    assert cat.queued_jobs() == []
    cat.engine.dispose()


def test_pre_migration_catalogue_is_stamped(pg_url: str, pg_cluster: PostgresCluster) -> None:
    """A create_all catalogue (revision 0001's schema without the version table) is adopted
    with its rows; no file copy on PostgreSQL: its DDL rolls back on failure."""
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, BASELINE)
    engine.dispose()
    sql(pg_cluster, "DROP TABLE alembic_version")
    sql(pg_cluster, "INSERT INTO hosts (name, address) VALUES ('web1', '10.0.0.1')")
    cat = Catalogue(pg_url)
    assert cat.ensure_source("web1", "10.0.0.1", "maindb", "postgresql") > 0
    cat.engine.dispose()
    assert sql(pg_cluster, "SELECT version_num FROM alembic_version") == HEAD
    assert sql(pg_cluster, "SELECT count(*) FROM hosts") == "1"


def test_newer_revision_is_refused(pg_url: str, pg_cluster: PostgresCluster) -> None:
    Catalogue(pg_url).engine.dispose()
    sql(pg_cluster, "UPDATE alembic_version SET version_num = '0999'")
    with pytest.raises(CatalogueError, match="schema revision 0999, newer than this backupd"):
        Catalogue(pg_url)
    assert sql(pg_cluster, "SELECT version_num FROM alembic_version") == "0999"


STARTER = """
import logging, sys, time
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
from backupd.catalogue import Catalogue
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all start together
Catalogue(sys.argv[1]).engine.dispose()
"""


def test_concurrent_starters_migrate_once(pg_url: str, pg_cluster: PostgresCluster) -> None:
    start = str(time.time() + 1.5)
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, pg_url, start], stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    logs = [p.communicate(timeout=60)[1] for p in starters]
    assert [p.returncode for p in starters] == [0, 0, 0, 0], logs
    assert len([log for log in logs if "catalogue schema empty -> " in log]) == 1, logs
    assert sql(pg_cluster, "SELECT version_num FROM alembic_version") == HEAD
