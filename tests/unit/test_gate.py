"""The droplet gate (backupd/remote/droplet_gate.py, decision 0022), run as sshd runs it: a process
with the request in SSH_ORIGINAL_COMMAND. Allowed requests run the gate's own argv;
hostile ones are refused with one line, and what they asked for never runs."""

from __future__ import annotations

import ast
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backupd.remote import droplet_gate as gate
from backupd.remote.ssh import WRAP_SCRIPT, remote_command_line

GATE = Path(gate.__file__)


@pytest.fixture
def droplet(tmp_path: Path) -> dict[str, Path]:
    """Stand-in tools that record the argv they were run with (and their stdin)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "ran.log"
    for tool in ("pg_dump", "psql", "pg_dumpall"):
        script = bin_dir / tool
        script.write_text(
            "#!/bin/sh\n"
            f'printf "%s\\n" "$0 $*" >> {shlex.quote(str(log))}\n'
            'cat > /dev/null\necho "dump of $*"\n'
        )
        script.chmod(0o755)
    return {"bin": bin_dir, "log": log}


@pytest.fixture
def syslog() -> Iterator[socket.socket]:
    """A syslog socket of our own (the allowlist's "syslog"): what the gate logged."""
    folder = tempfile.mkdtemp(prefix="gate-", dir="/tmp")  # a socket path has ~100 bytes
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(f"{folder}/log")
    sock.settimeout(5)
    try:
        yield sock
    finally:
        sock.close()
        Path(f"{folder}/log").unlink()
        os.rmdir(folder)


def allowlist(tmp_path: Path, bin_dir: Path, **extra: Any) -> Path:
    pg_dump = str(bin_dir / "pg_dump")
    requests = [
        {
            "name": "maindb: dump a database",
            "argv": [
                pg_dump,
                "--host",
                "/run/postgresql",
                "--format=custom",
                "--compress=0",
                "--no-password",
                {"param": "database", "type": "pg_dbname", "values": ["app", "it's odd\nname"]},
                {
                    "param": "snapshot",
                    "type": "pg_snapshot",
                    "flag": "--snapshot",
                    "optional": True,
                },
            ],
        },
        {
            "name": "maindb: list databases",
            "argv": [str(bin_dir / "psql"), "--no-psqlrc", "--command", "SELECT datname"],
        },
    ]
    path = tmp_path / "allow.json"
    path.write_text(
        json.dumps(
            {"gate": 1, "host": "web1", "wrapper": WRAP_SCRIPT, "requests": requests, **extra}
        )
    )
    return path


def ask(allow: Path, command: str | None, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "SSH_ORIGINAL_COMMAND"}
    env["SSH_CONNECTION"] = "192.0.2.7 50000 192.0.2.1 22"
    if command is not None:
        env["SSH_ORIGINAL_COMMAND"] = command
    return subprocess.run(
        [sys.executable, str(GATE), str(allow)],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=30,
        check=False,
    )


def dump_argv(bin_dir: Path, db: str = "app", *extra: str) -> list[str]:
    name = "'" + db.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return [
        str(bin_dir / "pg_dump"),
        "--host",
        "/run/postgresql",
        "--format=custom",
        "--compress=0",
        "--no-password",
        f"--dbname=dbname={name}",
        *extra,
    ]


def test_an_allowed_request_runs_wrapped_as_backupd_sends_it(
    tmp_path: Path, droplet: dict[str, Path], syslog: socket.socket
) -> None:
    allow = allowlist(tmp_path, droplet["bin"], syslog=syslog.getsockname())
    argv = dump_argv(droplet["bin"], "app", "--snapshot", "00000003-0000001B-1")
    done = ask(allow, remote_command_line(argv))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"dump of ")
    ran = droplet["log"].read_text()
    assert "--dbname=dbname='app' --snapshot 00000003-0000001B-1" in ran
    assert syslog.recv(4096).decode().endswith("ran maindb: dump a database for 192.0.2.7")


def test_a_name_with_a_quote_and_a_newline_passes_as_one_argument(
    tmp_path: Path, droplet: dict[str, Path]
) -> None:
    allow = allowlist(tmp_path, droplet["bin"])
    done = ask(allow, shlex.join(dump_argv(droplet["bin"], "it's odd\nname")))
    assert done.returncode == 0, done.stderr
    assert "--dbname=dbname='it\\'s odd" in droplet["log"].read_text()


