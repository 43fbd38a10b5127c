"""Pulling one DumpStream into one archive, fail-safe (docs/decisions/0001)."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from backupd import __version__
from backupd.actions.context import Context, compression_for, ssh_target
from backupd.actions.names import display
from backupd.borg.adapter import CreateStats
from backupd.catalogue.models import utcnow
from backupd.config.load import HostConfig, SourceConfig
from backupd.errors import BorgError, DumpError, StoreFullError
from backupd.remote.relay import RelayOutcome, RelaySpec
from jobs.base import DumpStream, Held, slug

log = logging.getLogger(__name__)
BORG_GRACE_SECONDS = 600.0


@dataclass(frozen=True)
class PullRun:
    """The run an archive belongs to, as its comment records it."""

    source_id: int
    run_id: int
    # every item this run pulls: the repository alone can then tell a complete night's set
    # from one a failure cut short (a catalogue rebuild must not invent successes)
    plan: tuple[str, ...]
    gone: list[str] = field(default_factory=list)  # items dropped on the droplet since the plan


@dataclass(frozen=True)
class Pulled:
    archive: str
    nbytes: int
    warnings: tuple[str, ...] = ()


def archive_name(source: str, item: str, when: datetime) -> str:
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    return f"{source}.{slug(item)}.{stamp}"


def base_metadata(
    host: HostConfig,
    source: SourceConfig,
    run: PullRun,
    item: str,
    filename: str,
    started: datetime,
) -> dict[str, Any]:
    """What every archive's comment says about itself from the start (read back by a
    catalogue rebuild, and by a sweep after a crash: the run tells whether it is still
    being written); sealing adds the sha256, size and facts."""
    return {
        "backupd": __version__,
        "host": host.name,
        "source": source.name,
        "kind": source.kind,
        "item": item,
        "filename": filename,
        "started": started.isoformat(),
        "run": run.run_id,
        "plan": list(run.plan),
        "gone": list(run.gone),  # so far: a rebuild does not count these as missing
    }


def pull_stream(
    ctx: Context,
    host: HostConfig,
    source: SourceConfig,
    run: PullRun,
    n: int,
    stream: DumpStream,
    repo: Path,
    held: Held,
) -> Pulled:
    started = utcnow()
    name = archive_name(source.name, stream.item, started)
    meta = base_metadata(host, source, run, stream.item, stream.filename, started)
    spec_path = ctx.run_dir() / f"run{run.run_id}-{n}.json"
    result_path = spec_path.with_suffix(".result")
    spec = RelaySpec(
        ssh_target(host, ctx.config.state_dir),
        stream.argv + held.extra_argv,
        source.timeout,
        source.idle_timeout,
        stream.min_bytes if stream.min_bytes is not None else source.min_bytes,
        result_path,
        len(stream.stdin),
        stream.counter,
        stream.tool,
    )
    write_private(spec_path, spec.to_json())
    try:
        stats = ctx.borg.create_from_command(
            repo,
            name,
            stdin_name=stream.filename,
            command=(sys.executable, "-m", "backupd.remote.relay", str(spec_path)),
            comment=json.dumps(meta, sort_keys=True),
            compression=compression_for(ctx, source),
            timeout=source.timeout + BORG_GRACE_SECONDS,
            stdin=stream.stdin or None,
        )
        outcome = RelayOutcome.read(result_path)
    except BorgError as e:
        remove_leftovers(ctx, repo, name)
        outcome = RelayOutcome.read(result_path)
        if outcome is not None and not outcome.ok and not isinstance(e, StoreFullError):
            raise DumpError(
                f"{display(stream.item)}: {outcome.reason}",
                stderr_tail=outcome.stderr_tail,
                transient=outcome.transient,
            ) from None
        raise
    finally:
        spec_path.unlink(missing_ok=True)
        result_path.unlink(missing_ok=True)
    if outcome is None or not outcome.ok:  # borg said yes but the relay did not: never keep it
        remove_leftovers(ctx, repo, name)
        raise DumpError(f"{display(stream.item)}: the relay left no verdict; archive discarded")
    dump_facts = {**held.facts, **outcome.facts}
    facts = {**dump_facts, "borg": stats.raw.get("archive", {}).get("stats", {})}
    meta.update(
        sha256=outcome.sha256,
        nbytes=outcome.nbytes,
        finished=utcnow().isoformat(),
        facts=dump_facts,
        borg=facts["borg"],
    )
    seal(ctx, repo, name, meta)
    record_archive(
        ctx,
        run.run_id,
        run.source_id,
        repo,
        name,
        stream.item,
        stream.filename,
        started,
        outcome.nbytes,
        outcome.sha256,
        stats,
        facts,
    )
    log.info(
        "%s/%s: archive %s: %d bytes, sha256 %s",
        host.name,
        source.name,
        name,
        outcome.nbytes,
        outcome.sha256[:12],
    )
    # what the droplet side said a person should look at (e.g. an object whose definer is gone)
    said = dump_facts.get("warnings", [])
    return Pulled(name, outcome.nbytes, tuple(f"{display(stream.item)}: {w}" for w in said))


def record_archive(
    ctx: Context,
    run_id: int,
    source_id: int,
    repo: Path,
    name: str,
    item: str,
    filename: str,
    created_at: datetime,
    nbytes: int,
    sha256: str,
    stats: CreateStats,
    facts: dict[str, Any],
) -> None:
    ctx.catalogue.add_archive(
        run_id=run_id,
        source_id=source_id,
        repository=str(repo),
        name=name,
        item=item,
        filename=filename,
        created_at=created_at,
        nbytes=nbytes,
        sha256=sha256,
        original_size=stats.original_size,
        compressed_size=stats.compressed_size,
        deduplicated_size=stats.deduplicated_size,
        facts=facts,
    )


def seal(ctx: Context, repo: Path, name: str, meta: dict[str, Any]) -> None:
    """Write the archive's final comment (sha256, facts). If that fails (a full store:
    borg needs room for a new segment to commit), the unsealed archive and any
    ``NAME.recreate`` are deleted now if possible, else by the next run's sweep."""
    try:
        ctx.borg.set_comment(repo, name, json.dumps(meta, sort_keys=True))
    except BorgError:
        remove_leftovers(ctx, repo, name)
        raise


def remove_leftovers(ctx: Context, repo: Path, name: str) -> None:
    """Delete anything borg may have kept of a failed archive (it should keep nothing).
    Quietly: the run's failure is the one line a person reads; what cannot be deleted now
    (a full store) is left to the sweep at the next run (its marker stays)."""
    try:
        for entry in ctx.borg.list_archives(repo, f"{name}*", checkpoints=True):
            log.info("deleting leftover archive %s of a failed dump", entry.name)
            ctx.borg.delete(repo, entry.name)
    except BorgError as e:
        log.info("leftovers of %s not deleted now, the next run sweeps them: %s", name, e)


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
