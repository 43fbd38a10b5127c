"""The Borg adapter: borg commands built as data and run through the process seam.

The passphrase reaches borg only on a pipe (``BORG_PASSPHRASE_FD``), read from the
credential source for each command: never in argv, the environment or a log line.
``BORG_EXIT_CODES=modern`` gives specific exit codes (locking: 70-75).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backupd.errors import BorgError
from backupd.process import (
    Argv,
    Invocation,
    ProcessResult,
    Runner,
    Streamer,
    run_local,
    stream_local,
)

LOCK_WAIT_SECONDS = 600
TRANSIENT_CODES = frozenset({70, 71, 72, 73})  # lock errors / lock timeout
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
        raise BorgError(f"borg executable {configured!r} not found")
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
    ) -> None:
        self.binary = binary
        self._passphrase = passphrase
        self.base_dir = base_dir
        self._runner = runner
        self._streamer = streamer

    # -- plumbing -----------------------------------------------------------------
    def environment(self, passphrase_fd: int) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "TZ", "TMPDIR")}
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
        timeout: float | None = SHORT_TIMEOUT,
        what: str = "",
        stdin: bytes | None = None,
        cwd: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> ProcessResult:
        """Run ``borg ARGS``; raise BorgError with borg's last words when it fails."""
        with self._invocation(timeout, stdin, cwd, extra_env) as inv:
            result = self._runner((self.binary, *args), inv)
        if result.returncode != 0 or result.timed_out:
            raise self.error(result, what or args[0])
        return result

    def extract_stream(
        self, repo: Path, archive: str, path: str, sink: Callable[[bytes], object]
    ) -> None:
        """Stream one file of an archive to ``sink``."""
        args: Argv = ("extract", "--stdout", f"{repo}::{archive}", path)
        with self._invocation(None) as inv:
            result = self._streamer((self.binary, *args), inv, sink)
        if result.returncode != 0 or result.timed_out:
            raise self.error(result, "extract")

    @staticmethod
    def error(result: ProcessResult, what: str) -> BorgError:
        if result.timed_out:
            return BorgError(f"borg {what} timed out", returncode=None, transient=True)
        tail = result.stderr_tail(600).replace("\n", " | ")
        return BorgError(
            f"borg {what} failed (exit {result.returncode}): {tail}",
            returncode=result.returncode,
            transient=result.returncode in TRANSIENT_CODES,
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
            "--lock-wait",
            str(LOCK_WAIT_SECONDS),
            "--compression",
            compression,
            "--comment",
            borg_literal(comment),
            "--stdin-name",
            stdin_name,
            "--stdin-mode",
            "0600",
            "--content-from-command",
            f"{repo}::{archive}",
            "--",
            *command,
        )
        result = self.run(args, timeout=timeout, what="create", stdin=stdin)
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
            "create", "--json", "--lock-wait", str(LOCK_WAIT_SECONDS),
            "--compression", compression, "--comment", borg_literal(comment),
            "--numeric-ids", f"{repo}::{archive}", *paths,
        )  # fmt: skip
        result = self.run(
            args,
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
        args: Argv = ("extract", "--numeric-ids", "--sparse", "--strip-components", str(strip),
                      f"{repo}::{archive}", *paths)  # fmt: skip
        self.run(args, timeout=None, what="extract", cwd=str(dest))

    def set_comment(self, repo: Path, archive: str, comment: str) -> None:
        self.run(
            (
                "recreate",
                "--lock-wait",
                str(LOCK_WAIT_SECONDS),
                "--comment",
                borg_literal(comment),
                f"{repo}::{archive}",
            ),
            what="recreate --comment",
        )

    def list_archives(
        self, repo: Path, glob: str | None = None, *, checkpoints: bool = False
    ) -> list[ArchiveEntry]:
        args: Argv = ("list", "--json", "--format", "{name}{comment}")
        if glob:
            args += ("--glob-archives", glob)
        if checkpoints:
            args += ("--consider-checkpoints",)
        data = json.loads(self.run((*args, str(repo)), what="list").stdout)
        return [
            ArchiveEntry(a["name"], a["time"], a.get("comment", ""))
            for a in data.get("archives", [])
        ]

    def info(self, repo: Path, archive: str) -> dict[str, Any]:
        data = json.loads(self.run(("info", "--json", f"{repo}::{archive}"), what="info").stdout)
        archives: list[dict[str, Any]] = data["archives"]
        return archives[0]

    def break_lock(self, repo: Path) -> None:
        self.run(("break-lock", str(repo)), what="break-lock")

    def delete(self, repo: Path, archive: str) -> None:
        self.run(
            ("delete", "--lock-wait", str(LOCK_WAIT_SECONDS), f"{repo}::{archive}"), what="delete"
        )

    # -- maintenance ----------------------------------------------------------------
    def archive_times(self, repo: Path) -> list[ArchiveTime]:
        """Every archive's name and start time, in UTC (checkpoints are not listed)."""
        args: Argv = ("list", "--json", "--lock-wait", str(LOCK_WAIT_SECONDS), str(repo))
        data = json.loads(self.run(args, what="list", extra_env=UTC_ENV).stdout)
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
        args: Argv = ("delete", "--lock-wait", str(LOCK_WAIT_SECONDS), str(repo), *archives)
        self.run(args, what="delete", extra_env=QUIET_ENV)

    def compact(self, repo: Path) -> str:
        """Free the space of deleted archives; borg's own estimate of what it freed, if any."""
        args: Argv = ("compact", "--info", "--lock-wait", str(LOCK_WAIT_SECONDS), str(repo))
        result = self.run(args, timeout=None, what="compact", extra_env=QUIET_ENV)
        said = [line for line in result.stderr_tail().splitlines() if "freed" in line]
        return said[-1].strip() if said else ""

    def check_repository(self, repo: Path) -> None:
        """Read every segment and check its CRCs and the index (no key needed, no decryption)."""
        args: Argv = ("check", "--repository-only", "--lock-wait", str(LOCK_WAIT_SECONDS),
                      str(repo))  # fmt: skip
        self.run(args, timeout=None, what="check --repository-only", extra_env=QUIET_ENV)

    def verify_archive(self, repo: Path, archive: str) -> None:
        """Read one archive back in full: its metadata, then every chunk decrypted and
        authenticated.

        Not ``borg check --verify-data REPO::ARCHIVE``: in Borg 1.4 that reads and decrypts
        every chunk of the *repository*, whatever archive is named. ``extract --dry-run``
        fetches exactly this archive's chunks through the same decrypt-and-MAC path and
        compares each file's size with its chunks.
        """
        target = f"{repo}::{archive}"
        wait = ("--lock-wait", str(LOCK_WAIT_SECONDS))
        self.run(("check", "--archives-only", *wait, target), timeout=None,
                 what="check --archives-only", extra_env=QUIET_ENV)  # fmt: skip
        self.run(("extract", "--dry-run", *wait, target), timeout=None,
                 what="extract --dry-run", extra_env=QUIET_ENV)  # fmt: skip


def _create_stats(result: ProcessResult) -> CreateStats:
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
