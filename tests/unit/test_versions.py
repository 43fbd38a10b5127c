"""The catalogue's index of file versions (issue 16): each night adds rows only for what
changed, find and ls answer from it, prune forgets what no live archive holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backupd.actions import names
from backupd.catalogue import Catalogue
from backupd.catalogue.models import FileVersion
from backupd.catalogue.versions import VersionRow

NIGHT = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
SHA = {n: f"{n:064x}" for n in range(10)}


def file(path: str, sha: int, size: int = 10, mtime: int = 1_700_000_000) -> VersionRow:
    return VersionRow(path, "f", size, 0o644, 33, 33, mtime, sha256=SHA[sha])


def directory(path: str) -> VersionRow:
    return VersionRow(path, "d", 0, 0o755, 33, 33, 1_700_000_000)


class Tree:
    """One tree source of one host, backed up night after night."""

    def __init__(self, tmp_path: Path) -> None:
        self.cat = Catalogue(f"sqlite:///{tmp_path / 'catalogue.db'}")
        self.source_id = self.cat.ensure_source("web1", "10.0.0.5", "uploads", "directory")
        self.names: list[str] = []

    def night(self, n: int, rows: list[VersionRow]) -> str:
        when = NIGHT + timedelta(days=n)
        name = f"uploads.uploads.{when.isoformat()}"
        self.cat.add_tree_archive(
            rows,
            source_id=self.source_id,
            repository="/store/web1",
            name=name,
            item="uploads",
            filename="tree",
            created_at=when,
            nbytes=sum(r.size for r in rows),
            sha256="0" * 64,
        )
        self.names.append(name)
        return name

    def versions(self) -> int:
        with self.cat.session() as s:
            return s.query(FileVersion).count()


NIGHTS = [
    [directory("img"), file("img/logo.png", 1), file("img/photo.jpg", 2), file("notes.txt", 3)],
    [directory("img"), file("img/logo.png", 1), file("img/photo.jpg", 2), file("notes.txt", 4)],
    [directory("img"), file("img/logo.png", 1), file("notes.txt", 4)],  # photo deleted
]


def test_a_night_adds_rows_only_for_what_changed(tmp_path: Path) -> None:
    tree = Tree(tmp_path)
    tree.night(0, NIGHTS[0])
    assert tree.versions() == 4
    tree.night(1, NIGHTS[1])
    assert tree.versions() == 5  # notes.txt changed: one new version
    tree.night(2, NIGHTS[2])
    assert tree.versions() == 5  # a deletion adds nothing


def test_find_says_which_nights_held_each_version_and_what_is_gone(tmp_path: Path) -> None:
    tree = Tree(tmp_path)
    for n, rows in enumerate(NIGHTS):
        tree.night(n, rows)
    [photo] = tree.cat.find_versions("photo")
    assert (photo.first_seen, photo.last_seen) == (NIGHT, NIGHT + timedelta(days=1))
    assert (photo.archives, photo.gone) == (2, True)
    notes = tree.cat.find_versions("notes.txt")
    assert [(f.version.sha256, f.archives, f.gone) for f in notes] == [
        (SHA[3], 1, False),
        (SHA[4], 2, False),
    ]
    assert [f.version.path for f in tree.cat.find_versions("x", gone_only=True)] == []
    assert [f.version.path for f in tree.cat.find_versions("*.jpg", gone_only=True)] == [
        "img/photo.jpg"
    ]
    # a glob with / matches the whole path, without one the name; no glob: a part
    assert {f.version.path for f in tree.cat.find_versions("img/*")} == {
        "img/logo.png",
        "img/photo.jpg",
    }
    assert tree.cat.find_versions("*/logo.png")[0].version.path == "img/logo.png"
    assert tree.cat.find_versions("logo*")[0].version.path == "img/logo.png"
    assert tree.cat.find_versions("LOGO") == []  # case matters
    assert tree.cat.find_versions("%") == [] and tree.cat.find_versions("_") == []
    later = tree.cat.find_versions("notes", since=NIGHT + timedelta(hours=12))
    assert [f.version.sha256 for f in later] == [SHA[4]]
    assert tree.cat.find_versions("photo", host="web2") == []
    assert len(tree.cat.find_versions("photo", host="web1", source="uploads")) == 1


def test_ls_lists_a_night_as_it_was(tmp_path: Path) -> None:
    tree = Tree(tmp_path)
    for n, rows in enumerate(NIGHTS):
        tree.night(n, rows)
    archives = {a.name: a for a in tree.cat.archives("web1", "uploads")}
    second = archives[tree.names[1]]
    held = tree.cat.tree_at(tree.source_id, "uploads", second)
    assert [(v.path, v.sha256) for v in held] == [
        ("img", None),
        ("img/logo.png", SHA[1]),
        ("img/photo.jpg", SHA[2]),
        ("notes.txt", SHA[4]),
    ]


def test_prune_forgets_what_no_live_archive_holds(tmp_path: Path) -> None:
    tree = Tree(tmp_path)
    for n, rows in enumerate(NIGHTS):
        tree.night(n, rows)
    tree.cat.mark_pruned("/store/web1", tree.names[:1])  # the first night: notes.txt v3
    assert [f.version.sha256 for f in tree.cat.find_versions("notes")] == [SHA[4]]
    [photo] = tree.cat.find_versions("photo")  # night 1 still holds it
    assert (photo.first_seen, photo.archives) == (NIGHT + timedelta(days=1), 1)
    tree.cat.mark_pruned("/store/web1", tree.names[1:2])
    assert tree.cat.find_versions("photo") == [] and tree.versions() == 3


@pytest.mark.parametrize("raw", [b"caf\xe9.txt", b"two\nlines.txt", b"back\\slash.txt"])
def test_odd_names_are_found_in_the_form_they_are_shown(tmp_path: Path, raw: bytes) -> None:
    """Not UTF-8, a newline, a backslash: the index keeps the display form, which find
    matches and which names.from_display turns back into the name's bytes."""
    tree = Tree(tmp_path)
    shown = names.display(raw)
    tree.night(0, [file(shown, 1)])
    [found] = tree.cat.find_versions(shown[:6])
    assert found.version.path == shown and names.from_display(shown) == raw


def test_the_display_form_turns_back_into_the_name() -> None:
    tricky = [
        b"plain.txt",
        b"caf\xc3\xa9",
        b"caf\xe9",
        b"\\x41 is not A",
        b"tab\there",
        "zero\u200bwidth".encode(),
        "\U0001f600.png".encode(),
        b"\x01\x7f\xff",
        bytes(range(1, 256)).replace(b"/", b""),
    ]
    for raw in tricky:
        assert names.from_display(names.display(raw)) == raw
    with pytest.raises(ValueError, match="not a displayed name"):
        names.from_display("broken\\x4")
