"""offsite: copy a host's repository to each ``[offsite]`` remote (issue 18, decision 0028).

For each remote: ``borg with-lock REPO rclone sync REPO REMOTE:path/HOST`` (nothing
writes the repository while it is copied, so the copy is one consistent state of it),
with ``--backup-dir REMOTE:path/.trash/RUN/HOST``: what the sync would delete or replace
on the remote (segments compacted away, the index of the day before, or everything, if
the local repository was emptied) is moved there instead, and removed only once older
than ``trash_days``. Then a sample of the copy (the repository's config and segment
files: Borg never changes a committed segment) is read back and compared with the local
files, and only then is the copy's manifest written (``REMOTE:path/.manifests/HOST.json``):
a copy that was cut half way, or does not match, has no new manifest and is never
reported good. The next run resumes it (rclone sends only what differs).

A repository missing locally, or one that is no Borg repository, is never synced: that
would move the whole copy to the trash. If the catalogue knows archives in it, the run
fails with the reason (the copy is kept as it is); a host not backed up yet has nothing
to copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from datetime import datetime, timedelta
from pathlib import Path

from backupd import __version__
from backupd.catalogue.models import utcnow
from backupd.config.load import OffsiteConfig, RemoteConfig
from backupd.errors import BorgError, OffsiteError, RepositoryLockedError
from backupd.remote.rclone import Remote, open_remote
from jobs.base import MaintenanceEnv, MaintenanceResult

log = logging.getLogger(__name__)

TRASH = ".trash"
MANIFESTS = ".manifests"
STAMP = "%Y-%m-%dT%H%M%SZ"  # a trash directory per run: nothing trashed twice in a day is lost
LOCK_WAIT = 600  # seconds borg with-lock waits for a backup or prune holding the lock
# Borg's own lock files exist while with-lock holds the repository: never copied (a copy
# restored with them would look locked)
EXCLUDED = ("lock.exclusive/**", "lock.roster")


class OffsiteJob:
    name = "offsite"
    per_repository = True
    requires = "offsite"  # scheduled only with an [offsite] table
    runs_without_repository = True  # a repository gone locally is an error, not "no work"

    def run(self, env: MaintenanceEnv) -> MaintenanceResult:
        cfg = env.config.offsite
        assert env.host is not None and env.repository is not None
        if cfg is None:
            raise OffsiteError("no [offsite] table in the configuration: nowhere to copy to")
        if not (env.repository / "config").is_file():
            if not env.catalogue.live_archives(str(env.repository)):
                return MaintenanceResult(f"no repository yet at {env.repository}: nothing to copy")
            raise OffsiteError(
                f"no Borg repository at {env.repository}: nothing copied "
                "(the off-site copies are kept as they are)"
            )
        said = [copy_to(env, name, remote, cfg) for name, remote in cfg.remotes.items()]
        return MaintenanceResult("; ".join(said))


def copy_to(env: MaintenanceEnv, name: str, rc: RemoteConfig, cfg: OffsiteConfig) -> str:
    """Copy, read back, then write the manifest, on remote ``name``; one line of what."""
    assert env.host is not None and env.repository is not None
    host, repo = env.host, env.repository
    started = utcnow()
    work = env.config.state_dir / "offsite"
    with open_remote(name, rc, work) as remote:
        before = segments(repo)  # committed: what the copy holds (see verify)
        stats = _sync(env, remote, cfg, started)
        checked = verify(remote, repo, host, before, cfg.verify_files)
        files, size = _tree(repo)
        manifest = {
            "host": host,
            "copied_at": started.isoformat(timespec="seconds"),
            "finished_at": utcnow().isoformat(timespec="seconds"),
            "files": files,
            "bytes": size,
            "sent_bytes": stats.get("bytes", 0),
            "verified": checked,
            "backupd": __version__,
        }
        remote.put(json.dumps(manifest, indent=1).encode(), MANIFESTS, f"{host}.json")
        expired = expire_trash(remote, cfg.trash_days, started)
    sent = stats.get("bytes", 0)
    trashed = stats.get("serverSideMoves", 0) + stats.get("serverSideCopies", 0)
    line = (
        f"{name}: {files} files ({size} bytes) copied, {sent} bytes sent, "
        f"{trashed} replaced or deleted kept in the trash, {len(checked)} read back and matched"
    )
    return line + (
        f", {expired} trash run(s) over {cfg.trash_days} days removed" if expired else ""
    )


def _sync(
    env: MaintenanceEnv, remote: Remote, cfg: OffsiteConfig, started: datetime
) -> dict[str, int]:
    """``borg with-lock`` around ``rclone sync``; rclone's closing statistics."""
    assert env.host is not None and env.repository is not None
    args = [
        "sync",
        str(env.repository),
        remote.url(env.host),
        "--backup-dir",
        remote.url(TRASH, started.strftime(STAMP), env.host),
        "--use-json-log",
        "--stats-log-level",
        "NOTICE",
        "--stats",
        "24h",  # one closing line of statistics, not one a minute
        "--retries",
        str(cfg.retries),
        "--low-level-retries",
        str(2 * cfg.retries - 1),  # each request's own tries (rclone's default: 10)
    ]
    for pattern in EXCLUDED:
        args += ["--exclude", pattern]
    if cfg.bandwidth:
        args += ["--bwlimit", cfg.bandwidth]
    argv = ("with-lock", "--lock-wait", str(LOCK_WAIT), str(env.repository), *remote.argv(*args))
    try:
        done = env.borg.run(
            argv,
            repo=env.repository,
            wait=LOCK_WAIT,  # a backup of ours holding it: waited for, then "locked by ..."
            timeout=cfg.timeout,
            what=f"offsite copy to {remote.name}",
        )
    except RepositoryLockedError:
        raise  # who holds it, since when: borg's own line says it better
    except BorgError as e:  # rclone's error lines (JSON log), else borg's
        said = re.findall(r'"level":"(?:error|critical)","msg":"((?:[^"\\]|\\.)*)"', e.message)
        why = " | ".join(dict.fromkeys(m.strip() for m in said[-3:])) or e.message
        raise OffsiteError(
            remote.scrub(f"remote {remote.name}: the copy of {env.host} failed: {why}")
        ) from None
    return _stats(done.stdout + done.stderr)


