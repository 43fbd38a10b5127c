"""A clean stop is not a crash: no false "restarted after a crash" alert (issue 11, case 2).

Every way backupd ends on purpose (``--once`` with exit 0 or 1, SIGTERM to the daemon,
SIGTERM or Ctrl-C to ``--once``) leaves the pid file empty, so the next start is silent;
only a process that could not clean up (SIGKILL: test_daemon's crash test) is alerted.
"""

from __future__ import annotations

import signal
import sqlite3

import pytest

from tests.harness.daemon import NEVER, DaemonProc, Fleet, wait_for

pytestmark = pytest.mark.e2e


def alerts(fleet: Fleet) -> list[tuple[str, str]]:
    with sqlite3.connect(fleet.state / "catalogue.db") as c:
        return c.execute("SELECT kind, message FROM alert_events ORDER BY id").fetchall()


def pid_file(fleet: Fleet) -> str:
    return (fleet.state / "backupd.pid").read_text()


def once(fleet: Fleet) -> DaemonProc:
    d = DaemonProc(
        fleet.config, fleet.root / f"once-{len(fleet.daemons)}.log", extra_args=["--once"]
    )
    fleet.daemons.append(d)
    return d.start()


def test_once_and_daemon_stops_leave_no_crash_alert(fleet: Fleet) -> None:
    fleet.write({"a": {"s1": fleet.source("one", schedule=NEVER)}})
    assert once(fleet).wait(timeout=300) == 0
    assert pid_file(fleet) == ""

    # exit 1: a source failed; still a clean stop (the failure is alerted on its own)
    fleet.write(
        {
            "a": {
                "s1": fleet.source("one", schedule=NEVER),
                "bad": {"kind": "sqlite", "path": "/nonexistent.db"},
            }
        }
    )
    assert once(fleet).wait(timeout=300) == 1
    assert pid_file(fleet) == ""

    daemon = fleet.start()
    wait_for("the daemon to be up", lambda: "backupd started" in daemon.log(), daemon=daemon)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    assert pid_file(fleet) == ""

    assert once(fleet).wait(timeout=300) == 1  # the next start: silent about the past
    kinds = [kind for kind, _ in alerts(fleet)]
    assert "daemon_restarted" not in kinds
    assert kinds == ["backup_failed", "backup_failed"]  # bad, on each --once: deserved


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_once_stopped_mid_dump_is_interrupted_quietly(fleet: Fleet, sig: signal.Signals) -> None:
    """systemd stopping a timer's run, or Ctrl-C: the run is interrupted, nothing left
    running, no alert now or at the next start."""
    fleet.write(
        {
            "a": {
                "s1": fleet.source("one", schedule=NEVER),
                "s2": fleet.source("two", schedule=NEVER),
            }
        }
    )
    fleet.gate.hold()
    run = once(fleet)
    wait_for("the dump to start", lambda: fleet.gate.started(), daemon=run)
    run.signal(sig)
    assert run.wait() == 128 + sig
    assert pid_file(fleet) == ""
    [interrupted] = fleet.runs()  # s2 was never started
    assert interrupted["status"] == "interrupted"
    assert "backupd --once was asked to stop" in interrupted["error"]
    assert fleet.leftovers() == []
    assert fleet.archives("a") == []
    assert alerts(fleet) == []

    fleet.gate.release()
    assert once(fleet).wait(timeout=300) == 0
    assert alerts(fleet) == []
    assert [r["status"] for r in fleet.runs()] == ["interrupted", "succeeded", "succeeded"]


def two_hosts(fleet: Fleet) -> None:
    fleet.write(
        {
            "a": {
                "s1": fleet.source("one", schedule=NEVER),
                "s2": fleet.source("two", schedule=NEVER),
            },
            "b": {"s3": fleet.source("three", schedule=NEVER)},
        },
        daemon="workers = 2\n",
    )


def test_once_backs_up_hosts_in_parallel_never_two_jobs_on_one_host(fleet: Fleet) -> None:
    """As the daemon does it: a and b at once (two workers), a's sources one after the
    other (one repository, one writer)."""
    two_hosts(fleet)
    fleet.gate.hold()
    run = once(fleet)
    wait_for("both hosts' dumps", lambda: fleet.gate.started() == 2 or None, daemon=run)
    running = [(r["host"], r["source"]) for r in fleet.runs() if r["status"] == "running"]
    assert sorted(running) == [("a", "s1"), ("b", "s3")]
    fleet.gate.release()
    assert run.wait(timeout=300) == 0
    assert sorted(r["status"] for r in fleet.runs()) == ["succeeded"] * 3
    assert fleet.gate.started() == 3 and fleet.leftovers() == []
    assert alerts(fleet) == [] and pid_file(fleet) == ""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_once_stopped_with_hosts_in_parallel_interrupts_each_quietly(
    fleet: Fleet, sig: signal.Signals
) -> None:
    two_hosts(fleet)
    fleet.gate.hold()
    run = once(fleet)
    wait_for("both hosts' dumps", lambda: fleet.gate.started() == 2 or None, daemon=run)
    run.signal(sig)
    assert run.wait(timeout=120) == 128 + sig
    assert pid_file(fleet) == ""
    runs = fleet.runs()
    assert [r["status"] for r in runs] == ["interrupted"] * 2  # a's s2 never started
    assert all("backupd --once was asked to stop" in r["error"] for r in runs)
    assert fleet.leftovers() == [] and fleet.archives("a") == fleet.archives("b") == []
    assert alerts(fleet) == []
    fleet.gate.release()
    assert once(fleet).wait(timeout=300) == 0
    assert alerts(fleet) == []
