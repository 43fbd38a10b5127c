"""rsync's messages read back exactly (its ``\\#ooo`` quoting, EACCES per path, anything
else an error), and removing unreadable paths from a mirror safely."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from backupd.actions.unreadable import nothing_read, warning_text
from backupd.remote.rsyncmsg import itemized_files, relative, sender_errors, unescape
from jobs.base import TreeTransfer


def test_rsync_messages_give_names_back_as_bytes() -> None:
    assert unescape(b"caf\\#351\\#012x\\#134#101") == b"caf\xe9\nx\\#101"
    stderr = (
        b'rsync: [sender] opendir "/srv/t/closed" failed: Permission denied (13)\n'
        b'rsync: [sender] send_files failed to open "/srv/t/caf\\#351 \\"q\\".txt": '
        b"Permission denied (13)\n"
        b'rsync: [sender] send_files failed to open "/srv/t/a "quoted" name": '
        b"Keine Berechtigung (13)\n"  # the droplet's locale
        b'rsync: [sender] readlink_stat("/srv/t/nox/f") failed: Permission denied (13)\n'
        b'rsync: [sender] link_stat "/srv/t/nox/g" failed: Permission denied (13)\n'
        b'file has vanished: "/srv/t/tmp/x"\n'
        b"rsync error: some files/attrs were not transferred (see previous errors) (code 23) "
        b"at main.c(1394) [sender=3.5.0]\n"
    )
    found = sender_errors(stderr, "/srv/t/")
    assert found.denied == {
        b"closed": True,
        b'caf\xe9 \\"q\\".txt': False,
        b'a "quoted" name': False,
        b"nox/f": False,
        b"nox/g": False,
    }
    assert found.vanished == [b"tmp/x"] and not found.root_denied and not found.unknown


@pytest.mark.parametrize(
    "line",
    [
        b'rsync: [sender] change_dir "/srv/t" failed: No such file or directory (2)',
        b'rsync: [receiver] write failed on "/m/data/x": No space left on device (28)',
        b'rsync: [sender] send_files failed to open "/srv/t/../../etc/shadow": Permission '
        b"denied (13)",
        b'rsync: [sender] send_files failed to open "/srv/other/x": Permission denied (13)',
        b"something unexpected",
    ],
)
def test_anything_else_rsync_says_is_an_unknown_error(line: bytes) -> None:
    found = sender_errors(line + b"\n", "/srv/t")
    assert found.unknown and not found.denied


def test_the_root_itself_denied() -> None:
    line = b'rsync: [sender] change_dir "/srv/t" failed: Permission denied (13)\n'
    assert sender_errors(line, "/srv/t").root_denied
    assert relative(b"/etc/passwd", "/") == b"etc/passwd"
    assert relative(b"/srv/t/a//b", "/srv/t") is None


def test_itemized_names_are_bytes() -> None:
    out = b">f+++++++++ caf\\#351.txt\n.d..t...... ./\n<f.st...... sub/two words\n"
    assert itemized_files(out) == [b"caf\xe9.txt", b"sub/two words"]


DROP = """
import sys
from pathlib import Path
from backupd.actions.unreadable import drop_from_mirror
drop_from_mirror(Path(sys.argv[1]), [a.encode("utf-8", "surrogateescape") for a in sys.argv[2:]])
"""


def test_dropping_from_the_mirror_never_follows_a_symlink_out() -> None:
    """Run as an unprivileged user (backupd's service account is one): the mirror keeps
    the droplet's modes, so a directory there may be read-only."""
    work = Path(tempfile.mkdtemp(prefix="backupd-drop-"))
    try:
        work.chmod(0o755)
        mirror, outside = work / "data", work / "outside"
        (mirror / "d" / "locked").mkdir(parents=True)
        outside.mkdir()
        (outside / "victim").write_text("keep me")
        (mirror / "link").symlink_to(outside)
        (mirror / "d" / "secret").write_text("stale")
        (mirror / "d" / "locked" / "f").write_text("stale")
        (mirror / "ro").mkdir()
        with open(os.fsencode(mirror / "ro") + b"/stale\xe9", "wb") as f:
            f.write(b"stale")
        as_user: list[str] = []
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "nobody:nogroup", str(work)], check=True)
            as_user = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        (mirror / "d" / "locked").chmod(0o500)
        (mirror / "ro").chmod(0o555)
        drop: list[str | bytes] = ["link/victim", "d/secret", "d/locked", "gone/x", b"ro/stale\xe9"]
        argv: list[str | bytes] = [*as_user, sys.executable, "-c", DROP, str(mirror), *drop]
        subprocess.run(argv, check=True, cwd=Path(__file__).resolve().parents[2])
        assert (outside / "victim").read_text() == "keep me"
        assert (mirror / "link").is_symlink()
        assert list((mirror / "d").iterdir()) == []
        assert list((mirror / "ro").iterdir()) == []
        assert stat.S_IMODE((mirror / "ro").stat().st_mode) == 0o555  # given its mode back
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", str(work)], check=False)
        shutil.rmtree(work, ignore_errors=True)


