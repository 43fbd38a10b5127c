"""A droplet's own network: a namespace joined to the backup host by a veth pair, so a test
can cut the link (``ip link set DEV down``) mid-transfer, as a real network fault would.
Needs root. Names and addresses come from our pid, so concurrent test runs do not meet."""

from __future__ import annotations

import itertools
import os
import subprocess
from dataclasses import dataclass

_counter = itertools.count()


def _ip(*args: str, ns: str | None = None) -> None:
    argv = ["ip", *(("netns", "exec", ns, "ip") if ns else ()), *args]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")


@dataclass
class Link:
    ns: str  # the droplet's network namespace
    host_dev: str  # our end of the veth pair
    host_address: str
    droplet_address: str  # where the droplet's sshd listens

    def exec_prefix(self) -> list[str]:
        """Run a command inside the droplet's namespace."""
        return ["ip", "netns", "exec", self.ns]

    def cut(self) -> None:
        """The cable is pulled: nothing crosses, nobody is told (no RST, no FIN)."""
        _ip("link", "set", self.host_dev, "down")

    def restore(self) -> None:
        _ip("link", "set", self.host_dev, "up")

    def delete(self) -> None:
        """Remove the namespace and the pair (deleting one end deletes both)."""
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.host_dev], capture_output=True, check=False)


def make_link() -> Link:
    n = next(_counter)
    pid = os.getpid()
    tag = f"{pid % 100000}x{n}"
    ns, host_dev, peer = f"bkd{tag}", f"bkh{tag}", f"bkn{tag}"
    # 10.A.B.(4n)/30 from our pid: one /30 per link, none shared with another test run
    a, b = 100 + (pid >> 8) % 100, pid % 256
    base = 4 * (n % 64)
    link = Link(ns, host_dev, f"10.{a}.{b}.{base + 1}", f"10.{a}.{b}.{base + 2}")
    try:
        _ip("netns", "add", ns)
        _ip("link", "set", "lo", "up", ns=ns)
        _ip("link", "add", host_dev, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", ns)
        _ip("addr", "add", f"{link.host_address}/30", "dev", host_dev)
        _ip("link", "set", host_dev, "up")
        _ip("addr", "add", f"{link.droplet_address}/30", "dev", peer, ns=ns)
        _ip("link", "set", peer, "up", ns=ns)
    except BaseException:
        link.delete()
        raise
    return link
