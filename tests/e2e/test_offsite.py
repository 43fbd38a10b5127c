"""The off-site copy (issue 18) against a real S3 server (rclone serve s3 on loopback): a
host's repository copied under its Borg lock, read back, its manifest written last; the
copy opens with Borg; a repository deleted locally leaves the copy as it is; what the
sync replaces or deletes is kept in the trash; a copy cut off half way is no good copy,
and the next run completes it; the remote's secret is never in argv, output or the
catalogue."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from backupd.actions.context import Context
from backupd.actions.maintain import run_maintenance
from jobs.registry import load_config
from tests.e2e.conftest import Deployment, small_sqlite
from tests.harness.droplet import Droplet
from tests.harness.procs import command_lines, wait_until
from tests.harness.s3 import RCLONE, S3Server, s3_server
from tests.json_contract import conforming

pytestmark = pytest.mark.e2e


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3Server]:
    with s3_server(tmp_path) as server:
        yield server


def with_offsite(d: Deployment, s3: S3Server, tmp: Path, extra: str = "") -> Path:
    """[offsite] with one remote "eu" on the test's server; its rclone section (with the
    secret key) in a private file, as docs/config.md shows."""
    section = tmp / "offsite-eu.conf"
    section.write_text(s3.section())
    section.chmod(0o600)
    text = d.config.read_text().split("\n[offsite]")[0]
    d.config.write_text(
        text
        + "\n[offsite]\nverify_files = 4\n"
        + extra
        + f'[offsite.remotes.eu]\npath = "backups/fleet"\nrclone = {{ file = "{section}" }}\n'
    )
    return section


def rclone(s3: S3Server, tmp: Path, *args: str, stdin: bytes = b"") -> None:
    """rclone with the test's own config of the server (remote "r")."""
    conf = tmp / "test-rclone.conf"
    conf.write_text("[r]\n" + s3.section())
    subprocess.run(
        [RCLONE, "--config", str(conf), *args], input=stdin, check=True, capture_output=True
    )


def fetch(s3: S3Server, tmp: Path, host: str) -> Path:
    """The copy of ``host``'s repository, fetched back from the server with rclone."""
    dest = tmp / f"fetched-{host}"
    shutil.rmtree(dest, ignore_errors=True)
    rclone(s3, tmp, "copy", f"r:backups/fleet/{host}", str(dest))
    return dest


