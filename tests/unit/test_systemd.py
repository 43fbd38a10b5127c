"""The systemd files: the hardening score, what systemd itself says of the units, and that
they agree with the daemon (its defaults, the example config, the --unit-failed flag).

``systemd-analyze security --offline=yes`` scores the unit file alone: the backupd user
need not exist and nothing is started. ``verify`` and the sysusers/tmpfiles checks run
against a throw-away root directory, never this machine's /etc.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from backupd.config.load import DaemonConfig
from backupd.daemon.service import ABORT_GRACE, TICK

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "systemd"
SERVICE = SYSTEMD / "backupd.service"
FAILURE = SYSTEMD / "backupd-failure@.service"
EXAMPLE = tomllib.loads((REPO / "config" / "backupd.example.toml").read_text())

MAX_EXPOSURE = 2.0  # borgmatic's sample unit scores 2.9
SCORE = re.compile(r"Overall exposure level for (\S+): (\d+(?:\.\d+)?)")

Unit = dict[str, list[tuple[str, str]]]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian: apt-get install systemd)")
    return path


def analyze() -> str:
    """systemd-analyze, new enough for ``security --offline=`` (systemd 250+)."""
    path = tool("systemd-analyze")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=True)
    found = re.match(r"systemd (\d+)", version.stdout)
    if found is None or int(found.group(1)) < 250:
        pytest.skip(f"systemd-analyze security --offline needs systemd 250+: {version.stdout[:40]}")
    return path


def parse_unit(path: Path) -> Unit:
    """Sections of KEY=VALUE lines; a key may repeat (SystemCallFilter=), so keep them all."""
    unit: Unit = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        assert not line.endswith("\\"), f"{path.name}: keep each setting on one line: {line}"
        if line.startswith("["):
            section = line.strip("[]")
            unit[section] = []
            continue
        key, sep, value = line.partition("=")
        assert sep and section, f"{path.name}: not KEY=VALUE in a section: {line}"
        unit[section].append((key.strip(), value.strip()))
    return unit


def values(unit: Unit, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def value(unit: Unit, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key}= set {len(found)} times: {found}"
    return found[0]


def seconds(span: str) -> float:
    """A systemd time span ("10min", "5min 20s", "90") in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}
    terms = re.findall(r"(\d+)\s*([a-z]*)", span)
    assert terms and "".join(n + u for n, u in terms) == span.replace(" ", ""), span
    return sum(int(n) * units[u] for n, u in terms)


# -- (a) what systemd-analyze says -----------------------------------------------------


