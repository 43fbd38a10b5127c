"""Borg's chunker per kind and per source (decision 0020): a database dump is cut in ~64 KiB
chunks, a tree keeps Borg's default, and a source's ``chunker_params`` wins over both.
What borg recorded in each archive is the proof."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Callable

import pytest

from tests.e2e.conftest import Deployment
from tests.harness.droplet import Droplet

pytestmark = pytest.mark.e2e


def chunker_of(d: Deployment, archive: str) -> list[object]:
    out = d.borg("info", "--json", f"{d.store / 'web1'}::{archive}").stdout
    return list(json.loads(out)["archives"][0]["chunker_params"])


def test_each_archive_is_cut_as_its_kind_or_its_source_says(
    deploy: Callable[..., Deployment], droplet: Droplet
) -> None:
    folder = droplet.root / "chunkers"
    folder.mkdir(exist_ok=True)
    for name in ("a.db", "b.db"):
        with sqlite3.connect(folder / name) as c:
            c.execute("CREATE TABLE IF NOT EXISTS t (v TEXT)")
            c.execute("INSERT INTO t VALUES ('x')")
    (folder / "files").mkdir(exist_ok=True)
    (folder / "files" / "f.txt").write_text("hello\n")
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", droplet.user, str(folder)], check=True)
    d = deploy(
        {
            "kinds": {"kind": "sqlite", "path": str(folder / "a.db")},
            "mine": {
                "kind": "sqlite",
                "path": str(folder / "b.db"),
                "chunker_params": "buzhash,12,20,14,4095",
            },
            "tree": {"kind": "directory", "path": str(folder / "files")},
            "treefixed": {
                "kind": "directory",
                "path": str(folder / "files"),
                "chunker_params": "fixed,65536",
            },
        }
    )
    d.backupctl("backup", "now", "web1", check=True)
    got = {name.split(".")[0]: chunker_of(d, name) for name in d.archives("web1")}
    assert got == {
        "kinds": ["buzhash", 14, 23, 16, 4095],  # the database kinds' choice
        "mine": ["buzhash", 12, 20, 14, 4095],  # the source's own
        "tree": ["buzhash", 19, 23, 21, 4095],  # Borg's default for files
        "treefixed": ["fixed", 65536, 0],
    }
