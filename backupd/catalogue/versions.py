"""The index of file versions (issue 16): what each night's manifest of a tree held, kept
as versions, not copies. A version is one path with one content and metadata; it spans
the archives of its item from the first that held it to the last, so a night adds rows
only for what changed. ``find`` and ``ls`` read it without opening a repository."""

from __future__ import annotations

import bisect
import fnmatch
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import delete, exists, insert, select, update
from sqlalchemy.orm import Session, aliased

from backupd.catalogue.models import Archive, FileVersion, Host, Source

# what makes a version: any change is a new one (VersionRow.key, in this order)
KEY_COLUMNS = (
    FileVersion.type,
    FileVersion.size,
    FileVersion.mode,
    FileVersion.uid,
    FileVersion.gid,
    FileVersion.mtime,
    FileVersion.sha256,
    FileVersion.target,
)


def version_key(v: FileVersion) -> tuple[Any, ...]:
    """What makes a version (VersionRow.key of a stored one): two rows with equal keys
    hold the same file, e.g. one deleted and restored as it was."""
    return tuple(getattr(v, column.key) for column in KEY_COLUMNS)


BATCH = 500  # ids per UPDATE ... IN (...): under SQLite's and PostgreSQL's limits
GLOB = set("*?[")


class HasSession(Protocol):
    def session(self) -> Any: ...


@dataclass(frozen=True)
class VersionRow:
    """One manifest entry as the index keeps it (names in their display form)."""

    path: str
    type: str
    size: int
    mode: int
    uid: int
    gid: int
    mtime: int
    sha256: str | None = None
    target: str | None = None

    def key(self) -> tuple[Any, ...]:
        return (
            self.type,
            self.size,
            self.mode,
            self.uid,
            self.gid,
            self.mtime,
            self.sha256,
            self.target,
        )


@dataclass(frozen=True)
class Found:
    """A version ``find`` found: where, what, and the live archives that hold it."""

    host: str
    source: str
    item: str
    version: FileVersion
    first_seen: datetime  # its first and last live archive
    last_seen: datetime
    archives: int  # how many live archives hold it
    gone: bool  # its path is not in the item's newest archive


class VersionRecords:
    def add_tree_archive(self: HasSession, rows: Sequence[VersionRow], **fields: Any) -> int:
        """Record a tree's archive and its manifest's versions in one transaction: the
        versions the item's previous archive held unchanged now end here, the rest start
        here. Returns the archive's id."""
        with self.session() as s:
            archive = Archive(**fields)
            s.add(archive)
            s.flush()
            _index(s, archive, rows)
            return archive.id

    def find_versions(
        self: HasSession,
        pattern: str,
        host: str | None = None,
        source: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        gone_only: bool = False,
    ) -> list[Found]:
        """Versions whose path matches ``pattern`` (a glob: with ``/`` the whole path, else
        the name; no glob characters: a part of the path), held by a live archive within
        [since, until]; ``gone_only``: of paths the item's newest archive does not hold."""
        first, last = aliased(Archive), aliased(Archive)
        with self.session() as s:
            query = (
                select(FileVersion, Host.name, Source.name, first.created_at, last.created_at)
                .join(Source, FileVersion.source_id == Source.id)
                .join(Host, Source.host_id == Host.id)
                .join(first, FileVersion.first_archive_id == first.id)
                .join(last, FileVersion.last_archive_id == last.id)
                .where(FileVersion.path.like(_like(pattern), escape="\\"))
                .order_by(
                    Host.name, Source.name, FileVersion.item, FileVersion.path, first.created_at
                )
            )
            if host is not None:
                query = query.where(Host.name == host)
            if source is not None:
                query = query.where(Source.name == source)
            rows = [r for r in s.execute(query) if _matches(pattern, r[0].path)]
            lives = _live_archives(s, {(r[0].source_id, r[0].item) for r in rows})
            paths: dict[tuple[int, str], set[str]] = {}
            for r in rows:
                paths.setdefault((r[0].source_id, r[0].item), set()).add(r[0].path)
            present = _newest_paths(s, lives, paths)
            times_of = {key: [a.created_at for a in live] for key, live in lives.items()}
            found = []
            for v, h, src, began, ended in rows:
                times = times_of.get((v.source_id, v.item), [])
                held = times[bisect.bisect_left(times, began) : bisect.bisect_right(times, ended)]
                held = [
                    t
                    for t in held
                    if (since is None or t >= since) and (until is None or t <= until)
                ]
                if not held:
                    continue
                gone = v.path not in present.get((v.source_id, v.item), set())
                if gone_only and not gone:
                    continue
                found.append(Found(h, src, v.item, v, held[0], held[-1], len(held), gone))
            return found

    def tree_at(self: HasSession, source_id: int, item: str, archive: Archive) -> list[FileVersion]:
        """The versions ``archive`` (a live one of that item) held, by path."""
        with self.session() as s:
            first, last = aliased(Archive), aliased(Archive)
            query = (
                select(FileVersion)
                .join(first, FileVersion.first_archive_id == first.id)
                .join(last, FileVersion.last_archive_id == last.id)
                .where(
                    FileVersion.source_id == source_id,
                    FileVersion.item == item,
                    first.created_at <= archive.created_at,
                    last.created_at >= archive.created_at,
                )
                .order_by(FileVersion.path)
            )
            return list(s.scalars(query))


