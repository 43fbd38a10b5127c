"""Pulling a TreeTransfer: rsync into a private mirror, then ``borg create`` on the mirror.

Only what changed crosses the network (rsync) and only what changed is read again (Borg's
files cache, kept per source with BORG_FILES_CACHE_SUFFIX; the manifest's hash cache).
rsync failing means no archive: the mirror may be half updated, but it is never archived.
Paths the login user may not read are left out and reported (backupd/actions/unreadable.py,
decision 0015). Sparse files stay sparse: ``--sparse`` in the mirror, and holes cost no
bandwidth because the wire is compressed (``--compress``: zstd between rsyncs >= 3.2).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupd.actions import unreadable
from backupd.actions.context import Context, chunker_for, compression_for, ssh_target
from backupd.actions.manifest import MANIFEST_DIR, Manifest, build_manifest, version_rows
from backupd.actions.stream import (
    Pulled,
    PullRun,
    archive_name,
    base_metadata,
    record_archive,
)
from backupd.catalogue.models import utcnow
from backupd.config.load import HostConfig, SourceConfig
from backupd.errors import BackupdError, DumpError, StoppedError, summarize_stderr
from backupd.local.process import Invocation, run_local
from backupd.remote.rsync import rsync_over_ssh
from backupd.remote.rsyncmsg import SenderErrors, sender_errors
from jobs.base import TreeTransfer, slug

if TYPE_CHECKING:
    from backupd.remote.ssh import Connection

log = logging.getLogger(__name__)
TREE_FILENAME = "data/"  # how the catalogue marks a file-level archive
RSYNC_PARTIAL = 23  # "some files/attrs were not transferred": unreadable paths, or worse
RSYNC_VANISHED = 24  # "some files vanished before they could be transferred": live trees
RSYNC_TRANSIENT = frozenset({10, 11, 12, 30, 35, 255})  # socket, I/O, protocol, timeouts
_RECEIVED = re.compile(rb"Total bytes received: ([\d,.]+)")


def pull_tree(
    ctx: Context,
    host: HostConfig,
    source: SourceConfig,
    run: PullRun,
    unit: TreeTransfer,
    repo: Path,
    conn: Connection,
) -> Pulled:
    """rsync ``unit`` into its mirror, then archive the mirror. ``conn``: the night's
    connection to the host (hooks and the unreadable-path check run on it; rsync brings its
    own transport)."""
    root = ctx.private_dir(
        ctx.config.state_dir / "mirrors" / host.name / source.name / slug(unit.item)
    )
    started = utcnow()
    warnings: list[str] = []
    facts, denied = mirror_tree(ctx, host, source, run.run_id, unit, root / "data", warnings, conn)
    manifest = build_manifest(root / "data", root / "hash-cache.json")
    summary = manifest.summary()
    if denied and not summary["files"]:
        raise unreadable.nothing_read(unit, host.user, denied)
    if denied:
        warnings.append(unreadable.warning_text(unit, host.user, denied))
    facts.update(summary, hashed_bytes=manifest.hashed_bytes, **unreadable.facts(denied))
    name = archive_name(source.name, unit.item, started)
    meta = base_metadata(host, source, run, unit.item, TREE_FILENAME, started)
    meta.update(
        sha256=summary["manifest_sha256"],
        nbytes=summary["bytes"],
        path=unit.path,
        facts={k: v for k, v in facts.items() if k != "sample"},
    )
    try:
        write_pieces(root / MANIFEST_DIR, manifest)
        stats = ctx.borg.create_from_paths(
            repo,
            name,
            cwd=root,
            paths=("data", MANIFEST_DIR),
            comment=json.dumps(meta, sort_keys=True),
            compression=compression_for(ctx, source),
            chunker_params=chunker_for(source, None),
            timeout=source.timeout,
            files_cache_suffix=f"{host.name}.{source.name}.{slug(unit.item)}",
        )
    finally:  # it lives in the archive; kept here it would only take disk until tomorrow
        shutil.rmtree(root / MANIFEST_DIR, ignore_errors=True)
    # the comment said all a catalogue rebuild needs before borg started (the sample comes
    # from the manifest): nothing is rewritten after the fact (decision 0019)
    facts["borg"] = stats.raw.get("archive", {}).get("stats", {})
    record_archive(
        ctx,
        run.run_id,
        run.source_id,
        repo,
        name,
        unit.item,
        TREE_FILENAME,
        started,
        summary["bytes"],
        summary["manifest_sha256"],
        stats,
        facts,
        versions=version_rows(manifest),
    )
    log.info(
        "%s/%s: archive %s: %d files, %d bytes, %d transferred",
        host.name,
        source.name,
        name,
        summary["files"],
        summary["bytes"],
        facts["transferred_bytes"],
    )
    return Pulled(name, summary["bytes"], tuple(warnings))


def write_pieces(folder: Path, manifest: Manifest) -> None:
    """The manifest's pieces as files in a fresh private ``folder`` (what is archived)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700)
    for name, data in manifest.pieces.items():
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)


