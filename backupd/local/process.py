"""The one seam through which backupd runs local processes.

Commands are built as data (tuples of str) and handed here; nothing goes through a
shell. Every command is logged with its secrets masked, runs under a timeout and
comes back as a typed ``CommandResult`` — the same type a command on a droplet returns
(``remote/ssh.py``). A program that is not installed raises ``MissingProgramError``.
Unit tests replace ``Runner`` only.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import logging
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from backupd.errors import STDERR_TAIL_BYTES, MissingProgramError, tail_text
from backupd.local.procfs import group_running

log = logging.getLogger(__name__)

Argv = tuple[str, ...]
Child = subprocess.Popen[bytes]  # a started process, for callers that wait for it
MASK = "***"
STREAM_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class CommandResult:
    """A command run to completion, on the backup host or on a droplet, and how it ended."""

    argv: Argv
    exit_status: int | None  # None: no exit status (we stopped it, or the connection ended)
    stdout: bytes
    stderr: bytes
    seconds: float
    # "deadline" or "idle" when we gave up waiting; "lost" when the droplet stopped answering
    timed_out: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and self.timed_out is None

    def stderr_tail(self, limit: int = STDERR_TAIL_BYTES) -> str:
        return tail_text(self.stderr, limit)


def mask_argv(argv: Sequence[str], secrets: Iterable[str] = ()) -> str:
    """The argv as one loggable string, with each secret replaced by ***."""
    hidden = [s for s in secrets if s]
    shown = []
    for arg in argv:
        for secret in hidden:
            arg = arg.replace(secret, MASK)
        shown.append(arg)
    return " ".join(shlex.quote(a) for a in shown)


@dataclass
class Invocation:
    """Everything about one local command except its argv."""

    timeout: float | None = None
    env: Mapping[str, str] | None = None
    stdin: bytes | None = None
    stdout: IO[bytes] | int | None = None  # None: capture
    pass_fds: tuple[int, ...] = ()
    secrets: tuple[str, ...] = ()
    cwd: str | None = None
    user: str | None = None  # run as this account (we are root): scratch servers


@functools.cache
def _setpriv() -> tuple[str, ...]:
    found = shutil.which("setpriv")  # util-linux: on every Debian and Ubuntu
    if found is None:
        log.warning("setpriv not found: a child of backupd may outlive a killed backupd")
        return ()
    return (found, "--pdeathsig", "TERM", "--")


def dies_with_us(argv: Argv, env: Mapping[str, str] | None = None) -> list[str]:
    """``argv`` run so that the kernel sends it SIGTERM when the thread that started it
    ends, however it ends (``setpriv --pdeathsig``): children run in their own session (a
    timeout kills the whole group), so a ``kill -9`` of backupd's process group would
    otherwise leave a borg running that commits an archive nobody records. borg answers
    SIGTERM by rolling back and releasing its lock. Raises MissingProgramError for a
    program that is not there or not executable (checked here: with the prefix, Popen
    would start setpriv fine and the miss would come back as an exit status)."""
    program = argv[0]
    if "/" in program:
        if not os.path.exists(program):
            raise MissingProgramError(f"{program}: not found on the backup host")
        if not os.access(program, os.X_OK):
            raise MissingProgramError(f"{program}: not executable on the backup host")
    elif shutil.which(program, path=(env or os.environ).get("PATH")) is None:
        raise MissingProgramError(f"{program}: not found on the backup host (PATH)")
    return [*_setpriv(), *argv]


PR_SET_PDEATHSIG = 1


def signal_when_parent_dies(signum: int = signal.SIGTERM) -> bool:
    """Ask the kernel for ``signum`` when our parent ends (for backupd's own helper
    processes: rsh under rsync, a worker under the daemon). False
    where prctl is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


class Runner(Protocol):
    def __call__(self, argv: Argv, inv: Invocation) -> CommandResult: ...


class Streamer(Protocol):
    def __call__(
        self, argv: Argv, inv: Invocation, sink: Callable[[bytes], object]
    ) -> CommandResult: ...


Produce = Callable[[Callable[[bytes], object]], object]  # calls its sink with each chunk


