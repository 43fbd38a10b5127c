"""A real Prometheus scrapes the daemon's /metrics (issue 17): the last success and the
last verified restore of every configured source come back through PromQL."""

from __future__ import annotations

import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import run_tool
from tests.harness.daemon import NEVER, Fleet, wait_for
from tests.harness.procs import free_port
from tests.harness.prometheus import PrometheusServer, start_prometheus

pytestmark = pytest.mark.e2e


@pytest.fixture
def prometheus_dir(tmp_path: Path) -> Iterator[list[PrometheusServer]]:
    started: list[PrometheusServer] = []
    yield started
    for server in started:
        server.stop()


def test_prometheus_reads_every_sources_last_success_and_verified_restore(
    fleet: Fleet, prometheus_dir: list[PrometheusServer], tmp_path: Path
) -> None:
    port = free_port()
    sources = {
        "one": fleet.source("one", schedule=NEVER),
        "two": fleet.source("two", schedule=NEVER),
    }
    fleet.write(
        {"a": sources},
        # catch_up_delay: "two" never ran, and its catch-up must not come during the test
        daemon=f'schedule = "{NEVER}"\ncatch_up_delay = "1h"\n'
        f'[metrics]\nlisten = "127.0.0.1:{port}"',
    )
    run_tool("backupctl", "--config", str(fleet.config), "backup", "now", "a/one", check=True)
    run_tool("backupctl", "--config", str(fleet.config), "drill", "a/one", check=True)
    daemon = fleet.start()

    def served() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return b"backupd_source_last_success_timestamp_seconds" in r.read()
        except OSError:
            return False

    wait_for("the daemon's /metrics", served, daemon=daemon)
    prometheus = start_prometheus(tmp_path / "prometheus", "backupd", [f"127.0.0.1:{port}"])
    prometheus_dir.append(prometheus)

    def scraped() -> dict[str, float]:
        found = prometheus.query("backupd_source_last_success_timestamp_seconds")
        return {r["metric"]["source"]: float(r["value"][1]) for r in found}

    success = wait_for(
        "two sources in Prometheus",
        lambda: len(scraped()) == 2 and scraped(),
        failing=prometheus.log,
    )
    assert success["one"] > 0 and success["two"] == 0  # two never ran: 0 is "never"
    # over the last minute, not this instant: one scrape slower than its 1 s timeout on a
    # busy machine marks every series stale until the next
    verified = {
        r["metric"]["source"]: float(r["value"][1])
        for r in prometheus.query(
            "last_over_time(backupd_source_last_verified_timestamp_seconds[1m])"
        )
    }
    assert verified["one"] >= success["one"] and verified["two"] == 0
    [up] = prometheus.query('max_over_time(up{job="backupd"}[1m])')
    assert up["value"][1] == "1"
    ages = prometheus.query(
        'time() - last_over_time(backupd_source_last_success_timestamp_seconds{source="one"}[1m])'
    )
    assert 0 <= float(ages[0]["value"][1]) < 3600
    named = prometheus.query('{__name__=~"backupd_.*"}[1m]')  # each series' samples
    assert named
    for labels in (r["metric"] for r in named):
        assert set(labels) - {"__name__", "job", "instance"} <= {
            "host",
            "source",
            "item",
            "state",
            "version",
        }
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
