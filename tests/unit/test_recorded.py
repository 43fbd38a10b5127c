"""settle: the row a verb wrote first is completed from how the work ended, once for
backup, maintenance and restores (backupd/actions/recorded.py)."""

from __future__ import annotations

import pytest

from backupd.actions.recorded import Ending, settle
from backupd.catalogue import RunStatus
from backupd.errors import RemoteError, StoppedError


class Rows:
    def __init__(self) -> None:
        self.finished: list[tuple[str, RunStatus, str | None, str | None]] = []

    def finish(self, end: Ending) -> None:
        self.finished.append((end.how, end.run_status, end.error, end.stderr_tail))


def test_work_that_succeeds_leaves_the_row_to_its_caller() -> None:
    rows = Rows()
    with settle("web1/db", rows.finish) as ending:
        pass
    assert ending.ok and ending.run_status is RunStatus.SUCCEEDED and rows.finished == []


def test_a_stop_is_interrupted_and_may_run_again() -> None:
    rows = Rows()
    with settle("web1/db", rows.finish) as ending:
        raise StoppedError("stopped by SIGTERM")
    assert rows.finished == [
        ("stopped", RunStatus.INTERRUPTED, "web1/db: stopped by SIGTERM", None)
    ]
    assert ending.transient and isinstance(ending.exception, StoppedError)


def test_a_failure_keeps_its_stderr_tail_and_whether_it_is_transient() -> None:
    rows = Rows()
    tail = "pg_dump: error: connection to server failed\n"
    with settle("web1/db", rows.finish) as ending:
        raise RemoteError("pg_dump exited 1", transient=True, stderr_tail=tail)
    [(how, status, error, kept)] = rows.finished
    assert (how, status, kept) == ("failed", RunStatus.FAILED, tail)
    assert error == "web1/db: pg_dump exited 1: pg_dump: error: connection to server failed"
    assert ending.transient


def test_a_restore_records_its_failure_and_still_raises_it() -> None:
    rows = Rows()
    with pytest.raises(RemoteError), settle(None, rows.finish, reraise=True):
        raise RemoteError("pg_restore exited 1")
    assert rows.finished == [("failed", RunStatus.FAILED, "pg_restore exited 1", "")]


def test_a_bug_completes_the_row_as_failed_and_propagates() -> None:
    rows = Rows()
    with pytest.raises(KeyError), settle("store: prune", rows.finish):
        raise KeyError("archive")
    assert rows.finished == [
        ("crashed", RunStatus.FAILED, "store: prune: internal error: KeyError: 'archive'", None)
    ]


def test_ctrl_c_is_a_stop_and_still_ends_the_command() -> None:
    rows = Rows()
    with pytest.raises(KeyboardInterrupt), settle(None, rows.finish, reraise=True):
        raise KeyboardInterrupt
    assert rows.finished == [
        ("stopped", RunStatus.INTERRUPTED, "stopped: interrupted (Ctrl-C)", None)
    ]
