"""Per-item outcomes and per-item truth (issue 12, cases 8 and 9): one vanished database
does not sink the night; an item that fails does not hide the items that were archived;
status and restore --item speak per item."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Deployment, pg_source
from tests.e2e.test_restore_targets import add_targets
from tests.harness.daemon import wait_for
from tests.harness.postgres import PostgresCluster
from tests.harness.week import Gate

pytestmark = pytest.mark.e2e
DATABASES = ("it_a", "it_b", "it_c")


@pytest.fixture
def three(pg_cluster: PostgresCluster) -> Iterator[tuple[str, ...]]:
    for db in DATABASES:
        pg_cluster.psql(f"DROP DATABASE IF EXISTS {db}")
        pg_cluster.createdb(db)
        pg_cluster.psql(
            "CREATE TABLE t (v text); INSERT INTO t SELECT repeat(md5(g::text), 40)"
            " FROM generate_series(1, 2000) g",
            db=db,
        )
    yield DATABASES
    for db in DATABASES:
        pg_cluster.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


@pytest.fixture
def gate(servers_dir: Path) -> Iterator[Gate]:
    root = Path(tempfile.mkdtemp(prefix="gate-", dir=servers_dir))
    root.chmod(0o755)  # the droplet's login runs the stand-in pg_dump from here
    g = Gate(root)
    yield g
    g.release()
    shutil.rmtree(root, ignore_errors=True)


def items_of(d: Deployment, source: str) -> dict[str, str]:
    [row] = [r for r in d.status() if r["source"] == source]
    return {str(i["item"]): str(i["last_archive"]) for i in row["items"]}  # type: ignore[attr-defined]


def test_a_database_dropped_mid_run_is_a_warning_and_the_others_are_kept(
    deploy: Callable[..., Deployment],
    pg_cluster: PostgresCluster,
    three: tuple[str, ...],
    gate: Gate,
    tmp_path: Path,
) -> None:
    d = deploy({"db": pg_source(pg_cluster, databases=list(three), pg_dump=str(gate.script))})
    gate.hold()
    done: list[subprocess.CompletedProcess[str]] = []
    runner = threading.Thread(target=lambda: done.append(d.backupctl("backup", "now", "web1/db")))
    runner.start()
    try:
        wait_for("it_a mid-dump", gate.midway, timeout=120)
        pg_cluster.psql("DROP DATABASE it_b WITH (FORCE)")  # while the first is being dumped
    finally:
        gate.release()
        runner.join(timeout=300)
    [result] = done
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("web1/db: warning, 3 archive(s)")
    [(status, error)] = d.catalogue_rows("SELECT status, error FROM runs")
    assert status == "warning"
    assert error == (
        "web1/db: it_b: gone from the droplet since the night's plan (dropped or "
        "removed): not in this backup"
    )
    [(kind, message)] = d.catalogue_rows("SELECT kind, message FROM alert_events")
    assert kind == "backup_warning" and message == error
    assert sorted(items_of(d, "db")) == ["_globals", "it_a", "it_c"]
    out = tmp_path / "restored"
    d.backupctl("restore", "web1/db", "--to", str(out), check=True)  # a good set: a, c, globals
    assert sorted(p.name for p in out.iterdir()) == ["globals.sql", "it_a.pgdump", "it_c.pgdump"]


def test_an_item_that_fails_keeps_the_others_as_restore_points(
    deploy: Callable[..., Deployment],
    pg_cluster: PostgresCluster,
    three: tuple[str, ...],
    tmp_path: Path,
) -> None:
    """Another member: it_b is not gone but its dump is refused (too small): the run fails
    naming it, the other items are archived and restorable one by one, and status says
    where each item's newest restore point is."""
    pg_cluster.psql("DROP TABLE t", db="it_b")  # an empty database: a few KiB of dump
    d = deploy({"db": pg_source(pg_cluster, databases=list(three), min_bytes="64KiB")})
    result = d.backupctl("backup", "now", "web1/db")
    assert result.returncode == 1
    [(status, error)] = d.catalogue_rows("SELECT status, error FROM runs")
    assert status == "failed"
    assert error.startswith(
        "web1/db: 1 item(s) not backed up (archived: it_a, it_c, _globals): it_b: pg_dump produced "
    )
    assert "below min_bytes=65536" in error
    assert sorted(items_of(d, "db")) == ["_globals", "it_a", "it_c"]
    [row] = [r for r in d.status() if r["source"] == "db"]
    assert row["last_success"] is None and row["last_status"] == "failed"
    text = d.backupctl("status").stdout
    assert "newest restore point per item: _globals " in text and "it_a " in text

    # --item takes that item's newest archive, whatever the rest of the night did
    add_targets(
        d,
        scratch={
            "kind": "postgresql",
            "socket_dir": str(pg_cluster.socket_dir),
            "port": pg_cluster.port,
            "username": "postgres",
        },
    )
    d.backupctl(
        "restore",
        "web1/db",
        "--into-db",
        "scratch",
        "--item",
        "it_a",
        "--as",
        "it_a_back",
        "--yes",
        check=True,
    )
    try:
        assert pg_cluster.psql("SELECT count(*) FROM t", db="it_a_back") == "2000"
    finally:
        pg_cluster.psql("DROP DATABASE IF EXISTS it_a_back WITH (FORCE)")
    # while a whole-set restore has no complete night to take
    refused = d.backupctl("restore", "web1/db", "--to", str(tmp_path / "all"))
    assert refused.returncode == 8 and "no successful backup recorded yet" in refused.stderr
