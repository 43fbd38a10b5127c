"""File manifests of a mirrored tree: what a directory backup held, file by file.

A manifest lists every regular file (path, size, mode, owner, mtime, sha256) and every
symlink and directory. It is archived with the files and summarised in the catalogue, so
a restore can be checked file by file. It is archived in pieces (``manifest/XXXX``, each
name in the piece its hash picks), so a day's edits change a few pieces and the rest
deduplicate against last night's: one ``manifest.jsonl`` changed in every Borg chunk
each night (decision 0021). Archives made before that hold ``manifest.jsonl``; both
read back the same way (``read_archived``). Hashing is incremental: a file whose size, mtime,
ctime and inode are unchanged since the last manifest keeps its hash (rsync replaces a
changed file by a new inode), so a second pull hashes only what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from backupd.actions import names
from backupd.actions.context import Context
from backupd.catalogue.versions import VersionRow
from backupd.errors import VerificationError

CHUNK = 1024 * 1024
SAMPLE_SIZE = 200
MANIFEST_DIR = "manifest"  # the pieces, in the archive beside data/
LEGACY_MANIFEST = "manifest.jsonl"  # one file: archives made before decision 0021
# entries per piece, on average: measured on a 50,000-file manifest with 560 changes a
# night (decision 0021): 16 adds 0.7 MB a night where one file added 2.9 MB; finer pieces
# cost more in Borg's item metadata than they save
PIECE_ENTRIES = 16
MAX_PIECES = 65536  # four hex digits


@dataclass(frozen=True)
class Manifest:
    """``entries``: [type, name, size, mode, uid, gid, mtime_s, sha256 or target], the name
    (relative, ``/``-separated) and a symlink's target as bytes; type "f", "d" or "l"."""

    entries: list[list[Any]]
    hashed_bytes: int  # bytes actually read to hash (the rest came from the cache)

    @cached_property
    def pieces(self) -> dict[str, bytes]:
        """The manifest as archived: piece name (4 hex digits) -> its JSON lines (names in
        their JSON form, backupd/actions/names.py), in walk order. A name's piece is picked
        by its sha256, among as many pieces as the tree needs (a power of two); only
        non-empty pieces are listed."""
        count = piece_count(len(self.entries))
        lines: dict[str, list[bytes]] = {}
        for e in self.entries:
            lines.setdefault(piece_of(e[1], count), []).append(_line(e))
        return {k: b"".join(v) for k, v in sorted(lines.items())}

    def summary(self) -> dict[str, Any]:
        """Counts, bytes, the manifest's sha256 (``pieces_digest``) and a sample: [[name
        (JSON form), sha256], ...] of up to SAMPLE_SIZE files, chosen by the hash of their
        name."""
        files = [e for e in self.entries if e[0] == "f"]
        sample = sorted(files, key=lambda e: hashlib.sha256(e[1]).digest())
        return {
            "files": len(files),
            "bytes": sum(e[2] for e in files),
            "dirs": sum(1 for e in self.entries if e[0] == "d"),
            "symlinks": sum(1 for e in self.entries if e[0] == "l"),
            "manifest_sha256": pieces_digest(self.pieces),
            "sample": [[names.to_json(e[1]), e[7]] for e in sample[:SAMPLE_SIZE]],
        }


def piece_count(entries: int) -> int:
    """Pieces for a manifest of ``entries`` entries: the power of two that gives about
    PIECE_ENTRIES per piece (1 for a small tree, at most MAX_PIECES)."""
    count = 1
    while count * PIECE_ENTRIES < entries and count < MAX_PIECES:
        count *= 2
    return count


def piece_of(name: bytes, count: int) -> str:
    """The piece a name goes into among ``count``: 4 hex digits of its sha256's value."""
    return f"{int.from_bytes(hashlib.sha256(name).digest()[:4], 'big') % count:04x}"


def pieces_digest(pieces: Mapping[str, bytes]) -> str:
    """sha256 over every piece in name order, each framed by its name and length (a line
    moved from one piece to another changes the digest)."""
    digest = hashlib.sha256()
    for name in sorted(pieces):
        digest.update(f"{name} {len(pieces[name])}\n".encode())
        digest.update(pieces[name])
    return digest.hexdigest()


def read_archived(files: Mapping[str, bytes]) -> tuple[list[list[Any]], str]:
    """(entries, digest) of the manifest among ``files`` (archive path -> content: the
    ``manifest/`` pieces, or the ``manifest.jsonl`` of an older archive, whose digest is
    its plain sha256); ValueError if there is none or a line is not an entry."""
    if LEGACY_MANIFEST in files:
        data = files[LEGACY_MANIFEST]
        return parse_manifest(data), hashlib.sha256(data).hexdigest()
    prefix = MANIFEST_DIR + "/"
    pieces = {k[len(prefix) :]: v for k, v in files.items() if k.startswith(prefix)}
    if not pieces:
        raise ValueError("the archive holds no manifest")
    entries = [e for name in sorted(pieces) for e in parse_manifest(pieces[name])]
    return entries, pieces_digest(pieces)


def archived_manifest(ctx: Context, repo: Path, archive: str) -> tuple[list[list[Any]], str]:
    """(entries, digest) of the manifest archived with a tree (read_archived), read with
    one ``borg export-tar`` that leaves data/ out; VerificationError if it has none or a
    line is not an entry."""
    files = ctx.borg.read_files(repo, archive, exclude=("pp:data",))
    try:
        return read_archived(files)
    except ValueError as e:
        raise VerificationError(f"{archive}: {e}") from e


def _line(entry: list[Any]) -> bytes:
    return json.dumps(_to_json(entry), ensure_ascii=False).encode() + b"\n"


