"""Every backupctl command is documented in docs/ and has help text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

from backupd.cli.main import cli

DOCS = Path(__file__).resolve().parents[2] / "docs"


def commands(group: click.Group, prefix: str = "backupctl") -> list[tuple[str, click.Command]]:
    """Every command under ``group``, as click finds them (the top level's are lazy)."""
    found = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None and cmd.name == name, f"{prefix} {name}: no such command"
        path = f"{prefix} {name}"
        if isinstance(cmd, click.Group):
            if cmd.invoke_without_command:  # a command of its own too: backupctl alerts
                found.append((path, cmd))
            found += commands(cmd, path)
        else:
            found.append((path, cmd))
    return found


def test_every_command_is_documented_and_has_help() -> None:
    text = "\n".join(p.read_text() for p in DOCS.rglob("*.md"))
    listed = commands(cli)
    assert len(listed) >= 3
    for path, cmd in listed:
        assert f"`{path}" in text, f"{path} is not documented in docs/"
        assert cmd.help and "Examples" in cmd.help, f"{path} has no help with examples"


def test_the_command_line_imports_only_the_command_it_runs() -> None:
    """backupctl status must not import restore's or drill's modules (start-up time)."""
    code = (
        "import sys; from backupd.cli.main import main; sys.argv = ['backupctl', 'status',"
        " '--help']\ntry: main()\nexcept SystemExit: pass\n"
        "print(' '.join(m for m in sys.modules if m.startswith('backupd.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    loaded = done.stdout.split()
    assert "backupd.cli.inspect" in loaded, done.stderr
    for heavy in ("backupd.cli.restore", "backupd.actions.drill", "backupd.actions.restore_db"):
        assert heavy not in loaded


def test_asking_the_demo_what_it_does_does_not_run_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m tests.harness.demo --help` ran the demo again, which starts from an
    empty var/: a new user asking lost what the last run made. Any argument says what it
    does and starts nothing."""
    from tests.harness import demo

    def started() -> None:
        raise AssertionError("the demo started")

    monkeypatch.setattr(demo, "sandbox", started)
    assert demo.main(["--help"]) == 0
    assert "``" not in capsys.readouterr().out  # no reST markup in a terminal
    assert demo.main(["--bogus"]) == 2
    assert "unknown argument '--bogus': the demo takes none" in capsys.readouterr().err
    done = subprocess.run(
        [sys.executable, "-m", "tests.harness.demo", "-h"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "Usage: make demo" in done.stdout
