"""Paths of a tree the droplet's login user may not read (decision 0015).

Policy: archive what can be read, report what could not. The run ends as a ``warning``
naming the paths and how to grant access; the facts list them. A tree whose root, or
every file, cannot be read is a failure.

Two sources of "unreadable": rsync's own errors (EACCES when it opened a file or listed a
directory: backupd/remote/rsyncmsg.py), and ``find -type f ! -readable`` on the droplet, because
rsync opens only files that changed: a file made unreadable by a chmod or chown alone (its
size and mtime unchanged) would otherwise stay in the mirror with the content read while
it was readable and be archived as if read today. Every such path is removed from the
mirror, so the archive and its manifest hold only what was read this time.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupd.actions import names
from backupd.errors import DumpError
from backupd.remote.rsyncmsg import relative
from jobs.base import TreeTransfer, unreadable_argv

if TYPE_CHECKING:
    from backupd.remote.ssh import Connection

SHOWN = 5  # paths named in the message
IN_FACTS = 100  # paths listed in the facts (their count is always there)
Unreadable = dict[bytes, bool]  # relative name -> is a directory


def find_unreadable(conn: Connection, unit: TreeTransfer, data: Path, timeout: float) -> Unreadable:
    """Regular files below the tree that the login user may not read now and that the
    mirror ``data`` holds from an earlier pull (an excluded file is not in the mirror)."""
    result = conn.run(unreadable_argv(unit.path), timeout=timeout)
    if result.exit_status not in (0, 1):  # 1: some directory could not be listed
        raise DumpError(
            f"{unit.item}: cannot check which files {unit.path} holds that the "
            f"login user may not read: find exited with status "
            f"{result.exit_status}",
            stderr_tail=result.stderr_tail(),
        )
    base = os.fsencode(data)
    found: Unreadable = {}
    for path in result.stdout.split(b"\0"):
        rel = relative(path, unit.path) if path else None
        if rel and os.path.lexists(os.path.join(base, rel)):
            found[rel] = False
    return found


def drop_from_mirror(data: Path, paths: Iterable[bytes]) -> None:
    """Remove each relative path from the mirror, never following a symlink out of it."""
    base = os.fsencode(data)
    for rel in paths:
        parent = base
        *dirs, last = rel.split(b"/")
        for part in dirs:
            parent = os.path.join(parent, part)
            if not os.path.isdir(parent) or os.path.islink(parent):
                break  # gone, or a symlink the droplet made: nothing of ours below
        else:
            _remove(parent, os.path.join(parent, last))


def _remove(parent: bytes, target: bytes) -> None:
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    with _writable(parent):
        if stat.S_ISDIR(st.st_mode):
            _rmtree(target)
        else:
            os.unlink(target)


@contextmanager
def _writable(directory: bytes) -> Iterator[None]:
    """The mirror keeps the droplet's modes; a read-only directory is opened up for the
    removal (backupd need not run as root) and given its mode back."""
    mode = stat.S_IMODE(os.lstat(directory).st_mode)
    if os.access(directory, os.W_OK | os.X_OK):
        yield
        return
    os.chmod(directory, mode | stat.S_IRWXU)
    try:
        yield
    finally:
        os.chmod(directory, mode)


def _rmtree(path: bytes) -> None:
    os.chmod(path, stat.S_IRWXU)
    for top, dirs, _files in os.walk(path):
        for d in dirs:
            sub = os.path.join(top, d)
            if not os.path.islink(sub):
                os.chmod(sub, stat.S_IRWXU)
    shutil.rmtree(path)


def shown(paths: Unreadable) -> str:
    """The first few paths for people (a directory with a trailing /), and how many more."""
    first = [
        names.display(rel) + ("/" if is_dir else "") for rel, is_dir in list(paths.items())[:SHOWN]
    ]
    more = f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
    return ", ".join(first) + more


def how_to_grant(user: str, sudo: bool) -> str:
    if sudo:
        return "unreadable even with sudo (a FUSE or NFS mount may refuse root): check the droplet"
    return (
        f"give {user} read permission, or set sudo = true on the source with the sudoers "
        "line from docs/droplet-setup.md"
    )


def _reader(unit: TreeTransfer, user: str) -> str:
    return "root (sudo)" if unit.sudo else user


def warning_text(unit: TreeTransfer, user: str, paths: Unreadable) -> str:
    return (
        f"{unit.item}: {len(paths)} path(s) in {unit.path} could not be read by "
        f"{_reader(unit, user)} and are not in this backup: {shown(paths)} "
        f"({how_to_grant(user, unit.sudo)})"
    )


def nothing_read(unit: TreeTransfer, user: str, paths: Unreadable) -> DumpError:
    """The failure for a tree of which no file could be read."""
    what = f": {shown(paths)}" if paths else ""
    return DumpError(
        f"{unit.item}: {_reader(unit, user)} could not read {unit.path}{what}; "
        f"nothing was archived ({how_to_grant(user, unit.sudo)})"
    )


def facts(paths: Unreadable) -> dict[str, Any]:
    """``unreadable``: up to IN_FACTS names in their JSON form (a directory ends in /);
    ``unreadable_count``: how many there were."""
    listed = [
        names.to_json(rel + (b"/" if is_dir else b""))
        for rel, is_dir in list(paths.items())[:IN_FACTS]
    ]
    return {"unreadable": listed, "unreadable_count": len(paths)}
