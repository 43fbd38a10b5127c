"""backupctl alerts: what backupd wanted a person to hear, and whether it was mailed."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

import click

from backupd.actions.alerts import dispatch, watch
from backupd.actions.changes import acknowledge
from backupd.actions.notify import deliveries, dispatch_chat
from backupd.catalogue.alerts import SUPPRESSED
from backupd.catalogue.changes import FlagView, change_of
from backupd.cli.common import clean_errors, context, emit_json, short_time, table
from backupd.errors import DeliveryError


@click.group(invoke_without_command=True)
@click.option(
    "--send",
    is_flag=True,
    help="Look for stale sources and disk use, then mail (and send to [notify]'s chat "
    "services) every unsent alert now (the daemon does this every minute).",
)
@click.option(
    "--limit", default=30, show_default=True, type=click.IntRange(min=1), help="Newest N alerts."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@clean_errors
def alerts(click_ctx: click.Context, send: bool, limit: int, as_json: bool) -> None:
    """Alerts: failed backups and drills, stale sources, a filling store, changed host
    keys, restarts after a crash. Each is mailed at once ([mail]) and sent to the chat
    services of [notify]; the same alert at most once per alert_interval (later ones are
    folded into it). A service that is down gets its alerts when it is back, once.

    \b
    Examples:
      backupctl alerts
      backupctl alerts --send
      backupctl alerts --json | jq '.alerts[] | select(.mailed == null)'
      backupctl alerts ack 3 --note "course images deleted on purpose"

    A night that looked like loss rather than change (change_loss) is listed on top
    until acknowledged: prune keeps the archive before it until then.
    """
    if click_ctx.invoked_subcommand is not None:
        return
    ctx = context(click_ctx.obj)
    failures: list[str] = []
    if send:
        recorded = watch(ctx)
        mailed = dispatch(ctx, failures=failures)
        chats = dispatch_chat(ctx, failures=failures)
        click.echo(
            f"{len(recorded)} new stale-source or disk alert(s); {mailed} mail(s) sent"
            + ("" if ctx.config.mail else " (no [mail] configured)")
            + (f"; {chats} chat notification(s) sent" if ctx.config.notify else ""),
            err=True,
        )
    newest = list(reversed(ctx.catalogue.alerts()[-limit:]))
    chat_rows = deliveries(ctx, newest)
    first_look = ctx.catalogue.last_look() is None  # no service known yet: all "not yet"
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
            "change": change_of(a),
            "notified": [asdict(d) for d in chat_rows.get(a.id, [])],
        }
        for a in newest
    ]
    changes = [_change_row(v) for v in ctx.catalogue.change_flags(open_only=True)]
    if as_json:
        emit_json(alerts=rows, changes=changes)
        _failed(failures)
        return
    if changes:
        click.echo("Unacknowledged change alerts (prune keeps the archive before each):")
        table(
            ("ID", "RAISED", "WHERE", "HELD ARCHIVE", "WHAT"),
            [
                (
                    str(c["id"]),
                    short_time(c["at"]),
                    f"{c['host']}/{c['source']}",
                    c["held_archive"],
                    c["what"][:80],
                )
                for c in changes
            ],
        )
        click.echo("Acknowledge each with: backupctl alerts ack ID\n")
    chat = ctx.config.notify is not None
    table(
        ("AT", "KIND", "WHERE", "MAILED", *(("CHAT",) if chat else ()), "MESSAGE"),
        [
            (
                short_time(r["at"]),
                r["kind"],
                "/".join(p for p in (r["host"], r["source"]) if p) or "-",
                _said(r["folded"], r["mailed"], r["attempts"]) if ctx.config.mail else "-",
                *((_chat_said(r["notified"], first_look),) if chat else ()),
                str(r["message"])[:90],
            )
            for r in rows
        ],
    )
    _failed(failures)


def _failed(failures: list[str]) -> None:
    """After the listing: a failed delivery (its alerts stay queued) is exit 15; what
    failed was logged as it happened (above)."""
    if failures:
        raise DeliveryError(
            f"{len(failures)} delivery problem(s), said above; the alerts are kept for the next "
            "look"
        )


def _said(folded: bool, at: datetime | None, attempts: int) -> str:
    if folded:
        return "folded"
    if at is not None:
        return short_time(at)
    if attempts:
        return f"no ({attempts} {'try' if attempts == 1 else 'tries'})"
    return "not yet"


def _chat_said(notified: list[dict[str, Any]], first_look: bool) -> str:
    """One word for every service of the newest look: the worst of them ("no (3 tries)",
    "sent 1/2", "sent 2/2"); "-" for an alert no service is to get; "not yet" for all
    before any look."""
    if not notified:
        return "not yet" if first_look else "-"
    failing = [n["attempts"] for n in notified if n["sent"] is None and n["attempts"]]
    if failing:
        return _said(False, None, max(failing))
    sent = [n for n in notified if n["sent"] is not None]
    if not sent:
        return "not yet"
    if all(n["folded"] for n in notified):
        return "folded"
    return f"sent {len(sent)}/{len(notified)}" if len(notified) > 1 else "sent"


def _change_row(view: FlagView) -> dict[str, Any]:
    return {
        "id": view.flag.id,
        "at": view.flag.created_at,
        "host": view.host,
        "source": view.source,
        "item": view.flag.item,
        "night": view.night,
        "held_archive": view.held.name,
        "held_archive_at": view.held.created_at,
        "message": view.flag.message,
        "what": view.what,
    }


@alerts.command("ack")
@click.argument("alert_id", metavar="ID", type=int)
@click.option("--note", help="Why (kept with the acknowledgement).")
@click.pass_obj
@clean_errors
def ack(obj: dict[str, Any], alert_id: int, note: str | None) -> None:
    """Acknowledge change alert ID (the ID column of `backupctl alerts`, the number in the
    alert's mail): a person looked at that night. prune may then remove the archive it
    held, by its rules (the next prune, not now).

    \b
    Examples:
      backupctl alerts ack 3
      backupctl alerts ack 3 --note "old course images removed on purpose"
    """
    view, done = acknowledge(context(obj), alert_id, note)
    where = f"{view.host}/{view.source} {view.flag.item}"
    if not done:
        click.echo(
            f"change alert {alert_id} ({where}) was already acknowledged"
            f" by {view.flag.acked_by} at {short_time(view.flag.acked_at)}"
        )
        return
    click.echo(
        f"acknowledged change alert {alert_id} ({where}): prune may now remove "
        f"{view.held.name} by its rules"
    )