def forget_unheld(s: Session, repository: str) -> int:
    """Delete the versions of ``repository``'s sources that no live archive holds any more
    (after a prune): held by none of their item's live archives between their first and
    last. Returns how many."""
    first, last, live = aliased(Archive), aliased(Archive), aliased(Archive)
    held = exists().where(
        live.source_id == FileVersion.source_id,
        live.item == FileVersion.item,
        live.pruned_at.is_(None),
        live.created_at >= first.created_at,
        live.created_at <= last.created_at,
    )
    doomed = (
        select(FileVersion.id)
        .join(first, FileVersion.first_archive_id == first.id)
        .join(last, FileVersion.last_archive_id == last.id)
        .where(~held, first.repository == repository)
    )
    ids = list(s.scalars(doomed))
    for batch in _batches(ids):
        s.execute(delete(FileVersion).where(FileVersion.id.in_(batch)))
    return len(ids)


def previous_archive(s: Session, archive: Archive) -> int | None:
    """The id of the item's archive before ``archive`` (pruned or not): the one the index
    extends ``archive``'s versions from."""
    return s.scalars(
        select(Archive.id)
        .where(
            Archive.source_id == archive.source_id,
            Archive.item == archive.item,
            Archive.id != archive.id,
            Archive.created_at <= archive.created_at,
        )
        .order_by(Archive.created_at.desc(), Archive.id.desc())
        .limit(1)
    ).first()


def _index(s: Session, archive: Archive, rows: Sequence[VersionRow]) -> None:
    previous = previous_archive(s, archive)
    current: dict[str, tuple[int, tuple[Any, ...]]] = {}
    if previous is not None:
        held = select(FileVersion.id, FileVersion.path, *KEY_COLUMNS).where(
            FileVersion.source_id == archive.source_id,
            FileVersion.item == archive.item,
            FileVersion.last_archive_id == previous,
        )
        for vid, path, *key in s.execute(held):
            current[path] = (vid, tuple(key))
    kept: list[int] = []
    new: list[dict[str, Any]] = []
    for row in rows:
        was = current.get(row.path)
        if was is not None and was[1] == row.key():
            kept.append(was[0])
            continue
        new.append(
            {
                "source_id": archive.source_id,
                "item": archive.item,
                **row.__dict__,
                "first_archive_id": archive.id,
                "last_archive_id": archive.id,
            }
        )
    for batch in _batches(kept):
        s.execute(
            update(FileVersion).where(FileVersion.id.in_(batch)).values(last_archive_id=archive.id)
        )
    if new:
        s.execute(insert(FileVersion), new)


def _batches(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for i in range(0, len(ids), BATCH):
        yield ids[i : i + BATCH]


def _like(pattern: str) -> str:
    """A LIKE pattern that every match of ``pattern`` matches too (``_matches`` decides)."""
    out = []
    for c in pattern:
        if c in "*[":
            out.append("%")
        elif c == "?":
            out.append("_")
        elif c in "%_\\":
            out.append("\\" + c)
        elif c == "]":
            continue
        else:
            out.append(c)
    return "%" + "".join(out) + "%"


def _matches(pattern: str, path: str) -> bool:
    if not GLOB & set(pattern):
        return pattern in path
    subject = path if "/" in pattern else path.rsplit("/", 1)[-1]
    return fnmatch.fnmatchcase(subject, pattern)


def _live_archives(s: Session, items: set[tuple[int, str]]) -> dict[tuple[int, str], list[Archive]]:
    out: dict[tuple[int, str], list[Archive]] = {}
    for source_id, item in items:
        out[(source_id, item)] = list(
            s.scalars(
                select(Archive)
                .where(
                    Archive.source_id == source_id,
                    Archive.item == item,
                    Archive.pruned_at.is_(None),
                )
                .order_by(Archive.created_at, Archive.id)
            )
        )
    return out


def _newest_paths(
    s: Session, lives: dict[tuple[int, str], list[Archive]], found: dict[tuple[int, str], set[str]]
) -> dict[tuple[int, str], set[str]]:
    """Of the ``found`` paths of each item, those its newest live archive holds."""
    out: dict[tuple[int, str], set[str]] = {}
    for key, live in lives.items():
        paths = sorted(found.get(key, ()))
        if not live or not paths:
            continue
        held: set[str] = set()
        for i in range(0, len(paths), BATCH):
            held.update(
                s.scalars(
                    select(FileVersion.path).where(
                        FileVersion.source_id == key[0],
                        FileVersion.item == key[1],
                        FileVersion.last_archive_id == live[-1].id,
                        FileVersion.path.in_(paths[i : i + BATCH]),
                    )
                )
            )
        out[key] = held
    return out
