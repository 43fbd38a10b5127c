"""backupd's key on a real sshd droplet, installed as `backupctl host setup` installs it:
``restrict`` and the gate as its forced command (decision 0022). What the allowlist holds
runs; everything else (a shell, a pty, forwarding, sftp and scp, rsync writing or reading
outside its tree, a dump of another database, injected options) is refused, logged, and
changes nothing."""

from __future__ import annotations

import json

import pytest

from backupd.remote import droplet_gate as gate
from backupd.remote.ssh import remote_command_line
from tests.e2e.gated import Gated, pwn

pytestmark = pytest.mark.e2e


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
        a.replace("{pwn}", pwn(gated.canary))
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
