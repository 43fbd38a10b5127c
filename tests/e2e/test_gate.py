"""backupd's key on a real sshd droplet, installed as `backupctl host setup` installs it:
``restrict`` and the gate as its forced command (decision 0022). What the allowlist holds
runs; everything else (a shell, a pty, forwarding, sftp and scp, rsync writing, a dump of
another database, injected options) is refused, logged, and changes nothing."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from backupd.actions.gatelist import allowlist, restore_allowlist
from backupd.remote import droplet_gate as gate
from backupd.remote.ssh import WRAP_SCRIPT, remote_command_line
from jobs.pg_common import psql_argv, sql_literal
from jobs.registry import load_config, registry
from tests.e2e.conftest import BIN, Deployment, mariadb_counts, pg_source, row_counts
from tests.e2e.test_sources import STAND_IN
from tests.e2e.test_sqlite import make_db
from tests.e2e.test_trees import DOCKER, build_tree, chown_to_droplet, snapshot
from tests.harness.droplet import Droplet, start_droplet
from tests.harness.fleet import HostSpec, write_fleet_config, write_passphrase
from tests.harness.mariadb import MariaDBServer
from tests.harness.postgres import PostgresCluster, postgres_bindir

pytestmark = pytest.mark.e2e

PROBE = """#!/bin/sh
# a stand-in dump tool: says what it was given and what its session holds
printf 'args:%s\\n' "$*"
printf 'agent:%s\\n' "${SSH_AUTH_SOCK:-none}"
if tty -s; then echo tty:yes; else echo tty:none; fi
"""


@dataclass
class Gated:
    droplet: Droplet
    syslog: socket.socket
    canary: Path  # a file hostile requests try to create
    allow: dict[str, object]  # the module's own allowlist

    def install(self, allow: dict[str, object], name: str) -> None:
        """Key and gate as `backupctl host setup` installs them, with ``allow``."""
        root = self.droplet.root
        allow = {**allow, "syslog": self.syslog.getsockname()}
        (root / f"{name}.json").write_text(json.dumps(allow))
        command = f"/usr/bin/python3 {root / 'gate.py'} {root / name}.json"
        key = " ".join((root / "client_key.pub").read_text().split()[:2])
        (root / "authorized_keys").write_text(f'restrict,command="{command}" {key}\n')

    def ssh(
        self, *args: str, stdin: bytes = b"", key: Path | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """OpenSSH as the backup host's key (or ``key``); ``args``: client options, then
        the request."""
        argv = self.droplet.ssh_argv()
        if key is not None:
            argv[argv.index("-i") + 1] = str(key)
        login = argv.pop()  # user@address goes after the options
        return subprocess.run(
            [*argv, *args[:-1], login, args[-1]] if args else [*argv, login],
            input=stdin,
            capture_output=True,
            timeout=60,
            check=False,
        )

    def logged(self) -> list[str]:
        lines = []
        self.syslog.settimeout(0.5)
        try:
            while True:
                lines.append(self.syslog.recv(4096).decode())
        except TimeoutError:
            return lines


@pytest.fixture(scope="module")
def gated(servers_dir: Path) -> Iterator[Gated]:
    droplet = start_droplet(servers_dir, "gated")
    folder = tempfile.mkdtemp(prefix="gate-", dir="/tmp")
    os.chmod(folder, 0o755)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(f"{folder}/log")
        os.chmod(f"{folder}/log", 0o666)  # the droplet's login writes to it
        probe = droplet.bin_dir / "pg_dump"
        probe.write_text(PROBE)
        probe.chmod(0o755)
        shutil.copy(gate.__file__, droplet.root / "gate.py")
        allow = {
            "gate": 1,
            "host": "gated",
            "wrapper": WRAP_SCRIPT,
            "requests": [
                {
                    "name": "db: dump a database",
                    "argv": [
                        "pg_dump",
                        "--no-password",
                        {"param": "database", "type": "pg_dbname", "values": ["app"]},
                    ],
                }
            ],
        }
        tree = droplet.root / "srv" / "shared"
        tree.mkdir(parents=True)
        (tree / "notes.txt").write_text("shared notes\n")
        (tree / "leak").symlink_to("/etc")
        chown_to_droplet(droplet, tree.parent)
        allow["requests"].append(  # type: ignore[attr-defined]
            {"name": "shared: read the tree", "tree": {"path": str(tree), "rrsync": "rrsync"}}
        )
        gated = Gated(droplet, sock, droplet.root / "tmp" / "pwned", allow)
        gated.install(allow, "allow")
        yield gated
    finally:
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)
        droplet.stop()


def test_an_allowed_request_runs_with_no_agent_and_no_terminal(gated: Gated) -> None:
    request = remote_command_line(("pg_dump", "--no-password", "--dbname=dbname='app'"))
    done = gated.ssh("-A", request)
    said = done.stdout.decode()
    assert done.returncode == 0, done.stderr
    assert "args:--no-password --dbname=dbname='app'" in said
    assert "agent:none" in said and "tty:none" in said  # restrict: no agent forwarded
    assert any("ran db: dump a database" in line for line in gated.logged())
    refused = gated.ssh("-tt", request)  # restrict: no terminal either
    assert b"PTY allocation request failed" in refused.stderr
    assert b"tty:yes" not in refused.stdout


def _pwn(path: Path) -> str:
    return f"touch {shlex.quote(str(path))}"


SENDER = "rsync --server --sender -logDtpre.iLsfxCIvu"  # what rsync sends for a pull
HOSTILE: dict[str, list[str]] = {
    "a login shell": [],
    "a shell command": ["sh -c {pwn}"],
    "an interactive bash": ["bash -i"],  # asking for a terminal too: see the first test
    "a command before the allowed one": ["{pwn}; pg_dump --no-password --dbname=dbname='app'"],
    "stdio forwarding (-W)": ["-W", "127.0.0.1:22", "pg_dump"],
    "remote port forwarding": ["-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:22", "true"],
    "sftp": ["-s", "sftp"],
    "scp receiving a file": ["scp -t {canary}"],
    "rsync receiving": ["rsync --server -logDtpre.iLsfxCIvu . {canary}"],
    "another database": ["pg_dump --no-password --dbname=dbname='postgres'"],
    "an option writing a file": ["pg_dump --no-password --dbname=dbname='app' --file={canary}"],
    "a short option": ["pg_dump --no-password -f {canary} --dbname=dbname='app'"],
    "a connection string for a name": ["pg_dump --no-password '--dbname=host=evil dbname=app'"],
    "an --rsh option": ["pg_dump --no-password --dbname=dbname='app' --rsh={pwn}"],
    "a newline": ["pg_dump --no-password --dbname=dbname='app'\n{pwn}"],
    "a substitution": ["pg_dump --no-password --dbname=dbname='app' $({pwn})"],
    "an oversized request": ["pg_dump --no-password --dbname=dbname='" + "a" * 40000 + "'"],
    "rsync reading above the tree": [f"{SENDER} . {{tree}}/../"],
    "rsync reading an absolute path": [f"{SENDER} . /etc/"],
    "rsync through a symlink out of the tree": [f"{SENDER} . {{tree}}/leak/"],
    "rsync reading two paths": [f"{SENDER} . {{tree}}/ /etc/"],
    "rsync writing into the tree": ["rsync --server -logDtpre.iLsfxCIvu . {tree}/"],
    "rsync following symlinks (-L)": ["rsync --server --sender -Llogr.iLsfxCIvu . {tree}/"],
    "rsync with its own remote shell": [f"{SENDER} --rsh={{pwn}} . {{tree}}/"],
}


# refused by sshd itself (``restrict``) before the gate runs
BY_SSHD = {"stdio forwarding (-W)", "remote port forwarding"}
# the configured tree, handed to rrsync -ro, which refuses the options
BY_RRSYNC = {"rsync following symlinks (-L)", "rsync with its own remote shell"}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_request_is_refused_logged_and_changes_nothing(gated: Gated, case: str) -> None:
    gated.logged()  # what earlier tests left
    tree = gated.droplet.root / "srv" / "shared"
    args = [
        a.replace("{pwn}", _pwn(gated.canary))
        .replace("{canary}", str(gated.canary))
        .replace("{tree}", str(tree))
        for a in HOSTILE[case]
    ]
    done = gated.ssh(*args)
    assert done.returncode != 0, done.stdout
    assert not gated.canary.exists()
    assert b"args:" not in done.stdout  # the tool never ran
    assert b"root:x:0:0" not in done.stdout  # nothing of /etc
    logged = gated.logged()
    if case in BY_SSHD:
        assert not logged  # the gate never ran
        return
    if case in BY_RRSYNC:
        assert any("ran shared: read the tree" in line for line in logged)
        assert b"rrsync error: " in done.stderr  # an option disabled, or not one it knows
        return
    assert done.returncode == gate.EXIT_REFUSED
    assert any("refused" in line and "from 127.0.0.1" in line for line in logged)
    if case != "sftp":  # a subsystem's stderr does not reach the client
        assert done.stderr.decode().splitlines()[-1].startswith("backupd-gate: refused: ")


def test_hello_tells_the_allowlist_apart(gated: Gated) -> None:
    done = gated.ssh(gate.HELLO)
    said = json.loads(done.stdout)
    allow = json.loads((gated.droplet.root / "allow.json").read_text())
    assert said["digest"] == gate.requests_digest(allow["requests"])


def deploy_gated(
    gated: Gated, tmp_path: Path, sources: dict[str, dict[str, object]], **settings: object
) -> Deployment:
    """backupd for the gated droplet with ``sources``, and the droplet's gate installed
    with the allowlist generated from that config (restore the module's afterwards)."""
    root = tmp_path / "backupd"
    root.mkdir()
    passphrase = write_passphrase(root / "passphrase")
    config = write_fleet_config(
        root / "backupd.toml",
        state_dir=root / "state",
        store=root / "store",
        passphrase_file=passphrase,
        hosts=[HostSpec("gated", gated.droplet, sources, settings=settings)],  # type: ignore[arg-type]
    )
    gated.install(allowlist(load_config(config).hosts["gated"]), "allow-config")
    return Deployment(root, config, root / "state", root / "store", passphrase)


def new_key(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def backed_up(gated: Gated, d: Deployment, target: str) -> list[str]:
    """``backupctl backup now TARGET`` through the gate: what the gate logged, none of it
    a refusal."""
    gated.logged()
    d.backupctl("backup", "now", target, check=True)
    ran = gated.logged()
    assert not any("refused" in line for line in ran), ran
    return ran


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
        pwn = f"COPY (SELECT 1) TO PROGRAM {sql_literal(_pwn(gated.canary))};\n"
        allowed = json.loads((gated.droplet.root / "allow-config.json").read_text())
        [begin] = [
            m
            for r in allowed["requests"]
            for m in r.get("session", {}).get("messages", [])
            if m.startswith("BEGIN")
        ]
        done = gated.ssh(session, stdin=(begin + pwn).encode())
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


def test_config_check_proves_the_gate_and_its_allowlist(gated: Gated, tmp_path: Path) -> None:
    """Gated with the config's allowlist: ok, and the sources plan through the gate. An
    allowlist from another config, or a config that does not know the droplet is gated,
    is a failure that says what to do."""
    path = make_db(gated.droplet, "checked.db", "WAL")
    d = deploy_gated(gated, tmp_path, {"app": {"kind": "sqlite", "path": str(path)}}, gate=True)
    try:
        d.store.mkdir(parents=True, exist_ok=True)
        done = d.backupctl("config", "check")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ok    gated gate: refuses what the config does not need" in done.stdout
        assert "ok    gated/app: 1 item(s)" in done.stdout
        gated.install(gated.allow, "allow")  # another config's allowlist
        stale = d.backupctl("config", "check")
        assert stale.returncode == 1
        assert "FAIL  gated gate: the droplet's allowlist is not the one" in stale.stdout
        assert "gated/app" not in stale.stdout  # nothing more is tried through it
        d.config.write_text(d.config.read_text().replace("gate = true", "gate = false"))
        unknown = d.backupctl("config", "check")
        assert "FAIL  gated gate: the droplet is gated: set gate = true" in unknown.stdout
    finally:
        gated.install(gated.allow, "allow")
        subprocess.run(["rm", "-rf", str(path.parent)], check=False)


def test_host_setup_applied_gates_the_droplet_as_the_config_needs(
    gated: Gated, tmp_path: Path
) -> None:
    """`backupctl host setup --apply` through an operator's own login (another key, not
    restricted): the gate, the allowlist and the key line it writes make a working gated
    droplet (config check ok, a backup through them); the sudoers drop-in of a tree read
    as root passed visudo; running it again changes nothing but the files' contents."""
    path = make_db(gated.droplet, "setup.db", "WAL")
    shared = gated.droplet.root / "srv" / "shared"
    sources: dict[str, dict[str, object]] = {
        "app": {"kind": "sqlite", "path": str(path)},
        "shared": {"kind": "directory", "path": str(shared), "sudo": True},
    }
    d = deploy_gated(gated, tmp_path, sources, gate=True)
    admin_key = tmp_path / "operator_key"  # the operator's own key, not restricted
    new_key(admin_key)
    keys = gated.droplet.root / "authorized_keys"
    keys.write_text(keys.read_text() + Path(f"{admin_key}.pub").read_text())
    staged = Path(tempfile.mkdtemp(prefix="setup-", dir="/tmp"))
    chown_to_droplet(gated.droplet, staged)
    setup = [str(BIN / "backupctl"), "--config", str(d.config), "host", "setup", "gated"]
    admin = ["--apply", "--admin", gated.droplet.user, "--identity", str(admin_key)]
    admin += ["--no-sudo", "--root", str(staged)]
    try:
        done = subprocess.run([*setup, *admin], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "backupd-setup: done: gated is gated" in done.stdout
        sudoers = (staged / "etc/sudoers.d/backupd").read_text()
        assert f"{gated.droplet.user} ALL=(root) NOPASSWD: /usr/bin/rrsync -ro {shared}" in sudoers
        assert 'env_keep += "SSH_ORIGINAL_COMMAND"' in sudoers
        [written] = staged.rglob("authorized_keys")
        [line] = [k for k in written.read_text().splitlines() if k.startswith("restrict,")]
        assert f"{staged}/etc/backupd-gate/gated.json" in line
        again = subprocess.run([*setup, *admin], capture_output=True, text=True, check=False)
        assert again.returncode == 0 and written.read_text().count("restrict,") == 1
        # the droplet's own key file now holds what the set-up wrote: it works as such
        keys.write_text(line + "\n")
        checked = d.backupctl("config", "check")
        assert "ok    gated gate: refuses what the config does not need" in checked.stdout
        d.backupctl("backup", "now", "gated/app", check=True)  # (its syslog: the droplet's)
        printed = d.backupctl("host", "setup", "gated", check=True).stdout
        assert printed.startswith("#!/bin/sh\n") and "visudo -cqf" in printed
    finally:
        gated.install(gated.allow, "allow")
        shutil.rmtree(staged, ignore_errors=True)
        subprocess.run(["rm", "-rf", str(path.parent)], check=False)


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
            [*dump[:4], "sh", "-c", _pwn(gated.canary)],
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


def test_a_restore_onto_a_gated_droplet_writes_with_the_restore_key_only_where_allowed(
    gated: Gated, tmp_path: Path
) -> None:
    """The daemon's key reads and never writes; the operator's restore key (0600) writes
    into the host's restore_paths and trees, through rrsync -wo, and reads nothing."""
    tree = build_tree(gated.droplet)
    landing = gated.droplet.root / "restore-here"
    landing.mkdir()
    chown_to_droplet(gated.droplet, landing)
    restore_key = tmp_path / "restore_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(restore_key)], check=True
    )
    sources: dict[str, dict[str, object]] = {"uploads": {"kind": "directory", "path": str(tree)}}
    settings = {"gate": True, "restore_key": str(restore_key), "restore_paths": [str(landing)]}
    d = deploy_gated(gated, tmp_path, sources, **settings)
    host = load_config(d.config).hosts["gated"]
    restore_allow = {**restore_allowlist(host), "syslog": gated.syslog.getsockname()}
    (gated.droplet.root / "restore.json").write_text(json.dumps(restore_allow))
    command = f"/usr/bin/python3 {gated.droplet.root / 'gate.py'} {gated.droplet.root}/restore.json"
    pub = " ".join(Path(f"{restore_key}.pub").read_text().split()[:2])
    keys = gated.droplet.root / "authorized_keys"
    keys.write_text(keys.read_text() + f'restrict,command="{command}" {pub}\n')
    try:
        backed_up(gated, d, "gated/uploads")
        restore = ("restore", "gated/uploads", "--to-host", "gated", "--yes")
        d.backupctl(*restore, "--path", str(landing), check=True)
        assert snapshot(landing) == snapshot(tree)
        logged = gated.logged()
        assert any(f"ran restore into {landing} for" in line for line in logged), logged
        elsewhere = d.backupctl(*restore, "--path", str(gated.droplet.root / "tmp"))
        assert elsewhere.returncode != 0 and "restores write only into" in elsewhere.stderr
        # with the keys themselves: the daemon's cannot write, the restore key cannot read
        push = f"rsync --server -logDtpre.iLsfxCIvu . {landing}/"
        assert gated.ssh(push).returncode == gate.EXIT_REFUSED  # the daemon's key
        read = f"rsync --server --sender -logDtpre.iLsfxCIvu . {tree}/"
        assert gated.ssh(read, key=restore_key).returncode == gate.EXIT_REFUSED
        outside = f"rsync --server -logDtpre.iLsfxCIvu . {gated.droplet.root}/tmp/"
        assert gated.ssh(outside, key=restore_key).returncode == gate.EXIT_REFUSED
        dump = remote_command_line(("pg_dump", "--no-password", "--dbname=dbname='app'"))
        assert gated.ssh(dump, key=restore_key).returncode == gate.EXIT_REFUSED
        restore_key.chmod(0o640)  # readable by a group (the daemon's user's): refused
        loose = d.backupctl(*restore, "--path", str(landing), "--force")
        assert loose.returncode != 0 and "readable by others" in loose.stderr
    finally:
        gated.install(gated.allow, "allow")
        subprocess.run(["rm", "-rf", str(tree.parent), str(landing)], check=True)


@pytest.fixture
def sudoers() -> Iterator[Path]:
    """A sudoers drop-in of this machine's sudo for the test (removed afterwards)."""
    path = Path(f"/etc/sudoers.d/backupd-test-{os.getpid()}")
    yield path
    path.unlink(missing_ok=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="installs a sudoers drop-in")
def test_a_tree_read_as_root_goes_through_sudo_rrsync_as_the_set_up_allows(
    gated: Gated, tmp_path: Path, sudoers: Path
) -> None:
    """sudo = true: the gate runs `sudo -n rrsync -ro TREE`, with the request kept in
    SSH_ORIGINAL_COMMAND, under the sudoers drop-in `backupctl host setup` writes; a file
    only root may read is in the backup."""
    tree = gated.droplet.root / "srv" / "private"
    (tree / "keys").mkdir(parents=True)
    (tree / "keys" / "root-only.key").write_text("root secret\n")
    (tree / "keys").chmod(0o700)  # root's: the droplet's login cannot read it
    (tree / "readme.txt").write_text("hello\n")
    sources: dict[str, dict[str, object]] = {
        "private": {"kind": "directory", "path": str(tree), "sudo": True}
    }
    d = deploy_gated(gated, tmp_path, sources, gate=True)
    staged = tmp_path / "staged"
    staged.mkdir()
    script = d.backupctl("host", "setup", "gated", check=True).stdout
    done = subprocess.run(["sh", "-s", str(staged)], input=script, text=True, capture_output=True)
    assert done.returncode == 0, done.stderr
    shutil.copy(staged / "etc/sudoers.d/backupd", sudoers)
    sudoers.chmod(0o440)
    try:
        ran = backed_up(gated, d, "gated/private")
        assert any("ran private: read the tree" in line for line in ran), ran
        out = tmp_path / "restored"
        d.backupctl("restore", "gated/private", "--to", str(out), check=True)
        assert (out / "keys" / "root-only.key").read_text() == "root secret\n"
    finally:
        gated.install(gated.allow, "allow")
        shutil.rmtree(tree.parent, ignore_errors=True)
