"""A week in the life (issue 11): three droplets shaped like real servers, a config written
the way config/backupd.example.toml shows, six nights with churn on every droplet, run
through the real daemon (``backupd --once``, then the scheduling daemon with clean
restarts), one night hit by a ``kill -9`` of the whole process tree, one by a link cut
mid-dump.

Every night: no false alert and exactly the alerts the faults deserve, ``status`` true
per source, no archive outside the catalogue, no process or database session left
behind. At the end: a restore at a random past night equals the source as it was then,
and every source passes a drill.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backupd.local.procfs import kill_tree
from tests.e2e.conftest import Deployment
from tests.harness.daemon import DaemonProc, wait_for
from tests.harness.droplet import Droplet, start_droplet
from tests.harness.fleet import write_passphrase
from tests.harness.mariadb import MariaDBServer
from tests.harness.postgres import PostgresCluster
from tests.harness.procs import is_root, processes_naming
from tests.harness.smtp import SmtpServer
from tests.harness.week import MARIA_DB, MARIA_PASSWORD, PG_DATABASES, Fleet, Gate

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(not is_root(), reason="droplets on links of their own"),
]
SOURCES = {"db": ("maindb", "shopdb"), "app": ("sessions",), "files": ("uploads", "media")}
NEVER = "0 0 1 1 *"


@pytest.fixture
def fleet(
    servers_dir: Path, pg_cluster: PostgresCluster, mariadb_server: MariaDBServer
) -> Iterator[Fleet]:
    root = Path(tempfile.mkdtemp(prefix="week-", dir=servers_dir))
    root.chmod(0o755)
    droplets: dict[str, Droplet] = {}
    seed = random.randrange(1_000_000)
    print(f"week seed {seed}")  # shown when the test fails
    try:
        for name in SOURCES:
            droplets[name] = start_droplet(root, name, own_network=True)
        world = Fleet(root, droplets, pg_cluster, mariadb_server, Gate(root), random.Random(seed))
        world.build()
        yield world
    finally:
        if "world" in locals():
            world.gate.release()
            world.writer.stop()
        for d in droplets.values():
            d.stop()
        for db in (*PG_DATABASES, "wk_restored"):
            pg_cluster.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        mariadb_server.sql(f"DROP DATABASE IF EXISTS {MARIA_DB}")
        subprocess.run(["rm", "-rf", str(root)], check=False)


def write_config(fleet: Fleet, d: Deployment, smtp: SmtpServer, schedule: str) -> None:
    """As config/backupd.example.toml lays it out (and docs/config.md documents it); only
    the values are this test's: a schedule that fires in a few seconds, short backoffs."""
    pw = d.root / "maria-password"
    pw.write_text(MARIA_PASSWORD + "\n")
    pw.chmod(0o600)
    hosts = []
    for name, droplet in fleet.droplets.items():
        hosts.append(f"""
[hosts.{name}]
address = "{droplet.address}"
port = {droplet.port}
user = "{droplet.user}"
key = "{droplet.key_path}"
host_key = "{droplet.host_key_line}"
""")
    pg, maria = fleet.pg, fleet.maria
    d.config.write_text(f"""# backupd configuration, laid out as config/backupd.example.toml
state_dir = "{d.state_dir}"

[store]
path = "{d.store}"
encryption = "repokey-blake2"
compression = "auto,zstd,3"

[passphrase]
file = "{d.passphrase_file}"

[daemon]
workers = 2
per_host = 1
schedule = "{schedule}"
jitter = "0s"
catch_up_delay = "1m"
job_deadline = "1h"
stop_grace = "1m"
retries = 3
retry_backoff = "10s"

[retention]
keep_last = 3
keep_daily = 7
keep_weekly = 4
keep_monthly = 6

[metrics]
listen = "127.0.0.1:0"                  # any free port: runs beside other daemons

[maintenance]
prune = "{NEVER}"
compact = "{NEVER}"
check = "{NEVER}"
verify_archives = 3
catalogue = "{NEVER}"
drill = "{NEVER}"
report = "{NEVER}"

[alerts]
check_interval = "5s"

[mail]
to = ["ops@example.org"]
host = "{smtp.host}"
port = {smtp.port}
security = "none"
{"".join(hosts)}
[hosts.db.sources.maindb]
kind = "postgresql"
databases = ["wk_shop", "wk_forum"]
socket_dir = "{pg.socket_dir}"
port = {pg.port}
username = "{pg.superuser}"
pg_dump = "{fleet.gate.script}"
timeout = "6h"
idle_timeout = "10m"
min_bytes = "10KiB"

[hosts.db.sources.shopdb]
kind = "mariadb"
databases = ["{MARIA_DB}"]
socket = "{maria.socket}"
username = "wk_backup"
password_file = "{pw}"

[hosts.app.sources.sessions]
kind = "sqlite"
path = "{fleet.sqlite}"

[hosts.files.sources.uploads]
kind = "directory"
path = "{fleet.tree}"

[hosts.files.sources.media]
kind = "volume"
volume = "wk_media"

[restore_targets.staging]
kind = "postgresql"
socket_dir = "{pg.socket_dir}"
port = {pg.port}
username = "{pg.superuser}"
""")


