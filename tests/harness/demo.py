"""`make demo`: a sandbox droplet on loopback, backed up by the real backupd into var/.

Starts an OpenSSH droplet with PostgreSQL, MariaDB, a SQLite file and an uploads Docker
volume (a stand-in docker CLI answers for it; the test harness, reused), writes
config/demo.toml, runs ``backupd --once`` against it, prints ``backupctl status`` and the
restore command to try next, drills every source (restores it into scratch servers and
checks it), writes the weekly report's preview to var/report-preview.html, then stops every
server it started. Each run starts from an empty var/state and var/store.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.harness.droplet import Droplet, start_droplet
from tests.harness.fleet import HostSpec, write_fleet_config, write_passphrase
from tests.harness.mariadb import MariaDBServer, start_mariadb
from tests.harness.postgres import PostgresCluster, start_postgres
from tests.harness.procs import is_root

ROOT = Path(__file__).resolve().parents[2]
VAR = ROOT / "var"
CONFIG = ROOT / "config" / "demo.toml"
BIN = Path(sys.executable).parent


def seed(cluster_psql: object) -> None:
    psql = cluster_psql  # a bound PostgresCluster.psql
    assert callable(psql)
    psql("DROP DATABASE IF EXISTS app")
    psql("CREATE DATABASE app")
    psql(
        """
        CREATE TABLE courses (id serial PRIMARY KEY, title text NOT NULL);
        CREATE TABLE learners (id serial PRIMARY KEY, name text, course_id int REFERENCES courses);
        INSERT INTO courses (title) SELECT 'Course ' || g FROM generate_series(1, 40) g;
        INSERT INTO learners (name, course_id)
          SELECT 'learner ' || g, 1 + g % 40 FROM generate_series(1, 5000) g;
        """,
        "app",
    )


def seed_mariadb(server: MariaDBServer, password_file: Path) -> None:
    server.sql("DROP DATABASE IF EXISTS forum; CREATE DATABASE forum")
    server.sql(
        "CREATE TABLE posts (id INT PRIMARY KEY AUTO_INCREMENT, body TEXT);"
        "INSERT INTO posts (body) SELECT CONCAT('post ', seq) FROM seq_1_to_2000;",
        db="forum",
    )
    server.create_user("backup", "demo-secret")
    password_file.write_text("demo-secret\n")
    password_file.chmod(0o600)


def seed_files(droplet: Droplet) -> Path:
    """An uploads directory and a live SQLite database on the droplet."""
    uploads = droplet.root / "srv" / "uploads"
    for i in range(50):
        path = uploads / f"course-{i % 5}" / f"material-{i}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"lesson {i}\n" * 200)
    db = sqlite3.connect(droplet.root / "srv" / "app.db")
    db.executescript(
        "CREATE TABLE IF NOT EXISTS sessions (id INTEGER PRIMARY KEY, user TEXT);"
        "INSERT INTO sessions (user) VALUES ('ada'), ('grace'), ('linus');"
    )
    db.commit()
    db.close()
    if is_root():
        subprocess.run(["chown", "-R", f"{droplet.user}:", str(droplet.root / "srv")], check=True)
    return uploads


def run(*argv: str) -> int:
    print(f"\n$ {' '.join(argv)}", flush=True)
    return subprocess.run(argv, check=False).returncode


DOCKER_STAND_IN = """#!/bin/sh
# The demo droplet has no Docker engine: this stand-in answers the one question backupd
# asks about a volume (where it lives) and refuses anything else.
if [ "$1 $2 $3 $4 $5 $6" = "volume inspect --format {{ .Mountpoint }} -- lms_uploads" ]; then
  echo "%s"; exit 0
