"""restore onto a droplet's filesystem (``--to-host HOST --path P``).

The restore point is first extracted and verified on the backup host (as ``--to DIR``
does: sha256 / manifest), into a private staging directory; rsync then pushes it over
the pinned SSH connection, and a second rsync pass (``--checksum --dry-run``) proves
that every file arrived with the same content. Staging is always removed.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from backupd.actions import names
from backupd.actions.context import Context, connect, ssh_target
from backupd.actions.gatelist import non_empty_probe, restore_targets, restore_writer
from backupd.actions.restore import DirRequest, choose_archives, restore_to_dir
from backupd.catalogue import Archive, Check, RunStatus
from backupd.config.load import HostConfig, SourceConfig
from backupd.errors import BackupdError, RefusedError, RestoreError, UsageError, VerificationError
from backupd.local.process import Invocation, run_local
from backupd.remote.rsync import rsync_over_ssh
from backupd.remote.rsyncmsg import itemized_files
from jobs.gating import Tree

log = logging.getLogger(__name__)
REMOTE_TIMEOUT = 600.0
PUSH_TIMEOUT = 24 * 3600.0


@dataclass(frozen=True)
class PushRequest:
    host: str  # the droplet to write to: the source's own, or another
    path: str  # absolute directory there
    archive: str | None = None
    at: datetime | None = None
    force: bool = False
    include: tuple[str, ...] = ()  # a tree's files or subtrees only


@dataclass(frozen=True)
class PushPlan:
    archives: list[Archive]
    where: str
    not_empty: bool  # the remote directory has files (only with --force)


@dataclass(frozen=True)
class Pushed:
    where: str
    files: int
    nbytes: int
    seconds: float
    checks: list[Check]


@dataclass(frozen=True)
class Destination:
    """Where a push writes and how: ``host`` with the key to use (a gated droplet's
    restore key), the commands' prefix (sudo) and rsync's side there."""

    host: HostConfig
    path: str
    prefix: tuple[str, ...]
    rsync_path: str
    gated: bool


def _destination(ctx: Context, source: SourceConfig, req: PushRequest) -> Destination:
    if not req.path.startswith("/"):
        raise UsageError(f"--path must be absolute on the droplet, got {req.path!r}")
    host = ctx.config.hosts.get(req.host)
    if host is None:
        raise UsageError(
            f"unknown host {req.host!r} (configured: {', '.join(sorted(ctx.config.hosts))})"
        )
    path = req.path.rstrip("/") or "/"
    if host.gate:
        return _gated_destination(ctx, host, path)
    prefix: tuple[str, ...] = source.options.remote_prefix()  # a tree's: sudo -n, or none
    rsync_path = " ".join((*prefix, source.options.program("rsync")))
    return Destination(host, path, prefix, rsync_path, gated=False)


def _gated_destination(ctx: Context, host: HostConfig, path: str) -> Destination:
    """A gated droplet takes a restore only with its restore key, and only into a
    directory its restore allowlist names (decision 0022): a tree of its sources (a
    volume's where Docker says it is) or one of its restore_paths."""
    writer = restore_writer(host)
    targets = restore_targets(host)
    target = next((t for t in targets if t.path == path), None)
    if target is None:
        target = _volume_at(ctx, writer, [t for t in targets if t.inspect], path)
    if target is None:
        shown = [t.path or f"volume {(t.inspect or ('?',))[-1]}'s mountpoint" for t in targets]
        raise UsageError(
            f"{host.name} is gated: restores write only into its trees or restore_paths "
            f"(allowed: {', '.join(shown) or 'none'}), not {path}"
        )
    prefix = ("sudo", "-n") if target.sudo else ()
    # rsync_path: none, the gate picks rrsync (rsync_over_ssh with gated=True)
    return Destination(writer, path, prefix, "", gated=True)


def _volume_at(ctx: Context, writer: HostConfig, volumes: list[Tree], path: str) -> Tree | None:
    """The volume whose mountpoint is ``path``, as Docker on the droplet says."""
    if not volumes:
        return None
    with connect(ctx, writer) as conn:
        for volume in volumes:
            said = conn.run(volume.inspect or (), timeout=REMOTE_TIMEOUT)
            if said.ok and said.stdout.decode(errors="replace").strip() == path:
                return volume
    return None


def plan_push(ctx: Context, host: HostConfig, source: SourceConfig, req: PushRequest) -> PushPlan:
    dest = _destination(ctx, source, req)
    chosen = choose_archives(ctx, host, source, req.archive, req.at)
    where = f"{dest.host.name}:{dest.path}"
    with connect(ctx, dest.host) as conn:
        probe = (*dest.prefix, *non_empty_probe(dest.path))
        not_empty = bool(conn.run(probe, timeout=REMOTE_TIMEOUT).stdout.strip())
    if not_empty and not req.force:
        raise RefusedError(
            f"refusing to restore into {where}: it is not empty (use --force "
            "to write over the files there)"
        )
    return PushPlan(chosen, where, not_empty)


def restore_to_host_path(
    ctx: Context,
    host: HostConfig,
    source: SourceConfig,
    req: PushRequest,
    confirm: Callable[[PushPlan], bool] = lambda plan: True,
) -> Pushed:
    plan = plan_push(ctx, host, source, req)
    if not confirm(plan):
        raise RefusedError("not confirmed: nothing was changed")
    dest = _destination(ctx, source, req)
    rid = ctx.catalogue.start_restore(
        host.name, source.name, [a.name for a in plan.archives], "host-path", plan.where
    )
    staging = ctx.private_dir(ctx.config.state_dir / "restore" / f"push-{rid}")
    started = time.monotonic()
    try:
        restored = restore_to_dir(
            ctx, host, source, DirRequest(staging, req.archive, req.at, True, req.include)
        )
        files = sum(1 for p in staging.rglob("*") if p.is_file())
        nbytes = sum(f.nbytes for f in restored)
        verified = f"{files} file(s), {nbytes} bytes verified against the backup before the push"
        checks = [Check("extract", verified)]
        with connect(ctx, dest.host) as conn:
            mkdir = conn.run((*dest.prefix, "mkdir", "-p", "--", dest.path), timeout=REMOTE_TIMEOUT)
            if not mkdir.ok:
                raise RestoreError(f"cannot create {plan.where}", stderr_tail=mkdir.stderr_tail())
        _rsync(ctx, dest, staging, verify=False)
        differing = _rsync(ctx, dest, staging, verify=True)
        if differing:
            shown = ", ".join(differing[:5])
            raise VerificationError(
                f"{plan.where} differs from the backup after the push in "
                f"{len(differing)} file(s): {shown}"
            )
        detail = "rsync --checksum found every file identical on the droplet"
        checks.append(Check("pushed", detail))
    except BackupdError as e:
        ctx.catalogue.finish_restore(
            rid, RunStatus.FAILED, error=str(e), seconds=time.monotonic() - started
        )
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seconds = time.monotonic() - started
    ctx.catalogue.finish_restore(
        rid, RunStatus.SUCCEEDED, nbytes=nbytes, seconds=seconds, checks=checks
    )
    return Pushed(plan.where, files, nbytes, seconds, checks)


def _rsync(ctx: Context, dest: Destination, staging: Path, *, verify: bool) -> list[str]:
    """Push staging to the droplet; with ``verify``, compare contents and list what differs."""
    target = ssh_target(dest.host, ctx.config.state_dir)
    tag = f"push-{dest.host.name}-{int(time.time() * 1000)}"
    # --sparse (in every rsync): holes stay holes on the droplet
    checked = ("--checksum", "--dry-run", "--itemize-changes") if verify else ()
    with rsync_over_ssh(ctx.run_dir(), target, tag, dest.rsync_path, gated=dest.gated) as rsync:
        argv = (*rsync, *checked, f"{staging}/", f"{dest.host.name}:{dest.path.rstrip('/')}/")
        result = run_local(argv, Invocation(timeout=PUSH_TIMEOUT))
    if not result.ok:
        raise RestoreError(
            f"rsync to {dest.host.name}:{dest.path} failed (exit {result.exit_status})",
            stderr_tail=result.stderr_tail(),
        )
    # itemized: ">f..." a file that would be sent again (content or size differs)
    return [names.display(name) for name in itemized_files(result.stdout)]
