"""catalogue: a copy of the catalogue itself, into the store's own repository ``_catalogue``.

The archives' comments can rebuild most of the catalogue, but not its history (runs,
drills, alerts). The copy is taken online with SQLite's backup API (consistent while the
daemon writes; never a raw copy of a live file) into a private temp directory, checked
with ``PRAGMA quick_check``, archived as ``catalogue.<UTC time>``, and removed whatever
happens. Host names cannot start with "_", so ``<store>/_catalogue`` is nobody's host.
The copies are thinned out by the top-level ``[retention]`` rules.

A catalogue in another database (PostgreSQL...) is left to that database's own tools.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import tempfile
from contextlib import closing
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from backupd import __version__
from backupd.catalogue.models import utcnow
from backupd.errors import BackupdError
from jobs.base import MaintenanceEnv, MaintenanceResult
from jobs.prune import retain

log = logging.getLogger(__name__)

REPOSITORY = "_catalogue"
FILENAME = "catalogue.db"
CREATE_TIMEOUT = 3600.0
BUSY_TIMEOUT = 60.0  # seconds the copy waits for a writer holding the database
COUNTED = ("runs", "archives", "maintenance_runs", "alert_events")  # told in the summary


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite catalogue URL; None for any other database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def copy_sqlite(source: Path, dest: Path) -> dict[str, int]:
    """Online copy of ``source`` into ``dest``; row counts of the copy's main tables."""
    if not source.is_file():
        raise BackupdError(f"catalogue {source} does not exist")
    try:
        with (
            closing(sqlite3.connect(source, timeout=BUSY_TIMEOUT)) as src,
            closing(sqlite3.connect(dest)) as dst,
        ):
            src.backup(dst)
            verdict = dst.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                raise BackupdError(f"the copy of {source} fails quick_check: {verdict}")
            return row_counts(dst)
    except sqlite3.Error as e:
        raise BackupdError(f"cannot copy catalogue {source}: {e}") from e


def row_counts(db: sqlite3.Connection) -> dict[str, int]:
    present = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    # table names come from COUNTED, never from the data
    query = "SELECT count(*) FROM {}"
    return {t: int(db.execute(query.format(t)).fetchone()[0]) for t in COUNTED if t in present}


def archive_stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


class CatalogueCopyJob:
    name = "catalogue"
    per_repository = False

    def run(self, env: MaintenanceEnv) -> MaintenanceResult:
        source = sqlite_path(env.config.catalogue_url)
        if source is None:
            backend = make_url(env.config.catalogue_url).get_backend_name()
            warning = (
                f"the catalogue is in {backend}: back it up with its own tools "
                "(e.g. pg_dump); backupd copies only SQLite catalogues"
            )
            return MaintenanceResult("not copied: the catalogue is not SQLite", (warning,))
        repo = env.config.store.path / REPOSITORY
        if env.borg.ensure_repository(repo, env.config.store.encryption):
            log.info("initialised Borg repository %s", repo)
        name, counts, size = self._archive(env, source, repo)
        kept, pruned = self._thin_out(env, repo)
        return MaintenanceResult(
            f"{REPOSITORY}::{name}: {size} bytes, {counts.get('runs', 0)} runs, "
            f"{counts.get('archives', 0)} archives; copies kept {kept}, pruned {pruned}"
        )

    @staticmethod
    def _archive(env: MaintenanceEnv, source: Path, repo: Path) -> tuple[str, dict[str, int], int]:
        env.config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdtemp makes it 0700: the copy holds every run's errors and every host's name
        workdir = Path(tempfile.mkdtemp(prefix="catalogue-copy-", dir=env.config.state_dir))
        try:
            copy = workdir / FILENAME
            counts = copy_sqlite(source, copy)
            size = copy.stat().st_size
            started = utcnow()
            name = f"catalogue.{archive_stamp(started)}"
            meta = {
                "backupd": __version__,
                "kind": "catalogue",
                "filename": FILENAME,
                "started": started.isoformat(),
                "nbytes": size,
                "tables": counts,
            }
            env.borg.create_from_paths(
                repo,
                name,
                cwd=workdir,
                paths=(FILENAME,),
                comment=json.dumps(meta, sort_keys=True),
                compression=env.config.store.compression,
                timeout=CREATE_TIMEOUT,
                files_cache_suffix=REPOSITORY,
            )
            return name, counts, size
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    @staticmethod
    def _thin_out(env: MaintenanceEnv, repo: Path) -> tuple[int, int]:
        """Nothing else prunes this repository: the top-level [retention] rules apply."""
        copies = [
            (a.name, a.time)
            for a in env.borg.archive_times(repo)
            if a.name.startswith("catalogue.")
        ]
        verdicts = retain(copies, env.config.retention)
        doomed = [v.name for v in verdicts if not v.keep]
        env.borg.delete_archives(repo, doomed)
        if doomed:
            env.borg.compact(repo)
        return len(verdicts) - len(doomed), len(doomed)


JOB = CatalogueCopyJob()
