"""Sparse files and wire compression in tree pulls (issue 11, case 4).

- sparse_*: a directory source holding one sparse file (``truncate -s 4G lastlog`` plus
  2 bytes written near its end, as a real ``lastlog`` looks): bytes over SSH (the
  ``transferred_bytes`` fact), the mirror file's allocated bytes, the repository's growth,
  the time of ``backupctl backup now``, then ``backupctl restore --to``'s time and the
  restored file's allocated bytes.
- compress_*: what ``rsync --compress`` (zstd, negotiated by rsync >= 3.2) costs on
  ordinary data: the same rsync over backupd's SSH seam (``backupd.remote.rsh``) into a fresh
  mirror, without compression, with ``--compress`` (backupd's choice) and with lz4, on a
  tree of random (incompressible) files and on a tree of text-like files; the rounds
  (BENCH_TREE_ROUNDS, default 3) interleave the variants, and each one's best counts.

BENCH_SPARSE_BYTES sets the sparse file's apparent size (default 4 GiB).
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.venv import bench_venv
from bench.workloads import WORDS, du, make_tree
from tests.harness.fleet import HostSpec, write_fleet_config

if TYPE_CHECKING:
    from bench.run import Bench

BIN = Path(sys.executable).parent
SPARSE_BYTES = int(os.environ.get("BENCH_SPARSE_BYTES", 4 << 30))
ROUNDS = int(os.environ.get("BENCH_TREE_ROUNDS", 3))
PLAIN_BYTES = 500_000_000  # per kind of ordinary tree
_RECEIVED = re.compile(rb"Total bytes received: ([\d,.]+)")
COMPRESS = {  # rsync's wire compression: none, backupd's choice, a lighter one
    "none": (),
    "zstd": ("--compress",),
    "lz4": ("--compress", "--compress-choice=lz4"),
}


def allocated(path: Path) -> int:
    """Bytes a file takes on disk (st_blocks), or a tree's sum."""
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(p.lstat().st_blocks * 512 for p in path.rglob("*"))


def make_text_tree(root: Path, total: int, files: int) -> Path:
    """Text-like files (words): what rsync's compression is for."""
    rng = random.Random(3)
    text = " ".join(rng.choice(WORDS) for _ in range(400_000)).encode()
    size = total // files
    for i in range(files):
        path = root / f"dir{i % 50:02d}" / f"page{i:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        start = rng.randrange(0, len(text) - size)
        path.write_bytes(text[start : start + size])
    return root


class TreeBench:
    def __init__(self, bench: Bench) -> None:
        self.bench, self.work, self.droplet = bench, bench.work / "trees", bench.droplet
        self.work.mkdir(exist_ok=True)
        self.work.chmod(0o755)
        self.tree = self.work / "sparse-tree"
        self.config = write_fleet_config(
            self.work / "trees.toml",
            state_dir=self.work / "state",
            store=self.work / "store",
            passphrase_file=bench.passphrase,
            hosts=[
                HostSpec(
                    "sparse", self.droplet, {"files": {"kind": "directory", "path": str(self.tree)}}
                )
            ],
            borg=bench_venv() / "borg",
        )

    def run(self) -> dict[str, Any]:
        return {**self.sparse(), **self.compression()}

    def backupctl(self, *args: str) -> float:
        start = time.monotonic()
        subprocess.run(
            [str(BIN / "backupctl"), "--config", str(self.config), *args],
            check=True,
            capture_output=True,
        )
        return time.monotonic() - start

    def chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", f"{self.droplet.user}:", str(path)], check=True)

    def sparse(self) -> dict[str, Any]:
        self.tree.mkdir()
        lastlog = self.tree / "lastlog"
        with open(lastlog, "wb") as f:
            f.truncate(SPARSE_BYTES)
            f.seek(SPARSE_BYTES - 4096)
            f.write(b"\x01\x02")
        self.chown(self.tree)
        backup = self.backupctl("backup", "now", "sparse/files")
        with sqlite3.connect(self.work / "state" / "catalogue.db") as db:
            (facts,) = db.execute("SELECT facts FROM archives ORDER BY id DESC LIMIT 1").fetchone()
        mirror = next((self.work / "state" / "mirrors").rglob("lastlog"))
        out = self.work / "restored"
        restore = self.backupctl("restore", "sparse/files", "--to", str(out))
        result = {
            "sparse_apparent_bytes": SPARSE_BYTES,
            "sparse_transferred_bytes": json.loads(facts)["transferred_bytes"],
            "sparse_mirror_allocated_bytes": allocated(mirror),
            "sparse_repository_bytes": du(self.work / "store" / "sparse"),
            "sparse_backup_seconds": round(backup, 2),
            "sparse_restore_seconds": round(restore, 2),
            "sparse_restored_allocated_bytes": allocated(out / "lastlog"),
        }
        shutil.rmtree(out)
        shutil.rmtree(self.tree)
        return result

    def compression(self) -> dict[str, Any]:
        trees = {
            "random": make_tree(self.work / "plain-random", PLAIN_BYTES, 500),
            "text": make_text_tree(self.work / "plain-text", PLAIN_BYTES, 500),
        }
        result: dict[str, Any] = {}
        for kind, tree in trees.items():
            self.chown(tree)
            runs: dict[str, list[tuple[float, int]]] = {c: [] for c in COMPRESS}
            for _ in range(ROUNDS):  # interleaved: a busy moment hits every variant alike
                for choice, flags in COMPRESS.items():
                    runs[choice].append(self.rsync(tree, flags))
            for choice, got in runs.items():
                key = f"compress_{kind}_{choice}"
                result[key + "_seconds"] = [round(s, 2) for s, _ in got]
                result[key + "_bytes"] = got[0][1]
                best = min(s for s, _ in got) / min(s for s, _ in runs["none"])
                result[key + "_time_ratio"] = round(best, 3)
            shutil.rmtree(tree)
        return result

    def rsync(self, tree: Path, flags: tuple[str, ...]) -> tuple[float, int]:
        """One full pull of ``tree`` into an empty mirror, as backupd's rsync does it."""
        from backupd.actions.context import ssh_target
        from backupd.remote.hostkeys import target_to_json
        from jobs.registry import load_config

        config = load_config(self.config)
        spec = self.work / "rsh.json"
        spec.write_text(
            json.dumps(target_to_json(ssh_target(config.hosts["sparse"], config.state_dir)))
        )
        dest = self.work / "mirror"
        shutil.rmtree(dest, ignore_errors=True)
        shell = shlex.join((sys.executable, "-m", "backupd.remote.rsh", str(spec)))
        argv = [
            "rsync",
            "--archive",
            "--hard-links",
            "--numeric-ids",
            "--delete",
            "--sparse",
            "--protect-args",
            "--stats",
            "--rsh",
            shell,
            *flags,
            f"sparse:{tree}/",
            f"{dest}/",
        ]
        start = time.monotonic()
        out = subprocess.run(argv, check=True, capture_output=True).stdout
        seconds = time.monotonic() - start
        shutil.rmtree(dest)
        received = _RECEIVED.search(out)
        return seconds, int(re.sub(rb"[,.]", b"", received.group(1))) if received else 0
