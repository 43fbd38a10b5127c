"""A real SMTP server (aiosmtpd) on loopback that keeps what it receives."""

from __future__ import annotations

import ipaddress
import ssl
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


class _Handler:
    def __init__(self, sink: list[Received]) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        self.sink.append(Received(envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 OK"


@dataclass
class SmtpServer:
    host: str
    port: int
    messages: list[Received] = field(default_factory=list)
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
    controller = Controller(_Handler(server.messages), hostname=server.host, port=server.port)
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
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


def start_smtp_starttls(directory: Path, login: str, password: str) -> tuple[SmtpServer, Path]:
    """An SMTP server that requires STARTTLS and then AUTH LOGIN/PLAIN with one account;
    returns it and the CA file (its own certificate) a client must trust."""
    cert, key = self_signed(directory)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                     auth_data: Any) -> AuthResult:  # fmt: skip
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            login.encode(), password.encode())  # fmt: skip
        return AuthResult(success=ok, handled=False)

    server = SmtpServer("127.0.0.1", free_port())
    controller = Controller(
        _Handler(server.messages), hostname=server.host, port=server.port, tls_context=tls,
        require_starttls=True, authenticator=authenticate, auth_required=True,
    )  # fmt: skip
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
    controller = Controller(_Handler(server.messages), hostname=server.host, port=server.port,
                            ssl_context=tls)  # fmt: skip
    controller.start()
    server._controller = controller
    return server, cert
