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

import configparser
import hashlib
import json
import logging
import random
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from backupd import __version__
from backupd.catalogue.models import utcnow
from backupd.config.load import RemoteConfig
from backupd.config.units import human_bytes
from backupd.errors import BorgError, OffsiteError, RepositoryLockedError, WindowClosed
from backupd.remote.rclone import Remote, hinted, open_remote, tidy
from jobs.base import MaintenanceEnv, MaintenanceResult

log = logging.getLogger(__name__)

TRASH = ".trash"
MANIFESTS = ".manifests"
STAMP = "%Y-%m-%dT%H%M%SZ"  # a trash directory per run: nothing trashed twice in a day is lost
VERIFY_BYTES = 512 * 1024 * 1024  # read back per repository and run, at most (one segment more)
LOCK_WAIT = 600  # seconds borg with-lock waits for a backup or prune holding the lock


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
                held_elsewhere(env, env.host, env.repository)  # a new host, not restored?
                return MaintenanceResult(f"no repository yet at {env.repository}: nothing to copy")
            raise OffsiteError(
                f"no Borg repository at {env.repository}: nothing copied "
                "(the off-site copies are kept as they are)"
            )
        if env.trigger != "backupctl" and cfg.time_left(utcnow()) == 0:
            raise outside_window(cfg.window)
        said, warnings = to_every_remote(env, env.host, env.repository)
        return MaintenanceResult(said, tuple(warnings))


def held_elsewhere(env: MaintenanceEnv, host: str, repo: Path) -> None:
    """OffsiteError if a remote holds a copy of ``host`` that is missing here and the
    catalogue knows nothing of (a new backup host before ``restore-from``): not "nothing
    to copy", which would count as a good copy."""
    cfg = env.config.offsite
    assert cfg is not None
    for name, rc in cfg.remotes.items():
        with open_remote(name, rc, env.config.state_dir / "offsite", retries=cfg.retries) as r:
            found = r.cat_if_there(MANIFESTS, f"{host}.json")
        if found:
            raise OffsiteError(
                f"no Borg repository at {repo}, but remote {name} holds a copy of {host}: "
                f"nothing copied. Bring it back first: backupctl offsite restore-from {host}"
            )


def outside_window(window: str) -> WindowClosed:
    """A scheduled copy that would start outside ``[offsite] window`` (a schedule outside
    it, a start the daemon made late): nothing copied, the run interrupted (no alert; an
    old copy alerts by its age), never counted as a copy."""
    return WindowClosed(
        f"outside [offsite] window {window} UTC: not copied (backupctl offsite run copies now)"
    )


def to_every_remote(env: MaintenanceEnv, host: str, repo: Path) -> tuple[str, list[str]]:
    """Copy ``repo`` (as ``host``: its place on the remote) to every remote; one line of
    what each said, and the warnings. OffsiteError naming every remote that failed (and
    what the others did): one remote down holds back no other."""
    cfg = env.config.offsite
    assert cfg is not None
    said, failed, warnings = [], [], []
    for name, remote in cfg.remotes.items():
        try:
            line, warned = copy_to(env, name, remote, (host, repo))
        except OffsiteError as e:
            failed.append(e)
            continue
        said.append(line)
        warnings += warned
    if failed:
        done = f" ({'; '.join(said)})" if said else ""
        raise OffsiteError("; ".join(str(e) for e in failed) + done)
    return "; ".join(said), warnings


def copy_to(
    env: MaintenanceEnv, name: str, rc: RemoteConfig, what: tuple[str, Path]
) -> tuple[str, list[str]]:
    """Copy, read back, then write the manifest of repository ``what`` (its name on the
    remote, its path here) on remote ``name``; one line of what was done, and warnings."""
    host, repo = what
    cfg = env.config.offsite
    assert cfg is not None
    started = utcnow()
    work = env.config.state_dir / "offsite"
    with open_remote(name, rc, work, retries=cfg.retries) as remote:
        repo_id, copied = _same_repository(remote, repo, host)
        before = segments(repo)  # committed: what the copy holds (see verify)
        files, size = _tree(repo)
        if "shrink" not in env.accepted:
            not_shrunk(remote.name, host, size, copied, cfg.max_shrink)
        state = transaction(repo)  # the state the copy will hold (with-lock commits after)
        stats = _sync(env, remote, what, started)
        warnings = rewritten(remote, repo, host, started, (copied or {}).get("transaction"))
        checked = verify(remote, repo, host, before, cfg.verify_files)
        manifest = {
            "host": host,
            "repository_id": repo_id,
            "copied_at": started.isoformat(timespec="seconds"),
            "finished_at": utcnow().isoformat(timespec="seconds"),
            "files": files,
            "bytes": size,
            "sent_bytes": stats.get("bytes", 0),
            "verified": checked,
            "transaction": state,  # the copy's newest index: index.N, segments up to N
            "backupd": __version__,
        }
        remote.put(json.dumps(manifest, indent=1).encode(), MANIFESTS, f"{host}.json")
        expired = expire_trash(remote, cfg.trash_days, started)
    # rclone counts the server-side copies into the trash as bytes too: not sent
    sent = stats.get("bytes", 0) - stats.get("serverSideCopyBytes", 0)
    sent -= stats.get("serverSideMoveBytes", 0)
    trashed = stats.get("serverSideMoves", 0) + stats.get("serverSideCopies", 0)
    line = (
        f"{name}: {files} files ({size} bytes) in the copy, {max(sent, 0)} bytes sent, "
        f"{trashed} replaced or deleted kept in the trash, {len(checked)} read back and matched"
    )
    line += f", {expired} trash run(s) over {cfg.trash_days} days removed" if expired else ""
    return line, warnings


def transaction(repo: Path) -> int | None:
    """The repository's newest committed transaction: N of its newest ``index.N``."""
    found = [int(p.name[6:]) for p in repo.glob("index.*") if p.name[6:].isdigit()]
    return max(found, default=None)


def rewritten(
    remote: Remote, repo: Path, host: str, started: datetime, copied: object
) -> list[str]:
    """Segments of the copy's last complete state (up to its transaction ``copied``) that
    this run replaced (its trash has them, and they are still in the repository): Borg
    never rewrites a committed segment, so a damaged disk or tampering. One warning naming
    them and where the copy's versions are kept. Segments past that state are not
    committed ones of the copy (a copy cut half way, the commit of the copy before, which
    a repository brought back by restore-from never had): replaced without a word (found
    by a new-user trial: every first copy after restore-from cried tampering)."""
    if not isinstance(copied, int):
        return []  # a copy of before the transaction was recorded: nothing to tell by
    run = started.strftime(STAMP)
    trashed = remote.files(TRASH, run, host, "data")
    changed = sorted(
        p
        for p in trashed
        if (repo / "data" / p).is_file()
        and p.rsplit("/", 1)[-1].isdigit()
        and int(p.rsplit("/", 1)[-1]) <= copied
    )
    if not changed:
        return []
    return [
        f"remote {remote.name}: {len(changed)} segment(s) of {host} differed from the copy's "
        f"though Borg never rewrites one (data/{', data/'.join(changed[:3])}): a damaged disk "
        f"or tampering? The copy's versions are kept in {TRASH}/{run}/{host}/data for "
        f"trash_days; run borg check --verify-data {repo}"
    ]


def not_shrunk(
    remote: str, host: str, size: int, copied: dict[str, Any] | None, max_shrink: float
) -> None:
    """OffsiteError when the repository (``size`` bytes) lost more than ``max_shrink`` of
    what its last copy held: copied, that would move most of the copy into the trash,
    purged ``trash_days`` later. A mass deletion (or a prune of many archives) should be
    seen by a person first."""
    before = int(copied.get("bytes", 0)) if copied else 0
    if before <= 0 or size >= before * (1 - max_shrink):
        return
    lost = min(1 - size / before, 0.99)  # "100% less" of a repository still there: no
    raise OffsiteError(
        f"remote {remote}: {host} holds {human_bytes(size)}, {lost:.0%} less than its copy "
        f"of {copied.get('copied_at', '?') if copied else '?'} ({human_bytes(before)}): not "
        "copied, the copy is kept as it was. Archives deleted? If it is meant (a prune of "
        f"many archives), copy it with: backupctl offsite run {host} --accept-shrink"
    )


def _same_repository(remote: Remote, repo: Path, host: str) -> tuple[str, dict[str, Any] | None]:
    """The local repository's id and the copy's manifest (None: no copy yet), refused if
    the copy is of another repository: one made anew in its place would move the whole
    copy into the trash."""
    local = configparser.ConfigParser()
    local.read(repo / "config")
    repo_id = local.get("repository", "id", fallback="")
    found = remote.cat_if_there(MANIFESTS, f"{host}.json")  # a remote down: fails here
    try:
        manifest = json.loads(found or b"null")
        copied = manifest.get("repository_id")
    except (ValueError, AttributeError):
        return repo_id, None  # no copy yet (or none with an id): nothing to compare
    if copied and copied != repo_id:
        raise OffsiteError(
            f"remote {remote.name}: {repo} is not the repository copied there before (id "
            f"{repo_id[:12]}, the copy's {copied[:12]}): not copied, the copy is kept. To "
            f"start a new copy, move {host}/ and {MANIFESTS}/{host}.json away on the remote"
        )
    return repo_id, manifest


