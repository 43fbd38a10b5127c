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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backupd.actions.gatelist import allowlist
from backupd.remote import droplet_gate as gate
from backupd.remote.ssh import WRAP_SCRIPT, remote_command_line
from jobs.pg_common import psql_argv, sql_literal
from jobs.registry import load_config
from tests.e2e.conftest import Deployment, pg_source, row_counts
from tests.e2e.test_sqlite import make_db
from tests.harness.droplet import Droplet, start_droplet
from tests.harness.fleet import HostSpec, write_fleet_config, write_passphrase
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

    def ssh(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        """OpenSSH as the backup host's key; ``args``: client options, then the request."""
        argv = self.droplet.ssh_argv()
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
    "an oversized request": ["pg_dump --no-password --dbname=dbname='" + "a" * 9000 + "'"],
}


# refused by sshd itself (``restrict``) before the gate runs
BY_SSHD = {"stdio forwarding (-W)", "remote port forwarding"}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_request_is_refused_logged_and_changes_nothing(gated: Gated, case: str) -> None:
    gated.logged()  # what earlier tests left
    args = [
        a.replace("{pwn}", _pwn(gated.canary)).replace("{canary}", str(gated.canary))
        for a in HOSTILE[case]
    ]
    done = gated.ssh(*args)
    assert done.returncode != 0, done.stdout
    assert not gated.canary.exists()
    assert b"args:" not in done.stdout  # the tool never ran
    logged = gated.logged()
    if case in BY_SSHD:
        assert not logged  # the gate never ran
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


def deploy_gated(gated: Gated, tmp_path: Path, sources: dict[str, dict[str, object]]) -> Deployment:
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
        hosts=[HostSpec("gated", gated.droplet, sources)],  # type: ignore[arg-type]
    )
    gated.install(allowlist(load_config(config).hosts["gated"]), "allow-config")
    return Deployment(root, config, root / "state", root / "store", passphrase)


def test_a_sqlite_source_backs_up_and_restores_through_the_gate(
    gated: Gated, tmp_path: Path
) -> None:
    """The allowlist generated from the config lets the whole backup through: the file
    looked for, the online copy streamed; the restore matches the droplet's rows."""
    path = make_db(gated.droplet, "gated-app.db", "WAL")
    d = deploy_gated(gated, tmp_path, {"app": {"kind": "sqlite", "path": str(path)}})
    try:
        gated.logged()
        d.backupctl("backup", "now", "gated/app", check=True)
        ran = gated.logged()
        assert any("ran app: online copy of the database" in line for line in ran), ran
        assert not any("refused" in line for line in ran), ran
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
    pg_cluster.psql(
        f"""DROP ROLE IF EXISTS {READER};
        CREATE ROLE {READER} LOGIN BYPASSRLS; GRANT pg_read_all_data TO {READER};"""
    )
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
        gated.logged()
        d.backupctl("backup", "now", "gated/maindb", check=True)
        ran = gated.logged()
        assert not any("refused" in line for line in ran), ran
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
