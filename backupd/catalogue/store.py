"""Catalogue access: the few questions and updates the actions need.

Rows are written before a side effect (a run starts ``running``) and completed after,
so a crash leaves evidence the next start can reconcile.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, delete, event, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from backupd.catalogue.alerts import AlertRecords
from backupd.catalogue.changes import ChangeRecords
from backupd.catalogue.channels import ChannelRecords
from backupd.catalogue.claims import RELEASED, changed, claim_token, held_by
from backupd.catalogue.fleet import FleetQueries
from backupd.catalogue.gauges import GaugeQueries
from backupd.catalogue.history import HistoryQueries
from backupd.catalogue.jobs import GOOD, JobRecords
from backupd.catalogue.keys import KeyRecords
from backupd.catalogue.migrate import upgrade_to_head
from backupd.catalogue.models import (
    AlertEvent,
    Archive,
    Host,
    PendingCleanup,
    Run,
    RunStatus,
    Source,
    utcnow,
)
from backupd.catalogue.reports import ReportRecords
from backupd.catalogue.restores import RestoreRecords
from backupd.catalogue.versions import VersionRecords

WAL_SWITCH_WAIT_S = 30.0


def _private_sqlite_file(url: str) -> None:
    """Create the SQLite file (and its directory) private before SQLAlchemy touches it."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return
    if parsed.database == ":memory:":
        return
    path = Path(parsed.database)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Never open and close an existing catalogue here: closing any descriptor of a file
        # drops every POSIX lock this process holds on it, SQLite's too. A second Catalogue
        # in a process would then leave the first one unlocked, and another process ending
        # its last connection would delete the WAL the first one still writes to (its
        # commits unseen by others: claims would not exclude anyone).
        return
    os.close(fd)


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        # the timeout first: switching a new file to WAL waits on another starter's lock
        cur.execute("PRAGMA busy_timeout=30000")
        _switch_to_wal(cur)
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()


