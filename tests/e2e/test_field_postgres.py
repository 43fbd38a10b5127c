"""PostgreSQL databases shaped like the ones real applications leave behind (issue 12):
each is backed up, restored by every path its case touches, and drilled, against real
servers; each asserts the value that came back (rows, bytes, encoding, the object).

A second, bare cluster stands for "another server": it has none of the source's roles.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Deployment, pg_source
from tests.e2e.test_drills import drill
from tests.e2e.test_restore_targets import add_targets
from tests.harness.postgres import PostgresCluster, start_postgres

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def bare_cluster(servers_dir: Path) -> Iterator[PostgresCluster]:
    cluster = start_postgres(servers_dir)
    yield cluster
    cluster.stop()


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


@pytest.fixture
def made(pg_cluster: PostgresCluster, bare_cluster: PostgresCluster) -> Iterator[Made]:
    m = Made(pg_cluster, bare_cluster)
    yield m
    m.drop()


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


# -- case 1: names are data, never syntax ------------------------------------------------
ODD_NAMES = ("shop k=v", "-dash", "new\nline", 'it\'s "q" \\ |')


def test_names_with_syntax_in_them_back_up_restore_and_drill(
    deploy: Callable[..., Deployment],
    pg_cluster: PostgresCluster,
    bare_cluster: PostgresCluster,
    made: Made,
    tmp_path: Path,
) -> None:
    for name in ODD_NAMES:
        made.database(
            name,
            'CREATE SCHEMA "s=1"; CREATE TABLE "s=1"."t|x\ny" (n int);'
            'INSERT INTO "s=1"."t|x\ny" SELECT generate_series(1, 7);'
            "CREATE TABLE items (n int); INSERT INTO items VALUES (1), (2);",
        )
    d = deployed(deploy, pg_cluster, bare_cluster)  # every database, as listed by psql
    items = {str(r[0]) for r in d.catalogue_rows("SELECT item FROM archives")}
    assert set(ODD_NAMES) <= items
    restore(d, "--to", str(tmp_path / "files"))
    assert not any(p.name.startswith("-") for p in (tmp_path / "files").iterdir())

    out = restore(d, "--into-db", "bare", "--item", "shop k=v", "--as", "copy k=v")
    assert "ok  rows: 2 table(s), 9 rows as recorded" in out
    assert bare_cluster.psql('SELECT sum(n) FROM "s=1"."t|x\ny"', db=conn("copy k=v")) == "28"
    one = restore(d, "--into-db", "bare", "--item=-dash", "--as=-t", "--table", "s=1.t|x\ny")
    assert "ok  rows: 1 table(s), 7 rows as recorded" in one
    assert (
        bare_cluster.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 's=1'", db=conn("-t"))
        == "1"
    )
    back = restore(
        d, "--to-host", "web1", "--item", "new\nline", "--database", "back\nk=v", "--yes"
    )
    assert "ok  rows: 2 table(s), 9 rows as recorded" in back
    assert pg_cluster.psql("SELECT count(*) FROM items", db=conn("back\nk=v")) == "2"
    _rc, results = drill(d, "web1/db")
    ours = [
        r
        for r in results
        if any(
            str(r["archive"]).startswith(f"db.{s}")
            for s in ("shop_k_v-", "dash-", "new_line-", "it_s_q-")
        )
    ]
    assert len(ours) == 4 and {r["verdict"] for r in ours} == {"pass"}, results


# -- case 3: what a database needs from outside itself comes along -------------------------
RLS_SQL = """
CREATE TABLE t (id int PRIMARY KEY, owner_name text);
INSERT INTO t SELECT g, 'u' || g FROM generate_series(1, 50) g;
ALTER TABLE t OWNER TO f12_owner;
ALTER TABLE t ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON t TO f12_reader USING (owner_name = current_user);
GRANT SELECT ON t TO f12_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE f12_owner GRANT SELECT ON TABLES TO f12_auditor;
"""


# in every database of the source (the plain one has no t): t keeps its owner and policy
OWNED = "SELECT count(*) FROM pg_tables WHERE tablename = 't' AND tableowner <> 'f12_owner'"
POLICED = "SELECT count(*) FROM pg_policies WHERE roles <> '{f12_reader}'"


def rls_database(made: Made) -> None:
    """Database f12_rls: a table owned by a role, with a policy for another, and default
    privileges granted to a third."""
    for role in ("f12_owner", "f12_reader", "f12_auditor"):
        made.role(role)
    made.database("f12_rls", RLS_SQL)


def test_roles_a_database_needs_are_named_before_and_created_on_request(
    deploy: Callable[..., Deployment],
    pg_cluster: PostgresCluster,
    bare_cluster: PostgresCluster,
    made: Made,
) -> None:
    rls_database(made)
    made.database("f12_plain", "CREATE TABLE n (x int); INSERT INTO n VALUES (1);")
    d = deployed(
        deploy,
        pg_cluster,
        bare_cluster,
        {OWNED: "0", POLICED: "0"},
        databases=["f12_rls", "f12_plain"],
    )

    # another server without the roles: said before anything is touched, dry run or not
    for dry in ((), ("--dry-run",)):
        refused = d.backupctl(
            "restore", "web1/db", "--item", "f12_rls", "--into-db", "bare", "--as", "rls_copy", *dry
        )
        assert refused.returncode == 9, refused.stderr
        assert (
            "restore target bare lacks what 'f12_rls' needs from outside the database: "
            "role f12_reader; create them first: `backupctl restore web1/db --to DIR` "
            "writes the backup's globals.sql"
        ) in refused.stderr
        assert "--create-roles" in refused.stderr and "Traceback" not in refused.stderr
    assert "rls_copy" not in bare_cluster.psql("SELECT datname FROM pg_database")
    # a database that needs no role of its own restores there as before: no refusal
    plain = restore(d, "--item", "f12_plain", "--into-db", "bare", "--as", "plain_copy")
    assert "ok  rows: 1 table(s), 1 rows as recorded" in plain and "roles" not in plain

    out = restore(d, "--item", "f12_rls", "--into-db", "bare", "--as", "rls_copy", "--create-roles")
    assert (
        "ok  roles: created 3 role(s) the database needs (NOLOGIN, no password): "
        "f12_auditor, f12_owner, f12_reader"
    ) in out
    assert (
        bare_cluster.psql(
            "SELECT string_agg(rolname || ':' || rolcanlogin::text || "
            "rolsuper::text, ',' ORDER BY 1) FROM pg_roles WHERE rolname "
            "LIKE 'f12%'"
        )
        == "f12_auditor:falsefalse,f12_owner:falsefalse,"
        "f12_reader:falsefalse"
    )
    q = (
        "SELECT tableowner || ' ' || has_table_privilege('f12_reader', 't', 'SELECT')::text "
        "|| ' ' || (SELECT array_to_string(roles, ',') FROM pg_policies) || ' ' || "
        "(SELECT count(*) FROM pg_default_acl) FROM pg_tables WHERE tablename = 't'"
    )
    assert bare_cluster.psql(q, db="rls_copy") == "f12_owner true f12_reader 1"
    # the droplet's own server has the roles: owners and privileges are kept
    restore(d, "--item", "f12_rls", "--to-host", "web1", "--database", "rls_back", "--yes")
    assert pg_cluster.psql(q, db="rls_back") == "f12_owner true f12_reader 1"

    checks = drill_passes(d)  # the scratch server has no such roles: made from the globals
    assert checks["roles"].startswith("created 3 role(s) the database needs")
    assert checks["sql"] in (f"{OWNED} = 0", f"{POLICED} = 0")


def test_roles_missing_from_the_backup_are_created_by_name_and_extensions_are_named(
    deploy: Callable[..., Deployment],
    pg_cluster: PostgresCluster,
    bare_cluster: PostgresCluster,
    made: Made,
) -> None:
    rls_database(made)
    d = deployed(deploy, pg_cluster, bare_cluster, databases=["f12_rls"], globals=False)
    checks = drill_passes(d)  # no globals archive: the roles are known by name only
    assert checks["roles"].endswith(
        "not in the backup's globals, created by name only: f12_auditor, f12_owner, f12_reader"
    )
    # an extension the target does not have cannot be created: named, refused, drill fails
    with sqlite3.connect(d.state_dir / "catalogue.db") as db:
        [(aid, facts)] = db.execute("SELECT id, facts FROM archives")
        changed = json.loads(facts)
        changed["extensions"]["f12_nowhere"] = "1.0"
        db.execute("UPDATE archives SET facts = ? WHERE id = ?", (json.dumps(changed), aid))
    refused = d.backupctl(
        "restore", "web1/db", "--into-db", "staging", "--as", "x_copy", "--create-roles"
    )
    assert refused.returncode == 9
    assert (
        "restore target staging lacks what 'f12_rls' needs from outside the database: "
        "extension f12_nowhere; install the package that provides it"
    ) in refused.stderr
    rc, [result] = drill(d, "web1/db")
    assert rc == 1 and "scratch postgresql lacks what 'f12_rls' needs" in str(result["detail"])


# -- case 4: encoding and locale survive ---------------------------------------------------
def test_encodings_and_locales_are_recreated_and_checked(
    deploy: Callable[..., Deployment],
    pg_cluster: PostgresCluster,
    bare_cluster: PostgresCluster,
    made: Made,
) -> None:
    made.database(
        "f12_legacy",
        "CREATE TABLE t (v text); INSERT INTO t VALUES (E'caf\\xe9');",
        "ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    )
    made.database(
        "f12_latin",
        "CREATE TABLE t (v text); INSERT INTO t VALUES "
        "(convert_from('\\x636166e9'::bytea, 'LATIN1'));",
        "ENCODING 'LATIN1' LOCALE 'C' TEMPLATE template0",
    )
    made.database(
        "f12_icu",
        "CREATE TABLE w (v text); INSERT INTO w VALUES ('b'), ('ä'), ('a');",
        "LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' LOCALE 'C.UTF-8' TEMPLATE template0",
    )
    d = deployed(deploy, pg_cluster, bare_cluster, databases=["f12_legacy", "f12_latin", "f12_icu"])

    out = restore(d, "--item", "f12_legacy", "--into-db", "bare", "--as", "legacy_copy")
    assert "ok  database: encoding SQL_ASCII, collate C, ctype C as recorded" in out
    assert properties(bare_cluster, "legacy_copy") == "SQL_ASCII C c -"
    assert hexed(bare_cluster, "legacy_copy") == "636166e9"
    restore(d, "--item", "f12_legacy", "--to-host", "web1", "--database", "legacy_back", "--yes")
    assert hexed(pg_cluster, "legacy_back") == "636166e9"
    restore(d, "--item", "f12_legacy", "--into-db", "bare", "--as", "legacy_t", "--table", "t")
    assert properties(bare_cluster, "legacy_t") == "SQL_ASCII C c -"
    latin = restore(d, "--item", "f12_latin", "--into-db", "bare", "--as", "latin_copy")
    assert "ok  database: encoding LATIN1, collate C, ctype C as recorded" in latin
    assert hexed(bare_cluster, "latin_copy") == "636166e9"
    icu = restore(d, "--item", "f12_icu", "--into-db", "bare", "--as", "icu_copy")
    assert "icu locale de-DE as recorded" in icu
    assert properties(bare_cluster, "icu_copy") == "UTF8 C.UTF-8 i de-DE"
    order = "SELECT string_agg(v, ',' ORDER BY v) FROM w"
    assert bare_cluster.psql(order, db="icu_copy") == "a,ä,b"  # German order, not bytes'

    rc, results = drill(d, "web1/db")
    assert rc == 0 and {r["verdict"] for r in results} == {"pass"}
    details = [c["detail"] for r in results for c in r["checks"] if c["check"] == "database"]  # type: ignore[attr-defined]
    assert "encoding SQL_ASCII, collate C, ctype C as recorded" in details
    assert len(details) == 3

    # a locale the target lacks: refused with the reason, nothing created
    with sqlite3.connect(d.state_dir / "catalogue.db") as db:
        [(aid, facts)] = db.execute("SELECT id, facts FROM archives WHERE item = 'f12_legacy'")
        changed = json.loads(facts)
        changed["database"]["lc_collate"] = "xx_XX.UTF-8"
        db.execute("UPDATE archives SET facts = ? WHERE id = ?", (json.dumps(changed), aid))
    bad = d.backupctl(
        "restore", "web1/db", "--item", "f12_legacy", "--into-db", "bare", "--as", "legacy_bad"
    )
    assert bad.returncode == 14, bad.stderr
    assert (
        "cannot create database legacy_bad on the backup host as it was backed up (encoding "
        "SQL_ASCII, collate xx_XX.UTF-8, ctype C): that server lacks the locale"
    ) in bad.stderr
    assert "legacy_bad" not in bare_cluster.psql("SELECT datname FROM pg_database")
    # --force over a database that is there: refused before the DROP, the old one stays
    bare_cluster.psql("CREATE DATABASE legacy_keep")
    bare_cluster.psql(
        "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('mine')", db="legacy_keep"
    )
    forced = d.backupctl(
        "restore",
        "web1/db",
        "--item",
        "f12_legacy",
        "--into-db",
        "bare",
        "--as",
        "legacy_keep",
        "--force",
        "--yes",
    )
    assert forced.returncode == 14, forced.stderr
    assert "cannot create database legacy_keep" in forced.stderr
    assert bare_cluster.psql("SELECT v FROM kept", db="legacy_keep") == "mine"
    assert "backupd_probe" not in bare_cluster.psql(
        "SELECT string_agg(datname, ' ') FROM pg_database"
    )
    bare_cluster.psql("DROP DATABASE legacy_keep")


# -- case 5: what the drill passed, every restore path restores ----------------------------
def test_many_large_objects_restore_by_every_path(
    deploy: Callable[..., Deployment],
    pg_cluster: PostgresCluster,
    bare_cluster: PostgresCluster,
    made: Made,
) -> None:
    made.database(
        "f12_lo",
        "SELECT lo_from_bytea(0, 'x') FROM generate_series(1, 20000);"
        "CREATE TABLE docs (id int, blob oid);"
        "INSERT INTO docs SELECT g, g FROM generate_series(1, 3) g;",
    )
    d = deployed(deploy, pg_cluster, bare_cluster, databases=["f12_lo"], globals=False)
    # pg_restore has the table before the large objects: it stops reading and exits 0
    restore(d, "--into-db", "bare", "--as", "lo_t", "--table", "docs")
    assert bare_cluster.psql("SELECT count(*) FROM docs", db="lo_t") == "3"
    restore(d, "--to-host", "web1", "--database", "lo_t", "--table", "docs", "--yes")
    assert pg_cluster.psql("SELECT count(*) FROM docs", db="lo_t") == "3"
    back = restore(d, "--to-host", "web1", "--database", "lo_back", "--yes")
    assert "ok  large objects: 20000 as recorded" in back
    count = "SELECT count(*) || ' ' || sum(length(lo_get(oid))) FROM pg_largeobject_metadata"
    assert pg_cluster.psql(count, db="lo_back") == "20000 20000"
    restore(d, "--into-db", "bare", "--as", "lo_copy")
    assert bare_cluster.psql(count, db="lo_copy") == "20000 20000"
    checks = drill_passes(d)
    assert checks["large objects"] == "20000 as recorded"
    assert "public.docs" in checks["table path"], checks


def test_a_table_with_very_many_partitions_restores_by_every_path(
    deploy: Callable[..., Deployment],
    pg_cluster: PostgresCluster,
    bare_cluster: PostgresCluster,
    made: Made,
) -> None:
    made.database("f12_parts", "CREATE TABLE m (k int, v text) PARTITION BY LIST (k);")
    for first in range(0, PARTITIONS, 250):  # a transaction each: the lock table is finite
        pg_cluster.psql(
            "".join(
                f"CREATE TABLE m_{i} PARTITION OF m FOR VALUES IN ({i});"
                for i in range(first, first + 250)
            ),
            db="f12_parts",
        )
    pg_cluster.psql(
        f"INSERT INTO m SELECT g % {PARTITIONS}, 'v' FROM generate_series(1, 9000) g",
        db="f12_parts",
    )
    pg_cluster.psql("CREATE INDEX ON m (v)", db="f12_parts")
    d = deployed(deploy, pg_cluster, bare_cluster, databases=["f12_parts"], globals=False)
    restore(d, "--to-host", "web1", "--database", "parts_back", "--yes")
    assert pg_cluster.psql("SELECT count(*) FROM m", db="parts_back") == "9000"
    restore(d, "--into-db", "bare", "--as", "parts_copy")
    assert bare_cluster.psql("SELECT count(*) FROM m", db="parts_copy") == "9000"
    # the parent counts its partitions' rows too
    assert drill_passes(d)["rows"] == f"{PARTITIONS + 1} table(s), 18000 rows as recorded"


PARTITIONS = 1000  # many relations in one transaction (5,000 measured in decision 0016)


def test_a_table_the_table_path_cannot_restore_makes_the_drill_warn(
    deploy: Callable[..., Deployment],
    pg_cluster: PostgresCluster,
    bare_cluster: PostgresCluster,
    made: Made,
) -> None:
    """Schema "s x" with table t and schema s with table "x t" print the same line in
    pg_restore's listing: the whole database restores, --table cannot tell them apart.
    The drill tries that path on one table and warns instead of passing in silence."""
    made.database(
        "f12_twins",
        'CREATE SCHEMA "s x"; CREATE SCHEMA s; CREATE TABLE "s x".t (v int); '
        'CREATE TABLE s."x t" (v int); INSERT INTO "s x".t VALUES (1); '
        'INSERT INTO s."x t" VALUES (2), (3);',
    )
    d = deployed(deploy, pg_cluster, bare_cluster, databases=["f12_twins"], globals=False)
    rc, [result] = drill(d, "web1/db")
    assert rc == 0 and result["verdict"] == "warn", result
    path = {c["check"]: c for c in result["checks"]}["table path"]  # type: ignore[attr-defined]
    assert path["warn"] is True
    assert "would fail: table s" in path["detail"] and "--to DIR" in path["detail"]
    whole = restore(d, "--into-db", "bare", "--as", "twins_copy")  # the whole database: fine
    assert "2 table(s), 3 rows as recorded" in whole


# -- case 7: one table brings what it needs -------------------------------------------------
PEOPLE_SQL = """
CREATE TYPE mood AS ENUM ('ok', 'sad');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE SEQUENCE codes;
CREATE FUNCTION initial() RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT 'n/a'::text $$;
CREATE TABLE people (id serial PRIMARY KEY, code text DEFAULT 'C' || nextval('codes'),
                     m mood NOT NULL, p posint, note text DEFAULT initial());
