"""After any crash or failure, every archive in a repository is in the catalogue with its
facts, or removed; nothing backupd starts outlives it; a full store is one clear line
(issue 11, case 10)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Deployment
from tests.harness.daemon import NEVER, DaemonProc, Fleet, wait_for
from tests.harness.droplet import Droplet
from tests.harness.procs import is_root

pytestmark = pytest.mark.e2e


def catalogue_names(d: Deployment | Fleet) -> set[str]:
    state = d.state_dir if isinstance(d, Deployment) else d.state
    with sqlite3.connect(state / "catalogue.db") as c:
        rows = c.execute("SELECT name FROM archives WHERE pruned_at IS NULL").fetchall()
    return {name for (name,) in rows}


def test_kill_9_of_the_process_group_leaves_nothing_running_and_no_unknown_archive(
    fleet: Fleet,
) -> None:
    fleet.write({"a": {"s1": fleet.source("one", schedule=NEVER)}})
    fleet.gate.hold()
    run = DaemonProc(fleet.config, fleet.root / "once.log", extra_args=["--once"])
    fleet.daemons.append(run.start())
    wait_for("the dump to start", lambda: fleet.gate.started(), daemon=run)
    os.killpg(run.pid, signal.SIGKILL)  # backupd's group; borg runs in a session of its own
    run.wait()
    fleet.gate.release()  # the dump could now finish, if anything were left to take it
    wait_for(
        "everything backupd started to end",
        lambda: not fleet.leftovers(),
        timeout=60,
        failing=fleet.leftovers,
    )
    assert fleet.archives("a") == []  # borg was stopped before it committed anything
    assert any(fleet.state.glob("sweep/a/*"))  # the run's marker: it never ended well
    assert (fleet.state / "run" / "run1-0" / "verdict").exists()  # the gate spool, left by it

    after = DaemonProc(fleet.config, fleet.root / "once2.log", extra_args=["--once"])
    fleet.daemons.append(after.start())
    assert after.wait(timeout=300) == 0
    crashed, good = fleet.runs()
    assert crashed["status"] == "interrupted" and good["status"] == "succeeded"
    assert set(fleet.archives("a")) == catalogue_names(fleet) and len(catalogue_names(fleet)) == 1
    assert not any(fleet.state.glob("sweep/a/*"))
    assert not any(p.name.startswith(("run", "rsh-")) for p in (fleet.state / "run").iterdir())
    with sqlite3.connect(fleet.state / "catalogue.db") as c:
        kinds = sorted(k for (k,) in c.execute("SELECT kind FROM alert_events"))
    assert kinds == ["daemon_restarted", "run_interrupted"]  # what a kill -9 deserves


@pytest.fixture
def sqlite_source(droplet: Droplet) -> Callable[[str, int], dict[str, object]]:
    def make(name: str, random_bytes: int = 0) -> dict[str, object]:
        path = droplet.root / "sweep" / f"{name}.db"
        path.parent.mkdir(exist_ok=True)
        path.unlink(missing_ok=True)
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB)")
            if random_bytes:
                db.execute("INSERT INTO blobs (body) VALUES (?)", (os.urandom(random_bytes),))
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", droplet.user, str(path.parent)], check=True)
        return {"kind": "sqlite", "path": str(path)}

    return make


def make_archive(d: Deployment, name: str, comment: dict[str, object] | None) -> None:
    """An archive as a crashed or failed run would have left it in the repository."""
    args = ["create", "--stdin-name", "x"]
    if comment is not None:
        text = json.dumps(comment).replace("{", "{{").replace("}", "}}")
        args += ["--comment", text]
    env = {
        **os.environ,
        "BORG_PASSCOMMAND": f"cat {d.passphrase_file}",
        "BORG_BASE_DIR": str(d.root / "borg-test"),
    }
    subprocess.run(
        [str(Path(os.sys.executable).parent / "borg"), *args, f"{d.store / 'web1'}::{name}", "-"],
        input=b"data",
        env=env,
        check=True,
        capture_output=True,
    )


def test_a_sweep_settles_what_a_failed_or_killed_run_left(
    deploy: Callable[..., Deployment], sqlite_source: Callable[..., dict[str, object]]
) -> None:
    broken = Path(str(sqlite_source("broken")["path"]))
    broken.write_bytes(b"not a database")  # the dump fails after the run began writing
    d = deploy({"app": sqlite_source("app"), "gone": {"kind": "sqlite", "path": str(broken)}})
    d.backupctl("backup", "now", "web1/app", check=True)
    assert not any(d.state_dir.glob("sweep/web1/*"))  # a good run leaves no marker
    assert d.backupctl("backup", "now", "web1/gone").returncode == 1
    [(failed,)] = d.catalogue_rows("SELECT id FROM runs WHERE status = 'failed'")
    base = {
        "backupd": "0.1.0",
        "host": "web1",
        "source": "gone",
        "kind": "sqlite",
        "item": "nope.db",
        "filename": "nope.sqlite",
        "started": "2026-11-29T03:00:00+00:00",
        "run": failed,
        "plan": ["nope.db"],
    }
    make_archive(d, "gone.unsealed.2026-11-29T03:00:00.000Z", base)
    make_archive(d, "gone.unsealed.2026-11-29T03:00:00.000Z.recreate", base)
    make_archive(d, "gone.half.2026-11-29T03:00:01.000Z.checkpoint", base)
    sealed = {
        **base,
        "sha256": "ab" * 32,
        "nbytes": 4,
        "facts": {"rows": {"t": 1}},
        "finished": "2026-11-29T03:00:02+00:00",
    }
    make_archive(d, "gone.sealed.2026-11-29T03:00:02.000Z", sealed)
    make_archive(d, "by-hand", None)
    assert any(d.state_dir.glob(f"sweep/web1/{failed}"))  # the failed run left its marker

    d.backupctl("backup", "now", "web1/app", check=True)  # sweeps before it writes
    left = set(d.archives("web1"))
    assert left - catalogue_names(d) == {"by-hand"}  # reported, not ours to delete
    assert "gone.sealed.2026-11-29T03:00:02.000Z" in catalogue_names(d)
    [(run_id, sha, facts)] = d.catalogue_rows(
        "SELECT run_id, sha256, facts FROM archives WHERE name LIKE 'gone.sealed.%'"
    )
    assert (run_id, sha) == (failed, "ab" * 32) and json.loads(str(facts))["rows"] == {"t": 1}
    assert not any("unsealed" in a or a.endswith((".recreate", ".checkpoint")) for a in left)
    assert not any(d.state_dir.glob("sweep/web1/*"))
    alerts = d.catalogue_rows(
        "SELECT kind, message FROM alert_events WHERE kind != 'backup_failed'"
    )
    assert [k for k, _ in alerts] == ["foreign_archives"]
    assert "by-hand" in str(alerts[0][1])

    d.backupctl("backup", "now", "web1/app", check=True)  # no marker: no listing, no alert
    assert len(d.catalogue_rows("SELECT id FROM alert_events WHERE kind = 'foreign_archives'")) == 1


@pytest.fixture
def small_store(deploy: Callable[..., Deployment]) -> Iterator[Callable[..., Deployment]]:
    """A deployment whose store is a 24 MB file system of its own (root only)."""
    mounted: list[Path] = []

    def make(sources: dict[str, dict[str, object]]) -> Deployment:
        d = deploy(sources)
        d.store.mkdir(mode=0o700)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(d.store)], check=True
        )
        mounted.append(d.store)
        return d

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.skipif(not is_root(), reason="mounts a small file system")
def test_a_full_store_is_one_clear_line_and_leaves_nothing_unknown(
    small_store: Callable[..., Deployment], sqlite_source: Callable[..., dict[str, object]]
) -> None:
    d = small_store({"big": sqlite_source("big", 30_000_000)})  # more than the store holds
    result = d.backupctl("backup", "now", "web1/big")
    assert result.returncode == 1
    [(error,)] = d.catalogue_rows("SELECT error FROM runs")
    assert error.startswith("web1/big: store full: ")
    assert "free on " + str(d.store / "web1") in error
    assert "needs about " in error or "borg ran out of space writing" in error
    assert result.stderr.strip().splitlines() == [error]
    assert "Traceback" not in error

    subprocess.run(["mount", "-o", "remount,size=1g", str(d.store)], check=True)
    d.backupctl("backup", "now", "web1/big", check=True)
    assert set(d.archives("web1")) == catalogue_names(d)
    assert len(catalogue_names(d)) == 1
