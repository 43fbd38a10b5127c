"""kill_tree: the hard stop of a process tree (the daemon's after its grace, the tests'
crash) leaves nothing of the tree running and lets none of it act on another's death."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupd.local.process import Invocation, run_local
from backupd.local.procfs import descendants, kill_tree, process_alive, processes_mentioning

# a worker as the daemon starts one: SIGTERM when its parent dies (PR_SET_PDEATHSIG), and a
# handler that records something (here: a file) before it exits
WORKER = """
import ctypes, signal, sys, time
ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
def recorded(*_):
    open(sys.argv[1], "w").write("the worker saw its parent die")
    sys.exit(0)
signal.signal(signal.SIGTERM, recorded)
open(sys.argv[1] + ".up", "w").close()
time.sleep(600)
"""
PARENT = "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(600)"


def wait_until(predicate: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def alive_with(marker: str) -> list[int]:
    return [p for p in processes_mentioning(marker) if process_alive(p)]


@pytest.fixture
def marker() -> Iterator[str]:
    """A word in the command line of every process a test starts; whatever is left with
    it is killed afterwards, pass or fail."""
    word = f"procfs-test-{uuid.uuid4().hex}"
    yield word
    for pid in alive_with(word):
        os.kill(pid, signal.SIGKILL)


def test_a_worker_does_not_act_on_its_parents_death_in_a_hard_stop(
    tmp_path: Path, marker: str
) -> None:
    said = tmp_path / marker
    worker = [sys.executable, "-c", WORKER, str(said)]
    parent = subprocess.Popen([sys.executable, "-c", PARENT, *worker])
    wait_until(lambda: Path(f"{said}.up").exists(), "the worker to start")
    (child,) = descendants(parent.pid)
    kill_tree(parent.pid)
    assert parent.wait(timeout=30) == -signal.SIGKILL
    wait_until(lambda: not process_alive(child), "the worker to be gone")
    assert not said.exists()  # killed frozen: its handler never ran


def test_what_the_tree_starts_while_it_is_stopped_is_stopped_too(
    tmp_path: Path, marker: str
) -> None:
    # a shell starting a long process every few milliseconds, as a loop of dumps would
    long = tmp_path / marker  # sleep, by a name that marks it
    long.symlink_to(shutil.which("sleep") or "/bin/sleep")
    loop = f"while :; do {long} 600 & sleep 0.005; done"
    shell = subprocess.Popen(["sh", "-c", loop, marker])
    wait_until(lambda: len(descendants(shell.pid)) > 20, "the shell to start some")
    kill_tree(shell.pid)
    assert shell.wait(timeout=30) == -signal.SIGKILL
    # a SIGKILL lands when the process is next scheduled: gone soon, never left running
    wait_until(lambda: not alive_with(marker), "every process the shell started to be gone")


def test_a_stopped_command_leaves_no_process_of_its_group_behind(
    tmp_path: Path, marker: str
) -> None:
    """A command stopped at its time limit (or with backupd) ends as a whole group before
    backupd goes on: a child still cleaning up after its leader ended (borg's gate shell)
    is waited for, not left running. The child's output goes elsewhere, so nothing waits
    for it by its pipes."""
    up = tmp_path / "up"
    slow = tmp_path / marker  # sleep, by a name that marks it
    slow.symlink_to(shutil.which("sleep") or "/bin/sleep")
    child = f'trap "{slow} 1; exit 0" TERM; touch {up}; while :; do {slow} 0.05; done'
    leader = (
        f"sh -c '{child}' >/dev/null 2>&1 & "
        f"while [ ! -e {up} ]; do sleep 0.01; done; exec {slow} 600"
    )
    done = run_local(("sh", "-c", leader), Invocation(timeout=2))
    assert done.timed_out
    assert alive_with(marker) == []  # the group waited for, within its grace
