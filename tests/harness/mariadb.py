"""A throwaway MariaDB server: its own datadir and socket, no networking, unprivileged."""

from __future__ import annotations

import subprocess
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


@dataclass
class MariaDBServer:
    datadir: Path
    socket: Path
    os_user: str | None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def sql(self, sql: str, db: str | None = None) -> str:
        argv = ["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot",
                "--batch", "--raw", "--skip-column-names", "-e", sql]  # fmt: skip
        if db:
            argv.append(db)
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"mariadb failed: {result.stderr.strip()}\nSQL: {sql[:500]}")
        return result.stdout.strip()

    def create_user(self, name: str, password: str) -> None:
        quoted = "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"
        self.sql(
            f"CREATE OR REPLACE USER '{name}'@'localhost' IDENTIFIED BY {quoted};"
            f"GRANT SELECT, SHOW VIEW, TRIGGER, LOCK TABLES, EVENT, PROCESS, RELOAD "
            f"ON *.* TO '{name}'@'localhost';"
            f"GRANT ALL ON *.* TO '{name}'@'localhost'"
        )

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, grace=30)
            self._proc = None


def start_mariadb(base_dir: Path) -> MariaDBServer:
    install = need("mariadb-install-db", "mariadb-server")
    server = need("/usr/sbin/mariadbd", "mariadb-server")
    user = service_user("mysql")
    root = base_dir / f"mariadb-{len(list(base_dir.glob('mariadb-*')))}"
    datadir, tmp = root / "data", root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # the socket lives here; other local users connect to it
    chown_to(root, user)
    socket = root / "mysqld.sock"
    run_as(user, [install, "--no-defaults", f"--datadir={datadir}",
                  "--auth-root-authentication-method=normal", "--skip-test-db"])  # fmt: skip
    proc = start_process(
        [server, "--no-defaults", f"--datadir={datadir}", f"--socket={socket}",
         "--skip-networking", f"--pid-file={root / 'mysqld.pid'}",
         f"--log-error={root / 'error.log'}", f"--tmpdir={tmp}",
         "--innodb-buffer-pool-size=64M", "--innodb-flush-log-at-trx-commit=0"],
        user=user, log_path=root / "stdout.log",
    )  # fmt: skip
    mdb = MariaDBServer(datadir, socket, user, proc)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"mariadbd exited: {(root / 'error.log').read_text()[-2000:]}")
        ping = ["mariadb-admin", "--no-defaults", f"--socket={socket}", "-uroot", "ping"]
        return subprocess.run(ping, capture_output=True, check=False).returncode == 0

    try:
        wait_until(ready, 60, "MariaDB to accept connections")
    except BaseException:
        mdb.stop()
        raise
    return mdb
