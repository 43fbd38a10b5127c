"""A real SMTP server (aiosmtpd) on loopback that keeps what it receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

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
