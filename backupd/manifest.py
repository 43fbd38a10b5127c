"""File manifests of a mirrored tree: what a directory backup held, file by file.

A manifest lists every regular file (path, size, mode, owner, mtime, sha256) and every
symlink and directory. It is archived with the files and summarised in the catalogue, so
a restore can be checked file by file. Hashing is incremental: a file whose size, mtime,
ctime and inode are unchanged since the last manifest keeps its hash (rsync replaces a
changed file by a new inode), so a second pull hashes only what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK = 1024 * 1024
SAMPLE_SIZE = 200


@dataclass(frozen=True)
class Manifest:
    entries: list[list[Any]]  # [type, path, size, mode, uid, gid, mtime_s, sha256 or target]
    hashed_bytes: int  # bytes actually read to hash (the rest came from the cache)

    def to_bytes(self) -> bytes:
        return b"".join(json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in self.entries)

    def summary(self) -> dict[str, Any]:
        files = [e for e in self.entries if e[0] == "f"]
        sample = sorted(files, key=lambda e: hashlib.sha256(e[1].encode()).digest())
        return {
            "files": len(files),
            "bytes": sum(e[2] for e in files),
            "dirs": sum(1 for e in self.entries if e[0] == "d"),
            "symlinks": sum(1 for e in self.entries if e[0] == "l"),
            "manifest_sha256": hashlib.sha256(self.to_bytes()).hexdigest(),
            "sample": {e[1]: e[7] for e in sample[:SAMPLE_SIZE]},
        }


def parse_manifest(data: bytes) -> list[list[Any]]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def _walk(root: Path) -> Iterator[tuple[str, os.stat_result, str]]:
    """(relative path, lstat, kind) for everything below root, in a stable order."""
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(root / rel if rel else root) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            path = f"{rel}/{entry.name}" if rel else entry.name
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                yield path, st, "d"
                stack.append(path)
            elif stat.S_ISLNK(st.st_mode):
                yield path, st, "l"
            elif stat.S_ISREG(st.st_mode):
                yield path, st, "f"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(root: Path, cache_file: Path) -> Manifest:
    """Manifest of ``root``; ``cache_file`` keeps hashes between runs (private)."""
    try:
        cache: dict[str, list[Any]] = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    new_cache: dict[str, list[Any]] = {}
    entries: list[list[Any]] = []
    hashed = 0
    for rel, st, kind in _walk(root):
        common = [kind, rel, st.st_size if kind == "f" else 0, stat.S_IMODE(st.st_mode),
                  st.st_uid, st.st_gid, int(st.st_mtime)]  # fmt: skip
        if kind == "f":
            key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
            cached = cache.get(rel)
            if cached is not None and cached[:4] == key:
                digest = cached[4]
            else:
                digest = sha256_file(root / rel)
                hashed += st.st_size
            new_cache[rel] = [*key, digest]
            entries.append([*common, digest])
        elif kind == "l":
            entries.append([*common, os.readlink(root / rel)])
        else:
            entries.append([*common, ""])
    fd = os.open(cache_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(new_cache, f)
    return Manifest(entries, hashed)


def verify_tree(root: Path, expected: list[list[Any]]) -> list[str]:
    """Differences between a restored tree and its manifest (empty: identical)."""
    problems: list[str] = []
    seen: set[str] = set()
    for kind, rel, size, mode, uid, gid, mtime, extra in expected:
        seen.add(rel)
        path = root / rel
        try:
            st = path.lstat()
        except FileNotFoundError:
            problems.append(f"missing: {rel}")
            continue
        if kind == "f" and (not stat.S_ISREG(st.st_mode) or st.st_size != size
                            or sha256_file(path) != extra):  # fmt: skip
            problems.append(f"content differs: {rel}")
        elif kind == "l" and (not stat.S_ISLNK(st.st_mode) or os.readlink(path) != extra):
            problems.append(f"symlink differs: {rel}")
        if kind != "l" and stat.S_IMODE(st.st_mode) != mode:
            problems.append(f"mode differs: {rel}")
        if kind == "f" and int(st.st_mtime) != mtime:
            problems.append(f"mtime differs: {rel}")
        if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (uid, gid):
            problems.append(f"owner differs: {rel}")
    extra_paths = [rel for rel, _st, _k in _walk(root) if rel not in seen]
    problems += [f"unexpected: {rel}" for rel in extra_paths[:20]]
    return problems
