"""A real SMTP server (aiosmtpd) on loopback that keeps what it receives; it can hold every
DATA at a gate (to make senders race for real) or refuse every message."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness.procs import free_port, wait_until


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


class DataGate:
    """Holds every message at the end of DATA (before the server answers) until ``senders``
    sessions wait there at once, or until ``open()``. With ``senders=3``, three senders
    each have a message in flight, none of them marked sent: each had read its queue
    before any could mark a row, the race of two deliverers made real. ``timeout`` is only
    a safety net: when it runs out the gate opens and ``timed_out`` says so."""

    def __init__(self, senders: int | None = None, timeout: float = 120.0) -> None:
        self.senders, self.timeout = senders, timeout
        self.held = threading.Event()  # a message is waiting at the gate
        self.is_open = False
        self.timed_out = False
        self.most_waiting = 0
        self._waiting = 0
        self._cond = threading.Condition()

    def open(self) -> None:
        with self._cond:
            self.is_open = True
            self._cond.notify_all()

    def wait(self) -> None:
        """Called once per message, in a thread of its own (it blocks)."""
        with self._cond:
            if self.is_open:
                return
            self._waiting += 1
            self.most_waiting = max(self.most_waiting, self._waiting)
            self.held.set()
            if self.senders is not None and self._waiting >= self.senders:
                self.is_open = True
                self._cond.notify_all()
            elif not self._cond.wait_for(lambda: self.is_open, self.timeout):
                self.timed_out = self.is_open = True
            self._waiting -= 1


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        gate = self.server.gate
        if gate is not None:
            await asyncio.get_running_loop().run_in_executor(None, gate.wait)
        if self.server.refuse is not None:
            return self.server.refuse
        msg = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        self.server.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 OK"


@dataclass
class SmtpServer:
    host: str
    port: int
    messages: list[Received] = field(default_factory=list)
    gate: DataGate | None = None  # hold messages until senders race (see DataGate)
    refuse: str | None = None  # answer every message with this reply (e.g. "554 ...")
    _controller: Controller | None = field(default=None, repr=False)

    def wait_for_messages(self, n: int, timeout: float = 10) -> list[Received]:
        """All messages so far, once there are at least ``n``; RuntimeError on timeout."""
        what = f"{n} message(s) at SMTP {self.host}:{self.port}"
        wait_until(lambda: len(self.messages) >= n, timeout, what)
        return list(self.messages)

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def start_smtp() -> SmtpServer:
    server = SmtpServer("127.0.0.1", free_port())
    controller = Controller(_Handler(server), hostname=server.host, port=server.port)
    controller.start()
    server._controller = controller
    return server


def self_signed(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate for ``host`` that is its own CA (cert.pem, key.pem): what a small
    relay with its own certificate authority presents."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def start_smtp_starttls(directory: Path, login: str, password: str) -> tuple[SmtpServer, Path]:
    """An SMTP server that requires STARTTLS and then AUTH LOGIN/PLAIN with one account;
    returns it and the CA file (its own certificate) a client must trust."""
    cert, key = self_signed(directory)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    def authenticate(
        server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            login.encode(),
            password.encode(),
        )
        return AuthResult(success=ok, handled=False)

    server = SmtpServer("127.0.0.1", free_port())
    controller = Controller(
        _Handler(server),
        hostname=server.host,
        port=server.port,
        tls_context=tls,
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
    )
    controller.start()
    server._controller = controller
    return server, cert


def start_smtp_tls(directory: Path) -> tuple[SmtpServer, Path]:
    """An SMTP server speaking implicit TLS from the first byte (what port 465 does);
    returns it and the CA file a client must trust."""
    cert, key = self_signed(directory)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    server = SmtpServer("127.0.0.1", free_port())
    controller = Controller(
        _Handler(server), hostname=server.host, port=server.port, ssl_context=tls
    )
    controller.start()
    server._controller = controller
    return server, cert
