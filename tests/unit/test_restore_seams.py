"""The restore seams without servers: the one-table SQL filter and feeding a local command."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from backupd.actions.context import Context
from backupd.actions.reconcile import interrupt_dead_restores
from backupd.catalogue.models import Restore
from backupd.errors import MissingProgramError, RemoteError
from backupd.local.process import CommandResult, Invocation, feed_local, run_local
from backupd.remote.shells import LocalShell
from jobs.registry import load_config
from jobs.sqlfilter import OneTableFilter

DUMP = b"""/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;

--
-- Table structure for table `customers`
--

DROP TABLE IF EXISTS `customers`;
CREATE TABLE `customers` (`id` int);

--
-- Dumping data for table `customers`
--

INSERT INTO `customers` VALUES (1),(2);

--
-- Table structure for table `odd``name`
--

CREATE TABLE `odd``name` (`id` int);
INSERT INTO `odd``name` VALUES (7);

--
-- Table structure for table `orders`
--

CREATE TABLE `orders` (`id` int);

--
-- Dumping data for table `orders`
--

INSERT INTO `orders` VALUES (1),(2),(3);
/*!50003 CREATE*/ /*!50003 TRIGGER t_orders BEFORE INSERT ON orders FOR EACH ROW SET @x=1 */;;

--
-- Temporary table structure for view `v`
--

CREATE TABLE `v` (`id` int);

--
-- Dumping routines for database 'shop'
--

CREATE PROCEDURE p() SELECT 1;
/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;
/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;
-- Dump completed"""


def filtered(table: str, chunk: int) -> tuple[bytes, bool]:
    f = OneTableFilter(table)
    out = b"".join(f.feed(DUMP[i : i + chunk]) for i in range(0, len(DUMP), chunk)) + f.end()
    return out, f.matched


def test_one_table_keeps_header_its_sections_and_footer_at_any_chunking() -> None:
    whole, matched = filtered("orders", len(DUMP))
    assert matched
    assert b"CREATE TABLE `orders`" in whole and b"VALUES (1),(2),(3)" in whole
    assert b"TRIGGER t_orders" in whole  # triggers travel with their table's data
    assert b"customers" not in whole and b"odd" not in whole
    assert b"CREATE TABLE `v`" not in whole and b"PROCEDURE" not in whole
    assert whole.startswith(b"/*!40101 SET @OLD_CHARACTER_SET_CLIENT")
    assert b"SET TIME_ZONE=@OLD_TIME_ZONE" in whole and whole.endswith(b"-- Dump completed")
    for chunk in (1, 7, 64):
        assert filtered("orders", chunk) == (whole, True)


def test_backquoted_names_and_unknown_tables() -> None:
    odd, matched = filtered("odd`name", 5)
    assert matched and b"VALUES (7)" in odd and b"orders" not in odd
    none, matched = filtered("nope", 100)
    assert not matched and b"INSERT" not in none


def producer(chunks: list[bytes]) -> Callable[[Callable[[bytes], object]], None]:
    def produce(sink: Callable[[bytes], object]) -> None:
        for c in chunks:
            sink(c)

    return produce


def test_feed_local_hands_over_everything() -> None:
    script = "import sys; d = sys.stdin.buffer.read(); print(len(d))"
    result = feed_local(
        (sys.executable, "-c", script), Invocation(timeout=60), producer([b"x" * 100_000] * 30)
    )
    assert result.ok and result.complete and result.fed_bytes == 3_000_000
    assert result.output_tail() == "3000000"


def test_feed_local_stops_the_producer_when_the_consumer_dies() -> None:
    script = "import sys; sys.stdin.buffer.read(10); sys.stderr.write('bad input'); sys.exit(3)"
    produced = 0

    def endless(sink: Callable[[bytes], object]) -> None:
        nonlocal produced
        while True:
            sink(b"y" * 65536)
            produced += 1

    result = feed_local((sys.executable, "-c", script), Invocation(timeout=60), endless)
    assert result.exit_status == 3 and not result.complete and not result.ok
    assert "bad input" in result.output_tail()
    assert produced < 10_000


def test_feed_local_deadline_stops_a_stuck_consumer() -> None:
    script = "import time; time.sleep(60)"
    result = feed_local(
        (sys.executable, "-c", script), Invocation(timeout=1.0), producer([b"z" * 1_000_000] * 200)
    )
    assert result.timed_out and not result.ok


def test_a_restore_cut_short_is_marked_interrupted_and_its_staging_removed(
    tmp_path: Path,
) -> None:
    config = tmp_path / "backupd.toml"
    config.write_text(f"""
state_dir = "{tmp_path / "state"}"
[store]
path = "{tmp_path / "store"}"
[passphrase]
file = "{tmp_path / "pass"}"
[hosts.web1]
address = "127.0.0.1"
user = "backup"
key = "{tmp_path / "key"}"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample"
""")
    ctx = Context(load_config(config))
    rid = ctx.catalogue.start_restore("web1", "files", ["a1"], "host-path", "web1:/srv/x")
    live = ctx.catalogue.start_restore("web1", "files", ["a2"], "dir", "/tmp/y")
    dead = subprocess.Popen(["true"])
    dead.wait()
    with ctx.catalogue.session() as s:
        s.get_one(Restore, rid).pid = dead.pid
    staging = ctx.private_dir(ctx.config.state_dir / "restore" / f"push-{rid}")
    (staging / "half.bin").write_bytes(b"x")
    interrupt_dead_restores(ctx)
    statuses = {r.id: (r.status, r.error) for r in ctx.catalogue.restores()}
    assert statuses[live] == ("running", None)  # our own process: alive
    status, error = statuses[rid]
    assert status == "interrupted" and "restore 1 into web1:/srv/x was interrupted" in str(error)
    assert not staging.exists()
    assert [a.kind for a in ctx.catalogue.alerts()] == ["restore_interrupted"]


def test_a_local_command_answers_like_a_remote_one(tmp_path: Path) -> None:
    """One result type on both sides: the restore code reads exit_status, stderr and
    timed_out the same way whether the target is the backup host or a droplet."""
    shell = LocalShell(tmp_path)
    failed = shell.run(("sh", "-c", "echo oops >&2; exit 4"), timeout=30)
    assert isinstance(failed, CommandResult)
    assert (failed.exit_status, failed.stderr_tail(), failed.timed_out) == (4, "oops", None)
    stuck = shell.run(("sleep", "30"), timeout=0.5)
    assert (stuck.exit_status, stuck.timed_out, stuck.ok) == (None, "deadline", False)


@pytest.mark.parametrize("program", ["no-such-restore-tool", "/nonexistent/pg_restore"])
def test_a_program_missing_on_the_backup_host_is_named_not_a_droplet_error(
    tmp_path: Path, program: str
) -> None:
    shell = LocalShell(tmp_path)
    with pytest.raises(MissingProgramError, match="not found on the backup host") as run:
        shell.run((program, "--list"), timeout=30)
    assert not isinstance(run.value, RemoteError) and run.value.exit_code == 18
    with pytest.raises(MissingProgramError):
        shell.feed((program,), producer([b"x"]), timeout=30)
    plain = tmp_path / "tool"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    with pytest.raises(MissingProgramError, match="not executable"):
        run_local((str(plain),), Invocation(timeout=30))
