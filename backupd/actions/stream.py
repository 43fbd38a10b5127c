"""Pulling one DumpStream into one archive, fail-safe (docs/decisions/0001)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupd import __version__
from backupd.actions.context import Context, chunker_for, compression_for
from backupd.actions.names import display
from backupd.borg.adapter import CreateStats
from backupd.catalogue.models import utcnow
from backupd.catalogue.versions import VersionRow
from backupd.config.load import HostConfig, SourceConfig
from backupd.errors import BorgError, DumpError
from backupd.remote.counters import make_counter
from backupd.remote.verdict import StreamLimits, StreamVerdict, judge
from jobs.base import DumpStream, Held, slug

if TYPE_CHECKING:
    from backupd.remote.ssh import Connection

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
    conn: Connection,
) -> Pulled:
    """Stream the dump over ``conn`` (the night's one connection to the host) into a gated
    ``borg create`` (backupd/borg/gate.py): the archive exists only if the verdict on the
    whole stream was good, and it carries its seal inside."""
    started = utcnow()
    name = archive_name(source.name, stream.item, started)
    meta = base_metadata(host, source, run, stream.item, stream.filename, started)
    limits = StreamLimits(
        host.name,
        source.timeout,
        source.idle_timeout,
        stream.min_bytes if stream.min_bytes is not None else source.min_bytes,
        stream.tool,
    )
    verdicts: list[StreamVerdict] = []

    def produce(sink: Callable[[bytes], object]) -> bytes | None:
        counter = make_counter(stream.counter)

        def forward(chunk: bytes) -> None:
            sink(chunk)
            if counter is not None:
                counter.feed(chunk)

        result = conn.stream(
            stream.argv + held.extra_argv,
            forward,
            deadline=source.timeout,
            idle_timeout=source.idle_timeout,
            stdin=stream.stdin or None,
        )
        verdict = judge(limits, result, counter.facts() if counter else None)
        verdicts.append(verdict)
        if not verdict.ok:
            return None
        seal = {**meta, **sealed_facts(verdict, held)}
        return json.dumps(seal, sort_keys=True).encode()

    try:
        stats = ctx.borg.create_gated(
            repo,
            name,
            spool=ctx.run_dir() / f"run{run.run_id}-{n}",
            filename=stream.filename,
            comment=json.dumps(meta, sort_keys=True),
            compression=compression_for(ctx, source),
            timeout=source.timeout + BORG_GRACE_SECONDS,
            produce=produce,
            chunker_params=chunker_for(source, stream.chunker_params),
        )
    except BorgError:
        remove_leftovers(ctx, repo, name)
        raise
    verdict = verdicts[-1] if verdicts else None
    if stats is None or verdict is None or not verdict.ok:
        remove_leftovers(ctx, repo, name)  # borg committed nothing; a checkpoint, maybe
        if verdict is None or verdict.ok:
            raise DumpError(f"{display(stream.item)}: borg kept no archive; nothing recorded")
        raise DumpError(
            f"{display(stream.item)}: {verdict.reason}",
            stderr_tail=verdict.stderr_tail,
            transient=verdict.transient,
        )
    dump_facts = {**held.facts, **verdict.facts}
    facts = {**dump_facts, "borg": stats.raw.get("archive", {}).get("stats", {})}
    record_archive(
        ctx,
        run.run_id,
        run.source_id,
        repo,
        name,
        stream.item,
        stream.filename,
        started,
        verdict.nbytes,
        verdict.sha256,
        stats,
        facts,
    )
    log.info(
        "%s/%s: archive %s: %d bytes, sha256 %s",
        host.name,
        source.name,
        name,
        verdict.nbytes,
        verdict.sha256[:12],
    )
    # what the droplet side said a person should look at (e.g. an object whose definer is gone)
    said = dump_facts.get("warnings", [])
    return Pulled(name, verdict.nbytes, tuple(f"{display(stream.item)}: {w}" for w in said))


def sealed_facts(verdict: StreamVerdict, held: Held) -> dict[str, Any]:
    """What the seal adds to the comment's metadata: the stream's checksum, size and facts
    (a catalogue rebuild and a sweep read them from the archive, decision 0019)."""
    return {
        "sha256": verdict.sha256,
        "nbytes": verdict.nbytes,
        "finished": utcnow().isoformat(),
        "facts": {**held.facts, **verdict.facts},
    }


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
    versions: Sequence[VersionRow] | None = None,
) -> None:
    """The archive's catalogue row; with ``versions`` (a tree's manifest), its file
    versions in the same transaction (backupd/catalogue/versions.py)."""
    fields: dict[str, Any] = dict(
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
    if versions is None:
        ctx.catalogue.add_archive(**fields)
    else:
        ctx.catalogue.add_tree_archive(versions, **fields)


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
