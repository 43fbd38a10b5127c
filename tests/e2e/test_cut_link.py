"""A cut connection (issue 11, case 9): the droplet's link goes down mid-dump, as a real
network fault does (no RST, no FIN). backupd notices within its dead-peer timeout and says
the connection was lost, keeps no archive, leaves nothing running on its side; the
droplet ends the sessions backupd opened, so no snapshot is held afterwards.

The droplet runs in its own network namespace; a stand-in pg_dump (the real one, its
output held after the first 64 KiB while the test holds a gate) makes "mid-dump" an event
the test waits for, not a moment it hopes to hit.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupd.local.procfs import processes_mentioning
from tests.e2e.conftest import BIN, Deployment, pg_source
from tests.e2e.conftest import deployment as one_host
from tests.harness.daemon import wait_for
from tests.harness.droplet import Droplet, start_droplet
from tests.harness.fleet import HostSpec
from tests.harness.postgres import PostgresCluster, postgres_bindir
from tests.harness.procs import is_root

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not is_root(), reason="network namespaces")]

HELD_PG_DUMP = """#!/bin/sh
# Stand-in for pg_dump: the real pg_dump's output, held after its first 64 KiB while the
# test holds the gate (dd bs=1 reads exactly that much: nothing of the dump is lost).
marks={marks}
{pg_dump} "$@" | {{
  dd bs=1 count=65536 2>/dev/null
  touch "$marks/midway.$$"
  while [ -e "$marks/hold" ]; do sleep 0.1; done
  cat
}}
"""


HELD_PSQL = """#!/bin/sh
# Stand-in for psql: held before it starts while the test holds the gate.
marks={marks}
touch "$marks/midway.$$"
while [ -e "$marks/hold" ]; do sleep 0.1; done
exec {psql} "$@"
"""


class HeldDump:
    def __init__(self, root: Path) -> None:
        self.marks = root / "marks"
        self.marks.mkdir(mode=0o777)
        self.marks.chmod(0o777)  # the droplet's login writes its marks here
        self.script = root / "held-pg_dump"
        real = postgres_bindir() / "pg_dump"
        self.script.write_text(HELD_PG_DUMP.format(marks=self.marks, pg_dump=real))
        self.script.chmod(0o755)
        self.psql = root / "held-psql"
        self.psql.write_text(HELD_PSQL.format(marks=self.marks, psql=postgres_bindir() / "psql"))
        self.psql.chmod(0o755)

    def hold(self) -> None:
        (self.marks / "hold").touch()

    def release(self) -> None:
        (self.marks / "hold").unlink(missing_ok=True)

    def midway(self) -> bool:
        return any(self.marks.glob("midway.*"))


@pytest.fixture(params=[True, False], ids=["sshd-client-alive", "sshd-defaults"])
def island(request: pytest.FixtureRequest, servers_dir: Path) -> Iterator[Droplet]:
    """A droplet on its own link; with or without sshd's ClientAlive probes."""
    base = Path(tempfile.mkdtemp(dir=servers_dir))
    base.chmod(0o755)  # the droplet's login reads its keys here
    d = start_droplet(base, "island", own_network=True, client_alive=request.param)
    yield d
    d.stop()


@pytest.fixture
def held(island: Droplet) -> Iterator[HeldDump]:
    h = HeldDump(island.root)
    yield h
    h.release()


def deployment(root: Path, droplet: Droplet, sources: dict[str, dict[str, object]]) -> Deployment:
    spec = HostSpec("web1", droplet, sources, settings={"dead_peer_timeout": "10s"})  # type: ignore[arg-type]
    return one_host(root, spec)


def sessions(cluster: PostgresCluster, db: str) -> list[str]:
    """Sessions on ``db`` other than the one asking: "state application" per line."""
    sql = (
        f"SELECT state || ' ' || application_name FROM pg_stat_activity WHERE datname = "
        f"'{db}' AND pid <> pg_backend_pid()"
    )
    return [line for line in cluster.psql(sql).splitlines() if line]


def run_cut(d: Deployment, held: HeldDump, island: Droplet) -> str:
    """Start a backup, cut the link once the held tool is midway, return stderr."""
    held.hold()
    backup = subprocess.Popen(
        [str(BIN / "backupctl"), "--config", str(d.config), "backup", "now", "web1/maindb"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for("the held tool to be midway", held.midway, timeout=120)
        assert island.link is not None
        island.link.cut()
        held.release()  # the droplet carries on, into a connection nobody reads any more
        _out, err = backup.communicate(timeout=280)  # safety net only: idle_timeout is 600s
    finally:
        if backup.poll() is None:
            backup.kill()
    assert backup.returncode == 1
    return err


def settled(cluster: PostgresCluster, db: str, client_alive: bool) -> bool:
    """The droplet gave everything back: the snapshot session ended at the server's
    idle_in_transaction_session_timeout; with ClientAlive, sshd ended pg_dump's too (with
    OpenSSH's defaults that one waits for the kernel to give up on the connection)."""
    left = sessions(cluster, db)
    if not client_alive:
        return not any(s.startswith("idle in transaction") for s in left)
    return not left


def test_link_cut_mid_dump(
    island: Droplet,
    held: HeldDump,
    pg_cluster: PostgresCluster,
    shop_db: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    source = pg_source(
        pg_cluster,
        databases=[shop_db],
        globals=False,
        session_timeout="8s",
        pg_dump=str(held.script),
    )
    d = deployment(tmp_path / "backupd", island, {"maindb": source})
    client_alive = "sshd-client-alive" in request.node.name
    err = run_cut(d, held, island)
    [(status, error)] = d.catalogue_rows("SELECT status, error FROM runs")
    assert status == "failed"
    assert (
        "web1/maindb: shop: connection to web1 lost while pg_dump was running: no answer "
        "for 10s (link cut or droplet down)"
    ) in error
    assert err.strip().splitlines() == [error]
    assert d.archives("web1") == []
    assert processes_mentioning(str(d.root)) == []  # no borg, relay or rsh of ours left
    wait_for(
        "the droplet's sessions to end",
        lambda: settled(pg_cluster, shop_db, client_alive),
        timeout=120,
        failing=lambda: sessions(pg_cluster, shop_db),
    )
    if client_alive:
        assert island.link is not None
        island.link.restore()
        d.backupctl("backup", "now", "web1/maindb", check=True)
        assert len(d.archives("web1")) == 1


def test_link_cut_while_the_snapshot_session_opens(
    island: Droplet,
    held: HeldDump,
    pg_cluster: PostgresCluster,
    shop_db: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Another member: the cut comes while psql is starting; the facts wait (up to an
    hour of facts_timeout) ends as soon as the connection is known to be dead."""
    source = pg_source(
        pg_cluster, databases=[shop_db], globals=False, session_timeout="8s", psql=str(held.psql)
    )
    d = deployment(tmp_path / "backupd", island, {"maindb": source})
    run_cut(d, held, island)
    [(error,)] = d.catalogue_rows("SELECT error FROM runs")
    assert (
        "web1/maindb: shop: taking a snapshot and facts failed: web1: connection lost "
        "while " + str(held.psql) + " was running (no answer from the droplet)"
    ) in error
    assert d.archives("web1") == []
    client_alive = "sshd-client-alive" in request.node.name
    wait_for(
        "the droplet's sessions to end",
        lambda: settled(pg_cluster, shop_db, client_alive),
        timeout=120,
        failing=lambda: sessions(pg_cluster, shop_db),
    )
