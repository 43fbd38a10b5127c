"""PostgreSQL databases shaped like the ones real applications leave behind (issue 12),
cases 1-4: names, roles, encodings and locales. Each is backed up, restored by every path
its case touches, and drilled, against real servers; each asserts the value that came back.
Cases 5-7 (large objects, partitions, one table): test_field_postgres_objects.py.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import Deployment
from tests.e2e.field_pg import (
    Made,
    conn,
    deployed,
    drill_passes,
    hexed,
    properties,
    restore,
)
from tests.e2e.test_drills import drill
from tests.harness.postgres import PostgresCluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # slow: started first (tests/conftest.py)


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
