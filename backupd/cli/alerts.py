"""backupctl alerts: what backupd wanted a person to hear, and whether it was mailed."""

from __future__ import annotations

from typing import Any

import click

from backupd.actions.alerts import dispatch, watch
from backupd.catalogue.alerts import SUPPRESSED
from backupd.cli.common import clean_errors, context, emit_json, short_time, table


@click.command()
@click.option(
    "--send",
    is_flag=True,
    help="Look for stale sources and disk use, then mail "
    "every unsent alert now (the daemon does this every minute).",
)
@click.option("--limit", default=30, show_default=True, help="Newest N alerts.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@clean_errors
def alerts(obj: dict[str, Any], send: bool, limit: int, as_json: bool) -> None:
    """Alerts: failed backups and drills, stale sources, a filling store, changed host
    keys, restarts after a crash. Each is mailed at once ([mail]); the same alert at most
    once per alert_interval (later ones are folded into it).

    \b
    Examples:
      backupctl alerts
      backupctl alerts --send
      backupctl alerts --json | jq '.alerts[] | select(.mailed == null)'
    """
    ctx = context(obj)
    if send:
        recorded = watch(ctx)
        mailed = dispatch(ctx)
        click.echo(
            f"{len(recorded)} new alert(s) found; {mailed} mail(s) sent"
            + ("" if ctx.config.mail else " (no [mail] configured)"),
            err=True,
        )
    rows: list[dict[str, Any]] = [
        {
            "id": a.id,
            "at": a.created_at,
            "kind": a.kind,
            "host": a.host,
            "source": a.source,
            "message": a.message,
            "mailed": a.sent_at,
            "folded": bool(a.last_error and a.last_error.startswith(SUPPRESSED)),
            "attempts": a.attempts,
            "last_error": a.last_error,
        }
        for a in reversed(ctx.catalogue.alerts()[-limit:])
    ]
    if as_json:
        emit_json(alerts=rows)
        return
    table(
        ("AT", "KIND", "WHERE", "MAILED", "MESSAGE"),
        [
            (
                short_time(r["at"]),
                r["kind"],
                "/".join(p for p in (r["host"], r["source"]) if p) or "-",
                "folded"
                if r["folded"]
                else short_time(r["mailed"])
                if r["mailed"]
                else f"no ({r['attempts']} tries)"
                if r["attempts"]
                else "not yet",
                str(r["message"])[:90],
            )
            for r in rows
        ],
    )
