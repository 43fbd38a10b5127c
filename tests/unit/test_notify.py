"""The sd_notify client against real AF_UNIX datagram sockets, as systemd provides them."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupd.local.systemd import notify, under_journald, watchdog_interval


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A notify socket at a path, named in $NOTIFY_SOCKET like systemd does."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def test_fields_arrive_as_one_datagram(listener: socket.socket) -> None:
    assert notify("READY=1", "STATUS=idle: 3 source(s), next backup 02:00")
    assert listener.recv(4096) == b"READY=1\nSTATUS=idle: 3 source(s), next backup 02:00"


@pytest.mark.parametrize("field", ["WATCHDOG=1", "STOPPING=1", "RELOADING=1"])
def test_single_fields(listener: socket.socket, field: str) -> None:
    assert notify(field)
    assert listener.recv(4096) == field.encode()


def test_status_keeps_non_ascii(listener: socket.socket) -> None:
    assert notify("STATUS=sauvegarde réussie")
    assert listener.recv(4096).decode() == "STATUS=sauvegarde réussie"


@pytest.mark.skipif(sys.platform != "linux", reason="abstract sockets are Linux-only")
def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"backupd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("READY=1")
        assert sock.recv(4096) == b"READY=1"


def test_unset_is_a_silent_no(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


@pytest.mark.parametrize("value", ["", "relative/path", "@"])
def test_not_an_address(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert notify("READY=1") is False


def test_nobody_listening_does_not_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    caplog.set_level("DEBUG", logger="backupd.local.systemd")
    assert notify("WATCHDOG=1") is False
    assert "sd_notify" in caplog.text


def test_socket_closed_after_bind_does_not_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manager went away (socket file left behind): ECONNREFUSED, not a crash."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.close()
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    assert notify("STATUS=x") is False


def test_watchdog_half_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "600000000")  # WatchdogSec=10min
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 300.0


def test_watchdog_for_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 1.5


def test_watchdog_meant_for_another_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker inherits the daemon's variables; the daemon, not the worker, pings."""
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval() is None


@pytest.mark.parametrize("usec", [None, "", "0", "-5", "soon"])
def test_watchdog_off(monkeypatch: pytest.MonkeyPatch, usec: str | None) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    if usec is None:
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    assert watchdog_interval() is None


def test_under_journald_when_stderr_is_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert under_journald()


@pytest.mark.parametrize("value", [None, "", "1:2", "garbage"])
def test_not_under_journald(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    """Unset, unparsable, or naming a stream that is not our stderr (inherited by a child)."""
    if value is None:
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    else:
        monkeypatch.setenv("JOURNAL_STREAM", value)
    assert not under_journald()