CREATE INDEX people_m ON people (m);
COMMENT ON TABLE people IS 'folk';
INSERT INTO people (m, p) SELECT 'ok', g FROM generate_series(1, 30) g;
CREATE TABLE tickets (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                      person int REFERENCES people, p posint);
INSERT INTO tickets (person, p) SELECT g, g FROM generate_series(1, 12) g;
"""


def test_one_table_brings_its_types_domains_sequences_and_functions(
    deploy: Callable[..., Deployment],
    pg_cluster: PostgresCluster,
    bare_cluster: PostgresCluster,
    made: Made,
) -> None:
    made.database("f12_people", PEOPLE_SQL)
    d = deployed(deploy, pg_cluster, bare_cluster, databases=["f12_people"])
    out = restore(d, "--into-db", "bare", "--as", "people_only", "--table", "public.people")
    assert "ok  rows: 1 table(s), 30 rows as recorded" in out
    assert "ok  table: public.people with 13 object(s) it needs or owns" in out
    insert = (
        "INSERT INTO people (m, p) VALUES ('sad', 99) RETURNING id || ' ' || code || ' ' || note"
    )
    assert bare_cluster.psql(insert, db="people_only") == "31 C31 n/a"  # defaults carry on
    assert (
        bare_cluster.psql("SELECT obj_description('people'::regclass)", db="people_only") == "folk"
    )
    bad = bare_cluster.psql(
        "SELECT count(*) FROM pg_tables WHERE tablename = 'tickets'", db="people_only"
    )
    assert bad == "0"  # only what it needs

    tickets = restore(d, "--into-db", "bare", "--as", "tickets_only", "--table", "tickets")
    assert (
        "ok  left out: needs what is not restored: fk constraint public.tickets "
        "tickets_person_fkey" in tickets
    )
    assert (
        bare_cluster.psql("INSERT INTO tickets (p) VALUES (5) RETURNING id", db="tickets_only")
        == "13"
    )  # the identity, at its value

    # onto the droplet into a new database, then again over it: what is there stays
    restore(d, "--to-host", "web1", "--database", "people_back", "--table", "people", "--yes")
    pg_cluster.psql("INSERT INTO people (m) VALUES ('sad')", db="people_back")
    again = restore(
        d, "--to-host", "web1", "--database", "people_back", "--table", "people", "--force", "--yes"
    )
    assert "ok  table: public.people with 8 object(s) it needs or owns" in again
    assert pg_cluster.psql("SELECT count(*) FROM people", db="people_back") == "30"
    assert drill_passes(d)["tables"] == "the same 2 table(s) as recorded"
