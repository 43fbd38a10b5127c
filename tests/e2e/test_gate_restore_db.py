"""A PostgreSQL database restored onto a gated droplet with the operator's restore key
(decision 0022): as the restore role `backupctl host setup` creates (CREATEDB, a member
of the databases' owners, no superuser), with the database's owner given back, its rows
checked; refused before anything changes when that role cannot act as an owner; the
restore key's psql takes no SQL but backupd's."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from backupd.remote import droplet_gate as gate
from backupd.remote.ssh import remote_command_line
from jobs.base import DatabaseRestore
from jobs.mariadb_restore import MariaDBRestore
from jobs.pg_common import psql_argv
from jobs.pg_restore import PostgresRestore
from jobs.registry import load_config, registry
from tests.e2e.conftest import Deployment, mariadb_counts, pg_source
from tests.e2e.gated import Gated, backed_up, deploy_gated, new_key, pwn
from tests.e2e.test_gate_kinds import MARIA_READER, READER, pg_options, setup_sql
from tests.e2e.test_gate_setup import install_restore_key
from tests.harness.mariadb import MariaDBServer
from tests.harness.postgres import PostgresCluster, postgres_bindir

pytestmark = pytest.mark.e2e
OWNER = "gshop owner"  # the application's role: owns the database and its tables
RESTORER = "gated_restorer"
DB = "gshop"


def run_sql(cluster: PostgresCluster, sql: str, db: str = "postgres") -> str:
    """SQL on psql's stdin as the cluster's superuser (host setup's heredocs hold
    meta-commands such as \\gexec, which -c does not take with SQL)."""
    argv = [str(postgres_bindir() / "psql"), "-XAtq", "-v", "ON_ERROR_STOP=1"]
    argv += ["-h", str(cluster.socket_dir), "-p", str(cluster.port), "-U", cluster.superuser]
    done = subprocess.run(
        [*argv, "-d", db], input=sql.encode(), capture_output=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


@pytest.fixture
def shop(pg_cluster: PostgresCluster) -> Iterator[str]:
    """A database owned by its application's role, with the reader and the restore role
    made by host setup's own SQL."""
    drop = "".join(f"DROP DATABASE IF EXISTS {d} WITH (FORCE);" for d in (f"{DB}_copy", DB))
    run_sql(pg_cluster, drop + f'DROP ROLE IF EXISTS {READER}, {RESTORER}, "{OWNER}";')
    run_sql(pg_cluster, f'CREATE ROLE "{OWNER}"; CREATE DATABASE {DB} OWNER "{OWNER}";')
    run_sql(
        pg_cluster,
        f'SET ROLE "{OWNER}"; CREATE TABLE items (id serial PRIMARY KEY, name text);'
        "INSERT INTO items (name) SELECT 'item ' || i FROM generate_series(1, 250) i;",
        DB,
    )
    options = pg_options(pg_cluster).model_copy(  # type: ignore[attr-defined]
        update={"databases": (DB,), "restore_username": RESTORER}
    )
    kind = registry()["postgresql"]
    run_sql(pg_cluster, setup_sql(kind.droplet_setup(options, "shop", READER)))
    restore_role = PostgresRestore().restore_gate(options, "shop").setup
    run_sql(pg_cluster, setup_sql(restore_role))
    try:
        yield DB
    finally:
        run_sql(pg_cluster, drop)
        run_sql(pg_cluster, f'DROP ROLE IF EXISTS {READER}, {RESTORER}, "{OWNER}";')


def owners(cluster: PostgresCluster, db: str) -> tuple[str, str]:
    said = run_sql(
        cluster,
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database();"
        "SELECT tableowner FROM pg_tables WHERE tablename = 'items';",
        db,
    )
    database, table = said.split("\n")[:2]
    return database, table