def borg(d: Deployment, repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Borg on ``repo`` with a cache of its own per place (a copy is the same repository
    somewhere else)."""
    env = {
        "BORG_PASSCOMMAND": f"cat {d.passphrase_file}",
        "BORG_BASE_DIR": str(d.root / f"borg-{repo.name}-{repo.parent.name}"),
        "PATH": "/usr/bin:/bin",
    }
    borg_bin = str(Path(RCLONE).parent / "borg")
    return subprocess.run([borg_bin, *args, str(repo)], env=env, capture_output=True, text=True)


def borg_archives(d: Deployment, repo: Path) -> list[str]:
    """The archives Borg lists in ``repo``."""
    listed = borg(d, repo, "list", "--short")
    assert listed.returncode == 0, listed.stderr
    return sorted(listed.stdout.split())


def test_a_copy_off_site_opens_with_borg_and_survives_the_local_repository(
    deploy: Callable[..., Deployment], droplet: Droplet, s3: S3Server, tmp_path: Path
) -> None:
    db = small_sqlite(droplet, "offsite")
    d = deploy({"app": {"kind": "sqlite", "path": str(db)}})
    d.backupctl("backup", "now", "web1/app", check=True)
    with_offsite(d, s3, tmp_path)

    copied = d.backupctl("offsite", "run", "web1", check=True)
    assert copied.stdout.startswith("web1: eu: ") and "5 read back and matched" in copied.stdout
    assert "in the copy" in copied.stdout
    manifest = json.loads((s3.root / "backups/fleet/.manifests/web1.json").read_text())
    assert manifest["host"] == "web1" and manifest["verified"][0] == "config"
    local = borg_archives(d, d.store / "web1")
    assert borg_archives(d, fetch(s3, tmp_path, "web1")) == local
    assert not any("lock" in o for o in s3.objects("fleet/web1"))  # Borg's lock: not copied
    # config check: the copy is seen; a typo in the prefix lists empty and is told apart
    # from "no copy yet" by what the catalogue says was copied (the bucket's typo: below)
    checked = d.backupctl("config", "check").stdout
    assert "ok    offsite eu: backups/fleet answers: copies of web1\n" in checked, checked
    config = d.config.read_text()
    d.config.write_text(config.replace('"backups/fleet"', '"backups/flet"'))
    checked = d.backupctl("config", "check").stdout
    assert (
        "warn  offsite eu: backups/flet answers: no copy yet; none of web1, which the "
        "catalogue says was copied (a typo in path?"
    ) in checked, checked
    d.config.write_text(config)

    # a wrong secret key: rclone's own reason, at the first request (not "is a file not a
    # directory", which is what its sync says of a remote it cannot list)
    section = with_offsite(d, s3, tmp_path)
    section.write_text(s3.section().replace(s3.secret_key, "not-the-secret-key"))
    wrong = d.backupctl("offsite", "run", "web1")
    assert wrong.returncode == 19 and "SignatureDoesNotMatch" in wrong.stderr, wrong.stderr
    assert "is a file not a directory" not in wrong.stderr
    with_offsite(d, s3, tmp_path)

    # a repository made anew in its place would take the copy into the trash: refused
    shutil.rmtree(d.store / "web1")
    d.borg("init", "--encryption", "repokey-blake2", str(d.store / "web1"))
    other = d.backupctl("offsite", "run", "web1")
    assert other.returncode == 19, other.stderr
    assert "is not the repository copied there before" in other.stderr
    assert other.stderr.count("is not the repository") == 1  # said once
    assert borg_archives(d, fetch(s3, tmp_path, "web1")) == local

    # the backup host loses the repository: the next run refuses, the copy stays whole
    shutil.rmtree(d.store / "web1")
    lost = d.backupctl("offsite", "run", "web1")
    assert lost.returncode == 19, lost.stderr
    assert "no Borg repository at" in lost.stderr and "kept as they are" in lost.stderr
    assert borg_archives(d, fetch(s3, tmp_path, "web1")) == local
    status = d.backupctl("offsite", "status", check=True).stdout
    assert "web1" in status and "failed" in status

    secret = s3.secret_key
    assert secret not in copied.stdout + copied.stderr + lost.stderr + status
    assert secret.encode() not in (d.state_dir / "catalogue.db").read_bytes()
    assert not list((d.state_dir / "offsite").glob("rclone-*"))  # the private conf: gone


def test_what_a_sync_deletes_or_replaces_is_kept_in_the_trash_for_its_days(
    deploy: Callable[..., Deployment], droplet: Droplet, s3: S3Server, tmp_path: Path
) -> None:
    db = small_sqlite(droplet, "offsite-trash")
    d = deploy({"app": {"kind": "sqlite", "path": str(db)}})
    d.backupctl("backup", "now", "web1/app", check=True)
    with_offsite(d, s3, tmp_path, "trash_days = 2\n")
    d.backupctl("offsite", "run", "web1", check=True)
    before = set(s3.objects("fleet/web1"))
    d.backupctl("backup", "now", "web1/app", check=True)  # a new index, hints, integrity
    d.backupctl("offsite", "run", "web1", check=True)
    trashed = s3.objects("fleet/.trash")
    replaced = {"fleet/" + o.split("/", 3)[3] for o in trashed}
    assert replaced and replaced <= before  # the day before's index files, not lost
    # an old run's trash is removed once over trash_days; the recent one stays
    old = s3.root / "backups/fleet/.trash/2020-01-01T000000Z/web1"
    rclone(
        s3, tmp_path, "rcat", "r:backups/fleet/.trash/2020-01-01T000000Z/web1/index.1", stdin=b"old"
    )
    assert old.is_dir()
    said = d.backupctl("offsite", "run", "web1", check=True).stdout
    assert "1 trash run(s) over 2 days removed" in said
    assert not old.exists() and set(s3.objects("fleet/.trash")) >= set(trashed)

    # a committed segment changed in place (a damaged disk, tampering): the copy's own
    # version goes to the trash, never lost, and the run warns (found by a new-user trial:
    # the first step overwrote it)
    segment = max(
        (p for p in (d.store / "web1" / "data").rglob("*") if p.is_file()),
        key=lambda p: p.stat().st_size,
    )
    good = segment.read_bytes()
    segment.write_bytes(good[:-8] + b"tampered")
    changed = d.backupctl("offsite", "run", "web1", check=True)
    assert "differed from the copy's" in changed.stderr, changed.stderr
    rel = segment.relative_to(d.store / "web1").as_posix()
    kept = [o for o in s3.objects("fleet/.trash") if o.endswith(f"/web1/{rel}")]
    assert [(s3.root / "backups" / o).read_bytes() for o in kept] == [good]
    assert ("offsite_warning",) in d.catalogue_rows("SELECT kind FROM alert_events")


def test_a_copy_cut_off_half_way_leaves_the_copy_before_it_good_and_is_completed_later(
    deploy: Callable[..., Deployment], droplet: Droplet, s3: S3Server, tmp_path: Path
) -> None:
    """Whenever a copy is cut off, what is on the remote is still a good repository (the
    one copied before: the new index goes up last), its manifest unchanged; the next run
    completes it. The cut comes while the new segments are being uploaded (the first
    step, slowed down)."""
    db = small_sqlite(droplet, "offsite-cut")
    d = deploy({"app": {"kind": "sqlite", "path": str(db)}})
    d.backupctl("backup", "now", "web1/app", check=True)
    with_offsite(d, s3, tmp_path)
    d.backupctl("offsite", "run", "web1", check=True)
    first = borg_archives(d, d.store / "web1")
    manifest = (s3.root / "backups/fleet/.manifests/web1.json").read_bytes()
    with sqlite3.connect(db) as c:  # some megabytes that do not compress
        c.execute("CREATE TABLE IF NOT EXISTS blob (b BLOB)")
        c.executemany("INSERT INTO blob VALUES (randomblob(65536))", [()] * 48)
    d.backupctl("backup", "now", "web1/app", check=True)
    # 3 MB at 32 kB/s: the segments' upload takes over a minute; it is cut at its start
    with_offsite(d, s3, tmp_path, 'bandwidth = "32k"\nretries = 1\n')
    data = str(d.store / "web1" / "data")

    def uploading() -> bool:
        return any("rclone" in line and f"copy {data} " in line for _, line in command_lines())

    def stop_while_uploading() -> None:
        wait_until(uploading, 120, "a segment being uploaded")
        s3.stop()

    stopper = threading.Thread(target=stop_while_uploading)
    stopper.start()
    cut = d.backupctl("offsite", "run", "web1")
    stopper.join()
    assert cut.returncode == 19, cut.stdout + cut.stderr
    # rclone's real cause (not "is a file not a directory": its places end in "/")
    assert "error: web1: offsite: remote eu: the copy of web1 failed: " in cut.stderr
    assert "is a file" not in cut.stderr
    assert (s3.root / "backups/fleet/.manifests/web1.json").read_bytes() == manifest
    assert "failed" in d.backupctl("offsite", "status", check=True).stdout
    assert not [
        line
        for _, line in command_lines()
        if "rclone" in line and "sync" in line and str(d.store) in line
    ]  # nothing left running
    s3.start()
    copy = fetch(s3, tmp_path, "web1")
    check_repository(d, copy)  # whole: the repository as it was copied before
    assert borg_archives(d, copy) == first

    with_offsite(d, s3, tmp_path)  # no limit now
    d.backupctl("offsite", "run", "web1", check=True)
    assert (s3.root / "backups/fleet/.manifests/web1.json").read_bytes() != manifest
    copy = fetch(s3, tmp_path, "web1")
    check_repository(d, copy)
    assert borg_archives(d, copy) == borg_archives(d, d.store / "web1") != first


def check_repository(d: Deployment, repo: Path) -> None:
    checked = borg(d, repo, "check")
    assert checked.returncode == 0, checked.stderr


def test_config_check_says_whether_each_remote_answers(
    deploy: Callable[..., Deployment], s3: S3Server, tmp_path: Path
) -> None:
    d = deploy({"gone": {"kind": "sqlite", "path": "/nonexistent/app.db"}})
    section = with_offsite(d, s3, tmp_path)

    def offsite_checks() -> list[dict[str, object]]:
        output = d.backupctl("config", "check", "--json")
        assert s3.secret_key not in output.stdout + output.stderr
        checks = conforming("config check", output.stdout)["checks"]
        return [c for c in checks if str(c["subject"]).startswith("offsite")]

    [ok] = offsite_checks()
    assert ok["ok"] and ok["detail"] == "backups/fleet answers: no copy yet", ok
    assert not ok["warning"]
    config = d.config.read_text()
    d.config.write_text(config.replace('"backups/fleet"', '"backupz/fleet"'))  # a typo
    [typo] = offsite_checks()
    assert typo["ok"] and typo["warning"], typo  # rclone would make the bucket: say so
    assert str(typo["detail"]).startswith("backupz/fleet does not exist on the remote: check")
    local = tmp_path / "local.conf"  # the same kind on a remote that is a directory
    local.write_text(f"type = alias\nremote = {tmp_path}\n")
    local.chmod(0o600)
    d.config.write_text(
        config.replace('"backups/fleet"', '"nowhere"').replace(str(section), str(local))
    )
    [missing] = offsite_checks()
    assert missing["warning"] and "nowhere does not exist on the remote" in str(missing["detail"])
    (tmp_path / "nowhere").mkdir()
    [there] = offsite_checks()
    assert there["ok"] and not there["warning"], there
    assert str(there["detail"]).endswith("nowhere answers: no copy yet")
    d.config.write_text(config)
    section.write_text(s3.section().replace(s3.secret_key, "not-the-secret-key"))
    [refused] = offsite_checks()
    assert not refused["ok"] and str(refused["detail"]).startswith("remote eu: listing ")
    section.chmod(0o644)
    [readable] = offsite_checks()
    assert not readable["ok"] and "readable by others" in str(readable["detail"])


def catalogue_copy(config: Path) -> None:
    """The daily ``catalogue`` job (the catalogue into ``_catalogue``), run now."""
    ctx = Context(load_config(config))
    assert run_maintenance(ctx, "catalogue", None, "test").ok


def new_backup_host(d: Deployment, root: Path, encryption: str | None = None) -> Deployment:
    """The same configuration on a new backup host: an empty state dir and store (the
    passphrase and the remote's settings are what the operator kept)."""
    root.mkdir()
    text = d.config.read_text()
    text = text.replace(f'"{d.state_dir}"', f'"{root / "state"}"')
    text = text.replace(f'"{d.store}"', f'"{root / "store"}"')
    (root / "backupd.toml").write_text(text)
    return Deployment(
        root, root / "backupd.toml", root / "state", root / "store", d.passphrase_file
    )


def rows(db: Path) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(db)) as c:
        return c.execute("SELECT * FROM t ORDER BY x").fetchall()


def restored_rows(d: Deployment, out: Path) -> list[tuple[object, ...]]:
    d.backupctl("restore", "web1/app", "--to", str(out), check=True)
    [db] = [p for p in out.rglob("*.sqlite") if p.is_file()]
    return rows(db)


def test_the_backup_host_is_gone_runbook(
    deploy: Callable[..., Deployment], droplet: Droplet, s3: S3Server, tmp_path: Path
) -> None:
    """docs/restore-runbook.md "The backup host is gone", as written: a new host with the
    configuration, the passphrase and the remote's settings; restore-from; catalogue
    rebuild; restore a database: the same rows."""
    db = small_sqlite(droplet, "offsite-gone")
    with sqlite3.connect(db) as c:
        c.executemany("INSERT INTO t VALUES (?)", [(f"row {n}",) for n in range(250)])
    d = deploy({"app": {"kind": "sqlite", "path": str(db)}})
    d.backupctl("backup", "now", "web1/app", check=True)
    with_offsite(d, s3, tmp_path)
    catalogue_copy(d.config)
    copied = d.backupctl("offsite", "run", check=True).stdout
    assert "catalogue and keys: _catalogue: eu: " in copied, copied
    assert "key bundle of 2 repositories sent" in copied
    [bundle] = s3.objects("fleet/.keys")
    sealed = (s3.root / "backups" / bundle).read_bytes()
    assert d.passphrase_file.read_bytes().strip() not in sealed and b"BORG_KEY" not in sealed
    # the old host loses web1 before it goes: its next bundle still holds web1's key
    # (carried over from the one before; found by a new-user trial)
    shutil.move(d.store / "web1", tmp_path / "web1-aside")
    assert d.backupctl("offsite", "run").returncode == 19  # web1 missing: not copied
    assert len(s3.objects("fleet/.keys")) == 2

    new = new_backup_host(d, tmp_path / "new-host")
    # before restore-from, the new host's copy job does not take "no repository" for
    # "nothing to copy" (found by a new-user trial: it counted as a good copy)
    early = new.backupctl("offsite", "run", "web1")
    assert early.returncode == 19 and "restore-from web1" in early.stderr, early.stderr
    back = new.backupctl("offsite", "restore-from", check=True).stdout
    assert "web1: 1 archive, copied " in back and "_catalogue: 1 archive," in back, back
    assert "key bundle of " in back and "2 keys, opened" in back
    assert back.strip().endswith("next: backupctl catalogue rebuild")
    assert new.store.stat().st_mode & 0o777 == 0o700
    assert (new.store / "web1").stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o077 == 0 for p in (new.store / "web1").rglob("*"))
    new.backupctl("catalogue", "rebuild", check=True)
    assert restored_rows(new, tmp_path / "restored") == rows(db)

    again = new.backupctl("offsite", "restore-from", "web1")  # never over a repository
    assert again.returncode == 9 and "already in the store; nothing fetched" in again.stderr
    # one repository lost of two: by default the lost one comes back, the other is kept
    shutil.rmtree(new.store / "web1")
    partly = new.backupctl("offsite", "restore-from", check=True).stdout
    assert "web1: 1 archive," in partly and "already in the store): _catalogue" in partly
    assert s3.secret_key not in copied + back + again.stderr + partly


