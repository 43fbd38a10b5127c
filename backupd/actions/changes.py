"""Change alerts (issue 16, decision 0024): a night that looks like loss rather than change.

After a night's archives are recorded, each is set against its item's archive before it:

- a table that lost at least ``rows_lost`` of its rows (and had ``min_rows``), or was
  dropped with them;
- a tree whose files went: at least ``files_lost`` of them gone, not counting files whose
  content is still in the tree (a move, a rename); or that shrank by ``bytes_lost`` of its
  bytes (files truncated); or whose files at least ``rewritten`` of them got new content
  in one night (encrypted in place). Trees under ``min_files`` files are not judged.

Such a night raises a ``change_loss`` alert at once and a flag that holds the item's
archive before it: prune keeps that archive until ``backupctl alerts ack`` (jobs/prune.py),
so the good night is not rotated out while nobody has looked.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Mapping

from backupd.actions.context import Context
from backupd.catalogue.changes import LOSS, FlagView, NightPair, TreeChange
from backupd.catalogue.restores import operator_name
from backupd.config.load import ChangesConfig
from backupd.config.units import human_bytes
from backupd.errors import NotFoundError

log = logging.getLogger(__name__)

HashLookup = Callable[[list[str]], set[str]]  # contents -> those the tree still holds


def judge_night(ctx: Context, run_id: int) -> list[str]:
    """Judge each archive run ``run_id`` made; record a flag and an alert for each that
    looks like loss. Returns each one's line, "change alert ID: ITEM looks like loss: ..."."""
    flags = []
    for pair in ctx.catalogue.night_pairs(run_id):
        if pair.before is None:
            continue  # the first night has nothing to lose
        policy = ctx.config.changes_for(ctx.config.source(pair.host, pair.source))
        if not policy.enabled:
            continue
        losses = _losses(ctx, pair, policy)
        if losses:
            flag_id = _flag(ctx, pair, losses, run_id)
            flags.append(
                f"change alert {flag_id}: {pair.archive.item} looks like loss: "
                f"{'; '.join(losses)} (kept: {pair.before.name}; backupctl alerts ack {flag_id})"
            )
    return flags


def _losses(ctx: Context, pair: NightPair, policy: ChangesConfig) -> list[str]:
    assert pair.before is not None
    before, after = pair.before.facts or {}, pair.archive.facts or {}
    found = table_losses(before.get("rows"), after.get("rows"), policy)
    if "files" in after and "files" in before:  # a tree: its index tells what went
        change = ctx.catalogue.tree_change(pair.before, pair.archive)
        found += tree_losses(
            change, policy, lambda hashes: ctx.catalogue.hashes_held(pair.archive, hashes)
        )
    return found


def table_losses(
    before: Mapping[str, int] | None, after: Mapping[str, int] | None, policy: ChangesConfig
) -> list[str]:
    """One phrase per table that lost at least ``policy.rows_lost`` of its rows (dropped:
    all of them, unless a table new that night holds about as many: renamed, or copied by
    a migration; each new table stands for one dropped table). Tables under ``min_rows``
    and ``ignore_tables`` are not judged."""
    if not before or after is None:
        return []  # a night without row counts (an older archive) is not judged
    new = sorted(n for table, n in after.items() if table not in before)
    found = []
    for table, had in sorted(before.items()):
        if had < policy.min_rows or any(
            fnmatch.fnmatchcase(table, glob) for glob in policy.ignore_tables
        ):
            continue
        has = after.get(table)
        if has is None:
            twin = min(new, key=lambda n: abs(had - n), default=None)
            if twin is not None and abs(had - twin) / had < policy.rows_lost:
                new.remove(twin)  # renamed: its rows are in the new table
            else:
                found.append(f"table {table} dropped (it had {had} rows)")
        elif (had - has) / had >= policy.rows_lost:
            found.append(
                f"table {table} lost {_share(had - has, had)} of its rows ({had} -> {has})"
            )
    return found


def tree_losses(change: TreeChange, policy: ChangesConfig, still_held: HashLookup) -> list[str]:
    """Phrases for a tree night that looks like loss. ``still_held`` answers which removed
    contents the tree still holds elsewhere (asked only when removals alone would alarm)."""
    before = change.files_before
    if before < policy.min_files:
        return []
    found = []
    gone = [sha for _, sha in change.removed if sha not in change.added_hashes]
    if len(gone) / before >= policy.files_lost:
        held = still_held(sorted({sha for sha in gone if sha}))
        gone = [sha for sha in gone if sha not in held]
    if len(gone) / before >= policy.files_lost:
        found.append(
            f"{_share(len(gone), before)} of its files gone "
            f"({len(gone)} of {before}; {change.files_after} files now)"
        )
    shrunk = change.bytes_before - change.bytes_after
    if change.bytes_before and shrunk / change.bytes_before >= policy.bytes_lost:
        found.append(
            f"{_share(shrunk, change.bytes_before)} of its bytes gone "
            f"({human_bytes(change.bytes_before)} -> {human_bytes(change.bytes_after)})"
        )
    if change.rewritten / before >= policy.rewritten:
        found.append(
            f"{_share(change.rewritten, before)} of its files rewritten at once "
            f"({change.rewritten} of {before})"
        )
    return found


def _flag(ctx: Context, pair: NightPair, losses: list[str], run_id: int) -> int:
    assert pair.before is not None
    label = f"{pair.host}/{pair.source}"
    message = (
        f"{label}: {pair.archive.item}{LOSS}{'; '.join(losses)}; "
        f"prune keeps {pair.before.name} until acknowledged"
    )
    flag_id = ctx.catalogue.add_change_flag(pair, message, run_id)
    log.warning("%s (change alert %d: backupctl alerts ack %d)", message, flag_id, flag_id)
    return flag_id


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%"


def acknowledge(ctx: Context, flag_id: int, note: str | None) -> tuple[FlagView, bool]:
    """Acknowledge change flag ``flag_id``: prune may then remove the archive it held, by
    its rules. Returns the flag and whether this call acknowledged it (False: it already
    was). NotFoundError for no such flag."""
    found = ctx.catalogue.change_flags(flag_id=flag_id)
    if not found:
        known = [v.flag.id for v in ctx.catalogue.change_flags(open_only=True)]
        raise NotFoundError(
            f"no change alert {flag_id}"
            + (f" (unacknowledged: {', '.join(map(str, known))})" if known else " (none open)")
        )
    done = ctx.catalogue.ack_change_flag(flag_id, operator_name(), note)
    if done:
        log.info("change alert %d acknowledged: %s", flag_id, found[0].flag.message)
    return found[0], done
