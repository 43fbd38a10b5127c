"""Failure modes of a pull: each leaves no archive, a clear failed run, and nothing running.

The dump tool is replaced by a small stand-in on the droplet's PATH to make it hang,
crawl or print nothing; sshd, the database (facts are still taken), relay and borg are real.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.conftest import Deployment, pg_source
from tests.harness.droplet import Droplet
from tests.harness.postgres import PostgresCluster

pytestmark = pytest.mark.e2e

TOOLS = {
    # prints a little, then hangs (a dump blocked on a lock)
    "hang-dump": "printf 'PGDMP-partial'\nexec sleep 120\n",
    # keeps printing slowly forever (a dump that will never finish in time)
    "crawl-dump": "while :; do printf '%01000d' 0; sleep 0.1; done\n",
    # succeeds with no output at all
    "empty-dump": "exit 0\n",
}


@pytest.fixture
def tools(droplet: Droplet) -> Iterator[None]:
    for name, body in TOOLS.items():
        path = droplet.bin_dir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
    yield
    for name in TOOLS:
        (droplet.bin_dir / name).unlink()


def still_running(droplet: Droplet, name: str, wait: float = 8.0) -> list[str]:
    """PIDs of ``name`` still running on the droplet after up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        pattern = str(droplet.bin_dir / name)  # this droplet's tool, not a concurrent run's
        argv = ["pgrep", "-u", droplet.user, "-f", pattern]
        found = subprocess.run(argv, capture_output=True, text=True, check=False).stdout.split()
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def failed_run(d: Deployment, target: str) -> str:
    result = d.backupctl("backup", "now", target)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert d.archives("web1") == []
    [(status, error)] = d.catalogue_rows("SELECT status, error FROM runs")
    assert status == "failed"
    return str(error)


def test_a_dump_that_goes_silent_is_stopped_and_killed_on_the_droplet(
    deploy: Callable[..., Deployment],
    shop_db: str,
    pg_cluster: PostgresCluster,
    droplet: Droplet,
    tools: None,
) -> None:
    d = deploy(
        {
            "maindb": pg_source(
                pg_cluster,
                databases=[shop_db],
                globals=False,
                pg_dump="hang-dump",
                idle_timeout="2s",
            )
        }
    )
    error = failed_run(d, "web1/maindb")
    assert "web1/maindb: shop: pg_dump sent nothing for 2s: stopped" in error
    assert still_running(droplet, "hang-dump") == []


def test_a_dump_past_its_deadline_is_stopped_and_killed_on_the_droplet(
    deploy: Callable[..., Deployment],
    shop_db: str,
    pg_cluster: PostgresCluster,
    droplet: Droplet,
    tools: None,
) -> None:
    d = deploy(
        {
            "maindb": pg_source(
                pg_cluster, databases=[shop_db], globals=False, pg_dump="crawl-dump", timeout="3s"
            )
        }
    )
    error = failed_run(d, "web1/maindb")
    assert "web1/maindb: shop: pg_dump still running after its 3s deadline: stopped" in error
    assert still_running(droplet, "crawl-dump") == []


def test_an_empty_dump_is_refused(
    deploy: Callable[..., Deployment], shop_db: str, pg_cluster: PostgresCluster, tools: None
) -> None:
    d = deploy(
        {"maindb": pg_source(pg_cluster, databases=[shop_db], globals=False, pg_dump="empty-dump")}
    )
    error = failed_run(d, "web1/maindb")
    assert "pg_dump produced 0 bytes, below min_bytes=1" in error


def test_a_cut_connection_mid_stream_fails_the_run(
    deploy: Callable[..., Deployment],
    shop_db: str,
    pg_cluster: PostgresCluster,
    droplet: Droplet,
    tools: None,
) -> None:
    # the deadline is only a safety net so the test cannot hang; the cut must fail first
    d = deploy(
        {
            "maindb": pg_source(
                pg_cluster, databases=[shop_db], globals=False, pg_dump="crawl-dump", timeout="90s"
            )
        }
    )
    results: list[subprocess.CompletedProcess[str]] = []
    worker = threading.Thread(
        target=lambda: results.append(d.backupctl("backup", "now", "web1/maindb"))
    )
    worker.start()
    deadline = time.monotonic() + 30
    while not _running(droplet, "crawl-dump") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _running(droplet, "crawl-dump"), "the dump never started"
    sessions = _sshd_sessions(droplet._proc.pid)  # type: ignore[union-attr]
    assert sessions
    for pid in sessions:  # every sshd process serving this droplet's connections: links drop
        os.kill(pid, signal.SIGKILL)
    worker.join(timeout=120)
    result = results[0]
    assert result.returncode == 1
    assert d.archives("web1") == []
    [(status, error)] = d.catalogue_rows("SELECT status, error FROM runs")
    assert status == "failed"
    assert (
        "web1/maindb: shop: connection to web1 lost while pg_dump was running: closed from "
        "the droplet's side"
    ) in error
    assert still_running(droplet, "crawl-dump") == []  # SIGPIPE ends it once the link is gone


def _sshd_sessions(listener: int) -> list[int]:
    """The sshd processes below a listener: per-connection monitors and their children."""
    table = subprocess.run(
        ["ps", "-e", "-o", "pid=,ppid=,comm="], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    children: dict[int, list[tuple[int, str]]] = {}
    for line in table:
        if line.strip():
            pid, ppid, comm = line.split(None, 2)
            children.setdefault(int(ppid), []).append((int(pid), comm.strip()))
    found, todo = [], [listener]
    while todo:
        for pid, comm in children.get(todo.pop(), []):
            if comm == "sshd":
                found.append(pid)
                todo.append(pid)
    return found


def _running(droplet: Droplet, name: str) -> bool:
    return bool(
        subprocess.run(
            ["pgrep", "-u", droplet.user, "-f", str(droplet.bin_dir / name)],
            capture_output=True,
            check=False,
        ).stdout.split()
    )
