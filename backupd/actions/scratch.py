"""Scratch database servers for restore drills: started by backupd itself from the installed
server binaries, in a private temporary directory, listening on a unix socket only, and
always stopped and removed afterwards (also after a crash: ``remove_scratch``). Each
database kind says how its server starts (``RESTORE.scratch``, jobs/base.py
``ScratchServer``); this module runs it as the right user, waits for it and stops it.

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
from jobs.base import Options, ScratchEnv
from jobs.registry import database_kinds

log = logging.getLogger(__name__)
READY_WAIT = 60.0
STOP_WAIT = 30.0


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
    restore = database_kinds().get(kind)
    if restore is None:
        raise RestoreError(f"no scratch server for {kind} sources")
    procs: list[Child] = []
    try:
        try:
            options = restore.scratch.start(_env(config, root, procs))
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


def _env(config: Config, root: Path, procs: list[Child]) -> ScratchEnv:
    user = _user(config)

    def own(path: Path) -> None:
        path.mkdir(mode=0o700)
        if user:
            entry = pwd.getpwnam(user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def serve(argv: tuple[str, ...], probe: tuple[str, ...], what: str) -> None:
        proc = start_server(argv, log_path=root / "stdout.log", user=user)
        procs.append(proc)
        _wait(root, proc, lambda: run_local(probe, Invocation(timeout=10)).ok, what)

    return ScratchEnv(config.drills, root, own, lambda argv, what: _run(config, argv, what), serve)


def _stops(root: Path) -> list[tuple[int, int]]:
    """(pid, signal) of each server a kind's pid file under ``root`` names."""
    found = []
    for restore in database_kinds().values():
        server = restore.scratch
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((root / server.pid_file).read_text().split()[0])
            found.append((pid, server.stop_signal))
    return found


def remove_scratch(root: Path) -> None:
    """Stop a scratch server (by its own pid file, so this works after a crash too) and
    remove its directory. Never fails: a drill's verdict must not depend on it."""
    for pid, signum in _stops(root):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)
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
