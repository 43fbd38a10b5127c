"""sweep: after a crash or a failed run, every archive in a repository is in the catalogue
with its facts, or removed; and nothing a dead run wrote into ``<state_dir>/run`` stays.

A backup run leaves a marker ``<state_dir>/sweep/<host>/<run id>`` before it writes to the
host's repository, and removes it only when it ends well. A marker whose run is no longer
running means the repository may hold what that run left behind: an archive borg
committed after the run's last catalogue write, an ``X.recreate`` an older backupd left when
sealing failed on a full store, a checkpoint. Sweeping lists the repository once
(names and comments) and settles each archive the catalogue does not know:

- of a run that is still running: left alone (it is being written now);
- a checkpoint or a ``.recreate`` leftover: deleted;
- sealed (the seal inside it, or its comment, has the sha256 and facts: decision 0019) and
  its run is recorded: adopted into the catalogue under that run (an interrupted run is
  never a restore point by itself);
- unsealed, or its run unknown: deleted (nobody ever checked it);
- not backupd's: left alone and reported, once per alert interval (a person decides).

Without markers nothing is listed: the normal start costs no borg call.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backupd.actions.context import Context
from backupd.actions.rebuild import record_from_comment, unseal
from backupd.borg.adapter import ArchiveEntry
from backupd.catalogue import RunStatus
from backupd.errors import BackupdError, StoppedError
from backupd.local.procfs import process_alive

log = logging.getLogger(__name__)
LEFTOVER = re.compile(r"\.(checkpoint(\.\d+)?|recreate)$")
# a gated create's spool directory (and an older relay's spec and result), an rsh spec
RUN_FILE = re.compile(r"^(?:run(\d+)-\d+(?:\.json|\.result)?|rsh-(\d+)-.*\.json)$")


def _markers(ctx: Context) -> Path:
    return ctx.private_dir(ctx.config.state_dir / "sweep")


def mark_dirty(ctx: Context, host: str, run_id: int) -> None:
    """Before a run writes to ``host``'s repository: sweep it unless the run ends well."""
    ctx.private_dir(_markers(ctx) / host)
    (_markers(ctx) / host / str(run_id)).touch(mode=0o600)


def mark_clean(ctx: Context, host: str, run_id: int) -> None:
    (_markers(ctx) / host / str(run_id)).unlink(missing_ok=True)


def _running(ctx: Context, run_id: int) -> bool:
    """Whether a run is still being written by a live process."""
    run = ctx.catalogue.find_run(run_id)
    return run is not None and run.status == RunStatus.RUNNING and process_alive(run.pid)


@dataclass
class Swept:
    host: str
    deleted: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    problem: str | None = None  # the sweep could not finish: markers kept, tried again


def sweep_owed(ctx: Context, host: str | None = None) -> list[Swept]:
    """Sweep every repository (or ``host``'s) that a finished run left a marker for."""
    done = []
    hosts = [host] if host is not None else sorted(p.name for p in _markers(ctx).iterdir())
    for name in hosts:
        folder = _markers(ctx) / name
        runs = [int(p.name) for p in folder.glob("*") if p.name.isdigit()]
        owed = [r for r in runs if not _running(ctx, r)]
        if not owed or name not in ctx.config.hosts:
            continue
        swept = sweep_repository(ctx, name)
        if swept.problem is None:
            for r in owed:
                mark_clean(ctx, name, r)
        done.append(swept)
    return done


def sweep_repository(ctx: Context, host: str) -> Swept:
    swept = Swept(host)
    repo = ctx.repository(host)
    if not ctx.borg.is_repository(repo):
        return swept
    try:
        known = {a.name for a in ctx.catalogue.live_archives(str(repo))}
        for entry in ctx.borg.list_archives(repo, checkpoints=True):
            if entry.name not in known:
                _settle(ctx, repo, entry, swept)
    except StoppedError:
        raise  # a shutdown is no sweep failure: the marker stays, the next start sweeps
    except BackupdError as e:
        swept.problem = f"{repo}: sweeping what a failed run left failed: {e}"
        log.error("%s (kept for the next start)", swept.problem)
    _report(ctx, repo, swept)
    return swept


def _settle(ctx: Context, repo: Path, entry: ArchiveEntry, swept: Swept) -> None:
    meta = _metadata(entry.comment)
    run_id = meta.get("run") if meta else None
    if isinstance(run_id, int) and _running(ctx, run_id):
        return
    leftover = LEFTOVER.search(entry.name) is not None  # whatever its comment says
    if meta is None and not leftover:
        swept.foreign.append(entry.name)
        return
    run = ctx.catalogue.find_run(run_id) if isinstance(run_id, int) else None
    if meta is not None and run is not None and not leftover:
        meta = unseal(ctx, repo, entry, meta)
    if meta is not None and "sha256" in meta and run is not None and not leftover:
        record_from_comment(ctx, repo, entry, meta, run.id, run.source_id)
        swept.adopted.append(entry.name)
        log.warning(
            "%s: adopted archive %s of interrupted run %d into the catalogue",
            repo,
            entry.name,
            run.id,
        )
        return
    ctx.borg.delete(repo, entry.name)
    swept.deleted.append(entry.name)
    log.warning(
        "%s: deleted %s: left by a run that did not finish (never checked)", repo, entry.name
    )


def _metadata(comment: str) -> dict[str, Any] | None:
    """backupd's own archive comment (decision 0003), or None for anything else."""
    try:
        meta = json.loads(comment)
    except ValueError:
        return None
    if not isinstance(meta, dict) or "backupd" not in meta or "item" not in meta:
        return None
    return meta


def _report(ctx: Context, repo: Path, swept: Swept) -> None:
    if not swept.foreign:
        return
    shown = ", ".join(swept.foreign[:5]) + (" ..." if len(swept.foreign) > 5 else "")
    message = (
        f"{repo}: {len(swept.foreign)} archive(s) not made by backupd, left alone: "
        f"{shown} (delete them with borg delete, or keep them knowingly)"
    )
    log.warning("%s", message)
    ctx.catalogue.record_alert(
        "foreign_archives", message, host=swept.host, dedup_key=f"foreign:{repo}"
    )


def remove_stale_run_files(ctx: Context) -> list[str]:
    """Gate spools and rsh specs of runs that are no longer running: a crash skipped the
    ``finally`` that removes them (they hold no secret, but they pile up)."""
    removed = []
    for path in ctx.run_dir().iterdir():
        match = RUN_FILE.match(path.name)
        if match is None:
            continue
        run_id = int(match.group(1) or match.group(2))
        if not _running(ctx, run_id):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed
