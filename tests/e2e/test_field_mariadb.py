"""Issue 12, MariaDB: databases shaped like the ones real applications leave behind, each
backed up, put back through every restore path the case touches, and drilled.

Case 1: names are data (a backslash, a tab, a newline, a backtick, a leading dash,
utf8mb4) from the listing to every restore. Case 2: rows are counted by the server in
the dump's own snapshot (INVISIBLE, VIRTUAL/PERSISTENT, system-versioned, MyISAM, a
table written during the dump). Case 6: a view, trigger and procedure whose definer was
dropped, and bodies that name their own database. Case 4: the database's character set
and collation are recreated and checked, or refused before anything changes.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jobs.base import slug
from tests.e2e.conftest import Deployment
from tests.e2e.test_restore_targets import add_targets
from tests.harness.mariadb import MariaDBServer, sql_string
from tests.json_contract import conforming

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # slow: started first (tests/conftest.py)

A_B = "a\\b"  # one backslash: listed as a\\b by `mariadb --batch`
TAB = "tab\there"
ODD = "-new\nline `tick` café☕"
ODD_TABLE = "odd\tname\nx"
PASSWORD = "pa ss'wo\"rd"


def q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def rows(server: MariaDBServer, db: str, table: str) -> int:
    return int(server.sql(f"SELECT COUNT(*) FROM {q(db)}.{q(table)}"))


def database_names(server: MariaDBServer) -> set[str]:
    out = server.sql("SELECT HEX(SCHEMA_NAME) FROM information_schema.SCHEMATA")
    return {bytes.fromhex(h).decode() for h in out.split()}


def drop(server: MariaDBServer, *dbs: str) -> None:
    server.sql("; ".join(f"DROP DATABASE IF EXISTS {q(db)}" for db in dbs))


def facts_by_item(d: Deployment) -> dict[str, dict[str, object]]:
    found = d.catalogue_rows("SELECT item, facts FROM archives ORDER BY id")
    return {str(item): json.loads(str(facts)) for item, facts in found}


def last_run(d: Deployment) -> tuple[str, str | None]:
    [(status, error)] = d.catalogue_rows("SELECT status, error FROM runs ORDER BY id DESC LIMIT 1")
    return str(status), None if error is None else str(error)


def drill(d: Deployment, target: str) -> list[dict[str, object]]:
    result = d.backupctl("drill", target, "--json")
    assert "Traceback" not in result.stderr, result.stderr
    found: list[dict[str, object]] = conforming("drill", result.stdout)["drills"]
    return found


def drilled(
    d: Deployment, results: list[dict[str, object]], *items: str
) -> list[dict[str, object]]:
    """The drill results of these items' archives (the server may hold other databases)."""
    names = {str(n) for n, i in d.catalogue_rows("SELECT name, item FROM archives") if i in items}
    return [r for r in results if r["archive"] in names]


def tables(server: MariaDBServer, db: str) -> set[str]:
    out = server.sql(
        "SELECT HEX(TABLE_NAME) FROM information_schema.TABLES WHERE "
        f"TABLE_SCHEMA = {sql_string(db)}"
    )
    return {bytes.fromhex(h).decode() for h in out.split()}


def checks(result: dict[str, object]) -> dict[str, str]:
    return {str(c["check"]): str(c["detail"]) for c in result["checks"]}  # type: ignore[attr-defined]


@pytest.fixture
def source(
    deploy: Callable[..., Deployment], mariadb_server: MariaDBServer, tmp_path: Path
) -> Callable[..., Deployment]:
    """A deployment whose source logs in as a password user (sent over stdin), with the
    same server as restore target ``mlocal``."""
    mariadb_server.create_user("backup", PASSWORD)
    secret = tmp_path / "mariadb-password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)

    def make(**sources: dict[str, object]) -> Deployment:
        base = {
            "kind": "mariadb",
            "socket": str(mariadb_server.socket),
            "username": "backup",
            "password_file": str(secret),
        }
        d = deploy({name: {**base, **options} for name, options in sources.items()})
        add_targets(
            d, mlocal={"kind": "mariadb", "socket": str(mariadb_server.socket), "username": "root"}
        )
        return d

    return make


