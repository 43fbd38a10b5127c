"""The gated droplet of the gate's end-to-end tests (decision 0022): a real sshd whose
login holds backupd's key as `backupctl host setup` installs it (``restrict`` and the gate
as its forced command), a syslog socket of the test's own, and helpers to deploy backupd
against it. Each test module gets its own (the ``gated`` fixture in conftest.py)."""

from __future__ import annotations

import itertools
import json
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from backupd.actions.gatelist import allowlist
from backupd.remote import droplet_gate as gate
from backupd.remote.ssh import WRAP_SCRIPT
from jobs.registry import load_config
from tests.e2e.conftest import Deployment, deployment
from tests.e2e.test_trees import chown_to_droplet
from tests.harness.droplet import Droplet, start_droplet
from tests.harness.fleet import HostSpec

_STARTED = itertools.count(1)
PROBE = """#!/bin/sh
# a stand-in dump tool: says what it was given and what its session holds
printf 'args:%s\\n' "$*"
printf 'agent:%s\\n' "${SSH_AUTH_SOCK:-none}"
if tty -s; then echo tty:yes; else echo tty:none; fi
"""


class SyslogReader:
    """The droplet's syslog socket, read as it comes (as journald does): a socket nobody
    reads holds 10 datagrams, and the gate then waits on it (SYSLOG_WAIT)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lines: list[str] = []
        self.markers = itertools.count()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        sock.settimeout(0.1)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stop.is_set():
            try:
                line = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.lines.append(line)

    def take(self) -> list[str]:
        """The lines logged so far. A marker is sent through the socket and waited for:
        datagrams come in order, so every line the gate sent before is read by then (a
        fixed wait was luck on a busy machine)."""
        marker = f"take-marker-{next(self.markers)}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(marker.encode(), self.sock.getsockname())
        deadline = time.monotonic() + 30
        while True:
            with self.lock:
                if marker in self.lines:
                    at = self.lines.index(marker)
                    taken, self.lines = self.lines[:at], self.lines[at + 1 :]
                    return taken
            if time.monotonic() > deadline:
                raise AssertionError("the syslog reader never read the marker")
            time.sleep(0.01)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@dataclass
class Gated:
    droplet: Droplet
    syslog: socket.socket
    canary: Path  # a file hostile requests try to create
    allow: dict[str, object]  # the module's own allowlist
    reader: SyslogReader | None = None

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
        """The syslog lines the gate wrote since the last call."""
        assert self.reader is not None
        return self.reader.take()


def start_gated(servers_dir: Path) -> Iterator[Gated]:
    droplet = start_droplet(servers_dir, f"gated{next(_STARTED)}")  # one per test module
    folder = tempfile.mkdtemp(prefix="gate-", dir="/tmp")
    os.chmod(folder, 0o755)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    gated: Gated | None = None
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
        gated = Gated(droplet, sock, droplet.root / "tmp" / "pwned", allow, SyslogReader(sock))
        gated.install(allow, "allow")
        yield gated
    finally:
        if gated is not None and gated.reader is not None:
            gated.reader.close()
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)
        droplet.stop()


def pwn(path: Path) -> str:
    """A shell command that leaves ``path`` behind if it ever runs."""
    return f"touch {shlex.quote(str(path))}"


def deploy_gated(
    gated: Gated, tmp_path: Path, sources: dict[str, dict[str, object]], **settings: object
) -> Deployment:
    """backupd for the gated droplet with ``sources``, and the droplet's gate installed
    with the allowlist generated from that config (restore the module's afterwards)."""
    host = HostSpec("gated", gated.droplet, sources, settings=settings)  # type: ignore[arg-type]
    d = deployment(tmp_path / "backupd", host)
    gated.install(allowlist(load_config(d.config).hosts["gated"]), "allow-config")
    return d


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
