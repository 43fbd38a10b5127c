"""Crontab lines as admins mean them, catch-up intervals, and the dispatch limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backupd.config.cron import cron_trigger, interval
from backupd.config.load import parse_config
from backupd.daemon.service import JobKey, blocked
from backupd.errors import ConfigError
from jobs.registry import kind_models

WEDNESDAY = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("0 6 * * 0", datetime(2026, 11, 29, 6, 0, tzinfo=UTC)),  # Sunday, as in crontab
        ("0 6 * * 7", datetime(2026, 11, 29, 6, 0, tzinfo=UTC)),
        ("0 6 * * 1-5", datetime(2026, 11, 26, 6, 0, tzinfo=UTC)),  # Thursday
        ("30 2 * * *", datetime(2026, 11, 26, 2, 30, tzinfo=UTC)),
        ("*/15 * * * * *", datetime(2026, 11, 25, 7, 0, 15, tzinfo=UTC)),  # seconds field
    ],
)
def test_crontab_lines_fire_when_an_admin_expects(expr: str, expected: datetime) -> None:
    assert cron_trigger(expr).get_next_fire_time(None, WEDNESDAY + timedelta(seconds=1)) in (
        expected,
    )


def test_interval_is_the_gap_between_firings() -> None:
    assert interval("0 2 * * *", WEDNESDAY) == timedelta(days=1)
    assert interval("0 3 * * 0", WEDNESDAY) == timedelta(days=7)
    assert interval("*/5 * * * * *", WEDNESDAY) == timedelta(seconds=5)


def test_bad_schedules_are_config_errors_with_their_key() -> None:
    raw = {
        "store": {"path": "/s"},
        "passphrase": {"file": "/p"},
        "daemon": {"schedule": "every night"},
        "hosts": {
            "h": {
                "address": "a",
                "user": "u",
                "key": "/k",
                "host_key": "ssh-ed25519 A",
                "sources": {"s": {"kind": "sqlite", "path": "/x.db", "schedule": "61 * * * *"}},
            }
        },
    }
    with pytest.raises(ConfigError) as e:
        parse_config(raw, Path("/etc/backupd/backupd.toml"), kinds=kind_models())
    keys = [p.split(": ")[1] for p in e.value.problems]
    assert keys == ["hosts.h.sources.s.schedule", "daemon.schedule"]


def test_one_writer_per_repository_and_per_host_limit() -> None:
    a1, a2, b1 = (
        JobKey("backup", "a", "s1"),
        JobKey("backup", "a", "s2"),
        JobKey("backup", "b", "s1"),
    )
    prune_a, catalogue = JobKey("prune", "a"), JobKey("catalogue", None)
    assert blocked(a2, [a1], per_host=2)  # same repository, whatever per_host says
    assert blocked(prune_a, [a1], per_host=5)
    assert not blocked(b1, [a1], per_host=1)
    assert not blocked(catalogue, [a1, b1], per_host=1)  # the store-wide repository is free
    assert blocked(JobKey("catalogue", None), [catalogue], per_host=1)