# -- case 1: names are data ---------------------------------------------------------------
@pytest.fixture
def odd_names(mariadb_server: MariaDBServer) -> Iterator[None]:
    copies = ("odd copy `1`\tx", "one\ttable", "a\\b back")
    drop(mariadb_server, A_B, TAB, ODD, *copies)
    for n, db in enumerate((A_B, TAB, ODD), start=1):
        mariadb_server.sql(
            f"SET NAMES utf8mb4; CREATE DATABASE {q(db)} CHARACTER SET utf8mb4; USE {q(db)};"
            "CREATE TABLE t (id INT PRIMARY KEY, note VARCHAR(40)) CHARACTER SET utf8mb4;"
            f"INSERT INTO t SELECT seq, 'smile 😀 {n}' FROM seq_1_to_{n * 10}"
        )
    mariadb_server.sql(
        f"USE {q(ODD)}; CREATE TABLE {q(ODD_TABLE)} (id INT PRIMARY KEY);"
        f"INSERT INTO {q(ODD_TABLE)} SELECT seq FROM seq_1_to_5;"
        f"CREATE VIEW {q('v`iew')} AS SELECT id FROM {q(ODD_TABLE)};"
        f"CREATE TRIGGER tr BEFORE INSERT ON {q(ODD_TABLE)} FOR EACH ROW SET NEW.id = NEW.id"
    )
    yield
    drop(mariadb_server, A_B, TAB, ODD, *copies)


def test_names_are_data_from_the_listing_to_every_restore_path(
    source: Callable[..., Deployment],
    mariadb_server: MariaDBServer,
    odd_names: None,
    tmp_path: Path,
) -> None:
    with pytest.raises(RuntimeError, match="Invalid utf8mb3 character string"):
        mariadb_server.sql("CREATE DATABASE `emoji😀`")  # 4-byte names cannot exist at all
    d = source(names={})  # `databases` empty: the listing decides
    backup = d.backupctl("backup", "now", "web1/names")
    assert backup.returncode == 0, backup.stderr
    facts = facts_by_item(d)
    assert {A_B, TAB, ODD} <= set(facts)
    assert facts[A_B]["rows"] == {"t": 10} and facts[TAB]["rows"] == {"t": 20}
    assert facts[ODD]["rows"] == {"t": 30, ODD_TABLE: 5}

    out = tmp_path / "files"
    d.backupctl("restore", "web1/names", "--to", str(out), check=True)
    assert {slug(db) + ".sql" for db in (A_B, TAB, ODD)} <= {p.name for p in out.iterdir()}
    dump = (out / f"{slug(ODD)}.sql").read_bytes()
    assert f"CREATE TABLE {q(ODD_TABLE)}".encode() in dump

    copy = "odd copy `1`\tx"
    d.backupctl(
        "restore", "web1/names", "--item", ODD, "--into-db", "mlocal", "--as", copy, check=True
    )
    assert rows(mariadb_server, copy, "t") == 30 and rows(mariadb_server, copy, ODD_TABLE) == 5
    assert rows(mariadb_server, copy, "v`iew") == 5
    note = mariadb_server.sql(f"SELECT HEX(note) FROM {q(copy)}.t LIMIT 1")
    assert bytes.fromhex(note).decode() == "smile 😀 3"  # utf8mb4 (4 bytes) came back
    one = d.backupctl(
        "restore",
        "web1/names",
        "--item",
        ODD,
        "--into-db",
        "mlocal",
        "--as",
        "one\ttable",
        "--table",
        ODD_TABLE,
        check=True,
    )
    assert "1 table(s), 5 rows as recorded" in one.stdout
    assert rows(mariadb_server, "one\ttable", ODD_TABLE) == 5
    assert tables(mariadb_server, "one\ttable") == {ODD_TABLE}
    trigger = mariadb_server.sql(f"USE {q('one' + chr(9) + 'table')}; SHOW TRIGGERS")
    assert trigger.split("\t")[0] == "tr"  # the table's trigger came along

    d.backupctl(
        "restore",
        "web1/names",
        "--item",
        A_B,
        "--to-host",
        "web1",
        "--database",
        "a\\b back",
        "--yes",
        check=True,
    )
    assert rows(mariadb_server, "a\\b back", "t") == 10
    drop(mariadb_server, TAB)  # gone: back under its own name, no --as
    d.backupctl("restore", "web1/names", "--item", TAB, "--into-db", "mlocal", check=True)
    assert rows(mariadb_server, TAB, "t") == 20

    ours = drilled(d, drill(d, "web1/names"), A_B, TAB, ODD)
    assert len(ours) == 3 and all(r["verdict"] == "pass" for r in ours), ours
    assert {checks(r)["rows"] for r in ours} == {
        "1 table(s), 10 rows as recorded",
        "1 table(s), 20 rows as recorded",
        "2 table(s), 35 rows as recorded",
    }