def _switch_to_wal(cur: Any) -> None:
    """PRAGMA journal_mode=WAL on a file another starter is migrating fails at once with
    "database is locked" (SQLite skips the busy handler where waiting could deadlock):
    wait for the migration to commit, then switch."""
    deadline = time.monotonic() + WAL_SWITCH_WAIT_S
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Catalogue(
    ChangeRecords,
    GaugeQueries,
    VersionRecords,
    JobRecords,
    HistoryQueries,
    FleetQueries,
    RestoreRecords,
    KeyRecords,
    ReportRecords,
    AlertRecords,
    ChannelRecords,
):
    def __init__(self, url: str) -> None:
        _private_sqlite_file(url)
        self.engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            _sqlite_pragmas(self.engine)
        old_umask = os.umask(0o077)  # WAL and SHM files are created private too
        try:
            upgrade_to_head(self.engine)  # or refuse: a newer schema, not a catalogue
            with self.engine.connect():
                pass  # a SQLite file turns to WAL now, its WAL and SHM created under the umask
        except BaseException:
            self.engine.dispose()
            raise
        finally:
            os.umask(old_umask)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as s:
            yield s

    # -- hosts and sources --------------------------------------------------------
    def ensure_source(self, host: str, address: str, source: str, kind: str) -> int:
        with self.session() as s:
            h = s.scalar(select(Host).where(Host.name == host))
            if h is None:
                h = Host(name=host, address=address)
                s.add(h)
                s.flush()
            h.address = address
            src = s.scalar(select(Source).where(Source.host_id == h.id, Source.name == source))
            if src is None:
                src = Source(host_id=h.id, name=source, kind=kind)
                s.add(src)
                s.flush()
            src.kind = kind
            return src.id

    # -- runs -----------------------------------------------------------------------
    def start_run(self, source_id: int, trigger: str) -> int:
        with self.session() as s:
            run = Run(
                source_id=source_id,
                trigger=trigger,
                status=RunStatus.RUNNING,
                started_at=utcnow(),
                pid=os.getpid(),
            )
            s.add(run)
            s.flush()
            return run.id

    def finish_run(
        self,
        run_id: int,
        status: RunStatus,
        *,
        nbytes: int = 0,
        error: str | None = None,
        stderr_tail: str | None = None,
    ) -> None:
        with self.session() as s:
            run = s.get_one(Run, run_id)
            run.status = status
            run.finished_at = utcnow()
            run.nbytes = nbytes
            run.error = error
            run.stderr_tail = stderr_tail or None

    def running_runs(self) -> list[Run]:
        with self.session() as s:
            runs = list(s.scalars(select(Run).where(Run.status == RunStatus.RUNNING)))
            for run in runs:
                _ = run.source.host.name  # load what callers read after the session
            return runs

    def run(self, run_id: int) -> Run:
        with self.session() as s:
            return s.get_one(Run, run_id)

    def find_run(self, run_id: int) -> Run | None:
        with self.session() as s:
            return s.get(Run, run_id)

    # -- archives -------------------------------------------------------------------
    def add_archive(self, **fields: Any) -> int:
        with self.session() as s:
            archive = Archive(**fields)
            s.add(archive)
            s.flush()
            return archive.id

    def archives(self, host: str, source: str) -> list[Archive]:
        """Every recorded archive of a source, newest first."""
        with self.session() as s:
            query = (
                select(Archive)
                .join(Source, Archive.source_id == Source.id)
                .join(Host, Source.host_id == Host.id)
                .where(Host.name == host, Source.name == source)
                .order_by(Archive.created_at.desc(), Archive.id.desc())
            )
            return list(s.scalars(query))

    def newest_good_set(self, host: str, source: str, at: datetime | None = None) -> list[Archive]:
        """The archives of the newest run that succeeded (at or before ``at``): one
        restore point."""
        query = (
            select(Run.id)
            .join(Source, Run.source_id == Source.id)
            .join(Host, Source.host_id == Host.id)
            .join(Archive, Archive.run_id == Run.id)
            .where(Host.name == host, Source.name == source, Run.status.in_(GOOD))
            .where(Archive.pruned_at.is_(None))
            .order_by(Run.started_at.desc(), Run.id.desc())
            .limit(1)
        )
        if at is not None:
            query = query.where(Run.started_at <= at)
        with self.session() as s:
            run_id = s.scalar(query)
            if run_id is None:
                return []
            return list(
                s.scalars(select(Archive).where(Archive.run_id == run_id).order_by(Archive.item))
            )

    # -- alerts and cleanups -------------------------------------------------------
    def record_alert(
        self,
        kind: str,
        message: str,
        *,
        host: str | None = None,
        source: str | None = None,
        run_id: int | None = None,
        dedup_key: str | None = None,
    ) -> int:
        """``dedup_key``: alerts with the same key are one alert to a person (mailed once
        per [mail] alert_interval); default: kind, host and source."""
        with self.session() as s:
            event = AlertEvent(
                kind=kind,
                message=message,
                host=host,
                source=source,
                run_id=run_id,
                created_at=utcnow(),
                dedup_key=dedup_key or f"{kind}:{host or ''}/{source or ''}",
                attempts=0,
            )
            s.add(event)
            s.flush()
            return event.id

    def alerts(self) -> list[AlertEvent]:
        with self.session() as s:
            return list(s.scalars(select(AlertEvent).order_by(AlertEvent.id)))

    def add_cleanup(self, host: str, source: str, run_id: int | None, argv: list[str]) -> int:
        """Record a cleanup this process owes, claimed by it: nobody else runs it while this
        process lives (reconcile takes over claims of dead processes)."""
        with self.session() as s:
            row = PendingCleanup(
                host=host,
                source=source,
                run_id=run_id,
                argv=argv,
                created_at=utcnow(),
                claimed_by=claim_token(),
                claimed_at=utcnow(),
            )
            s.add(row)
            s.flush()
            return row.id

    def claim_cleanup(self, cleanup_id: int, seen: str | None, token: str) -> bool:
        """Take an owed cleanup whose claim was ``seen`` (None, or a dead holder's token)
        with one conditional UPDATE; False if someone else changed it first."""
        claim = (
            update(PendingCleanup)
            .where(PendingCleanup.id == cleanup_id, held_by(PendingCleanup, seen))
            .values(claimed_by=token, claimed_at=utcnow())
        )
        with self.session() as s:
            return changed(s, claim) == 1

    def cleanup_done(self, cleanup_id: int) -> None:
        with self.session() as s:
            s.execute(delete(PendingCleanup).where(PendingCleanup.id == cleanup_id))

    def cleanup_failed(self, cleanup_id: int, error: str) -> None:
        """Still owed: count the attempt and release the claim for the next start."""
        with self.session() as s:
            s.execute(
                update(PendingCleanup)
                .where(PendingCleanup.id == cleanup_id)
                .values(attempts=PendingCleanup.attempts + 1, last_error=error, **RELEASED)
            )

    def pending_cleanups(self) -> list[PendingCleanup]:
        with self.session() as s:
            return list(s.scalars(select(PendingCleanup).order_by(PendingCleanup.id)))
