"""The gated ``borg create`` (backupd/borg/gate.py, decision 0019) with real borg on a local
repository: an archive exists only when the producer returned its seal, whatever else
happens, and the producer starts only once borg holds its lock."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from backupd.borg.adapter import Borg, find_borg
from backupd.borg.gate import SEAL_NAME
from backupd.errors import BorgError

pytestmark = pytest.mark.e2e
Sink = Callable[[bytes], object]


@pytest.fixture
def borg(tmp_path: Path) -> Borg:
    b = Borg(find_borg("borg"), lambda: "gate-test", tmp_path / "base")
    b.ensure_repository(tmp_path / "repo", "repokey-blake2")
    return b


def names(borg: Borg, repo: Path) -> list[str]:
    return [a.name for a in borg.list_archives(repo, checkpoints=True)]


def create(borg: Borg, tmp_path: Path, produce: Callable[[Sink], bytes | None]) -> object:
    return borg.create_gated(
        tmp_path / "repo",
        "a1",
        spool=tmp_path / "spool",
        filename="db.pgdump",
        comment=json.dumps({"item": "db"}),
        compression="lz4",
        timeout=120,
        produce=produce,
    )


def test_a_stream_larger_than_any_pipe_is_kept_with_its_seal_inside(
    borg: Borg, tmp_path: Path
) -> None:
    data = os.urandom(1 << 20) * 12  # 12 MiB: borg must read it while the gate still waits

    def produce(sink: Sink) -> bytes:
        for i in range(0, len(data), 65536):
            sink(data[i : i + 65536])
        return json.dumps({"sha256": hashlib.sha256(data).hexdigest()}).encode()

    stats = create(borg, tmp_path, produce)
    assert stats is not None
    repo = tmp_path / "repo"
    assert names(borg, repo) == ["a1"]
    got: list[bytes] = []
    borg.extract_stream(repo, "a1", "db.pgdump", got.append)
    assert b"".join(got) == data
    seal: list[bytes] = []
    borg.extract_stream(repo, "a1", SEAL_NAME, seal.append)
    assert json.loads(b"".join(seal)) == {"sha256": hashlib.sha256(data).hexdigest()}
    assert not (tmp_path / "spool").exists()


def test_a_refused_stream_leaves_no_archive(borg: Borg, tmp_path: Path) -> None:
    def produce(sink: Sink) -> None:
        sink(os.urandom(3 << 20))  # a good part of a dump, then the verdict says no
        return None

    assert create(borg, tmp_path, produce) is None
    assert names(borg, tmp_path / "repo") == []
    assert not (tmp_path / "spool").exists()


def test_a_producer_that_fails_mid_stream_leaves_no_archive(borg: Borg, tmp_path: Path) -> None:
    def produce(sink: Sink) -> bytes:
        sink(b"x" * 100_000)
        raise ConnectionError("the droplet went away")

    with pytest.raises(ConnectionError):
        create(borg, tmp_path, produce)
    assert names(borg, tmp_path / "repo") == []


def test_no_dump_starts_when_borg_cannot_start(borg: Borg, tmp_path: Path) -> None:
    """Another member of the kind: borg fails before it holds a lock (no repository)."""
    called: list[bool] = []

    def produce(sink: Sink) -> bytes:
        called.append(True)
        return b"{}"

    subprocess.run(["rm", "-rf", str(tmp_path / "repo")], check=True)
    with pytest.raises(BorgError, match="borg create failed"):
        create(borg, tmp_path, produce)
    assert called == []


def test_a_name_the_gate_cannot_carry_is_refused_before_borg(borg: Borg, tmp_path: Path) -> None:
    for bad in ("a/b", "..", SEAL_NAME, "x\ny", "n" * 4094):
        with pytest.raises(ValueError):
            borg.create_gated(
                tmp_path / "repo",
                "a1",
                spool=tmp_path / "spool",
                filename=bad,
                comment="{}",
                compression="lz4",
                timeout=60,
                produce=lambda sink: b"{}",
            )
    assert names(borg, tmp_path / "repo") == []