@dataclass
class Night:
    number: int
    started: datetime
    ended: datetime | None = None
    fires_at: datetime | None = None  # the scheduling daemon's one firing of the night


class Week:
    """The deployment, and what each night should have left."""

    def __init__(self, fleet: Fleet, d: Deployment, smtp: SmtpServer) -> None:
        self.fleet, self.d, self.smtp = fleet, d, smtp
        self.nights: list[Night] = []
        self.alerts_seen = 0
        self.shop: dict[int, dict[str, str]] = {}  # night -> wk_shop as its backup saw it
        self.tree: dict[int, dict[bytes, tuple[object, ...]]] = {}
        self.good_shop: dict[int, int] = {}  # night -> the night whose maindb set is newest

    def begin(self, number: int, scheduled: bool = False) -> Night:
        """The night's changes made and recorded; ``scheduled``: every source fires once,
        FIRE_IN seconds from when that is done (the preparation is not taken from the
        daemon's time to start: a night whose firing came before the daemon was up
        would wait a year)."""
        self.fleet.churn(number)
        self.shop[number] = self.fleet.pg_state("wk_shop")
        self.tree[number] = self.fleet.tree_state()
        schedule, at = in_seconds(FIRE_IN) if scheduled else (NEVER, None)
        write_config(self.fleet, self.d, self.smtp, schedule)
        night = Night(number, datetime.now(UTC), fires_at=at)
        self.nights.append(night)
        return night

    def daemon(self, name: str, *args: str) -> DaemonProc:
        proc = DaemonProc(self.d.config, self.d.root / f"{name}.log", extra_args=list(args))
        return proc.start()

    def scheduling_daemon(self, night: Night) -> DaemonProc:
        """The daemon for a scheduled night, up before the night's firing: else this
        fails at once, saying so, rather than after a long wait for runs never started."""
        assert night.fires_at is not None
        daemon = self.daemon(f"daemon-{night.number}")
        wait_for("backupd to start", lambda: "backupd started" in daemon.log(), daemon=daemon)
        late = datetime.now(UTC) - night.fires_at
        assert late < timedelta(0), f"backupd started {late} after the night's firing: FIRE_IN"
        return daemon

    # -- what must hold after every night --------------------------------------------------
    def runs_since(self, night: Night) -> dict[str, list[str]]:
        rows = self.d.catalogue_rows(
            "SELECT s.name, r.status FROM runs r JOIN sources s ON r.source_id = s.id "
            f"WHERE r.started_at >= '{night.started.replace(tzinfo=None)}' ORDER BY r.id"
        )
        found: dict[str, list[str]] = {}
        for source, status in rows:
            found.setdefault(str(source), []).append(str(status))
        return found

    def check(self, night: Night, statuses: dict[str, str], alerts: list[str]) -> None:
        night.ended = datetime.now(UTC)
        rows = {r["source"]: r for r in self.d.status()}
        assert {s: rows[s]["last_status"] for s in statuses} == statuses, night.number
        self.check_repositories()
        self.check_nothing_left()
        self.check_alerts(alerts, night)

    def check_repositories(self) -> None:
        for host in SOURCES:
            sql = (
                "SELECT a.name FROM archives a JOIN sources s ON a.source_id = s.id JOIN"
                f" hosts h ON s.host_id = h.id WHERE h.name = '{host}' AND a.pruned_at IS NULL"
            )
            known = {str(n) for (n,) in self.d.catalogue_rows(sql)}
            assert set(self.d.archives(host)) == known, f"{host}: archives outside the catalogue"

    def check_nothing_left(self) -> None:
        def leftovers() -> list[str]:
            return [*processes_under(self.d.root), *sessions(self.fleet)]

        wait_for(
            "nothing of the night to be left running",
            lambda: not leftovers(),
            timeout=120,
            failing=leftovers,
        )

    def check_alerts(self, expected: list[str], night: Night) -> None:
        rows = self.d.catalogue_rows("SELECT kind, host, source FROM alert_events ORDER BY id")
        new = [f"{k} {h or ''}/{s or ''}" for k, h, s in rows[self.alerts_seen :]]
        self.alerts_seen = len(rows)
        assert sorted(new) == sorted(expected), f"night {night.number}: alerts {new}"


