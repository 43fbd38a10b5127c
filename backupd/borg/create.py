"""Making archives: a gated create for dump streams (decision 0019, backupd/borg/gate.py)
and a create from paths for tree mirrors (with Borg's files cache)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backupd.borg.core import LOCK_WAIT_SECONDS, BorgCore, borg_literal
from backupd.borg.gate import Gate
from backupd.local.process import (
    Argv,
    CommandResult,
)


@dataclass(frozen=True)
class CreateStats:
    archive: str
    original_size: int
    compressed_size: int
    deduplicated_size: int
    nfiles: int
    raw: dict[str, Any]


class BorgCreate(BorgCore):
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
            *_create(compression, chunker_params, comment),
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
        chunker_params: str | None = None,
    ) -> CreateStats:
        """Archive files under ``cwd`` (relative paths), with Borg's files cache.

        One files cache per tree (BORG_FILES_CACHE_SUFFIX): with one cache per repository,
        entries of a tree not seen for 20 runs of *other* sources would expire.
        """
        args: Argv = (
            *_create(compression, chunker_params, comment),
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


def _create(compression: str, chunker_params: str | None, comment: str) -> Argv:
    """``borg create --json`` and what every archive of ours states: compression, chunker
    (borg's default when None), comment."""
    chunker = ("--chunker-params", chunker_params) if chunker_params else ()
    return (
        "create",
        "--json",
        "--compression",
        compression,
        *chunker,
        "--comment",
        borg_literal(comment),
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
