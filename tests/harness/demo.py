"""`make demo`: a sandbox droplet on loopback, backed up by the real backupd into var/.

Starts an OpenSSH droplet and its PostgreSQL cluster (the test harness, reused), writes
config/demo.toml, runs ``backupd --once`` against it, prints ``backupctl status`` and the
restore command to try next, then stops every server it started.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.harness.droplet import start_droplet
from tests.harness.fleet import HostSpec, write_fleet_config, write_passphrase
from tests.harness.postgres import start_postgres

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


def run(*argv: str) -> int:
    print(f"\n$ {' '.join(argv)}", flush=True)
    return subprocess.run(argv, check=False).returncode


def main() -> int:
    VAR.mkdir(exist_ok=True)
    # Servers live in a world-traversable temp dir: PostgreSQL and the droplet user
    # run as other accounts and must reach their sockets.
    sandbox = Path(tempfile.mkdtemp(prefix="backupd-demo-"))
    sandbox.chmod(0o755)
    droplet = cluster = None
    try:
        droplet = start_droplet(sandbox, "demo-droplet")
        cluster = start_postgres(sandbox)
        seed(cluster.psql)
        passphrase = VAR / "demo-passphrase"
        if not passphrase.exists():
            write_passphrase(passphrase)
        sources = {
            "appdb": {
                "kind": "postgresql",
                "databases": ["app"],
                "socket_dir": str(cluster.socket_dir),
                "port": cluster.port,
                "username": cluster.superuser,
            }
        }
        write_fleet_config(
            CONFIG,
            state_dir=VAR / "state",
            store=VAR / "store",
            passphrase_file=passphrase,
            hosts=[HostSpec("demo", droplet, sources)],
        )
        print(
            f"sandbox droplet: {droplet.user}@{droplet.address}:{droplet.port}, "
            f"host key pinned in {CONFIG.relative_to(ROOT)}"
        )
        rc = run(str(BIN / "backupd"), "--config", str(CONFIG), "--once")
        run(str(BIN / "backupctl"), "--config", str(CONFIG), "status")
        print("\nTry a restore next (the droplet is gone, the backup is not):")
        print(f"  {BIN / 'backupctl'} --config {CONFIG} restore demo/appdb --to var/restore")
        return rc
    finally:
        if cluster is not None:
            cluster.stop()
        if droplet is not None:
            droplet.stop()
        shutil.rmtree(sandbox, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
