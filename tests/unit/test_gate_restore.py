"""A PostgreSQL restore onto a gated droplet (decision 0022): every command the restore
code sends with the restore key passes the restore allowlist as sent, psql's input is
only backupd's fixed SQL, and what the daemon's key or a hostile restore key would send
is refused."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from backupd.actions.gatelist import allowlist, restore_allowlist
from backupd.local.process import CommandResult, FeedResult
from backupd.remote import droplet_gate as gate
from backupd.remote.ssh import remote_command_line
from jobs.base import DatabaseRestore
from jobs.pg_restore import PostgresRestore
from jobs.registry import load_config
from tests.unit.configs import HEAD
from tests.unit.test_pg_world import TOC

CONFIG = (
    HEAD
    + """[hosts.web1]
address = "127.0.0.1"
user = "backupd"
key = "id_ed25519"
gate = true
restore_key = "restore_key"
[hosts.web1.sources.maindb]
kind = "postgresql"
databases = ["shop", "it's\\nodd"]
username = "backupd"
role_passwords = false
"""
)
TMP = "/tmp/backupd.AbCdEf0123"
FACTS = {
    "database": {
        "encoding": "UTF8",
        "lc_collate": "C",
        "lc_ctype": "C",
        "locale_provider": "icu",
        "icu_locale": "und-u-ks-level2",
        "owner": "shop owner",
    },
    "roles": {"owner": ["postgres", "shop owner"], "privileges": ["reader"]},
    "extensions": {"pgcrypto": "1.3"},
    "rows": {"public.people": 3, '"s=1"."t|x y"': 2},
}


class GatedDroplet:
    """The one execution seam, as a gated droplet's sshd and gate would answer: each
    command must pass ``allow`` as sent, a session's input the gate's filter whole; the
    answers are a server's."""

    label = "web1"

    def __init__(self, allow: dict[str, object]) -> None:
        self.allow = json.loads(json.dumps(allow))
        self.ran: list[str] = []  # the requests' names, in order
        self.sql: list[bytes] = []

    def _pass(self, argv: Sequence[str], stdin: bytes | None) -> str:
        name, run, request = gate.decide(self.allow, remote_command_line(argv))
        assert run[4:] == list(argv)
        mode = request.get("stdin", "none")
        if mode == "session":
            filt = gate.SessionFilter(request["session"])
            passed = b"".join(filt.feed(stdin or b""))
            assert filt.refused is None, filt.refused
            filt.finish()
            self.sql.append(passed)
        else:
            assert mode == "pass" or not stdin, f"{name}: its input would be /dev/null"
        self.ran.append(name)
        return name

    def run(
        self, argv: Sequence[str], *, timeout: float, stdin: bytes | None = None, **_: object
    ) -> CommandResult:
        name = self._pass(argv, stdin)
        return CommandResult(tuple(argv), 0, self._answer(name, stdin or b""), b"", 0.0)

    def _answer(self, name: str, stdin: bytes) -> bytes:
        if name.endswith("make a file"):
            return TMP.encode()
        if name.endswith("read a file"):
            return TOC.encode()
        if b"json_build_object(\n 'roles'" in stdin:
            roles = ["postgres", "reader", "shop owner"]
            found = {"roles": roles, "acts": ["reader", "shop owner"], "supers": ["postgres"]}
            return json.dumps({**found, "extensions": ["pgcrypto"]}).encode()
        if b"'database', (SELECT" in stdin:
            database = {k: v for k, v in FACTS["database"].items() if k != "owner"}  # type: ignore[attr-defined]
            row = {"encoding": "UTF8", "datcollate": "C", "datctype": "C"}
            row |= {"datlocprovider": "i", "daticulocale": database["icu_locale"]}
            return json.dumps({"database": row, "large_objects": 0}).encode()
        if stdin.startswith(b"SELECT count(*) FROM pg_database"):
            return b"1"
        return b"3\n2\n" if stdin.startswith(b"SELECT count(*)") else b""

    def feed(self, argv: Sequence[str], produce: object, *, timeout: float) -> FeedResult:
        self._pass(argv, b"")
        return FeedResult(tuple(argv), 0, b"", 0.0, 0, True)

    @contextlib.contextmanager
    def private_file(self, content: bytes) -> Iterator[str]:
        raise AssertionError("a PostgreSQL restore sends no secret")
        yield ""


def load(tmp_path: Path) -> object:
    for key in ("id_ed25519", "restore_key"):
        (tmp_path / key).write_text("k")
        (tmp_path / key).chmod(0o600)
    (tmp_path / "backupd.toml").write_text(CONFIG)
    return load_config(tmp_path / "backupd.toml").hosts["web1"]  # type: ignore[attr-defined]


