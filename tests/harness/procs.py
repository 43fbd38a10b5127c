"""Starting and stopping server processes robustly, as root or as a normal user."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def is_root() -> bool:
    return os.geteuid() == 0


def service_user(preferred: str) -> str | None:
    """The account a server runs as: ``preferred`` when we are root, else ourselves (None)."""
    return preferred if is_root() else None


def current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def _drop_privileges(user: str | None) -> dict[str, object]:
    """Popen keyword arguments that run the child as ``user`` (only when we are root)."""
    if user is None or not is_root():
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def start_process(
    argv: Sequence[str], *, user: str | None, log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a server in its own process group, logging to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            cwd="/",
            **_drop_privileges(user),
        )


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds, and reap it."""
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace)
    _signal_group(proc.pid, signal.SIGKILL)  # stragglers left in the group


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def run_as(
    user: str | None, argv: Sequence[str], **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run a one-shot command (as ``user`` when root); raise with its output on failure."""
    result = subprocess.run(  # type: ignore[call-overload]
        list(argv),
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
        **_drop_privileges(user),
        **kwargs,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result  # type: ignore[no-any-return]


def need(binary: str, package: str) -> str:
    """The path of ``binary``, or a clear error naming the Debian package to install."""
    found = shutil.which(binary) or (binary if Path(binary).is_file() else None)
    if found is None:
        raise RuntimeError(f"{binary} not found: install it with `apt-get install {package}`")
    return found


def chown_to(path: Path, user: str | None) -> None:
    if user is not None and is_root():
        entry = pwd.getpwnam(user)
        for p in [path, *path.rglob("*")]:
            os.chown(p, entry.pw_uid, entry.pw_gid)
