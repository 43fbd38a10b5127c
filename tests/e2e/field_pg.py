"""What the PostgreSQL field tests (test_field_postgres*.py, issue 12) share: a second,
bare cluster that stands for "another server" (it has none of the source's roles), the
databases and roles a test makes (dropped afterwards), a deployment with restore targets,
and readers of what came back."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.e2e.conftest import Deployment, pg_source
from tests.e2e.test_drills import drill
from tests.e2e.test_restore_targets import add_targets
from tests.harness.postgres import PostgresCluster


def conn(name: str) -> str:
    """A database name as the harness's psql -d must get it (never a connection string)."""
    return "dbname='" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def database_names(cluster: PostgresCluster) -> set[str]:
    """Every database, exactly (a name may hold a newline)."""
    out = cluster.psql("SELECT encode(convert_to(datname, 'UTF8'), 'hex') FROM pg_database")
    return {bytes.fromhex(h).decode() for h in out.split()}


class Made:
    """Databases and roles a test makes on the clusters: dropped afterwards, with every
    database a restore created there."""

    def __init__(self, *clusters: PostgresCluster) -> None:
        self.clusters = clusters
        self.before = [database_names(c) for c in clusters]
        self.roles: list[str] = []

    def database(self, name: str, sql: str = "", options: str = "") -> str:
        source = self.clusters[0]
        source.psql(f"CREATE DATABASE {ident(name)} {options}")
        if sql:
            source.psql(sql, db=conn(name))
        return name

    def role(self, name: str) -> None:
        self.roles.append(name)
        self.clusters[0].psql(f"CREATE ROLE {name} NOLOGIN")

    def drop(self) -> None:
        for cluster, before in zip(self.clusters, self.before, strict=True):
            for db in database_names(cluster) - before:
                cluster.psql(f"DROP DATABASE IF EXISTS {ident(db)} WITH (FORCE)")
            for role in self.roles:
                cluster.psql(f"DROP ROLE IF EXISTS {role}")


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def deployed(
    deploy: Callable[..., Deployment],
    pg_cluster: PostgresCluster,
    bare_cluster: PostgresCluster,
    drill_sql: dict[str, str] | None = None,
    **options: object,
) -> Deployment:
    """Source web1/db over the test cluster; targets: staging (the same server, it has
    the roles) and bare (another server, without them)."""
    d = deploy({"db": pg_source(pg_cluster, **options)})
    if drill_sql:
        with d.config.open("a") as f:
            for sql, expect in drill_sql.items():
                f.write(
                    f"\n[[hosts.web1.sources.db.drill_sql]]\nsql = {json.dumps(sql)}\n"
                    f"expect = {json.dumps(expect)}\n"
                )
    targets = (("staging", pg_cluster), ("bare", bare_cluster))
    add_targets(
        d,
        **{
            name: {
                "kind": "postgresql",
                "socket_dir": str(c.socket_dir),
                "port": c.port,
                "username": "postgres",
            }
            for name, c in targets
        },
    )
    d.backupctl("backup", "now", "web1/db", check=True)
    return d


def restore(d: Deployment, *args: str) -> str:
    return d.backupctl("restore", "web1/db", *args, check=True).stdout


def drill_passes(d: Deployment) -> dict[str, str]:
    """Drill web1/db: every archive passes (no warning); the database archives' checks."""
    rc, results = drill(d, "web1/db")
    assert rc == 0 and {r["verdict"] for r in results} == {"pass"}, results
    return {
        str(c["check"]): str(c["detail"])
        for r in results
        if "globals" not in str(r["archive"])
        for c in r["checks"]
    }  # type: ignore[attr-defined]


def hexed(cluster: PostgresCluster, db: str) -> str:
    """The bytes of t.v in the database's own encoding."""
    sql = (
        "SELECT encode(convert_to(v, pg_encoding_to_char(d.encoding)), 'hex') "
        "FROM t, pg_database d WHERE d.datname = current_database()"
    )
    return cluster.psql(sql, db=db)


def properties(cluster: PostgresCluster, db: str) -> str:
    return cluster.psql(
        "SELECT pg_encoding_to_char(encoding) || ' ' || datcollate || ' ' || "
        "datlocprovider::text || ' ' || coalesce(daticulocale, '-') "
        f"FROM pg_database WHERE datname = {literal(db)}"
    )
