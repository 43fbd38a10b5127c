"""compact: give back the space of pruned archives (``borg delete`` only marks it free).

The summary gives the bytes freed as measured on the repository's segment files (the store
is local), and borg's own estimate when it states one.
"""

from __future__ import annotations

import os
from pathlib import Path

from jobs.base import MaintenanceEnv, MaintenanceResult


def segments_size(repo: Path) -> int:
    """Bytes held by the repository's segment files."""
    return tree_bytes(repo / "data")


def tree_bytes(root: Path) -> int:
    """Bytes of the files below ``root`` (a file removed while we walk counts nothing)."""
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:  # a segment compacted away while we walked
                continue
    return total


class CompactJob:
    name = "compact"
    per_repository = True

    def run(self, env: MaintenanceEnv) -> MaintenanceResult:
        assert env.repository is not None
        before = segments_size(env.repository)
        said = env.borg.compact(env.repository)
        after = segments_size(env.repository)
        summary = f"freed {before - after} bytes (segments {before} -> {after} bytes)"
        if said:
            summary += f"; borg: {said}"
        return MaintenanceResult(summary)


JOB = CompactJob()
