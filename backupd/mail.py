"""Sending mail over SMTP, and the catalogue-backed queue that never loses a report.

A report is written to the catalogue (``reports``, status ``queued``) *before* the first
attempt to send it, so a crash or an SMTP outage leaves it there; every attempt either
marks it ``sent`` or records the error and when to try again. Without a ``[mail]`` table
the report is still recorded, as ``unsent``: there is nobody to send it to, and mailing a
backlog the day mail is configured would bury the current report under old ones.

The SMTP password comes from a credential source (file, systemd credential or command,
like the Borg passphrase), read at each attempt; it never reaches the log, argv or the
catalogue.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_string, policy
from email.message import EmailMessage

from backupd.actions.context import Context
from backupd.catalogue.models import utcnow
from backupd.catalogue.reports import QUEUED, UNSENT
from backupd.config import MailConfig
from backupd.credentials import read_passphrase
from backupd.errors import CredentialError, MailError
from backupd.report import ReportData, build_message, gather

log = logging.getLogger("backupd.mail")


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


# -- the queue --------------------------------------------------------------------------
def queue_report(
    ctx: Context,
    msg: EmailMessage,
    *,
    period_start: datetime,
    period_end: datetime,
    verdict: str,
) -> int:
    """Record the report before any attempt to send it: ``queued`` with mail configured,
    ``unsent`` without (kept in the catalogue, never delivered)."""
    mail = ctx.config.mail
    return ctx.catalogue.add_report(
        period_start=period_start,
        period_end=period_end,
        verdict=verdict,
        subject=str(msg["Subject"]),
        recipients=list(mail.to) if mail else [],
        message=msg.as_string(),
        status=QUEUED if mail else UNSENT,
    )


@dataclass
class Delivery:
    sent: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)  # (report id, error)
    waiting: list[int] = field(default_factory=list)  # queued, next attempt not due yet

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        parts = [f"{len(self.sent)} sent"] if self.sent else []
        parts += [f"{len(self.failed)} failed"] if self.failed else []
        parts += [f"{len(self.waiting)} waiting"] if self.waiting else []
        return ", ".join(parts) or "none queued"


def deliver_queued(ctx: Context, *, force: bool = False, now: datetime | None = None) -> Delivery:
    """Send every queued report whose next attempt is due (every one with ``force``).
    A failure is recorded on its row (attempts, last_error, next_attempt_at = now +
    ``[mail] retry``, doubling per attempt); the report stays queued."""
    now = now or utcnow()
    cat, mail = ctx.catalogue, ctx.config.mail
    done = Delivery()
    due = cat.queued_reports(None if force else now)
    done.waiting = [r.id for r in cat.queued_reports() if r.id not in {d.id for d in due}]
    for row in due:
        if mail is None:
            error = "no [mail] table in the configuration"
            cat.report_failed(row.id, error, 86400.0)
            done.failed.append((row.id, error))
            continue
        parsed = message_from_string(row.message, policy=policy.default)
        assert isinstance(parsed, EmailMessage)  # policy.default builds EmailMessage
        try:
            send_message(mail, parsed, list(row.recipients))
        except MailError as e:
            later = cat.report_failed(row.id, str(e), mail.retry)
            log.info("report %d: not delivered (attempt %d, next at %s): %s", row.id,
                     later.attempts, later.next_attempt_at, e)  # fmt: skip
            done.failed.append((row.id, str(e)))
            continue
        cat.report_sent(row.id)
        log.info("report %d: sent to %s", row.id, ", ".join(row.recipients))
        done.sent.append(row.id)
    return done


def queue_new_report(ctx: Context, now: datetime | None = None) -> tuple[int, ReportData]:
    """Build the report of the period since the previous one and record it (queued, or
    unsent without [mail]); nothing is sent yet."""
    data = gather(ctx, now)
    msg = build_message(ctx, data)
    report_id = queue_report(ctx, msg, period_start=data.start, period_end=data.end,
                             verdict=data.verdict)  # fmt: skip
    return report_id, data
