"""key export: a copy of each repository's key, to keep away from the backup host.

The repositories use ``repokey``: the key lives inside the repository, protected by the
passphrase. If the store's copy of it is damaged, every archive is lost, passphrase or
not, so the key must also exist elsewhere. Borg writes it twice: a file for
``borg key import`` and a paper version to type back in. Each export is recorded so
`backupctl status` can warn about repositories whose key was never exported.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from backupd.actions.context import Context
from backupd.errors import BorgError, NotFoundError, RefusedError

KEY_HEADER = "BORG_KEY "  # first line of a key file: "BORG_KEY <repository id>"
PAPER_HEADER = "BORG PAPER KEY v1"


@dataclass(frozen=True)
class Exported:
    host: str
    repository: str
    key_file: str
    paper_file: str
    key_sha256: str
    export_id: int


def exportable(ctx: Context) -> list[tuple[str, Path]]:
    """(host, repository) for every configured host whose repository exists."""
    pairs = [(h, ctx.repository(h)) for h in sorted(ctx.config.hosts)]
    return [(h, repo) for h, repo in pairs if ctx.borg.is_repository(repo)]


def export_keys(ctx: Context, directory: Path, *, force: bool = False) -> list[Exported]:
    directory = directory.absolute()  # the catalogue's record must say where, from anywhere
    repos = exportable(ctx)
    if not repos:
        raise NotFoundError(
            f"no repository under {ctx.config.store.path} yet: keys can be "
            "exported after the first backup (backupctl backup now HOST)"
        )
    planned = [(h, repo, directory / f"{h}.key", directory / f"{h}.key.txt") for h, repo in repos]
    taken = [p for *_, key, paper in planned for p in (key, paper) if os.path.lexists(p)]
    if taken and not force:  # checked for all first: nothing half-exported
        names = ", ".join(str(p) for p in taken)
        raise RefusedError(f"{names}: already there; nothing exported (--force overwrites)")
    if directory.exists() and not directory.is_dir():
        raise RefusedError(f"{directory}: exists and is not a directory")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    done = []
    for host, repo, key, paper in planned:
        _export(ctx, repo, key, paper=False)
        _export(ctx, repo, paper, paper=True)
        digest = hashlib.sha256(key.read_bytes()).hexdigest()
        row = ctx.catalogue.record_key_export(
            host, str(repo), str(directory), [str(key), str(paper)], digest
        )
        done.append(Exported(host, str(repo), str(key), str(paper), digest, row))
    return done


def _export(ctx: Context, repo: Path, dest: Path, *, paper: bool) -> None:
    """Borg writes into a private temp file beside ``dest`` (borg keeps the mode of a file
    it overwrites: 0600 from mkstemp), checked, then renamed into place."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    os.close(fd)
    try:
        ctx.borg.export_key(repo, Path(tmp), paper=paper)
        text = Path(tmp).read_text(errors="replace")
        ok = PAPER_HEADER in text if paper else text.startswith(KEY_HEADER)
        if not ok:  # never record an export that would not import
            what = "paper key" if paper else "key file"
            raise BorgError(f"borg key export of {repo} wrote no {what} to {dest.parent}")
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
