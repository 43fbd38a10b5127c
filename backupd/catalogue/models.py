"""Typed catalogue tables. Times are stored as timezone-aware UTC."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """SQLite forgets time zones: store naive UTC, hand back aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the catalogue")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    WARNING = "warning"  # archives are good, something around them was not
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # left running by a crash, found at the next start


class Base(DeclarativeBase):
    pass


TOKEN_LENGTH = 128  # a claim token: "host:pid:random" (catalogue/claims.py)


class Claimed:
    """A row one sender or worker at a time may act on (decision 0012): ``claimed_by`` is its
    token, ``claimed_at`` when it took the row (a lease runs from there)."""

    claimed_by: Mapped[str | None] = mapped_column(String(TOKEN_LENGTH))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Host(Base):
    __tablename__ = "hosts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    address: Mapped[str] = mapped_column(String(255))
    sources: Mapped[list[Source]] = relationship(back_populates="host")


class Source(Base):
    __tablename__ = "sources"
    __table_args__ = (UniqueConstraint("host_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id"))
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    host: Mapped[Host] = relationship(back_populates="sources")
    runs: Mapped[list[Run]] = relationship(back_populates="source")


class Run(Base):
    __tablename__ = "runs"
    # status asks, per source: the newest run, the newest success, the newest failure
    __table_args__ = (
        Index("ix_runs_source_started", "source_id", "started_at", "id"),
        Index("ix_runs_source_status_finished", "source_id", "status", "finished_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"), index=True)
    trigger: Mapped[str] = mapped_column(String(16))  # manual, once, schedule, catch-up
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING, index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pid: Mapped[int | None]  # the process doing the run, for crash reconciliation
    nbytes: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    stderr_tail: Mapped[str | None] = mapped_column(Text)
    source: Mapped[Source] = relationship(back_populates="runs")
    archives: Mapped[list[Archive]] = relationship(back_populates="run")


class Facts(TypedDict, total=False):
    """What an archive held when it was made, recorded with it (``archives.facts`` and the
    archive's comment) and read back by restores, drills, the report and a rebuild. Each
    kind records its own keys; none is required (an archive from an older backupd, or
    rebuilt from a repository, may lack any)."""

    # databases
    rows: dict[str, int]  # table key ("schema.table"; MariaDB: the name) -> rows in the dump
    rows_outside_snapshot: list[str]  # MariaDB: tables of an engine without snapshots
    table_bytes: dict[str, int]  # PostgreSQL: table key -> bytes on disk
    database: dict[str, str]  # PostgreSQL: encoding, lc_collate, lc_ctype, locale provider
    database_charset: str  # MariaDB
    database_collation: str  # MariaDB
    roles: dict[str, list[str]]  # PostgreSQL: what each role is needed for -> role names
    extensions: dict[str, str]  # PostgreSQL: extension -> version
    large_objects: int  # PostgreSQL
    relations: int  # PostgreSQL
    commit_block_ms: int  # MariaDB: how long the snapshot held commits
    bytes: int  # the dump's or tree's bytes as the droplet counted them
    warnings: list[str]  # something a person should look at, said by the dump
    # trees (directory, volume)
    files: int
    dirs: int
    symlinks: int
    manifest_sha256: str
    hashed_bytes: int
    transferred_bytes: int
    rsync_exit: int
    unreadable: list[str]  # paths that could not be read, left out (decision 0015)
    unreadable_count: int
    sample: list[list[str]]  # [[name (JSON form), sha256], ...] for a rebuild's check
    # every archive
    borg: dict[str, Any]  # borg create's stats


