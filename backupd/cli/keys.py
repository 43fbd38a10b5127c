"""backupctl commands for the keys backupd depends on: droplet host keys, Borg repository
keys."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from backupd.actions.keys import export_keys
from backupd.actions.trust import Offer, inspect_host, record, same_fingerprint
from backupd.cli.common import clean_errors, context, emit_json
from backupd.errors import HostKeyError, RefusedError, UsageError


@click.group("host")
def host_group() -> None:
    """Look after the droplets' SSH host keys."""


@host_group.command("trust")
@click.argument("host")
@click.option("--yes", is_flag=True, help="Trust the offered key without asking.")
@click.option(
    "--fingerprint",
    metavar="SHA256:...",
    help="Trust the offered key only if it has this fingerprint (no prompt).",
)
@click.pass_obj
@clean_errors
def host_trust(obj: dict[str, Any], host: str, yes: bool, fingerprint: str | None) -> None:
    """Pin the SSH host key a droplet offers, after you compared its fingerprint.

    Connects without logging in, shows the key type and SHA256 fingerprint, and records
    the key in <state_dir>/known_hosts once confirmed: interactively, with --fingerprint
    (only if it matches), or with --yes. Compare it first with the droplet's own,
    read over a channel you trust (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`
    on its console). A key pinned in the config (host_key, known_hosts) is left as it is:
    a different one is refused. A changed key is shown next to the old one, and replaced
    only when confirmed.

    \b
    Examples:
      backupctl host trust web1
      backupctl host trust web1 --fingerprint SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8
    """
    if "/" in host:
        raise UsageError(f"name a host, not a source: {host!r}")
    ctx = context(obj)
    config_host, _ = ctx.lookup(host)
    offer = inspect_host(ctx, config_host)
    if fingerprint is not None and not same_fingerprint(fingerprint, offer):
        raise HostKeyError(
            f"{offer.where}: offers {offer.key_type} {offer.fingerprint}, not "
            f"{fingerprint.strip()}; not trusted, nothing changed"
        )
    if offer.state == "trusted":
        click.echo(
            f"{offer.where}: {offer.key_type} {offer.fingerprint} is already trusted "
            f"(pinned in {offer.pinned_in}); nothing changed"
        )
        return
    _show(offer)
    if fingerprint is None and not yes:
        _confirm(offer)
    pin = record(ctx, offer)
    verb = "replaced the pinned key with" if offer.state == "changed" else "pinned"
    click.echo(f"{offer.host}: {verb} {offer.key_type} {offer.fingerprint} in {pin}")


def _show(offer: Offer) -> None:
    if offer.state == "changed":
        red = sys.stderr.isatty()
        click.echo(
            click.style(f"HOST KEY CHANGED for {offer.where}", fg="red", bold=True)
            if red
            else f"HOST KEY CHANGED for {offer.where}",
            err=True,
        )
        for old in offer.previous:
            click.echo(f"  pinned:  {old}  (in {offer.pinned_in})", err=True)
        click.echo(f"  offered: {offer.key_type} {offer.fingerprint}", err=True)
        click.echo(
            "If the droplet was not rebuilt, someone may be in the middle: replace the "
            "key only after checking the new one out of band.",
            err=True,
        )
    else:
        click.echo(f"{offer.where} offers a host key that is not pinned yet:")
        click.echo(f"  {offer.key_type} {offer.fingerprint}")
        click.echo(
            "Compare it with the droplet's own (on its console: "
            f"ssh-keygen -lf /etc/ssh/ssh_host_{_short(offer.key_type)}_key.pub)."
        )


def _short(key_type: str) -> str:
    """ssh-ed25519 -> ed25519, ecdsa-sha2-nistp256 -> ecdsa: the host key file's name."""
    return key_type.removeprefix("ssh-").split("-")[0]


def _confirm(offer: Offer) -> None:
    if not sys.stdin.isatty():  # a prompt nobody can answer would hang a script
        raise RefusedError(
            f"{offer.host}: no terminal to confirm the key on; nothing changed. Check the "
            f"fingerprint out of band, then run: backupctl host trust {offer.host} "
            f"--fingerprint {offer.fingerprint}"
        )
    question = ("Replace the pinned key" if offer.state == "changed" else "Trust this key") + (
        f" for {offer.host}?"
    )
    if not click.confirm(question, default=False):
        raise RefusedError(f"{offer.host}: not trusted; nothing changed")


@click.group("key")
def key_group() -> None:
    """Look after the Borg repository keys."""


@key_group.command("export")
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite key files already in DIR.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@clean_errors
def key_export(obj: dict[str, Any], directory: Path, force: bool, as_json: bool) -> None:
    """Export the key of every host's repository into DIR, to store away from this host.

    Writes DIR/HOST.key (for `borg key import`) and DIR/HOST.key.txt (the paper version,
    to type back in), 0600; DIR is created 0700. Without the key a damaged repository
    cannot be read even with the passphrase: keep the files with the passphrase, off the
    backup host. Existing files are not overwritten without --force. Each export is
    recorded; `backupctl status` warns until a repository's key has been exported.

    \b
    Examples:
      backupctl key export /media/usb/backupd-keys
      backupctl key export /root/keys --force --json
    """
    done = export_keys(context(obj), directory, force=force)
    if as_json:
        emit_json(exports=done)
    else:
        for d in done:
            click.echo(
                f"{d.host}: {d.repository} -> {d.key_file}, {d.paper_file} "
                f"(sha256 {d.key_sha256[:12]})"
            )
    click.echo(
        "Store these files away from the backup host, together with the passphrase: "
        "without both, the backups cannot be read.",
        err=as_json,
    )
