"""The plumbing of the Borg adapter: how every borg command is run.

The passphrase reaches borg only on a pipe (``BORG_PASSPHRASE_FD``), read from the
credential source for each command: never in argv, the environment or a log line.
``BORG_EXIT_CODES=modern`` gives specific exit codes (locking: 70-75).

Locks: borg waits 1 s; backupd then judges the holder (backupd/borg/lock.py), waits only for
its own live jobs, and raises RepositoryLockedError at once for anyone else.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from backupd.borg.lock import JOB_ENV, LOCK_CODES, PID_ENV, Locks
from backupd.borg.space import store_full
from backupd.errors import BorgError, MissingProgramError, raised_line
from backupd.local.process import (
    Argv,
    CommandResult,
    Feeder,
    Invocation,
    Runner,
    Streamer,
    feed_local,
    run_local,
    stream_local,
)

LOCK_WAIT_SECONDS = 600  # how long a command waits for backupd's own jobs to release a lock
SHORT_TIMEOUT = 3600.0
# Borg prints local times in --json and appends a platform report to tracebacks: maintenance
# wants UTC times (archive names and schedules are UTC) and error tails that end with the error.
UTC_ENV = {"TZ": "UTC"}
QUIET_ENV = {"BORG_SHOW_SYSINFO": "no"}


def find_borg(configured: str) -> str:
    """The venv's borg when the config says plain "borg", else what it names."""
    if configured == "borg":
        beside = Path(sys.executable).parent / "borg"
        if beside.exists():
            return str(beside)
    found = shutil.which(configured)
    if found is None:
        raise MissingProgramError(
            f"borg executable {configured!r}: not found on the backup host "
            "(install borgbackup, or set [store] borg)"
        )
    return found


