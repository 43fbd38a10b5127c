"""config check: is this configuration going to work tonight? One verdict per check.

The config is valid (or loading it already failed with every problem listed); then each
host is reached (pinned host key, login), each source is planned on its droplet (which
exercises its access, e.g. listing databases) and its tools looked up there; the Borg
passphrase must open every existing repository; the store must have room.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from backupd.actions.context import Context, connect
from backupd.borg.space import StoreDisk
from backupd.catalogue.models import utcnow
from backupd.config.credentials import read_passphrase
from backupd.config.cron import cron_trigger
from backupd.config.load import HostConfig, SourceConfig
from backupd.config.units import human_bytes
from backupd.errors import BackupdError
from backupd.notify.chat import fingerprint_key, services
from backupd.remote.droplet_gate import EXIT_REFUSED, HELLO
from backupd.remote.rclone import open_remote
from jobs.base import DumpStream, TreeTransfer
from jobs.registry import registry

if TYPE_CHECKING:
    from backupd.remote.ssh import Connection

LOOKUP_TIMEOUT = 60.0
MIN_FREE_FRACTION = 0.10
PROBE = ("true",)  # harmless, and no config's request: a gate refuses it
UNGATED = "backupd's key may run any command on the droplet (docs/droplet-setup.md)"
STALE = "the droplet's allowlist is not the one this config needs"


@dataclass(frozen=True)
class Finding:
    """One line of ``backupctl config check``: something looked at, whether it is fine."""

    subject: str  # "web1", "web1/maindb", "store", "passphrase"
    ok: bool
    detail: str
    warning: bool = False  # passed, but someone should look


def check_everything(ctx: Context) -> Iterator[Finding]:
    yield Finding(
        "config",
        True,
        f"{ctx.config.path}: valid, {len(ctx.config.hosts)} host(s), "
        f"{len(ctx.config.all_sources())} source(s)",
    )
    yield from check_store(ctx)
    try:
        ctx.borg  # noqa: B018  # finds the borg program (MissingProgramError)
    except BackupdError as e:
        yield Finding("borg", False, str(e))
    else:
        yield from check_passphrase(ctx)
    yield from check_notify(ctx)
    yield from check_offsite(ctx)
    for host in ctx.config.hosts.values():
        yield from check_host(ctx, host)


def check_notify(ctx: Context) -> Iterator[Finding]:
    """[notify]: its URLs readable (urls_from) and known to Apprise, and the file holding
    their tokens private. Nothing is sent: an alert does that (docs/monitoring.md)."""
    cfg = ctx.config.notify
    if cfg is None:
        return
    targets = services(cfg, fingerprint_key(ctx.private_dir(ctx.config.state_dir)))
    for problem in targets.problems:
        yield Finding("notify", False, problem)
    labels = ", ".join(s.label for s in targets.found)
    if targets.found:
        yield Finding("notify", True, f"{len(targets.found)} service(s): {labels}")
    path = ctx.config.path
    if cfg.urls and path.stat().st_mode & 0o077:
        detail = f"{path} holds the [notify] URLs' tokens and others may read it: chmod 600 {path}"
        yield Finding("notify", True, detail, warning=True)


def check_offsite(ctx: Context) -> Iterator[Finding]:
    """[offsite]: each remote's settings readable and the remote answering a listing of
    its path (nothing is written)."""
    cfg = ctx.config.offsite
    if cfg is None:
        return
    if cfg.window:
        yield _window(cfg.window, cfg.time_left, ctx.config.maintenance.offsite)
    work = ctx.private_dir(ctx.config.state_dir) / "offsite"
    recorded = [h for h in ctx.catalogue.last_good_maintenance("offsite") if h is not None]
    for name, remote_cfg in cfg.remotes.items():
        subject = f"offsite {name}"
        try:
            with open_remote(name, remote_cfg, work) as remote:
                hosts = remote.listing(quick=True)
        except BackupdError as e:
            yield Finding(subject, False, str(e))
            continue
        if hosts is None:
            yield Finding(subject, True, _missing(remote_cfg.path), warning=True)
            continue
        copied = sorted(set(hosts) & set(ctx.config.hosts))
        said = f"copies of {', '.join(copied)}" if copied else "no copy yet"
        lost = sorted(set(recorded) & set(ctx.config.hosts) - set(copied))
        if lost:  # a typo in a prefix lists fine, and empty
            said += (
                f"; none of {', '.join(lost)}, which the catalogue says was copied (a typo "
                "in path? a remote added since: after the next copy)"
            )
        yield Finding(subject, True, f"{remote_cfg.path} answers: {said}", warning=bool(lost))


def _missing(path: str) -> str:
    """A path (an S3 bucket) that does not exist: rclone would make it at the first copy,
    so a typo copies every night into a bucket nobody looks at (and one made that way has
    no object lock)."""
    return (
        f"{path} does not exist on the remote: check `path` for a typo; the first copy "
        "would create it (a bucket meant to have object lock must be made beforehand)"
    )


def _window(window: str, left: Callable[[datetime], float | None], cron: str) -> Finding:
    """Does [maintenance] offsite start copies inside [offsite] window? Its firings over
    the next week are looked at (not the next one only: "*/30 * * * *" fires inside it at
    night); none inside, and each scheduled copy would copy nothing."""
    trigger, now = cron_trigger(cron), utcnow()
    fire, inside, until = trigger.get_next_fire_time(None, now), None, now + timedelta(days=7)
    while fire is not None and fire < until and inside is None:
        inside = fire if left(fire) else None
        fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
    if inside is None:
        return Finding(
            "offsite window",
            False,
            f"[maintenance] offsite ({cron!r}) starts no copy inside [offsite] window "
            f"{window} UTC within a week: they would copy nothing",
        )
    hours = (left(inside) or 0) / 3600
    detail = f"copies start at {inside:%H:%M} UTC, {hours:.1f} h before the window {window} ends"
    return Finding("offsite window", True, detail)


def check_store(ctx: Context) -> Iterator[Finding]:
    store = ctx.config.store.path
    there = next(p for p in (store, *store.parents) if p.is_dir())
    below = there / store.relative_to(there).parts[0] if there != store else None
    if below is not None and below.exists():
        yield Finding("store", False, f"{store}: {below} is not a directory")
        return
    if not os.access(there, os.W_OK | os.X_OK):
        yield Finding("store", False, f"{store}: cannot be made in {there} (not writable)")
        return
    disk = StoreDisk.of(there)
    free = disk.free / disk.size if disk.size else 0.0
    room = f"{human_bytes(disk.free)} free of {human_bytes(disk.size)} ({free:.0%})"
    if there != store:  # the first backup makes it (0700): a false alarm to fail it
        detail = (
            f"{store}: not there yet, the first backup makes it ({room} in {there}); if the "
            "store is to be a disk of its own, mount it there first"
        )
        yield Finding("store", True, detail, warning=True)
        return
    yield Finding("store", True, f"{store}: {room}", warning=free < MIN_FREE_FRACTION)


def check_passphrase(ctx: Context) -> Iterator[Finding]:
    repos = [ctx.repository(h) for h in ctx.config.hosts]
    existing = [r for r in repos if ctx.borg.is_repository(r)]
    try:
        for repo in existing:
            ctx.borg.run(("info", "--json", str(repo)), what="info")
    except BackupdError as e:
        yield Finding("passphrase", False, str(e))
        return
    if existing:
        n = len(existing)
        yield Finding("passphrase", True, f"opens {n} repositor{'y' if n == 1 else 'ies'}")
    else:
        try:
            read_passphrase(ctx.config.passphrase)  # all we can check before the first backup
        except BackupdError as e:
            yield Finding("passphrase", False, str(e))
            return
        yield Finding("passphrase", True, "readable (no repository yet to open)")


def check_host(ctx: Context, host: HostConfig) -> Iterator[Finding]:
    try:
        conn = connect(ctx, host)
        conn.open()
    except BackupdError as e:
        yield Finding(host.name, False, str(e))
        yield from _unchecked(host, "the host failed (above)")
        return
    try:
        yield Finding(host.name, True, f"host key matches, logged in as {host.user}")
        gate = check_gate(conn, host)
        yield gate
        if host.gate and not gate.ok:  # every request would be refused: the gate's line
            yield from _unchecked(host, "its gate failed (above)")
            return
        if host.restore_key is not None:
            key = check_restore_key(host)
            yield key
            if key.ok and os.geteuid() == 0:  # root may use it: the restore roles answer?
                yield from check_restore_roles(ctx, host)
        for source in host.sources.values():
            yield check_source(conn, host, source)
    finally:
        conn.close()


def _unchecked(host: HostConfig, why: str) -> Iterator[Finding]:
    """A line per source of a host that could not be looked at: its backup would fail as
    well, and a source left out of the list reads as one that was never configured."""
    for source in host.sources.values():
        yield Finding(f"{host.name}/{source.name}", False, f"not checked: {why}")


def check_gate(conn: Connection, host: HostConfig) -> Finding:
    """Whether the droplet's gate stands as the config says (decision 0022): a request no
    config makes is refused, and the gate's allowlist is the one this config generates
    (its digest; the programs it runs are there). A host without ``gate`` is only told
    when its key can run anything."""
    from backupd.actions.gatelist import allowlist

    subject = f"{host.name} gate"
    probe = conn.run(PROBE, timeout=LOOKUP_TIMEOUT)
    refused = probe.exit_status == EXIT_REFUSED and b"backupd-gate: refused" in probe.stderr
    if not host.gate:
        if refused:
            return Finding(subject, False, "the droplet is gated: set gate = true for this host")
        return Finding(subject, True, UNGATED, warning=True)
    if not refused:
        return Finding(subject, False, f"NOT gated: {shlex.join(PROBE)} ran ({UNGATED})")
    try:
        expected = allowlist(host)
    except BackupdError as e:
        return Finding(subject, False, str(e))
    said = conn.run(HELLO.split(), timeout=LOOKUP_TIMEOUT)
    try:
        hello = json.loads(said.stdout)
    except ValueError:
        return Finding(subject, False, f"the gate does not say hello: {said.stderr_tail()}")
    if hello.get("digest") != expected["digest"]:
        return Finding(subject, False, f"{STALE} (backupctl host setup {host.name})")
    if hello.get("missing"):
        return Finding(subject, False, f"not found on the droplet: {', '.join(hello['missing'])}")
    return Finding(
        subject, True, f"refuses what the config does not need; allowlist {expected['digest'][:12]}"
    )


def check_restore_key(host: HostConfig) -> Finding:
    """The restore key must be the operator's alone: 0600, and not readable by whoever
    runs this check unless that is root (the daemon's user runs it from its timer)."""
    from backupd.actions.gatelist import restore_key_file

    subject = f"{host.name} restore key"
    try:
        key = restore_key_file(host)
    except BackupdError as e:
        return Finding(subject, False, str(e))
    if os.geteuid() != 0 and os.access(key, os.R_OK):
        return Finding(subject, False, f"{key}: this user may read it (only root should)")
    return Finding(subject, True, f"{key}: readable by its owner alone")


def check_restore_roles(ctx: Context, host: HostConfig) -> Iterator[Finding]:
    """Each database source's restore role connects through the restore key (a missing
    peer map or password file shows here, not at a restore in the night)."""
    from backupd.actions.gatelist import restore_gates, restore_writer
    from backupd.remote.shells import DropletShell
    from jobs.registry import database_kinds

    gates = restore_gates(host)
    if not gates:
        return
    writer = restore_writer(host)
    try:
        with connect(ctx, writer) as conn:
            shell = DropletShell(conn)
            for name, gate in gates.items():
                kind = database_kinds()[host.sources[name].kind]
                subject = f"{host.name}/{name} restore role"
                try:
                    listed = getattr(gate.options, "databases", ()) or ("postgres",)
                    kind.database_exists(gate.options, shell, listed[0])
                except BackupdError as e:
                    yield Finding(subject, False, str(e))
                    continue
                yield Finding(subject, True, f"connects as {gate.options.username}")
    except BackupdError as e:
        yield Finding(f"{host.name} restore key", False, str(e))


def check_source(conn: Connection, host: HostConfig, source: SourceConfig) -> Finding:
    subject = f"{host.name}/{source.name}"
    try:
        units = registry()[source.kind].plan(source.options, conn)
    except BackupdError as e:
        return Finding(subject, False, f"cannot plan: {e}")
    if not units:
        return Finding(subject, False, f"{source.kind} source found nothing to back up")
    if host.gate:  # the gate's hello looked for its programs
        return Finding(subject, True, f"{len(units)} item(s): " + ", ".join(u.item for u in units))
    missing = [p for p in sorted(programs(units)) if not found(conn, source, p)]
    if missing:
        return Finding(subject, False, f"not found on the droplet: {', '.join(missing)}")
    return Finding(subject, True, f"{len(units)} item(s): " + ", ".join(u.item for u in units))


def programs(units: Sequence[DumpStream | TreeTransfer]) -> set[str]:
    """The programs the units run on the droplet, as each kind names them."""
    return {p for unit in units for p in unit.programs}


def found(conn: Connection, source: SourceConfig, program: str) -> bool:
    """``command -v`` where the dump runs: inside the container or as the sudo user."""
    prefix = source.options.remote_prefix()
    argv = (*prefix, "sh", "-c", 'command -v "$1" >/dev/null', "backupd-check", program)
    return conn.run(argv, timeout=LOOKUP_TIMEOUT).ok