def test_a_whole_restore_and_one_table_pass_the_restore_key_s_gate(tmp_path: Path) -> None:
    """Existence, what the server lacks, the probe and the database made as it was (its
    owner, encoding, ICU locale), one table's listing and --use-list in a temporary
    file, pg_restore, row counts of odd names, the properties checked: all as sent."""
    host = load(tmp_path)
    kind = PostgresRestore()
    gated = kind.restore_gate(host.sources["maindb"].options, "maindb")  # type: ignore[attr-defined]
    assert gated.options.username == "backupd_restore" and gated.options.sudo_user is None
    droplet = GatedDroplet(restore_allowlist(host))  # type: ignore[arg-type]
    opts, name = gated.options, "it's\nodd"
    whole = DatabaseRestore(name, None, keep_owners=True, replace=True, facts=FACTS)
    assert kind.database_exists(opts, droplet, name)
    assert kind.lacks(opts, droplet, whole) == []  # postgres: a superuser's, pg_restore's
    kind.prepare_database(opts, droplet, whole)
    argv = kind.restore_argv(opts, whole, None)
    droplet.feed(argv, None, timeout=1)
    assert kind.row_counts(opts, droplet, name, list(FACTS["rows"])) == {  # type: ignore[arg-type]
        "public.people": 3,
        '"s=1"."t|x y"': 2,
    }
    kind.extra_checks(opts, droplet, whole)
    table = DatabaseRestore(name, "public.people", keep_owners=True, replace=True, facts=FACTS)

    def peek(argv: tuple[str, ...]) -> FeedResult:
        return droplet.feed(argv, None, timeout=1)

    with kind.restore_setup(opts, droplet, table, peek) as setup:
        droplet.feed(kind.restore_argv(opts, table, None) + setup.extra_argv, None, timeout=1)
    made = [s for s in droplet.sql if b"CREATE DATABASE" in s]
    assert [m.count(b'OWNER :"owner"') for m in made] == [1, 1]  # the probe, then it
    assert any(n.endswith("pg_restore") for n in droplet.ran)
    assert droplet.ran[-1].endswith("remove a file")


def test_a_role_the_restore_role_cannot_act_as_is_named_with_its_grant(tmp_path: Path) -> None:
    host = load(tmp_path)
    kind = PostgresRestore()
    opts = kind.restore_gate(host.sources["maindb"].options, "maindb").options  # type: ignore[attr-defined]

    class NotAMember(GatedDroplet):
        def _answer(self, name: str, stdin: bytes) -> bytes:
            if b"'acts'" in stdin:
                found = {"roles": ["postgres", "reader", "shop owner"], "acts": []}
                found |= {"supers": ["postgres"], "extensions": ["pgcrypto"]}
                return json.dumps(found).encode()
            return super()._answer(name, stdin)

    droplet = NotAMember(restore_allowlist(host))  # type: ignore[arg-type]
    req = DatabaseRestore("shop", None, keep_owners=True, replace=False, facts=FACTS)
    [reader, owner] = kind.lacks(opts, droplet, req)
    assert (reader.what, owner.what) == (
        "membership in role reader",
        "membership in role shop owner",
    )
    assert not owner.creatable and 'GRANT "shop owner" TO "backupd_restore"' in owner.how


def _psql(host: object, db: str, *more: str) -> tuple[str, ...]:
    from jobs.pg_common import psql_argv

    opts = PostgresRestore().restore_gate(host.sources["maindb"].options, "maindb").options  # type: ignore[attr-defined]
    return (*psql_argv(opts, db), *more)


