"""The dead-man's switch (healthchecks.io style) against a real HTTP server on loopback:
where the start and the end go, and that a switch that cannot be reached fails nothing."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from backupd.notify.ping import ping_end, ping_start
from tests.harness.recorder import recording_server


@pytest.fixture
def switch() -> Iterator[tuple[str, list[str]]]:
    with recording_server() as server:
        yield server


def test_start_end_and_exit_status_go_before_the_query_string(
    switch: tuple[str, list[str]],
) -> None:
    base, seen = switch
    ping_start(f"{base}/abc/")
    ping_end(f"{base}/abc/", 0)
    ping_end(f"{base}/abc", 7)
    ping_start(f"{base}/push/tok?rid=42")
    ping_end(f"{base}/push/tok?rid=42", 4)
    ping_start(None)  # no switch configured: nothing
    assert seen == ["/abc/start", "/abc/", "/abc/7", "/push/tok/start?rid=42", "/push/tok/4?rid=42"]


def test_a_switch_that_cannot_be_reached_is_a_warning_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        ping_end("http://127.0.0.1:9/none", 6)  # discard port: refused
    assert "ping http://127.0.0.1:9/none/6 failed" in caplog.text
