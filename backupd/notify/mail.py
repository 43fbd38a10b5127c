"""Sending mail over SMTP: one message to its recipients, or a one-line MailError.

The SMTP password comes from a credential source (file, systemd credential or command,
like the Borg passphrase), read at each attempt; it never reaches the log, argv or the
catalogue. What is sent and when (the report queue, alerts) is decided by the actions.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from datetime import timedelta
from email.message import EmailMessage

from backupd.config.credentials import COMMAND_TIMEOUT, read_passphrase
from backupd.config.load import MailConfig
from backupd.errors import CredentialError, MailError

log = logging.getLogger("backupd.notify.mail")
# connect, greeting, EHLO, STARTTLS, EHLO again, AUTH (two steps), MAIL, DATA, end of data,
# QUIT: each may wait up to [mail] timeout (smtplib's socket timeout), RCPT once per recipient
SMTP_STEPS = 11


def claim_lease(mail: MailConfig) -> timedelta:
    """How long a claim on a queued report or alert holds before another sender may take it.

    It must outlast the slowest send of a live sender, or a slow server would get the mail
    twice: every SMTP step waiting its full ``timeout``, plus the password command's own
    limit; doubled for margin. The cost of a long lease is only that a sender that died
    mid-send delays that one mail by the lease (default ``timeout`` 30 s, one recipient:
    14 minutes)."""
    slowest = (SMTP_STEPS + len(mail.to)) * mail.timeout + COMMAND_TIMEOUT
    return timedelta(seconds=2 * slowest)


def send_message(mail: MailConfig, msg: EmailMessage, recipients: list[str]) -> None:
    """Deliver ``msg`` to ``recipients``; MailError (one line: server, step, reason)."""
    where = f"SMTP {mail.host}:{mail.port} ({mail.security})"
    step = "connect"
    try:
        password = None
        if mail.username is not None and mail.password is not None:
            step = "read the password"
            password = read_passphrase(mail.password)
        step = "connect"
        smtp = _connect(mail)
        with smtp:
            if mail.security == "starttls":
                step = "STARTTLS"
                smtp.starttls(context=_tls(mail))
                smtp.ehlo()
            if mail.username is not None:
                step = f"log in as {mail.username}"
                smtp.login(mail.username, password or "")
            step = "send"
            refused = smtp.send_message(msg, from_addr=mail.sender, to_addrs=recipients)
    except CredentialError as e:
        raise MailError(f"{where}: cannot {step}: {e}") from None
    except smtplib.SMTPResponseException as e:
        raw = e.smtp_error
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        raise MailError(f"{where}: {step} failed: {e.smtp_code} {_one_line(text)}") from None
    except smtplib.SMTPRecipientsRefused as e:
        raise MailError(f"{where}: every recipient refused: {', '.join(e.recipients)}") from None
    except (smtplib.SMTPException, OSError) as e:  # OSError: refused, timed out, TLS (ssl)
        reason = _one_line(str(e)) or type(e).__name__
        raise MailError(f"{where}: {step} failed: {reason}") from None
    if refused:  # accepted for some: those are delivered, the rest would never be
        log.warning("%s: refused recipients: %s", where, ", ".join(sorted(refused)))


def _connect(mail: MailConfig) -> smtplib.SMTP:
    if mail.security == "tls":
        return smtplib.SMTP_SSL(mail.host, mail.port, timeout=mail.timeout, context=_tls(mail))
    return smtplib.SMTP(mail.host, mail.port, timeout=mail.timeout)


def _tls(mail: MailConfig) -> ssl.SSLContext:
    """Certificates are always verified (and the host name): against the system's CAs, or
    only the one CA named by ``ca_file`` for a relay with its own certificate authority."""
    cafile = str(mail.ca_file) if mail.ca_file is not None else None
    return ssl.create_default_context(cafile=cafile)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]
