"""The Borg adapter: borg commands built as data and run through the process seam.

The passphrase reaches borg only on a pipe (``BORG_PASSPHRASE_FD``), read from the
credential source for each command: never in argv, the environment or a log line.
``BORG_EXIT_CODES=modern`` gives specific exit codes (locking: 70-75).

Locks: borg waits 1 s; backupd then judges the holder (backupd/borg/lock.py), waits only for
its own live jobs, and raises RepositoryLockedError at once for anyone else.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backupd.borg.gate import Gate
from backupd.borg.lock import JOB_ENV, LOCK_CODES, PID_ENV, Locks
from backupd.borg.space import store_full
from backupd.errors import BorgError, MissingProgramError
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


@dataclass(frozen=True)
class CreateStats:
    archive: str
    original_size: int
    compressed_size: int
    deduplicated_size: int
    nfiles: int
    raw: dict[str, Any]


@dataclass(frozen=True)
class ArchiveEntry:
    name: str
    time: str
    comment: str


@dataclass(frozen=True)
class ArchiveTime:
    name: str
    time: datetime  # when the archive was started, aware UTC


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


class Borg:
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
        }

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
        args: Argv = ("extract", "--stdout", f"{repo}::{archive}", path)

        def attempt(argv: Argv) -> CommandResult:
            with self._invocation(None) as inv:
                return self._streamer((self.binary, *argv), inv, sink)

        result = self.locks.run(args, repo, LOCK_WAIT_SECONDS, attempt)
        if result.exit_status != 0 or result.timed_out:
            raise self.error(result, "extract")

    @property
    def locks(self) -> Locks:
        """Who holds a lock, and what this Borg does about it (backupd/borg/lock.py)."""
        return Locks(self.base_dir, self.break_lock, self.on_wait)

    @staticmethod
    def error(result: CommandResult, what: str) -> BorgError:
        if result.timed_out:
            return BorgError(f"borg {what} timed out", returncode=None, transient=True)
        full = store_full(result, what)
        if full is not None:
            return full
        tail = result.stderr_tail(600).replace("\n", " | ")
        return BorgError(
            f"borg {what} failed (exit {result.exit_status}): {tail}",
            returncode=result.exit_status,
            transient=result.exit_status in LOCK_CODES,
        )

    # -- repositories -------------------------------------------------------------
    @staticmethod
    def is_repository(repo: Path) -> bool:
        return (repo / "config").is_file() and (repo / "data").is_dir()

    def ensure_repository(self, repo: Path, encryption: str) -> bool:
        """Initialise ``repo`` on first use; True when it was created now."""
        if self.is_repository(repo):
            return False
        if repo.exists() and any(repo.iterdir()):
            raise BorgError(f"{repo} exists, is not empty and is not a Borg repository")
        repo.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.run(("init", "--encryption", encryption, str(repo)), what="init")
        return True

    def export_key(self, repo: Path, dest: Path, *, paper: bool = False) -> None:
        """``borg key export [--paper] REPO DEST``: the repository key (still protected by
        the passphrase), as a file for ``borg key import`` or as text to type back in."""
        args: Argv = ("key", "export", *(("--paper",) if paper else ()), str(repo), str(dest))
        self.run(args, what="key export --paper" if paper else "key export")

    # -- archives -----------------------------------------------------------------
    def create_from_command(
        self,
        repo: Path,
        archive: str,
        *,
        stdin_name: str,
        command: Sequence[str],
        comment: str,
        compression: str,
        timeout: float,
        stdin: bytes | None = None,
    ) -> CreateStats:
        """Store a command's stdout as one file; borg makes no archive if it fails.

        ``stdin`` reaches the command: borg 1.4 starts it with its own stdin inherited.
        """
        args: Argv = (
            "create",
            "--json",
            "--compression",
            compression,
            "--comment",
            borg_literal(comment),
            f"--stdin-name={stdin_name}",  # one word: a name is never read as an option
            "--stdin-mode",
            "0600",
            "--content-from-command",
            f"{repo}::{archive}",
            "--",
            *command,
        )
        result = self.run(
            args, repo=repo, wait=LOCK_WAIT_SECONDS, timeout=timeout, what="create", stdin=stdin
        )
        return _create_stats(result)

    def create_gated(
        self,
        repo: Path,
        archive: str,
        *,
        spool: Path,
        filename: str,
        comment: str,
        compression: str,
        timeout: float,
        produce: Callable[[Callable[[bytes], object]], bytes | None],
        chunker_params: str | None = None,
    ) -> CreateStats | None:
        """Store what ``produce`` hands its sink as ``filename``, in one borg process
        (backupd/borg/gate.py). ``produce`` starts once borg holds its lock, and returns the
        seal (bytes, stored beside the stream as SEAL_NAME) to keep the archive, or None
        to refuse it: then borg commits nothing and this returns None. ``spool``: a new
        private directory, removed afterwards. Raises BorgError when borg failed, and
        whatever ``produce`` raised (borg then commits nothing either)."""
        gate = Gate(spool, filename)
        args: Argv = (
            "create",
            "--json",
            "--compression",
            compression,
            *(("--chunker-params", chunker_params) if chunker_params else ()),
            "--comment",
            borg_literal(comment),
            "--read-special",  # the stream's name is a symlink to borg's stdin
            "--files-cache=disabled",
            "--paths-from-command",
            f"{os.path.abspath(repo)}::{archive}",  # borg runs in the spool directory
            "--",
            *gate.command(),
        )
        refused: list[bool] = []

        def body(sink: Callable[[bytes], object]) -> None:
            try:
                seal = produce(sink)
            except BaseException:
                gate.refuse()
                raise
            refused.append(seal is None)
            if seal is None:
                gate.refuse()
            else:
                gate.allow(seal)

        def attempt(argv: Argv) -> CommandResult:
            with tempfile.TemporaryFile() as out, self._invocation(timeout, cwd=str(spool)) as inv:
                inv.stdout = out
                fed = self._feeder((self.binary, *argv), inv, body, ready=gate.started)
                out.seek(0)
                status = None if fed.timed_out else fed.exit_status
                why = "deadline" if fed.timed_out else None
                return CommandResult(argv, status, out.read(), fed.output, fed.seconds, why)

        try:
            result = self.locks.run(args, repo, LOCK_WAIT_SECONDS, attempt)
        finally:
            gate.close()
        if refused == [True]:
            return None
        if result.exit_status != 0 or result.timed_out:
            raise self.error(result, "create")
        return _create_stats(result)

    def create_from_paths(
        self,
        repo: Path,
        archive: str,
        *,
        cwd: Path,
        paths: Sequence[str],
        comment: str,
        compression: str,
        timeout: float,
        files_cache_suffix: str,
    ) -> CreateStats:
        """Archive files under ``cwd`` (relative paths), with Borg's files cache.

        One files cache per tree (BORG_FILES_CACHE_SUFFIX): with one cache per repository,
        entries of a tree not seen for 20 runs of *other* sources would expire.
        """
        args: Argv = (
            "create",
            "--json",
            "--compression",
            compression,
            "--comment",
            borg_literal(comment),
            "--numeric-ids",
            f"{repo}::{archive}",
            *paths,
        )
        result = self.run(
            args,
            repo=repo,
            wait=LOCK_WAIT_SECONDS,
            timeout=timeout,
            what="create",
            cwd=str(cwd),
            extra_env={"BORG_FILES_CACHE_SUFFIX": files_cache_suffix},
        )
        return _create_stats(result)

    def extract_to(
        self, repo: Path, archive: str, dest: Path, paths: Sequence[str] = (), strip: int = 0
    ) -> None:
        """Extract (part of) an archive into ``dest`` with owners, modes and times; runs of
        zeros become holes (``--sparse``), so a sparse file takes no more disk than it did."""
        args: Argv = (
            "extract",
            "--numeric-ids",
            "--sparse",
            "--strip-components",
            str(strip),
            f"{repo}::{archive}",
            *paths,
        )
        self.run(
            args, repo=repo, wait=LOCK_WAIT_SECONDS, timeout=None, what="extract", cwd=str(dest)
        )

    def list_archives(
        self, repo: Path, glob: str | None = None, *, checkpoints: bool = False
    ) -> list[ArchiveEntry]:
        args: Argv = ("list", "--json", "--format", "{name}{comment}")
        if glob:
            args += ("--glob-archives", glob)
        if checkpoints:
            args += ("--consider-checkpoints",)
        data = json.loads(self.run((*args, str(repo)), repo=repo, what="list").stdout)
        return [
            ArchiveEntry(a["name"], a["time"], a.get("comment", ""))
            for a in data.get("archives", [])
        ]

    def info(self, repo: Path, archive: str) -> dict[str, Any]:
        args: Argv = ("info", "--json", f"{repo}::{archive}")
        data = json.loads(self.run(args, repo=repo, what="info").stdout)
        archives: list[dict[str, Any]] = data["archives"]
        return archives[0]

    def archive_sizes(self, repo: Path) -> dict[str, dict[str, Any]]:
        """Every archive's stats by name, as ``borg info --json`` gives them now (bytes:
        original_size, compressed_size, deduplicated_size = held by that archive alone)."""
        args: Argv = ("info", "--json", "--glob-archives", "*", str(repo))
        data = json.loads(self.run(args, repo=repo, what="info", timeout=None).stdout)
        return {a["name"]: dict(a.get("stats", {})) for a in data.get("archives", [])}

    def break_lock(self, repo: Path) -> None:
        self.run(("break-lock", str(repo)), what="break-lock")

    def delete(self, repo: Path, archive: str) -> None:
        args: Argv = ("delete", f"{repo}::{archive}")
        self.run(args, repo=repo, wait=LOCK_WAIT_SECONDS, what="delete")

    # -- maintenance ----------------------------------------------------------------
    def archive_times(self, repo: Path) -> list[ArchiveTime]:
        """Every archive's name and start time, in UTC (checkpoints are not listed)."""
        args: Argv = ("list", "--json", str(repo))
        result = self.run(args, repo=repo, wait=LOCK_WAIT_SECONDS, what="list", extra_env=UTC_ENV)
        data = json.loads(result.stdout)
        return [
            ArchiveTime(a["name"], datetime.fromisoformat(a["time"]).replace(tzinfo=UTC))
            for a in data.get("archives", [])
        ]

    def delete_archives(self, repo: Path, archives: Sequence[str]) -> None:
        """Delete several archives in one transaction (``borg delete REPO A B ...``).

        A name that is not there makes borg warn (exit 1) after deleting the others.
        """
        if not archives:
            return
        args: Argv = ("delete", str(repo), *archives)
        self.run(args, repo=repo, wait=LOCK_WAIT_SECONDS, what="delete", extra_env=QUIET_ENV)

    def compact(self, repo: Path) -> str:
        """Free the space of deleted archives; borg's own estimate of what it freed, if any."""
        args: Argv = ("compact", "--info", str(repo))
        result = self.run(
            args,
            repo=repo,
            wait=LOCK_WAIT_SECONDS,
            timeout=None,
            what="compact",
            extra_env=QUIET_ENV,
        )
        said = [line for line in result.stderr_tail().splitlines() if "freed" in line]
        return said[-1].strip() if said else ""

    def check_repository(self, repo: Path) -> None:
        """Read every segment and check its CRCs and the index (no key needed, no decryption)."""
        args: Argv = ("check", "--repository-only", str(repo))
        self.run(
            args,
            repo=repo,
            wait=LOCK_WAIT_SECONDS,
            timeout=None,
            what="check --repository-only",
            extra_env=QUIET_ENV,
        )

    def verify_archive(self, repo: Path, archive: str) -> None:
        """Read one archive back in full: its metadata, then every chunk decrypted and
        authenticated.

        Not ``borg check --verify-data REPO::ARCHIVE``: in Borg 1.4 that reads and decrypts
        every chunk of the *repository*, whatever archive is named. ``extract --dry-run``
        fetches exactly this archive's chunks through the same decrypt-and-MAC path and
        compares each file's size with its chunks.
        """
        target = f"{repo}::{archive}"
        for args in (("check", "--archives-only", target), ("extract", "--dry-run", target)):
            self.run(
                args,
                repo=repo,
                wait=LOCK_WAIT_SECONDS,
                timeout=None,
                what=" ".join(args[:2]),
                extra_env=QUIET_ENV,
            )


def _create_stats(result: CommandResult) -> CreateStats:
    data = json.loads(result.stdout)
    stats = data["archive"]["stats"]
    return CreateStats(
        archive=data["archive"]["name"],
        original_size=int(stats["original_size"]),
        compressed_size=int(stats["compressed_size"]),
        deduplicated_size=int(stats["deduplicated_size"]),
        nfiles=int(stats["nfiles"]),
        raw=data,
    )


def borg_literal(text: str) -> str:
    """Escape text so borg's {placeholder} expansion leaves it as it is."""
    return text.replace("{", "{{").replace("}", "}}")