def processes_under(root: Path) -> list[str]:
    return processes_naming(str(root), besides=("pytest", "sshd"))


def sessions(fleet: Fleet) -> list[str]:
    """Database sessions on the week's databases other than the asking one."""
    names = ", ".join(f"'{db}'" for db in PG_DATABASES)
    pg = fleet.pg.psql(
        "SELECT datname || ' ' || state FROM pg_stat_activity WHERE datname IN "
        f"({names}) AND pid <> pg_backend_pid()"
    ).splitlines()
    maria = fleet.maria.sql(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'wk_backup'"
    )
    return [line for line in pg if line] + ([f"mariadb: {maria}"] if maria != "0" else [])


FIRE_IN = 15  # seconds for backupd to start (about 2 s here, far more on a loaded machine)


def in_seconds(seconds: int) -> tuple[str, datetime]:
    """A crontab line (with seconds) that fires once, ``seconds`` from now, in UTC; when it
    fires (whole seconds: the line has no fractions)."""
    at = (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0)
    return f"{at.second} {at.minute} {at.hour} {at.day} {at.month} *", at


def finished(week: Week, night: Night, sources: tuple[str, ...]) -> bool:
    runs = week.runs_since(night)
    return all(runs.get(s) and runs[s][-1] != "running" for s in sources)


ALL = tuple(s for names in SOURCES.values() for s in names)
GOOD = {
    "maindb": "succeeded",
    "shopdb": "succeeded",
    "sessions": "succeeded",
    "uploads": "warning",
    "media": "succeeded",
}
UNREADABLE = ["backup_warning files/uploads"]  # root-only.key, every night: deserved


