"""The Borg adapter: borg commands built as data and run through the process seam.

The verbs backupd uses, on repositories and archives; how a command runs (passphrase on a
pipe, locks, errors) is in backupd/borg/core.py, how archives are made in
backupd/borg/create.py.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backupd.borg.core import (
    LOCK_WAIT_SECONDS,
    QUIET_ENV,
    UTC_ENV,
    borg_literal,
    find_borg,
)
from backupd.borg.create import BorgCreate, CreateStats
from backupd.errors import BorgError
from backupd.local.process import (
    Argv,
)

__all__ = [
    "LOCK_WAIT_SECONDS",
    "ArchiveEntry",
    "ArchiveTime",
    "Borg",
    "CreateStats",
    "borg_literal",
    "find_borg",
]


@dataclass(frozen=True)
class ArchiveEntry:
    name: str
    time: str
    comment: str


@dataclass(frozen=True)
class ArchiveTime:
    name: str
    time: datetime  # when the archive was started, aware UTC


class Borg(BorgCreate):
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

    def import_key(self, repo: Path, source: Path) -> None:
        """``borg key import REPO SOURCE``: a key exported before, back into use (a
        ``keyfile`` repository brought to a new host needs its key there)."""
        self.run(("key", "import", str(repo), str(source)), what="key import")

    def forget(self, repo_id: str) -> list[Path]:
        """Move aside what this host's Borg remembers of repository ``repo_id`` (its
        security directory: the newest manifest seen; its cache): a repository brought
        back from a copy is older than what Borg saw, which it would refuse as a replay
        attack. Where they went."""
        moved = []
        stamp = str(int(time.time()))
        for known in (
            self.base_dir / ".config" / "borg" / "security" / repo_id,
            self.base_dir / ".cache" / "borg" / repo_id,
        ):
            if repo_id and known.exists():
                aside = known.with_name(f"{repo_id}.before-restore-{stamp}")
                known.rename(aside)
                moved.append(aside)
        return moved

    # -- archives -----------------------------------------------------------------

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

    def read_files(self, repo: Path, archive: str, exclude: Sequence[str] = ()) -> dict[str, bytes]:
        """Every regular file of an archive but those ``exclude`` matches (Borg patterns,
        such as ``pp:data``), archive path -> content, in memory: names and contents in one
        ``borg export-tar`` to a pipe. For a few small files (a tree's manifest)."""
        args: Argv = (
            "export-tar",
            *(arg for pattern in exclude for arg in ("--exclude", pattern)),
            f"{repo}::{archive}",
            "-",
        )
        data = bytearray()
        self.stream(args, repo, data.extend, "export-tar")
        files: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                content = tar.extractfile(member) if member.isfile() else None
                if content is not None:
                    files[member.name] = content.read()
        return files

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
