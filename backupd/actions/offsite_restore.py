"""offsite restore-from: the backup host (or its store) is gone; bring the repositories
back from the off-site copy (issue 18, the runbook's "The backup host is gone").

For each repository asked for (every configured host's and ``_catalogue`` by default)
that has a copy (a manifest: a copy never completed has none): its files are listed and
only the newest complete state is fetched (``index.N`` and what it names: the segments up
to N; a later copy cut half way left newer segments that no index names yet), into a
private directory beside its place in the store, checked (every file, its size, the
repository id the manifest names), then renamed into place. Nothing is ever written over:
a repository already in the store is refused before anything is fetched.

The key bundle (the newest that opens with the passphrase) proves the passphrase and
gives back the key of a ``keyfile`` repository. What this host's Borg remembers of a
repository (a newer manifest, from before the loss) is moved aside, or Borg would refuse
the older copy as a replay attack. Then: ``backupctl catalogue rebuild``.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from backupd.actions.context import Context
from backupd.borg.adapter import Borg, find_borg
from backupd.config.credentials import read_passphrase
from backupd.config.load import OffsiteConfig
from backupd.errors import BackupdError, NotFoundError, OffsiteError, RefusedError, UsageError
from backupd.remote.rclone import Remote, open_remote
from jobs.catalogue_copy import REPOSITORY
from jobs.offsite import MANIFESTS
from jobs.offsite_catalogue import open_bundle

STATE_FILE = re.compile(r"(index|hints|integrity)\.(\d+)")
INDEX = re.compile(r"(index)\.(\d+)")


@dataclass(frozen=True)
class Brought:
    """One repository brought back."""

    name: str  # a host, or _catalogue
    repository: str
    files: int
    bytes: int
    copied_at: str  # the copy's manifest: when the state brought back was copied
    archives: int
    key: str  # "in the repository" | "imported from the key bundle"
    gone: int  # archives the catalogue listed that the copy does not hold: marked gone


@dataclass(frozen=True)
class BroughtBack:
    remote: str
    repositories: list[Brought]
    bundle: str  # which key bundle opened, or why none did
    rebuild: bool  # the catalogue knows none of these archives: rebuild it from them
    missing: list[str] = field(default_factory=list)  # configured, no copy on the remote
    kept: list[str] = field(default_factory=list)  # in the store already: left as they are
    elsewhere: list[str] = field(default_factory=list)  # copies of hosts not configured


def pick_remote(cfg: OffsiteConfig | None, name: str | None) -> str:
    if cfg is None:
        raise UsageError("no [offsite] table in the configuration (docs/config.md#offsite)")
    if name is None:
        if len(cfg.remotes) == 1:
            return next(iter(cfg.remotes))
        raise UsageError(f"name the remote: --remote {' or '.join(sorted(cfg.remotes))}")
    if name not in cfg.remotes:
        raise UsageError(f"unknown remote {name!r} (configured: {', '.join(sorted(cfg.remotes))})")
    return name


def restore_from(ctx: Context, remote_name: str | None, names: Sequence[str]) -> BroughtBack:
    """Bring ``names`` (default: every host's repository and the catalogue's) back from
    the remote. UsageError for an unknown name, NotFoundError for one without a copy,
    RefusedError if one is in the store already (nothing fetched), OffsiteError when a
    fetch or the bundle fails."""
    cfg = ctx.config.offsite
    name = pick_remote(cfg, remote_name)
    assert cfg is not None
    known = [*sorted(ctx.config.hosts), REPOSITORY]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown host {unknown[0]!r} (configured: {', '.join(known)})")
    work = ctx.config.state_dir / "offsite"
    with open_remote(name, cfg.remotes[name], work, retries=cfg.retries) as remote:
        copies = {
            p.removesuffix(".json"): p for p in remote.files(MANIFESTS) if p.endswith(".json")
        }
        wanted = list(dict.fromkeys(names)) or known
        absent = [n for n in wanted if n not in copies]
        if names and absent:
            raise NotFoundError(f"remote {name}: no complete copy of {', '.join(absent)}")
        wanted = [n for n in wanted if n in copies]
        if not wanted:
            where = cfg.remotes[name].path
            raise NotFoundError(f"remote {name}: no complete copy of any repository in {where}")
        taken = [n for n in wanted if _occupied(ctx.repository(n))]
        if taken and names:  # asked for by name: say so, before anything is fetched
            raise RefusedError(
                f"{', '.join(str(ctx.repository(n)) for n in taken)}: already in the store; "
                "nothing fetched (move it away to bring the copy back)"
            )
        wanted = [n for n in wanted if n not in taken]  # all by default: the lost ones
        keys, bundle = open_bundle(remote, read_passphrase(ctx.config.passphrase))
        if not keys and "does not open with this passphrase" in bundle:
            raise OffsiteError(
                f"remote {name}: {bundle}: is [passphrase] the Borg passphrase of these "
                "repositories? Nothing fetched"
            )
        # catalogue rebuild refuses a catalogue that lists archives: suggested on an empty one
        known_before = any(ctx.catalogue.live_archives(str(ctx.repository(n))) for n in known)
        ctx.config.store.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        brought: list[Brought] = []
        for n in wanted:
            try:
                brought.append(_bring(ctx, remote, n, (keys, bundle), cfg.timeout))
            except BackupdError as e:
                back = ", ".join(b.name for b in brought)
                e.message = f"{n}: {e.message}" + (
                    f" (brought back before it: {back})" if back else ""
                )
                raise
    return BroughtBack(
        name,
        brought,
        bundle,
        bool(brought) and not known_before,
        missing=[n for n in known if n not in copies and not names],
        elsewhere=sorted(set(copies) - set(known)),
        kept=taken if not names else [],
    )


def _occupied(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def newest_state(listing: dict[str, int]) -> dict[str, int]:
    """The files of the newest complete state of a repository copy: ``index.N`` (N the
    highest), its hints and integrity, the segments up to N, the rest of the top
    (config, README, nonce...). OffsiteError if there is no index."""
    indexes = [int(m.group(2)) for p in listing if (m := INDEX.fullmatch(p))]
    if not indexes:
        raise OffsiteError("the copy has no index: no complete state to bring back")
    top = max(indexes)
    chosen = {}
    for path, size in listing.items():
        state = STATE_FILE.fullmatch(path)
        if state and int(state.group(2)) != top:
            continue
        segment = path.rsplit("/", 1)[-1]
        if path.startswith("data/") and segment.isdigit() and int(segment) > top:
            continue  # a later copy's, cut before its index went up
        chosen[path] = size
    return chosen


@dataclass(frozen=True)
class Fetched:
    """A copy's newest complete state, fetched and checked (not yet in its place)."""

    path: Path
    manifest: dict[str, object]
    files: dict[str, int]  # path below the repository -> size
    repository_id: str


