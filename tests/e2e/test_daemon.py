"""The real `backupd` daemon process: schedules, limits, retries, signals, crash recovery.

Sources are SQLite databases dumped by a gated stand-in for sqlite3 on the droplet's side,
so a test can hold a dump mid-way (borg create running, waiting for data) from outside.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.harness.daemon import NEVER, Fleet, wait_for
from tests.harness.droplet import Droplet
from tests.harness.fleet import HostSpec

pytestmark = pytest.mark.e2e


def other_host_key(root: Path) -> str:
    """A real ed25519 key that is not the droplet's: what a changed host would show."""
    key = root / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    kind, data = key.with_suffix(".pub").read_text().split()[:2]
    return f"{kind} {data}"


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def max_overlap(runs: list[dict[str, Any]]) -> int:
    events = sorted(
        [(_time(r["started_at"]), 1) for r in runs] + [(_time(r["finished_at"]), -1) for r in runs]
    )
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def test_schedules_fire_within_limits(fleet: Fleet) -> None:
    fleet.gate.delay(0.5)
    sources = {"s1": fleet.source("a1"), "s2": fleet.source("a2")}
    fleet.write(
        {"a": sources, "b": {"s1": fleet.source("b1"), "s2": fleet.source("b2")}},
        daemon='workers = 2\nper_host = 2\nschedule = "*/2 * * * * *"\njitter = 0\n'
        "catch_up_delay = 0\n",
    )
    daemon = fleet.start()
    pairs = [(h, s) for h in ("a", "b") for s in ("s1", "s2")]
    enough = lambda: all(len(fleet.finished(h, s)) >= 2 for h, s in pairs)  # noqa: E731
    wait_for("two runs of each source", enough, daemon=daemon)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    runs = [r for r in fleet.runs() if r["finished_at"]]
    assert {r["status"] for r in runs} == {"succeeded"}
    for host in ("a", "b"):
        # per_host allows 2: only the one-writer-per-repository rule keeps these apart
        assert max_overlap([r for r in runs if r["host"] == host]) == 1, host
    assert max_overlap(runs) == 2  # both hosts at once, never more than `workers`
    assert {r["trigger"] for r in runs} >= {"catch-up", "schedule"}


def test_sighup_reloads_a_good_config_and_keeps_running_on_a_broken_one(fleet: Fleet) -> None:
    s1 = fleet.source("one", schedule=NEVER)
    fleet.write({"a": {"s1": s1}}, daemon='catch_up_delay = "1h"\njitter = 0\n')
    daemon = fleet.start()
    wait_for("start", lambda: "backupd started" in daemon.log(), daemon=daemon)
    s2 = fleet.source("two", schedule="*/2 * * * * *")
    fleet.write({"a": {"s1": s1, "s2": s2}}, daemon='catch_up_delay = "1h"\njitter = 0\n')
    daemon.signal(signal.SIGHUP)
    wait_for("a run of the new source", lambda: fleet.finished("a", "s2"), daemon=daemon)
    assert "configuration reloaded" in daemon.log()

    fleet.config.write_text(fleet.config.read_text() + "\n[daemon.nonsense]\nworkers = 0\n")
    daemon.signal(signal.SIGHUP)
    wait_for("the refusal", lambda: "reload refused" in daemon.log(), daemon=daemon)
    done = len(fleet.finished("a", "s2"))
    # still scheduling, and its workers use the validated snapshot, not the broken file
    wait_for(
        "another run after the broken reload",
        lambda: len(fleet.finished("a", "s2")) > done,
        daemon=daemon,
    )
    assert not fleet.finished("a", "s2", "failed")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


def test_sigterm_lets_a_job_finish_within_the_grace_period(fleet: Fleet) -> None:
    fleet.gate.delay(2)
    fleet.write(
        {"a": {"s1": fleet.source("one", schedule=NEVER)}},
        daemon='catch_up_delay = 0\nstop_grace = "2m"\n',
    )
    daemon = fleet.start()
    wait_for("the dump to start", lambda: fleet.gate.started(), daemon=daemon)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    assert [r["status"] for r in fleet.runs()] == ["succeeded"]
    assert len(fleet.archives("a")) == 1


def test_sigterm_mid_job_stops_it_cleanly(fleet: Fleet) -> None:
    fleet.gate.hold()
    fleet.write(
        {"a": {"s1": fleet.source("one", schedule=NEVER)}},
        daemon='catch_up_delay = 0\nstop_grace = "1s"\n',
    )
    daemon = fleet.start()
    wait_for("the dump to start", lambda: fleet.gate.started(), daemon=daemon)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=120) == 0
    (run,) = fleet.runs()
    assert run["status"] == "interrupted"
    assert "stopped before it finished" in run["error"]
    assert fleet.archives("a") == []  # no archive, not even a checkpoint
    # the log says it was stopped (or killed, past the 1 s grace), never that it failed
    log = daemon.log()
    assert "backup a/s1: stopped with backupd after" in log or "worker killed by signal" in log
    assert "failed after" not in log and "failed (exit" not in log, log
    wait_for(
        "no process left",
        lambda: not fleet.leftovers() or None,
        timeout=30,
        failing=fleet.leftovers,
    )


