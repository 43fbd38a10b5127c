"""Setting a droplet up for the gate and proving it (decision 0022): `backupctl host setup
--apply`, `backupctl config check`, the restore key that alone may write, a tree read as
root through sudo and the sudoers drop-in the set-up writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupd.actions.gatelist import restore_allowlist
from backupd.remote import droplet_gate as gate
from backupd.remote.ssh import remote_command_line
from jobs.registry import load_config
from tests.e2e.conftest import BIN, Deployment
from tests.e2e.gated import Gated, backed_up, deploy_gated, new_key
from tests.e2e.test_sqlite import make_db
from tests.e2e.test_trees import DOCKER, build_tree, chown_to_droplet, snapshot

pytestmark = pytest.mark.e2e


def test_config_check_proves_the_gate_and_its_allowlist(gated: Gated, tmp_path: Path) -> None:
    """Gated with the config's allowlist: ok, and the sources plan through the gate. An
    allowlist from another config, or a config that does not know the droplet is gated,
    is a failure that says what to do."""
    path = make_db(gated.droplet, "checked.db", "WAL")
    d = deploy_gated(gated, tmp_path, {"app": {"kind": "sqlite", "path": str(path)}}, gate=True)
    try:
        d.store.mkdir(parents=True, exist_ok=True)
        done = d.backupctl("config", "check")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ok    gated gate: refuses what the config does not need" in done.stdout
        assert "ok    gated/app: 1 item(s)" in done.stdout
        gated.install(gated.allow, "allow")  # another config's allowlist
        stale = d.backupctl("config", "check")
        assert stale.returncode == 1
        assert "FAIL  gated gate: the droplet's allowlist is not the one" in stale.stdout
        # nothing more is tried through it, and its sources say so
        assert "FAIL  gated/app: not checked: its gate failed (above)" in stale.stdout
        d.config.write_text(d.config.read_text().replace("gate = true", "gate = false"))
        unknown = d.backupctl("config", "check")
        assert "FAIL  gated gate: the droplet is gated: set gate = true" in unknown.stdout
    finally:
        gated.install(gated.allow, "allow")
        subprocess.run(["rm", "-rf", str(path.parent)], check=False)


def test_host_setup_applied_gates_the_droplet_as_the_config_needs(
    gated: Gated, tmp_path: Path
) -> None:
    """`backupctl host setup --apply` through an operator's own login (another key, not
    restricted): the gate, the allowlist and the key line it writes make a working gated
    droplet (config check ok, a backup through them); the sudoers drop-in of a tree read
    as root passed visudo; running it again changes nothing but the files' contents."""
    path = make_db(gated.droplet, "setup.db", "WAL")
    shared = gated.droplet.root / "srv" / "shared"
    sources: dict[str, dict[str, object]] = {
        "app": {"kind": "sqlite", "path": str(path)},
        "shared": {"kind": "directory", "path": str(shared), "sudo": True},
    }
    d = deploy_gated(gated, tmp_path, sources, gate=True)
    admin_key = tmp_path / "operator_key"  # the operator's own key, not restricted
    new_key(admin_key)
    keys = gated.droplet.root / "authorized_keys"
    keys.write_text(keys.read_text() + Path(f"{admin_key}.pub").read_text())
    staged = Path(tempfile.mkdtemp(prefix="setup-", dir="/tmp"))
    chown_to_droplet(gated.droplet, staged)
    setup = [str(BIN / "backupctl"), "--config", str(d.config), "host", "setup", "gated"]
    admin = ["--apply", "--admin", gated.droplet.user, "--identity", str(admin_key)]
    admin += ["--no-sudo", "--root", str(staged)]
    try:
        done = subprocess.run([*setup, *admin], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "backupd-setup: done: gated is gated" in done.stdout
        sudoers = (staged / "etc/sudoers.d/backupd").read_text()
        assert f"{gated.droplet.user} ALL=(root) NOPASSWD: /usr/bin/rrsync -ro {shared}" in sudoers
        assert 'env_keep += "SSH_ORIGINAL_COMMAND"' in sudoers
        [written] = staged.rglob("authorized_keys")
        [line] = [k for k in written.read_text().splitlines() if k.startswith("restrict,")]
        assert f"{staged}/etc/backupd-gate/gated.json" in line
        again = subprocess.run([*setup, *admin], capture_output=True, text=True, check=False)
        assert again.returncode == 0 and written.read_text().count("restrict,") == 1
        # the droplet's own key file now holds what the set-up wrote: it works as such
        keys.write_text(line + "\n")
        checked = d.backupctl("config", "check")
        assert "ok    gated gate: refuses what the config does not need" in checked.stdout
        d.backupctl("backup", "now", "gated/app", check=True)  # (its syslog: the droplet's)
        printed = d.backupctl("host", "setup", "gated", check=True).stdout
        assert printed.startswith("#!/bin/sh\n") and "visudo -cqf" in printed
    finally:
        gated.install(gated.allow, "allow")
        shutil.rmtree(staged, ignore_errors=True)
        subprocess.run(["rm", "-rf", str(path.parent)], check=False)


def test_a_restore_onto_a_gated_droplet_writes_with_the_restore_key_only_where_allowed(
    gated: Gated, tmp_path: Path
) -> None:
    """The daemon's key reads and never writes; the operator's restore key (0600) writes
    into the host's restore_paths and trees, through rrsync -wo, and reads nothing."""
    tree = build_tree(gated.droplet)
    landing = gated.droplet.root / "restore-here"
    landing.mkdir()
    chown_to_droplet(gated.droplet, landing)
    restore_key = tmp_path / "restore_key"
    new_key(restore_key)
    sources: dict[str, dict[str, object]] = {"uploads": {"kind": "directory", "path": str(tree)}}
    settings = {"gate": True, "restore_key": str(restore_key), "restore_paths": [str(landing)]}
    d = deploy_gated(gated, tmp_path, sources, **settings)
    install_restore_key(gated, d, restore_key)
    try:
        backed_up(gated, d, "gated/uploads")
        restore = ("restore", "gated/uploads", "--to-host", "gated", "--yes")
        d.backupctl(*restore, "--path", str(landing), check=True)
        assert snapshot(landing) == snapshot(tree)
        logged = gated.logged()
        assert any(f"ran restore into {landing} for" in line for line in logged), logged
        elsewhere = d.backupctl(*restore, "--path", str(gated.droplet.root / "tmp"))
        assert elsewhere.returncode != 0 and "restores write only into" in elsewhere.stderr
        # with the keys themselves: the daemon's cannot write, the restore key cannot read
        push = f"rsync --server -logDtpre.iLsfxCIvu . {landing}/"
        assert gated.ssh(push).returncode == gate.EXIT_REFUSED  # the daemon's key
        read = f"rsync --server --sender -logDtpre.iLsfxCIvu . {tree}/"
        assert gated.ssh(read, key=restore_key).returncode == gate.EXIT_REFUSED
        outside = f"rsync --server -logDtpre.iLsfxCIvu . {gated.droplet.root}/tmp/"
        assert gated.ssh(outside, key=restore_key).returncode == gate.EXIT_REFUSED
        dump = remote_command_line(("pg_dump", "--no-password", "--dbname=dbname='app'"))
        assert gated.ssh(dump, key=restore_key).returncode == gate.EXIT_REFUSED
        restore_key.chmod(0o640)  # readable by a group (the daemon's user's): refused
        loose = d.backupctl(*restore, "--path", str(landing), "--force")
        assert loose.returncode != 0 and "readable by others" in loose.stderr
        checked = d.backupctl("config", "check").stdout
        assert "FAIL  gated restore key: " in checked and "readable by others" in checked
    finally:
        gated.install(gated.allow, "allow")
        subprocess.run(["rm", "-rf", str(tree.parent), str(landing)], check=True)


def install_restore_key(gated: Gated, d: Deployment, restore_key: Path) -> None:
    """The restore key's line beside the daemon's, with the config's restore allowlist."""
    host = load_config(d.config).hosts["gated"]
    restore_allow = {**restore_allowlist(host), "syslog": gated.syslog.getsockname()}
    (gated.droplet.root / "restore.json").write_text(json.dumps(restore_allow))
    command = f"/usr/bin/python3 {gated.droplet.root / 'gate.py'} {gated.droplet.root}/restore.json"
    pub = " ".join(Path(f"{restore_key}.pub").read_text().split()[:2])
    keys = gated.droplet.root / "authorized_keys"
    keys.write_text(keys.read_text() + f'restrict,command="{command}" {pub}\n')


def test_a_volume_restores_into_where_docker_keeps_it_with_the_restore_key(
    gated: Gated, tmp_path: Path
) -> None:
    """--path the volume's mountpoint: backupctl and the gate each ask Docker (the
    stand-in) where the volume is; another path is refused."""
    tree = build_tree(gated.droplet)
    docker = gated.droplet.bin_dir / "docker"
    docker.write_text(DOCKER % tree)
    docker.chmod(0o755)
    restore_key = tmp_path / "restore_key"
    new_key(restore_key)
    sources: dict[str, dict[str, object]] = {"data": {"kind": "volume", "volume": "uploads_data"}}
    d = deploy_gated(gated, tmp_path, sources, gate=True, restore_key=str(restore_key))
    install_restore_key(gated, d, restore_key)
    try:
        backed_up(gated, d, "gated/data")
        before = snapshot(tree)
        for path in tree.iterdir():  # the volume lost its files
            subprocess.run(["rm", "-rf", str(path)], check=True)
        restore = ("restore", "gated/data", "--to-host", "gated", "--yes", "--path")
        d.backupctl(*restore, str(tree), check=True)
        assert snapshot(tree) == before
        logged = gated.logged()
        assert any("ran where is volume uploads_data" in line for line in logged), logged
        other = d.backupctl(*restore, str(tree.parent))
        assert other.returncode == 2 and "volume uploads_data's mountpoint" in other.stderr
    finally:
        docker.unlink()
        gated.install(gated.allow, "allow")
        subprocess.run(["rm", "-rf", str(tree.parent)], check=True)


@pytest.fixture
def sudoers() -> Iterator[Path]:
    """A sudoers drop-in of this machine's sudo for the test (removed afterwards)."""
    path = Path(f"/etc/sudoers.d/backupd-test-{os.getpid()}")
    yield path
    path.unlink(missing_ok=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="installs a sudoers drop-in")
def test_a_tree_read_as_root_goes_through_sudo_rrsync_as_the_set_up_allows(
    gated: Gated, tmp_path: Path, sudoers: Path
) -> None:
    """sudo = true: the gate runs `sudo -n rrsync -ro TREE`, with the request kept in
    SSH_ORIGINAL_COMMAND, under the sudoers drop-in `backupctl host setup` writes; a file
    only root may read is in the backup."""
    tree = gated.droplet.root / "srv" / "private"
    (tree / "keys").mkdir(parents=True)
    (tree / "keys" / "root-only.key").write_text("root secret\n")
    (tree / "keys").chmod(0o700)  # root's: the droplet's login cannot read it
    (tree / "readme.txt").write_text("hello\n")
    sources: dict[str, dict[str, object]] = {
        "private": {"kind": "directory", "path": str(tree), "sudo": True}
    }
    d = deploy_gated(gated, tmp_path, sources, gate=True)
    staged = tmp_path / "staged"
    staged.mkdir()
    script = d.backupctl("host", "setup", "gated", check=True).stdout
    done = subprocess.run(["sh", "-s", str(staged)], input=script, text=True, capture_output=True)
    assert done.returncode == 0, done.stderr
    shutil.copy(staged / "etc/sudoers.d/backupd", sudoers)
    sudoers.chmod(0o440)
    try:
        ran = backed_up(gated, d, "gated/private")
        assert any("ran private: read the tree" in line for line in ran), ran
        out = tmp_path / "restored"
        d.backupctl("restore", "gated/private", "--to", str(out), check=True)
        assert (out / "keys" / "root-only.key").read_text() == "root secret\n"
    finally:
        gated.install(gated.allow, "allow")
        shutil.rmtree(tree.parent, ignore_errors=True)
