"""What a night changed, read from the catalogue, and the flags on nights that looked like
loss (decision 0024): the facts of an archive and of the one before it, a tree's change
from the index of file versions, and the flags prune honours until a person acknowledges
them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, Exists, func, select, update
from sqlalchemy.orm import Session, aliased

from backupd.catalogue.models import (
    AlertEvent,
    Archive,
    ChangeFlag,
    FileVersion,
    Host,
    Source,
    utcnow,
)
from backupd.catalogue.versions import BATCH, HasSession, previous_archive


@dataclass(frozen=True)
class TreeChange:
    """A tree item's files (type f) before and after one night, from the index: counts,
    bytes, and the paths whose content went (the caller judges whether that is loss).
    "Before" leaves out the files that went or changed this night but had first appeared
    on a night flagged as loss (the encrypted copies of a night a restore undoes)."""

    files_before: int
    bytes_before: int
    files_after: int
    bytes_after: int
    rewritten: int  # same path, other content
    removed: tuple[tuple[str, str | None], ...] = field(default=())  # (path, sha256) gone
    added_hashes: frozenset[str] = frozenset()  # contents the night's new versions hold


@dataclass(frozen=True)
class NightPair:
    """One archive of a night and its item's archive before it (None: the first)."""

    archive: Archive
    before: Archive | None
    host: str
    source: str


LOSS = ": looks like loss, not change: "  # in a flag's message, before what was lost
CHANGE_KEY = "change:"  # a change_loss alert's dedup key: this and its flag's id


@dataclass(frozen=True)
class FlagView:
    """A change flag as the CLI, the report and prune see it."""

    flag: ChangeFlag
    host: str
    source: str
    night: datetime  # when the archive of the night it was raised on was made
    held: Archive  # what prune keeps until the flag is acknowledged

    @property
    def what(self) -> str:
        """What was lost: "table public.leads lost 100% of its rows (2400 -> 0); ..."."""
        return self.flag.message.split(LOSS, 1)[-1].split("; prune keeps ", 1)[0]


def change_of(event: AlertEvent) -> int | None:
    """The change alert (flag) a ``change_loss`` alert event is about; None for others."""
    key = event.dedup_key or ""
    return int(key.removeprefix(CHANGE_KEY)) if key.startswith(CHANGE_KEY) else None


