"""The store's disk: how full it is (as df says it), and a full store said in one line:
how much is free where, and what borg needs."""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from backupd.config.units import human_bytes
from backupd.errors import StoreFullError
from backupd.local.process import CommandResult


@dataclass(frozen=True)
class StoreDisk:
    """The store's file system, in bytes, as backupd can use it: ``size`` is used + free,
    df's base for "Use%". Not the file system's total: its root reserve (5 % on ext4) and
    what a thin or overlay file system never hands out would keep a used/total share below
    any threshold until the disk is full (measured on a build machine: 13 % of the total
    used, 33 % of what was usable)."""

    size: int
    used: int
    free: int  # available to backupd (not root's reserve)

    @property
    def full_percent(self) -> float:
        return 100.0 * self.used / self.size if self.size else 0.0

    @classmethod
    def of(cls, path: Path) -> StoreDisk:
        """The file system holding ``path``; OSError when it cannot be looked at."""
        usage = shutil.disk_usage(path)
        return cls(usage.used + usage.free, usage.used, usage.free)


_INSUFFICIENT = re.compile(r"Insufficient free space .*\(required: ([^,]+), available: ([^)]+)\)")


def store_full(result: CommandResult, what: str) -> StoreFullError | None:
    """One clear line for a full store instead of borg's traceback tail: how much is
    free where, and what borg says it needs (it reserves room for a whole new segment,
    about 500 MB, to commit anything: even a comment or a delete)."""
    err = result.stderr.decode(errors="replace")
    short = _INSUFFICIENT.search(err)
    if short is None and "No space left on device" not in err:
        return None
    where = _repository_in(result.argv)
    free = human_bytes(shutil.disk_usage(where).free) if where is not None else "little"
    place = f" on {where}" if where is not None else ""
    needs = (
        f"needs about {short.group(1)} (borg's estimate)"
        if short
        else "borg ran out of space writing"
    )
    return StoreFullError(
        f"store full: {free} free{place}, {needs}; borg {what} stopped, "
        "nothing half-written is kept (free space, or prune and compact)",
        returncode=result.exit_status,
    )


def _repository_in(argv: Sequence[str]) -> Path | None:
    """The repository a borg command line names (REPO or REPO::ARCHIVE), if it exists."""
    for arg in argv[1:]:
        path = Path(arg.split("::", 1)[0])
        if path.is_absolute() and (path / "config").is_file():
            return path
    return None