def test_a_database_restores_onto_the_gated_droplet_as_it_was_with_the_restore_key(
    gated: Gated, tmp_path: Path, pg_cluster: PostgresCluster, shop: str
) -> None:
    tools = {t: str(postgres_bindir() / t) for t in ("psql", "pg_dump", "pg_dumpall", "pg_restore")}
    source = pg_source(
        pg_cluster,
        username=READER,
        restore_username=RESTORER,
        databases=[shop],
        role_passwords=False,
        **tools,
    )
    d, restore_key = with_restore_key(gated, tmp_path, {"shop": source})
    try:
        backed_up(gated, d, "gated/shop")
        restore = ("restore", "gated/shop", "--item", shop, "--to-host", "gated", "--yes")
        done = d.backupctl(*restore, "--database", f"{shop}_copy")
        assert done.returncode == 0, done.stderr
        assert owners(pg_cluster, f"{shop}_copy") == (OWNER, OWNER)
        assert run_sql(pg_cluster, "SELECT count(*) FROM items;", f"{shop}_copy").strip() == "250"
        again = d.backupctl(*restore, "--database", f"{shop}_copy")
        assert again.returncode != 0 and "(use --database NEWNAME, or --force" in again.stderr
        logged = gated.logged()
        assert any("ran shop: restore: pg_restore" in line for line in logged), logged
        assert not any("refused" in line for line in logged), logged
        # over the database itself (--force): the restore role drops it as its owner's member
        run_sql(pg_cluster, "DELETE FROM items WHERE id > 10;", shop)
        replaced = d.backupctl(*restore, "--database", shop, "--force")
        assert replaced.returncode == 0, replaced.stderr
        assert run_sql(pg_cluster, "SELECT count(*) FROM items;", shop).strip() == "250"
        assert owners(pg_cluster, shop) == (OWNER, OWNER)
        # a role it may not act as: refused before anything is made, with the GRANT to give
        run_sql(pg_cluster, f'REVOKE "{OWNER}" FROM {RESTORER};')
        refused = d.backupctl(*restore, "--database", f"{shop}_other")
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
        assert f"membership in role {OWNER}" in refused.stderr
        assert f'GRANT "{OWNER}" TO "{RESTORER}"' in refused.stderr
        said = run_sql(
            pg_cluster, f"SELECT count(*) FROM pg_database WHERE datname = '{shop}_other';"
        )
        assert said.strip() == "0"
        roles = d.backupctl(*restore, "--database", f"{shop}_other", "--create-roles")
        assert roles.returncode != 0 and "cannot create roles" in roles.stderr
        # config check (as root: it may use the restore key) proves the restore role logs in
        checked = d.backupctl("config", "check").stdout
        assert f"ok    gated/shop restore role: connects as {RESTORER}" in checked, checked
        run_sql(pg_cluster, f"ALTER ROLE {RESTORER} NOLOGIN;")
        checked = d.backupctl("config", "check").stdout
        assert "FAIL  gated/shop restore role: psql on gated failed" in checked, checked
        assert "is not permitted to log in" in checked
        run_sql(pg_cluster, f"ALTER ROLE {RESTORER} LOGIN;")
        # an owner that may create roles is not one the restore role joins: said, not granted
        run_sql(pg_cluster, f'ALTER ROLE "{OWNER}" CREATEROLE;')
        said = run_sql(
            pg_cluster,
            setup_sql(
                PostgresRestore()
                .restore_gate(
                    pg_options(pg_cluster).model_copy(  # type: ignore[attr-defined]
                        update={"databases": (shop,), "restore_username": RESTORER}
                    ),
                    "shop",
                )
                .setup
            ),
        )
        assert "not granted to the restore role (it could then create roles" in said
        member = f"SELECT pg_has_role('{RESTORER}', '{OWNER}', 'MEMBER');"
        assert run_sql(pg_cluster, member).strip() == "f"
        # the restore key's psql with SQL of its own: refused, nothing ran
        options = load_config(d.config).hosts["gated"].sources["shop"].options
        gated_opts = options.model_copy(update={"username": RESTORER})  # type: ignore[attr-defined]
        psql = remote_command_line(psql_argv(gated_opts, shop))
        escape = f"\\! {pwn(gated.canary)}\n"
        hostile = gated.ssh(psql, stdin=escape.encode(), key=restore_key)
        assert hostile.returncode == gate.EXIT_REFUSED, hostile.stderr
        assert not gated.canary.exists()
        # and the daemon's key has no restore verb
        daemon = gated.ssh(psql, stdin=b"SELECT 1;\n")
        assert daemon.returncode == gate.EXIT_REFUSED
    finally:
        gated.install(gated.allow, "allow")