def mirror_tree(
    ctx: Context,
    host: HostConfig,
    source: SourceConfig,
    run_id: int,
    unit: TreeTransfer,
    data: Path,
    warnings: list[str],
    conn: Connection,
) -> tuple[dict[str, Any], unreadable.Unreadable]:
    """rsync the tree into the mirror ``data`` (between the droplet hooks), then take out of
    the mirror every path the login user may not read now: (transfer facts, those paths)."""
    check = not unit.sudo  # as root, rsync's own errors are the whole story
    with droplet_hooks(ctx, conn, host, source, run_id, unit, warnings):
        facts, errors = rsync_tree(ctx, host, source, unit, data, run_id)
        denied = dict(errors.denied)
        if check:  # while a `before` snapshot is still there
            found = unreadable.find_unreadable(conn, unit, data, source.timeout)
            denied.update({rel: d for rel, d in found.items() if rel not in denied})
    if errors.vanished or facts["rsync_exit"] == RSYNC_VANISHED:
        warnings.append(f"{unit.item}: some files vanished during the transfer (rsync 24)")
    denied = dict(sorted(denied.items()))
    unreadable.drop_from_mirror(data, denied)
    return facts, denied


def rsync_tree(
    ctx: Context,
    host: HostConfig,
    source: SourceConfig,
    unit: TreeTransfer,
    dest: Path,
    run_id: int,
) -> tuple[dict[str, Any], SenderErrors]:
    """One rsync into ``dest``: its facts and the paths it could not read. Raises
    DumpError for anything else that went wrong (the mirror is then never archived)."""
    target = ssh_target(host, ctx.config.state_dir)
    tag = f"{run_id}-{slug(unit.item)}"
    with rsync_over_ssh(ctx.run_dir(), target, tag, unit.rsync_path, gated=host.gate) as rsync:
        # --ignore-errors: deletions still happen when a path could not be read (rsync skips
        # them after any I/O error); a run with any other error is never archived anyway.
        argv = (
            *rsync,
            "--numeric-ids",
            "--delete",
            "--delete-excluded",
            "--ignore-errors",
            "--stats",
            f"--timeout={int(source.idle_timeout)}",
            *(f"--exclude={pattern}" for pattern in unit.excludes),
            f"{host.name}:{unit.path.rstrip('/')}/",
            f"{dest}/",
        )
        result = run_local(argv, Invocation(timeout=source.timeout))
    if result.timed_out:
        raise DumpError(
            f"{unit.item}: rsync still running after its {source.timeout:.0f}s deadline: stopped",
            transient=True,
        )
    errors = SenderErrors()
    if result.exit_status == RSYNC_PARTIAL:
        errors = sender_errors(result.stderr, unit.path)
        if errors.root_denied:
            raise unreadable.nothing_read(unit, host.user, {})
    partial = result.exit_status == RSYNC_PARTIAL and errors.denied and not errors.unknown
    if result.exit_status not in (0, RSYNC_VANISHED) and not partial:
        raise DumpError(
            f"{unit.item}: rsync of {unit.path} exited with status {result.exit_status}",
            stderr_tail=result.stderr_tail(),
            transient=result.exit_status in RSYNC_TRANSIENT,
        )
    received = _RECEIVED.search(result.stdout)
    transferred = int(re.sub(rb"[,.]", b"", received.group(1))) if received else 0
    return {"rsync_exit": result.exit_status, "transferred_bytes": transferred}, errors


@contextmanager
def droplet_hooks(
    ctx: Context,
    conn: Connection,
    host: HostConfig,
    source: SourceConfig,
    run_id: int,
    unit: TreeTransfer,
    warnings: list[str],
) -> Iterator[None]:
    """Run ``before``; always run ``after``. The owed cleanup is in the catalogue first."""
    if unit.before is None and unit.after is None:
        yield
        return
    cleanup_id = (
        ctx.catalogue.add_cleanup(host.name, source.name, run_id, list(unit.after))
        if unit.after
        else None
    )
    try:
        if unit.before is not None:
            result = conn.run(unit.before, timeout=unit.hook_timeout)
            if not result.ok:
                raise DumpError(
                    f"{unit.item}: before command {unit.before[0]} exited with "
                    f"status {result.exit_status}",
                    stderr_tail=result.stderr_tail(),
                )
        yield
    finally:
        if unit.after is not None and cleanup_id is not None:
            problem = run_cleanup(ctx, conn, cleanup_id, unit.after, unit.hook_timeout)
            if problem:
                warnings.append(problem)


def run_cleanup(
    ctx: Context,
    conn: Connection,
    cleanup_id: int,
    argv: list[str] | tuple[str, ...],
    timeout: float,
) -> str | None:
    """Run an owed droplet cleanup; on failure keep it owed and say why."""
    try:
        result = conn.run(argv, timeout=timeout)
    except StoppedError:
        raise  # a shutdown: the cleanup stays owed, the next start runs it
    except BackupdError as e:
        problem = f"after command {argv[0]} could not run: {e}"
    else:
        if result.ok:
            ctx.catalogue.cleanup_done(cleanup_id)
            return None
        problem = (
            f"after command {argv[0]} exited with status {result.exit_status}: "
            f"{summarize_stderr(result.stderr_tail())}"
        )
    ctx.catalogue.cleanup_failed(cleanup_id, problem)
    log.error("%s (kept for the next start)", problem)
    return problem