class InputRefused(Exception):
    """The consuming command stopped reading its stdin (it exited) before the end."""


@dataclass(frozen=True)
class FeedResult:
    """A command that read a stream on its stdin (a restore tool), and how it ended."""

    argv: Argv
    exit_status: int | None  # None: no exit status (killed, connection lost)
    output: bytes  # tail of stdout and stderr, in order
    seconds: float
    fed_bytes: int
    complete: bool  # the whole stream was handed over
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and self.complete and not self.timed_out

    def output_tail(self, limit: int = STDERR_TAIL_BYTES) -> str:
        return tail_text(self.output, limit)


class Feeder(Protocol):
    def __call__(
        self,
        argv: Argv,
        inv: Invocation,
        produce: Produce,
        *,
        ready: Callable[[], bool] | None = None,
    ) -> FeedResult: ...


def run_local(argv: Argv, inv: Invocation) -> CommandResult:
    """Run ``argv`` to completion and return its result; never raises on a non-zero exit.

    On timeout the whole process group is killed (a borg child and its gate go too),
    and the result says ``timed_out``.
    """
    log.debug("run: %s", mask_argv(argv, inv.secrets))
    started = time.monotonic()
    proc = subprocess.Popen(
        dies_with_us(argv, inv.env),
        stdin=subprocess.PIPE if inv.stdin is not None else subprocess.DEVNULL,
        stdout=inv.stdout if inv.stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=inv.pass_fds,
        cwd=inv.cwd,
        start_new_session=True,
        **_identity(inv.user, inv.env),
    )
    timed_out = False
    try:
        out, err = proc.communicate(inv.stdin, timeout=inv.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        out, err = proc.communicate()
    except BaseException:
        # KeyboardInterrupt / SystemExit: never leave an orphaned borg behind.
        _kill_group(proc)
        proc.wait()
        raise
    seconds = time.monotonic() - started
    status, why = (None, "deadline") if timed_out else (proc.returncode, None)
    result = CommandResult(argv, status, out or b"", err or b"", seconds, why)
    log.debug("exit %s after %.2fs: %s", proc.returncode, seconds, argv[0])
    return result


def _kill_group(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
    """SIGTERM the command's process group; SIGKILL what is left of it after ``grace``
    seconds. Waits for the group, not only its leader: borg's gate shell outlived it."""
    deadline = time.monotonic() + grace
    with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
        while group_running(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def stream_local(argv: Argv, inv: Invocation, sink: Callable[[bytes], object]) -> CommandResult:
    """Run ``argv`` handing its stdout to ``sink`` in chunks (for large outputs)."""
    log.debug("stream: %s", mask_argv(argv, inv.secrets))
    started = time.monotonic()
    with tempfile.TemporaryFile() as errfile:
        proc = subprocess.Popen(
            dies_with_us(argv, inv.env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errfile,
            env=dict(inv.env) if inv.env is not None else None,
            pass_fds=inv.pass_fds,
            cwd=inv.cwd,
            start_new_session=True,
        )
        assert proc.stdout is not None
        widen_pipe(proc.stdout.fileno())
        timed_out = False
        try:
            while chunk := proc.stdout.read(STREAM_CHUNK):
                sink(chunk)
                if inv.timeout is not None and time.monotonic() - started > inv.timeout:
                    timed_out = True
                    break
        finally:
            if timed_out or (proc.poll() is None and sys.exc_info()[0] is not None):
                _kill_group(proc)
            proc.stdout.close()
            proc.wait()
        errfile.seek(0)
        err = errfile.read()
    status, why = (None, "deadline") if timed_out else (proc.returncode, None)
    return CommandResult(argv, status, b"", err, time.monotonic() - started, why)


def feed_local(
    argv: Argv,
    inv: Invocation,
    produce: Produce,
    *,
    ready: Callable[[], bool] | None = None,
) -> FeedResult:
    """Run ``argv`` with ``produce`` writing its stdin (e.g. ``borg extract --stdout`` into
    ``pg_restore``): no temporary file, and the producer is stopped if the consumer dies.

    ``ready``: polled (every READY_POLL_SECONDS) before ``produce`` starts; the producer
    never starts if the consumer ends first (borg that could not take its lock must not
    cost a dump on a droplet). ``inv.stdout`` (a file): the command's stdout goes there
    alone, and ``output`` holds its stderr."""
    log.debug("feed: %s", mask_argv(argv, inv.secrets))
    started = time.monotonic()
    fed = 0
    complete = timed_out = False
    with tempfile.TemporaryFile() as outfile:
        proc = subprocess.Popen(
            dies_with_us(argv, inv.env),
            stdin=subprocess.PIPE,
            stdout=inv.stdout if inv.stdout is not None else outfile,
            stderr=outfile if inv.stdout is not None else subprocess.STDOUT,
            env=dict(inv.env) if inv.env is not None else None,
            pass_fds=inv.pass_fds,
            cwd=inv.cwd,
            start_new_session=True,
        )
        assert proc.stdin is not None
        stdin = proc.stdin
        widen_pipe(stdin.fileno())

        def expire() -> None:  # a consumer that stops reading blocks our write: kill it
            nonlocal timed_out
            timed_out = True
            _kill_group(proc)

        def sink(chunk: bytes) -> None:
            nonlocal fed
            try:
                stdin.write(chunk)
            except (BrokenPipeError, ValueError):
                raise InputRefused from None
            fed += len(chunk)

        timer = threading.Timer(inv.timeout, expire) if inv.timeout is not None else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            if _await_ready(proc, ready):
                produce(sink)
                complete = not timed_out
        except InputRefused:
            pass
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
        finally:
            with contextlib.suppress(BrokenPipeError, ValueError):
                stdin.close()
            proc.wait()
            if timer is not None:
                timer.cancel()
        outfile.seek(max(0, outfile.seek(0, os.SEEK_END) - 4 * STDERR_TAIL_BYTES))
        output = outfile.read()
    seconds = time.monotonic() - started
    log.debug("exit %s after %.2fs: %s (%d bytes fed)", proc.returncode, seconds, argv[0], fed)
    return FeedResult(argv, proc.returncode, output, seconds, fed, complete, timed_out)


READY_POLL_SECONDS = 0.002


def _await_ready(proc: Child, ready: Callable[[], bool] | None) -> bool:
    """Whether the consumer is ready for its input (False: it ended before it was)."""
    while ready is not None and not ready():
        if proc.poll() is not None:
            return False
        time.sleep(READY_POLL_SECONDS)
    return True


def _identity(user: str | None, env: Mapping[str, str] | None) -> dict[str, Any]:
    """Popen arguments that run the child as ``user`` (with its HOME), or as we are."""
    base = dict(env) if env is not None else None
    if user is None:
        return {"env": base}
    entry = pwd.getpwnam(user)
    login = {"HOME": entry.pw_dir, "USER": user, "LOGNAME": user}
    return {
        "user": entry.pw_uid,
        "group": entry.pw_gid,
        "extra_groups": [],
        "env": {**(base if base is not None else os.environ), **login},
    }


def start_server(argv: Argv, *, log_path: Path, user: str | None) -> subprocess.Popen[bytes]:
    """Start a long-running server (a drill's scratch database) in its own process group,
    its output appended to ``log_path``; the caller stops it."""
    log.debug("start: %s", mask_argv(argv))
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            dies_with_us(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd="/",
            **_identity(user, None),
        )


def start_child(argv: Argv, *, env: Mapping[str, str]) -> Child:
    """Start a process that runs on its own (a daemon's worker): its own session, so a
    Ctrl-C at a terminal reaches the daemon only; no stdin; output to ours. The caller
    waits for it."""
    log.debug("start: %s", mask_argv(argv))
    return subprocess.Popen(
        dies_with_us(argv, env), env=dict(env), stdin=subprocess.DEVNULL, start_new_session=True
    )


PIPE_SIZE = 1024 * 1024


def widen_pipe(fd: int) -> None:
    """A 1 MiB pipe instead of 64 KiB: far fewer context switches per GB streamed (a pull
    into borg, borg extract into us, us into pg_restore). Best effort."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
