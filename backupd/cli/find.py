"""backupctl find, ls and diff: which nights held a file, a tree as it was, what changed
between two backups; from the catalogue alone (no repository opened, no lock taken)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from backupd.actions.diff import diff_source
from backupd.actions.find import find_files, list_tree
from backupd.cli.common import (
    clean_errors,
    context,
    emit_json,
    parse_at,
    parse_from,
    short_time,
    table,
)
from backupd.config.units import human_bytes


@click.command()
@click.argument("pattern")
@click.argument("target", metavar="[HOST[/SOURCE]]", required=False)
@click.option("--since", metavar="TIME", callback=parse_from, help="Held at or after TIME (UTC).")
@click.option("--until", metavar="TIME", callback=parse_at, help="Held at or before TIME (UTC).")
@click.option("--deleted", is_flag=True, help="Only paths the newest backup no longer holds.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@clean_errors
def find(
    obj: dict[str, Any],
    pattern: str,
    target: str | None,
    since: datetime | None,
    until: datetime | None,
    deleted: bool,
    as_json: bool,
) -> None:
    """Every version of the files whose path matches PATTERN, with the nights it was backed
    up: a glob (with a / it matches the whole path, else the file's name: '*.png'), or
    without * ? [ any part of the path. Names are shown as they are displayed everywhere
    (a byte that is not UTF-8 as \\xNN). GONE: the newest backup no longer holds that path.

    \b
    Examples:
      backupctl find logo.png
      backupctl find 'courses/*/images/*' web1/uploads --since "2026-11-01"
      backupctl find '*.pdf' web1 --deleted --json
    """
    rows = find_files(context(obj), pattern, target, since, until, deleted)
    if as_json:
        emit_json(versions=rows)
        return
    table(
        ("SOURCE", "PATH", "SIZE", "SHA256", "FIRST", "LAST", "NIGHTS", "NOW"),
        [
            (
                f"{r['host']}/{r['source']}",
                r["path"] + ("/" if r["type"] == "d" else ""),
                human_bytes(r["size"]) if r["type"] == "f" else r["type"],
                (r["sha256"] or "-")[:12],
                short_time(r["first_seen"]),
                short_time(r["last_seen"]),
                str(r["archives"]),
                "GONE" if r["gone"] else "",
            )
            for r in rows
        ],
    )


@click.command(name="ls")
@click.argument("target", metavar="HOST/SOURCE")
@click.argument("path", required=False)
@click.option(
    "--at",
    "at",
    metavar="TIME",
    callback=parse_at,
    help='The newest backup at or before TIME, e.g. "2026-11-20 03:00" (UTC).',
)
@click.option("--item", metavar="ITEM", help="The tree, when the source backs up several.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@clean_errors
def ls(
    obj: dict[str, Any],
    target: str,
    path: str | None,
    at: datetime | None,
    item: str | None,
    as_json: bool,
) -> None:
    """The tree of a directory or volume source as a backup held it (the newest, or the
    newest at or before --at), under PATH when given.

    \b
    Examples:
      backupctl ls web1/uploads
      backupctl ls web1/uploads courses/42 --at "2026-11-27 03:00"
    """
    listing = list_tree(context(obj), target, at, item, path)
    if as_json:
        emit_json(archive=listing.archive.name, entries=listing.entries)
        return
    click.echo(f"{listing.archive.name} ({short_time(listing.archive.created_at)})")
    table(
        ("MODE", "OWNER", "SIZE", "MODIFIED", "PATH"),
        [
            (
                e["type"] + e["mode"],
                f"{e['uid']}:{e['gid']}",
                human_bytes(e["size"]) if e["type"] == "f" else "-",
                short_time(e["mtime"]),
                e["path"] + (f" -> {e['target']}" if e["target"] else ""),
            )
            for e in listing.entries
        ],
    )


@click.command()
@click.argument("target", metavar="HOST/SOURCE")
@click.option(
    "--from", "since", metavar="TIME", callback=parse_at, help="The backup at or before TIME."
)
@click.option(
    "--to", "until", metavar="TIME", callback=parse_at, help="The backup at or before TIME."
)
@click.option("--item", metavar="ITEM", help="Only this database or tree of the source.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@clean_errors
def diff(
    obj: dict[str, Any],
    target: str,
    since: datetime | None,
    until: datetime | None,
    item: str | None,
    as_json: bool,
) -> None:
    """What changed between two backups of a source: a tree's files added (+), removed
    (-) and changed (~, with sizes), a database's tables added, removed and with other
    row counts. By default the newest backup against the one before; --to and --from pick
    the backups at or before those times. From the catalogue: no repository is opened.

    \b
    Examples:
      backupctl diff web1/uploads
      backupctl diff web1/maindb --item shop --from "2026-11-20" --to "2026-11-27"
    """
    rows = diff_source(context(obj), target, since, until, item)
    if as_json:
        emit_json(diffs=rows)
        return
    for r in rows:
        click.echo(
            f"{r['host']}/{r['source']} {r['item']}: {short_time(r['from']['created_at'])}"
            f" -> {short_time(r['to']['created_at'])}"
        )
        for line in _diff_lines(r):
            click.echo(f"  {line}")


def _diff_lines(r: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    files, tables = r["files"], r["tables"]
    if files is not None:
        lines += [f"+ {e['path']} ({_size(e)})" for e in files["added"]]
        lines += [f"- {e['path']} ({_size(e)})" for e in files["removed"]]
        lines += [
            f"~ {e['path']} ({human_bytes(e['size_before'])} -> {human_bytes(e['size_after'])})"
            for e in files["changed"]
        ]
    if tables is not None:
        lines += [f"+ table {t['table']} ({t['rows']} rows)" for t in tables["added"]]
        lines += [f"- table {t['table']} ({t['rows']} rows)" for t in tables["removed"]]
        lines += [
            f"~ table {t['table']}: {t['rows_before']} -> {t['rows_after']} rows"
            f" ({_share(t['rows_before'], t['rows_after'])})"
            for t in tables["changed"]
        ]
    return lines or ["no change"]


def _size(e: dict[str, Any]) -> str:
    return human_bytes(e["size"]) if e["type"] == "f" else {"d": "dir", "l": "link"}[e["type"]]


def _share(before: int, after: int) -> str:
    return f"{(after - before) / before:+.1%}" if before else "new rows"