def test_a_week_in_the_life(fleet: Fleet, smtp_server: SmtpServer, tmp_path: Path) -> None:
    root = tmp_path / "backupd"
    root.mkdir()
    d = Deployment(
        root,
        root / "backupd.toml",
        root / "state",
        root / "store",
        write_passphrase(root / "passphrase"),
    )
    week = Week(fleet, d, smtp_server)

    # nights 1 and 2: a timer's `backupd --once`
    for number in (1, 2):
        night = week.begin(number)
        assert week.daemon(f"once-{number}", "--once").wait(timeout=600) == 0
        week.check(night, GOOD, UNREADABLE)
        week.good_shop[number] = number

    ordinary_daemon_night(week, 3)  # the scheduling daemon, stopped cleanly afterwards

    # night 4: the whole process tree is killed while maindb is mid-dump
    fleet.gate.hold()
    night = week.begin(4, scheduled=True)
    daemon = week.scheduling_daemon(night)
    others = ("sessions", "uploads", "media")  # shopdb waits: one job per droplet
    wait_for(
        "maindb mid-dump, the other hosts done",
        lambda: fleet.gate.midway() and finished(week, night, others),
        timeout=600,
        daemon=daemon,
    )
    kill_tree(daemon.pid)
    daemon.wait()
    fleet.gate.release()
    restarted = week.daemon("daemon-4b")
    wait_for("the restart", lambda: "backupd started" in restarted.log(), daemon=restarted)
    restarted.signal(signal.SIGTERM)
    assert restarted.wait() == 0
    week.check(
        night,
        {**GOOD, "maindb": "interrupted"},
        [*UNREADABLE, "daemon_restarted /", "run_interrupted db/maindb"],
    )
    week.good_shop[4] = 3

    # night 5: db's link is cut mid-dump; it is back before the retry, which succeeds
    fleet.gate.hold()
    night = week.begin(5, scheduled=True)
    daemon = week.scheduling_daemon(night)
    wait_for("maindb mid-dump", fleet.gate.midway, timeout=600, daemon=daemon)
    link = fleet.droplets["db"].link
    assert link is not None
    link.cut()
    wait_for(
        "the lost connection to be noticed",
        lambda: "failed" in week.runs_since(night).get("maindb", []),
        timeout=180,
        daemon=daemon,
    )
    link.restore()
    fleet.gate.release()
    wait_for(
        "night 5",
        lambda: finished(week, night, ALL) and week.runs_since(night)["maindb"][-1] == "succeeded",
        timeout=600,
        daemon=daemon,
    )
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    [(error,)] = d.catalogue_rows(
        "SELECT r.error FROM runs r JOIN sources s ON r.source_id = s.id"
        " WHERE s.name = 'maindb' AND r.status = 'failed'"
    )
    assert "connection to db lost while pg_dump was running" in str(error)
    week.check(night, GOOD, UNREADABLE)  # a transient failure its retry mended: no alert
    week.good_shop[5] = 5

    ordinary_daemon_night(week, 6)  # after the faults

    check_a_random_night(week, tmp_path)
    check_drills(week)


def ordinary_daemon_night(week: Week, number: int) -> None:
    """The scheduling daemon fires every source once, then is stopped cleanly."""
    night = week.begin(number, scheduled=True)
    daemon = week.scheduling_daemon(night)
    wait_for(f"night {number}", lambda: finished(week, night, ALL), timeout=600, daemon=daemon)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    week.check(night, GOOD, UNREADABLE)
    week.good_shop[number] = number


def check_a_random_night(week: Week, tmp_path: Path) -> None:
    """A restore --at the end of a random past night gives back what its backup saw."""
    rng = random.Random()
    night = rng.choice(week.nights[:-1])
    assert night.ended is not None
    at = night.ended.strftime("%Y-%m-%d %H:%M:%S.%f")
    d = week.d
    d.backupctl(
        "restore",
        "db/maindb",
        "--into-db",
        "staging",
        "--item",
        "wk_shop",
        "--as",
        "wk_restored",
        "--at",
        at,
        "--yes",
        check=True,
    )
    expected = week.shop[week.good_shop[night.number]]
    assert week.fleet.pg_state("wk_restored") == expected, f"night {night.number}"
    out = tmp_path / f"uploads-night-{night.number}"
    d.backupctl("restore", "files/uploads", "--to", str(out), "--at", at, check=True)
    assert week.fleet.tree_state(out) == week.tree[night.number], f"night {night.number}"


def check_drills(week: Week) -> None:
    for host in SOURCES:
        result = week.d.backupctl("drill", host, "--json")
        assert result.returncode == 0, result.stderr
        verdicts = {r["source"]: r["verdict"] for r in json.loads(result.stdout)["drills"]}
        # uploads restores without the file its login cannot read: a warn, by the policy
        expected = {s: "warn" if s == "uploads" else "pass" for s in SOURCES[host]}
        assert verdicts == expected
    leftovers = [p for p in Path(tempfile.gettempdir()).glob("backupd-drill-*")]
    assert leftovers == []