# -- case 2: rows are counted by the server, in the dump's snapshot -----------------------
COUNTED = "counted"
# a procedure whose body holds a line a text counter took for rows of `inv`
FAKE_ROWS = "CREATE PROCEDURE add_two()\nINSERT INTO `inv` VALUES\n(9001),\n(9002)"


@pytest.fixture
def tricky_tables(mariadb_server: MariaDBServer) -> Iterator[dict[str, int]]:
    drop(mariadb_server, COUNTED, "counted_copy", "counted_inv", "counted_back")
    mariadb_server.sql(
        f"CREATE DATABASE {COUNTED}; USE {COUNTED};"
        "CREATE TABLE inv (id INT PRIMARY KEY, flag INT INVISIBLE DEFAULT 7);"
        "INSERT INTO inv (id) SELECT seq FROM seq_1_to_300;"
        "CREATE TABLE gen (a INT, v INT AS (a * 2) VIRTUAL, p INT AS (a * 3) PERSISTENT);"
        "INSERT INTO gen (a) SELECT seq FROM seq_1_to_250;"
        "CREATE TABLE hist (id INT PRIMARY KEY, n INT) WITH SYSTEM VERSIONING;"
        "INSERT INTO hist SELECT seq, 0 FROM seq_1_to_40; UPDATE hist SET n = n + 1;"
        "DELETE FROM hist WHERE id > 35;"
        "CREATE TABLE legacy (id INT) ENGINE=MyISAM; INSERT INTO legacy VALUES (1), (2);"
    )
    mariadb_server.sql(FAKE_ROWS, db=COUNTED)
    yield {"gen": 250, "hist": 35, "inv": 300, "legacy": 2}
    drop(mariadb_server, COUNTED, "counted_copy", "counted_inv", "counted_back")


def test_rows_are_counted_by_the_server_whatever_the_dump_text_looks_like(
    source: Callable[..., Deployment],
    mariadb_server: MariaDBServer,
    tricky_tables: dict[str, int],
) -> None:
    d = source(counted={"databases": [COUNTED]})
    d.backupctl("backup", "now", "web1/counted", check=True)
    assert last_run(d) == ("succeeded", None)  # nothing to warn about: no warning
    facts = facts_by_item(d)[COUNTED]
    assert facts["rows"] == tricky_tables
    assert facts["rows_outside_snapshot"] == ["legacy"]  # MyISAM: no snapshot
    assert isinstance(facts["commit_block_ms"], int)

    whole = d.backupctl(
        "restore", "web1/counted", "--into-db", "mlocal", "--as", "counted_copy", check=True
    )
    assert (
        "rows: 3 table(s), 585 rows as recorded; 1 table(s) present whose engine has no "
        "snapshot (rows not compared): legacy" in whole.stdout
    )
    assert rows(mariadb_server, "counted_copy", "inv") == 300
    assert mariadb_server.sql("SELECT SUM(flag) FROM counted_copy.inv") == "2100"
    assert mariadb_server.sql("SELECT SUM(p) - SUM(v) FROM counted_copy.gen") == str(31375)
    one = d.backupctl(
        "restore",
        "web1/counted",
        "--into-db",
        "mlocal",
        "--as",
        "counted_inv",
        "--table",
        "inv",
        check=True,
    )
    assert "1 table(s), 300 rows as recorded" in one.stdout
    d.backupctl(
        "restore",
        "web1/counted",
        "--to-host",
        "web1",
        "--database",
        "counted_back",
        "--yes",
        check=True,
    )
    assert rows(mariadb_server, "counted_back", "hist") == 35
    mariadb_server.sql("CALL add_two()", db="counted_back")  # the procedure came back too
    assert rows(mariadb_server, "counted_back", "inv") == 302

    [result] = drill(d, "web1/counted")
    assert result["verdict"] == "pass", result
    assert checks(result)["tables"] == "the same 4 table(s) as recorded"


