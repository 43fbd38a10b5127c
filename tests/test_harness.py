"""The harness itself: real servers that start, answer, and stop."""

from __future__ import annotations

import contextlib
import os
import shlex
import smtplib
import socket
import subprocess
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.harness.droplet import Droplet, start_droplet
from tests.harness.mariadb import MariaDBServer, start_mariadb
from tests.harness.postgres import PostgresCluster, start_postgres
from tests.harness.procs import start_process, stop_process, wait_until
from tests.harness.smtp import SmtpServer, start_smtp

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
    """Whether ``pid`` exists and is not a zombie waiting for its parent."""
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (ProcessLookupError, FileNotFoundError):
        return False
    return state != "Z"


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
    assert dump.returncode == 0, dump.stderr
    assert "PostgreSQL database dump" in dump.stdout


def test_droplet_user_can_reach_mariadb_with_an_option_file(
    droplet: Droplet, mariadb_server: MariaDBServer
) -> None:
    mariadb_server.create_user("backup", "s3cret")
    opt = droplet.root / "backup.cnf"
    opt.write_text("[client]\nuser=backup\npassword=s3cret\n")
    opt.chmod(0o644)
    sock = f"--socket={mariadb_server.socket}"
    try:
        out = ssh(droplet, "mariadb", f"--defaults-extra-file={opt}", sock, "-Ne", "select 6 * 7")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "42"
        root = ssh(droplet, "mariadb", "--no-defaults", sock, "-uroot", "-Ne", "select 1")
        assert root.returncode == 0, root.stderr
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
    assert got[-1].message.get_content().strip() == "body"
    assert got[-1].mail_from == "a@example.org"
    assert got[-1].rcpt_tos == ["b@example.org"]


def test_stop_really_stops_every_server(servers_dir: Path) -> None:
    scratch = servers_dir / "throwaway"
    scratch.mkdir()
    scratch.chmod(0o755)
    with contextlib.ExitStack() as cleanup:  # stops what started, also when a start fails
        d = start_droplet(scratch, "gone")
        cleanup.callback(d.stop)
        pg = start_postgres(scratch)
        cleanup.callback(pg.stop)
        mdb = start_mariadb(scratch)
        cleanup.callback(mdb.stop)
        smtp = start_smtp()
        cleanup.callback(smtp.stop)
        pids = [d.pid, pg.pid, mdb.pid]
        assert all(p is not None and alive(p) for p in pids)
        d.stop()
        pg.stop()
        mdb.stop()
        smtp.stop()
    assert not any(alive(p) for p in pids if p is not None)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((smtp.host, smtp.port), timeout=5).close()


def test_stopping_a_droplet_ends_its_sessions(servers_dir: Path) -> None:
    d = start_droplet(servers_dir, "sessions")
    client = None
    try:
        client = subprocess.Popen(
            d.ssh_argv("echo $$; exec sleep 300"),
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own group, for stop_process
        )
        assert client.stdout is not None
        remote = int(client.stdout.readline())
        assert alive(remote)
        d.stop()
        wait_until(lambda: not alive(remote), 10, f"remote command {remote} to end")
        assert client.wait(timeout=10) != 0
    finally:
        d.stop()
        if client is not None:
            stop_process(client, grace=5)


def test_stop_process_kills_the_whole_group_even_when_term_is_ignored(tmp_path: Path) -> None:
    log = tmp_path / "log"
    script = "trap '' TERM; sleep 300 & echo $!; wait"
    proc = start_process(["sh", "-c", script], user=None, log_path=log)
    try:
        wait_until(lambda: log.read_text().strip() != "", 10, "the background child's pid")
        child = int(log.read_text())
        assert alive(child)
    finally:
        stop_process(proc, grace=0.5)
    assert proc.returncode == -9
    wait_until(lambda: not alive(child), 10, f"background child {child} to be gone")
