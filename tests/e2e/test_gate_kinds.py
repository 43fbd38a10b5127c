"""Every source kind through the gate on a real sshd droplet (decision 0022): SQLite,
PostgreSQL with its snapshot session, MariaDB, a database in a container, directories and
Docker volumes through rrsync; with the least-privileged roles `backupctl host setup`
creates, and the same figures as without the gate."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from backupd.remote import droplet_gate as gate
from backupd.remote.ssh import remote_command_line
from jobs.pg_common import psql_argv, sql_literal
from jobs.registry import load_config, registry
from tests.e2e.conftest import mariadb_counts, pg_source, row_counts
from tests.e2e.gated import Gated, backed_up, deploy_gated, pwn
from tests.e2e.test_sources import STAND_IN
from tests.e2e.test_sqlite import make_db
from tests.e2e.test_trees import DOCKER, build_tree, snapshot
from tests.harness.mariadb import MariaDBServer
from tests.harness.postgres import PostgresCluster, postgres_bindir

pytestmark = pytest.mark.e2e


def test_a_sqlite_source_backs_up_and_restores_through_the_gate(
    gated: Gated, tmp_path: Path
) -> None:
    """The allowlist generated from the config lets the whole backup through: the file
    looked for, the online copy streamed; the restore matches the droplet's rows."""
    path = make_db(gated.droplet, "gated-app.db", "WAL")
    d = deploy_gated(gated, tmp_path, {"app": {"kind": "sqlite", "path": str(path)}})
    try:
        d.backupctl("backup", "now", "gated/app", check=True)  # (its syslog: the droplet's)
        out = tmp_path / "restored"
        [line] = d.backupctl(
            "restore", "gated/app", "--to", str(out), check=True
        ).stdout.splitlines()
        restored = sqlite3.connect(Path(line.split()[0]))
        assert restored.execute("SELECT count(*) FROM events").fetchone() == (20000,)
        # what the config does not name is still refused on the same key
        other = remote_command_line(("test", "-f", "/etc/shadow"))
        assert gated.ssh(other).returncode == gate.EXIT_REFUSED
    finally:
        gated.install(gated.allow, "allow")
        subprocess.run(["rm", "-rf", str(path.parent)], check=False)


READER = "backupd_reader"  # the least-privilege role of docs/droplet-setup.md
ODD_SCHEMA = '"Odd ""x"""'
ODD_TABLE = ODD_SCHEMA + '."a\nb"'


@pytest.fixture
def reader(pg_cluster: PostgresCluster, shop_db: str) -> Iterator[str]:
    """The shop database, with an odd schema and table name and a row-level security
    policy, and a login role that may read all data and nothing else."""
    pg_cluster.psql(f"DROP ROLE IF EXISTS {READER}")
    setup = registry()["postgresql"].droplet_setup(pg_options(pg_cluster), "maindb", READER)
    pg_cluster.psql(setup_sql(setup))  # as `backupctl host setup` creates it
    pg_cluster.psql(
        f"CREATE SCHEMA {ODD_SCHEMA}; CREATE TABLE {ODD_TABLE} (id int);"
        f"INSERT INTO {ODD_TABLE} SELECT generate_series(1, 42);"
        "ALTER TABLE notes ENABLE ROW LEVEL SECURITY; ALTER TABLE notes FORCE ROW LEVEL SECURITY;"
        "CREATE POLICY nobody ON notes USING (false);",
        db=shop_db,
    )
    try:
        yield shop_db
    finally:
        pg_cluster.psql(f"DROP DATABASE IF EXISTS {shop_db} WITH (FORCE)")
        pg_cluster.psql(f"DROP ROLE {READER}")


