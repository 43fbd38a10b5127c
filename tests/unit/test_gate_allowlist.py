"""The allowlist generated from a config (backupd/actions/gatelist.py, decision 0022) lets
through exactly what the host's sources send, and nothing the config does not name."""

from __future__ import annotations

import contextlib
import json
import shlex
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from backupd.actions.gatelist import allowlist
from backupd.errors import UsageError
from backupd.local.process import CommandResult
from backupd.remote import droplet_gate as gate
from backupd.remote.ssh import remote_command_line
from jobs.base import DumpStream
from jobs.registry import load_config, registry
from tests.unit.configs import HEAD

CONFIG = (
    HEAD
    + """[hosts.web1]
address = "127.0.0.1"
user = "backup"
key = "id_ed25519"
[hosts.web1.sources.maindb]
kind = "postgresql"
databases = ["app", "it's\\nodd"]
sudo_user = "postgres"
min_bytes = "10KiB"
[hosts.web1.sources.every]
kind = "postgresql"
socket_dir = "/run/postgresql"
port = 5433
globals = false
"""
)


class Listing:
    """The one execution seam: a droplet whose psql lists these databases."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = names
        self.asked: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str], **_: object) -> CommandResult:
        self.asked.append(tuple(argv))
        out = "\0".join(self.names).encode()
        return CommandResult(tuple(argv), 0, out, b"", 0.0)


def load(tmp_path: Path, text: str = CONFIG) -> object:
    path = tmp_path / "backupd.toml"
    path.write_text(text)
    return load_config(path)


def passes(allow: dict[str, object], argv: Sequence[str]) -> list[str]:
    """What the gate would run for backupd's request ``argv`` (as sent: wrapped)."""
    _name, run, request = gate.decide(json.loads(json.dumps(allow)), remote_command_line(argv))
    assert request.get("stdin", "none") == "none"
    return run


class Session:
    """The held psql session as the gate would carry it: what backupd sends goes through
    the allowlist's SessionFilter; the answers are a database's."""

    def __init__(self, spec: dict[str, object], tables: str) -> None:
        self.filter = gate.SessionFilter(spec)
        self.answers = ["00000003-0000001B-1", tables, "{}", "5\n7"]
        self.passed: list[bytes] = []

    def send(self, text: str) -> None:
        self.passed += self.filter.feed(text.encode())
        if self.filter.refused:
            raise self.filter.refused

    def read_until(self, marker: bytes, timeout: float) -> bytes:
        return self.answers.pop(0).encode() if marker == b"backupd-end" else b""

    @contextlib.contextmanager
    def pinging(self, every: float, ping: str, marker: bytes) -> Iterator[None]:
        self.send(ping)
        yield

    def close(self) -> None:
        self.filter.finish()


class SessionDroplet(Listing):
    """Opens the session the allowlist's session request for its argv allows."""

    def __init__(self, allow: dict[str, object]) -> None:
        super().__init__([])
        self.allow = allow
        self.session = Session({}, TABLES)

    def interactive(self, argv: Sequence[str]) -> Session:
        _name, run, request = gate.decide(
            json.loads(json.dumps(self.allow)), remote_command_line(argv)
        )
        assert run[4:] == list(argv) and request["stdin"] == "session"
        self.session.filter = gate.SessionFilter(request["session"])
        return self.session


def test_every_request_the_sources_make_passes_and_runs_as_sent(tmp_path: Path) -> None:
    config = load(tmp_path)
    host = config.hosts["web1"]  # type: ignore[attr-defined]
    allow = allowlist(host)
    kind = registry()["postgresql"]
    for source in host.sources.values():
        droplet = Listing(["app", "it's\nodd", "other db"])
        units = kind.plan(source.options, droplet)  # type: ignore[arg-type]
        sent = [*droplet.asked, *(u.argv for u in units if isinstance(u, DumpStream))]
        sent += [(*units[0].argv, "--snapshot", "00000003-0000001B-1")]  # type: ignore[union-attr]
        for argv in sent:
            assert passes(allow, argv)[4:] == list(argv)


def test_a_database_the_source_does_not_list_is_refused(tmp_path: Path) -> None:
    config = load(tmp_path)
    host = config.hosts["web1"]  # type: ignore[attr-defined]
    allow = allowlist(host)
    kind = registry()["postgresql"]
    maindb = host.sources["maindb"]
    [app, *_] = kind.plan(maindb.options, Listing([]))  # type: ignore[arg-type]
    other = tuple(a.replace("'app'", "'postgres'") for a in app.argv)  # type: ignore[union-attr]
    with pytest.raises(gate.Refused, match="'postgres' is not one the config names"):
        passes(allow, other)
    # the source that dumps every database may dump any (it lists them first)
    every = host.sources["every"]
    [listed] = kind.plan(every.options, Listing(["postgres"]))  # type: ignore[arg-type]
    assert passes(allow, listed.argv)  # type: ignore[union-attr]