def test_a_store_lost_on_a_living_host_comes_back_though_borg_saw_newer(
    deploy: Callable[..., Deployment], droplet: Droplet, s3: S3Server, tmp_path: Path
) -> None:
    """The store is lost, the state dir is not: this host's Borg remembers a newer state
    of the repository than the copy (a backup after it), which it would refuse as a
    replay attack; restore-from moves that memory aside. A copy cut half way after the
    good one leaves segments no index names: they are not brought back."""
    db = small_sqlite(droplet, "offsite-lost")
    with sqlite3.connect(db) as c:
        c.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(40)])
    d = deploy({"app": {"kind": "sqlite", "path": str(db)}})
    d.backupctl("backup", "now", "web1/app", check=True)
    with_offsite(d, s3, tmp_path)
    d.backupctl("offsite", "run", "web1", check=True)
    copied = rows(db)
    with sqlite3.connect(db) as c:
        c.execute("INSERT INTO t VALUES (1000)")
    d.backupctl("backup", "now", "web1/app", check=True)  # newer than the copy
    stray = "r:backups/fleet/web1/data/0/999999"
    rclone(s3, tmp_path, "rcat", stray, stdin=b"cut half way")

    shutil.rmtree(d.store)
    said = d.backupctl("status").stdout  # the loss is the first thing status says
    assert "gone, though the catalogue lists 2 archive(s) of web1" in said, said
    back = d.backupctl("offsite", "restore-from", "web1")
    assert back.returncode == 0, back.stderr
    assert not (d.store / "web1/data/0/999999").exists()
    assert "no key bundle on the remote" in back.stdout  # repokey: not needed
    assert "1 archive made after the copy marked gone" in back.stdout
    assert "catalogue rebuild" not in back.stdout  # the catalogue is kept
    assert list((d.state_dir / "borg/.config/borg/security").glob("*.before-restore-*"))
    assert restored_rows(d, tmp_path / "restored") == copied

    # backups go on into it, and its next copy is no "tampering": the segments Borg now
    # writes again were never in a complete state of the copy (a new-user trial found a
    # false alarm at every first copy after restore-from)
    d.backupctl("backup", "now", "web1/app", check=True)
    again = d.backupctl("offsite", "run", "web1", check=True)
    assert "differed from the copy" not in again.stdout + again.stderr
    assert d.catalogue_rows("SELECT kind FROM alert_events WHERE kind LIKE 'offsite%'") == []


