"""backupctl host trust and key export against a real droplet (OpenSSH) and real Borg."""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import pty
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from backupd.remote.ssh import fingerprint_line
from tests.e2e.conftest import BIN, Deployment, small_sqlite
from tests.e2e.test_daemon import other_host_key
from tests.harness.droplet import Droplet
from tests.json_contract import conforming

pytestmark = pytest.mark.e2e


def ctl(d: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    """backupctl with no terminal on stdin (as from cron or a script): it must never wait."""
    return subprocess.run(
        [str(BIN / "backupctl"), "--config", str(d.config), *args],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def ctl_on_tty(d: Deployment, *args: str, answer: str) -> subprocess.CompletedProcess[str]:
    """backupctl with a terminal on stdin, typing ``answer`` at its prompt."""
    master, slave = pty.openpty()
    try:
        argv = [str(BIN / "backupctl"), "--config", str(d.config), *args]
        proc = subprocess.Popen(
            argv, stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        os.write(master, answer.encode())  # the terminal holds the line until it is read
        out, err = proc.communicate(timeout=300)
    finally:
        os.close(slave)
        os.close(master)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def unpin(d: Deployment) -> Deployment:
    """The config without host_key: the key must come from `backupctl host trust`."""
    d.config.write_text(re.sub(r"^host_key = .*\n", "", d.config.read_text(), flags=re.M))
    return d


def sqlite_source(droplet: Droplet) -> dict[str, object]:
    db = small_sqlite(droplet, "trust")
    with sqlite3.connect(db) as c:
        c.execute("INSERT INTO t VALUES ('row')")
    return {"kind": "sqlite", "path": str(db)}


def tree_source(droplet: Droplet) -> dict[str, object]:
    root = droplet.root / "trust" / "files"
    root.mkdir(parents=True, exist_ok=True)
    (root / "a.txt").write_text("a\n")
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", droplet.user, str(root)], check=True)
    return {"kind": "directory", "path": str(root)}


def entry(droplet: Droplet, key_line: str) -> str:
    return f"[{droplet.address}]:{droplet.port} {key_line}\n"


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_trust_pins_the_key_and_backups_then_connect(
    deploy: Callable[..., Deployment], droplet: Droplet
) -> None:
    d = unpin(deploy({"app": sqlite_source(droplet), "files": tree_source(droplet)}))
    pins = d.state_dir / "known_hosts"
    expected = fingerprint_line(droplet.host_key_line)

    refused = ctl(d, "backup", "now", "web1")
    assert refused.returncode == 1
    assert "unknown host key ssh-ed25519 " + expected in refused.stderr
    assert "backupctl host trust web1" in refused.stderr
    check = ctl(d, "config", "check")
    assert "FAIL  web1: " in check.stdout and "backupctl host trust web1" in check.stdout

    trusted = ctl(d, "host", "trust", "web1", "--yes")
    assert trusted.returncode == 0, trusted.stderr
    assert f"ssh-ed25519 {expected}" in trusted.stdout
    assert f"web1: pinned ssh-ed25519 {expected} in {pins}" in trusted.stdout
    assert pins.read_text() == entry(droplet, droplet.host_key_line)
    assert mode(pins) == 0o600 and mode(d.state_dir) == 0o700
    assert [p.name for p in d.state_dir.iterdir() if p.name.startswith(".known_hosts")] == []

    backup = ctl(d, "backup", "now", "web1")  # a dump through the relay, a tree through rsync
    assert backup.returncode == 0, backup.stderr
    assert "web1/app: ok" in backup.stdout and "web1/files: ok" in backup.stdout

    before = pins.stat()
    again = ctl(d, "host", "trust", "web1")  # no prompt needed: nothing to change
    assert again.returncode == 0, again.stderr
    assert "already trusted" in again.stdout and str(pins) in again.stdout
    assert pins.stat().st_mtime_ns == before.st_mtime_ns


def test_trust_is_refused_without_a_confirmation_and_changes_nothing(
    deploy: Callable[..., Deployment], droplet: Droplet, tmp_path: Path
) -> None:
    d = unpin(deploy({"app": sqlite_source(droplet)}))
    pins = d.state_dir / "known_hosts"
    real = fingerprint_line(droplet.host_key_line)

    no_tty = ctl(d, "host", "trust", "web1")
    assert no_tty.returncode == 9
    assert "no terminal to confirm" in no_tty.stderr and f"--fingerprint {real}" in no_tty.stderr
    assert len(no_tty.stderr.strip().splitlines()) == 1
    assert not pins.exists()

    wrong = fingerprint_line(other_host_key(tmp_path))
    mismatch = ctl(d, "host", "trust", "web1", "--fingerprint", wrong)
    assert mismatch.returncode == 4
    assert f"offers ssh-ed25519 {real}, not {wrong}" in mismatch.stderr
    assert not pins.exists()

    declined = ctl_on_tty(d, "host", "trust", "web1", answer="n\n")
    assert declined.returncode == 9, declined.stderr
    assert "Trust this key for web1? [y/N]" in declined.stdout
    assert "not trusted; nothing changed" in declined.stderr
    assert not pins.exists()

    accepted = ctl_on_tty(d, "host", "trust", "web1", answer="y\n")
    assert accepted.returncode == 0, accepted.stderr
    assert pins.read_text() == entry(droplet, droplet.host_key_line)

    pins.unlink()
    exact = ctl(d, "host", "trust", "web1", "--fingerprint", real)
    assert exact.returncode == 0, exact.stderr
    assert pins.read_text() == entry(droplet, droplet.host_key_line)


def test_a_changed_key_in_the_pin_file_is_shown_and_replaced_only_when_confirmed(
    deploy: Callable[..., Deployment], droplet: Droplet, tmp_path: Path
) -> None:
    d = unpin(deploy({"app": sqlite_source(droplet)}))
    d.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    pins = d.state_dir / "known_hosts"
    old = other_host_key(tmp_path)  # what the droplet had before it was rebuilt
    other = "# kept\n[192.0.2.9]:2222 " + old + "\n"  # another host's entry stays
    pins.write_text(other + entry(droplet, old))
    pins.chmod(0o600)
    old_fp, new_fp = fingerprint_line(old), fingerprint_line(droplet.host_key_line)

    backup = ctl(d, "backup", "now", "web1/app")
    assert backup.returncode == 1
    assert "HOST KEY CHANGED" in backup.stderr and "backupctl host trust web1" in backup.stderr

    refused = ctl(d, "host", "trust", "web1")
    assert refused.returncode == 9
    assert "HOST KEY CHANGED for web1" in refused.stderr
    assert f"pinned:  ssh-ed25519 {old_fp}" in refused.stderr
    assert f"offered: ssh-ed25519 {new_fp}" in refused.stderr
    assert pins.read_text() == other + entry(droplet, old)

    replaced = ctl(d, "host", "trust", "web1", "--yes")
    assert replaced.returncode == 0, replaced.stderr
    assert f"web1: replaced the pinned key with ssh-ed25519 {new_fp}" in replaced.stdout
    assert pins.read_text() == other + entry(droplet, droplet.host_key_line)
    assert mode(pins) == 0o600
    assert ctl(d, "backup", "now", "web1/app").returncode == 0


def pins_of(d: Deployment) -> Path:
    return d.state_dir / "known_hosts"


def test_a_key_pinned_by_the_config_is_never_overridden(
    deploy: Callable[..., Deployment], droplet: Droplet, tmp_path: Path
) -> None:
    d = deploy({"app": sqlite_source(droplet)})  # host_key = the droplet's real key
    same = ctl(d, "host", "trust", "web1")
    assert same.returncode == 0, same.stderr
    assert "already trusted (pinned in host_key of [hosts.web1]" in same.stdout
    assert not pins_of(d).exists()

    wrong = other_host_key(tmp_path)
    d = deploy({"app": sqlite_source(droplet)}, host_key=wrong)
    changed = ctl(d, "host", "trust", "web1", "--yes")
    assert changed.returncode == 4
    message = changed.stderr.strip()
    assert len(message.splitlines()) == 1 and "HOST KEY CHANGED" in message
    assert fingerprint_line(droplet.host_key_line) in message and fingerprint_line(wrong) in message
    assert "the config file" in message and "out of band" in message
    assert not pins_of(d).exists()

    known = tmp_path / "their_known_hosts"
    known.write_text("[192.0.2.9]:22 " + droplet.host_key_line + "\n")
    d.config.write_text(
        d.config.read_text().replace(f'host_key = "{wrong}"', f'known_hosts = "{known}"')
    )
    absent = ctl(d, "host", "trust", "web1", "--yes")
    assert absent.returncode == 4
    assert f"known_hosts {known}" in absent.stderr and "add it to that file" in absent.stderr
    assert not pins_of(d).exists()


def borg_env(d: Deployment, base: Path) -> dict[str, str]:
    return {
        **os.environ,
        "BORG_PASSCOMMAND": f"cat {d.passphrase_file}",
        "BORG_BASE_DIR": str(base),
    }


def test_key_export_writes_private_files_that_borg_imports_and_status_stops_warning(
    deploy: Callable[..., Deployment], droplet: Droplet, tmp_path: Path
) -> None:
    d = deploy({"app": sqlite_source(droplet)})
    keys = tmp_path / "keys" / "backupd"
    nothing = ctl(d, "key", "export", str(keys))
    assert nothing.returncode == 8 and "after the first backup" in nothing.stderr
    assert not keys.exists()
    assert conforming("status", ctl(d, "status", "--json").stdout)["key_exports_missing"] == []

    assert ctl(d, "backup", "now", "web1").returncode == 0
    repo = d.store / "web1"
    status = ctl(d, "status")
    assert status.returncode == 0, status.stdout  # a warning, not a failure
    assert (
        f"warning: the key of repository {repo} (host web1) has never been exported: "
        "backupctl key export DIR"
    ) in status.stdout
    data = conforming("status", ctl(d, "status", "--json").stdout)
    assert data["key_exports_missing"] == [{"host": "web1", "repository": str(repo)}]

    exported = ctl(d, "key", "export", str(keys))
    assert exported.returncode == 0, exported.stderr
    key, paper = keys / "web1.key", keys / "web1.key.txt"
    assert f"web1: {repo} -> {key}, {paper}" in exported.stdout
    assert "away from the backup host, together with the passphrase" in exported.stdout
    assert mode(keys) == 0o700 and mode(key) == 0o600 and mode(paper) == 0o600
    assert sorted(p.name for p in keys.iterdir()) == ["web1.key", "web1.key.txt"]
    assert key.read_text().startswith("BORG_KEY ")
    assert "BORG PAPER KEY v1" in paper.read_text()
    digest = hashlib.sha256(key.read_bytes()).hexdigest()
    [(host, repository, directory, files, sha)] = d.catalogue_rows(
        "SELECT host, repository, directory, files, key_sha256 FROM key_exports"
    )
    assert (host, repository, directory, sha) == ("web1", str(repo), str(keys), digest)
    assert json.loads(str(files)) == [str(key), str(paper)]

    status = ctl(d, "status")
    assert status.returncode == 0 and "warning:" not in status.stdout
    assert conforming("status", ctl(d, "status", "--json").stdout)["key_exports_missing"] == []

    before = key.stat().st_mtime_ns
    again = ctl(d, "key", "export", str(keys))
    assert again.returncode == 9
    assert f"{key}, {paper}: already there" in again.stderr and "--force" in again.stderr
    assert key.stat().st_mtime_ns == before
    forced = ctl(d, "key", "export", str(keys), "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    [row] = conforming("key export", forced.stdout)["exports"]
    assert row["host"] == "web1" and row["key_sha256"] == digest and row["key_file"] == str(key)
    assert "together with the passphrase" in forced.stderr
    assert len(d.catalogue_rows("SELECT id FROM key_exports")) == 2

    # The file brings a repository whose own copy of the key is gone back to life.
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy)
    config = configparser.ConfigParser(interpolation=None)
    config.read(copy / "config")
    config["repository"]["key"] = ""
    with (copy / "config").open("w") as f:
        config.write(f)
    env = borg_env(d, tmp_path / "borg-base")
    borg = str(BIN / "borg")
    lost = subprocess.run([borg, "list", str(copy)], capture_output=True, text=True, env=env)
    assert lost.returncode != 0 and "No key entry found" in lost.stderr
    subprocess.run([borg, "key", "import", str(copy), str(key)], check=True, env=env)
    listed = subprocess.run(
        [borg, "list", "--short", str(copy)], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    assert listed == d.archives("web1")
