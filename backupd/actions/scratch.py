"""Scratch database servers for restore drills: started by backupd itself from the installed
server binaries, in a private temporary directory, listening on a unix socket only, and
always stopped and removed afterwards (also after a crash: ``remove_scratch``).

As root (an operator's ``backupctl drill``) the server runs as ``[drills] scratch_user``:
PostgreSQL refuses root, and the scratch directory is then created outside the private
state directory so that user can reach it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from backupd.config.load import Config
from backupd.errors import MissingProgramError, RestoreError
from backupd.local.process import Child, Invocation, run_local, start_server
from backupd.local.procfs import process_alive, processes_mentioning
from jobs.base import Options
from jobs.registry import registry

log = logging.getLogger(__name__)
READY_WAIT = 60.0
STOP_WAIT = 30.0
PORT = 5432  # names the socket file only: nothing listens on TCP
PID_FILES = ("data/postmaster.pid", "mysqld.pid")


@dataclass(frozen=True)
class Scratch:
    kind: str
    root: Path  # removed afterwards
    options: Options  # the kind's options that connect to this server (socket, user)


def new_scratch_dir(config: Config, prefix: str) -> Path:
    """A private directory for one drill. As root it lives in the system temp dir and
    belongs to the scratch user (the state directory stays 0700 root)."""
    if os.geteuid() == 0:
        root = Path(tempfile.mkdtemp(prefix=f"backupd-{prefix}-"))
        entry = pwd.getpwnam(config.drills.scratch_user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    else:
        parent = config.state_dir / "drills"
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=parent))
    os.chmod(root, 0o700)
    return root


def _user(config: Config) -> str | None:
    return config.drills.scratch_user if os.geteuid() == 0 else None


def _run(config: Config, argv: tuple[str, ...], what: str) -> None:
    result = run_local(argv, Invocation(timeout=300.0, user=_user(config), cwd="/"))
    if not result.ok:
        raise RestoreError(
            f"scratch server: {what} failed (exit {result.exit_status})",
            stderr_tail=result.stderr_tail() + result.stdout[-500:].decode(errors="replace"),
        )


def postgres_bindir(config: Config) -> Path:
    if config.drills.postgres_bindir is not None:
        return config.drills.postgres_bindir
    found = sorted(
        (
            p
            for p in Path("/usr/lib/postgresql").glob("*/bin")
            if p.parent.name.isdigit() and (p / "postgres").exists()
        ),
        key=lambda p: int(p.parent.name),
    )
    if not found:
        raise RestoreError(
            "scratch server: no PostgreSQL server installed on the backup host "
            "(apt-get install postgresql, or set [drills] postgres_bindir)"
        )
    return found[-1]


def _start_postgres(config: Config, root: Path, procs: list[Child]) -> Options:
    bindir = postgres_bindir(config)
    (root / "sock").mkdir(mode=0o700)
    if _user(config):
        entry = pwd.getpwnam(config.drills.scratch_user)
        os.chown(root / "sock", entry.pw_uid, entry.pw_gid)
    initdb = (
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
        str(root / "data"),
    )
    _run(config, initdb, "initdb")
    proc = start_server(
        (
            str(bindir / "postgres"),
            "-D",
            str(root / "data"),
            "-k",
            str(root / "sock"),
            "-p",
            str(PORT),
            "-c",
            "listen_addresses=",
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "synchronous_commit=off",
        ),
        log_path=root / "server.log",
        user=_user(config),
    )
    procs.append(proc)
    probe = (str(bindir / "pg_isready"), "-q", "-h", str(root / "sock"), "-p", str(PORT))
    _wait(root, proc, lambda: run_local(probe, Invocation(timeout=10)).ok, "PostgreSQL")
    model = registry()["postgresql"].options_model
    return model.model_validate(
        {"socket_dir": str(root / "sock"), "port": PORT, "username": "postgres"}
    )


def _start_mariadb(config: Config, root: Path, procs: list[Child]) -> Options:
    (root / "tmp").mkdir(mode=0o700)
    if _user(config):
        entry = pwd.getpwnam(config.drills.scratch_user)
        os.chown(root / "tmp", entry.pw_uid, entry.pw_gid)
    _run(
        config,
        (
            config.drills.mariadb_install_db,
            "--no-defaults",
            f"--datadir={root / 'data'}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ),
        "mariadb-install-db",
    )
    socket = root / "mysqld.sock"
    proc = start_server(
        (
            config.drills.mariadbd,
            "--no-defaults",
            f"--datadir={root / 'data'}",
            f"--socket={socket}",
            "--skip-networking",
            f"--pid-file={root / 'mysqld.pid'}",
            f"--log-error={root / 'server.log'}",
            f"--tmpdir={root / 'tmp'}",
            "--innodb-buffer-pool-size=128M",
            "--innodb-flush-log-at-trx-commit=0",
        ),
        log_path=root / "stdout.log",
        user=_user(config),
    )
    procs.append(proc)
    ping = ("mariadb-admin", "--no-defaults", f"--socket={socket}", "-uroot", "ping")
    _wait(root, proc, lambda: run_local(ping, Invocation(timeout=10)).ok, "MariaDB")
    model = registry()["mariadb"].options_model
    return model.model_validate({"socket": str(socket), "username": "root"})


STARTERS = {"postgresql": _start_postgres, "mariadb": _start_mariadb}


def _wait(root: Path, proc: Child, ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + READY_WAIT
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            logs = "".join(
                p.read_text(errors="replace")[-1500:] for p in root.glob("*.log") if p.is_file()
            )
            raise RestoreError(f"scratch {what} did not start", stderr_tail=logs)
        time.sleep(0.2)


@contextlib.contextmanager
def scratch_server(config: Config, kind: str, root: Path) -> Iterator[Scratch]:
    """A running scratch server of ``kind`` in ``root``; stopped and removed on exit."""
    starter = STARTERS.get(kind)
    if starter is None:
        raise RestoreError(f"no scratch server for {kind} sources")
    procs: list[Child] = []
    try:
        try:
            options = starter(config, root, procs)
        except OSError as e:  # a server tool missing or not executable: one clear line
            raise RestoreError(
                f"scratch {kind} server: cannot run {e.filename or 'a tool'}: {e.strerror or e}"
            ) from None
        except MissingProgramError as e:
            raise RestoreError(f"scratch {kind} server: {e}") from None
        yield Scratch(kind, root, options)
    finally:
        remove_scratch(root)
        for proc in procs:  # reap our child (remove_scratch stopped it)
            with contextlib.suppress(Exception):
                proc.wait(timeout=STOP_WAIT)


def _server_pids(root: Path) -> list[int]:
    pids = []
    for name in PID_FILES:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pids.append(int((root / name).read_text().split()[0]))
    return pids


def remove_scratch(root: Path) -> None:
    """Stop a scratch server (by its own pid file, so this works after a crash too) and
    remove its directory. Never fails: a drill's verdict must not depend on it."""
    for pid in _server_pids(root):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(
                pid,
                signal.SIGINT if (root / "data" / "postmaster.pid").exists() else signal.SIGTERM,
            )
            deadline = time.monotonic() + STOP_WAIT
            while time.monotonic() < deadline and process_alive(pid):
                time.sleep(0.1)
            if process_alive(pid):
                os.killpg(pid, signal.SIGKILL)
    stray = processes_mentioning(f"{root}/")  # no pid file yet: initdb, mariadb-install-db
    for pid in stray:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_WAIT
    while any(process_alive(p) for p in stray) and time.monotonic() < deadline:
        time.sleep(0.05)  # they must be gone before their directory is
    shutil.rmtree(root, ignore_errors=True)
    if root.exists():
        log.error("could not remove scratch directory %s", root)