def test_a_keyfile_repository_gets_its_key_back_from_the_bundle(
    deploy: Callable[..., Deployment], droplet: Droplet, s3: S3Server, tmp_path: Path
) -> None:
    """encryption = "keyfile-blake2": the key lives only on the backup host; the new host
    has it from the key bundle (sealed with the passphrase), and nothing without it."""
    db = small_sqlite(droplet, "offsite-keyfile")
    d = deploy({"app": {"kind": "sqlite", "path": str(db)}})
    text = d.config.read_text().replace("[store]\n", '[store]\nencryption = "keyfile-blake2"\n')
    d.config.write_text(text)
    d.backupctl("backup", "now", "web1/app", check=True)
    with_offsite(d, s3, tmp_path)
    d.backupctl("offsite", "run", check=True)

    new = new_backup_host(d, tmp_path / "new-host")
    back = new.backupctl("offsite", "restore-from", check=True).stdout
    assert "web1: 1 archive," in back and "key imported from the key bundle" in back, back
    new.backupctl("catalogue", "rebuild", check=True)
    assert restored_rows(new, tmp_path / "restored") == rows(db)

    # a wrong passphrase: said before anything is fetched, and nothing left that would
    # refuse the next try (found by a new-user trial)
    other = new_backup_host(d, tmp_path / "other-host")
    wrong = tmp_path / "wrong-passphrase"
    wrong.write_text("not the passphrase\n")
    wrong.chmod(0o600)
    right = other.config.read_text()
    other.config.write_text(right.replace(str(d.passphrase_file), str(wrong)))
    refused = other.backupctl("offsite", "restore-from", "web1")
    assert refused.returncode == 19, refused.stdout + refused.stderr
    assert "does not open with this passphrase" in refused.stderr
    assert "Nothing fetched" in refused.stderr and not list(other.store.glob("*web1*"))
    other.config.write_text(right)
    other.backupctl("offsite", "restore-from", "web1", check=True)