@pytest.mark.parametrize("unit", [SERVICE, FAILURE], ids=lambda p: p.name)
def test_exposure_score(unit: Path) -> None:
    done = subprocess.run(
        [analyze(), "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # An unknown or misspelt directive is ignored with a warning and would score as unset.
    assert done.stderr.strip() == "", done.stderr
    lines = [line for line in done.stdout.splitlines() if SCORE.search(line)]
    assert len(lines) == 1, done.stdout[-2000:]
    line = lines[0].strip()
    print(f"\n{unit.name}: {line}")  # shown by `pytest -s` and `make systemd-score`
    match = SCORE.search(line)
    assert match is not None
    assert float(match.group(2)) <= MAX_EXPOSURE, done.stdout


def fake_root(tmp_path: Path) -> Path:
    """A root with this machine's stock units (sysinit.target & co.), ours, and stand-ins
    for the programs the units start, so ``verify`` can run before backupd is installed."""
    root = tmp_path / "root"
    stock = next(
        (
            p
            for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
            if (p / "sysinit.target").exists()
        ),
        None,
    )
    if stock is None:
        pytest.skip("no systemd unit directory with sysinit.target on this machine")
    shutil.copytree(stock, root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for unit in (SERVICE, FAILURE):
        shutil.copy(unit, units / unit.name)
    for command in ("/opt/backupd/bin/backupd", "/bin/kill"):
        stand_in = root / command.lstrip("/")
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        stand_in.write_text("#!/bin/sh\nexit 0\n")
        stand_in.chmod(0o755)
    return root


def test_systemd_verify(tmp_path: Path) -> None:
    """Parse errors, unknown keys, missing executables, bad dependencies: none."""
    root = fake_root(tmp_path)
    names = ["backupd.service", "backupd-failure@backupd.service.service"]
    done = subprocess.run(
        [analyze(), "verify", f"--root={root}", *names],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stderr.strip()) == (0, ""), done.stderr


# -- (b) the units agree with the daemon -----------------------------------------------


def test_daemon_unit() -> None:
    unit = parse_unit(SERVICE)
    assert value(unit, "Service", "Type") == "notify"
    assert value(unit, "Service", "NotifyAccess") == "main"
    argv = shlex.split(value(unit, "Service", "ExecStart"))
    assert argv == ["/opt/backupd/bin/backupd", "--config", "/etc/backupd/backupd.toml"]
    assert value(unit, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert value(unit, "Service", "User") == value(unit, "Service", "Group") == "backupd"
    assert value(unit, "Service", "KillMode") == "mixed"
    assert value(unit, "Service", "Restart") == "on-failure"
    assert value(unit, "Unit", "OnFailure") == "backupd-failure@%n.service"
    assert value(unit, "Install", "WantedBy") == "multi-user.target"


def test_passphrase_credential_matches_the_example_config() -> None:
    name, _, path = value(parse_unit(SERVICE), "Service", "LoadCredential").partition(":")
    assert name == EXAMPLE["passphrase"]["credential"]
    assert path == "/etc/backupd/passphrase"


def test_writable_paths_match_the_example_config() -> None:
    unit = parse_unit(SERVICE)
    assert value(unit, "Service", "ProtectSystem") == "strict"
    assert EXAMPLE["store"]["path"] in values(unit, "Service", "ReadWritePaths")
    state = value(unit, "Service", "StateDirectory")
    assert f"/var/lib/{state}" == EXAMPLE["state_dir"]
    assert value(unit, "Service", "StateDirectoryMode") == "0700"


def test_timeouts_fit_the_daemon() -> None:
    unit = parse_unit(SERVICE)
    grace = DaemonConfig().stop_grace
    # SIGTERM: stop_grace for jobs to finish, ABORT_GRACE to abort, then a margin to exit.
    assert seconds(value(unit, "Service", "TimeoutStopSec")) >= grace + ABORT_GRACE + 60
    # The daemon pings every WatchdogSec/2 from a loop that turns every TICK.
    assert seconds(value(unit, "Service", "WatchdogSec")) >= 60 * TICK


def test_failure_unit_reports_the_failed_unit() -> None:
    unit = parse_unit(FAILURE)
    argv = shlex.split(value(unit, "Service", "ExecStart"))
    assert argv[:3] == ["/opt/backupd/bin/backupd", "--config", "/etc/backupd/backupd.toml"]
    assert argv[3:] == ["--unit-failed", "%i"]
    assert value(unit, "Service", "Type") == "oneshot"
    assert value(unit, "Service", "User") == "backupd"
    assert value(unit, "Service", "StateDirectory") == "backupd"
    assert not values(unit, "Service", "LoadCredential"), "it needs no passphrase"
    assert "Install" not in unit, "only OnFailure= starts it"


def test_backupd_knows_unit_failed() -> None:
    from backupd.daemon.main import parse_args

    assert parse_args(["--unit-failed", "backupd.service"]).unit_failed == "backupd.service"


# -- (c) sysusers and tmpfiles ---------------------------------------------------------


def entries(path: Path) -> list[list[str]]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [shlex.split(line) for line in lines if line and not line.startswith("#")]


def test_sysusers_lines() -> None:
    assert entries(SYSTEMD / "backupd.sysusers") == [
        ["u", "backupd", "-", "backupd backup daemon", "/var/lib/backupd", "/usr/sbin/nologin"]
    ]


def tmpfiles() -> dict[str, list[str]]:
    found = entries(SYSTEMD / "backupd.tmpfiles")
    assert all(len(e) == 6 for e in found), found
    return {e[1]: [e[0], *e[2:5]] for e in found}


def test_tmpfiles_lines() -> None:
    lines = tmpfiles()
    assert lines["/etc/backupd"] == ["d", "0750", "root", "backupd"]
    assert lines["/etc/backupd/passphrase"] == ["z", "0600", "root", "root"]
    store = EXAMPLE["store"]["path"]
    assert lines[store] == ["d", "0700", "backupd", "backupd"]
    assert store in values(parse_unit(SERVICE), "Service", "ReadWritePaths")


def offline(tmp_path: Path, name: str, kind: str) -> Callable[..., None]:
    """Run systemd-sysusers / systemd-tmpfiles on a throw-away root holding our file."""
    binary = tool(name)
    root = tmp_path / "root"
    target = root / "etc" / f"{kind}.d" / "backupd.conf"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(SYSTEMD / f"backupd.{kind}", target)

    def run(*args: str) -> None:
        done = subprocess.run([binary, f"--root={root}", *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    return run


def test_sysusers_creates_the_user(tmp_path: Path) -> None:
    offline(tmp_path, "systemd-sysusers", "sysusers")()
    passwd = (tmp_path / "root/etc/passwd").read_text().splitlines()
    user = [line.split(":") for line in passwd if line.startswith("backupd:")]
    assert len(user) == 1
    assert user[0][5:] == ["/var/lib/backupd", "/usr/sbin/nologin"]
    assert int(user[0][2]) < 1000, "a system user"


def test_tmpfiles_creates_the_tree(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("systemd-tmpfiles must be root to give files to backupd")
    offline(tmp_path, "systemd-sysusers", "sysusers")()
    root = tmp_path / "root"
    (root / "etc/backupd").mkdir(parents=True)
    for name in ("passphrase", "backupd.toml"):  # as a careless `echo >` or `cp` leaves them
        (root / "etc/backupd" / name).write_text("x")
        (root / "etc/backupd" / name).chmod(0o644)
    offline(tmp_path, "systemd-tmpfiles", "tmpfiles")("--create")
    backupd = next(
        line
        for line in (root / "etc/passwd").read_text().splitlines()
        if line.startswith("backupd:")
    ).split(":")
    uid, gid = int(backupd[2]), int(backupd[3])
    for path, (kind, mode, user, group) in tmpfiles().items():
        target = root / path.lstrip("/")
        if kind == "z" and not target.exists():
            continue  # z only adjusts what the admin made (no SSH key here)
        st = target.stat()
        assert oct(st.st_mode & 0o7777) == oct(int(mode, 8)), path
        assert st.st_uid == (uid if user == "backupd" else 0), path
        assert st.st_gid == (gid if group == "backupd" else 0), path
