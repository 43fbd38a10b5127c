"""File names are bytes end to end: the JSON form, the display form, and manifests of real
trees holding names that are not UTF-8."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from backupd.actions import names
from backupd.actions.manifest import build_manifest, parse_manifest, read_archived, verify_tree

ODD = [
    b"caf\xe9.txt",  # Latin-1, not UTF-8
    b"caf\\xe9.txt",  # looks like the display form of the one above
    b'{"b64": "Y2Fm6S50eHQ="}',  # looks like the JSON form of the first
    "ünïcode ✓".encode(),
    b"new\nline",
    b"tab\tand\rreturn",
    b"back\\slash",
    b"-rf",
    b"\xff\xfe",
    b"\x01ctl",
    "no\u00a0break".encode(),
]


@pytest.mark.parametrize("name", ODD)
def test_json_form_round_trips_through_json_text(name: bytes) -> None:
    text = json.dumps(names.to_json(name))
    text.encode("utf-8")  # no lone surrogates: PostgreSQL's JSON takes it
    assert "\\ud" not in text
    assert names.from_json(json.loads(text)) == name


def test_json_form_is_a_plain_string_exactly_when_utf8() -> None:
    assert names.to_json(b"plain.txt") == "plain.txt"
    assert names.to_json(b"caf\xe9.txt") == {"b64": "Y2Fm6S50eHQ="}
    assert names.to_json(b'{"b64": "Y2Fm6S50eHQ="}') == '{"b64": "Y2Fm6S50eHQ="}'
    assert names.from_json("caf\udce9.txt") == b"caf\xe9.txt"  # os.fsdecode's form
    for bad in ({"b64": "***"}, {"b64": 1}, {"hex": "00"}, 7, None):
        with pytest.raises(ValueError):
            names.from_json(bad)


def test_display_form_is_readable_one_line_and_injective() -> None:
    assert names.display(b"caf\xe9.txt") == "caf\\xe9.txt"
    assert names.display(b"caf\\xe9.txt") == "caf\\\\xe9.txt"
    assert names.display(b"new\nline") == "new\\nline"
    assert names.display("ünïcode ✓".encode()) == "ünïcode ✓"
    assert names.display(b"\x01ctl") == "\\u0001ctl"
    assert names.display("\x85".encode()) != names.display(b"\x85")
    shown = [names.display(n) for n in ODD]
    assert len(set(shown)) == len(ODD)
    assert all("\n" not in s and s.isprintable() for s in shown)
    assert all(s.encode("utf-8") for s in shown)


def make_odd_tree(root: Path) -> bytes:
    base = os.fsencode(root)
    for i, name in enumerate(ODD):
        with open(os.path.join(base, name), "wb") as f:
            f.write(b"content %d\n" % i)
    os.mkdir(os.path.join(base, b"dir\xe9"))
    with open(os.path.join(base, b"dir\xe9", b"inner\xfe"), "wb") as f:
        f.write(b"inner\n")
    os.symlink(b"caf\xe9.txt", os.path.join(base, b"link\xe9"))
    os.symlink(b"/nowhere/\xfe", os.path.join(base, b"dangling"))
    return base


def test_manifest_of_odd_names_round_trips_and_verifies(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    base = make_odd_tree(root)
    manifest = build_manifest(root, tmp_path / "cache.json")
    for piece in manifest.pieces.values():
        piece.decode("utf-8")
    entries, digest = read_archived({f"manifest/{k}": v for k, v in manifest.pieces.items()})
    assert sorted(entries) == sorted(manifest.entries)
    assert digest == manifest.summary()["manifest_sha256"]
    got = {e[1] for e in entries}
    assert set(ODD) | {b"dir\xe9", b"dir\xe9/inner\xfe", b"link\xe9", b"dangling"} == got
    links = {e[1]: e[7] for e in entries if e[0] == "l"}
    assert links == {b"link\xe9": b"caf\xe9.txt", b"dangling": b"/nowhere/\xfe"}
    summary = manifest.summary()
    json.dumps(summary).encode("utf-8")
    hashes = {e[1]: e[7] for e in entries if e[0] == "f"}
    assert [names.to_json(b"caf\xe9.txt"), hashes[b"caf\xe9.txt"]] in summary["sample"]
    assert verify_tree(root, entries) == []

    with open(os.path.join(base, b"caf\xe9.txt"), "ab") as f:
        f.write(b"changed")
    os.unlink(os.path.join(base, b"new\nline"))
    problems = verify_tree(root, entries)
    assert "content differs: caf\\xe9.txt" in problems
    assert "missing: new\\nline" in problems
    # the second manifest reuses the cached hashes of unchanged odd names
    again = build_manifest(root, tmp_path / "cache.json")
    assert again.hashed_bytes == len(b"content 0\nchanged")


def test_old_manifests_with_plain_strings_still_parse() -> None:
    old = (
        b'["f", "a/b.txt", 3, 420, 0, 0, 1600000000, "' + b"ab" * 32 + b'"]\n'
        b'["l", "link", 0, 511, 0, 0, 1600000000, "a/b.txt"]\n'
        b'["d", "a", 0, 493, 0, 0, 1600000000, ""]\n'
    )
    entries = parse_manifest(old)
    assert [e[1] for e in entries] == [b"a/b.txt", b"link", b"a"]
    assert entries[1][7] == b"a/b.txt"
