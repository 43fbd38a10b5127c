"""A droplet: a real OpenSSH sshd on loopback with its own host key, port and login user."""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.procs import (
    current_user,
    free_port,
    is_root,
    need,
    start_process,
    stop_process,
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

    def ssh_argv(self, *remote_argv: str) -> list[str]:
        known = self.root / "known_hosts"
        return [
            "ssh", "-F", "/dev/null", "-p", str(self.port), "-i", str(self.key_path),
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known}", "-o", "IdentitiesOnly=yes",
            f"{self.user}@{self.address}", *remote_argv,
        ]  # fmt: skip

    def stop(self) -> None:
        # Only this sshd's process group: the login account is shared by every droplet
        # (and by a concurrent test run), so never kill by user.
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None


def ensure_login_user() -> str:
    """The droplet's login account: a dedicated one as root, else ourselves."""
    if not is_root():
        return current_user()
    if subprocess.run(["id", DROPLET_USER], capture_output=True, check=False).returncode != 0:
        subprocess.run(
            ["useradd", "--create-home", "--shell", "/bin/bash", DROPLET_USER],
            check=True, capture_output=True,
        )  # fmt: skip
    # With UsePAM no a locked password field ("!") refuses even key logins.
    subprocess.run(["usermod", "-p", "*", DROPLET_USER], check=True, capture_output=True)
    return DROPLET_USER


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
    )


def _answers_ssh(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            return s.recv(64).startswith(b"SSH-2.0")
    except OSError:
        return False


def start_droplet(base_dir: Path, name: str = "droplet1", port: int | None = None) -> Droplet:
    sshd = need("/usr/sbin/sshd", "openssh-server")
    need("ssh", "openssh-client")
    root = base_dir / name
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    bin_dir.chmod(0o755)
    for key in ("host_key", "client_key"):
        if not (root / key).exists():
            _keygen(root / key)
    host_key_line = " ".join((root / "host_key.pub").read_text().split()[:2])
    shutil.copy(root / "client_key.pub", root / "authorized_keys")
    (root / "authorized_keys").chmod(0o644)
    user = ensure_login_user()
    port = port or free_port()
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key_line}\n")
    config = root / "sshd_config"
    config.write_text(
        "\n".join([
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {root / 'host_key'}",
            f"PidFile {root / 'sshd.pid'}",
            f"AuthorizedKeysFile {root / 'authorized_keys'}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            f"AllowUsers {user}",
            f"SetEnv PATH={bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "MaxStartups 100",
            "MaxSessions 100",
            "LogLevel INFO",
        ]) + "\n"
    )  # fmt: skip
    if is_root():
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    proc = start_process(
        [sshd, "-D", "-e", "-f", str(config)], user=None, log_path=root / "sshd.log"
    )
    droplet = Droplet(
        name, "127.0.0.1", port, user, root / "client_key", host_key_line, root, bin_dir, proc
    )
    try:
        wait_until(lambda: _answers_ssh(port) or proc.poll() is not None, 15, f"sshd {name}")
        if proc.poll() is not None:
            raise RuntimeError(f"sshd {name} exited: {(root / 'sshd.log').read_text()[-2000:]}")
        probe = subprocess.run(
            droplet.ssh_argv("true"), capture_output=True, text=True, timeout=30, check=False
        )
        if probe.returncode != 0:
            raise RuntimeError(
                f"cannot log in to droplet {name}: {probe.stderr}\n"
                f"{(root / 'sshd.log').read_text()[-2000:]}"
            )
    except BaseException:
        droplet.stop()
        raise
    return droplet