def test_a_postgres_source_backs_up_drills_and_restores_through_the_gate(
    gated: Gated, tmp_path: Path, pg_cluster: PostgresCluster, reader: str
) -> None:
    """pg_read_all_data, the snapshot session's statements through the gate's filter,
    the dump in that snapshot, the globals without password hashes: the same rows as
    the droplet's, counted in the same snapshot; the drill restores them."""
    tools = {t: str(postgres_bindir() / t) for t in ("psql", "pg_dump", "pg_dumpall")}
    source = pg_source(
        pg_cluster, username=READER, databases=[reader], role_passwords=False, **tools
    )
    d = deploy_gated(gated, tmp_path, {"maindb": source})
    try:
        ran = backed_up(gated, d, "gated/maindb")
        for request in ("snapshot and facts", "dump a database", "dump the globals"):
            assert any(f"ran maindb: {request}" in line for line in ran), ran
        [(facts,)] = d.catalogue_rows("SELECT facts FROM archives WHERE item = 'shop'")
        rows = json.loads(str(facts))["rows"]
        expected = {f"public.{t}": n for t, n in row_counts(pg_cluster, reader).items()}
        assert rows == {**expected, ODD_TABLE: 42}
        assert expected["public.notes"] == 300  # BYPASSRLS: a policy hides nothing
        drilled = d.backupctl("drill", "gated/maindb", check=True)
        assert "Traceback" not in drilled.stderr
        out = tmp_path / "restored"
        d.backupctl("restore", "gated/maindb", "--item", "_globals", "--to", str(out), check=True)
        [globals_sql] = out.rglob("globals.sql")
        said = globals_sql.read_text()
        assert f"CREATE ROLE {READER}" in said and "PASSWORD" not in said
        # the session request, with SQL of the backup host's own: refused, nothing ran
        options = load_config(d.config).hosts["gated"].sources["maindb"].options
        session = remote_command_line(psql_argv(options, reader))  # type: ignore[arg-type]
        copy = f"COPY (SELECT 1) TO PROGRAM {sql_literal(pwn(gated.canary))};\n"
        allowed = json.loads((gated.droplet.root / "allow-config.json").read_text())
        [begin] = [m for r in allowed["requests"] for m in r.get("session", {}).get("first", [])]
        done = gated.ssh(session, stdin=(begin + copy).encode())
        assert done.returncode == gate.EXIT_REFUSED, done.stderr
        assert b'not a statement the allowlist holds: b"COPY' in done.stderr
        assert not gated.canary.exists()
        assert any("refused" in line for line in gated.logged())
    finally:
        gated.install(gated.allow, "allow")


MARIA_READER = "backupd_reader"


def setup_sql(lines: Sequence[str]) -> str:
    """The SQL of a kind's droplet_setup lines (its heredoc's body)."""
    start = next(i for i, line in enumerate(lines) if "<<'BACKUPD_SQL'" in line)
    return "\n".join(lines[start + 1 : lines.index("BACKUPD_SQL")])


def pg_options(cluster: PostgresCluster) -> object:
    return registry()["postgresql"].options_model.model_validate(
        {k: v for k, v in pg_source(cluster).items() if k not in ("kind", "username")}
    )


def test_a_mariadb_source_backs_up_drills_and_restores_through_the_gate(
    gated: Gated, tmp_path: Path, mariadb_server: MariaDBServer, shop_mariadb: str
) -> None:
    """A login with read and lock grants only and its password in an option file on the
    droplet: the dump, the server's row counts in its snapshot, the drill."""
    account = f"'{MARIA_READER}'@'localhost'"
    mariadb_server.sql(  # what needs its own grant to be dumped: a routine, a view
        "CREATE PROCEDURE newest() SELECT max(id) FROM orders;"
        "CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;",
        db=shop_mariadb,
    )
    source = {
        "kind": "mariadb",
        "databases": [shop_mariadb],
        "socket": str(mariadb_server.socket),
        "username": MARIA_READER,
        "defaults_file": str(gated.droplet.root / "backupd-mariadb.cnf"),
    }
    # the grants `backupctl host setup` gives (a user with a password: created by hand)
    options = registry()["mariadb"].options_model.model_validate(
        {k: v for k, v in source.items() if k != "kind"}
    )
    grants = setup_sql(registry()["mariadb"].droplet_setup(options, "shopdb", "other-login"))
    assert "CREATE USER" not in grants and "mysql.proc" in grants
    mariadb_server.sql(f"CREATE OR REPLACE USER {account} IDENTIFIED BY 'reader-secret';{grants}")
    option_file = gated.droplet.root / "backupd-mariadb.cnf"
    option_file.write_text("[client]\npassword=reader-secret\n")
    option_file.chmod(0o600)
    shutil.chown(option_file, gated.droplet.user)  # the droplet's login reads it, alone
    d = deploy_gated(gated, tmp_path, {"shopdb": source})
    try:
        ran = backed_up(gated, d, "gated/shopdb")
        assert any(f"ran shopdb: dump {shop_mariadb}" in line for line in ran), ran
        [(status, error)] = d.catalogue_rows("SELECT status, error FROM runs")
        assert (status, error) == ("succeeded", None)
        [(facts,)] = d.catalogue_rows("SELECT facts FROM archives")
        tables = mariadb_counts(mariadb_server, shop_mariadb)
        del tables["big_orders"]  # a view: its rows are its tables'
        assert json.loads(str(facts))["rows"] == tables
        d.backupctl("drill", "gated/shopdb", check=True)
        out = tmp_path / "restored"
        d.backupctl("restore", "gated/shopdb", "--to", str(out), check=True)
        [dump] = out.rglob("*.sql")
        said = dump.read_text(errors="replace")
        assert "PROCEDURE `newest`" in said
        assert "VIEW `big_orders`" in said
    finally:
        gated.install(gated.allow, "allow")
        mariadb_server.sql(f"DROP USER IF EXISTS {account}")


