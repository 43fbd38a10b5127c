"""diff: what changed in a source between two restore points, from the catalogue alone:
a tree's files (the index of file versions) and a database's tables (the row counts
recorded with each archive). No repository is opened."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from backupd.actions.context import Context
from backupd.actions.find import newest_at
from backupd.catalogue import Archive
from backupd.catalogue.models import FileVersion
from backupd.catalogue.versions import version_key
from backupd.errors import NotFoundError, UsageError


def diff_source(
    ctx: Context,
    target: str,
    since: datetime | None = None,
    until: datetime | None = None,
    item: str | None = None,
) -> list[dict[str, Any]]:
    """Per item of HOST/SOURCE: its newest live archive at or before ``until`` (or the
    newest) against its newest at or before ``since`` (or the one before): files added,
    removed and changed (a tree), tables added, removed and with other row counts (a
    database). JSON-ready rows; UsageError when there are not two points to compare."""
    host, sources = ctx.lookup(target)
    if "/" not in target:
        raise UsageError("diff needs HOST/SOURCE (see: backupctl status)")
    if since is not None and until is not None and since > until:
        raise UsageError("--from is after --to: give the earlier time to --from")
    source = sources[0]
    live = [a for a in ctx.catalogue.archives(host.name, source.name) if a.pruned_at is None]
    items = sorted({a.item for a in live if item is None or a.item == item})
    if not items:
        raise UsageError(f"{host.name}/{source.name}: no live archive to compare")
    out = []
    for name in items:
        newest_first = [a for a in live if a.item == name]
        after = newest_at(newest_first, until)
        before = newest_at(newest_first, since) if since else _previous(newest_first, after)
        if after is None or before is None:
            continue
        if before.id == after.id:
            raise UsageError(
                f"{host.name}/{source.name} {name}: --from and --to pick the same backup "
                f"({after.name}): nothing to compare"
            )
        row: dict[str, Any] = {
            "host": host.name,
            "source": source.name,
            "item": name,
            "from": {"archive": before.name, "created_at": before.created_at},
            "to": {"archive": after.name, "created_at": after.created_at},
            "files": _files(ctx, before, after),
            "tables": _tables(before, after),
        }
        out.append(row)
    if not out:
        when = " at or before --from" if since else ""
        raise NotFoundError(
            f"{host.name}/{source.name}: no earlier live backup{when} to compare with "
            "(see: backupctl archives)"
        )
    return out


def _previous(newest_first: list[Archive], after: Archive | None) -> Archive | None:
    if after is None:
        return None
    older = [a for a in newest_first if a.created_at < after.created_at]
    return older[0] if older else None


def _files(ctx: Context, before: Archive, after: Archive) -> dict[str, Any] | None:
    """Added, removed, changed files (directories only added or removed: their times
    follow their contents); None when the archives are not in the index."""
    old = {v.path: v for v in ctx.catalogue.tree_at(before.source_id, before.item, before)}
    new = {v.path: v for v in ctx.catalogue.tree_at(after.source_id, after.item, after)}
    if not old or not new:
        return None
    changed = [
        {"path": p, "type": v.type, "size_before": old[p].size, "size_after": v.size}
        for p, v in sorted(new.items())
        if p in old and version_key(old[p]) != version_key(v) and not v.type == "d" == old[p].type
    ]
    return {
        "added": [_entry(v) for p, v in sorted(new.items()) if p not in old],
        "removed": [_entry(v) for p, v in sorted(old.items()) if p not in new],
        "changed": changed,
    }


def _entry(v: FileVersion) -> dict[str, Any]:
    return {"path": v.path, "type": v.type, "size": v.size}


def _tables(before: Archive, after: Archive) -> dict[str, Any] | None:
    """Tables added, removed and with other row counts; None when no counts were recorded."""
    old: dict[str, int] = dict((before.facts or {}).get("rows") or {})
    new: dict[str, int] = dict((after.facts or {}).get("rows") or {})
    if not old and not new:
        return None
    return {
        "added": [{"table": t, "rows": n} for t, n in sorted(new.items()) if t not in old],
        "removed": [{"table": t, "rows": n} for t, n in sorted(old.items()) if t not in new],
        "changed": [
            {"table": t, "rows_before": old[t], "rows_after": n}
            for t, n in sorted(new.items())
            if t in old and old[t] != n
        ],
    }
