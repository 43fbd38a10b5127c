"""Pieces of host trust and key export that need no droplet: the pin file's lines, where a
host's key is looked up, the borg argv, the catalogue's record of exports."""

from __future__ import annotations

import os
from pathlib import Path

import paramiko
import pytest

from backupd.actions.context import ssh_target
from backupd.actions.trust import Offer, _without_host, same_fingerprint, write_atomically
from backupd.borg.adapter import Borg
from backupd.catalogue import Catalogue
from backupd.errors import ConfigError, HostKeyError
from backupd.local.process import Argv, CommandResult, Invocation
from backupd.remote.ssh import SSHTarget, pinned_keys
from jobs.registry import load_config
from tests.unit.configs import HEAD

CONFIG = (
    HEAD
    + """[hosts.web1]
address = "203.0.113.7"
user = "backup"
key = "id"
"""
)
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def offer(fp: str) -> Offer:
    return Offer("web1", "web1 (a:22)", "ssh-ed25519", KEY, fp, "new", "")


def test_a_host_without_a_pin_is_valid_and_uses_the_pin_file(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(CONFIG)
    config = load_config(tmp_path / "c.toml")
    target = ssh_target(config.hosts["web1"], config.state_dir)
    assert target.pin_file and target.known_hosts == config.state_dir / "known_hosts"
    assert pinned_keys(target) == ()  # no file yet: nothing pinned, nothing to fail on
    (tmp_path / "c.toml").write_text(CONFIG + f'host_key = "{KEY}"\n')
    config = load_config(tmp_path / "c.toml")
    target = ssh_target(config.hosts["web1"], config.state_dir)
    assert not target.pin_file and target.known_hosts is None and target.host_keys == (KEY,)


def test_both_pins_at_once_are_refused(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(CONFIG + f'host_key = "{KEY}"\nknown_hosts = "kh"\n')
    with pytest.raises(ConfigError, match="host_key or known_hosts, not both"):
        load_config(tmp_path / "c.toml")


def test_the_pin_file_is_looked_up_by_address_and_port(tmp_path: Path) -> None:
    pins = tmp_path / "known_hosts"
    pins.write_text(f"[203.0.113.7]:2222 {KEY}\n")
    target = SSHTarget(
        "web1", "203.0.113.7", 2222, "u", Path("/k"), known_hosts=pins, pin_file=True
    )
    assert pinned_keys(target) == (KEY,)
    on_22 = SSHTarget("web1", "203.0.113.7", 22, "u", Path("/k"), known_hosts=pins)
    assert pinned_keys(on_22) == ()
    pins.write_text("[203.0.113.7]:2222 ssh-ed25519 not-base64\n")
    with pytest.raises(HostKeyError, match="malformed"):
        pinned_keys(target)


def test_only_the_hosts_own_names_leave_the_pin_file() -> None:
    lookup = "[203.0.113.7]:2222"
    hashed = paramiko.HostKeys.hash_host(lookup)
    assert _without_host(f"{lookup} {KEY}", lookup) is None
    assert _without_host(f"{hashed} {KEY}", lookup) is None
    assert _without_host(f"other,{lookup} {KEY}", lookup) == f"other {KEY}"
    assert _without_host(f"203.0.113.7 {KEY}", lookup) == f"203.0.113.7 {KEY}"
    assert _without_host(f"# {lookup} a comment", lookup) == f"# {lookup} a comment"
    assert _without_host(f"@revoked {lookup} {KEY}", lookup) == f"@revoked {lookup} {KEY}"


def test_a_fingerprint_is_compared_exactly_with_or_without_its_prefix() -> None:
    fp = "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8"
    assert same_fingerprint(fp, offer(fp))
    assert same_fingerprint(" nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8= ", offer(fp))
    assert not same_fingerprint(fp.lower(), offer(fp))
    assert not same_fingerprint("SHA256:", offer(fp))


def test_the_pin_file_is_replaced_whole_and_private(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text("old\n")
    path.chmod(0o644)
    write_atomically(path, "new\n")
    assert path.read_text() == "new\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["known_hosts"]


def test_key_export_argv_and_the_passphrase_by_fd(tmp_path: Path) -> None:
    calls: list[Argv] = []

    def runner(argv: Argv, inv: Invocation) -> CommandResult:
        assert inv.env is not None and "BORG_PASSPHRASE_FD" in inv.env
        calls.append(argv)
        return CommandResult(argv, 0, b"", b"", 0.1)

    borg = Borg("borg", lambda: "secret", tmp_path / "base", runner=runner)
    borg.export_key(Path("/s/web1"), Path("/k/web1.key"))
    borg.export_key(Path("/s/web1"), Path("/k/web1.key.txt"), paper=True)
    assert calls == [
        ("borg", "key", "export", "/s/web1", "/k/web1.key"),
        ("borg", "key", "export", "--paper", "/s/web1", "/k/web1.key.txt"),
    ]


def test_the_catalogue_knows_which_repositories_were_never_exported(tmp_path: Path) -> None:
    cat = Catalogue(f"sqlite:///{tmp_path / 'c.db'}")
    repos = [("web1", "/s/web1"), ("web2", "/s/web2")]
    assert cat.never_exported(repos) == ["web1", "web2"]
    cat.record_key_export("web1", "/s/web1", "/k", ["/k/web1.key", "/k/web1.key.txt"], "ab" * 32)
    assert cat.never_exported(repos) == ["web2"]
    assert cat.never_exported([("web1", "/elsewhere/web1")]) == ["web1"]  # a moved store
    [row] = cat.key_exports("web1")
    assert row.files == ["/k/web1.key", "/k/web1.key.txt"] and row.key_sha256 == "ab" * 32
    assert cat.key_exports("web2") == []
    assert os.stat(tmp_path / "c.db").st_mode & 0o077 == 0
