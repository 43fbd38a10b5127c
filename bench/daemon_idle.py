"""daemon_idle_cpu_percent / daemon_idle_rss_mb: the daemon at rest with a fleet's config.

500 hosts x 4 sources (bench/catalogue.py's fleet: loopback addresses, nothing is
contacted), each backed up an hour ago (so no catch-up is owed), every schedule firing next
on 29 February: what the daemon costs between nights. After a settling time, its CPU time
(user + system, from /proc/PID/stat) over a minute, as a percentage of one core, and its
resident memory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backupd.catalogue import Catalogue, RunStatus
from backupd.catalogue.models import Run
from bench.catalogue import HOSTS, KINDS, SOURCES_PER_HOST, write_fleet
from jobs.registry import load_config

SETTLE = 15.0  # start-up: config, catalogue, scheduler
MEASURE = float(os.environ.get("BENCH_IDLE_SECONDS", 60))
IDLE_DAEMON = '[daemon]\nschedule = "0 2 29 2 *"\njitter = 0\n'


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def backed_up_an_hour_ago(url: str) -> None:
    cat = Catalogue(url)
    ago = datetime.now(UTC) - timedelta(hours=1)
    with cat.session() as s:
        for h in range(HOSTS):
            for k, kind in enumerate(KINDS[:SOURCES_PER_HOST]):
                sid = cat.ensure_source(f"h{h:03d}", "127.0.0.1", f"s{k}", kind)
                s.add(
                    Run(
                        source_id=sid,
                        trigger="schedule",
                        status=RunStatus.SUCCEEDED,
                        started_at=ago,
                        finished_at=ago,
                    )
                )
    cat.engine.dispose()


def run(work: Path, bindir: Path) -> dict[str, Any]:
    config = write_fleet(work / "idle-bench", IDLE_DAEMON)
    root = config.parent
    backed_up_an_hour_ago(load_config(config).catalogue_url)
    with open(root / "daemon.log", "wb") as out:
        proc = subprocess.Popen(
            [str(bindir / "backupd"), "--config", str(config)], stdout=out, stderr=out
        )
    try:
        time.sleep(SETTLE)
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon ended: {(root / 'daemon.log').read_text()[-2000:]}")
        before, t0 = _cpu_seconds(proc.pid), time.monotonic()
        time.sleep(MEASURE)
        used, wall = _cpu_seconds(proc.pid) - before, time.monotonic() - t0
        rss = _rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return {
        "daemon_idle_cpu_percent": round(100 * used / wall, 3),
        "daemon_idle_rss_mb": round(rss, 1),
    }


if __name__ == "__main__":
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(run(Path(tmp), Path(sys.executable).parent))
