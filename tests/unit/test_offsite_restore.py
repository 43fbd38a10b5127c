"""What a new backup host needs from the off-site copy, without a server (issue 18): the
key bundle sealed with the passphrase, the newest complete state of a copy, which key
bundles expire, which remote restore-from reads. The copy and restore-from run against a
real S3 server in tests/e2e/test_offsite.py."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backupd.actions.offsite_restore import newest_state, pick_remote
from backupd.borg.keybundle import MAGIC, made_at, seal, unseal
from backupd.config.load import OffsiteConfig, RemoteConfig
from backupd.config.sections import PassphraseConfig
from backupd.errors import OffsiteError, UsageError
from backupd.local.workdirs import held_dir, remove_unheld
from jobs.offsite_catalogue import expired

KEYS = {"web1": "BORG_KEY 1a2b\nhQEKBAAA\n", "_catalogue": "BORG_KEY 3c4d\nhQEKBBBB\n"}
MADE = "2026-11-30T17:00:00+00:00"


@pytest.fixture(scope="module")
def bundle() -> bytes:
    return seal(KEYS, "correct horse battery", MADE)


def test_a_key_bundle_opens_with_its_passphrase_only(bundle: bytes) -> None:
    assert unseal(bundle, "correct horse battery") == KEYS
    assert made_at(bundle) == MADE  # readable without the passphrase
    assert b"BORG_KEY" not in bundle and b"correct horse" not in bundle
    with pytest.raises(OffsiteError, match="does not open with this passphrase"):
        unseal(bundle, "correct horse battery ")
    # sealed anew: another salt and nonce, the same keys
    again = seal(KEYS, "correct horse battery", MADE)
    assert again != bundle and unseal(again, "correct horse battery") == KEYS


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "does not open"),  # one bit of the keys
        (lambda b: b.replace(MADE.encode(), b"2020-01-01T00:00:00+00:00"), "does not open"),
        (lambda b: b[:-5], "does not open"),  # cut short
        (lambda b: b"PK\x03\x04" + b, "not a backupd key bundle"),
        (lambda b: MAGIC + b"{not json\n" + b, "header is not JSON"),
        (lambda b: b.replace(b'"n": 131072', b'"n": 1073741824'), "damaged"),  # a memory bomb
    ],
)
def test_a_changed_key_bundle_never_gives_a_key(bundle: bytes, change: object, said: str) -> None:
    assert callable(change) and change(bundle) != bundle
    with pytest.raises(OffsiteError, match=said):
        unseal(change(bundle), "correct horse battery")


def test_the_newest_complete_state_of_a_copy_is_what_its_newest_index_names() -> None:
    listing = {
        "config": 700,
        "README": 73,
        "nonce": 16,
        "index.7": 1000,
        "hints.7": 200,
        "integrity.7": 190,
        "index.12": 1100,  # the newest index: its hints and integrity went up before it
        "hints.12": 210,
        "integrity.12": 195,
        "hints.15": 220,  # a later copy, cut before its index
        "data/0/3": 5000,
        "data/0/12": 17,
        "data/0/13": 9000,  # a later copy's segments: no index names them
        "data/1/1000": 4,
    }
    chosen = newest_state(listing)
    assert sorted(chosen) == [
        "README",
        "config",
        "data/0/12",
        "data/0/3",
        "hints.12",
        "index.12",
        "integrity.12",
        "nonce",
    ]
    assert chosen["index.12"] == 1100
    with pytest.raises(OffsiteError, match="no index"):
        newest_state({"config": 700, "hints.3": 1, "data/0/1": 5})


def test_old_key_bundles_expire_but_never_the_newest() -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    names = [
        "keys-2026-10-01T061500Z.bundle",
        "keys-2026-11-29T061500Z.bundle",
        "keys-2026-11-30T061500Z.bundle",
        "notes.txt",  # not ours: left alone
    ]
    assert expired(names, 30, now) == ["keys-2026-10-01T061500Z.bundle"]
    # the host stopped copying long ago: its last bundle stays whatever its age
    assert expired(["keys-2025-01-01T000000Z.bundle"], 30, now) == []


def test_restore_from_reads_the_one_remote_or_the_one_named(tmp_path: object) -> None:
    source = PassphraseConfig(file="/etc/backupd/eu.conf")
    one = OffsiteConfig(remotes={"eu": RemoteConfig(path="b/fleet", rclone=source)})
    assert pick_remote(one, None) == "eu"
    two = OffsiteConfig(
        remotes={n: RemoteConfig(path="b/fleet", rclone=source) for n in ("eu", "us")}
    )
    with pytest.raises(UsageError, match="name the remote: --remote eu or us"):
        pick_remote(two, None)
    with pytest.raises(UsageError, match="unknown remote 'asia'"):
        pick_remote(two, "asia")
    with pytest.raises(UsageError, match=r"no \[offsite\] table"):
        pick_remote(None, "eu")


def test_a_drill_killed_half_way_leaves_nothing_for_long_and_a_running_one_is_kept(
    tmp_path: Path,
) -> None:
    """The drill of a copy fetches a repository into the store: a killed one's directory
    (as big as a repository) goes at the host's next drill; one still running (backupctl
    beside the daemon) is kept, and so is another host's."""
    store = tmp_path / "store"
    killed = store / ".offsite-drill-web1-killed"
    killed.mkdir(parents=True)
    (killed / "in-use").touch()  # its holder died: the lock is free
    other = store / ".offsite-drill-web2-running"
    other.mkdir()
    with held_dir(store, ".offsite-drill-web1-") as running:
        with held_dir(store, ".offsite-drill-web1-") as second:
            assert running.is_dir() and second != running  # held: kept
            assert stat.S_IMODE(second.stat().st_mode) == 0o700
        assert not killed.exists() and not second.exists()
        assert other.is_dir()
    assert not running.exists()
    young = store / ".offsite-drill-web1-young"
    young.mkdir()  # made a moment ago, its lock not yet taken: left alone
    assert remove_unheld(store, ".offsite-drill-web1-") == []