def test_hello_shows_the_allowlist_digest(tmp_path: Path, droplet: dict[str, Path]) -> None:
    allow = allowlist(tmp_path, droplet["bin"])
    done = ask(allow, gate.HELLO)
    said = json.loads(done.stdout)
    requests = json.loads(allow.read_text())["requests"]
    digest = gate.requests_digest(requests)
    assert said == {"gate": 1, "host": "web1", "digest": digest, "missing": []}
    (droplet["bin"] / "psql").unlink()  # asked as backupd asks (wrapped): what is missing
    done = ask(allow, remote_command_line(gate.HELLO.split()))
    assert json.loads(done.stdout)["missing"] == [str(droplet["bin"] / "psql")]


HOSTILE = {
    "no command (a login shell)": None,
    "a shell": "sh -c id",
    "an interactive bash": "bash -i",
    "sftp": "internal-sftp",
    "sftp server": "/usr/lib/openssh/sftp-server",
    "scp writing": "scp -t /tmp",
    "rsync receiving": "rsync --server -logDtpre.iLsfxCIvu . /etc",
    "an unlisted database": "{dump} --dbname=dbname='postgres'",
    "an extra option": "{dump} --dbname=dbname='app' --file=/etc/passwd",
    "an option for a database": "{dump} -f",
    "a command after a semicolon": "{dump} --dbname=dbname='app'; id",
    "a command substitution": "{dump} --dbname=dbname='app' $(id)",
    "an unquoted newline": "{dump} --dbname=dbname='app'\nid",
    "a snapshot that is not one": "{dump} --dbname=dbname='app' --snapshot '1; id'",
    "a quote that ends early": "{dump} \"--dbname=dbname='app' x'\"",
    "another wrapper": "sh -c 'exec \"$@\"' backupd-wrap {dump} --dbname=dbname='app'",
    "the list with its own SQL": "{psql} --no-psqlrc --command 'COPY x TO PROGRAM id'",
    "an rsh option": "{dump} --dbname=dbname='app' --rsh=id",
    "an oversized request": "{dump} --dbname=dbname='" + "a" * 40000 + "'",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_request_is_refused_logged_and_nothing_runs(
    case: str, tmp_path: Path, droplet: dict[str, Path], syslog: socket.socket
) -> None:
    allow = allowlist(tmp_path, droplet["bin"], syslog=syslog.getsockname())
    template = HOSTILE[case]
    dump = shlex.join(dump_argv(droplet["bin"])[:-1])
    command = (
        None
        if template is None
        else template.replace("{dump}", dump).replace("{psql}", str(droplet["bin"] / "psql"))
    )
    done = ask(allow, command, stdin=b"SELECT 1;\n")
    assert done.returncode == gate.EXIT_REFUSED
    [line] = done.stderr.decode().splitlines()
    assert line.startswith("backupd-gate: refused: ")
    assert done.stdout == b""
    assert not droplet["log"].exists()  # no tool ran
    logged = syslog.recv(4096).decode()
    assert logged.startswith("<36>backupd-gate[")  # facility auth, severity warning
    assert "from 192.0.2.7: " in logged and line.removeprefix("backupd-gate: refused: ") in logged


def test_a_nul_in_the_request_is_refused() -> None:
    with pytest.raises(gate.Refused, match="NUL"):
        gate.split_request("pg_dump \x00")


def test_a_request_the_program_reads_stdin_from_gets_nothing(
    tmp_path: Path, droplet: dict[str, Path]
) -> None:
    """psql reads SQL from stdin: a request marked stdin "none" runs with /dev/null."""
    allow = allowlist(tmp_path, droplet["bin"])
    psql = droplet["bin"] / "psql"
    psql.write_text("#!/bin/sh\ncat\n")
    done = ask(allow, f"{psql} --no-psqlrc --command 'SELECT datname'", stdin=b"DROP TABLE x;\n")
    assert done.returncode == 0 and done.stdout == b""


def test_an_allowlist_of_another_gate_version_is_refused(
    tmp_path: Path, droplet: dict[str, Path]
) -> None:
    allow = allowlist(tmp_path, droplet["bin"], gate=2)
    done = ask(allow, shlex.join(dump_argv(droplet["bin"])))
    assert done.returncode == gate.EXIT_REFUSED and b"gate version 2" in done.stderr


def test_the_gate_uses_the_standard_library_only() -> None:
    """It is copied onto droplets as it is: nothing of backupd's, nothing from PyPI."""
    tree = ast.parse(GATE.read_text())
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported - {"__future__"} <= sys.stdlib_module_names


def session_allowlist(tmp_path: Path, tool: Path) -> Path:
    """A session request: ``tool`` (a stand-in psql) with the statements it may be sent."""
    requests = [
        {
            "name": "maindb: snapshot and facts",
            "argv": [str(tool), {"param": "database", "type": "pg_dbname", "values": ["app"]}],
            "stdin": "session",
            "session": {"messages": ["BEGIN;\n", "\\echo backupd-end\n"], "counts": "pg"},
        }
    ]
    path = tmp_path / "session.json"
    path.write_text(json.dumps({"gate": 1, "wrapper": WRAP_SCRIPT, "requests": requests}))
    return path


def stand_in(tmp_path: Path, body: str) -> Path:
    tool = tmp_path / "psql"
    tool.write_text(f"#!/bin/sh\n{body}\n")
    tool.chmod(0o755)
    return tool


def test_a_session_passes_its_statements_and_refuses_the_first_other(tmp_path: Path) -> None:
    """The statements reach the program whole, however the client's writes split them;
    at the first that is not allowed the program is stopped and has seen nothing of it."""
    seen = tmp_path / "seen"
    tool = stand_in(tmp_path, f'cat > {shlex.quote(str(seen))}."$$"')
    allow = session_allowlist(tmp_path, tool)
    request = remote_command_line((str(tool), "--dbname=dbname='app'"))
    good = b'BEGIN;\nSELECT count(*) FROM public."a b";\n\\echo backupd-end\n'
    done = ask(allow, request, stdin=good)
    assert done.returncode == 0, done.stderr
    [first] = tmp_path.glob("seen.*")
    assert first.read_bytes() == good
    first.unlink()
    hostile = good + b"COPY (SELECT 1) TO PROGRAM 'touch /tmp/x';\n" + good
    done = ask(allow, request, stdin=hostile)
    assert done.returncode == gate.EXIT_REFUSED
    assert b"not a statement the allowlist holds" in done.stderr
    for second in tmp_path.glob("seen.*"):  # the program may be stopped before it reads
        assert good.startswith(second.read_bytes())  # never any of the COPY or after it


def test_the_filter_passes_what_comes_before_a_refused_statement() -> None:
    filt = gate.SessionFilter({"messages": ["BEGIN;\n"], "counts": "pg"})
    assert filt.feed(b"BEG") == [] and filt.refused is None
    passed = filt.feed(b"IN;\nSELECT count(*) FROM s.t;\nSELECT count(*) FROM s.t; DROP")
    assert passed == [b"BEGIN;\n", b"SELECT count(*) FROM s.t;\n"]
    assert filt.refused is None  # a count not yet whole: held back, not passed
    filt.feed(b" TABLE t;\n" + b" " * gate.PG_COUNT_MAX)
    assert filt.refused is not None
    assert filt.feed(b"BEGIN;\n") == []  # nothing passes after a refusal


def test_a_session_ends_when_its_program_does(tmp_path: Path) -> None:
    """psql stopping at an error ends the session at once, with its status, while the
    backup host still holds its input open (backupd then reads the end and the error)."""
    tool = stand_in(tmp_path, "read line; echo 'ERROR: lock timeout' >&2; exit 3")
    allow = session_allowlist(tmp_path, tool)
    env = {**os.environ, "SSH_ORIGINAL_COMMAND": shlex.join((str(tool), "--dbname=dbname='app'"))}
    with subprocess.Popen(
        [sys.executable, str(GATE), str(allow)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as client:
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write(b"BEGIN;\n")
        client.stdin.flush()
        assert client.stdout.read() == b""  # the end of its output, stdin still open
        assert client.wait(timeout=30) == 3
        assert client.stderr is not None and b"lock timeout" in client.stderr.read()
        client.stdin.close()


def tree_allowlist(tree: dict[str, Any]) -> dict[str, Any]:
    return {"gate": 1, "requests": [{"name": "files: read the tree", "tree": tree}]}


def test_a_tree_read_goes_to_rrsync_with_the_tree_made_relative() -> None:
    """rsync quotes the path with backslashes; the gate compares it unquoted with the
    configured tree and hands rrsync the request with ``./`` in its place."""
    allow = tree_allowlist({"path": "/srv/my files/it's", "rrsync": "/usr/bin/rrsync"})
    command = (
        "rsync --server --sender -lHogDtprSze.iLsfxCIvu --timeout=300 . /srv/my\\ files/it\\'s/"
    )
    name, run, forwarded = gate.decide_tree(allow, command)
    assert name == "files: read the tree"
    assert run == ["/usr/bin/rrsync", "-ro", "/srv/my files/it's"]
    assert forwarded == "rsync --server --sender -lHogDtprSze.iLsfxCIvu --timeout=300 . ./"
    sudo = tree_allowlist({"path": "/srv/files", "sudo": True, "rrsync": "rrsync"})
    assert gate.decide_tree(sudo, f"{gate.RSYNC_SENDER}-logDtpr . /srv/files/")[1] == [
        "sudo",
        "-n",
        "rrsync",
        "-ro",
        "/srv/files",
    ]


@pytest.mark.parametrize(
    "path",
    [
        "/srv/files/../",
        "/srv/files/sub/",
        "/srv/files",
        "/srv/filesx/",
        "/etc/",
        "./",
        "/srv/files/ /etc/",
    ],
)
def test_a_tree_read_of_anything_but_the_tree_is_refused(path: str) -> None:
    allow = tree_allowlist({"path": "/srv/files"})
    with pytest.raises(gate.Refused):
        gate.decide_tree(allow, f"{gate.RSYNC_SENDER}-logDtpr . {path}")


def test_a_volume_s_tree_is_where_the_gate_s_own_command_says(tmp_path: Path) -> None:
    """The allowlist names the command (docker volume inspect) and the gate runs it; a
    mountpoint parameter (the unreadable-files check) must be that tree too."""
    where = stand_in(tmp_path, 'echo "/var/lib/docker/volumes/data/_data"')
    tree = {"inspect": [str(where)], "rrsync": "rrsync"}
    allow = tree_allowlist(tree)
    command = f"{gate.RSYNC_SENDER}-logDtpr . /var/lib/docker/volumes/data/_data/"
    assert gate.decide_tree(allow, command)[1][-1] == "/var/lib/docker/volumes/data/_data"
    spec = {"param": "mountpoint", "type": "tree", "tree": tree, "suffix": "/"}
    template = ["find", "-P", spec, "-print0"]
    given = ["find", "-P", "/var/lib/docker/volumes/data/_data/", "-print0"]
    assert gate.render(template, given) == given
    with pytest.raises(gate.Refused, match="not the configured tree"):
        gate.render(template, ["find", "-P", "/etc/", "-print0"])
    broken = tree_allowlist({"inspect": [str(stand_in(tmp_path, "exit 1"))]})
    with pytest.raises(gate.Refused, match="cannot find the tree"):
        gate.decide_tree(broken, command)


def test_a_session_starts_with_its_read_only_transaction_or_not_at_all() -> None:
    """Counts outside the transaction (autocommit, not read-only) are refused: the begin
    statement must come first; after it, never again."""
    spec = {"first": ["BEGIN READ ONLY;\n"], "messages": ["COMMIT;\n"], "counts": "pg"}
    early = gate.SessionFilter(spec)
    assert early.feed(b"SELECT count(*) FROM s.t;\n") == [] and early.refused is not None
    good = gate.SessionFilter(spec)
    passed = good.feed(b"BEGIN READ ONLY;\nSELECT count(*) FROM s.t;\nCOMMIT;\n")
    assert passed == [b"BEGIN READ ONLY;\n", b"SELECT count(*) FROM s.t;\n", b"COMMIT;\n"]
    assert good.feed(b"BEGIN READ ONLY;\n") == [] and good.refused is not None


TMP = "/tmp/backupd.AbCdEf0123"


def test_a_syslog_that_does_not_read_holds_no_request_up(tmp_path: Path) -> None:
    """A syslog socket whose queue is full (nobody reads it) makes the gate wait at most
    SYSLOG_WAIT per line, and the request still runs (found when a test's socket held
    10 datagrams and a request hung)."""
    path = str(tmp_path / "log")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as log:
        log.bind(path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as filler:
            filler.setblocking(False)
            with pytest.raises(BlockingIOError):
                while True:
                    filler.sendto(b"x", path)
        done: list[bool] = []
        thread = threading.Thread(target=lambda: done.append(gate._syslog(path, 6, "x") is None))
        thread.start()
        thread.join(timeout=60)
        assert done == [True]


@pytest.mark.parametrize(
    ("template", "given", "expected"),
    [
        (["--set", "owner=x", "--set", "enc=y"], None, ["--set", "owner=x", "--set", "enc=y"]),
        (["--set", "enc=y"], None, ["--set", "enc=y"]),
        (["--set", "ON_ERROR_STOP=0"], "not the psql variable", None),
        (["--set", "enc=y", "--set", "owner=x"], "not the psql variable", None),
        (["--use-list", TMP], None, ["--use-list", TMP]),
        (["--use-list", f"{TMP}/../x"], "temporary file", None),
    ],
)
def test_optional_parameters_are_each_checked_and_may_be_absent(
    template: list[str], given: str | None, expected: list[str] | None
) -> None:
    """psql variables come in the allowlist's order, each only by its own name; a
    restore's temporary file is one mktemp made."""
    spec: list[Any] = [
        {"param": v, "type": "psql_var", "var": v, "flag": "--set", "optional": True}
        for v in ("owner", "enc")
    ]
    spec.append({"param": "l", "type": "tmpfile", "flag": "--use-list", "optional": True})
    if given is None:
        assert gate.render(["psql", *spec], ["psql", *template]) == ["psql", *(expected or [])]
    else:
        with pytest.raises(gate.Refused, match=given):
            gate.render(["psql", *spec], ["psql", *template])
