"""A throwaway PostgreSQL cluster: initdb in a temp dir, unix socket only, unprivileged."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from backupd.config.sections import DrillsConfig
from jobs.pg_scratch import postgres_bindir as newest_bindir
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
    """The newest installed server's bin directory (Debian: /usr/lib/postgresql/N/bin),
    found as a drill finds it."""
    return newest_bindir(DrillsConfig())


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
        """The postmaster's pid."""
        return self._proc.pid if self._proc else None

    def psql(self, sql: str, db: str = "postgres") -> str:
        result = subprocess.run(
            [
                str(postgres_bindir() / "psql"),
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                self.superuser,
                "-d",
                db,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}\nSQL: {sql[:500]}")
        return result.stdout.strip()

    def createdb(self, name: str) -> None:
        self.psql(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster ends open sessions), then the group."""
        if self._proc is not None:
            stop_process(self._proc, grace=20, first=signal.SIGINT)
            self._proc = None


def _initdb(bindir: Path, user: str | None, datadir: Path) -> None:
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


def _launch(bindir: Path, user: str | None, root: Path, port: int) -> subprocess.Popen[bytes]:
    return start_process(
        [
            str(bindir / "postgres"),
            "-D",
            str(root / "data"),
            "-k",
            str(root / "sock"),
            "-p",
            str(port),
            "-c",
            "listen_addresses=",
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "synchronous_commit=off",
        ],
        user=user,
        log_path=root / "postgres.log",
    )


def _wait_ready(bindir: Path, cluster: PostgresCluster, proc: subprocess.Popen[bytes]) -> None:
    log = cluster.datadir.parent / "postgres.log"
    isready = [str(bindir / "pg_isready"), "-q", "-h", str(cluster.socket_dir)]

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited:\n{log.read_text(errors='replace')[-2000:]}")
        probe = subprocess.run([*isready, "-p", str(cluster.port)], check=False)
        return probe.returncode == 0

    wait_until(ready, 30, f"PostgreSQL on {cluster.socket_dir} port {cluster.port}")


def start_postgres(base_dir: Path, port: int | None = None) -> PostgresCluster:
    bindir = postgres_bindir()
    user = service_user("postgres")
    # unix socket only: the port just names the socket, and its directory. A port nobody
    # listens on may still name the directory of a cluster stopped earlier in this base
    # dir (a module's): drawn again, or two clusters met in one directory (seen once in
    # 700 tests: FileExistsError)
    if port is None:
        port = free_port()
        while (base_dir / f"pg-{port}").exists():
            port = free_port()
    root = base_dir / f"pg-{port}"
    socket_dir = root / "sock"
    socket_dir.mkdir(parents=True)
    root.chmod(0o755)
    socket_dir.chmod(0o755)  # other local users (the droplet's login) connect here
    chown_to(root, user)
    _initdb(bindir, user, root / "data")
    proc = _launch(bindir, user, root, port)
    cluster = PostgresCluster(root / "data", socket_dir, port, user, "postgres", proc)
    try:
        _wait_ready(bindir, cluster, proc)
    except BaseException:
        cluster.stop()
        raise
    return cluster