def _sync(
    env: MaintenanceEnv, remote: Remote, what: tuple[str, Path], started: datetime
) -> dict[str, int]:
    """``borg with-lock`` around ``rclone sync``; rclone's closing statistics."""
    host, repo = what
    cfg = env.config.offsite
    assert cfg is not None
    flags = [
        "--use-json-log",
        "--stats-log-level",
        "NOTICE",
        "--stats",
        "24h",  # one closing line of statistics per step, not one a minute
        "--retries",
        str(cfg.retries),
        "--low-level-retries",
        str(2 * cfg.retries - 1),  # each request's own tries (rclone's default: 10)
    ]
    if cfg.bandwidth:
        flags += ["--bwlimit", cfg.bandwidth]
    trash = remote.url(TRASH, started.strftime(STAMP), host)
    # the steps in their safe order (backupd/remote/rclone_steps.py), as with-lock's command
    steps: tuple[str, ...] = (sys.executable, "-m", "backupd.remote.rclone_steps", remote.binary)
    steps += (str(remote.config_file), str(repo), remote.url(host), trash)
    argv = ("with-lock", "--lock-wait", str(LOCK_WAIT), str(repo), *steps, *flags)
    left = cfg.time_left(started) if env.trigger != "backupctl" else None
    limit = min(cfg.timeout, left) if left else cfg.timeout  # stopped at the window's end
    try:
        done = env.borg.run(
            argv,
            repo=repo,
            wait=LOCK_WAIT,  # a backup of ours holding it: waited for, then "locked by ..."
            timeout=limit,
            what=f"offsite copy to {remote.name}",
        )
    except RepositoryLockedError:
        raise  # who holds it, since when: borg's own line says it better
    except BorgError as e:
        closed = e.transient and e.returncode is None and "timed out" in e.message
        if closed and limit < cfg.timeout:  # cut at the window's end, not its own limit
            raise WindowClosed(
                f"remote {remote.name}: the copy of {host} stopped at the end of [offsite] "
                f"window {cfg.window} UTC; the next run goes on from where it stopped"
            ) from None
        raise _failed(remote, host, e) from None
    return _stats(done.stdout + done.stderr)


def _failed(remote: Remote, host: str, e: BorgError) -> OffsiteError:
    """One line: rclone's error lines (its JSON log), else borg's."""
    found = re.findall(
        r'"level":"(?:error|critical)","msg":"((?:[^"\\]|\\.)*)"'
        r'|"msg":"(Failed to (?:[^"\\]|\\.)*)"',
        e.message,
    )
    lines = [(a or b).replace('\\"', '"').strip() for a, b in found]
    said = " | ".join(dict.fromkeys(lines[-3:]))
    # the hint from rclone's error lines only: its statistics lines hold any number
    why = hinted(tidy(said), said) if said else e.message
    return OffsiteError(remote.scrub(f"remote {remote.name}: the copy of {host} failed: {why}"))


def _stats(output: bytes) -> dict[str, int]:
    """rclone's closing statistics, added up over the steps (one line each)."""
    total: dict[str, int] = {}
    for line in output.decode(errors="replace").splitlines():
        if '"stats"' not in line:
            continue
        try:
            found = json.loads(line)["stats"]
        except (ValueError, KeyError, TypeError):
            continue
        for k, v in found.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                total[k] = total.get(k, 0) + int(v)
    return total


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
    # with-lock's own commits are 17-byte segments: the newest with data are worth reading
    full = [p for p in kept if p.stat().st_size > 1024] or kept
    newest = full[-(count // 2 or 1) :] if count and full else []
    rest = [p for p in kept if p not in newest]
    chosen = newest + random.sample(rest, min(len(rest), max(count - len(newest), 0)))
    chosen = _within(chosen, VERIFY_BYTES)
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


def _within(paths: list[Path], budget: int) -> list[Path]:
    """The first of ``paths`` that fit in ``budget`` bytes together (at least one): what
    is read back each day costs the remote's egress, and the read is held in memory."""
    kept: list[Path] = []
    total = 0
    for path in paths:
        size = path.stat().st_size
        if kept and total + size > budget:
            continue
        kept.append(path)
        total += size
    return kept


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
