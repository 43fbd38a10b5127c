"""The harness itself: real servers that start, answer, and stop."""

from __future__ import annotations

import os
import shlex
import smtplib
import subprocess
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.harness.droplet import Droplet, start_droplet
from tests.harness.mariadb import MariaDBServer, start_mariadb
from tests.harness.postgres import PostgresCluster, postgres_bindir, start_postgres
from tests.harness.smtp import SmtpServer

pytestmark = pytest.mark.e2e


def ssh(droplet: Droplet, *argv: str) -> subprocess.CompletedProcess[str]:
    # OpenSSH joins its arguments with spaces for the remote shell: quote them first.
    return subprocess.run(
        droplet.ssh_argv(shlex.join(argv)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_droplet_login_sees_its_bin_dir_first(droplet: Droplet) -> None:
    stand_in = droplet.bin_dir / "docker"
    stand_in.write_text('#!/bin/sh\necho stand-in "$@"\n')
    stand_in.chmod(0o755)
    try:
        out = ssh(droplet, "sh", "-c", 'echo "$PATH"; docker ps')
        assert out.returncode == 0, out.stderr
        path, line = out.stdout.splitlines()
        assert path.split(":")[0] == str(droplet.bin_dir)
        assert line == "stand-in ps"
    finally:
        stand_in.unlink()


def test_a_wrong_pinned_key_is_refused_by_openssh(droplet: Droplet, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True
    )
    wrong = " ".join((tmp_path / "k.pub").read_text().split()[:2])
    known.write_text(f"[127.0.0.1]:{droplet.port} {wrong}\n")
    argv = [
        a if not a.startswith("UserKnownHostsFile=") else f"UserKnownHostsFile={known}"
        for a in droplet.ssh_argv("true")
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode != 0
    assert "HOST IDENTIFICATION HAS CHANGED" in out.stderr


def test_droplet_user_can_dump_postgres(droplet: Droplet, pg_cluster: PostgresCluster) -> None:
    conn = ["-h", str(pg_cluster.socket_dir), "-p", str(pg_cluster.port), "-U", "postgres"]
    out = ssh(droplet, "psql", *conn, "-XAtc", "select 40 + 2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"
    dump = ssh(droplet, "pg_dump", *conn, "--schema-only", "postgres")
    assert dump.returncode == 0 and "PostgreSQL database dump" in dump.stdout


def test_droplet_user_can_reach_mariadb_with_an_option_file(
    droplet: Droplet, mariadb_server: MariaDBServer
) -> None:
    mariadb_server.create_user("backup", "s3cret")
    opt = droplet.root / "backup.cnf"
    opt.write_text("[client]\nuser=backup\npassword=s3cret\n")
    opt.chmod(0o644)
    try:
        out = ssh(
            droplet,
            "mariadb",
            f"--defaults-extra-file={opt}",
            f"--socket={mariadb_server.socket}",
            "-N",
            "-e",
            "select 6 * 7",
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "42"
    finally:
        opt.unlink()


def test_smtp_server_receives(smtp_server: SmtpServer) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.org", "b@example.org", "hello"
    msg.set_content("body")
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as s:
        s.send_message(msg)
    got = smtp_server.wait_for_messages(1)
    assert got[-1].message["Subject"] == "hello"
    assert got[-1].rcpt_tos == ["b@example.org"]


def test_stop_really_stops_every_server(servers_dir: Path) -> None:
    scratch = servers_dir / "throwaway"
    scratch.mkdir()
    scratch.chmod(0o755)
    d = start_droplet(scratch, "gone")
    pg = start_postgres(scratch)
    mdb = start_mariadb(scratch)
    pids = [d._proc.pid, pg.pid, mdb.pid]  # type: ignore[union-attr]
    assert all(p is not None and alive(p) for p in pids)
    d.stop()
    pg.stop()
    mdb.stop()
    assert not any(alive(p) for p in pids if p is not None)
    assert postgres_bindir().name == "bin"