def test_the_warning_names_a_few_paths_and_how_to_grant_access() -> None:
    paths = {b"caf\xe9.key": False, b"private": True, **{b"f%d" % i: False for i in range(6)}}
    plain = TreeTransfer(item="shared", path="/srv/shared")
    text = warning_text(plain, "backup", paths)
    assert text.startswith("shared: 8 path(s) in /srv/shared could not be read by backup ")
    assert "caf\\xe9.key, private/, f0, f1, f2 and 3 more" in text
    assert "give backup read permission, or set sudo = true" in text
    as_root = TreeTransfer(item="shared", path="/srv/shared", sudo=True)
    text = warning_text(as_root, "backup", paths)
    assert "could not be read by root (sudo)" in text and "sudo = true" not in text
    assert "even with sudo" in str(nothing_read(as_root, "backup", {}))


def test_every_rsync_is_built_in_one_place_and_leaves_no_connection_spec(
    tmp_path: Path,
) -> None:
    """A pull and a push share one builder: names as data, holes kept, backupd's own SSH
    (pinned key) as the remote shell; its spec file is private and gone afterwards, also
    when the command fails."""
    from backupd.remote.hostkeys import SSHTarget
    from backupd.remote.rsync import rsync_over_ssh

    target = SSHTarget("web1", "127.0.0.1", 2222, "backup", tmp_path / "id", ("ssh-ed25519 AAAA",))
    built_by = rsync_over_ssh(tmp_path, target, "t1", "sudo -n rsync")
    with pytest.raises(RuntimeError), built_by as argv:
        assert argv[0] == "rsync"
        assert {"--protect-args", "--sparse", "--archive"} <= set(argv)
        assert argv[-1] == "--rsync-path=sudo -n rsync"
        rsh = argv[argv.index("--rsh") + 1]
        assert "-m backupd.remote.rsh" in rsh
        [spec] = tmp_path.glob("rsh-*.json")
        assert stat.S_IMODE(spec.stat().st_mode) == 0o600 and "AAAA" in spec.read_text()
        raise RuntimeError("rsync failed")
    assert list(tmp_path.glob("rsh-*.json")) == []
    with rsync_over_ssh(tmp_path, target, "t2", "sudo -n rsync", gated=True) as gated:
        # a gated droplet's rrsync must see the paths, and decides about sudo itself
        assert "--protect-args" not in gated and gated[-1] == "--rsync-path=rsync"
    repo = Path(__file__).resolve().parents[2]
    built = [
        p.relative_to(repo).as_posix()
        for p in (repo / "backupd").rglob("*.py")
        if '"rsync",' in p.read_text() or 'backupd.remote.rsh"' in p.read_text()
    ]
    assert built == ["backupd/remote/rsync.py"]