@pytest.mark.parametrize(
    "case",
    [
        "psql: a shell escape",
        "psql: SQL of its own",
        "psql: one of psql's own settings",
        "psql: a command line of its own",
        "pg_restore: writing a file",
        "pg_restore: as another role",
        "cat: a file that is not a restore's",
        "rm: a file that is not a restore's",
        "sh: a script of its own",
        "pg_dump: reading (the daemon's verb)",
        "pg_restore: into a database the config does not name",
        "psql: dropping a database the config does not name",
        "psql: connected to a database the config does not name",
    ],
)
def test_what_a_restore_key_may_not_do_is_refused(tmp_path: Path, case: str) -> None:
    host = load(tmp_path)
    allow = json.loads(json.dumps(restore_allowlist(host)))  # type: ignore[arg-type]
    psql = _psql(host, "shop")
    prefix = ("sh", "-c", gate_wrapper(allow), "backupd-wrap")
    requests = {
        "psql: a shell escape": (psql, b"\\! id\n"),
        "psql: SQL of its own": (psql, b"COPY (SELECT 1) TO PROGRAM 'id';\n"),
        "psql: one of psql's own settings": ((*psql, "--set", "ON_ERROR_STOP=0"), b""),
        "psql: a command line of its own": ((*psql, "--command", "SELECT 1"), b""),
        "pg_restore: writing a file": (
            (
                "pg_restore",
                "--username",
                "backupd_restore",
                "--no-password",
                "--exit-on-error",
                "--dbname=dbname='shop'",
                "--file",
                "/etc/cron.d/x",
            ),
            b"",
        ),
        "pg_restore: as another role": (
            (
                "pg_restore",
                "--username",
                "postgres",
                "--no-password",
                "--exit-on-error",
                "--dbname=dbname='shop'",
            ),
            b"",
        ),
        "cat: a file that is not a restore's": (("cat", "--", "/etc/shadow"), b""),
        "rm: a file that is not a restore's": (("rm", "-f", "--", "/tmp/backupd.x/../../etc"), b""),
        "sh: a script of its own": (("sh", "-c", "id"), b""),
        "pg_restore: into a database the config does not name": (
            (*restore_argv(host, "billing"),),
            b"",
        ),
        "psql: dropping a database the config does not name": (
            (*_psql(host, "postgres"), "--set", "db=billing"),
            b'DROP DATABASE IF EXISTS :"db" WITH (FORCE);\nCREATE DATABASE :"db";',
        ),
        "psql: connected to a database the config does not name": (_psql(host, "billing"), b""),
        "pg_dump: reading (the daemon's verb)": (
            ("pg_dump", "--username", "backupd", "--dbname=dbname='shop'"),
            b"",
        ),
    }
    argv, stdin = requests[case]
    try:
        _name, run, request = gate.decide(allow, remote_command_line(argv))
    except gate.Refused:
        return
    assert run[: len(prefix)] == list(prefix)
    filt = gate.SessionFilter(request["session"])  # only a session may have matched
    filt.feed(stdin)
    assert filt.refused is not None


def restore_argv(host: object, database: str) -> tuple[str, ...]:
    kind = PostgresRestore()
    opts = kind.restore_gate(host.sources["maindb"].options, "maindb").options  # type: ignore[attr-defined]
    return kind.restore_argv(opts, DatabaseRestore(database, None, True, False, FACTS), None)


def test_a_restore_beside_a_listed_database_may_take_its_name_and_a_suffix(
    tmp_path: Path,
) -> None:
    host = load(tmp_path)
    allow = json.loads(json.dumps(restore_allowlist(host)))  # type: ignore[arg-type]
    for argv in (
        restore_argv(host, "shop_restored"),
        restore_argv(host, "it's\nodd_2026"),
        (*_psql(host, "postgres"), "--set", "db=shop_restored"),
        (*_psql(host, "postgres"), "--set", "db=backupd_probe_0a1b2c3d4e5f"),
        _psql(host, "shop_restored"),
    ):
        assert gate.decide(allow, remote_command_line(argv))[1][4:] == list(argv)
    with pytest.raises(gate.Refused, match="not one the config names"):
        gate.decide(allow, remote_command_line(restore_argv(host, "shopping")))
    with pytest.raises(gate.Refused, match="db 'billing' is not one the config names"):
        gate.decide(allow, remote_command_line((*_psql(host, "postgres"), "--set", "db=billing")))


def gate_wrapper(allow: dict[str, object]) -> str:
    return str(allow["wrapper"])


def test_the_daemon_s_key_has_no_restore_verb(tmp_path: Path) -> None:
    host = load(tmp_path)
    daemon = json.loads(json.dumps(allowlist(host)))  # type: ignore[arg-type]
    restore = json.loads(json.dumps(restore_allowlist(host)))  # type: ignore[arg-type]
    droplet = GatedDroplet(restore)
    kind = PostgresRestore()
    opts = kind.restore_gate(host.sources["maindb"].options, "maindb").options  # type: ignore[attr-defined]
    argv = kind.restore_argv(opts, DatabaseRestore("shop", None, True, False, FACTS), None)
    droplet.feed(argv, None, timeout=1)
    with pytest.raises(gate.Refused):
        gate.decide(daemon, remote_command_line(argv))
    psql = _psql(host, "shop", "--set", "db=shop")
    with pytest.raises(gate.Refused):
        gate.decide(daemon, remote_command_line(psql))


MARIADB = """
[hosts.web1.sources.shopdb]
kind = "mariadb"
databases = ["shop", "odd `name`"]
socket = "/run/mysqld/mysqld.sock"
username = "backupd"
"""


class MariaDBDroplet(GatedDroplet):
    def _answer(self, name: str, stdin: bytes) -> bytes:
        return b"0"  # no database, no privilege to name other definers

    def run(
        self, argv: Sequence[str], *, timeout: float, stdin: bytes | None = None, **_: object
    ) -> CommandResult:
        self._pass(argv, stdin)
        sql = argv[-1]
        if "CURRENT_USER" in sql:
            out = b"backupd_restore@localhost".hex().upper()
        elif "information_schema.SCHEMATA WHERE" in sql and "DEFAULT_CHARACTER" in sql:
            out = "utf8mb4\tutf8mb4_general_ci"
        elif "COLLATIONS" in sql:
            out = "1"
        elif sql.startswith("SELECT COUNT(*) FROM `"):
            out = "4\n2"
        else:
            out = "0"
        return CommandResult(tuple(argv), 0, out.encode(), b"", 0.0)