def fetch_copy(remote: Remote, name: str, into: Path, timeout: float) -> Fetched:
    """Fetch the newest complete state of the copy ``name`` into the new directory
    ``into`` (0700; emptied first), checked: every file its listed size, the repository
    id the manifest names. OffsiteError when there is no complete copy or it differs."""
    try:
        manifest = json.loads(remote.cat(MANIFESTS, f"{name}.json"))
    except ValueError:
        raise OffsiteError(f"remote {remote.name}: the manifest of {name} is damaged") from None
    chosen = newest_state(remote.files(name))
    shutil.rmtree(into, ignore_errors=True)  # one cut before: fetched anew
    into.mkdir(mode=0o700, parents=True)
    remote.fetch(sorted(chosen), into, name, timeout=timeout)
    short = [p for p, size in chosen.items() if _size(into / p) != size]
    if short:
        raise OffsiteError(f"remote {remote.name}: {name}/{short[0]} came back incomplete")
    repo_id = _config(into).get("repository", "id", fallback="")
    if manifest.get("repository_id") and repo_id != manifest["repository_id"]:
        raise OffsiteError(f"remote {remote.name}: {name} is not the repository its manifest names")
    _private(into)
    return Fetched(into, manifest, chosen, repo_id)


def own_borg(ctx: Context, base_dir: Path) -> Borg:
    """A Borg with its own memory (security directory, cache, keys) in ``base_dir``: for a
    copy of a repository, which this host's Borg would take for its own at another place
    (and older: a replay)."""
    passphrase = ctx.config.passphrase
    return Borg(find_borg(ctx.config.store.borg), lambda: read_passphrase(passphrase), base_dir)


