"""check: a repository check every run, and a few archives read back in full, in rotation.

``borg check --repository-only`` reads every segment and checks CRCs and the index: bit rot
and truncated files show up here. Reading archives back (decrypting, authenticating every
chunk) costs as much as the data, so each run reads ``[maintenance] verify_archives`` of
them: those read longest ago, never-read first, oldest first among equals. Over successive
runs every archive is read once before any is read twice, provided archives are not
created faster than they are read (docs/config.md, ``[maintenance]``).

A failure raises (the run fails and alerts); a catalogue row whose archive is missing from
the repository is a warning: someone deleted it behind backupd's back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from backupd.catalogue import Archive
from backupd.errors import BorgError
from jobs.base import MaintenanceEnv, MaintenanceResult

log = logging.getLogger(__name__)
SHOWN = 5
NEVER = datetime.min.replace(tzinfo=UTC)


def rotation(archives: Sequence[Archive], count: int) -> list[Archive]:
    """The ``count`` archives to read now: never read first, then least recently read."""
    if count <= 0:
        return []

    def due(a: Archive) -> tuple[bool, datetime, datetime, str]:
        checked = a.data_checked_at
        return (checked is not None, checked or NEVER, a.created_at, a.name)

    return sorted(archives, key=due)[:count]


class CheckJob:
    name = "check"
    per_repository = True

    def run(self, env: MaintenanceEnv) -> MaintenanceResult:
        assert env.repository is not None
        repo, where = env.repository, str(env.repository)
        started = time.monotonic()
        env.borg.check_repository(repo)
        repo_seconds = time.monotonic() - started
        present = {a.name for a in env.borg.archive_times(repo)}
        live = env.catalogue.live_archives(where)
        missing = sorted(a.name for a in live if a.name not in present)
        there = [a for a in live if a.name in present]
        chosen = rotation(there, env.config.maintenance.verify_archives)
        read_seconds = read_back(env, chosen)
        read_now = {a.name for a in chosen}
        never = sum(1 for a in there if a.data_checked_at is None and a.name not in read_now)
        names = f" ({', '.join(a.name for a in chosen)})" if chosen else ""
        summary = (
            f"repository ok ({repo_seconds:.1f}s); read back {len(chosen)} archive(s) "
            f"in {read_seconds:.1f}s{names}; {never} never read back yet"
        )
        warnings = (missing_warning(missing),) if missing else ()
        return MaintenanceResult(summary, warnings)


def read_back(env: MaintenanceEnv, chosen: Sequence[Archive]) -> float:
    """Read each archive back, stamping each as soon as it passed; seconds taken."""
    assert env.repository is not None
    started = time.monotonic()
    for archive in chosen:
        try:
            env.borg.verify_archive(env.repository, archive.name)
        except BorgError as e:
            raise BorgError(
                f"archive {archive.name}: {e}", returncode=e.returncode, transient=e.transient
            ) from e
        env.catalogue.mark_data_checked(str(env.repository), [archive.name])
        log.debug("%s: read back %s", env.host, archive.name)
    return time.monotonic() - started


def missing_warning(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")
    return (
        f"{len(names)} archive(s) in the catalogue are missing from the repository "
        f"(deleted outside backupd?): {shown}"
    )


JOB = CheckJob()
