"""find and ls: what the trees held, night by night, from the catalogue's index of file
versions (backupd/catalogue/versions.py): no repository is opened, no Borg lock taken."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from backupd.actions.context import Context
from backupd.catalogue import Archive
from backupd.catalogue.versions import Found
from backupd.errors import NotFoundError, UsageError

TREE_KINDS = ("directory", "volume")


@dataclass(frozen=True)
class Listing:
    """``ls``: the archive it is of, and its entries (versions) in path order."""

    archive: Archive
    entries: list[dict[str, Any]]


def find_files(
    ctx: Context,
    pattern: str,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    gone: bool = False,
) -> list[dict[str, Any]]:
    """Every version of the paths ``pattern`` matches (see VersionRecords.find_versions),
    in the trees of ``target`` (HOST or HOST/SOURCE; all when None), as JSON-ready rows."""
    pattern = pattern.lstrip("/")  # the tree's top: paths are shown relative to it
    if not pattern:
        raise UsageError("find needs a pattern: a part of a path, or a glob such as '*.png'")
    host = source = None
    if target is not None:
        h, sources = ctx.lookup(target)
        host, source = h.name, (sources[0].name if "/" in target else None)
    found = ctx.catalogue.find_versions(pattern, host, source, since, until, gone)
    return [_found_row(f) for f in found]


def _found_row(f: Found) -> dict[str, Any]:
    v = f.version
    return {
        "host": f.host,
        "source": f.source,
        "item": f.item,
        "path": v.path,
        "type": v.type,
        "size": v.size,
        "sha256": v.sha256,
        "mtime": datetime.fromtimestamp(v.mtime, UTC),
        "first_seen": f.first_seen,
        "last_seen": f.last_seen,
        "archives": f.archives,
        "gone": f.gone,
    }


def list_tree(
    ctx: Context,
    target: str,
    at: datetime | None = None,
    item: str | None = None,
    path: str | None = None,
) -> Listing:
    """The tree of HOST/SOURCE as its newest live archive at or before ``at`` held it
    (its entries under ``path``, or the entry ``path`` itself)."""
    host, sources = ctx.lookup(target)
    if "/" not in target:
        raise UsageError("ls needs HOST/SOURCE (see: backupctl status)")
    source = sources[0]
    if source.kind not in TREE_KINDS:
        raise UsageError(
            f"{host.name}/{source.name} is a {source.kind} source: ls lists the files of a "
            f"tree ({', '.join(TREE_KINDS)}); see backupctl archives"
        )
    archive = _archive_at(ctx, host.name, source.name, at, item)
    versions = ctx.catalogue.tree_at(archive.source_id, archive.item, archive)
    if not versions:
        raise UsageError(
            f"{archive.name} has no file index (made before backupd kept one): "
            "backupctl restore --to DIR, or see its manifest"
        )
    wanted = (path or "").strip("/")
    while wanted.startswith("./"):
        wanted = wanted[2:].lstrip("/")
    wanted = "" if wanted == "." else wanted
    entries = [
        {
            "path": v.path,
            "type": v.type,
            "mode": f"{v.mode:04o}",
            "uid": v.uid,
            "gid": v.gid,
            "size": v.size,
            "mtime": datetime.fromtimestamp(v.mtime, UTC),
            "sha256": v.sha256,
            "target": v.target,
        }
        for v in versions
        if not wanted or v.path == wanted or v.path.startswith(wanted + "/")
    ]
    if wanted and not entries:
        raise NotFoundError(f"{wanted!r} is not in {archive.name} (see: backupctl find)")
    return Listing(archive, entries)


def _archive_at(
    ctx: Context, host: str, source: str, at: datetime | None, item: str | None
) -> Archive:
    live = [a for a in ctx.catalogue.archives(host, source) if a.pruned_at is None]
    items = sorted({a.item for a in live})
    if item is None and len(items) > 1:
        raise UsageError(f"{host}/{source} holds several trees ({', '.join(items)}): --item")
    if item is not None and item not in items:
        raise UsageError(f"{host}/{source} has no tree {item!r} (it has: {', '.join(items)})")
    chosen = newest_at([a for a in live if item is None or a.item == item], at)
    if chosen is None:
        when = f" at or before {at.isoformat(timespec='seconds')}" if at else ""
        raise NotFoundError(f"{host}/{source}: no live archive{when} (see: backupctl archives)")
    return chosen


def newest_at(newest_first: list[Archive], when: datetime | None) -> Archive | None:
    """The newest of ``newest_first`` made at or before ``when`` (None: the newest)."""
    return next((a for a in newest_first if when is None or a.created_at <= when), None)
