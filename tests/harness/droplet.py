"""A droplet: a real OpenSSH sshd on loopback with its own host key, port and login user."""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.netns import Link, make_link
from tests.harness.procs import (
    current_user,
    descendants,
    free_port,
    is_root,
    need,
    pin,
    start_process,
    stop_process,
    terminate_pinned,
    wait_until,
)

DROPLET_USER = "bkdroplet"  # created when the tests run as root


@dataclass
class Droplet:
    name: str
    address: str
    port: int
    user: str
    key_path: Path  # client private key to log in with
    host_key_line: str  # "ssh-ed25519 AAAA..." as pinned by backupd
    root: Path
    bin_dir: Path  # first on PATH in every session: stand-in tools go here
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    link: Link | None = None  # its own network namespace (start_droplet(own_network=True))

    @property
    def pid(self) -> int | None:
        """The listening sshd's pid (its per-connection processes are its children)."""
        return self._proc.pid if self._proc else None

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    def ssh_argv(self, *remote_argv: str) -> list[str]:
        """OpenSSH client argv; the remote shell joins ``remote_argv`` with spaces."""
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-p",
            str(self.port),
            "-i",
            str(self.key_path),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "IdentitiesOnly=yes",
            f"{self.user}@{self.address}",
            *remote_argv,
        ]

    def stop(self) -> None:
        """Stop this sshd and every session it is still serving.

        Sessions are found as the listener's descendants, never by user: the login
        account is shared by every droplet (and by a concurrent test run).
        """
        if self._proc is None:
            return
        sessions = pin(descendants(self._proc.pid))  # before they are orphaned
        try:
            stop_process(self._proc)
        finally:
            terminate_pinned(sessions)
            self._proc = None
            if self.link is not None:
                self.link.delete()


def _user_exists(name: str) -> bool:
    return subprocess.run(["id", name], capture_output=True, check=False).returncode == 0


def ensure_login_user() -> str:
    """The droplet's login account: a dedicated one as root, else ourselves."""
    if not is_root():
        return current_user()
    if not _user_exists(DROPLET_USER):
        add = ["useradd", "--create-home", "--shell", "/bin/bash", DROPLET_USER]
        made = subprocess.run(add, capture_output=True, text=True, check=False)
        if not _user_exists(DROPLET_USER):  # a concurrent run may have just made it
            raise RuntimeError(f"useradd {DROPLET_USER} failed: {made.stderr.strip()}")
    # With UsePAM no a locked password field ("!") refuses even key logins.
    subprocess.run(["usermod", "-p", "*", DROPLET_USER], check=True, capture_output=True)
    return DROPLET_USER


def _keygen(path: Path) -> None:
    if not path.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
            check=True,
        )


def _prepare(root: Path) -> str:
    """Directories and keys of a droplet; returns its host key line."""
    for directory in (root, root / "bin"):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)  # the login user (another account when root) reads here
    (root / "tmp").mkdir(exist_ok=True)
    (root / "tmp").chmod(0o1777)  # the droplet's own /tmp: what a test finds there is its own
    _keygen(root / "host_key")
    _keygen(root / "client_key")
    shutil.copy(root / "client_key.pub", root / "authorized_keys")
    (root / "authorized_keys").chmod(0o644)
    return " ".join((root / "host_key.pub").read_text().split()[:2])


def _write_config(root: Path, port: int, user: str, address: str, client_alive: bool) -> Path:
    config = root / "sshd_config"
    lines = [
        f"Port {port}",
        f"ListenAddress {address}",
        f"HostKey {root / 'host_key'}",
        f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        f"AllowUsers {user}",
        # SetEnv wins over the PATH sshd sets itself; /etc/profile is not read for
        # commands, and the skeleton ~/.bashrc returns early when not interactive.
        f"SetEnv PATH={root / 'bin'}:/usr/local/bin:/usr/bin:/bin TMPDIR={root / 'tmp'}",
        # as docs/droplet-setup.md recommends: sshd ends the sessions of a backup host
        # that stopped answering (a cut link), so its dumps and snapshots end too
        f"ClientAliveInterval {5 if client_alive else 0}",
        "ClientAliveCountMax 3",
        "Subsystem sftp internal-sftp",  # as a stock Ubuntu droplet serves sftp
        "MaxStartups 100",
        "MaxSessions 100",
        "LogLevel INFO",
    ]
    config.write_text("\n".join(lines) + "\n")
    return config


def _answers_ssh(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1) as s:
            return s.recv(64).startswith(b"SSH-2.0")
    except OSError:
        return False


def _log_tail(droplet: Droplet) -> str:
    return (droplet.root / "sshd.log").read_text(errors="replace")[-2000:]


def _wait_ready(droplet: Droplet, proc: subprocess.Popen[bytes]) -> None:
    """Until the banner answers and an OpenSSH login sees bin_dir first on PATH."""
    what = f"sshd {droplet.name} on port {droplet.port}"
    wait_until(
        lambda: _answers_ssh(droplet.address, droplet.port) or proc.poll() is not None, 15, what
    )
    if proc.poll() is not None:
        raise RuntimeError(f"sshd {droplet.name} exited:\n{_log_tail(droplet)}")
    probe = subprocess.run(
        droplet.ssh_argv('echo "$PATH"'), capture_output=True, text=True, timeout=30, check=False
    )
    if probe.returncode != 0:
        raise RuntimeError(
            f"cannot log in to droplet {droplet.name}: {probe.stderr}\n{_log_tail(droplet)}"
        )
    if probe.stdout.strip().split(":")[0] != str(droplet.bin_dir):
        raise RuntimeError(
            f"droplet {droplet.name}: {droplet.bin_dir} is not first on the session's PATH "
            f"({probe.stdout.strip()}); does {droplet.user}'s shell startup file change PATH?"
        )


def start_droplet(
    base_dir: Path,
    name: str = "droplet1",
    port: int | None = None,
    *,
    own_network: bool = False,
    client_alive: bool = True,
) -> Droplet:
    """``own_network``: the droplet gets a network namespace and a veth link to us (root
    only), so a test can cut the link; otherwise it listens on loopback. ``client_alive``:
    sshd probes the backup host and ends its sessions when it stops answering (as
    docs/droplet-setup.md recommends); False: an sshd left at OpenSSH's default."""
    sshd = need("/usr/sbin/sshd", "openssh-server")
    need("ssh", "openssh-client")
    need("ssh-keygen", "openssh-client")
    root = base_dir / name
    host_key_line = _prepare(root)
    user = ensure_login_user()
    link = make_link() if own_network else None
    address = link.droplet_address if link else "127.0.0.1"
    port = port or (22 if link else free_port())
    lookup = address if port == 22 else f"[{address}]:{port}"  # as OpenSSH writes it
    (root / "known_hosts").write_text(f"{lookup} {host_key_line}\n")
    config = _write_config(root, port, user, address, client_alive)
    if is_root():
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
    argv = [*(link.exec_prefix() if link else []), sshd, "-D", "-e", "-f", str(config)]
    try:
        proc = start_process(argv, user=None, log_path=root / "sshd.log")
    except BaseException:
        if link is not None:
            link.delete()
        raise
    droplet = Droplet(
        name,
        address,
        port,
        user,
        root / "client_key",
        host_key_line,
        root,
        root / "bin",
        proc,
        link,
    )
    try:
        _wait_ready(droplet, proc)
    except BaseException:
        droplet.stop()
        raise
    return droplet
