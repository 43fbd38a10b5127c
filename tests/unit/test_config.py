from __future__ import annotations

from pathlib import Path

import pytest

from backupd.errors import ConfigError
from jobs.registry import load_config
from tests.unit.configs import HEAD

GOOD = (
    HEAD
    + """[hosts.web1]
address = "127.0.0.1"
port = 2222
user = "backup"
key = "id_ed25519"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx"
[hosts.web1.sources.maindb]
kind = "postgresql"
databases = ["app"]
timeout = "2h"
min_bytes = "1KiB"
"""
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "backupd.toml"
    path.write_text(text)
    return path


def test_good_config_is_typed_and_paths_resolve_against_its_directory(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    host = config.hosts["web1"]
    source = host.sources["maindb"]
    assert config.state_dir == tmp_path / "state"
    assert config.store.path == tmp_path / "store"
    assert host.key == tmp_path / "id_ed25519"
    assert source.timeout == 7200.0
    assert source.min_bytes == 1024
    assert source.options.databases == ("app",)
    assert config.catalogue_url == f"sqlite:///{tmp_path / 'state' / 'catalogue.db'}"


def test_every_problem_is_reported_at_once_with_file_and_key(tmp_path: Path) -> None:
    bad = (
        GOOD.replace("port = 2222", "port = 70000")
        .replace('kind = "postgresql"', 'kind = "postgresql"\ndatabse = ["x"]')
        .replace('timeout = "2h"', 'timeout = "soon"')
        + "\n[surprise]\nx = 1\n"
    )
    path = write(tmp_path, bad)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    problems = exc.value.problems
    text = "\n".join(problems)
    assert f"{path}: hosts.web1.port:" in text
    assert f"{path}: hosts.web1.sources.maindb.databse: unknown setting" in text
    assert f"{path}: hosts.web1.sources.maindb.timeout:" in text
    assert f"{path}: surprise: unknown setting" in text
    assert len(problems) == 4


def test_unknown_kind_and_bad_names_are_refused(tmp_path: Path) -> None:
    bad = (
        GOOD.replace('kind = "postgresql"', 'kind = "oracle"')
        .replace("[hosts.web1]", '[hosts."web 1;rm"]')
        .replace("[hosts.web1.sources", '[hosts."web 1;rm".sources')
    )
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, bad))
    assert "host names use letters" in str(exc.value)


def test_unknown_kind_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, GOOD.replace('kind = "postgresql"', 'kind = "oracle"')))
    assert "hosts.web1.sources.maindb.kind: expected one of" in str(exc.value)
    assert "postgresql" in str(exc.value)


def test_a_host_key_is_pinned_once(tmp_path: Path) -> None:
    """No pin in the config: the host is valid and its key is pinned in backupd's own pin
    file by `backupctl host trust` (connections refuse until then). Two pins: an error."""
    text = GOOD.replace('host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx"\n', "")
    config = load_config(write(tmp_path, text))
    assert config.hosts["web1"].host_key is None and config.hosts["web1"].known_hosts is None
    both = GOOD.replace('host_key = "', 'known_hosts = "/etc/backupd/known_hosts"\nhost_key = "')
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, both))
    assert "pin the host key once: give host_key or known_hosts, not both" in str(exc.value)


def test_source_names_cannot_hold_dots_or_shell(tmp_path: Path) -> None:
    text = GOOD.replace("sources.maindb]", 'sources."main.db$(x)"]')
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    assert "source names use letters" in str(exc.value)


def test_passphrase_needs_exactly_one_source(tmp_path: Path) -> None:
    text = GOOD.replace('file = "pass"', 'file = "pass"\ncommand = ["pass", "show"]')
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    assert "passphrase: give exactly one of file, credential or command" in str(exc.value)


def test_missing_file_and_bad_toml_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[store\n"))


def test_the_example_config_is_valid() -> None:
    from jobs.registry import load_config

    root = Path(__file__).resolve().parents[2]
    config = load_config(root / "config" / "backupd.example.toml")
    assert config.daemon.schedule == "0 2 * * *"
    assert config.maintenance.verify_archives == 3


def test_the_example_config_with_its_notify_lines_on_is_valid(tmp_path: Path) -> None:
    from jobs.registry import load_config

    root = Path(__file__).resolve().parents[2]
    text = (root / "config" / "backupd.example.toml").read_text()
    on = "\n".join(
        line[2:] if line.startswith(("# [notify]", "# urls =")) else line
        for line in text.splitlines()
    )
    assert on != text
    (tmp_path / "backupd.toml").write_text(on)
    config = load_config(tmp_path / "backupd.toml")
    assert config.notify is not None and len(config.notify.urls) == 1
    assert config.notify.alert_interval == 3600


def test_the_example_config_with_its_gate_lines_on_is_valid(tmp_path: Path) -> None:
    """An operator uncommenting the gate's keys as the example shows them."""
    from backupd.actions.gatelist import allowlist, restore_allowlist
    from jobs.registry import load_config

    root = Path(__file__).resolve().parents[2]
    text = (root / "config" / "backupd.example.toml").read_text()
    on = "\n".join(
        line[2:]
        if line.startswith(
            ("# gate =", "# restore_key =", "# restore_paths =", "# restore_username =")
        )
        else line
        for line in text.splitlines()
    )
    path = tmp_path / "backupd.toml"
    path.write_text(on)
    host = load_config(path).hosts["web1"]
    assert host.gate and host.restore_paths == ("/srv/restore",)
    assert allowlist(host)["requests"] and restore_allowlist(host)["requests"]
    names = {r["name"] for r in restore_allowlist(host)["requests"]}
    assert "maindb: restore: pg_restore" in names  # a database restores through the gate too
    assert host.sources["maindb"].options.restore_username == "backupd_restore"


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ('"default"', "default"),
        ('"buzhash,14,23,16,4095"', "buzhash,14,23,16,4095"),
        ('"buzhash, 12, 20, 14, 4095"', "buzhash,12,20,14,4095"),
        ('"fixed,4194304"', "fixed,4194304"),
        ('"fixed,4096,512"', "fixed,4096,512"),
    ],
)
def test_chunker_params_as_borg_takes_them(tmp_path: Path, given: str, kept: str) -> None:
    text = GOOD.replace('timeout = "2h"', f'timeout = "2h"\nchunker_params = {given}')
    assert load_config(write(tmp_path, text)).hosts["web1"].sources["maindb"].chunker_params == kept


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ('"buzhash,16,14,15,4095"', "MIN <= MASK <= MAX"),  # borg would refuse it at night
        ('"buzhash,14,24,16,4095"', "MIN <= MASK <= MAX <= 23"),
        ('"buzhash,14,23,16,4096"', "WINDOW must be odd"),
        ('"fixed,32"', "64 <= BLOCK"),
        ('"rabin,1,2"', "not chunker params"),
        ('"buzhash,a,b,c,d"', "not chunker params"),
        ("64", "Input should be a valid string"),
    ],
)
def test_chunker_params_borg_would_refuse_are_config_errors(
    tmp_path: Path, given: str, says: str
) -> None:
    path = write(tmp_path, GOOD.replace('timeout = "2h"', f"chunker_params = {given}"))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    (problem,) = exc.value.problems
    assert problem.startswith(f"{path}: hosts.web1.sources.maindb.chunker_params:")
    assert says in problem
