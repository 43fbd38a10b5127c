"""PostgreSQL databases shaped like the ones real applications leave behind (issue 12),
cases 5-7: many large objects, very many partitions, one table with what it needs (and the
drill's --table path). Backed up, restored by every path, drilled, against real servers.
Split from test_field_postgres.py so the two spread over the test workers.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.conftest import Deployment
from tests.e2e.field_pg import (
    Made,
    deployed,
    drill_passes,
    restore,
)
from tests.e2e.test_drills import drill
from tests.harness.postgres import PostgresCluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # slow: started first (tests/conftest.py)


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
