"""Sparse files stay sparse (issue 11, case 4): over the wire (compressed), in the mirror
(rsync --sparse), in the repository, and in restores (borg extract --sparse, rsync --sparse
onto the droplet), with their content exact."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Deployment
from tests.e2e.test_tree_names import pushed_back
from tests.e2e.test_trees import DOCKER, chown_to_droplet, facts_of
from tests.harness.droplet import Droplet

pytestmark = pytest.mark.e2e
GiB = 1 << 30
MiB = 1 << 20
# borg extract --sparse makes holes of all-zero chunks: a chunk holding any data (up to
# 8 MiB with borg's default chunker) is written whole, zeros included
CHUNK_MAX = 8 * MiB
# borg extract --sparse leaves a hole for each all-zero chunk: a run of data costs the
# chunks that hold it, and the repository's own chunker seed decides whether a short run
# falls in one chunk or straddles two (seen: 4 runs in 32 MiB + 8 KiB)
RUN_MAX = 2 * CHUNK_MAX


def allocated(path: Path) -> int:
    """Bytes the file takes on disk."""
    return path.stat().st_blocks * 512


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def du(path: Path) -> int:
    return sum(p.lstat().st_blocks * 512 for p in path.rglob("*"))


def make_sparse(path: Path, size: int, data_at: tuple[int, ...]) -> None:
    """A file of ``size`` apparent bytes holding a little data at each offset, holes between."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in data_at:
            f.seek(offset)
            f.write(os.urandom(4096) if offset else b"\x01\x02")
    assert allocated(path) < 1 * MiB


@pytest.fixture
def sparse_tree(droplet: Droplet) -> Iterator[Path]:
    root = droplet.root / "srv" / "log"
    subprocess.run(["rm", "-rf", str(root.parent)], check=True)
    root.mkdir(parents=True)
    make_sparse(root / "lastlog", GiB, (GiB - 4096,))  # `truncate -s 1G` and 2 bytes written
    (root / "syslog").write_bytes(os.urandom(200_000))
    chown_to_droplet(droplet, root.parent)
    yield root
    subprocess.run(["rm", "-rf", str(root.parent)], check=True)


def test_a_sparse_file_costs_its_data_not_its_apparent_size(
    deploy: Callable[..., Deployment], sparse_tree: Path, droplet: Droplet, tmp_path: Path
) -> None:
    lastlog = sparse_tree / "lastlog"
    expected = sha256(lastlog)
    d = deploy({"log": {"kind": "directory", "path": str(sparse_tree)}})
    d.backupctl("backup", "now", "web1/log", check=True)
    facts = facts_of(d)
    assert facts["bytes"] == GiB + 200_000  # the apparent size is what the tree holds
    transferred = facts["transferred_bytes"]
    assert isinstance(transferred, int) and 200_000 < transferred < 5 * MiB
    [mirrored] = (d.state_dir / "mirrors").rglob("lastlog")
    assert allocated(mirrored) < MiB
    assert du(d.store / "web1") < 5 * MiB  # the repository's growth, from nothing

    out = tmp_path / "restored"
    d.backupctl("restore", "web1/log", "--to", str(out), check=True)  # sha256 checked too
    assert (out / "lastlog").stat().st_size == GiB and allocated(out / "lastlog") <= RUN_MAX
    assert sha256(out / "lastlog") == expected

    with pushed_back(d, droplet, "web1/log") as back:  # rsync --sparse onto the droplet
        pushed = back / "lastlog"
        assert pushed.stat().st_size == GiB and allocated(pushed) < MiB
        assert sha256(pushed) == expected


@pytest.fixture
def volume_root(droplet: Droplet) -> Iterator[Path]:
    """Where the stand-in ``docker`` says the volume "uploads_data" lives."""
    root = droplet.root / "volumes" / "disk"
    subprocess.run(["rm", "-rf", str(root.parent)], check=True)
    root.mkdir(parents=True)
    docker = droplet.bin_dir / "docker"
    docker.write_text(DOCKER % root)
    docker.chmod(0o755)
    yield root
    docker.unlink()
    subprocess.run(["rm", "-rf", str(root.parent)], check=True)


def test_a_file_with_several_holes_in_a_docker_volume(
    deploy: Callable[..., Deployment], droplet: Droplet, volume_root: Path, tmp_path: Path
) -> None:
    """Data at the start, in the middle and at the end, holes between (a VM image, a
    database file after deletes); pulled from a Docker volume; drilled."""
    image = volume_root / "disk.img"
    make_sparse(image, 512 * MiB, (0, 100 * MiB + 12_345, 300 * MiB, 512 * MiB - 4096))
    chown_to_droplet(droplet, volume_root.parent)
    expected = sha256(image)
    d = deploy({"disk": {"kind": "volume", "volume": "uploads_data"}})
    d.backupctl("backup", "now", "web1/disk", check=True)
    transferred = facts_of(d)["transferred_bytes"]
    assert isinstance(transferred, int) and transferred < 2 * MiB
    [mirrored] = (d.state_dir / "mirrors").rglob("disk.img")
    assert allocated(mirrored) < MiB and sha256(mirrored) == expected
    out = tmp_path / "restored"
    d.backupctl("restore", "web1/disk", "--to", str(out), check=True)
    assert allocated(out / "disk.img") <= 4 * RUN_MAX  # 4 runs of data
    assert sha256(out / "disk.img") == expected
    drill = d.backupctl("drill", "web1/disk")
    assert drill.returncode == 0, drill.stdout + drill.stderr
