"""restore: bring a restore point back as files, checked against the recorded sha256.

Nothing existing is overwritten without ``force``; data is written to a private
``.partial`` file and only renamed into place once its hash matches the catalogue.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from backupd.actions import names
from backupd.actions.context import Context
from backupd.actions.manifest import (
    archived_manifest,
    parents_of,
    set_directories,
    under,
    verify_tree,
)
from backupd.actions.recorded import Ending, settle
from backupd.actions.tree import TREE_FILENAME
from backupd.borg.adapter import LOCK_WAIT_SECONDS
from backupd.catalogue import Archive, Check, RunStatus
from backupd.config.load import HostConfig, SourceConfig
from backupd.errors import NotFoundError, RefusedError, UsageError, VerificationError

log = logging.getLogger(__name__)
Progress = Callable[[int], object]  # told each chunk's size as it is restored


@dataclass(frozen=True)
class RestoredFile:
    archive: str
    path: Path
    nbytes: int
    sha256: str


class Tally:
    """The sha256 and size of an archive's stream as it passes, to compare with the record."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self.nbytes = 0

    def __call__(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        self.nbytes += len(chunk)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def differs(self, archive: Archive) -> str | None:
        """None when it matches the catalogue; else "(sha256 ..., N bytes; recorded ...)"."""
        if self.sha256 == archive.sha256 and self.nbytes == archive.nbytes:
            return None
        return (
            f"(sha256 {self.sha256[:12]}, {self.nbytes} bytes; recorded "
            f"{archive.sha256[:12]}, {archive.nbytes} bytes)"
        )


def read_back(ctx: Context, a: Archive) -> Tally:
    """Read an archive's stream to its end: its sha256 and size, to compare with the record."""
    tally = Tally()
    ctx.borg.extract_stream(Path(a.repository), a.name, a.filename, tally)
    return tally


def choose_archives(
    ctx: Context,
    host: HostConfig,
    source: SourceConfig,
    archive: str | None,
    at: datetime | None = None,
    item: str | None = None,
) -> list[Archive]:
    """The restore point: a named archive; else with ``item`` that item's newest archive
    (whatever the rest of its night did: an archived item is a good restore point of its
    own); else the newest good backup's whole set (at or before ``at``)."""
    label = f"{host.name}/{source.name}"
    if archive is None and item is not None:
        newest = [
            a
            for a in ctx.catalogue.archives(host.name, source.name)
            if a.item == item and a.pruned_at is None and (at is None or a.created_at <= at)
        ]
        if newest:
            return newest[:1]
        raise NotFoundError(
            f"{label}: no archive of {item!r}"
            + (f" at or before {at.isoformat(timespec='seconds')}" if at else "")
            + " (see: backupctl archives)"
        )
    if archive is None:
        chosen = ctx.catalogue.newest_good_set(host.name, source.name, at)
        if chosen:
            _say_what_was_skipped(ctx, label, host, source, chosen, at)
            return chosen
        if at is None:
            raise NotFoundError(f"{label}: no successful backup recorded yet")
        first = ctx.catalogue.archives(host.name, source.name)
        oldest = min((a.created_at for a in first), default=None)
        since = (
            f"the first is from {oldest.isoformat(timespec='seconds')}" if oldest else "none yet"
        )
        raise NotFoundError(
            f"{label}: no good backup at or before {at.isoformat(timespec='seconds')} ({since})"
        )
    for a in ctx.catalogue.archives(host.name, source.name):
        if a.name == archive:
            run = ctx.catalogue.find_run(a.run_id) if a.run_id is not None else None
            if run is not None and run.status in (RunStatus.FAILED, RunStatus.INTERRUPTED):
                log.warning(
                    "%s: %s is part of an incomplete backup (run %d %s: %s); the "
                    "other items of that night are missing",
                    label,
                    a.name,
                    run.id,
                    run.status,
                    run.error or "no reason recorded",
                )
            return [a]
    raise NotFoundError(f"{label}: no archive named {archive!r} (see: backupctl archives)")


def _say_what_was_skipped(
    ctx: Context,
    label: str,
    host: HostConfig,
    source: SourceConfig,
    chosen: list[Archive],
    at: datetime | None,
) -> None:
    """A newer backup that a failure cut short is never restored in part without a word:
    name it, and say which complete one is restored instead."""
    first = min(a.created_at for a in chosen)
    skipped = ctx.catalogue.incomplete_runs(host.name, source.name, first, at)
    for run in skipped:
        when = run.started_at.isoformat(timespec="seconds")
        log.warning(
            "%s: the backup of %s is incomplete (run %d %s: %s): restoring the newest "
            "complete one instead, from %s",
            label,
            when,
            run.id,
            run.status,
            run.error or "no reason recorded",
            first.isoformat(timespec="seconds"),
        )


@dataclass(frozen=True)
class DirRequest:
    """A restore into a directory: where, which point (archive or time), may it replace."""

    to: Path
    archive: str | None = None
    at: datetime | None = None
    force: bool = False
    include: tuple[str, ...] = ()  # a tree's files or subtrees only (display form, relative)


def restore_to_dir(
    ctx: Context,
    host: HostConfig,
    source: SourceConfig,
    req: DirRequest,
    progress: Progress | None = None,
) -> list[RestoredFile]:
    return _restore_chosen(ctx, plan_restore_to_dir(ctx, host, source, req), req, progress)


def _restore_chosen(
    ctx: Context, chosen: list[Archive], req: DirRequest, progress: Progress | None
) -> list[RestoredFile]:
    to, force = req.to, req.force
    await_repositories(ctx, chosen)
    if any(a.filename == TREE_FILENAME for a in chosen):
        return [restore_tree(ctx, a, to, force=force, include=req.include) for a in chosen]
    to.mkdir(mode=0o700, parents=True, exist_ok=True)
    return [_extract_one(ctx, a, to / a.filename, progress) for a in chosen]


def restore_files(
    ctx: Context,
    host: HostConfig,
    source: SourceConfig,
    req: DirRequest,
    progress: Progress | None = None,
) -> list[RestoredFile]:
    """``restore --to DIR``, recorded in the catalogue (before, then with its outcome)."""
    chosen = plan_restore_to_dir(ctx, host, source, req)
    rid = ctx.catalogue.start_restore(
        host.name, source.name, [a.name for a in chosen], "dir", str(req.to)
    )
    started = time.monotonic()

    def finish(end: Ending) -> None:
        seconds = time.monotonic() - started
        ctx.catalogue.finish_restore(rid, end.run_status, error=end.error, seconds=seconds)

    with settle(None, finish, reraise=True):
        restored = _restore_chosen(ctx, chosen, req, progress)
    checks = [
        Check(
            "sha256" if f.path.is_file() else "manifest", f"{f.path}: {f.nbytes} bytes as recorded"
        )
        for f in restored
    ]
    ctx.catalogue.finish_restore(
        rid,
        RunStatus.SUCCEEDED,
        nbytes=sum(f.nbytes for f in restored),
        seconds=time.monotonic() - started,
        checks=checks,
    )
    return restored


def await_repositories(ctx: Context, chosen: list[Archive]) -> None:
    """Before anything is written: a repository locked by someone else fails the restore
    at once (RepositoryLockedError); a backup of ours holding it is waited for (and said)."""
    for repo in dict.fromkeys(a.repository for a in chosen):
        ctx.borg.locks.await_free(Path(repo), exclusive=False, wait=LOCK_WAIT_SECONDS)


def plan_restore_to_dir(
    ctx: Context, host: HostConfig, source: SourceConfig, req: DirRequest
) -> list[Archive]:
    """Choose the restore point and check the target; change nothing (``--dry-run`` stops
    here). Raises the refusal a real restore would meet."""
    chosen = choose_archives(ctx, host, source, req.archive, req.at)
    to, force = req.to, req.force
    if req.include and not all(a.filename == TREE_FILENAME for a in chosen):
        raise UsageError(
            f"{host.name}/{source.name} is a {source.kind} source: --include picks files of "
            "a tree (directory, volume)"
        )
    if any(a.filename == TREE_FILENAME for a in chosen):
        if to.exists() and any(to.iterdir()) and not force:
            raise RefusedError(f"refusing to restore into {to}: it is not empty (use --force)")
        return chosen
    clashes = [str(to / a.filename) for a in chosen if (to / a.filename).exists()]
    if clashes and not force:
        raise RefusedError(f"refusing to overwrite {', '.join(clashes)} (use --force to replace)")
    return chosen


def restore_tree(
    ctx: Context, archive: Archive, to: Path, *, force: bool, include: Sequence[str] = ()
) -> RestoredFile:
    """Extract a directory archive into ``to`` (only the files or subtrees ``include``
    names, when given) and check every file restored against its manifest. Nothing is
    created before the request is known to be good (paths, the manifest)."""
    if to.exists() and any(to.iterdir()) and not force:
        raise RefusedError(f"refusing to restore into {to}: it is not empty (use --force)")
    wanted = included(include)
    repo = Path(archive.repository)
    entries, digest = archived_manifest(ctx, repo, archive.name)
    if digest != archive.sha256:
        raise VerificationError(
            f"{archive.name}: the archived manifest does not match the "
            "catalogue; nothing was extracted"
        )
    above: frozenset[bytes] = frozenset()
    if wanted:
        missing = [names.display(w) for w in wanted if not under(entries, [w])]
        if missing:
            raise NotFoundError(
                f"{archive.name} does not hold {', '.join(missing)} (see: backupctl ls, find)"
            )
        # what was asked for, and the directories above it as they were (mode, owner,
        # times: a push must not give the droplet's folders Borg's bare ones)
        above = parents_of(wanted)
        entries = under(entries, wanted) + [e for e in entries if e[1] in above]
    to.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = [os.fsdecode(b"data/" + w) for w in wanted] or ["data"]
    ctx.borg.extract_to(repo, archive.name, to, paths=paths, strip=1)
    if wanted:
        set_directories(to, [e for e in entries if e[1] in above])
    problems = verify_tree(to, entries, within=wanted)
    if problems:
        shown = "; ".join(problems[:5])
        raise VerificationError(
            f"{archive.name}: restored tree differs from its manifest in {len(problems)} "
            f"place(s): {shown}"
        )
    nbytes = sum(int(e[2]) for e in entries if e[0] == "f") if wanted else archive.nbytes
    log.info("restored %s into %s (%d bytes, every file verified)", archive.name, to, nbytes)
    # a part of the tree has no sha256 of its own: its files were checked one by one
    return RestoredFile(archive.name, to, nbytes, "" if wanted else archive.sha256)


def included(include: Sequence[str]) -> list[bytes]:
    """``--include`` paths as names' bytes: relative to the tree (a leading ``/`` or
    ``./`` is the tree's top), in the display form find and ls show, none inside another;
    UsageError for one that leaves the tree."""
    out: list[bytes] = []
    for given in include:
        text = given.strip("/")
        while text.startswith("./"):
            text = text[2:].lstrip("/")
        try:
            raw = names.from_display(text)
        except ValueError as e:
            raise UsageError(f"--include {given!r}: {e}") from None
        parts = raw.split(b"/")
        if not raw or any(p in (b"", b".", b"..") for p in parts):
            raise UsageError(f"--include {given!r}: a path under the tree, without . or ..")
        out.append(raw)
    # one inside another is restored with it (Borg would say the inner one never matched)
    return sorted({p for p in out if not any(p != q and p.startswith(q + b"/") for q in out)})


def _extract_one(
    ctx: Context, archive: Archive, target: Path, progress: Progress | None = None
) -> RestoredFile:
    partial = target.with_name(target.name + ".partial")
    tally = Tally()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:

            def write(chunk: bytes) -> None:
                tally(chunk)
                out.write(chunk)
                if progress:
                    progress(len(chunk))

            ctx.borg.extract_stream(Path(archive.repository), archive.name, archive.filename, write)
        if (wrong := tally.differs(archive)) is not None:
            raise VerificationError(
                f"{archive.name}: restored data does not match the "
                f"catalogue {wrong}; nothing was kept"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    log.info("restored %s to %s (%d bytes, sha256 verified)", archive.name, target, tally.nbytes)
    return RestoredFile(archive.name, target, tally.nbytes, tally.sha256)