def _stats(output: bytes) -> dict[str, int]:
    for line in reversed(output.decode(errors="replace").splitlines()):
        if '"stats"' in line:
            try:
                found = json.loads(line)["stats"]
            except (ValueError, KeyError, TypeError):
                continue
            return {k: int(v) for k, v in found.items() if isinstance(v, int | float)}
    return {}


def segments(repo: Path) -> list[Path]:
    """The repository's segment files, oldest first."""
    found = (p for p in (repo / "data").rglob("*") if p.is_file() and p.name.isdigit())
    return sorted(found, key=lambda p: (int(p.parent.name), int(p.name)))


def verify(remote: Remote, repo: Path, host: str, before: list[Path], count: int) -> list[str]:
    """Read back the repository's config and ``count`` of the segment files that were
    there before the copy and still are (the newest half, the rest at random), and
    compare them with the local ones; the names compared. OffsiteError naming the first
    that differs.

    Only those: ``borg with-lock`` commits once its command is done (a new segment, a new
    index), so the copy is the repository as it was just before; Borg never changes a
    committed segment nor reuses its number, so one there before and after is the same
    file the copy holds."""
    kept = [p for p in before if p.is_file()]
    newest = kept[-(count // 2 or 1) :] if count and kept else []
    rest = [p for p in kept if p not in newest]
    chosen = newest + random.sample(rest, min(len(rest), max(count - len(newest), 0)))
    checked = []
    for path in [repo / "config", *chosen]:
        rel = path.relative_to(repo).as_posix()
        local = hashlib.sha256(path.read_bytes()).hexdigest()
        copied = hashlib.sha256(remote.cat(host, *rel.split("/"))).hexdigest()
        if copied != local:
            raise OffsiteError(
                f"remote {remote.name}: {host}/{rel} read back differs from the local file "
                f"(sha256 {copied[:12]} != {local[:12]}): the copy is not reported good"
            )
        checked.append(rel)
    return checked


def expire_trash(remote: Remote, days: int, now: datetime) -> int:
    """Remove the trash of runs older than ``days``; how many were removed."""
    removed = 0
    for run in remote.dirs(TRASH):
        try:
            when = datetime.strptime(run, STAMP).replace(tzinfo=now.tzinfo)
        except ValueError:
            continue  # not ours: left alone
        if now - when > timedelta(days=days):
            remote.purge(TRASH, run)
            removed += 1
    return removed


def _tree(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith("lock.")]
    return len(files), sum(p.stat().st_size for p in files)


JOB = OffsiteJob()