def test_a_table_written_during_the_dump_restores_exactly_the_recorded_rows(
    source: Callable[..., Deployment], mariadb_server: MariaDBServer
) -> None:
    drop(mariadb_server, "busy", "busy_copy")
    mariadb_server.sql(
        "CREATE DATABASE busy; USE busy;"
        "CREATE TABLE w (id INT PRIMARY KEY AUTO_INCREMENT, pad VARCHAR(200));"
        "INSERT INTO w (pad) SELECT REPEAT('x', 200) FROM seq_1_to_200000"
    )
    commits = threading.Semaphore(0)
    stop = threading.Event()

    def write() -> None:  # +1 row per commit, every commit counted
        while not stop.is_set():
            mariadb_server.sql(
                "INSERT INTO busy.w (pad) VALUES ('a'), ('b');"
                "DELETE FROM busy.w ORDER BY id LIMIT 1"
            )
            commits.release()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert commits.acquire(timeout=60)  # writing before the backup starts
        before = rows(mariadb_server, "busy", "w")
        d = source(busy={"databases": ["busy"]})
        d.backupctl("backup", "now", "web1/busy", check=True)
        for _ in range(2):  # and still writing after it ended
            assert commits.acquire(timeout=60)
    finally:
        stop.set()
        writer.join(timeout=120)
    recorded = facts_by_item(d)["busy"]["rows"]["w"]  # type: ignore[index]
    assert before <= recorded < rows(mariadb_server, "busy", "w")
    restored = d.backupctl(
        "restore", "web1/busy", "--into-db", "mlocal", "--as", "busy_copy", check=True
    )
    assert f"1 table(s), {recorded} rows as recorded" in restored.stdout
    assert rows(mariadb_server, "busy_copy", "w") == recorded
    [result] = drill(d, "web1/busy")
    assert result["verdict"] == "pass", result
    drop(mariadb_server, "busy", "busy_copy")


def test_rows_not_counted_without_reload_warn_and_count_rows_false_is_silent(
    source: Callable[..., Deployment],
    mariadb_server: MariaDBServer,
    tricky_tables: dict[str, int],
) -> None:
    mariadb_server.sql("REVOKE RELOAD ON *.* FROM 'backup'@'localhost'")
    d = source(
        nocount={"databases": [COUNTED]}, quiet={"databases": [COUNTED], "count_rows": False}
    )
    d.backupctl("backup", "now", "web1/nocount", check=True)
    status, error = last_run(d)
    assert status == "warning" and error is not None
    assert "rows not counted: commits could not be blocked" in error and "RELOAD" in error
    [(kind,)] = d.catalogue_rows("SELECT kind FROM alert_events")
    assert kind == "backup_warning"
    assert "rows" not in facts_by_item(d)[COUNTED]
    [result] = drill(d, "web1/nocount")
    assert result["verdict"] == "warn" and "no row counts were recorded" in str(result["detail"])

    d.backupctl("backup", "now", "web1/quiet", check=True)
    assert last_run(d) == ("succeeded", None)  # counting turned off: nothing to say


# -- case 4: the database's character set and collation survive ----------------------------
LEGACY = "legacy_l1"
LEGACY_COPIES = ("legacy_copy", "legacy_back", "legacy_none")


def defaults_of(server: MariaDBServer, db: str) -> str:
    where = f"SCHEMA_NAME = {sql_string(db)}"
    return server.sql(
        "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM "
        f"information_schema.SCHEMATA WHERE {where}"
    )


@pytest.fixture
def latin1_database(mariadb_server: MariaDBServer) -> Iterator[None]:
    drop(mariadb_server, LEGACY, *LEGACY_COPIES)
    mariadb_server.sql(
        f"CREATE DATABASE {LEGACY} CHARACTER SET latin1 COLLATE latin1_german1_ci; "
        f"USE {LEGACY}; CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20)); "
        "INSERT INTO t VALUES (1, X'636166e9')"  # 'café' in latin1
    )
    yield
    drop(mariadb_server, LEGACY, *LEGACY_COPIES)


def test_a_databases_character_set_and_collation_are_recreated_and_checked(
    source: Callable[..., Deployment], mariadb_server: MariaDBServer, latin1_database: None
) -> None:
    d = source(legacy={"databases": [LEGACY]})
    d.backupctl("backup", "now", "web1/legacy", check=True)
    facts = facts_by_item(d)[LEGACY]
    assert (facts["database_charset"], facts["database_collation"]) == (
        "latin1",
        "latin1_german1_ci",
    )

    copy = d.backupctl(
        "restore", "web1/legacy", "--into-db", "mlocal", "--as", "legacy_copy", check=True
    )
    assert "database: character set latin1, collation latin1_german1_ci as recorded" in copy.stdout
    d.backupctl(
        "restore",
        "web1/legacy",
        "--to-host",
        "web1",
        "--database",
        "legacy_back",
        "--yes",
        check=True,
    )
    for db in ("legacy_copy", "legacy_back"):
        assert defaults_of(mariadb_server, db) == "latin1\tlatin1_german1_ci"
        assert mariadb_server.sql("SELECT HEX(name) FROM t", db=db) == "636166E9"
        # a table made later takes the database's defaults, as it would have on the droplet
        mariadb_server.sql("CREATE TABLE later (x VARCHAR(5))", db=db)
        where = f"TABLE_SCHEMA = '{db}' AND TABLE_NAME = 'later'"
        made = mariadb_server.sql(
            f"SELECT TABLE_COLLATION FROM information_schema.TABLES WHERE {where}"
        )
        assert made == "latin1_german1_ci"

    [result] = drill(d, "web1/legacy")
    assert result["verdict"] == "pass", result
    assert checks(result)["database"] == (
        "character set latin1, collation latin1_german1_ci as recorded"
    )


def test_a_collation_the_target_lacks_is_refused_before_anything_changes(
    source: Callable[..., Deployment], mariadb_server: MariaDBServer, latin1_database: None
) -> None:
    """The droplet's server newer than the target (a collation it does not have): said
    before the restore creates anything, with what to do instead."""
    d = source(legacy={"databases": [LEGACY]})
    d.backupctl("backup", "now", "web1/legacy", check=True)
    d.catalogue_rows(
        "UPDATE archives SET facts = json_set(facts, '$.database_collation', "
        f"'latin1_nowhere_ci') WHERE item = '{LEGACY}'"
    )
    refused = d.backupctl("restore", "web1/legacy", "--into-db", "mlocal", "--as", "legacy_none")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "collation latin1_nowhere_ci (character set latin1)" in refused.stderr
    assert "restore --to DIR and load the dump by hand" in refused.stderr
    assert "legacy_none" not in database_names(mariadb_server)

    [result] = drill(d, "web1/legacy")
    assert result["verdict"] == "fail"
    assert "collation latin1_nowhere_ci" in str(result["detail"])


# -- case 6: objects that dump fine but load elsewhere only when rewritten ------------------
REPORTS = "reports"


