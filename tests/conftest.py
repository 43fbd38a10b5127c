"""Session-scoped real servers. Each is stopped at the end of the session, pass or fail."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from tests.harness.droplet import Droplet, start_droplet
from tests.harness.mariadb import MariaDBServer, start_mariadb
from tests.harness.postgres import PostgresCluster, start_postgres
from tests.harness.smtp import SmtpServer, start_smtp


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """A SIGTERM (a CI job cancelled, `timeout`) ends the run like Ctrl-C does, so the
    fixtures' teardown still stops every server. Only when nobody else handles SIGTERM.

    Under pytest-xdist each worker gets a temporary directory of its own (TMPDIR, inherited
    by backupctl, backupd and their scratch servers), so a check for leftovers sees its own
    run's, never a concurrent worker's."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        own = Path(tempfile.mkdtemp(prefix=f"backupd-{worker}-", dir="/tmp"))
        own.chmod(0o1777)  # like /tmp: the droplet's and servers' accounts work in it too
        os.environ["TMPDIR"] = str(own)
        tempfile.tempdir = None  # gettempdir() looks again
        config.stash[OWN_TMP] = own


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow modules first: with --no-loadscope-reorder (the Makefile) pytest-xdist hands
    files to workers in this order. Its default order, most tests first, handed out
    test_week (one three-minute test) last: it ran alone while the other workers idled
    (a run of 2026-11-30: 16:07 for 2,430 s of work on 3 workers). The sort is stable:
    the rest keep their order, and the many small unit files come last, filling the end."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("slow") else 1)


def pytest_unconfigure(config: pytest.Config) -> None:
    if signal.getsignal(signal.SIGTERM) is _interrupt:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    own = config.stash.get(OWN_TMP, None)
    if own is not None:
        shutil.rmtree(own, ignore_errors=True)


OWN_TMP = pytest.StashKey[Path]()


@pytest.fixture(scope="session")
def servers_dir() -> Iterator[Path]:
    """World-traversable: the postgres, mysql and droplet accounts reach their sockets here
    (pytest's own basetemp is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="backupd-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def droplet(servers_dir: Path) -> Iterator[Droplet]:
    d = start_droplet(servers_dir, "droplet1")
    yield d
    d.stop()


@pytest.fixture(scope="session")
def pg_cluster(servers_dir: Path) -> Iterator[PostgresCluster]:
    cluster = start_postgres(servers_dir)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def mariadb_server(servers_dir: Path) -> Iterator[MariaDBServer]:
    server = start_mariadb(servers_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    server = start_smtp()
    yield server
    server.stop()
