"""offsite_catalogue: what a new backup host needs besides the hosts' copies (issue 18,
decision 0028), on each ``[offsite]`` remote, at ``[maintenance] offsite`` with them:

- the catalogue's own repository ``_catalogue`` (the daily copies of the catalogue: the
  history of runs, drills and alerts that the archives' comments cannot rebuild), copied
  as a host's is (under its Borg lock, read back, manifest last, the trash);
- the **key bundle**: every repository's key (``borg key export``), sealed with the Borg
  passphrase (backupd/borg/keybundle.py), as ``<path>/.keys/keys-<UTC time>.bundle``.
  A new one each run; one older than ``trash_days`` is removed, the newest never: a
  backup host that writes a bad bundle cannot take the good ones with it at once.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from backupd.borg.keybundle import made_at, seal, unseal
from backupd.catalogue.models import utcnow
from backupd.config.credentials import read_passphrase
from backupd.errors import OffsiteError
from backupd.remote.rclone import Remote, open_remote
from jobs.base import MaintenanceEnv, MaintenanceResult
from jobs.catalogue_copy import REPOSITORY
from jobs.offsite import STAMP, outside_window, to_every_remote

KEYS = ".keys"
SUFFIX = ".bundle"


class OffsiteCatalogueJob:
    name = "offsite_catalogue"
    per_repository = False
    requires = "offsite"  # scheduled only with an [offsite] table
    schedule = "offsite"  # on [maintenance] offsite's line, beside the hosts' copies

    def run(self, env: MaintenanceEnv) -> MaintenanceResult:
        cfg = env.config.offsite
        if cfg is None:
            raise OffsiteError("no [offsite] table in the configuration: nowhere to copy to")
        if env.trigger != "backupctl" and cfg.time_left(utcnow()) == 0:
            raise outside_window(cfg.window)
        repo = env.config.store.path / REPOSITORY
        said, failed = [], []
        warnings: list[str] = []
        if env.borg.is_repository(repo):
            try:
                line, warnings = to_every_remote(env, REPOSITORY, repo)
                said.append(f"{REPOSITORY}: {line}")
            except OffsiteError as e:
                failed.append(str(e))
        else:  # the catalogue job has not run yet, or the catalogue is not SQLite
            said.append(f"no {REPOSITORY} repository yet")
        try:
            said.append(send_keys(env))
        except OffsiteError as e:
            failed.append(str(e))
        if failed:
            raise OffsiteError("; ".join(failed) + (f" ({'; '.join(said)})" if said else ""))
        return MaintenanceResult("; ".join(said), tuple(warnings))


def repositories(env: MaintenanceEnv) -> dict[str, Path]:
    """Every repository of the store that exists: the hosts' and ``_catalogue``."""
    store = env.config.store.path
    names = [*sorted(env.config.hosts), REPOSITORY]
    return {n: store / n for n in names if env.borg.is_repository(store / n)}


def open_bundle(remote: Remote, passphrase: str) -> tuple[dict[str, str], str]:
    """The keys of the newest bundle that opens, and a line saying which; ({}, why) when
    none does (a ``repokey`` repository holds its own key: not needed for it)."""
    bundles = sorted(n for n in remote.files(KEYS) if n.endswith(SUFFIX))
    if not bundles:
        return {}, "no key bundle on the remote"
    why = ""
    for newest in reversed(bundles):
        blob = remote.cat(KEYS, newest)
        try:
            keys = unseal(blob, passphrase)
        except OffsiteError as e:
            why = why or f"{newest}: {e}"
            continue
        return keys, f"key bundle of {made_at(blob)}: {len(keys)} keys, opened"
    return {}, why


def send_keys(env: MaintenanceEnv) -> str:
    """Export every repository's key, seal them, put the bundle on every remote; one line."""
    cfg = env.config.offsite
    assert cfg is not None
    found = repositories(env)
    if not found:
        return "no repository yet: no key bundle"
    now = utcnow()
    env.config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="keys-", dir=env.config.state_dir))  # 0700
    try:
        keys = {}
        for name, repo in found.items():
            env.borg.export_key(repo, work / name)
            keys[name] = (work / name).read_text()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    passphrase = read_passphrase(env.config.passphrase)
    object_name = f"keys-{now.strftime(STAMP)}{SUFFIX}"
    failed = []
    for name, rc in cfg.remotes.items():
        try:
            work = env.config.state_dir / "offsite"
            with open_remote(name, rc, work, retries=cfg.retries) as remote:
                # the keys of repositories missing here now (lost, not restored yet) are
                # carried over from the newest bundle that opens: never a bundle without them
                before, _said = open_bundle(remote, passphrase)
                sealed = seal({**before, **keys}, passphrase, now.isoformat(timespec="seconds"))
                remote.put(sealed, KEYS, object_name)
                for old in expired(list(remote.files(KEYS)), cfg.trash_days, now):
                    remote.delete(KEYS, old)
        except OffsiteError as e:
            failed.append(str(e))
    if failed:
        raise OffsiteError("the key bundle: " + "; ".join(failed))
    return f"key bundle of {len(keys)} repositories sent ({KEYS}/{object_name})"


def expired(names: list[str], days: int, now: datetime) -> list[str]:
    """The bundles older than ``days``, never the newest one."""
    dated = []
    for name in names:
        stamp = name.removeprefix("keys-").removesuffix(SUFFIX)
        try:
            dated.append((datetime.strptime(stamp, STAMP).replace(tzinfo=now.tzinfo), name))
        except ValueError:
            continue  # not ours: left alone
    dated.sort()
    return [n for when, n in dated[:-1] if now - when > timedelta(days=days)]


JOB = OffsiteCatalogueJob()