class BorgCore:
    """Runs borg commands (backupd/borg/adapter.py adds the verbs)."""

    def __init__(
        self,
        binary: str,
        passphrase: Callable[[], str],
        base_dir: Path,
        *,
        runner: Runner = run_local,
        streamer: Streamer = stream_local,
        feeder: Feeder = feed_local,
    ) -> None:
        self.binary = binary
        self._passphrase = passphrase
        self.base_dir = base_dir
        self._runner = runner
        self._streamer = streamer
        self._feeder = feeder
        self.doing = "a backupd job"  # what the borg it starts is for (BACKUPD_JOB)
        self.on_wait: Callable[[str], object] | None = None  # hears "waiting up to ..."

    @contextmanager
    def job(self, label: str) -> Iterator[None]:
        """Mark the borg commands run inside as ``label`` ("the backup of web1/db"): what
        another backupd says while it waits for them."""
        before, self.doing = self.doing, label
        try:
            yield
        finally:
            self.doing = before

    # -- plumbing -----------------------------------------------------------------
    def environment(self, passphrase_fd: int) -> dict[str, str]:
        # BORG_HOST_ID: where uuid.getnode() is random (OpenVZ) borg's locks need a fixed id
        names = ("PATH", "HOME", "TZ", "TMPDIR", "BORG_HOST_ID")
        keep = {k: v for k, v in os.environ.items() if k in names}
        return {
            **keep,
            "LANG": "C.UTF-8",
            "BORG_BASE_DIR": str(self.base_dir),
            "BORG_EXIT_CODES": "modern",
            "BORG_PASSPHRASE_FD": str(passphrase_fd),
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "no",
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "no",
            "BORG_CHECK_I_KNOW_WHAT_I_AM_DOING": "NO",
            "BORG_DELETE_I_KNOW_WHAT_I_AM_DOING": "NO",
            "BORG_DISPLAY_PASSPHRASE": "no",
            "BORG_SHOW_SYSINFO": "no",  # error tails end with the error, not platform details
            JOB_ENV: self.doing,  # how another backupd tells our borg from an operator's
            PID_ENV: str(os.getpid()),
            **self._selftest(),
        }

    _selftested = False  # per process: the first borg this process starts tests itself

    @classmethod
    def _selftest(cls) -> dict[str, str]:
        """borg tests its own crypto, chunker and hash index at every start (~0.08 s of
        every archive's fixed cost here): once per backupd process is enough to catch a
        broken build, so later commands skip it (BORG_SELFTEST=disabled, borg's own knob)."""
        if cls._selftested:
            return {"BORG_SELFTEST": "disabled"}
        cls._selftested = True
        return {}

    @contextmanager
    def _invocation(
        self,
        timeout: float | None,
        stdin: bytes | None = None,
        cwd: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> Iterator[Invocation]:
        """An Invocation whose env points borg at a pipe holding the passphrase."""
        secret = self._passphrase()
        read_end, write_end = os.pipe()
        try:
            os.write(write_end, secret.encode())
        finally:
            os.close(write_end)
        try:
            self.base_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            yield Invocation(
                timeout=timeout,
                env={**self.environment(read_end), **(extra_env or {})},
                stdin=stdin,
                pass_fds=(read_end,),
                secrets=(secret,),
                cwd=cwd,
            )
        finally:
            os.close(read_end)

    def run(
        self,
        args: Argv,
        *,
        repo: Path | None = None,
        wait: float = 0.0,
        timeout: float | None = SHORT_TIMEOUT,
        what: str = "",
        stdin: bytes | None = None,
        cwd: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> CommandResult:
        """Run ``borg ARGS``; raise BorgError with borg's last words when it fails, and
        RepositoryLockedError when the lock of ``repo`` (or its cache) is held by another
        (after up to ``wait`` seconds for backupd's own jobs)."""

        def attempt(argv: Argv) -> CommandResult:
            with self._invocation(timeout, stdin, cwd, extra_env) as inv:
                return self._runner((self.binary, *argv), inv)

        result = self.locks.run(args, repo, wait, attempt)
        if result.exit_status != 0 or result.timed_out:
            raise self.error(result, what or args[0])
        return result

    def extract_stream(
        self, repo: Path, archive: str, path: str, sink: Callable[[bytes], object]
    ) -> None:
        """Stream one file of an archive to ``sink`` (waiting up to LOCK_WAIT_SECONDS for a
        backup of ours that holds the lock: nothing reaches ``sink`` before borg has it)."""
        self.stream(("extract", "--stdout", f"{repo}::{archive}", path), repo, sink, "extract")

    def stream(self, args: Argv, repo: Path, sink: Callable[[bytes], object], what: str) -> None:
        """Run ``borg ARGS`` with its stdout going to ``sink`` as it comes, waiting for the
        lock of ``repo`` as extract_stream does; BorgError when it fails."""

        def attempt(argv: Argv) -> CommandResult:
            with self._invocation(None) as inv:
                return self._streamer((self.binary, *argv), inv, sink)

        result = self.locks.run(args, repo, LOCK_WAIT_SECONDS, attempt)
        if result.exit_status != 0 or result.timed_out:
            raise self.error(result, what)

    @property
    def locks(self) -> Locks:
        """Who holds a lock, and what this Borg does about it (backupd/borg/lock.py)."""
        return Locks(self.base_dir, self.break_lock, self.on_wait)

    def break_lock(self, repo: Path) -> None:
        self.run(("break-lock", str(repo)), what="break-lock")

    @staticmethod
    def error(result: CommandResult, what: str) -> BorgError:
        if result.timed_out:
            return BorgError(f"borg {what} timed out", returncode=None, transient=True)
        full = store_full(result, what)
        if full is not None:
            return full
        raw = result.stderr_tail(600)
        lines = [line.strip() for line in raw.splitlines() if line.strip()]
        tail = raised_line(lines) or raw.replace("\n", " | ")  # a traceback: what it raised
        return BorgError(
            f"borg {what} failed (exit {result.exit_status}): {tail}",
            returncode=result.exit_status,
            transient=result.exit_status in LOCK_CODES,
        )

    # -- repositories -------------------------------------------------------------


def borg_literal(text: str) -> str:
    """Escape text so borg's {placeholder} expansion leaves it as it is."""
    return text.replace("{", "{{").replace("}", "}}")
