"""The bench's own virtualenv: borg as production installs it, and borgmatic, the baseline.

``bench/.venv`` holds ``borgbackup`` (the project's pin) and ``borgmatic`` and nothing
else: no pytest, which borg's start-up self-test imports when it can (0.12 s of every borg
command in the development venv that a production install does not pay). borgmatic is
the fleet benchmark's baseline, never a dependency of backupd. Created on first use,
reinstalled when the pins change; pip reuses its wheel cache (borg compiles once).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "bench" / ".venv"
BORGMATIC = "borgmatic==2.1.10"


def _borg_pin() -> str:
    for line in (ROOT / "pyproject.toml").read_text().splitlines():
        if '"borgbackup==' in line:
            return line.strip().strip(",").strip('"')
    raise RuntimeError("pyproject.toml pins no borgbackup")


def bench_venv() -> Path:
    """The venv's bin directory (``borg``, ``borgmatic``)."""
    want = f"{_borg_pin()} {BORGMATIC}"
    stamp = VENV / ".bench-installed"
    if stamp.exists() and stamp.read_text() == want and (VENV / "bin" / "borgmatic").exists():
        return VENV / "bin"
    print(f"bench: installing {want} into {VENV} (borg compiles once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, *want.split()], check=True)
    stamp.write_text(want)
    return VENV / "bin"