def test_the_allowlist_is_stable_and_names_its_digest(tmp_path: Path) -> None:
    host = load(tmp_path).hosts["web1"]  # type: ignore[attr-defined]
    first, again = allowlist(host), allowlist(host)
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)
    assert first["digest"] == gate.requests_digest(first["requests"])
    names = [r["name"] for r in first["requests"]]
    assert "maindb: dump the globals" in names and "every: dump the globals" not in names
    assert all(
        "sudo" in shlex.join(map(str, r["argv"]))
        for r in first["requests"]
        if r["name"].startswith("maindb")
    )


TREES = """
[hosts.web1.sources.files]
kind = "directory"
path = "/srv/files"
before = ["/usr/local/bin/snapshot", "take"]
after = ["/usr/local/bin/snapshot", "drop"]
[hosts.web1.sources.data]
kind = "volume"
volume = "app_data"
sudo = true
rrsync = "/usr/share/rsync/scripts/rrsync"
"""


def test_trees_pass_their_read_hooks_and_checks_and_nothing_else(tmp_path: Path) -> None:
    host = load(tmp_path, CONFIG + TREES).hosts["web1"]  # type: ignore[attr-defined]
    allow = json.loads(json.dumps(allowlist(host)))
    trees = {r["name"]: r["tree"] for r in allow["requests"] if "tree" in r}
    assert trees == {
        "data: read the tree": {
            "inspect": [
                *("sudo", "-n", "docker", "volume", "inspect"),
                *("--format", "{{ .Mountpoint }}", "--", "app_data"),
            ],
            "sudo": True,
            "rrsync": "/usr/share/rsync/scripts/rrsync",
        },
        "files: read the tree": {"path": "/srv/files", "rrsync": "rrsync"},
    }
    for argv in (
        ("/usr/local/bin/snapshot", "take"),
        ("/usr/local/bin/snapshot", "drop"),
        ("test", "-e", "/srv/files"),
        ("find", "-P", "/srv/files/", "-type", "f", "!", "-readable", "-print0"),
        ("sudo", "-n", "docker", "volume", "inspect", "--", "app_data"),
    ):
        assert passes(allow, argv)[4:] == list(argv)
    for hostile in (
        ("/usr/local/bin/snapshot", "drop", "--all"),
        ("find", "-P", "/srv/files/", "-type", "f", "-delete"),
        ("sudo", "-n", "docker", "volume", "inspect", "--", "other"),
        ("sudo", "-n", "docker", "exec", "app", "sh"),
        ("test", "-e", "/etc/shadow"),
    ):
        with pytest.raises(gate.Refused):
            passes(allow, hostile)


def test_a_sqlite_source_passes_its_copy_and_nothing_else(tmp_path: Path) -> None:
    text = CONFIG + '[hosts.web1.sources.app]\nkind = "sqlite"\npath = "/srv/app/app.db"\n'
    host = load(tmp_path, text).hosts["web1"]  # type: ignore[attr-defined]
    allow = allowlist(host)
    [copy] = registry()["sqlite"].plan(host.sources["app"].options, Listing([]))  # type: ignore[arg-type]
    assert passes(allow, copy.argv)[4:] == list(copy.argv)  # type: ignore[union-attr]
    assert passes(allow, ("test", "-e", "/srv/app/app.db"))
    another = tuple(a.replace("/srv/app/app.db", "/etc/shadow") for a in copy.argv)  # type: ignore[union-attr]
    with pytest.raises(gate.Refused, match="not a request"):
        passes(allow, another)


TABLES = json.dumps({"public.orders": 8192, '"Odd ""x"""."a\nb"': 16384})


def test_the_snapshot_session_sends_only_what_the_allowlist_holds(tmp_path: Path) -> None:
    """Every statement of a real hold (begin and snapshot, tables, world, counts of odd
    names, ping, commit) passes the gate's filter; then the dump in that snapshot."""
    host = load(tmp_path).hosts["web1"]  # type: ignore[attr-defined]
    allow = allowlist(host)
    kind = registry()["postgresql"]
    for source in host.sources.values():
        [stream, *_] = kind.plan(source.options, Listing(["it's\nodd"]))  # type: ignore[arg-type]
        droplet = SessionDroplet(allow)
        with kind.hold(source.options, stream, droplet) as held:  # type: ignore[attr-defined]
            assert held.facts["rows"] == {'"Odd ""x"""."a\nb"': 5, "public.orders": 7}
        sent = b"".join(droplet.session.passed)
        assert b'SELECT count(*) FROM "Odd ""x"""."a\nb";\n' in sent
        assert sent.endswith(b"COMMIT;\n\\q\n")
        dump = (*stream.argv, *held.extra_argv)  # type: ignore[union-attr]
        assert passes(allow, dump)[4:] == list(dump)