def _to_json(entry: list[Any]) -> list[Any]:
    kind, name, *rest, extra = entry
    return [kind, names.to_json(name), *rest, names.to_json(extra) if kind == "l" else extra]


def parse_manifest(data: bytes) -> list[list[Any]]:
    """Entries of a manifest written by any backupd (names back to bytes); ValueError if
    a line is not one."""
    entries = []
    for line in data.splitlines():
        if line.strip():
            kind, name, *rest, extra = json.loads(line)
            target = names.from_json(extra) if kind == "l" else extra
            entries.append([kind, names.from_json(name), *rest, target])
    return entries


def _walk(root: bytes) -> Iterator[tuple[bytes, os.stat_result, str]]:
    """(relative name, lstat, kind) for everything below root, in a stable order."""
    stack = [b""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            path = rel + b"/" + entry.name if rel else entry.name
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                yield path, st, "d"
                stack.append(path)
            elif stat.S_ISLNK(st.st_mode):
                yield path, st, "l"
            elif stat.S_ISREG(st.st_mode):
                yield path, st, "f"


def sha256_file(path: Path | bytes) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def under(entries: list[list[Any]], paths: Sequence[bytes]) -> list[list[Any]]:
    """The entries that are one of ``paths`` or below one (a partial restore's share)."""
    return [e for e in entries if any(e[1] == p or e[1].startswith(p + b"/") for p in paths)]


def parents_of(paths: Sequence[bytes]) -> frozenset[bytes]:
    """Every directory above ``paths`` (``a/b/c`` -> ``a``, ``a/b``)."""
    out: set[bytes] = set()
    for p in paths:
        parts = p.split(b"/")
        out.update(b"/".join(parts[:i]) for i in range(1, len(parts)))
    return frozenset(out)


def set_directories(root: Path, entries: list[list[Any]]) -> None:
    """Give directories under ``root`` the mode, owner (as root) and mtime the manifest
    says, deepest first (a partial restore's parents, which Borg makes bare)."""
    base = os.fsencode(root)
    for _kind, rel, _size, mode, uid, gid, mtime, _x in sorted(
        (e for e in entries if e[0] == "d"), key=lambda e: -e[1].count(b"/")
    ):
        path = os.path.join(base, rel)
        if os.geteuid() == 0:
            os.lchown(path, uid, gid)
        os.chmod(path, mode)
        os.utime(path, (mtime, mtime))


def version_rows(manifest: Manifest) -> list[VersionRow]:
    """The manifest's entries as the catalogue's index of versions keeps them (names in
    their display form: injective, searchable as text; names.from_display reverses it)."""
    rows = []
    for kind, name, size, mode, uid, gid, mtime, last in manifest.entries:
        rows.append(
            VersionRow(
                names.display(name),
                kind,
                int(size),
                int(mode),
                int(uid),
                int(gid),
                int(mtime),
                sha256=last if kind == "f" else None,
                target=names.display(last) if kind == "l" else None,
            )
        )
    return rows


def build_manifest(root: Path, cache_file: Path) -> Manifest:
    """Manifest of ``root``; ``cache_file`` keeps hashes between runs (private; its keys
    are names as Python's surrogate-escaped str, which JSON round-trips exactly)."""
    try:
        cache: dict[str, list[Any]] = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    new_cache: dict[str, list[Any]] = {}
    entries: list[list[Any]] = []
    hashed = 0
    base = os.fsencode(root)
    for rel, st, kind in _walk(base):
        common = [
            kind,
            rel,
            st.st_size if kind == "f" else 0,
            stat.S_IMODE(st.st_mode),
            st.st_uid,
            st.st_gid,
            int(st.st_mtime),
        ]
        if kind == "f":
            key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
            cache_key = rel.decode("utf-8", "surrogateescape")
            cached = cache.get(cache_key)
            if cached is not None and cached[:4] == key:
                digest = cached[4]
            else:
                digest = sha256_file(os.path.join(base, rel))
                hashed += st.st_size
            new_cache[cache_key] = [*key, digest]
            entries.append([*common, digest])
        elif kind == "l":
            entries.append([*common, os.readlink(os.path.join(base, rel))])
        else:
            entries.append([*common, ""])
    fd = os.open(cache_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(new_cache, f)
    return Manifest(entries, hashed)


def verify_tree(root: Path, expected: list[list[Any]], within: Sequence[bytes] = ()) -> list[str]:
    """Differences between a restored tree and its manifest (empty: identical); each
    names the path in its display form. ``within``: a partial restore's paths, under
    which alone a file not in the manifest is unexpected (what else the directory holds
    was there before, and is not ours to judge)."""
    problems: list[str] = []
    seen: set[bytes] = set()
    base = os.fsencode(root)
    for kind, rel, size, mode, uid, gid, mtime, extra in expected:
        seen.add(rel)
        path = os.path.join(base, rel)
        shown = names.display(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            problems.append(f"missing: {shown}")
            continue
        if kind == "f" and (
            not stat.S_ISREG(st.st_mode) or st.st_size != size or sha256_file(path) != extra
        ):
            problems.append(f"content differs: {shown}")
        elif kind == "l" and (not stat.S_ISLNK(st.st_mode) or os.readlink(path) != extra):
            problems.append(f"symlink differs: {shown}")
        if kind != "l" and stat.S_IMODE(st.st_mode) != mode:
            problems.append(f"mode differs: {shown}")
        if kind == "f" and int(st.st_mtime) != mtime:
            problems.append(f"mtime differs: {shown}")
        if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (uid, gid):
            problems.append(f"owner differs: {shown}")
    extra_paths = [
        rel
        for rel, _st, _k in _walk(base)
        if rel not in seen and (not within or under([[None, rel]], within))
    ]
    problems += [f"unexpected: {names.display(rel)}" for rel in extra_paths[:20]]
    return problems