def test_a_mariadb_restore_passes_as_its_sandboxed_restore_user(tmp_path: Path) -> None:
    """Every command of a whole restore (existence, collation, the database made as it
    was, the definer check, the load, counts, properties) passes as sent, each with
    --sandbox and the restore user's option file; the client as anyone else does not."""
    from jobs.mariadb_restore import MariaDBRestore

    load(tmp_path)  # its keys
    (tmp_path / "backupd.toml").write_text(CONFIG + MARIADB)
    host = load_config(tmp_path / "backupd.toml").hosts["web1"]
    allow = restore_allowlist(host)
    kind = MariaDBRestore()
    gated = kind.restore_gate(host.sources["shopdb"].options, "shopdb")  # type: ignore[arg-type]
    opts = gated.options
    assert opts.defaults_file == "/etc/backupd/shopdb-restore.cnf" and opts.sandbox
    droplet = MariaDBDroplet(allow)
    facts = {
        "database_charset": "utf8mb4",
        "database_collation": "utf8mb4_general_ci",
        "rows": {"orders": 4, "odd `t`": 2},
    }
    name = "odd `name`_restored"
    req = DatabaseRestore(name, None, keep_owners=True, replace=False, facts=facts)
    assert not kind.database_exists(opts, droplet, name)
    assert kind.lacks(opts, droplet, req) == []
    kind.prepare_database(opts, droplet, req)
    kind.load_rewrite(opts, droplet, "odd `name`", list(facts["rows"]), req)  # type: ignore[arg-type]
    droplet.feed(kind.restore_argv(opts, req, None), None, timeout=1)
    assert kind.row_counts(opts, droplet, name, list(facts["rows"])) == {"orders": 4, "odd `t`": 2}  # type: ignore[arg-type]
    kind.extra_checks(opts, droplet, req)
    [load_request] = [r for r in allow["requests"] if r["name"] == "shopdb: restore: load the dump"]
    for request in (r for r in allow["requests"] if r["name"].startswith("shopdb: restore")):
        assert {"--sandbox", "--local-infile=0"} <= {
            a for a in request["argv"] if isinstance(a, str)
        }
    assert load_request["stdin"] == "pass"
    as_root = remote_command_line(
        ("mariadb", "--socket=/run/mysqld/mysqld.sock", "--user=root", "--execute", "SELECT 1")
    )
    unsandboxed = remote_command_line(
        (*kind.restore_argv(opts.model_copy(update={"sandbox": False}), req, None),)
    )
    for hostile in (as_root, unsandboxed):
        with pytest.raises(gate.Refused):
            gate.decide(json.loads(json.dumps(allow)), hostile)


def test_thousands_of_tables_are_counted_in_requests_the_gate_takes(tmp_path: Path) -> None:
    """Row counts of 3,000 tables with long names: several --execute requests, each under
    the gate's 32 KiB, every table counted once, in order."""
    from jobs.mariadb_restore import MariaDBRestore

    load(tmp_path)
    (tmp_path / "backupd.toml").write_text(CONFIG + MARIADB)
    host = load_config(tmp_path / "backupd.toml").hosts["web1"]
    opts = MariaDBRestore().restore_gate(host.sources["shopdb"].options, "shopdb").options  # type: ignore[arg-type]

    class Counting(GatedDroplet):
        def __init__(self, allow: dict[str, object]) -> None:
            super().__init__(allow)
            self.sizes: list[int] = []
            self.counted: list[int] = []

        def run(
            self, argv: Sequence[str], *, timeout: float, stdin: bytes | None = None, **_: object
        ) -> CommandResult:
            self.sizes.append(len(remote_command_line(argv).encode()))
            self._pass(argv, stdin)  # Refused above MAX_REQUEST
            n = argv[-1].count("SELECT COUNT(*)")
            start = sum(self.counted)
            self.counted.append(n)
            return CommandResult(
                tuple(argv), 0, " ".join(str(start + i) for i in range(n)).encode(), b"", 0.0
            )

    droplet = Counting(restore_allowlist(host))
    tables = [f"table_{i:04d}_" + "x" * 50 for i in range(3000)]
    counts = MariaDBRestore().row_counts(opts, droplet, "shop", tables)
    assert list(counts.values()) == list(range(3000))
    assert len(droplet.counted) > 1 and max(droplet.sizes) <= gate.MAX_REQUEST
