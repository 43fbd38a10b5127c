"""backupctl config check against a real droplet: what passes, what fails, and why."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import Deployment, small_sqlite
from tests.e2e.test_daemon import other_host_key
from tests.harness.droplet import Droplet
from tests.json_contract import conforming

pytestmark = pytest.mark.e2e


def test_config_check_reports_each_host_and_source(
    deploy: Callable[..., Deployment], droplet: Droplet
) -> None:
    db = small_sqlite(droplet, "check")
    broken = {"kind": "sqlite", "path": str(db), "sqlite3": "/opt/none/sqlite3"}
    gone = {"kind": "sqlite", "path": str(db.parent / "gone.db")}  # tonight's dump would fail
    d = deploy({"app": {"kind": "sqlite", "path": str(db)}, "broken": broken, "gone": gone})
    d.store.mkdir(parents=True, exist_ok=True)
    result = d.backupctl("config", "check", "--json")
    assert result.returncode == 1, result.stderr
    checks = {c["subject"]: c for c in conforming("config check", result.stdout)["checks"]}
    assert checks["config"]["ok"] and checks["store"]["ok"] and checks["passphrase"]["ok"]
    assert checks["web1"]["ok"] and "host key matches" in checks["web1"]["detail"]
    ungated = checks["web1 gate"]  # not an error, but someone should know
    assert ungated["ok"] and ungated["warning"] and "may run any command" in ungated["detail"]
    assert checks["web1/app"]["ok"] and "app.db" in checks["web1/app"]["detail"]
    failed = checks["web1/broken"]
    assert not failed["ok"] and failed["detail"] == "not found on the droplet: /opt/none/sqlite3"
    missing = checks["web1/gone"]
    assert not missing["ok"] and "no such database file: " in missing["detail"]
    text = d.backupctl("config", "check").stdout
    assert "FAIL  web1/broken: not found on the droplet" in text


def test_config_check_refuses_a_changed_host_key(
    deploy: Callable[..., Deployment], tmp_path: object
) -> None:
    d = deploy(
        {"app": {"kind": "sqlite", "path": "/nonexistent.db"}},
        host_key=other_host_key(Path(str(tmp_path))),
    )
    result = d.backupctl("config", "check")
    assert result.returncode == 1
    assert "FAIL  web1: " in result.stdout and "HOST KEY CHANGED" in result.stdout
    # nothing is tried on an untrusted host, and its sources say so (not left out)
    assert "FAIL  web1/app: not checked: the host failed (above)\n" in result.stdout


class NotSshd:
    """A listener on the droplet's address that is not an SSH server as backupd expects:
    it closes each connection before any banner (sshd over MaxStartups drops them so), or
    answers as a web server would (a port that is not sshd's)."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                if self.answer == SILENT:
                    conn.recv(4096)  # the client's banner; then silence till it gives up
                    conn.recv(4096)
                elif self.answer:
                    conn.sendall(self.answer)

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=10)


SILENT = b"silent"


@pytest.mark.parametrize("answer", [b"", b"HTTP/1.1 400 Bad Request\r\n\r\n", SILENT])
def test_a_droplet_that_is_not_sshd_is_one_line_without_paramikos_traceback(
    deploy: Callable[..., Deployment], droplet: Droplet, answer: bytes
) -> None:
    """paramiko's transport thread logged its own traceback (over 20 lines) on every
    failed handshake, beside backupd's one line."""
    d = deploy({"app": {"kind": "sqlite", "path": str(small_sqlite(droplet, "notsshd"))}})
    d.store.mkdir(parents=True, exist_ok=True)
    listener = NotSshd(answer)
    try:
        config = d.config.read_text()
        assert f"port = {droplet.port}\n" in config
        assert "connect_timeout = 10\n" in config
        config = config.replace("connect_timeout = 10\n", "connect_timeout = 3\n")  # silence
        d.config.write_text(config.replace(f"port = {droplet.port}\n", f"port = {listener.port}\n"))
        checked = d.backupctl("config", "check")
        backup = d.backupctl("backup", "now", "web1/app")
    finally:
        listener.close()
    assert checked.returncode == 1 and backup.returncode == 1
    for result in (checked, backup):
        assert "Traceback" not in result.stderr and "paramiko" not in result.stderr, result.stderr
    [line] = [x for x in checked.stdout.splitlines() if x.startswith("FAIL  web1:")]
    assert "SSH handshake failed" in line, checked.stdout
    [error] = backup.stderr.strip().splitlines()
    assert error.startswith("web1/app: web1 (127.0.0.1:") and "SSH handshake failed" in error
    assert "no SSH server" in error, error