def test_trees_back_up_and_restore_through_rrsync(gated: Gated, tmp_path: Path) -> None:
    """A directory (odd names, a symlink, a private file) and a Docker volume (the gate
    asks the stand-in Docker where it is) pulled with ``rrsync -ro``: the same files as
    without the gate; the check for unreadable files passes the gate too."""
    tree = build_tree(gated.droplet)
    docker = gated.droplet.bin_dir / "docker"
    docker.write_text(DOCKER % tree)
    docker.chmod(0o755)
    sources: dict[str, dict[str, object]] = {
        "uploads": {"kind": "directory", "path": str(tree)},
        "data": {"kind": "volume", "volume": "uploads_data"},
    }
    d = deploy_gated(gated, tmp_path, sources, gate=True)
    try:
        ran = backed_up(gated, d, "gated")
        # the two are one tree here: the gate names the first of its requests for it
        assert sum(": read the tree for " in line for line in ran) == 2, ran
        assert sum(": files the login may not read for " in line for line in ran) == 2, ran
        assert any("ran data: where the volume is" in line for line in ran), ran
        for name in ("uploads", "data"):
            out = tmp_path / f"restored-{name}"
            d.backupctl("restore", f"gated/{name}", "--to", str(out), check=True)
            assert snapshot(out) == snapshot(tree)
    finally:
        docker.unlink()
        gated.install(gated.allow, "allow")
        subprocess.run(["rm", "-rf", str(tree.parent)], check=True)


def test_a_database_in_a_container_backs_up_through_the_gate(
    gated: Gated, tmp_path: Path, pg_cluster: PostgresCluster, reader: str
) -> None:
    """`docker exec -i CONTAINER` (the stand-in Docker) before each tool: the gate holds
    the container as a literal; another container or another command in it is refused."""
    docker = gated.droplet.bin_dir / "docker"
    docker.write_text(STAND_IN)
    docker.chmod(0o755)
    calls = gated.droplet.bin_dir / "docker-calls.log"
    calls.write_text("")
    calls.chmod(0o666)
    tools = {t: str(postgres_bindir() / t) for t in ("psql", "pg_dump", "pg_dumpall")}
    source = pg_source(
        pg_cluster,
        username=READER,
        databases=[reader],
        role_passwords=False,
        container="pg-container",
        **tools,
    )
    d = deploy_gated(gated, tmp_path, {"maindb": source})
    try:
        ran = backed_up(gated, d, "gated/maindb")
        assert any("ran maindb: snapshot and facts" in line for line in ran), ran
        said = calls.read_text()
        assert "pg_dump" in said and "psql" in said and "pg_dumpall" in said
        [(facts,)] = d.catalogue_rows("SELECT facts FROM archives WHERE item = 'shop'")
        expected = {f"public.{t}": n for t, n in row_counts(pg_cluster, reader).items()}
        assert json.loads(str(facts))["rows"] == {**expected, ODD_TABLE: 42}
        options = load_config(d.config).hosts["gated"].sources["maindb"].options
        [stream, _] = registry()["postgresql"].plan(options, None)  # type: ignore[arg-type]
        dump = list(stream.argv)  # type: ignore[union-attr]  # docker exec -i pg-container ...
        assert remote_command_line(dump)  # as backupd sends it, it would run
        for hostile in (
            [*dump[:3], "other-container", *dump[4:]],
            [*dump[:4], "sh", "-c", pwn(gated.canary)],
            [*dump[:3], "--privileged", *dump[3:]],
        ):
            done = gated.ssh(remote_command_line(hostile))
            assert done.returncode == gate.EXIT_REFUSED, (hostile, done.stderr)
        assert not gated.canary.exists()
        assert "other-container" not in calls.read_text()
    finally:
        gated.install(gated.allow, "allow")
        docker.unlink()
        calls.unlink()
