"""PostgreSQL's scratch server for restore drills: ``initdb`` into the drill's private
directory, then ``postgres`` on a unix socket only, durability off (it is thrown away)."""

from __future__ import annotations

import signal
from pathlib import Path

from backupd.config.sections import DrillsConfig
from backupd.errors import RestoreError
from jobs.base import Options, ScratchEnv
from jobs.pg_common import PostgresOptions

PORT = 5432  # names the socket file only: nothing listens on TCP


def postgres_bindir(drills: DrillsConfig) -> Path:
    """``[drills] postgres_bindir``, else the newest /usr/lib/postgresql/N/bin (Debian's
    layout): a drill restores with the newest pg_restore, which reads older dumps."""
    if drills.postgres_bindir is not None:
        return drills.postgres_bindir
    found = sorted(
        (
            p
            for p in Path("/usr/lib/postgresql").glob("*/bin")
            if p.parent.name.isdigit() and (p / "postgres").exists()
        ),
        key=lambda p: int(p.parent.name),
    )
    if not found:
        raise RestoreError(
            "scratch server: no PostgreSQL server installed on the backup host "
            "(apt-get install postgresql, or set [drills] postgres_bindir)"
        )
    return found[-1]


class PostgresScratch:
    """The ScratchServer of PostgreSQL (jobs/base.py)."""

    pid_file = "data/postmaster.pid"
    stop_signal = int(signal.SIGINT)  # fast shutdown: no waiting for clients

    def start(self, env: ScratchEnv) -> Options:
        bindir = postgres_bindir(env.drills)
        sock, data = env.root / "sock", env.root / "data"
        env.own(sock)
        initdb = (str(bindir / "initdb"), "-A", "trust", "-U", "postgres", "--no-sync")
        env.run((*initdb, "-E", "UTF8", "--locale", "C.UTF-8", "-D", str(data)), "initdb")
        fast = ("fsync=off", "full_page_writes=off", "synchronous_commit=off")
        server = (str(bindir / "postgres"), "-D", str(data), "-k", str(sock), "-p", str(PORT))
        settings = tuple(a for s in ("listen_addresses=", *fast) for a in ("-c", s))
        probe = (str(bindir / "pg_isready"), "-q", "-h", str(sock), "-p", str(PORT))
        env.serve((*server, *settings), probe, "PostgreSQL")
        return PostgresOptions.model_validate(
            {"socket_dir": str(sock), "port": PORT, "username": "postgres"}
        )
