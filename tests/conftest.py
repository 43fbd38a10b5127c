"""Session-scoped real servers. Each is stopped at the end of the session, pass or fail."""

from __future__ import annotations

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
    fixtures' teardown still stops every server. Only when nobody else handles SIGTERM."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


def pytest_unconfigure(config: pytest.Config) -> None:
    if signal.getsignal(signal.SIGTERM) is _interrupt:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


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
