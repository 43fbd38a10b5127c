"""Fixtures for end-to-end tests: a backupd config over the real harness servers,
and helpers that drive the real ``backupctl`` / ``backupd`` executables."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.harness.daemon import Fleet
from tests.harness.droplet import Droplet
from tests.harness.fleet import HostSpec, write_fleet_config, write_passphrase
from tests.harness.mariadb import MariaDBServer
from tests.harness.postgres import PostgresCluster
from tests.json_contract import conforming

if TYPE_CHECKING:
    from tests.e2e.gated import Gated

BIN = Path(sys.executable).parent


@dataclass
class Deployment:
    """A backupd installation in a temp dir: config, state, store."""

    root: Path
    config: Path
    state_dir: Path
    store: Path
    passphrase_file: Path

    def backupctl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return run_tool("backupctl", "--config", str(self.config), *args, check=check)

    def backupd(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return run_tool("backupd", "--config", str(self.config), *args, check=check)

    def borg(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "BORG_PASSCOMMAND": f"cat {self.passphrase_file}",
            "BORG_BASE_DIR": str(self.root / "borg-test"),
        }
        return subprocess.run(
            [str(BIN / "borg"), *args], capture_output=True, text=True, env=env, check=True, cwd=cwd
        )

    def archives(self, host: str) -> list[str]:
        repo = self.store / host
        if not (repo / "config").exists():
            return []
        out = self.borg("list", "--json", "--consider-checkpoints", str(repo)).stdout
        return [a["name"] for a in json.loads(out)["archives"]]

    def status(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = self.status_json()["sources"]
        return rows

    def status_json(self) -> dict[str, Any]:
        """``status --json``, checked against its schema."""
        result = self.backupctl("status", "--json")  # exits 1 while any source is stale
        assert result.returncode in (0, 1), result.stderr
        document: dict[str, Any] = conforming("status", result.stdout)
        return document

    def catalogue_rows(self, sql: str) -> list[tuple[object, ...]]:
        import sqlite3

        with sqlite3.connect(self.state_dir / "catalogue.db") as db:
            return db.execute(sql).fetchall()


def run_tool(name: str, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN / name), *args], capture_output=True, text=True, timeout=600, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{name} {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def small_sqlite(droplet: Droplet, directory: str) -> Path:
    """A one-table SQLite database on the droplet, in a directory of its own that the
    droplet's login owns (it must be able to read and lock it)."""
    db = droplet.root / directory / "app.db"
    db.parent.mkdir(exist_ok=True)
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE IF NOT EXISTS t (x)")
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", droplet.user, str(db.parent)], check=True)
    return db


def pg_source(cluster: PostgresCluster, **extra: object) -> dict[str, object]:
    return {
        "kind": "postgresql",
        "socket_dir": str(cluster.socket_dir),
        "port": cluster.port,
        "username": cluster.superuser,
        **extra,
    }


@pytest.fixture
def deploy(tmp_path: Path, droplet: Droplet) -> Callable[..., Deployment]:
    """Build a Deployment for the session droplet with the given sources."""

    def make(sources: dict[str, dict[str, object]], host_key: str | None = None) -> Deployment:
        return deployment(tmp_path / "backupd", HostSpec("web1", droplet, sources, host_key))  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="module")
def module_deploy(
    tmp_path_factory: pytest.TempPathFactory, droplet: Droplet
) -> Callable[..., Deployment]:
    """``deploy`` for a deployment a module's tests share: made once, for tests that only
    read it or add what the others do not look at."""
    root = tmp_path_factory.mktemp("module")

    def make(sources: dict[str, dict[str, object]]) -> Deployment:
        return deployment(root / "backupd", HostSpec("web1", droplet, sources))  # type: ignore[arg-type]

    return make


def deployment(root: Path, host: HostSpec) -> Deployment:
    """A config, state and store under ``root`` for the one ``host``."""
    root.mkdir(exist_ok=True)
    passphrase = write_passphrase(root / "passphrase")
    config = write_fleet_config(
        root / "backupd.toml",
        state_dir=root / "state",
        store=root / "store",
        passphrase_file=passphrase,
        hosts=[host],
    )
    return Deployment(root, config, root / "state", root / "store", passphrase)