def test_a_mariadb_database_restores_onto_the_gated_droplet_sandboxed(
    gated: Gated, tmp_path: Path, mariadb_server: MariaDBServer, shop_mariadb: str
) -> None:
    """As the restore user host setup makes (its password drawn on the droplet, grants on
    the source's databases and names that start with theirs and _): the rows come back,
    the trigger's definer becomes that user; a name outside its grants is refused by the
    server; a client command through the restore key is refused by the sandbox."""
    reader = f"'{MARIA_READER}'@'localhost'"
    restorer = "'backupd_restore'@'localhost'"
    reader_cnf = gated.droplet.root / "reader.cnf"
    source = {
        "kind": "mariadb",
        "databases": [shop_mariadb],
        "socket": str(mariadb_server.socket),
        "username": MARIA_READER,
        "defaults_file": str(reader_cnf),
        "restore_defaults_file": str(gated.droplet.root / "etc" / "shopdb-restore.cnf"),
    }
    options = registry()["mariadb"].options_model.model_validate(
        {k: v for k, v in source.items() if k != "kind"}
    )
    grants = setup_sql(registry()["mariadb"].droplet_setup(options, "shopdb", "other-login"))
    mariadb_server.sql(f"CREATE OR REPLACE USER {reader} IDENTIFIED BY 'reader-secret';{grants}")
    reader_cnf.write_text("[client]\npassword=reader-secret\n")
    reader_cnf.chmod(0o600)
    shutil.chown(reader_cnf, gated.droplet.user)
    made = MariaDBRestore().restore_gate(options, "shopdb").setup  # type: ignore[arg-type]
    run_setup(made, gated.droplet.user)
    assert (gated.droplet.root / "etc" / "shopdb-restore.cnf").stat().st_mode & 0o777 == 0o600
    d, restore_key = with_restore_key(gated, tmp_path, {"shopdb": source})
    try:
        backed_up(gated, d, "gated/shopdb")
        restore = ("restore", "gated/shopdb", "--to-host", "gated", "--yes", "--database")
        done = d.backupctl(*restore, f"{shop_mariadb}_restored")
        assert done.returncode == 0, done.stderr
        restored = mariadb_counts(mariadb_server, f"{shop_mariadb}_restored")
        assert restored == mariadb_counts(mariadb_server, shop_mariadb)
        logged = gated.logged()
        assert any("ran shopdb: restore: load the dump" in line for line in logged), logged
        elsewhere = d.backupctl(*restore, "elsewhere")
        assert elsewhere.returncode != 0 and "Traceback" not in elsewhere.stderr
        assert "denied" in elsewhere.stderr
        gopts = MariaDBRestore().restore_gate(options, "shopdb").options  # type: ignore[arg-type]
        escape = (*MariaDBRestore().restore_argv(gopts, DatabaseRestore(shop_mariadb), None),)
        hostile = gated.ssh(
            remote_command_line(escape),
            stdin=f"system {pwn(gated.canary)}\n\\! {pwn(gated.canary)}\n".encode(),
            key=restore_key,
        )
        assert hostile.returncode != 0 and b"Unknown command" in hostile.stderr, hostile.stderr
        query = MariaDBRestore.query_argv(gopts, f"system {pwn(gated.canary)}")
        hostile = gated.ssh(remote_command_line(query), key=restore_key)
        assert hostile.returncode != 0 and b"sandbox mode" in hostile.stderr, hostile.stderr
        assert not gated.canary.exists()
        # SQL that reads a droplet file (the restore user's own password) into a table
        steal = f"LOAD DATA LOCAL INFILE '{gopts.defaults_file}' INTO TABLE `{shop_mariadb}`.f"
        mariadb_server.sql(f"CREATE TABLE `{shop_mariadb}`.f (line TEXT)")
        for argv, stdin in (
            (MariaDBRestore.query_argv(gopts, steal), b""),
            (escape, f"{steal};\n".encode()),
        ):
            stolen = gated.ssh(remote_command_line(argv), stdin=stdin, key=restore_key)
            assert stolen.returncode != 0 and b"local infile" in stolen.stderr, stolen.stderr
        assert mariadb_server.sql(f"SELECT count(*) FROM `{shop_mariadb}`.f").strip() == "0"
    finally:
        gated.install(gated.allow, "allow")
        mariadb_server.sql(
            f"DROP USER IF EXISTS {reader}; DROP USER IF EXISTS {restorer};"
            f"DROP DATABASE IF EXISTS elsewhere"
        )


def with_restore_key(
    gated: Gated, tmp_path: Path, sources: dict[str, dict[str, object]]
) -> tuple[Deployment, Path]:
    """backupd for the gated droplet, and the operator's restore key installed there."""
    restore_key = tmp_path / "restore_key"
    new_key(restore_key)
    d = deploy_gated(gated, tmp_path, sources, gate=True, restore_key=str(restore_key))
    install_restore_key(gated, d, restore_key)
    return d, restore_key


def run_setup(lines: Sequence[str], login: str) -> None:
    """Host setup's lines for one source, as its script runs them (as root)."""
    head = f'set -eu\nlogin={login}\nsay() {{ echo "$*"; }}\ndie() {{ say "$*" >&2; exit 1; }}\n'
    done = subprocess.run(
        ["sh", "-c", head + "\n".join(lines)], capture_output=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
