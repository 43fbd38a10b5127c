"""backupctl restore into databases and onto droplets, against real servers: each target,
each kind, the refusals, the prompts, the checks against recorded facts, the records."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Deployment, mariadb_counts, pg_source, row_counts
from tests.harness.droplet import Droplet
from tests.harness.fleet import toml_value
from tests.harness.mariadb import MariaDBServer
from tests.harness.postgres import PostgresCluster

pytestmark = pytest.mark.e2e


def add_targets(d: Deployment, **targets: dict[str, object]) -> None:
    lines = []
    for name, options in targets.items():
        lines += ["", f"[restore_targets.{name}]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in options.items()]  # type: ignore[arg-type]
    with d.config.open("a") as f:
        f.write("\n".join(lines) + "\n")


def restores(d: Deployment) -> list[tuple[object, ...]]:
    return d.catalogue_rows(
        "SELECT target_kind, target, status, error, checks FROM restores ORDER BY id"
    )


def databases(cluster: PostgresCluster) -> set[str]:
    return set(cluster.psql("SELECT datname FROM pg_database").split())


@pytest.fixture
def pg_deployed(
    deploy: Callable[..., Deployment], pg_cluster: PostgresCluster, shop_db: str
) -> Iterator[Deployment]:
    d = deploy({"maindb": pg_source(pg_cluster, databases=[shop_db])})
    add_targets(
        d,
        staging={
            "kind": "postgresql",
            "socket_dir": str(pg_cluster.socket_dir),
            "port": pg_cluster.port,
            "username": "postgres",
        },
    )
    backup = d.backupctl("backup", "now", "web1/maindb", "--progress", check=True)
    assert "web1/maindb: [1/2] pulling shop ..." in backup.stderr  # progress, step by step
    assert "web1/maindb: [2/2] _globals: " in backup.stderr
    yield d
    for db in ("shop_copy", "orders_only", "shop_back"):
        pg_cluster.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def test_postgres_into_db_streams_checks_and_records(
    pg_deployed: Deployment, pg_cluster: PostgresCluster, shop_db: str
) -> None:
    d = pg_deployed
    dry = d.backupctl(
        "restore",
        "web1/maindb",
        "--into-db",
        "staging",
        "--as",
        "shop_copy",
        "--dry-run",
        check=True,
    )
    assert "would create database shop_copy on restore target staging" in dry.stdout
    assert "skipping maindb.globals-" in dry.stdout and "shop_copy" not in databases(pg_cluster)

    done = d.backupctl(
        "restore", "web1/maindb", "--into-db", "staging", "--as", "shop_copy", check=True
    )
    assert "restored maindb.shop." in done.stdout and "into database shop_copy" in done.stdout
    assert "ok  rows: 3 table(s), 17300 rows as recorded" in done.stdout
    assert row_counts(pg_cluster, "shop_copy") == row_counts(pg_cluster, shop_db)
    [(kind, target, status, error, checks)] = restores(d)
    assert (kind, status, error) == ("database", "succeeded", None)
    assert target == "shop_copy on restore target staging"
    assert [c["check"] for c in json.loads(str(checks))] == ["sha256", "rows", "database"]

    # an existing database: refused, untouched; --force without a terminal: refused too
    pg_cluster.psql("CREATE TABLE marker (x int)", db="shop_copy")
    again = d.backupctl("restore", "web1/maindb", "--into-db", "staging", "--as", "shop_copy")
    assert again.returncode == 9
    assert "database 'shop_copy' already exists on restore target staging" in again.stderr
    forced = d.backupctl(
        "restore", "web1/maindb", "--into-db", "staging", "--as", "shop_copy", "--force"
    )
    assert forced.returncode == 9 and "add --yes" in forced.stderr
    assert "marker" in row_counts(pg_cluster, "shop_copy")
    d.backupctl(
        "restore",
        "web1/maindb",
        "--into-db",
        "staging",
        "--as",
        "shop_copy",
        "--force",
        "--yes",
        check=True,
    )
    assert "marker" not in row_counts(pg_cluster, "shop_copy")


def test_postgres_one_table_under_another_name(
    pg_deployed: Deployment, pg_cluster: PostgresCluster
) -> None:
    out = pg_deployed.backupctl(
        "restore",
        "web1/maindb",
        "--into-db",
        "staging",
        "--as",
        "orders_only",
        "--table",
        "orders",
        check=True,
    )
    assert "ok  rows: 1 table(s), 15000 rows as recorded" in out.stdout
    assert row_counts(pg_cluster, "orders_only") == {"orders": 15000}
    missing = pg_deployed.backupctl(
        "restore", "web1/maindb", "--into-db", "staging", "--as", "x_only", "--table", "nope"
    )
    assert missing.returncode == 2, missing.stderr
    assert "no table 'nope' in this dump (tables: public.customers" in missing.stderr
    assert "x_only" not in databases(pg_cluster)


def test_restore_checks_rows_against_the_recorded_facts(
    pg_deployed: Deployment, pg_cluster: PostgresCluster
) -> None:
    """A dump whose rows differ from what was recorded at backup time fails the restore."""
    d = pg_deployed
    with sqlite3.connect(d.state_dir / "catalogue.db") as db:
        [(aid, facts)] = db.execute("SELECT id, facts FROM archives WHERE item = 'shop'")
        changed = json.loads(facts)
        changed["rows"]["public.orders"] += 1
        db.execute("UPDATE archives SET facts = ? WHERE id = ?", (json.dumps(changed), aid))
    result = d.backupctl("restore", "web1/maindb", "--into-db", "staging", "--as", "shop_copy")
    assert result.returncode == 10, result.stderr
    assert (
        "shop_copy on restore target staging differs from the backup in 1 table(s): "
        "public.orders: 15000 rows, recorded 15001"
    ) in result.stderr
    assert restores(d)[-1][2] == "failed"


def test_postgres_back_onto_the_droplet(
    pg_deployed: Deployment, pg_cluster: PostgresCluster, shop_db: str
) -> None:
    d = pg_deployed
    no_tty = d.backupctl("restore", "web1/maindb", "--to-host", "web1", "--database", "shop_back")
    assert no_tty.returncode == 9 and "needs a confirmation" in no_tty.stderr
    assert "shop_back" not in databases(pg_cluster)
    out = d.backupctl(
        "restore",
        "web1/maindb",
        "--to-host",
        "web1",
        "--database",
        "shop_back",
        "--yes",
        check=True,
    )
    assert "into database shop_back on droplet web1" in out.stdout
    assert row_counts(pg_cluster, "shop_back") == row_counts(pg_cluster, shop_db)
    assert restores(d)[-1][:3] == ("host-db", "shop_back on droplet web1", "succeeded")


def test_mariadb_into_db_whole_and_one_table(
    deploy: Callable[..., Deployment], mariadb_server: MariaDBServer, shop_mariadb: str
) -> None:
    d = deploy(
        {
            "shopdb": {
                "kind": "mariadb",
                "databases": [shop_mariadb],
                "socket": str(mariadb_server.socket),
                "username": "root",
            }
        }
    )
    add_targets(
        d, mlocal={"kind": "mariadb", "socket": str(mariadb_server.socket), "username": "root"}
    )
    d.backupctl("backup", "now", "web1/shopdb", check=True)
    try:
        out = d.backupctl(
            "restore", "web1/shopdb", "--into-db", "mlocal", "--as", "shop_copy", check=True
        )
        assert "ok  rows: 3 table(s), 23001 rows as recorded" in out.stdout
        assert mariadb_counts(mariadb_server, "shop_copy") == mariadb_counts(
            mariadb_server, shop_mariadb
        )
        assert "t_orders" in mariadb_server.sql("SHOW TRIGGERS", db="shop_copy")
        one = d.backupctl(
            "restore",
            "web1/shopdb",
            "--into-db",
            "mlocal",
            "--as",
            "one_table",
            "--table",
            "orders",
            check=True,
        )
        assert "ok  rows: 1 table(s), 20000 rows as recorded" in one.stdout
        assert mariadb_counts(mariadb_server, "one_table") == {"orders": 20000}
        refused = d.backupctl("restore", "web1/shopdb", "--into-db", "mlocal")
        assert refused.returncode == 9 and "database 'shop' already exists" in refused.stderr
        back = d.backupctl(
            "restore",
            "web1/shopdb",
            "--to-host",
            "web1",
            "--database",
            "shop_back",
            "--yes",
            check=True,
        )
        assert "into database shop_back on droplet web1" in back.stdout
        assert mariadb_counts(mariadb_server, "shop_back") == mariadb_counts(
            mariadb_server, shop_mariadb
        )
    finally:
        for db in ("shop_copy", "one_table", "shop_back"):
            mariadb_server.sql(f"DROP DATABASE IF EXISTS {db}")


def test_files_back_onto_a_droplet_path(
    deploy: Callable[..., Deployment], droplet: Droplet
) -> None:
    tree = droplet.root / "push-src"
    (tree / "sub").mkdir(parents=True, exist_ok=True)
    (tree / "a.txt").write_text("alpha\n" * 1000)
    (tree / "sub" / "b.bin").write_bytes(os.urandom(70000))
    dest = droplet.root / "push-dest"
    dest.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", droplet.user, str(tree), str(dest)], check=True)
    d = deploy({"files": {"kind": "directory", "path": str(tree)}})
    d.backupctl("backup", "now", "web1/files", check=True)
    target = str(dest / "restored")
    dry = d.backupctl(
        "restore", "web1/files", "--to-host", "web1", "--path", target, "--dry-run", check=True
    )
    assert "would push files.push-src." in dry.stdout and not Path(target).exists()
    out = d.backupctl(
        "restore", "web1/files", "--to-host", "web1", "--path", target, "--yes", check=True
    )
    assert "restored 2 file(s), 76000 bytes to web1:" in out.stdout
    assert "rsync --checksum found every file identical" in out.stdout
    assert (Path(target) / "sub" / "b.bin").read_bytes() == (tree / "sub" / "b.bin").read_bytes()
    again = d.backupctl("restore", "web1/files", "--to-host", "web1", "--path", target, "--yes")
    assert again.returncode == 9 and "it is not empty (use --force" in again.stderr
    assert not list((d.state_dir / "restore").iterdir())  # staging removed


def test_bad_restore_requests_are_clear_usage_errors(pg_deployed: Deployment) -> None:
    d = pg_deployed
    cases = {
        ("--to", "/tmp/x", "--into-db", "staging"): "exactly one of --to DIR",
        ("--to-host", "web1"): "give exactly one of --path P or --database D",
        ("--into-db", "nowhere"): "unknown restore target 'nowhere' (staging)",
        ("--into-db", "staging", "--archive", "maindb.shop.1999"): "no archive named",
        ("--into-db", "staging", "--at", "2001-01-01 00:00"): "no good backup at or before",
        ("--to", "/tmp/x", "--as", "y"): "--as goes with --into-db",
    }
    for args, message in cases.items():
        result = d.backupctl("restore", "web1/maindb", *args)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


FAILING_PG_RESTORE = """#!/bin/sh
# Stand-in pg_restore: reads a little of the dump, then fails as a real one would.
head -c 1000 > /dev/null
echo "pg_restore: error: could not execute query: ERROR:  out of shared memory" >&2
exit 1
"""


def test_a_failing_restore_tool_is_one_clear_line_and_recorded(
    pg_deployed: Deployment, pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    tool = tmp_path / "pg_restore"
    tool.write_text(FAILING_PG_RESTORE)
    tool.chmod(0o755)
    add_targets(
        pg_deployed,
        broken={
            "kind": "postgresql",
            "pg_restore": str(tool),
            "socket_dir": str(pg_cluster.socket_dir),
            "port": pg_cluster.port,
            "username": "postgres",
        },
    )
    result = pg_deployed.backupctl(
        "restore", "web1/maindb", "--into-db", "broken", "--as", "shop_copy"
    )
    assert result.returncode == 14, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert (
        "pg_restore into shop_copy on restore target broken failed (exit 1); the database "
        "is incomplete: drop it, or restore again with --force: pg_restore: error: could "
        "not execute query: ERROR:  out of shared memory"
    ) in line
    [(kind, _target, status, error, _checks)] = restores(pg_deployed)
    assert (kind, status) == ("database", "failed") and "out of shared memory" in str(error)


def test_a_droplet_path_that_cannot_be_made_is_refused_clearly(
    deploy: Callable[..., Deployment], droplet: Droplet
) -> None:
    tree = droplet.root / "push-src2"
    tree.mkdir(exist_ok=True)
    (tree / "a.txt").write_text("a\n")
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", droplet.user, str(tree)], check=True)
    d = deploy({"files": {"kind": "directory", "path": str(tree)}})
    d.backupctl("backup", "now", "web1/files", check=True)
    result = d.backupctl(
        "restore", "web1/files", "--to-host", "web1", "--path", "/proc/backupd-nope/x", "--yes"
    )
    assert result.returncode == 14, result.stderr
    assert "cannot create web1:/proc/backupd-nope/x" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert restores(d)[-1][2] == "failed"
    assert not list((d.state_dir / "restore").iterdir())  # staging removed