class Archive(Base):
    __tablename__ = "archives"
    __table_args__ = (
        UniqueConstraint("repository", "name"),
        # the live archives (retention prunes the rest), per source and item: status and the
        # report sum and count them from this index alone, whatever the history's length
        Index(
            "ix_archives_live",
            "source_id",
            "item",
            "created_at",
            "original_size",
            "deduplicated_size",
            sqlite_where=text("pruned_at IS NULL"),
            postgresql_where=text("pruned_at IS NULL"),
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"), index=True)
    repository: Mapped[str] = mapped_column(String(1024))
    name: Mapped[str] = mapped_column(String(255))
    item: Mapped[str] = mapped_column(String(255))
    filename: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    nbytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    original_size: Mapped[int] = mapped_column(BigInteger, default=0)
    compressed_size: Mapped[int] = mapped_column(BigInteger, default=0)
    deduplicated_size: Mapped[int] = mapped_column(BigInteger, default=0)
    facts: Mapped[Facts] = mapped_column(JSON, default=dict)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # passed a restore drill
    data_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # borg --verify-data
    pruned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # gone from the repository
    run: Mapped[Run | None] = relationship(back_populates="archives")


class FileVersion(Base):
    """One version of one file (or directory, or symlink) of a tree item: what the
    manifests of archives ``first_archive_id`` .. ``last_archive_id`` (that item's, in
    order) held under ``path``, unchanged. It existed in every live archive of the item
    made between those two (issue 16); ``backupctl find`` and ``ls`` read it, no repository.
    ``path`` and ``target`` are in names.py's display form (injective: from_display)."""

    __tablename__ = "file_versions"
    __table_args__ = (
        Index("ix_file_versions_item_last", "source_id", "item", "last_archive_id"),
        Index("ix_file_versions_item_path", "source_id", "item", "path"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"))
    item: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(1))  # f, d, l (the manifest's)
    size: Mapped[int] = mapped_column(BigInteger)
    mode: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    gid: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[int] = mapped_column(BigInteger)  # seconds since the epoch
    sha256: Mapped[str | None] = mapped_column(String(64))  # a file's
    target: Mapped[str | None] = mapped_column(Text)  # a symlink's
    first_archive_id: Mapped[int] = mapped_column(ForeignKey("archives.id"))
    last_archive_id: Mapped[int] = mapped_column(ForeignKey("archives.id"))


class ChangeFlag(Base):
    """A night that looked like loss rather than change (decision 0024): ``held_archive_id``
    (the item's newest archive before it) is kept by prune until a person acknowledges
    the flag. ``archive_id`` is the night's archive."""

    __tablename__ = "change_flags"
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"))
    item: Mapped[str] = mapped_column(String(255))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    archive_id: Mapped[int] = mapped_column(ForeignKey("archives.id"))
    held_archive_id: Mapped[int] = mapped_column(ForeignKey("archives.id"))
    message: Mapped[str] = mapped_column(Text)  # what was lost, one line
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    acked_by: Mapped[str | None] = mapped_column(String(64))
    ack_note: Mapped[str | None] = mapped_column(Text)


class AlertEvent(Claimed, Base):
    """Something a person must hear about; sent (and deduplicated) by the alerting job."""

    __tablename__ = "alert_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))  # backup_failed, ...
    host: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dedup_key: Mapped[str | None] = mapped_column(String(255), index=True)  # same key: one mail
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class AlertKey(Claimed, Base):
    """One row per alert dedup key: its claim is held by the one sender deciding, for that
    key, whether to mail or fold (the rate limit holds only if that decision is made by one
    sender at a time)."""

    __tablename__ = "alert_keys"
    dedup_key: Mapped[str] = mapped_column(String(255), primary_key=True)


class PendingCleanup(Claimed, Base):
    """A droplet-side cleanup (drop a snapshot, unpause) owed until it has run; claimed by
    the run that owes it while that run lives."""

    __tablename__ = "pending_cleanups"
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    host: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    argv: Mapped[list[str]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class MaintenanceRun(Base):
    """One run of a maintenance job (prune, compact, check, catalogue copy)."""

    __tablename__ = "maintenance_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    job: Mapped[str] = mapped_column(String(32), index=True)
    host: Mapped[str | None] = mapped_column(String(64))  # None: the whole store
    trigger: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING, index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pid: Mapped[int | None]
    summary: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    stderr_tail: Mapped[str | None] = mapped_column(Text)


class QueuedJob(Base):
    """The daemon's queue, mirrored for `backupctl status`: rows live while a job waits or runs."""

    __tablename__ = "queued_jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    job: Mapped[str] = mapped_column(String(32))  # backup, prune, compact, check, catalogue
    host: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(16))  # schedule, catch-up, retry
    state: Mapped[str] = mapped_column(String(16))  # queued, running
    attempt: Mapped[int] = mapped_column(default=1)
    enqueued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pid: Mapped[int | None]


class Restore(Base):
    """One `backupctl restore`: written before anything is touched, completed after."""

    __tablename__ = "restores"
    id: Mapped[int] = mapped_column(primary_key=True)
    host: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64))
    archives: Mapped[list[str]] = mapped_column(JSON)
    target_kind: Mapped[str] = mapped_column(String(16))  # dir, database, host-path, host-db
    target: Mapped[str] = mapped_column(Text)  # human-readable: where the data went
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING, index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pid: Mapped[int | None]
    operator: Mapped[str | None] = mapped_column(String(64))
    nbytes: Mapped[int] = mapped_column(BigInteger, default=0)
    seconds: Mapped[float | None] = mapped_column(Float)
    checks: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text)