def test_a_repository_that_lost_most_of_its_copy_is_not_copied_until_accepted(
    deploy: Callable[..., Deployment], droplet: Droplet, s3: S3Server, tmp_path: Path
) -> None:
    """Archives deleted on the backup host (an intruder, a wrong prune) would reach the
    copy as a move of most of it into the trash, purged trash_days later: the copy stops
    and alerts until a person accepts it (the thresholds: tests/unit/test_offsite.py)."""
    db = small_sqlite(droplet, "offsite-shrink")
    with sqlite3.connect(db) as c:  # a megabyte that does not compress
        c.execute("CREATE TABLE blob (b BLOB)")
        c.executemany("INSERT INTO blob VALUES (randomblob(65536))", [()] * 16)
    d = deploy({"app": {"kind": "sqlite", "path": str(db)}})
    d.backupctl("backup", "now", "web1/app", check=True)
    with_offsite(d, s3, tmp_path)
    d.backupctl("offsite", "run", "web1", check=True)
    copied = (s3.root / "backups/fleet/.manifests/web1.json").read_bytes()
    repo = str(d.store / "web1")
    d.borg("delete", "--glob-archives", "*", repo)
    d.borg("compact", repo)

    refused = d.backupctl("offsite", "run", "web1")
    assert refused.returncode == 19, refused.stdout + refused.stderr
    assert "less than its copy of" in refused.stderr and "--accept-shrink" in refused.stderr
    assert (s3.root / "backups/fleet/.manifests/web1.json").read_bytes() == copied
    assert not s3.objects("fleet/.trash")  # nothing moved
    [(kind,)] = d.catalogue_rows("SELECT kind FROM alert_events")
    assert kind == "offsite_failed"

    accepted = d.backupctl("offsite", "run", "web1", "--accept-shrink")
    assert accepted.returncode == 0, accepted.stderr
    assert s3.objects("fleet/.trash")  # the old segments: in the trash for trash_days
    assert (s3.root / "backups/fleet/.manifests/web1.json").read_bytes() != copied
