"""catalogue rebuild: a new catalogue from the Borg repositories alone.

Every archive backupd makes carries a JSON comment (decision 0003): host, source, kind,
item, file name, start time, the run it belonged to and every item that run planned to
pull; a dump's seal (sha256, size, the facts captured at backup time) is stored inside the
archive beside it (decision 0019), a tree's is in the comment. That is enough to
recreate hosts, sources, one run per original run (same id: succeeded when the repository
holds its whole planned set, failed when part of it is missing) and every archive row
with the same facts.
A tree's 200-file sample is not in the comment; it is recomputed from the manifest
archived with the tree, as are its file versions (the index find and ls read: archives
are recorded oldest first, so each version spans the archives that held it). A run
that archived nothing is not in Borg, so it is not rebuilt.
Borg's sizes of an archive sealed inside come from ``borg info`` at rebuild time: its
deduplicated size is then what only that archive holds now, not what it added when made.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from backupd.actions.context import Context
from backupd.actions.manifest import Manifest, archived_manifest, version_rows
from backupd.actions.tree import TREE_FILENAME
from backupd.borg.adapter import ArchiveEntry
from backupd.borg.gate import SEAL_NAME
from backupd.catalogue import Archive, Run, RunStatus
from backupd.errors import BorgError, RefusedError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RebuildSummary:
    repositories: int
    archives: int
    runs: int
    skipped: list[str]  # archives whose comment is not backupd's
    incomplete: int = 0  # runs whose planned set the repository does not hold whole


def rebuild_catalogue(ctx: Context) -> RebuildSummary:
    cat = ctx.catalogue
    with cat.session() as s:
        existing = s.query(Archive).count()
    if existing:
        raise RefusedError(
            f"the catalogue already lists {existing} archive(s); move "
            f"{ctx.config.catalogue_url} away first, then rebuild"
        )
    repos = [
        p
        for p in sorted(ctx.config.store.path.iterdir())
        if not p.name.startswith("_") and ctx.borg.is_repository(p)
    ]
    total, skipped = 0, []
    runs: dict[int, RunSet] = {}
    for repo in repos:
        sizes: dict[str, dict[str, Any]] | None = None  # borg info, asked once if needed
        found = []
        for entry in ctx.borg.list_archives(repo):
            meta = _metadata(entry)
            meta = unseal(ctx, repo, entry, meta) if meta is not None else None
            if meta is None:
                skipped.append(f"{repo.name}::{entry.name}")
                continue
            found.append((entry, meta))
        # oldest first: a tree's file versions run from one archive of its item to the next
        for entry, meta in sorted(found, key=lambda em: str(em[1]["started"])):
            if "borg" not in meta:
                sizes = ctx.borg.archive_sizes(repo) if sizes is None else sizes
                meta["borg"] = sizes.get(entry.name, {})
            run_id = _restore_archive(ctx, repo, entry, meta)
            runs.setdefault(run_id, RunSet()).add(meta)
            total += 1
    incomplete = [run_id for run_id, got in runs.items() if _judge(ctx, run_id, got)]
    log.info(
        "rebuilt %d archive(s) in %d run(s) from %d repositories (%d incomplete)",
        total,
        len(runs),
        len(repos),
        len(incomplete),
    )
    return RebuildSummary(len(repos), total, len(runs), skipped, len(incomplete))


@dataclass
class RunSet:
    """What a run set out to pull (its plan, in every archive's comment) and what of it
    the repository holds."""

    plan: set[str] = field(default_factory=set)
    archived: set[str] = field(default_factory=set)
    planned: bool = True  # every archive said what its run planned (older ones did not)

    def add(self, meta: dict[str, Any]) -> None:
        self.archived.add(meta["item"])
        if isinstance(meta.get("plan"), list):
            self.plan.update(meta["plan"])
        else:
            self.planned = False
        self.plan.difference_update(meta.get("gone") or [])  # dropped since: not missing


def _judge(ctx: Context, run_id: int, got: RunSet) -> bool:
    """Mark a rebuilt run failed when the repository lacks part of its planned set (a
    night a failure cut short, or pruned since): a rebuild never invents a success. True
    when it was incomplete."""
    missing = sorted(got.plan - got.archived) if got.planned else []
    if not missing:
        return False
    error = (
        f"rebuilt from the repository: incomplete: {len(got.archived)} of "
        f"{len(got.plan)} planned item(s) archived; missing {', '.join(missing)} "
        "(failed, interrupted or pruned)"
    )
    with ctx.catalogue.session() as s:
        run = s.get_one(Run, run_id)
        run.status, run.error = RunStatus.FAILED, error
    return True


def _metadata(entry: ArchiveEntry) -> dict[str, Any] | None:
    try:
        meta = json.loads(entry.comment)
    except ValueError:
        return None
    needed = ("backupd", "host", "source", "kind", "item", "filename", "started")
    if not isinstance(meta, dict) or any(k not in meta for k in needed):
        return None  # not ours
    return meta


def unseal(
    ctx: Context, repo: Path, entry: ArchiveEntry, meta: dict[str, Any]
) -> dict[str, Any] | None:
    """An archive's whole metadata: its comment and, for a dump, the seal stored inside
    it (sha256, size, facts: decision 0019). None when there is no seal: an archive cut
    off before it was sealed is never trusted. A tree's comment carries all of it (its
    manifest is hashed before ``borg create``), as did every comment before 0019."""
    if "sha256" in meta:
        return meta
    chunks: list[bytes] = []
    try:
        ctx.borg.extract_stream(repo, entry.name, SEAL_NAME, chunks.append)
        seal = json.loads(b"".join(chunks))
    except (BorgError, ValueError):
        return None
    if not isinstance(seal, dict) or not isinstance(seal.get("sha256"), str):
        return None
    return {**meta, **seal}


def _restore_archive(ctx: Context, repo: Path, entry: ArchiveEntry, meta: dict[str, Any]) -> int:
    cat = ctx.catalogue
    host = ctx.config.hosts.get(meta["host"])
    address = host.address if host else "unknown"
    source_id = cat.ensure_source(meta["host"], address, meta["source"], meta["kind"])
    started = datetime.fromisoformat(meta["started"])
    finished = datetime.fromisoformat(meta.get("finished", meta["started"]))
    run_id = _ensure_run(ctx, meta.get("run"), source_id, started, finished)
    record_from_comment(ctx, repo, entry, meta, run_id, source_id)
    return run_id


def record_from_comment(
    ctx: Context,
    repo: Path,
    entry: ArchiveEntry,
    meta: dict[str, Any],
    run_id: int,
    source_id: int,
) -> None:
    """The catalogue row of an archive, from its sealed comment (a rebuild, or a sweep
    adopting an archive that a killed run sealed but never recorded)."""
    facts: dict[str, Any] = dict(meta.get("facts") or {})
    borg = meta.get("borg") or {}
    if borg:
        facts["borg"] = borg
    versions = None
    if meta["filename"] == TREE_FILENAME:  # its sample and its file versions: the manifest
        entries, _digest = archived_manifest(ctx, repo, entry.name)
        manifest = Manifest(entries, 0)
        facts["sample"] = list(manifest.summary()["sample"])
        versions = version_rows(manifest)
    fields: dict[str, Any] = dict(
        run_id=run_id,
        source_id=source_id,
        repository=str(ctx.repository(meta["host"])),
        name=entry.name,
        item=meta["item"],
        filename=meta["filename"],
        created_at=datetime.fromisoformat(meta["started"]),
        nbytes=int(meta.get("nbytes", 0)),
        sha256=meta["sha256"],
        original_size=int(borg.get("original_size", 0)),
        compressed_size=int(borg.get("compressed_size", 0)),
        deduplicated_size=int(borg.get("deduplicated_size", 0)),
        facts=facts,
    )
    if versions is None:
        ctx.catalogue.add_archive(**fields)
    else:
        ctx.catalogue.add_tree_archive(versions, **fields)


def _ensure_run(
    ctx: Context, original: int | None, source_id: int, started: datetime, finished: datetime
) -> int:
    """The archive's original run (same id), widened to cover every archive it made."""
    with ctx.catalogue.session() as s:
        run = s.get(Run, original) if original is not None else None
        if run is None:
            run = Run(
                id=original,
                source_id=source_id,
                trigger="rebuilt",
                status=RunStatus.SUCCEEDED,
                started_at=started,
                finished_at=finished,
            )
            s.add(run)
            s.flush()
        run.started_at = min(run.started_at, started)
        run.finished_at = max(run.finished_at or finished, finished)
        return run.id
