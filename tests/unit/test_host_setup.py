"""`backupctl host setup`'s script (backupd/actions/host_setup.py, decision 0022): what it
installs, run for real under a ROOT directory; the roles and rules it writes."""

from __future__ import annotations

import getpass
import json
import os
import pwd
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from backupd.actions.host_setup import setup_script
from backupd.errors import UsageError
from backupd.remote import droplet_gate as gate
from jobs.registry import load_config

LOGIN = getpass.getuser()


def new_key(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def config(tmp_path: Path, sources: str, name: str = "web1") -> object:
    key = tmp_path / "id_ed25519"
    if not key.exists():
        new_key(key)
    text = f"""
state_dir = "state"
[store]
path = "store"
[passphrase]
file = "pass"
[hosts."{name}"]
address = "127.0.0.1"
user = "{LOGIN}"
key = "{key}"
gate = true
{sources}"""
    path = tmp_path / "backupd.toml"
    path.write_text(text)
    return load_config(path).hosts[name]


SOURCES = """
[hosts.web1.sources.shop]
kind = "mariadb"
databases = ["shop", "odd`name"]
socket = "/run/mysqld/mysqld.sock"
[hosts.web1.sources.main]
kind = "postgresql"
username = "backupd reader"
[hosts.web1.sources.files]
kind = "directory"
path = "/srv/files"
sudo = true
[hosts.web1.sources.data]
kind = "volume"
volume = "app_data"
sudo = true
"""


def test_the_script_holds_the_gate_the_allowlist_the_rules_and_the_roles(tmp_path: Path) -> None:
    setup = setup_script(config(tmp_path, SOURCES))  # type: ignore[arg-type]
    script = setup.script
    subprocess.run(["sh", "-n"], input=script.encode(), check=True)  # POSIX sh syntax
    assert Path(gate.__file__).read_text() in script  # the gate as it is
    assert 'rule root "$(where rrsync)" -ro /srv/files' in script
    assert "docker volume inspect --format '{{ .Mountpoint }}' -- app_data" in script
    assert 'GRANT pg_read_all_data TO "backupd reader";' in script
    assert 'CREATE ROLE "backupd reader" LOGIN BYPASSRLS' in script
    assert "peer authentication needs username" in script  # the role is not the login
    # MariaDB's user is the login: unix_socket, the grants of each database
    assert f"CREATE USER IF NOT EXISTS '{LOGIN}'@'localhost' IDENTIFIED VIA unix_socket;" in script
    assert "ON `odd``name`.* TO" in script and "GRANT SELECT ON mysql.proc" in script


def test_run_twice_it_installs_once_and_keeps_the_login_s_other_keys(tmp_path: Path) -> None:
    host = config(tmp_path, '[hosts.web1.sources.app]\nkind = "sqlite"\npath = "/srv/app.db"\n')
    setup = setup_script(host)  # type: ignore[arg-type]
    root = tmp_path / "root"
    home = pwd.getpwnam(LOGIN).pw_dir
    keys = Path(f"{root}{home}/.ssh/authorized_keys")
    keys.parent.mkdir(parents=True)
    public = (tmp_path / "id_ed25519.pub").read_text().split()
    keys.write_text(f"ssh-ed25519 AAAAothers alice\n{public[0]} {public[1]} old-unrestricted\n")
    for _ in range(2):
        done = subprocess.run(
            ["sh", "-s", str(root)], input=setup.script, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
    lines = keys.read_text().splitlines()
    assert lines[0] == "ssh-ed25519 AAAAothers alice"  # kept as it was
    [restricted] = lines[1:]
    gate_py = f"{root}/usr/local/lib/backupd-gate/gate.py"
    assert restricted.startswith(f'restrict,command="/usr/bin/python3 {gate_py} ')
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    assert oct(keys.parent.stat().st_mode & 0o777) == "0o700"
    installed = json.loads(Path(f"{root}/etc/backupd-gate/web1.json").read_text())
    assert installed["digest"] == setup.digest == gate.requests_digest(installed["requests"])
    assert os.access(gate_py, os.X_OK)
    assert "no_sudoers /etc/sudoers.d/backupd" in setup.script  # nothing runs as root
    assert not Path(f"{root}/etc/sudoers.d").exists()


@pytest.mark.parametrize(
    ("name", "sources", "said"),
    [
        (
            "web1",
            '[hosts.web1.sources.shop]\nkind = "mariadb"\npassword_file = "{secret}"\n',
            r"web1/shop \(a gated MariaDB source cannot send a password",
        ),
    ],
)
def test_what_cannot_be_gated_is_said_before_anything_is_written(
    tmp_path: Path, name: str, sources: str, said: str
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("pw")
    secret.chmod(0o600)
    sources = sources.replace("{secret}", str(secret)).replace("web1", name)
    with pytest.raises(UsageError, match=said):
        setup_script(config(tmp_path, sources, name))  # type: ignore[arg-type]


def test_the_gated_config_of_droplet_setup_md_makes_a_set_up(tmp_path: Path) -> None:
    """The example in docs/droplet-setup.md, as an operator copies it: it loads, every
    source goes through the gate, and the script it makes is valid sh."""
    docs = Path(__file__).resolve().parents[2] / "docs" / "droplet-setup.md"
    [example] = [b for b in docs.read_text().split("```toml\n")[1:] if "gate = true" in b]
    example = example.split("```")[0]
    key = tmp_path / "id_ed25519"
    new_key(key)
    example = re.sub(r'key = ".*"', f'key = "{key}"', example)
    path = tmp_path / "backupd.toml"
    header = 'state_dir = "state"\n[store]\npath = "store"\n[passphrase]\nfile = "pass"\n'
    path.write_text(header + textwrap.dedent(example))
    setup = setup_script(load_config(path).hosts["web1"])
    subprocess.run(["sh", "-n"], input=setup.script.encode(), check=True)
    assert "GRANT pg_read_all_data" in setup.script and "IDENTIFIED VIA unix_socket" in setup.script


def test_a_restore_key_gets_its_own_line_and_write_verbs_only(tmp_path: Path) -> None:
    restore_key = tmp_path / "restore_key"
    new_key(restore_key)
    tree = '[hosts.web1.sources.files]\nkind = "directory"\npath = "/srv/files"\nsudo = true\n'
    paths = f'restore_key = "{restore_key}"\nrestore_paths = ["/srv/restore/"]\n'
    host = config(tmp_path, paths + tree)
    script = setup_script(host).script  # type: ignore[arg-type]
    assert "/etc/backupd-gate/web1-restore.json" in script
    assert script.count("\nauthorize ") == 2 and "backupd-restore@web1" in script
    assert "authorize 'the restore key'" in script and "restore_dir /srv/restore" in script
    assert 'rule root "$(where rrsync)" -wo /srv/files' in script  # the tree, as root
    restore = json.loads(
        script.split('web1-restore.json 0644 <<"BACKUPD_EOF"\n')[1].split("BACKUPD_EOF")[0]
    )
    trees = sorted(
        (r["tree"]["path"], r["tree"].get("sudo", False))
        for r in restore["requests"]
        if "tree" in r
    )
    assert trees == [("/srv/files", True), ("/srv/restore", False)]
    assert all(r["tree"]["write"] for r in restore["requests"] if "tree" in r)
    argvs = [r["argv"] for r in restore["requests"] if "argv" in r]
    assert ["mkdir", "-p", "--", "/srv/restore"] in argvs
    assert ["sudo", "-n", "mkdir", "-p", "--", "/srv/files"] in argvs
    same = config(tmp_path, f'restore_key = "{tmp_path / "id_ed25519"}"\n' + tree)
    with pytest.raises(UsageError, match="restore_key must be another key"):
        setup_script(same)  # type: ignore[arg-type]


def run_script(
    script: str, root: Path, path: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path or os.environ["PATH"]}
    root.mkdir(exist_ok=True)
    return subprocess.run(
        ["sh", "-s", str(root)], input=script, capture_output=True, text=True, env=env, check=False
    )


def test_the_script_stops_saying_why_where_the_droplet_is_not_ready(tmp_path: Path) -> None:
    """A login that does not exist or cannot run the gate, a volume Docker cannot place:
    the script stops with one line, before a key or a rule is written for it."""
    sqlite = '[hosts.web1.sources.app]\nkind = "sqlite"\npath = "/srv/app.db"\n'
    host = config(tmp_path, sqlite)
    nobody = host.model_copy(update={"user": "no-such-login-here"})  # type: ignore[attr-defined]
    done = run_script(setup_script(nobody).script, tmp_path / "r1")
    assert done.returncode == 1 and "no such login: no-such-login-here" in done.stderr
    assert not list((tmp_path / "r1").rglob("authorized_keys"))
    nologin = host.model_copy(update={"user": "nobody"})  # type: ignore[attr-defined]
    done = run_script(setup_script(nologin).script, tmp_path / "r2")
    assert done.returncode == 1 and "the gate runs through it" in done.stderr
    volume = '[hosts.web1.sources.data]\nkind = "volume"\nvolume = "app_data"\nsudo = true\n'
    bin_dir = tmp_path / "bin"  # a Docker that cannot reach its daemon (the stand-in)
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(
        "#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n"
    )
    (bin_dir / "docker").chmod(0o755)
    script = setup_script(config(tmp_path, volume)).script  # type: ignore[arg-type]
    done = run_script(script, tmp_path / "r3", f"{bin_dir}:{os.environ['PATH']}")
    assert done.returncode == 1 and "data: read the tree: docker volume inspect" in done.stderr
    assert not (tmp_path / "r3" / "etc" / "sudoers.d" / "backupd").exists()


def test_a_set_up_without_root_commands_removes_an_earlier_drop_in(tmp_path: Path) -> None:
    tree = '[hosts.web1.sources.files]\nkind = "directory"\npath = "/srv/files"\n'
    root = tmp_path / "root"
    run_script(setup_script(config(tmp_path, tree + "sudo = true\n")).script, root)  # type: ignore[arg-type]
    drop_in = root / "etc" / "sudoers.d" / "backupd"
    assert "rrsync -ro /srv/files" in drop_in.read_text()
    done = run_script(setup_script(config(tmp_path, tree)).script, root)  # type: ignore[arg-type]
    assert done.returncode == 0, done.stderr
    assert not drop_in.exists() and "nothing runs as root" in done.stdout


def test_under_a_root_it_leaves_the_database_roles_alone(tmp_path: Path) -> None:
    pg = '[hosts.web1.sources.main]\nkind = "postgresql"\npsql = "/nonexistent/psql"\n'
    done = run_script(setup_script(config(tmp_path, pg)).script, tmp_path / "look")  # type: ignore[arg-type]
    assert done.returncode == 0, done.stderr
    assert "main: database roles not created (installing under" in done.stdout


def test_a_host_that_is_not_gated_or_a_loose_restore_key_is_refused(tmp_path: Path) -> None:
    tree = '[hosts.web1.sources.files]\nkind = "directory"\npath = "/srv/files"\n'
    ungated = config(tmp_path, tree).model_copy(update={"gate": False})  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match="set gate = true on the host first"):
        setup_script(ungated)
    loose = tmp_path / "loose_key"
    new_key(loose)
    loose.chmod(0o644)
    with pytest.raises(UsageError, match="readable by others"):
        setup_script(config(tmp_path, f'restore_key = "{loose}"\n' + tree))  # type: ignore[arg-type]


def test_a_volume_read_and_restored_as_root_gets_rules_for_where_docker_keeps_it(
    tmp_path: Path,
) -> None:
    """Its mountpoint is asked of Docker (the stand-in) while the script runs: the rules
    name that directory for reading, restoring, creating and looking into it."""
    restore_key = tmp_path / "restore_key"
    new_key(restore_key)
    volume = '[hosts.web1.sources.data]\nkind = "volume"\nvolume = "app_data"\nsudo = true\n'
    host = config(tmp_path, f'restore_key = "{restore_key}"\n' + volume)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text("#!/bin/sh\necho /var/lib/docker/volumes/app_data/_data\n")
    (bin_dir / "docker").chmod(0o755)
    root = tmp_path / "root"
    done = run_script(setup_script(host).script, root, f"{bin_dir}:{os.environ['PATH']}")  # type: ignore[arg-type]
    assert done.returncode == 0, done.stderr
    rules = (root / "etc" / "sudoers.d" / "backupd").read_text()
    mount = "/var/lib/docker/volumes/app_data/_data"
    for rule in (f"rrsync -ro {mount}", f"rrsync -wo {mount}", f"mkdir -p -- {mount}"):
        assert f"NOPASSWD: /usr/bin/{rule}" in rules, rules
    assert f"/usr/bin/find {mount} -mindepth 1 -maxdepth 1 -print -quit" in rules
    assert rules.count("volume inspect --format {{ .Mountpoint }} -- app_data") == 1


def test_a_restore_key_brings_the_database_restore_roles_and_no_key_none(tmp_path: Path) -> None:
    """With a restore key: PostgreSQL's restore role (CREATEDB, its databases' owners
    granted) and MariaDB's restore user (a password drawn on the droplet into its option
    file, grants on its databases and theirs-and-_ names); without one, neither."""
    restore_key = tmp_path / "restore_key"
    new_key(restore_key)
    host = config(tmp_path, f'restore_key = "{restore_key}"\n' + SOURCES)
    script = setup_script(host).script  # type: ignore[arg-type]
    subprocess.run(["sh", "-n"], input=script.encode(), check=True)
    assert 'CREATE ROLE "backupd_restore" LOGIN CREATEDB;' in script
    assert "r.oid IN (SELECT datdba FROM pg_database WHERE NOT datistemplate)" in script
    assert "p.rolsuper OR p.rolcreaterole" in script  # owners that would make it more
    assert "/etc/backupd/shop-restore.cnf" in script and "/dev/urandom" in script
    assert "GRANT ALL PRIVILEGES ON `odd``name\\_%`.* TO 'backupd_restore'@'localhost';" in script
    restore = json.loads(
        script.split('web1-restore.json 0644 <<"BACKUPD_EOF"\n')[1].split("BACKUPD_EOF")[0]
    )
    names = sorted(r["name"] for r in restore["requests"] if "argv" in r)
    assert "main: restore: pg_restore" in names and "shop: restore: load the dump" in names
    plain = setup_script(config(tmp_path, SOURCES)).script  # type: ignore[arg-type]
    assert "backupd_restore" not in plain
