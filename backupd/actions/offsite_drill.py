"""offsite_drill: the restore drill of each host's off-site copy (issue 18, decision 0028),
monthly by default (``[maintenance] offsite_drill``).

For each remote: the copy's newest complete state is fetched (as ``restore-from`` would)
into a private directory in the store (it is as big as the repository; removed after,
and a killed drill's leftovers at the host's next one, never one still in use), opened
by a Borg of its own (its own security directory and cache: to this host's Borg the copy
is the local repository at another place and older), its key from the remote's key
bundle if it keeps none. Then per source the newest restore point the copy holds (per
item) is restored and checked as a drill does: databases into a scratch server, row
counts, trees file by file, dumps by their sha256. No drill rows, nothing marked
verified: the local drills' verdicts stay theirs; the verdict is this job's run (failed:
an alert), and "copy last verified restorable" in `offsite status`, `status`, the report
and the metrics is its last good run.
"""

from __future__ import annotations

import logging
from pathlib import Path

from backupd.actions.context import Context
from backupd.actions.drill import drill_copy
from backupd.actions.offsite_restore import (
    fetch_copy,
    import_key,
    needs_key,
    own_borg,
)
from backupd.catalogue import Archive
from backupd.config.credentials import read_passphrase
from backupd.config.load import HostConfig, RemoteConfig
from backupd.errors import BackupdError, OffsiteError, StoppedError
from backupd.local.workdirs import held_dir
from backupd.remote.rclone import open_remote
from jobs.base import MaintenanceEnv, MaintenanceResult
from jobs.offsite_catalogue import open_bundle

log = logging.getLogger(__name__)
PREFIX = ".offsite-drill-"  # in the store: <store>/.offsite-drill-HOST-XXXX, held while used


class OffsiteDrillJob:
    name = "offsite_drill"
    per_repository = True
    requires = "offsite"  # scheduled only with an [offsite] table
    runs_without_repository = True  # it drills the copy, not the local repository

    def run(self, env: MaintenanceEnv) -> MaintenanceResult:
        cfg = env.config.offsite
        assert env.host is not None
        if cfg is None:
            raise OffsiteError("no [offsite] table in the configuration: no copy to drill")
        ctx = Context.sharing(env.config, env.catalogue, env.borg)
        host = env.config.hosts[env.host]
        said, warnings, failed = [], [], []
        for name, remote in cfg.remotes.items():  # each copy on its own
            try:
                line, warned = drill_remote(ctx, host, name, remote)
            except StoppedError:
                raise
            except BackupdError as e:
                text = str(e)
                failed.append(text if text.startswith("remote ") else f"remote {name}: {text}")
                continue
            said.append(line)
            warnings += warned
        if failed:
            done = f" ({'; '.join(said)})" if said else ""
            raise OffsiteError("; ".join(failed) + done)
        return MaintenanceResult("; ".join(said), tuple(warnings))


def drill_remote(
    ctx: Context, host: HostConfig, name: str, rc: RemoteConfig
) -> tuple[str, list[str]]:
    """Fetch, open and drill the copy of ``host`` on remote ``name``: one line, and the
    warnings (a source with nothing in the copy, a check that warned)."""
    cfg = ctx.config.offsite
    assert cfg is not None
    # in the store, the disk sized for a repository; a drill killed half way left its own
    with held_dir(ctx.config.store.path, f"{PREFIX}{host.name}-") as work:
        borg = own_borg(ctx, work / "borg")
        with open_remote(name, rc, ctx.config.state_dir / "offsite", retries=cfg.retries) as remote:
            got = fetch_copy(remote, host.name, work / "repository", cfg.timeout)
            if needs_key(got.path):
                bundle = open_bundle(remote, read_passphrase(ctx.config.passphrase))
                import_key(borg, got.path, host.name, bundle, work / "keys")
        held = {a.name for a in borg.archive_times(got.path)}
        copy_ctx = Context.sharing(ctx.config, ctx.catalogue, borg)
        drilled, warnings = _drill_sources(copy_ctx, host, got.path, held)
    when = got.manifest.get("copied_at", "?")
    line = f"{name}: the copy of {when} restored and checked: {', '.join(drilled) or 'nothing'}"
    return line, [f"remote {name}: {w}" for w in warnings]


def _drill_sources(
    ctx: Context, host: HostConfig, repo: Path, held: set[str]
) -> tuple[list[str], list[str]]:
    drilled, warnings = [], []
    local = str(ctx.repository(host.name))
    for source in host.sources.values():
        chosen = newest_in_copy(ctx, host.name, source.name, local, held, repo)
        if not chosen:
            warnings.append(f"{host.name}/{source.name}: no backup of it in the copy yet")
            continue
        for archive, checks in drill_copy(ctx, host, source, chosen):
            warnings += [f"{archive.name}: {c.detail}" for c in checks if c.warn]
        drilled.append(f"{source.name} ({len(chosen)} archive{'s' if len(chosen) > 1 else ''})")
    return drilled, warnings


def newest_in_copy(
    ctx: Context, host: str, source: str, local: str, held: set[str], repo: Path
) -> list[Archive]:
    """Per item, the newest archive of ``source`` the copy holds, as an archive of the
    copy (its ``repository`` the copy's path; the catalogue's row is not touched)."""
    newest: dict[str, Archive] = {}
    for a in ctx.catalogue.archives(host, source):  # newest first
        if a.repository == local and a.name in held and a.run_id is not None:
            newest.setdefault(a.item, a)
    columns = [c.key for c in Archive.__table__.columns]
    return [
        Archive(**{**{c: getattr(a, c) for c in columns}, "repository": str(repo)})
        for a in newest.values()
    ]


JOB = OffsiteDrillJob()