def test_a_hung_job_is_stopped_at_its_deadline(fleet: Fleet) -> None:
    fleet.gate.hold()
    fleet.write(
        {"a": {"s1": fleet.source("one", schedule=NEVER, deadline="2s")}},
        daemon="catch_up_delay = 0\nretries = 3\n",
    )
    daemon = fleet.start()
    wait_for("the run to fail", lambda: fleet.finished("a", "s1", "failed"), daemon=daemon)
    wait_for(
        "the droplet side to stop",
        lambda: not fleet.leftovers_on_droplet(),
        failing=fleet.leftovers_on_droplet,
    )
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    (run,) = fleet.runs()  # a deadline is not retried
    assert "the job deadline of 2s passed" in run["error"]
    assert fleet.archives("a") == []
    with sqlite3.connect(fleet.state / "catalogue.db") as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM alert_events")]
    assert kinds == ["backup_failed"]


def test_crash_mid_backup_then_restart(fleet: Fleet) -> None:
    fleet.gate.hold()
    fleet.write({"a": {"s1": fleet.source("one", schedule=NEVER)}}, daemon="catch_up_delay = 0\n")
    first = fleet.start()
    wait_for("the dump to start", lambda: fleet.gate.started(), daemon=first)
    first.stop()  # SIGKILL to the daemon and every process it started, as a crash would
    assert [r["status"] for r in fleet.runs()] == ["running"]

    fleet.gate.release()
    second = fleet.start()
    wait_for("the catch-up to succeed", lambda: fleet.finished("a", "s1"), daemon=second)
    second.signal(signal.SIGTERM)
    assert second.wait() == 0
    crashed, caught_up = fleet.runs()
    assert crashed["status"] == "interrupted" and "interrupted" in crashed["error"]
    assert caught_up["status"] == "succeeded" and caught_up["trigger"] == "catch-up"
    # borg itself died with the daemon (pdeathsig) and released its lock, or a lock left
    # by a SIGKILLed borg was broken at the start: either way the catch-up got in
    assert len(fleet.archives("a")) == 1  # the good one; nothing from the crashed run
    with sqlite3.connect(fleet.state / "catalogue.db") as c:
        restarted = c.execute("SELECT message FROM alert_events WHERE kind = 'daemon_restarted'")
        [(message,)] = restarted.fetchall()  # once: the clean stop above left no trace
    assert "ended without a clean stop (crash, kill or power loss)" in message


def test_maintenance_jobs_run_on_their_schedules(fleet: Fleet) -> None:
    fleet.write(
        {"a": {"s1": fleet.source("one", schedule=NEVER)}},
        daemon="catch_up_delay = 0\njitter = 0\n",
    )
    every = "*/2 * * * * *"
    text = fleet.config.read_text()
    fleet.config.write_text(
        text + f'\n[maintenance]\nprune = "{every}"\ncheck = "{every}"\n'
        f'compact = "{NEVER}"\ncatalogue = "{every}"\n'
    )
    daemon = fleet.start()

    def done() -> set[str]:
        if not (fleet.state / "catalogue.db").exists():
            return set()
        with sqlite3.connect(fleet.state / "catalogue.db") as db:
            try:
                rows = db.execute("SELECT job FROM maintenance_runs WHERE status = 'succeeded'")
                return {job for (job,) in rows}
            except sqlite3.OperationalError:  # the schema is still being created
                return set()

    wait_for(
        "prune, check and the catalogue copy",
        lambda: {"prune", "check", "catalogue"} <= done(),
        daemon=daemon,
    )
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    assert fleet.finished("a", "s1")  # the catch-up backup ran alongside
    with sqlite3.connect(fleet.state / "catalogue.db") as db:
        failed = db.execute(
            "SELECT job, error FROM maintenance_runs WHERE status != 'succeeded'"
            " AND status != 'interrupted'"
        ).fetchall()
    assert failed == []


def test_transient_failures_retry_with_backoff_permanent_ones_do_not(
    fleet: Fleet, droplet: Droplet
) -> None:
    down = HostSpec("down", droplet, {"s1": fleet.source("d", schedule=NEVER)})
    badkey = HostSpec(
        "badkey",
        droplet,
        {"s1": fleet.source("k", schedule=NEVER)},
        host_key=other_host_key(fleet.root),
    )
    fleet.write(
        {},
        daemon='catch_up_delay = 0\nretries = 2\nretry_backoff = "1s"\n',
        host_overrides={"down": down, "badkey": badkey},
    )
    text = fleet.config.read_text().replace(f"port = {droplet.port}", "port = 1", 1)
    fleet.config.write_text(text)  # the first host ("down") now points at a closed port
    daemon = fleet.start()
    wait_for(
        "three attempts on the unreachable host",
        lambda: len(fleet.finished("down", "s1", "failed")) == 3,
        daemon=daemon,
    )
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    down_runs = [r for r in fleet.runs() if r["host"] == "down"]
    assert [r["trigger"] for r in down_runs] == ["catch-up", "retry", "retry"]
    assert all("cannot connect" in r["error"] for r in down_runs)
    key_runs = [r for r in fleet.runs() if r["host"] == "badkey"]
    assert len(key_runs) == 1 and key_runs[0]["status"] == "failed"
    assert "HOST KEY CHANGED" in key_runs[0]["error"]
    with sqlite3.connect(fleet.state / "catalogue.db") as c:
        alerts = sorted(c.execute("SELECT kind, host FROM alert_events WHERE host IS NOT NULL"))
    # the unreachable host: one alert, after its last retry; the changed key: at once
    assert alerts == [("backup_failed", "down"), ("host_key_changed", "badkey")]
