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
    """Look after the droplets: their SSH host keys and the gate on each."""


@host_group.command("setup")
@click.argument("host")
@click.option("--apply", is_flag=True, help="Install it now, through --admin's login.")
@click.option(
    "--admin",
    metavar="LOGIN",
    help="With --apply: your own login on the droplet (OpenSSH, your key or agent).",
)
@click.option(
    "--identity",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="With --apply: LOGIN's key file (else your OpenSSH defaults).",
)
@click.option("--no-sudo", is_flag=True, help="With --apply: LOGIN is root; no sudo.")
@click.option(
    "--root", default="", metavar="DIR", help="With --apply: install under DIR, not / (to look)."
)
@click.pass_obj
@clean_errors
def host_setup(
    obj: dict[str, Any],
    host: str,
    apply: bool,
    admin: str | None,
    identity: Path | None,
    no_sudo: bool,
    root: str,
) -> None:
    """Print (or with --apply install) what a droplet needs so that backupd's key reads
    what the config backs up and nothing else (docs/droplet-setup.md, decision 0022).

    One POSIX shell script, run as root on the droplet and safe to run again: the gate
    (/usr/local/lib/backupd-gate/gate.py), the host's allowlist generated from this
    config (/etc/backupd-gate/HOST.json), backupd's key in the login's authorized_keys
    as restrict,command="...gate.py ..." (its earlier line replaced), the sudoers
    drop-in for trees read as root (checked with visudo -c), the database roles with
    the least rights. Set gate = true on the host, then check with `backupctl config
    check`. Run it again after a config change of that host.

    \b
    Examples:
      backupctl host setup web1 > web1-setup.sh
      backupctl host setup web1 --apply --admin alice --identity ~/.ssh/id_ed25519
    """
    from backupd.actions.host_setup import apply as apply_setup
    from backupd.actions.host_setup import setup_script

    if "/" in host:
        raise UsageError(f"name a host, not a source: {host!r}")
    ctx = context(obj)
    config_host, _ = ctx.lookup(host)
    setup = setup_script(config_host)
    if not apply:
        if admin or identity or no_sudo or root:
            raise UsageError("--admin, --identity, --no-sudo and --root go with --apply")
        click.echo(setup.script, nl=False)
        return
    if not admin:
        raise UsageError("--apply needs --admin LOGIN: your own login on the droplet")
    said = apply_setup(
        ctx, config_host, setup, admin, sudo=not no_sudo, root=root, identity=identity
    )
    click.echo(said, nl=False)


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