def opens(ctx: Context, repo: Path, name: str, keys: tuple[dict[str, str], str]) -> None:
    """Open the fetched copy with a Borg of its own (its own memory and keys: this host's
    Borg would see the repository at a place it is not meant to stay): the passphrase and
    the key are right, or OffsiteError and the fetched copy is removed."""
    check = repo.with_name(f"{repo.name}.borg")
    shutil.rmtree(check, ignore_errors=True)
    borg = own_borg(ctx, check)
    try:
        if needs_key(repo):
            import_key(borg, repo, name, keys, check / "keys")
        borg.archive_times(repo)
    except BackupdError as e:
        shutil.rmtree(repo, ignore_errors=True)
        raise OffsiteError(f"the copy does not open, nothing put in the store: {e}") from None
    finally:
        shutil.rmtree(check, ignore_errors=True)


def needs_key(repo: Path) -> bool:
    """A ``keyfile`` repository: its key is not inside it."""
    return not _config(repo).get("repository", "key", fallback="")


def _bring(
    ctx: Context, remote: Remote, name: str, keys: tuple[dict[str, str], str], timeout: float
) -> Brought:
    dest = ctx.repository(name)
    got = fetch_copy(remote, name, dest.with_name(f".{name}.restoring"), timeout)
    opens(ctx, got.path, name, keys)  # before it takes the repository's place
    try:
        if dest.exists():
            dest.rmdir()  # empty when checked, before anything was fetched
        got.path.rename(dest)
    except OSError as e:  # something wrote there meanwhile (a backup: is backupd running?)
        raise RefusedError(
            f"{dest}: written to while the copy was fetched ({e.strerror}); the copy is in "
            f"{got.path}: stop backupd, move {dest} away, then run restore-from again"
        ) from None
    ctx.borg.forget(got.repository_id)
    key = "in the repository"
    if needs_key(dest):
        key = import_key(ctx.borg, dest, name, keys, ctx.config.state_dir / "offsite")
    held = {a.name for a in ctx.borg.archive_times(dest)}  # the passphrase opens it
    listed = {a.name for a in ctx.catalogue.live_archives(str(dest))}
    ctx.catalogue.mark_pruned(str(dest), sorted(listed - held))  # made after the copy
    return Brought(
        name,
        str(dest),
        len(got.files),
        sum(got.files.values()),
        str(got.manifest.get("copied_at", "?")),
        len(held),
        key,
        len(listed - held),
    )


def import_key(
    borg: Borg, repo: Path, name: str, bundle: tuple[dict[str, str], str], work: Path
) -> str:
    """Import ``name``'s key from the opened bundle (its keys, the line saying which
    opened or why none did) into ``borg``'s keys; what was done. OffsiteError without it."""
    keys, said = bundle
    if name not in keys:
        why = said if not keys else "it holds no key for it"
        raise OffsiteError(
            f"{repo}: a keyfile repository, its key not brought back ({why}): import "
            "it from your own export (borg key import REPO FILE)"
        )
    work.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_file = work / f"{name}.key"
    key_file.touch(mode=0o600)
    try:
        key_file.write_text(keys[name])
        borg.import_key(repo, key_file)
    finally:
        key_file.unlink(missing_ok=True)
    return "imported from the key bundle"


def _config(repo: Path) -> configparser.ConfigParser:
    parsed = configparser.ConfigParser()
    parsed.read(repo / "config")
    return parsed


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _private(root: Path) -> None:
    """What rclone wrote (its own modes): the store's, 0700 and 0600."""
    for folder, dirs, files in os.walk(root):
        os.chmod(folder, 0o700)
        for f in files:
            os.chmod(os.path.join(folder, f), 0o600)
        del dirs
