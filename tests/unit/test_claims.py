"""Claims on a real SQLite catalogue (decision 0012): a queued row is won by one claimant,
expires after its lease (mail) or with its holder's process (owed cleanups), and is released
after a failure."""

from __future__ import annotations

import socket
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from backupd.actions.reconcile import holder_alive
from backupd.catalogue import Catalogue
from backupd.catalogue.claims import claim_token, token_holder
from backupd.catalogue.models import Report, utcnow
from backupd.catalogue.reports import QUEUED, SENT

LEASE = timedelta(minutes=10)


@pytest.fixture
def cat(tmp_path: Path) -> Catalogue:
    return Catalogue(f"sqlite:///{tmp_path / 'catalogue.db'}")


def queued(cat: Catalogue) -> int:
    now = utcnow()
    return cat.add_report(
        period_start=now,
        period_end=now,
        verdict="pass",
        subject="s",
        recipients=["ops@example.org"],
        message="m",
        status=QUEUED,
    )


def expire(cat: Catalogue) -> None:
    """Every report claim made longer ago than the lease (its holder crashed, say)."""
    with cat.session() as s:
        s.execute(
            update(Report)
            .where(Report.claimed_by.is_not(None))
            .values(claimed_at=utcnow() - LEASE - timedelta(seconds=1))
        )


def test_tokens_name_this_host_and_process() -> None:
    import os

    token = claim_token()
    assert token_holder(token) == (socket.gethostname(), os.getpid())
    assert token != claim_token()  # two claims of one process differ
    assert token_holder(None) is None and token_holder("not a token") is None


def test_a_report_is_won_by_one_sender_and_taken_over_after_the_lease(cat: Catalogue) -> None:
    report = queued(cat)
    first = cat.claim_report(report, "a:1:x", LEASE)
    assert first is not None and first.claimed_by == "a:1:x"
    assert cat.claim_report(report, "b:2:y", LEASE) is None  # a live claim is not stolen
    expire(cat)
    assert cat.claim_report(report, "b:2:y", LEASE) is not None  # a is taken for dead
    # a was only slow: it sent, it says so (the report was sent) and learns it lost the claim
    assert cat.report_sent(report, "a:1:x") is False
    row = cat.report(report)
    assert (row.status, row.attempts, row.claimed_by) == (SENT, 1, None)
    # b's send failed: a sent report is not put back in the queue
    assert cat.report_failed(report, "b:2:y", "refused", 60.0) is None
    assert cat.report(report).status == SENT
    assert cat.claim_report(report, "c:3:z", LEASE) is None  # nothing left to send


def test_a_failed_send_releases_the_report_with_its_backoff(cat: Catalogue) -> None:
    report = queued(cat)
    assert cat.claim_report(report, "a:1:x", LEASE) is not None
    assert cat.report_failed(report, "b:2:y", "not mine", 60.0) is None  # only the holder
    released = cat.report_failed(report, "a:1:x", "554 refused", 60.0)
    assert released is not None
    assert (released.status, released.attempts, released.claimed_by) == (QUEUED, 1, None)
    assert released.last_error == "554 refused" and released.next_attempt_at is not None
    assert cat.claim_report(report, "b:2:y", LEASE, due_at=utcnow()) is None  # not due yet
    later = released.next_attempt_at + timedelta(seconds=1)
    assert cat.claim_report(report, "b:2:y", LEASE, due_at=later) is not None


def test_one_sender_at_a_time_holds_an_alert_key(cat: Catalogue) -> None:
    assert cat.claim_alert_key("disk:warning", "a:1:x", LEASE)
    assert not cat.claim_alert_key("disk:warning", "b:2:y", LEASE)
    assert cat.claim_alert_key("stale:web1/db", "b:2:y", LEASE)  # keys are independent
    cat.release_alert_key("disk:warning", "b:2:y")  # not b's to release
    assert not cat.claim_alert_key("disk:warning", "b:2:y", LEASE)
    cat.release_alert_key("disk:warning", "a:1:x")
    assert cat.claim_alert_key("disk:warning", "b:2:y", LEASE)


def test_a_sender_claims_only_the_events_nobody_else_holds(cat: Catalogue) -> None:
    held = [
        cat.record_alert("disk_warning", f"full {i}", dedup_key="disk:warning") for i in range(2)
    ]
    assert [e.id for e in cat.claim_alerts("disk:warning", "a:1:x", LEASE)] == held
    late = cat.record_alert("disk_warning", "full 2", dedup_key="disk:warning")
    other = cat.record_alert("disk_critical", "full", dedup_key="disk:critical")
    assert [e.id for e in cat.claim_alerts("disk:warning", "b:2:y", LEASE)] == [late]
    cat.alerts_failed(held, "b:2:y", "not b's")  # a release by another token changes nothing
    assert all(e.attempts == 0 for e in cat.alerts() if e.id in held)
    cat.alerts_mailed(held, "a:1:x", utcnow())
    events = {e.id: e for e in cat.alerts()}
    assert all(events[i].sent_at and events[i].claimed_by is None for i in held)
    assert events[late].claimed_by == "b:2:y" and events[other].claimed_by is None


def test_an_owed_cleanup_belongs_to_its_live_run_then_to_one_taker(cat: Catalogue) -> None:
    owed = cat.add_cleanup("web1", "uploads", None, ["snapshot-drop", "vg0/data"])
    [row] = cat.pending_cleanups()
    assert holder_alive(row.claimed_by)  # this process owes it, and lives
    assert not cat.claim_cleanup(owed, None, "r:1:x")  # not what the taker saw
    assert cat.claim_cleanup(owed, row.claimed_by, "r:1:x")
    assert not cat.claim_cleanup(owed, row.claimed_by, "r:2:y")  # the second taker is late
    cat.cleanup_failed(owed, "unreachable")
    [row] = cat.pending_cleanups()
    assert (row.attempts, row.claimed_by) == (1, None)  # released for the next start


def test_a_claim_holder_is_alive_while_its_process_runs() -> None:
    ended = subprocess.Popen(["true"])
    ended.wait()
    host = socket.gethostname()
    assert not holder_alive(f"{host}:{ended.pid}:x")
    assert holder_alive("elsewhere.example:1:x")  # another machine's: not ours to judge
    assert not holder_alive(None) and not holder_alive("garbage")
