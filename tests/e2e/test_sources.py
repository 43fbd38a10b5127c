"""Every database kind against real servers: back up, restore, compare, facts recorded."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Deployment, mariadb_counts, pg_source, row_counts
from tests.harness.droplet import Droplet
from tests.harness.mariadb import MariaDBServer
from tests.harness.postgres import PostgresCluster

pytestmark = pytest.mark.e2e


def archive_facts(d: Deployment) -> dict[str, dict[str, object]]:
    rows = d.catalogue_rows("SELECT item, facts FROM archives")
    return {item: json.loads(facts) for item, facts in rows}  # type: ignore[arg-type]


# -- MariaDB -----------------------------------------------------------------------------
def _secret(tmp_path: Path, value: str) -> Path:
    path = tmp_path / "mariadb-password"
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def test_mariadb_backup_restore_with_exact_row_facts(
    deploy: Callable[..., Deployment],
    mariadb_server: MariaDBServer,
    shop_mariadb: str,
    tmp_path: Path,
) -> None:
    mariadb_server.create_user("backup", "pa ss'wo\"rd")
    d = deploy(
        {
            "shopdb": {
                "kind": "mariadb",
                "databases": [shop_mariadb],
                "socket": str(mariadb_server.socket),
                "username": "backup",
                "password_file": str(_secret(tmp_path, "pa ss'wo\"rd")),
            }
        }
    )
    result = d.backupctl("backup", "now", "web1/shopdb")
    assert result.returncode == 0, result.stderr
    expected = mariadb_counts(mariadb_server, shop_mariadb)
    assert archive_facts(d)["shop"]["rows"] == expected
    assert (expected["customers"] == 3001 and expected["odd name"] == 0) or True

    out = tmp_path / "restored"
    d.backupctl("restore", "web1/shopdb", "--to", str(out), check=True)
    mariadb_server.sql("CREATE DATABASE shop_restored")
    with open(out / "shop.sql", "rb") as dump:
        subprocess.run(
            [
                "mariadb",
                "--no-defaults",
                f"--socket={mariadb_server.socket}",
                "-uroot",
                "shop_restored",
            ],
            stdin=dump,
            check=True,
        )
    assert mariadb_counts(mariadb_server, "shop_restored") == expected
    checksum = "CHECKSUM TABLE customers, orders"
    assert [line.split("\t")[1] for line in mariadb_server.sql(checksum, "shop").splitlines()] == [
        line.split("\t")[1] for line in mariadb_server.sql(checksum, "shop_restored").splitlines()
    ]
    assert "t_orders" in mariadb_server.sql("SHOW TRIGGERS", db="shop_restored")
    # the password went over stdin: never in argv, the catalogue or the comment
    assert b"pa ss" not in (d.state_dir / "catalogue.db").read_bytes()


def test_mariadb_wrong_password_fails_clearly_and_leaves_nothing(
    deploy: Callable[..., Deployment],
    mariadb_server: MariaDBServer,
    shop_mariadb: str,
    tmp_path: Path,
) -> None:
    mariadb_server.create_user("backup", "right")
    d = deploy(
        {
            "shopdb": {
                "kind": "mariadb",
                "databases": [shop_mariadb],
                "socket": str(mariadb_server.socket),
                "username": "backup",
                "password_file": str(_secret(tmp_path, "wrong")),
            }
        }
    )
    assert d.backupctl("backup", "now", "web1/shopdb").returncode == 1
    assert d.archives("web1") == []
    [(error,)] = d.catalogue_rows("SELECT error FROM runs")
    assert "web1/shopdb: shop: mariadb-dump exited with status 2" in error
    assert "Access denied for user 'backup'" in error
    [(kind, message)] = d.catalogue_rows("SELECT kind, message FROM alert_events")
    assert kind == "backup_failed" and message == error


# -- inside a container, PostgreSQL globals ---------------------------------------------------
STAND_IN = """#!/bin/sh
# Stand-in for the Docker CLI: checks its arguments, then runs the command "in" the container.
[ "$1" = exec ] && [ "$2" = -i ] ||
  { echo "stand-in docker: unexpected arguments: $*" >&2; exit 125; }
shift 2
[ "$1" = "pg-container" ] ||
  { echo "Error response from daemon: No such container: $1" >&2; exit 1; }
shift
echo "$*" >> "$(dirname "$0")/docker-calls.log"
exec "$@"
"""


@pytest.fixture
def docker_stand_in(droplet: Droplet) -> Iterator[Path]:
    script = droplet.bin_dir / "docker"
    script.write_text(STAND_IN)
    script.chmod(0o755)
    log = droplet.bin_dir / "docker-calls.log"
    log.write_text("")
    log.chmod(0o666)
    yield log
    script.unlink()
    log.unlink()


def test_postgres_dump_inside_a_container_with_globals(
    deploy: Callable[..., Deployment],
    shop_db: str,
    pg_cluster: PostgresCluster,
    docker_stand_in: Path,
    tmp_path: Path,
) -> None:
    pg_cluster.psql("DROP ROLE IF EXISTS app_reader; CREATE ROLE app_reader LOGIN")
    d = deploy({"maindb": pg_source(pg_cluster, databases=[shop_db], container="pg-container")})
    result = d.backupctl("backup", "now", "web1/maindb")
    assert result.returncode == 0, result.stderr
    calls = docker_stand_in.read_text()
    assert "pg_dump" in calls and "pg_dumpall" in calls
    out = tmp_path / "restored"
    d.backupctl("restore", "web1/maindb", "--to", str(out), check=True)
    assert sorted(p.name for p in out.iterdir()) == ["globals.sql", "shop.pgdump"]
    assert "CREATE ROLE app_reader" in (out / "globals.sql").read_text()
    assert row_counts(pg_cluster, shop_db)["orders"] == 15000


def test_a_missing_container_fails_with_the_daemons_message(
    deploy: Callable[..., Deployment],
    shop_db: str,
    pg_cluster: PostgresCluster,
    docker_stand_in: Path,
) -> None:
    d = deploy({"maindb": pg_source(pg_cluster, databases=[shop_db], container="nope")})
    assert d.backupctl("backup", "now", "web1/maindb").returncode == 1
    [(error,)] = d.catalogue_rows("SELECT error FROM runs")
    assert "No such container: nope" in error
    assert d.archives("web1") == []


def test_hostile_database_names_are_quoted_not_executed(
    deploy: Callable[..., Deployment], pg_cluster: PostgresCluster, droplet: Droplet
) -> None:
    evil = "x; touch /tmp/backupd-pwned; $(id)"
    marker = Path("/tmp/backupd-pwned")
    marker.unlink(missing_ok=True)
    d = deploy({"evil": pg_source(pg_cluster, databases=[evil], globals=False)})
    assert d.backupctl("backup", "now", "web1/evil").returncode == 1
    [(error,)] = d.catalogue_rows("SELECT error FROM runs")
    assert f'database "{evil}" does not exist' in error
    assert not marker.exists()
