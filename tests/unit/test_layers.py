"""The layout's rules, checked (docs/decisions/0018-layout-by-layer.md): arrows one way
and no circle (the import contracts in pyproject.toml, run by import-linter), every local
process through one seam, and a top level a newcomer can read at a glance."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
    )


def copy_of_the_code(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for name in ("backupd", "jobs"):
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_import_contracts_are_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout


def test_an_upward_import_breaks_the_layers(tmp_path: Path) -> None:
    tree = copy_of_the_code(tmp_path)
    catalogue = tree / "backupd" / "catalogue" / "claims.py"
    catalogue.write_text(catalogue.read_text() + "\nfrom backupd.actions import status  # up\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "backupd.catalogue is not allowed to import backupd.actions" in result.stdout


def test_a_circle_inside_a_package_is_found(tmp_path: Path) -> None:
    tree = copy_of_the_code(tmp_path)
    tree_mod = tree / "backupd" / "actions" / "tree.py"  # restore imports tree already
    tree_mod.write_text(tree_mod.read_text() + "\nfrom backupd.actions import restore  # circle\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "No cycles are allowed in backupd.actions" in result.stdout


def test_local_processes_start_in_one_module() -> None:
    modules = [p for name in ("backupd", "jobs") for p in (ROOT / name).rglob("*.py")]
    users = sorted(str(p.relative_to(ROOT)) for p in modules if "subprocess" in p.read_text())
    # the droplet gate is shipped to droplets and runs there, not on the backup host
    assert users == ["backupd/local/process.py", "backupd/remote/droplet_gate.py"]


def test_the_top_level_holds_at_most_a_dozen_entries() -> None:
    entries = sorted(p.name for p in (ROOT / "backupd").iterdir() if p.name != "__pycache__")
    assert len(entries) <= 12, entries
    assert {"cli", "daemon", "actions", "config", "remote", "local"} <= set(entries)


def loaded_by(modules: str) -> set[str]:
    code = f"import sys; import {modules}; print(' '.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return {name.split(".")[0] for name in out.split()}


def test_the_resident_daemon_loads_no_ssh_library() -> None:
    """The scheduler never connects (its workers do): paramiko and cryptography, ~16 MB
    resident, stay out of it (daemon_idle_rss_mb, issue 14), and out of a plain CLI start."""
    daemon = loaded_by("backupd.daemon.main, backupd.daemon.service")
    assert not daemon & {"paramiko", "cryptography"}, daemon & {"paramiko", "cryptography"}
    assert {"paramiko"} <= loaded_by("backupd.actions.backup, backupd.remote.ssh")  # bites
