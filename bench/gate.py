"""What the droplet gate costs (issue 15, decision 0022).

- gate_request_ms: one allowed request through the gate (``python3 gate.py ALLOWLIST``
  with the request in SSH_ORIGINAL_COMMAND, as sshd runs it), less the same program run
  directly: the gate's own start, allowlist read and match. Median of ROUNDS x 10.
- gated_night_ratio: ``backupctl backup now`` of one host (a directory of 5,000 files, 1 %
  of them changed each night, and a SQLite database) with its key restricted to the
  gate (``gate = true``: rsync through ``rrsync -ro``) against the same host unrestricted;
  the two alternate night by night (ROUNDS each, after a first pull each), the droplet's
  key line switched between them, median against median.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupd.actions.gatelist import allowlist
from backupd.remote import droplet_gate
from bench.venv import bench_venv
from bench.workloads import make_tree, touch_one_percent
from jobs.registry import load_config
from tests.harness.fleet import HostSpec, write_fleet_config

if TYPE_CHECKING:
    from bench.run import Bench

BIN = Path(sys.executable).parent
ROUNDS = int(os.environ.get("BENCH_GATE_ROUNDS", 5))


class GateBench:
    def __init__(self, bench: Bench) -> None:
        self.bench, self.droplet = bench, bench.droplet
        self.work = bench.work / "gate"
        self.work.mkdir()
        self.work.chmod(0o755)
        self.gate = self.droplet.root / "gate.py"
        shutil.copy(droplet_gate.__file__, self.gate)
        self.keys = self.droplet.root / "authorized_keys"
        self.open_line = self.keys.read_text()

    def run(self) -> dict[str, Any]:
        return {"gate_request_ms": self.request_ms(), **self.nights()}

    def request_ms(self) -> float:
        allow = self.work / "true.json"
        allow.write_text('{"gate": 1, "requests": [{"name": "t", "argv": ["/bin/true"]}]}')
        env = {**os.environ, "SSH_ORIGINAL_COMMAND": "/bin/true"}
        gated = ["/usr/bin/python3", str(self.gate), str(allow)]
        costs = []
        for _ in range(ROUNDS * 10):
            through = _timed(lambda: subprocess.run(gated, env=env, check=True))
            direct = _timed(lambda: subprocess.run(["/bin/true"], check=True))
            costs.append(through - direct)
        return round(statistics.median(costs) * 1000, 1)

    def nights(self) -> dict[str, Any]:
        tree = make_tree(self.droplet.root / "gate-srv" / "tree", 50_000_000, 5000)
        db = tree.parent / "app.db"
        with sqlite3.connect(db) as c:
            c.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body TEXT)")
            c.executemany("INSERT INTO t (body) VALUES (?)", [("x" * 200,)] * 20000)
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", f"{self.droplet.user}:", str(tree.parent)], check=True)
        sources = {
            "files": {"kind": "directory", "path": str(tree)},
            "app": {"kind": "sqlite", "path": str(db)},
        }
        configs = {
            name: self._config(name, sources, gate)
            for name, gate in (("open", False), ("gated", True))
        }
        line = self._gated_line(configs["gated"])
        times: dict[str, list[float]] = {"open": [], "gated": []}
        for night in range(ROUNDS + 1):
            for name, config in configs.items():
                self.keys.write_text(line if name == "gated" else self.open_line)
                took = self._backup(config, name)
                if night:  # the first is each one's full pull
                    times[name].append(took)
            touch_one_percent(tree)
        self.keys.write_text(self.open_line)
        shutil.rmtree(tree.parent)
        gated, open_ = statistics.median(times["gated"]), statistics.median(times["open"])
        return {
            "gated_night_seconds": round(gated, 2),
            "open_night_seconds": round(open_, 2),
            "gated_night_ratio": round(gated / open_, 3),
        }

    def _config(self, name: str, sources: dict[str, dict[str, str]], gate: bool) -> Path:
        return write_fleet_config(
            self.work / f"{name}.toml",
            state_dir=self.work / name / "state",
            store=self.work / name / "store",
            passphrase_file=self.bench.passphrase,
            hosts=[HostSpec(name, self.droplet, sources, settings={"gate": gate})],
            borg=bench_venv() / "borg",
        )

    def _gated_line(self, config: Path) -> str:
        """backupd's key as `backupctl host setup` installs it, with that config's list."""
        allow = self.work / "allow.json"
        allow.write_text(json.dumps(allowlist(load_config(config).hosts["gated"])))
        key = " ".join(Path(f"{self.droplet.key_path}.pub").read_text().split()[:2])
        return f'restrict,command="/usr/bin/python3 {self.gate} {allow}" {key}\n'

    def _backup(self, config: Path, host: str) -> float:
        start = time.monotonic()
        subprocess.run(
            [str(BIN / "backupctl"), "--config", str(config), "backup", "now", host],
            check=True,
            capture_output=True,
        )
        return time.monotonic() - start


def _timed(fn: Any) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start