class ChangeRecords:
    """Mixed into Catalogue."""

    def night_pairs(self: HasSession, run_id: int) -> list[NightPair]:
        """The archives a run made, each with its item's archive before it."""
        with self.session() as s:
            query = (
                select(Archive, Host.name, Source.name)
                .join(Source, Archive.source_id == Source.id)
                .join(Host, Source.host_id == Host.id)
                .where(Archive.run_id == run_id)
                .order_by(Archive.id)
            )
            pairs = []
            for archive, host, source in s.execute(query):
                before_id = previous_archive(s, archive)
                before = s.get(Archive, before_id) if before_id is not None else None
                pairs.append(NightPair(archive, before, host, source))
            return pairs

    def tree_change(self: HasSession, before: Archive, after: Archive) -> TreeChange:
        """How the files of ``after``'s item changed since ``before`` (the archive the index
        extended ``after`` from: NightPair.before). Files that first appeared on a night
        flagged as loss (encrypted copies, say) are not lost when they go or change: the
        night after a restore is no second loss."""
        with self.session() as s:
            flagged = set(
                s.scalars(
                    select(ChangeFlag.archive_id).where(
                        ChangeFlag.source_id == after.source_id, ChangeFlag.item == after.item
                    )
                )
            )
            kept_n, kept_bytes = s.execute(
                select(func.count(), func.coalesce(func.sum(FileVersion.size), 0)).where(
                    *_files_of(after),
                    FileVersion.last_archive_id == after.id,
                    FileVersion.first_archive_id != after.id,
                )
            ).one()
            ended = _versions(s, after, FileVersion.last_archive_id == before.id)
            began = _versions(s, after, FileVersion.first_archive_id == after.id)
        now = {path: sha for path, _, sha, _ in began}
        judged = [(path, size, sha) for path, size, sha, born in ended if born not in flagged]
        return TreeChange(
            files_before=kept_n + len(judged),
            bytes_before=kept_bytes + sum(size for _, size, _ in judged),
            files_after=kept_n + len(began),
            bytes_after=kept_bytes + sum(size for _, size, _, _ in began),
            rewritten=sum(1 for path, _, sha in judged if path in now and now[path] != sha),
            removed=tuple((path, sha) for path, _, sha in judged if path not in now),
            added_hashes=frozenset(sha for sha in now.values() if sha),
        )

    def hashes_held(self: HasSession, archive: Archive, hashes: Sequence[str]) -> set[str]:
        """Which of ``hashes`` some file of ``archive`` holds (a moved file is no loss)."""
        out: set[str] = set()
        with self.session() as s:
            for i in range(0, len(hashes), BATCH):
                out.update(
                    s.scalars(
                        select(FileVersion.sha256)
                        .where(
                            *_files_of(archive),
                            FileVersion.sha256.in_(hashes[i : i + BATCH]),
                            _holds(archive),
                        )
                        .distinct()
                    )
                )
        return out

    def add_change_flag(self: HasSession, pair: NightPair, message: str, run_id: int) -> int:
        """Record a flag on ``pair``'s night and its ``change_loss`` alert in one
        transaction (no flag holds an archive without a person hearing of it)."""
        assert pair.before is not None
        with self.session() as s:
            flag = ChangeFlag(
                source_id=pair.archive.source_id,
                item=pair.archive.item,
                run_id=run_id,
                archive_id=pair.archive.id,
                held_archive_id=pair.before.id,
                message=message,
            )
            s.add(flag)
            s.flush()
            s.add(
                AlertEvent(
                    kind="change_loss",
                    message=f"{message} (backupctl alerts ack {flag.id})",
                    host=pair.host,
                    source=pair.source,
                    run_id=run_id,
                    created_at=utcnow(),
                    dedup_key=f"{CHANGE_KEY}{flag.id}",
                    attempts=0,
                )
            )
            return flag.id

    def change_flags(
        self: HasSession,
        *,
        open_only: bool = False,
        since: datetime | None = None,
        flag_id: int | None = None,
    ) -> list[FlagView]:
        """Flags, oldest first: unacknowledged ones only, those raised since ``since``, or
        the one ``flag_id``."""
        night, held = aliased(Archive), aliased(Archive)
        query = (
            select(ChangeFlag, Host.name, Source.name, night.created_at, held)
            .join(Source, ChangeFlag.source_id == Source.id)
            .join(Host, Source.host_id == Host.id)
            .join(held, ChangeFlag.held_archive_id == held.id)
            .join(night, ChangeFlag.archive_id == night.id)
            .order_by(ChangeFlag.id)
        )
        if open_only:
            query = query.where(ChangeFlag.acked_at.is_(None))
        if since is not None:
            query = query.where(ChangeFlag.created_at >= since)
        if flag_id is not None:
            query = query.where(ChangeFlag.id == flag_id)
        with self.session() as s:
            return [FlagView(*row) for row in s.execute(query)]

    def held_archives(self: HasSession, repository: str) -> dict[str, int]:
        """Archive names of ``repository`` that unacknowledged flags hold -> the flag's id."""
        query = (
            select(Archive.name, ChangeFlag.id)
            .join(ChangeFlag, ChangeFlag.held_archive_id == Archive.id)
            .where(Archive.repository == repository, ChangeFlag.acked_at.is_(None))
        )
        with self.session() as s:
            return {name: flag_id for name, flag_id in s.execute(query)}

    def ack_change_flag(self: HasSession, flag_id: int, by: str, note: str | None) -> bool:
        """Acknowledge a flag (one conditional UPDATE); False if it already was."""
        with self.session() as s:
            done = s.execute(
                update(ChangeFlag)
                .where(ChangeFlag.id == flag_id, ChangeFlag.acked_at.is_(None))
                .values(acked_at=utcnow(), acked_by=by, ack_note=note)
            )
            return bool(done.rowcount)


def _files_of(archive: Archive) -> tuple[ColumnElement[bool], ...]:
    return (
        FileVersion.source_id == archive.source_id,
        FileVersion.item == archive.item,
        FileVersion.type == "f",
    )


def _holds(archive: Archive) -> Exists:
    first, last = aliased(Archive), aliased(Archive)
    return (
        select(first.id)
        .join(last, last.id == FileVersion.last_archive_id)
        .where(
            first.id == FileVersion.first_archive_id,
            first.created_at <= archive.created_at,
            last.created_at >= archive.created_at,
        )
        .exists()
    )


def _versions(
    s: Session, archive: Archive, which: ColumnElement[bool]
) -> list[tuple[str, int, str | None, int]]:
    """(path, size, sha256, first archive's id) of ``archive``'s item's files ``which``."""
    query = select(
        FileVersion.path, FileVersion.size, FileVersion.sha256, FileVersion.first_archive_id
    ).where(*_files_of(archive), which)
    return [(path, size, sha, born) for path, size, sha, born in s.execute(query)]
