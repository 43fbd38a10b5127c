"""Starting and stopping server processes robustly, as root or as a normal user.

As root a server runs as its service account. The child drops privileges itself
(setgid, setgroups, setuid before exec, as ``runuser`` would) instead of being started
through ``runuser``: runuser stays in between as the parent, so its pid is not the
server's, and it answers SIGTERM by SIGKILLing the server two seconds later, which cuts
PostgreSQL's and MariaDB's clean shutdown short.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any


def is_root() -> bool:
    return os.geteuid() == 0


def service_user(preferred: str) -> str | None:
    """The account a server runs as: ``preferred`` when we are root, else ourselves (None)."""
    return preferred if is_root() else None


def current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def free_port() -> int:
    """A port nobody listens on. Each xdist worker draws from a range of its own, below the
    kernel's ephemeral ports: two workers never pick the same port between checking it and
    starting their server."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit() and int(worker[2:]) < 8:
        low = 20000 + 1500 * int(worker[2:])
        for port in random.sample(range(low, low + 1500), 1500):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        found: int = s.getsockname()[1]
        return found


def ours(text: str) -> bool:
    """Whether a command line or path belongs to this test process's own temporary areas
    (each xdist worker has its own TMPDIR and basetemp), not to a concurrent run's."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return tempfile.gettempdir() in text or (worker is not None and f"popen-{worker}" in text)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it is true; RuntimeError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")


def need(binary: str, package: str) -> str:
    """The path of ``binary``, or a clear error naming the Debian package to install."""
    found = shutil.which(binary) or (binary if Path(binary).is_file() else None)
    if found is None:
        raise RuntimeError(f"{binary} not found: install it with `apt-get install {package}`")
    return found


def chown_to(path: Path, user: str | None) -> None:
    """Give ``path`` and everything below it to ``user`` (only when we are root)."""
    if user is not None and is_root():
        entry = pwd.getpwnam(user)
        for p in [path, *path.rglob("*")]:
            os.chown(p, entry.pw_uid, entry.pw_gid)


def _as_user(user: str | None, env: dict[str, str] | None) -> dict[str, Any]:
    """Popen keyword arguments that run the child as ``user`` (only when we are root)."""
    if user is None or not is_root():
        return {"env": env}
    entry = pwd.getpwnam(user)
    login = {"HOME": entry.pw_dir, "USER": user, "LOGNAME": user}
    return {
        "user": entry.pw_uid,
        "group": entry.pw_gid,
        "extra_groups": [],
        "env": {**(os.environ if env is None else env), **login},
    }


def start_process(
    argv: Sequence[str], *, user: str | None, log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a server in a new session (its own process group), logging to ``log_path``."""
    with open(log_path, "ab") as log:
        proc: subprocess.Popen[bytes] = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd="/",
            **_as_user(user, env),
        )
        return proc


def stop_process(
    proc: subprocess.Popen[Any], grace: float = 10, *, first: signal.Signals | None = None
) -> None:
    """Stop a server from :func:`start_process` and everything left in its process group.

    SIGTERM to the group (or ``first`` to the leader alone, e.g. SIGINT for PostgreSQL's
    fast shutdown), SIGKILL after ``grace`` seconds, then reap. The leader is only reaped
    after the group has been SIGKILLed, so its pid cannot have been reused meanwhile.
    """
    if proc.returncode is None:
        if first is None:
            _signal_group(proc.pid, signal.SIGTERM)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, first)
        if not _exited(proc.pid, grace):
            _signal_group(proc.pid, signal.SIGKILL)
            _exited(proc.pid, grace)
    _signal_group(proc.pid, signal.SIGKILL)  # stragglers left in the group
    proc.wait(timeout=grace)


def _exited(pid: int, timeout: float) -> bool:
    """Whether our child ``pid`` exits within ``timeout``, without reaping it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
                return True
        except ChildProcessError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, found through the parent pids in /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def pin(pids: Iterable[int]) -> list[int]:
    """pidfds for ``pids`` (those still alive): signalling them never hits a reused pid."""
    fds: list[int] = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            fds.append(os.pidfd_open(pid))
    return fds


def terminate_pinned(pidfds: list[int], grace: float = 5) -> None:
    """SIGTERM, then SIGKILL after ``grace``, processes we are not the parent of; close fds."""
    try:
        _pidfd_signal(pidfds, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _running(pidfds) and time.monotonic() < deadline:
            time.sleep(0.02)
        _pidfd_signal(_running(pidfds), signal.SIGKILL)
    finally:
        for fd in pidfds:
            os.close(fd)


def _pidfd_signal(pidfds: list[int], sig: signal.Signals) -> None:
    for fd in pidfds:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(fd, sig)


def _running(pidfds: list[int]) -> list[int]:
    """The pidfds whose process has not exited (a pidfd turns readable on exit)."""
    poller = select.poll()
    for fd in pidfds:
        poller.register(fd, select.POLLIN)
    exited = {fd for fd, _ in poller.poll(0)}
    return [fd for fd in pidfds if fd not in exited]


def run_as(
    user: str | None, argv: Sequence[str], **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a one-shot command (as ``user`` when root); raise with its output on failure."""
    result: subprocess.CompletedProcess[str] = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
        **_as_user(user, kwargs.pop("env", None)),
        **kwargs,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def command_lines() -> Iterator[tuple[int, str]]:
    """(pid, command line) of every process we may look at, arguments joined by spaces."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        yield int(cmdline.parent.name), text


def processes_naming(needle: str, *, besides: tuple[str, ...] = ("pytest",)) -> list[str]:
    """Command lines that contain ``needle`` (a test's own directory), other than ours."""
    return [
        text
        for _pid, text in command_lines()
        if needle in text and not any(b in text for b in besides)
    ]
