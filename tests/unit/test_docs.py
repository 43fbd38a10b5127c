"""Every backupctl command is documented in docs/ and has help text."""

from __future__ import annotations

from pathlib import Path

import click

from backupd.cli.main import cli

DOCS = Path(__file__).resolve().parents[2] / "docs"


def commands(group: click.Group, prefix: str = "backupctl") -> list[tuple[str, click.Command]]:
    found = []
    for name, cmd in sorted(group.commands.items()):
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
