"""backup: pull every dump stream of a source into its own Borg archive.

Order matters for safety: the run row is written first; the droplet is reached
(host key checked) before anything touches the store; each stream goes through
``borg create --content-from-command`` so a failed dump never becomes an archive.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from backupd import __version__
from backupd.actions.context import Context, ssh_target
from backupd.catalogue import RunStatus
from backupd.catalogue.models import utcnow
from backupd.config import HostConfig, SourceConfig
from backupd.errors import BackupdError, BorgError, DumpError
from backupd.process import summarize_stderr
from backupd.relay import RelayOutcome, RelaySpec
from backupd.ssh import Connection
from jobs.base import DumpStream, registry, slug

log = logging.getLogger(__name__)
BORG_GRACE_SECONDS = 600.0


@dataclass(frozen=True)
class BackupOutcome:
    host: str
    source: str
    run_id: int
    status: RunStatus
    archives: list[str] = field(default_factory=list)
    nbytes: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in (RunStatus.SUCCEEDED, RunStatus.WARNING)


def archive_name(source: str, item: str, when: datetime) -> str:
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    return f"{source}.{slug(item)}.{stamp}"


def backup_source(
    ctx: Context, host: HostConfig, source: SourceConfig, trigger: str
) -> BackupOutcome:
    cat = ctx.catalogue
    source_id = cat.ensure_source(host.name, host.address, source.name, source.kind)
    run_id = cat.start_run(source_id, trigger)
    label = f"{host.name}/{source.name}"
    log.info("%s: backup started (run %d)", label, run_id)
    archives: list[str] = []
    total = 0
    try:
        kind = registry()[source.kind]
        with Connection(ssh_target(host)) as conn:
            streams = kind.streams(source.options, conn)
        if not streams:
            raise DumpError(f"{source.kind} source found nothing to back up")
        repo = ctx.repository(host.name)
        if ctx.borg.ensure_repository(repo, ctx.config.store.encryption):
            log.info("%s: initialised Borg repository %s", label, repo)
        for n, stream in enumerate(streams):
            name, nbytes = _pull(ctx, host, source, source_id, run_id, n, stream, repo)
            archives.append(name)
            total += nbytes
    except BackupdError as e:
        error = f"{label}: {e}"
        tail = getattr(e, "stderr_tail", "")
        if tail:
            error += ": " + summarize_stderr(tail)
        cat.finish_run(run_id, RunStatus.FAILED, nbytes=total, error=error, stderr_tail=tail)
        return BackupOutcome(
            host.name, source.name, run_id, RunStatus.FAILED, archives, total, error
        )
    except BaseException as e:
        cat.finish_run(
            run_id,
            RunStatus.FAILED,
            nbytes=total,
            error=f"{label}: internal error: {type(e).__name__}: {e}",
        )
        raise
    cat.finish_run(run_id, RunStatus.SUCCEEDED, nbytes=total)
    log.info("%s: backup succeeded: %d archive(s), %d bytes", label, len(archives), total)
    return BackupOutcome(host.name, source.name, run_id, RunStatus.SUCCEEDED, archives, total)


def _pull(
    ctx: Context,
    host: HostConfig,
    source: SourceConfig,
    source_id: int,
    run_id: int,
    n: int,
    stream: DumpStream,
    repo: Path,
) -> tuple[str, int]:
    started = utcnow()
    name = archive_name(source.name, stream.item, started)
    meta: dict[str, object] = {
        "backupd": __version__,
        "host": host.name,
        "source": source.name,
        "kind": source.kind,
        "item": stream.item,
        "filename": stream.filename,
        "started": started.isoformat(),
    }
    spec_path = ctx.run_dir() / f"run{run_id}-{n}.json"
    result_path = spec_path.with_suffix(".result")
    spec = RelaySpec(
        ssh_target(host),
        stream.argv,
        source.timeout,
        source.idle_timeout,
        source.min_bytes,
        result_path,
    )
    _write_private(spec_path, spec.to_json())
    try:
        stats = ctx.borg.create_from_command(
            repo,
            name,
            stdin_name=stream.filename,
            command=(sys.executable, "-m", "backupd.relay", str(spec_path)),
            comment=json.dumps(meta, sort_keys=True),
            compression=ctx.config.store.compression,
            timeout=source.timeout + BORG_GRACE_SECONDS,
        )
        outcome = RelayOutcome.read(result_path)
    except BorgError:
        _remove_leftovers(ctx, repo, name)
        outcome = RelayOutcome.read(result_path)
        if outcome is not None and not outcome.ok:
            raise DumpError(
                f"{stream.item}: {outcome.reason}",
                stderr_tail=outcome.stderr_tail,
                transient=outcome.transient,
            ) from None
        raise
    finally:
        spec_path.unlink(missing_ok=True)
        result_path.unlink(missing_ok=True)
    if outcome is None or not outcome.ok:  # borg said yes but the relay did not: never keep it
        _remove_leftovers(ctx, repo, name)
        raise DumpError(f"{stream.item}: the relay left no verdict; archive discarded")
    meta.update(sha256=outcome.sha256, nbytes=outcome.nbytes, finished=utcnow().isoformat())
    ctx.borg.set_comment(repo, name, json.dumps(meta, sort_keys=True))
    ctx.catalogue.add_archive(
        run_id=run_id,
        source_id=source_id,
        repository=str(repo),
        name=name,
        item=stream.item,
        filename=stream.filename,
        created_at=started,
        nbytes=outcome.nbytes,
        sha256=outcome.sha256,
        original_size=stats.original_size,
        compressed_size=stats.compressed_size,
        deduplicated_size=stats.deduplicated_size,
        facts={"borg": stats.raw.get("archive", {}).get("stats", {})},
    )
    log.info(
        "%s/%s: archive %s: %d bytes, sha256 %s",
        host.name,
        source.name,
        name,
        outcome.nbytes,
        outcome.sha256[:12],
    )
    return name, outcome.nbytes


def _remove_leftovers(ctx: Context, repo: Path, name: str) -> None:
    """Delete anything borg may have kept of a failed archive (it should keep nothing)."""
    try:
        for entry in ctx.borg.list_archives(repo, f"{name}*", checkpoints=True):
            log.warning("deleting leftover archive %s of a failed dump", entry.name)
            ctx.borg.delete(repo, entry.name)
    except BorgError as e:
        log.warning("could not check for leftovers of %s: %s", name, e)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