fi
echo "demo docker stand-in: unexpected arguments: $*" >&2
exit 125
"""


def install_docker_stand_in(droplet: Droplet, uploads: Path) -> None:
    """A Docker named volume "lms_uploads" whose mountpoint is the seeded uploads tree."""
    script = droplet.bin_dir / "docker"
    script.write_text(DOCKER_STAND_IN % uploads)
    script.chmod(0o755)


@dataclass
class Sandbox:
    config: Path
    droplet: Droplet
    cluster: PostgresCluster
    mariadb: MariaDBServer


@contextmanager
def sandbox(extra: str = "") -> Iterator[Sandbox]:
    """The demo droplet with its servers and data, and config/demo.toml; stopped after."""
    VAR.mkdir(exist_ok=True)
    # Each demo backs up a fresh sandbox: start from an empty catalogue and store, so a var/
    # left by an older version (or a crashed demo) never gets in the way.
    for stale in (VAR / "state", VAR / "store", VAR / "restore", VAR / "uploads"):
        shutil.rmtree(stale, ignore_errors=True)
    # Servers live in a world-traversable temp dir: PostgreSQL and the droplet user
    # run as other accounts and must reach their sockets.
    root = Path(tempfile.mkdtemp(prefix="backupd-demo-"))
    root.chmod(0o755)
    droplet = cluster = mariadb = None
    try:
        droplet = start_droplet(root, "demo-droplet")
        cluster = start_postgres(root)
        mariadb = start_mariadb(root)
        seed(cluster.psql)
        seed_mariadb(mariadb, VAR / "demo-mariadb-password")
        uploads = seed_files(droplet)
        install_docker_stand_in(droplet, uploads)
        passphrase = VAR / "demo-passphrase"
        if not passphrase.exists():
            write_passphrase(passphrase)
        sources: dict[str, dict[str, str | int | list[str]]] = {
            "appdb": {
                "kind": "postgresql",
                "databases": ["app"],
                "socket_dir": str(cluster.socket_dir),
                "port": cluster.port,
                "username": cluster.superuser,
            },
            "forumdb": {
                "kind": "mariadb",
                "databases": ["forum"],
                "socket": str(mariadb.socket),
                "username": "backup",
                "password_file": str(VAR / "demo-mariadb-password"),
            },
            "sessions": {"kind": "sqlite", "path": str(droplet.root / "srv" / "app.db")},
            "uploads": {"kind": "volume", "volume": "lms_uploads", "excludes": ["*.tmp"]},
        }
        write_fleet_config(
            CONFIG,
            state_dir=VAR / "state",
            store=VAR / "store",
            passphrase_file=passphrase,
            hosts=[HostSpec("demo", droplet, sources)],
            extra=extra,
        )
        yield Sandbox(CONFIG, droplet, cluster, mariadb)
    finally:
        if mariadb is not None:
            mariadb.stop()
        if cluster is not None:
            cluster.stop()
        if droplet is not None:
            droplet.stop()
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str]) -> int:
    """The demo; any argument (--help) prints what it does instead: it starts again from
    an empty var/, and someone asking what it does must not lose what it made."""
    if argv:
        asked = argv[0] in ("-h", "--help")
        if not asked:
            print(f"unknown argument {argv[0]!r}: the demo takes none\n", file=sys.stderr)
        text = (__doc__ or "").strip().replace("``", "`")
        print(f"{text}\n\nUsage: make demo (or: .venv/bin/python -m tests.harness.demo)")
        return 0 if asked else 2
    with sandbox() as box:
        d = box.droplet
        print(
            f"sandbox droplet: {d.user}@{d.address}:{d.port}, "
            f"host key pinned in {CONFIG.relative_to(ROOT)}"
        )
        rc = run(str(BIN / "backupd"), "--config", str(CONFIG), "--once")
        # prove every source restores: scratch servers, checks against the recorded facts
        rc = rc or run(str(BIN / "backupctl"), "--config", str(CONFIG), "drill", "demo")
        run(str(BIN / "backupctl"), "--config", str(CONFIG), "status")
        report = VAR / "report-preview.html"
        rc = rc or run(
            str(BIN / "backupctl"), "--config", str(CONFIG), "report", "--preview", str(report)
        )
        print(f"\nThe weekly report, as it would be mailed: open {report.relative_to(ROOT)}")
        print("\nTry a restore next (the droplet is gone, the backup is not):")
        print(f"  {BIN / 'backupctl'} --config {CONFIG} restore demo/appdb --to var/restore")
        print(f"  {BIN / 'backupctl'} --config {CONFIG} restore demo/uploads --to var/uploads")
        return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