@dataclass(frozen=True)
class Check:
    """One thing a restore or a drill verified, as recorded (``restores.checks``,
    ``drills.checks``) and shown ("ok  rows: 3 table(s), 17301 rows as recorded").
    ``warn``: it could not be made, or found something to look at; the restore stands and
    a drill's verdict is warn."""

    check: str  # what was checked: "sha256", "rows", "table path"
    detail: str
    ok: bool = True
    warn: bool = False

    def as_json(self) -> dict[str, Any]:
        """The JSON contract's ``check`` object (docs/backupctl.md)."""
        return {"check": self.check, "ok": self.ok, "detail": self.detail, "warn": self.warn}


class DrillStatus(enum.StrEnum):
    RUNNING = "running"
    PASS = "pass"  # noqa: S105  (a verdict, not a password)
    WARN = "warn"
    FAIL = "fail"
    INTERRUPTED = "interrupted"


class Drill(Base):
    """A restore drill: an archive restored into a scratch target and checked."""

    __tablename__ = "drills"
    __table_args__ = (Index("ix_drills_source_newest", "host", "source", "id", "status"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    host: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(64))
    repository: Mapped[str] = mapped_column(String(1024))
    archive: Mapped[str] = mapped_column(String(255))
    trigger: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=DrillStatus.RUNNING, index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pid: Mapped[int | None]
    scratch: Mapped[str | None] = mapped_column(Text)  # removed at the next start if left
    rto_seconds: Mapped[float | None] = mapped_column(Float)
    nbytes: Mapped[int] = mapped_column(BigInteger, default=0)
    checks: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    detail: Mapped[str | None] = mapped_column(Text)


class Report(Claimed, Base):
    """A weekly report; the message is kept until it has been delivered."""

    __tablename__ = "reports"
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    verdict: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(255))
    recipients: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True)  # queued, sent
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    message: Mapped[str] = mapped_column(Text)  # the whole MIME message


class KeyExport(Base):
    """A repository key exported by `backupctl key export` (status warns until there is one)."""

    __tablename__ = "key_exports"
    id: Mapped[int] = mapped_column(primary_key=True)
    host: Mapped[str] = mapped_column(String(64), index=True)
    repository: Mapped[str] = mapped_column(String(1024))
    exported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    directory: Mapped[str] = mapped_column(Text)
    files: Mapped[list[str]] = mapped_column(JSON)
    key_sha256: Mapped[str] = mapped_column(String(64))  # of the exported key file
