"""A throwaway MariaDB server: its own datadir and socket, no networking, unprivileged.

``mariadb-install-db --auth-root-authentication-method=normal`` gives root@localhost an
empty password instead of unix_socket authentication, so the test process can connect
as root whichever OS account it runs as (root in CI, a developer's own account).
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.procs import (
    chown_to,
    need,
    run_as,
    service_user,
    start_process,
    stop_process,
    wait_until,
)


def sql_string(value: str) -> str:
    """A MariaDB string literal (default sql_mode: backslash escapes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class MariaDBServer:
    datadir: Path
    socket: Path
    os_user: str | None  # None: the current user
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def sql(self, sql: str, db: str | None = None) -> str:
        argv = [
            "mariadb",
            "--no-defaults",
            f"--socket={self.socket}",
            "-uroot",
            "--batch",
            "--raw",
            "--skip-column-names",
            "-e",
            sql,
        ]
        if db:
            argv.append(db)
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"mariadb failed: {result.stderr.strip()}\nSQL: {sql[:500]}")
        return result.stdout.strip()

    def create_user(self, name: str, password: str) -> None:
        """(Re)create ``name``@localhost with a password and every privilege."""
        account = f"{sql_string(name)}@'localhost'"
        self.sql(
            f"CREATE OR REPLACE USER {account} IDENTIFIED BY {sql_string(password)};"
            f"GRANT ALL ON *.* TO {account}"
        )

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, grace=30)
            self._proc = None


def _install(user: str | None, datadir: Path) -> None:
    install = need("mariadb-install-db", "mariadb-server")
    run_as(
        user,
        [
            install,
            "--no-defaults",
            f"--datadir={datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
    )


def _launch(user: str | None, root: Path) -> subprocess.Popen[bytes]:
    server = need("/usr/sbin/mariadbd", "mariadb-server")
    return start_process(
        [
            server,
            "--no-defaults",
            f"--datadir={root / 'data'}",
            f"--socket={root / 'mysqld.sock'}",
            "--skip-networking",
            f"--pid-file={root / 'mysqld.pid'}",
            f"--log-error={root / 'error.log'}",
            f"--tmpdir={root / 'tmp'}",
            "--innodb-buffer-pool-size=64M",
            "--innodb-flush-log-at-trx-commit=0",
        ],
        user=user,
        log_path=root / "stdout.log",
    )


def _wait_ready(server: MariaDBServer, proc: subprocess.Popen[bytes]) -> None:
    admin = need("mariadb-admin", "mariadb-client")
    ping = [admin, "--no-defaults", f"--socket={server.socket}", "-uroot", "ping"]
    log = server.datadir.parent / "error.log"

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"mariadbd exited:\n{log.read_text(errors='replace')[-2000:]}")
        return subprocess.run(ping, capture_output=True, check=False).returncode == 0

    wait_until(ready, 60, f"MariaDB on {server.socket}")


def start_mariadb(base_dir: Path) -> MariaDBServer:
    need("mariadb", "mariadb-client")
    user = service_user("mysql")
    root = Path(tempfile.mkdtemp(prefix="mariadb-", dir=base_dir))
    (root / "tmp").mkdir()
    root.chmod(0o755)  # the socket lives here; other local users connect to it
    chown_to(root, user)
    _install(user, root / "data")
    proc = _launch(user, root)
    server = MariaDBServer(root / "data", root / "mysqld.sock", user, proc)
    try:
        _wait_ready(server, proc)
    except BaseException:
        server.stop()
        raise
    return server