@pytest.fixture
def shop_db(pg_cluster: PostgresCluster) -> Iterator[str]:
    """A database with real rows in a few tables, dropped afterwards."""
    name = "shop"
    pg_cluster.psql(f"DROP DATABASE IF EXISTS {name}")
    pg_cluster.createdb(name)
    pg_cluster.psql(
        """
        CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text);
        CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers,
                             total numeric(10,2), placed timestamptz DEFAULT now());
        CREATE TABLE notes (id serial PRIMARY KEY, body text);
        INSERT INTO customers (name, email)
          SELECT 'customer ' || g, 'c' || g || '@example.org' FROM generate_series(1, 2000) g;
        INSERT INTO orders (customer_id, total)
          SELECT 1 + g % 2000, (g % 997) / 7.0 FROM generate_series(1, 15000) g;
        INSERT INTO notes (body) SELECT md5(g::text) FROM generate_series(1, 300) g;
        """,
        db=name,
    )
    yield name
    pg_cluster.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def row_counts(cluster: PostgresCluster, db: str) -> dict[str, int]:
    tables = cluster.psql(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", db=db
    ).split()
    return {t: int(cluster.psql(f"SELECT count(*) FROM {t}", db=db)) for t in tables}


TRICKY = 'it\'s a ),( trap; \\\\ back\\slash "quoted" and\nnew line'


@pytest.fixture
def shop_mariadb(mariadb_server: MariaDBServer) -> Iterator[str]:
    """A MariaDB database with rows, an odd table name, a tricky string and a trigger."""
    mariadb_server.sql("DROP DATABASE IF EXISTS shop; CREATE DATABASE shop")
    mariadb_server.sql(
        "CREATE TABLE customers (id INT PRIMARY KEY AUTO_INCREMENT, name TEXT, photo BLOB);"
        "CREATE TABLE orders (id INT PRIMARY KEY AUTO_INCREMENT, customer_id INT,"
        " total DECIMAL(10,2));"
        "CREATE TABLE `odd name` (id INT PRIMARY KEY);"
        "INSERT INTO customers (name, photo) SELECT CONCAT('customer ', seq), UNHEX('00FF27')"
        " FROM seq_1_to_3000;"
        f"INSERT INTO customers (name) VALUES ({_sql_str(TRICKY)});"
        "INSERT INTO orders (customer_id, total) SELECT seq % 3000, seq / 7 FROM seq_1_to_20000;"
        "CREATE TRIGGER t_orders BEFORE INSERT ON orders FOR EACH ROW SET NEW.total = NEW.total;",
        db="shop",
    )
    yield "shop"
    mariadb_server.sql("DROP DATABASE IF EXISTS shop; DROP DATABASE IF EXISTS shop_restored")


def _sql_str(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def mariadb_counts(server: MariaDBServer, db: str) -> dict[str, int]:
    tables = server.sql("SHOW TABLES", db=db).splitlines()
    return {t: int(server.sql(f"SELECT count(*) FROM `{t}`", db=db)) for t in tables}


@pytest.fixture
def fleet(servers_dir: Path, droplet: Droplet) -> Iterator[Fleet]:
    root = Path(tempfile.mkdtemp(prefix="daemon-", dir=servers_dir))
    root.chmod(0o755)  # the droplet's user reads the databases and the gate here
    f = Fleet(root, droplet)
    yield f
    f.gate.release()
    for d in f.daemons:
        d.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def bare_cluster(servers_dir: Path) -> Iterator[PostgresCluster]:
    """A second PostgreSQL server without the source's roles ("another server")."""
    from tests.harness.postgres import start_postgres

    cluster = start_postgres(servers_dir)
    yield cluster
    cluster.stop()


@pytest.fixture
def made(pg_cluster: PostgresCluster, bare_cluster: PostgresCluster) -> Iterator[Any]:
    """The databases and roles a PostgreSQL field test makes, dropped afterwards."""
    from tests.e2e.field_pg import Made  # it imports this module

    m = Made(pg_cluster, bare_cluster)
    yield m
    m.drop()


@pytest.fixture(scope="module")
def gated(servers_dir: Path) -> Iterator[Gated]:
    """A droplet behind backupd's gate, one per test module (tests/e2e/gated.py)."""
    from tests.e2e.gated import start_gated  # it uses this module's Deployment

    yield from start_gated(servers_dir)
