"""What /proc says about processes: alive or not, their children, their command lines.

Used to stop what a crash left running (the whole tree, even in other sessions), to
reconcile runs whose process is gone, and to tell whose Borg lock it is.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def proc_stat(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name: state, ppid, ...; None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first found via /proc), for a hard stop."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = proc_stat(int(stat.parent.name))
        if fields and len(fields) > 1 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL a process and everything it started, even in other sessions (borg, its gate).
    The tree is frozen (SIGSTOP) first, down to what it started meanwhile: killed one by
    one, a part would act on another's death first (a worker's parent-death signal
    recording its run, a shell going on to its next command)."""
    frozen: list[int] = []
    todo = [pid]
    while todo:
        sent = []
        for target in todo:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(target, signal.SIGSTOP)
                sent.append(target)
        _until_stopped(sent)
        frozen += todo
        todo = [p for p in descendants(pid) if p not in frozen]
    for target in frozen:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, signal.SIGKILL)


def group_running(pgid: int) -> bool:
    """Whether any process of process group ``pgid`` runs (zombies do not: whoever they
    were handed to reaps them)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = proc_stat(int(stat.parent.name))
        if fields and len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in "ZX":
            return True
    return False


def _until_stopped(pids: list[int], limit: float = 2.0) -> None:
    """Wait (at most ``limit`` seconds) until each of ``pids`` is stopped or gone: a signal
    takes effect when the process is next scheduled, not when kill() returns, and one
    still running could start another after its children were listed."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        states = (proc_stat(p) for p in pids)
        if all(not f or f[0] in ("T", "t", "Z", "X") for f in states):
            return
        time.sleep(0.005)


def process_alive(pid: int | None) -> bool:
    """Whether ``pid`` runs; a zombie (killed, not yet reaped by its new parent) does not."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = proc_stat(pid)
    return not fields or fields[0] not in ("Z", "X")


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (e.g. a scratch directory: an initdb a
    crash left running has no pid file to find it by)."""
    found = []
    needle = text.encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if needle in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except (OSError, ValueError):
            continue
    return [pid for pid in found if pid != os.getpid()]


def process_environ(pid: int) -> dict[str, str]:
    """The process's environment; {} when we may not read it (another user's process)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {k: v for k, _, v in pairs}


def process_command(pid: int) -> str:
    """``borg with-lock ...``: the program (not its interpreter) and its first word."""
    try:
        argv = [
            a.decode(errors="replace")
            for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if a
        ]
    except OSError:
        return "?"
    if len(argv) > 1 and Path(argv[0]).name.startswith("python"):
        argv = argv[1:]
    if not argv:
        return "?"
    words = [Path(argv[0]).name, *argv[1:2]]
    return " ".join(words) + (" ..." if len(argv) > 2 else "")


def process_started(pid: int) -> float | None:
    """When ``pid`` started (epoch seconds): /proc/PID/stat's start time after boot."""
    fields = proc_stat(pid)
    if not fields or len(fields) < 20:
        return None
    try:
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration):
        return None
