"""A tree's manifest is archived in pieces so that a night's edits change only a few of
them (decision 0021), and every manifest ever archived reads back the same way."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from backupd.actions.manifest import (
    PIECE_ENTRIES,
    Manifest,
    build_manifest,
    piece_count,
    piece_of,
    pieces_digest,
    read_archived,
)


def make_tree(root: Path, files: int) -> None:
    for i in range(files):
        folder = root / f"d{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:04d}.txt").write_text(f"file {i}\n")


def archived(m: Manifest) -> dict[str, bytes]:
    return {f"manifest/{name}": data for name, data in m.pieces.items()}


def test_an_edit_changes_one_piece_and_the_rest_stay_byte_identical(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    make_tree(root, 2000)
    before = build_manifest(root, tmp_path / "cache.json")
    assert len(before.pieces) > 64  # ~PIECE_ENTRIES entries each
    (root / "d3" / "f0003.txt").write_text("edited\n")
    os.utime(root / "d3" / "f0003.txt", (1_600_000_000, 1_600_000_000))
    after = build_manifest(root, tmp_path / "cache.json")
    changed = [k for k in before.pieces if before.pieces[k] != after.pieces.get(k)]
    assert len(changed) == 1
    assert b"f0003.txt" in after.pieces[changed[0]]
    assert before.summary()["manifest_sha256"] != after.summary()["manifest_sha256"]


def test_a_new_file_and_a_deleted_one_change_only_their_own_pieces(tmp_path: Path) -> None:
    """Theirs and their folders' (a folder's mtime changes with its entries)."""
    root = tmp_path / "tree"
    make_tree(root, 2000)
    before = build_manifest(root, tmp_path / "cache.json")
    (root / "d1" / "f0001.txt").unlink()
    (root / "d2" / "upload.bin").write_bytes(b"new")
    after = build_manifest(root, tmp_path / "cache.json")
    names = before.pieces.keys() | after.pieces.keys()
    changed = {k for k in names if before.pieces.get(k) != after.pieces.get(k)}
    count = piece_count(len(after.entries))
    touched = {b"d1/f0001.txt", b"d2/upload.bin", b"d1", b"d2"}
    assert b"d2/upload.bin" in after.pieces[piece_of(b"d2/upload.bin", count)]
    assert {piece_of(b"d1/f0001.txt", count), piece_of(b"d2/upload.bin", count)} <= changed
    assert changed <= {piece_of(name, count) for name in touched}


@pytest.mark.parametrize(
    ("entries", "pieces"), [(0, 1), (10, 1), (PIECE_ENTRIES + 1, 2), (50_000, 4096)]
)
def test_piece_count_grows_with_the_tree(entries: int, pieces: int) -> None:
    assert piece_count(entries) == pieces


def test_read_back_from_pieces_gives_every_entry_and_the_recorded_digest(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    make_tree(root, 300)
    (root / "link").symlink_to("d0/f0000.txt")
    m = build_manifest(root, tmp_path / "cache.json")
    entries, digest = read_archived({**archived(m), "data/d0/f0000.txt": b"not a piece"})
    assert sorted(entries) == sorted(m.entries)
    assert digest == m.summary()["manifest_sha256"]


def test_a_line_moved_between_pieces_changes_the_digest() -> None:
    line = b'["d", "a", 0, 493, 0, 0, 1600000000, ""]\n'
    apart = {"0000": line, "0001": line}
    together = {"0000": line + line}
    assert pieces_digest(apart) != pieces_digest(together)


def test_an_archive_from_before_the_pieces_reads_with_its_plain_sha256() -> None:
    old = (
        b'["f", "a/b.txt", 3, 420, 0, 0, 1600000000, "' + b"ab" * 32 + b'"]\n'
        b'["d", "a", 0, 493, 0, 0, 1600000000, ""]\n'
    )
    entries, digest = read_archived({"manifest.jsonl": old, "data/a/b.txt": b"abc"})
    assert [e[1] for e in entries] == [b"a/b.txt", b"a"]
    assert digest == hashlib.sha256(old).hexdigest()


def test_an_archive_without_a_manifest_is_refused() -> None:
    with pytest.raises(ValueError, match="no manifest"):
        read_archived({"data/x": b"x"})