@pytest.fixture
def orphaned_definer(mariadb_server: MariaDBServer) -> Iterator[None]:
    copies = ("reports_copy", "reports_t", "reports_back")
    drop(mariadb_server, REPORTS, *copies)
    mariadb_server.sql(
        f"CREATE DATABASE {REPORTS}; USE {REPORTS};"
        "CREATE TABLE t (id INT PRIMARY KEY, v INT); CREATE TABLE audit (id INT);"
        "INSERT INTO t SELECT seq, seq FROM seq_1_to_20;"
        # created by a login that stays: its body names its own database
        "CREATE TRIGGER audited AFTER UPDATE ON t FOR EACH ROW "
        "INSERT INTO reports.audit VALUES (NEW.id)"
    )
    mariadb_server.create_user("reporter", "r")
    reporter = [
        "mariadb",
        "--no-defaults",
        f"--socket={mariadb_server.socket}",
        "-ureporter",
        "-pr",
        REPORTS,
        "-e",
    ]
    subprocess.run(
        [
            *reporter,
            "CREATE VIEW v AS SELECT id FROM t;"
            "CREATE TRIGGER bump BEFORE INSERT ON t FOR EACH ROW SET NEW.v = NEW.v + 1;"
            "CREATE PROCEDURE tally() SELECT COUNT(*) FROM reports.t",
        ],
        check=True,
    )
    mariadb_server.sql("DROP USER 'reporter'@'localhost'")
    yield
    drop(mariadb_server, REPORTS, *copies)


def test_a_view_whose_definer_was_dropped_warns_and_restores_everywhere(
    source: Callable[..., Deployment], mariadb_server: MariaDBServer, orphaned_definer: None
) -> None:
    d = source(reports={"databases": [REPORTS]})
    d.backupctl("backup", "now", "web1/reports", check=True)
    status, error = last_run(d)
    assert status == "warning" and error is not None
    assert (
        "web1/reports: reports: procedure tally, trigger bump, view v: definer "
        "reporter@localhost does not exist on the server"
    ) in error

    copy = d.backupctl(
        "restore", "web1/reports", "--into-db", "mlocal", "--as", "reports_copy", check=True
    )
    assert "3 object(s) defined by reporter@localhost" in copy.stdout
    assert "reference(s) to database 'reports' renamed to 'reports_copy'" in copy.stdout
    works(mariadb_server, "reports_copy")
    assert rows(mariadb_server, REPORTS, "audit") == 0  # the copy's trigger wrote the copy

    one = d.backupctl(
        "restore",
        "web1/reports",
        "--into-db",
        "mlocal",
        "--as",
        "reports_t",
        "--table",
        "t",
        check=True,
    )
    assert "1 table(s), 20 rows as recorded" in one.stdout
    mariadb_server.sql("INSERT INTO t VALUES (100, 1)", db="reports_t")  # bump works
    assert mariadb_server.sql("SELECT v FROM t WHERE id = 100", db="reports_t") == "2"

    d.backupctl(
        "restore",
        "web1/reports",
        "--to-host",
        "web1",
        "--database",
        "reports_back",
        "--yes",
        check=True,
    )
    works(mariadb_server, "reports_back")
    drop(mariadb_server, REPORTS)  # and under its own name, no --as
    d.backupctl("restore", "web1/reports", "--into-db", "mlocal", check=True)
    works(mariadb_server, REPORTS)

    [result] = drill(d, "web1/reports")
    assert result["verdict"] == "pass", result


def works(server: MariaDBServer, db: str) -> None:
    """The view reads, the triggers fire into this database, the procedure counts it."""
    assert server.sql("SELECT COUNT(*) FROM v", db=db) == "20"
    server.sql("INSERT INTO t VALUES (21, 1); UPDATE t SET v = 0 WHERE id = 21", db=db)
    assert server.sql("SELECT COUNT(*) FROM audit", db=db) == "1"
    assert server.sql("CALL tally()", db=db) == "21"
