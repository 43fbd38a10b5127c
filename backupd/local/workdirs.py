"""Private working directories that say whether they are in use: a process killed half
way (SIGKILL runs no cleanup) leaves its directory behind, and the next user of the same
parent removes it, but never one another process still holds (an flock on a file in it,
released by the kernel when its holder dies)."""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK = "in-use"
YOUNG = 60.0  # seconds: a directory made a moment ago may not have its lock yet


@contextmanager
def held_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A new 0700 directory ``parent/PREFIXxxxx``, held (locked) while the block runs and
    removed after, whatever happens; leftovers of dead holders with the same prefix are
    removed first."""
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    remove_unheld(parent, prefix)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))  # 0700
    try:
        with (folder / LOCK).open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_unheld(parent: Path, prefix: str) -> list[Path]:
    """Remove the directories ``parent/PREFIX*`` nobody holds; which were removed."""
    removed = []
    for folder in parent.glob(f"{prefix}*"):
        lock = folder / LOCK
        if not lock.exists():
            with contextlib.suppress(OSError):
                if time.time() - folder.stat().st_mtime > YOUNG:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder)
            continue
        try:
            with lock.open("a") as held:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: its holder lives; or gone meanwhile
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed
