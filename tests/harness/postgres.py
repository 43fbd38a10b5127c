"""A throwaway PostgreSQL cluster: initdb in a temp dir, unix socket only, unprivileged."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.procs import (
    chown_to,
    free_port,
    run_as,
    service_user,
    start_process,
    stop_process,
    wait_until,
)


def postgres_bindir() -> Path:
    """The newest installed server's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    versions = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "postgres").exists()),
        key=lambda p: int(p.parent.name),
    )
    if not versions:
        raise RuntimeError(
            "PostgreSQL server not found: install it with `apt-get install postgresql`"
        )
    return versions[-1]


@dataclass
class PostgresCluster:
    datadir: Path
    socket_dir: Path
    port: int
    os_user: str | None  # None: the current user
    superuser: str = "postgres"
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def psql(self, sql: str, db: str = "postgres") -> str:
        result = subprocess.run(
            [str(postgres_bindir() / "psql"), "-XAtq", "-v", "ON_ERROR_STOP=1",
             "-h", str(self.socket_dir), "-p", str(self.port), "-U", self.superuser,
             "-d", db, "-c", sql],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}\nSQL: {sql[:500]}")
        return result.stdout.strip()

    def createdb(self, name: str) -> None:
        self.psql(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            try:
                os.kill(self._proc.pid, signal.SIGINT)  # "fast" shutdown: ends sessions
                self._proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        stop_process(self._proc)
        self._proc = None


def start_postgres(base_dir: Path, port: int | None = None) -> PostgresCluster:
    bindir = postgres_bindir()
    user = service_user("postgres")
    port = port or free_port()
    root = base_dir / f"pg-{port}"
    datadir, socket_dir = root / "data", root / "sock"
    socket_dir.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    socket_dir.chmod(0o755)  # other local users (the droplet's login) connect here
    chown_to(root, user)
    run_as(
        user,
        [
            str(bindir / "initdb"),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale",
            "C.UTF-8",
            "-D",
            str(datadir),
        ],
    )
    proc = start_process(
        [str(bindir / "postgres"), "-D", str(datadir), "-k", str(socket_dir), "-p", str(port),
         "-c", "listen_addresses=", "-c", "fsync=off", "-c", "full_page_writes=off",
         "-c", "synchronous_commit=off"],
        user=user, log_path=root / "postgres.log",
    )  # fmt: skip
    cluster = PostgresCluster(datadir, socket_dir, port, user, "postgres", proc)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited: {(root / 'postgres.log').read_text()[-2000:]}")
        return (
            subprocess.run(
                [str(bindir / "pg_isready"), "-q", "-h", str(socket_dir), "-p", str(port)],
                check=False,
            ).returncode
            == 0
        )

    try:
        wait_until(ready, 30, "PostgreSQL to accept connections")
    except BaseException:
        cluster.stop()
        raise
    return cluster