HOSTILE_SQL = {
    "a program run by COPY": "COPY (SELECT 1) TO PROGRAM 'id';\n",
    "a shell escape": "\\! id\n",
    "a count with more after it": "SELECT count(*) FROM public.t; DROP TABLE t;\n",
    "a count of a function": "SELECT count(*) FROM pg_read_file('/etc/passwd');\n",
    "a commit and then more": "COMMIT;\nDROP TABLE t;\n",
    "a psql variable": "SELECT count(*) FROM :x.t;\n",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_SQL))
def test_sql_of_the_backup_host_s_own_ends_the_session(tmp_path: Path, case: str) -> None:
    allow = allowlist(load(tmp_path).hosts["web1"])  # type: ignore[attr-defined]
    [session] = [r for r in allow["requests"] if r["name"] == "maindb: snapshot and facts"]
    filt = gate.SessionFilter(session["session"])
    assert filt.feed(HOSTILE_SQL[case].encode()) == []
    with pytest.raises(gate.Refused, match=r"not a statement the allowlist holds|inside"):
        if filt.refused:
            raise filt.refused
        filt.finish()  # a count not yet whole when the session ends


MARIADB = """
[hosts.web1.sources.shop]
kind = "mariadb"
databases = ["shop", "odd `name`"]
socket = "/run/mysqld/mysqld.sock"
username = "backupd"
defaults_file = "/etc/backupd/mariadb.cnf"
"""


def test_a_mariadb_source_passes_each_listed_dump_and_nothing_else(tmp_path: Path) -> None:
    host = load(tmp_path, CONFIG + MARIADB).hosts["web1"]  # type: ignore[attr-defined]
    allow = allowlist(host)
    kind = registry()["mariadb"]
    dumps = kind.plan(host.sources["shop"].options, Listing([]))  # type: ignore[arg-type]
    for dump in dumps:
        assert passes(allow, dump.argv)[4:] == list(dump.argv)  # type: ignore[union-attr]
    [shop, *_] = dumps
    other = tuple(a.replace("shop", "mysql") for a in shop.argv)  # type: ignore[union-attr]
    with pytest.raises(gate.Refused, match="not a request"):
        passes(allow, other)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ('defaults_file = "/etc/backupd/mariadb.cnf"', "cannot send a password"),
        ('databases = ["shop", "odd `name`"]', "must list its databases"),
    ],
)
def test_a_mariadb_source_the_gate_cannot_carry_says_why(
    tmp_path: Path, change: str, why: str
) -> None:
    """A password over stdin (an option file from the backup host could set any option)
    or no list of databases (each dump's SQL is built from its name) is named at once."""
    secret = tmp_path / "secret"
    secret.write_text("pw")
    secret.chmod(0o600)
    swap = f'password_file = "{secret}"' if "defaults" in change else ""
    text = CONFIG + MARIADB.replace(change, swap)
    host = load(tmp_path, text).hosts["web1"]  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match=rf"web1/shop \(a gated MariaDB source {why}"):
        allowlist(host)


def test_two_sources_on_one_server_may_each_begin_their_own_session(tmp_path: Path) -> None:
    """Same psql, other timeouts: the gate runs the first request matching the argv, so
    that one holds both sources' begin statements."""
    text = CONFIG.replace(
        "port = 5433\nglobals = false\n", 'port = 5433\nglobals = false\nlock_timeout = "7s"\n'
    )
    text += '[hosts.web1.sources.again]\nkind = "postgresql"\n'
    text += 'socket_dir = "/run/postgresql"\nport = 5433\n'
    allow = allowlist(load(tmp_path, text).hosts["web1"])  # type: ignore[attr-defined]
    sessions = [r["session"] for r in allow["requests"] if "session" in r]
    firsts = {f for s in sessions for f in s["first"]}
    assert any("lock_timeout = 7000" in f for f in firsts)
    assert any("lock_timeout = 120000" in f for f in firsts)
    every = [s for s in sessions if len(s["first"]) == 2]
    assert every, sessions
