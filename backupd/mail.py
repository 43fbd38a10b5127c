"""Sending mail over SMTP, and the catalogue-backed queue that never loses a report.

A report is written to the catalogue (``reports``, status ``queued``) *before* the first
attempt to send it, so a crash or an SMTP outage leaves it there; every attempt either
marks it ``sent`` or records the error and when to try again. Without a ``[mail]`` table
the report is still recorded, as ``unsent``: there is nobody to send it to, and mailing a
backlog the day mail is configured would bury the current report under old ones.

Several processes deliver the queue (the daemon's alert loop, the report job, ``backupctl
report --retry``): each *claims* a report (catalogue/claims.py) before any mail leaves, and
only the winner sends it. Delivery is at least once, not exactly once: a sender that dies
after the server accepted the message but before it marked the report sent leaves a claim
that expires after ``claim_lease``; then another sender mails the report again (once).

The SMTP password comes from a credential source (file, systemd credential or command,
like the Borg passphrase), read at each attempt; it never reaches the log, argv or the
catalogue.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_string, policy
from email.message import EmailMessage

from backupd.actions.context import Context
from backupd.catalogue.claims import claim_token
from backupd.catalogue.models import Report, utcnow
from backupd.catalogue.reports import QUEUED, UNSENT
from backupd.config import MailConfig
from backupd.credentials import COMMAND_TIMEOUT, read_passphrase
from backupd.errors import CredentialError, MailError
from backupd.report import ReportData, build_message, gather

log = logging.getLogger("backupd.mail")
NO_MAIL_RETRY = 86400.0  # queued, but [mail] is gone: say so once a day
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
    elsewhere: list[int] = field(default_factory=list)  # claimed by another sender

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        parts = [f"{len(self.sent)} sent"] if self.sent else []
        parts += [f"{len(self.failed)} failed"] if self.failed else []
        parts += [f"{len(self.waiting)} waiting"] if self.waiting else []
        parts += [f"{len(self.elsewhere)} taken by another sender"] if self.elsewhere else []
        return ", ".join(parts) or "none queued"


def deliver_queued(ctx: Context, *, force: bool = False, now: datetime | None = None) -> Delivery:
    """Send every queued report whose next attempt is due (every one with ``force``), each
    only if this sender wins its claim (one held by another sender is left to it). A
    failure is recorded on its row (attempts, last_error, next_attempt_at = now + ``[mail]
    retry``, doubling per attempt) and the claim released; the report stays queued."""
    now = now or utcnow()
    cat, mail = ctx.catalogue, ctx.config.mail
    done = Delivery()
    due_at = None if force else now
    due = cat.queued_reports(due_at)
    done.waiting = [r.id for r in cat.queued_reports() if r.id not in {d.id for d in due}]
    if mail is None:  # nothing is sent, so nothing to claim: note why on unclaimed rows
        error = "no [mail] table in the configuration"
        for row in due:
            cat.report_failed(row.id, None, error, NO_MAIL_RETRY)
            done.failed.append((row.id, error))
        return done
    token, lease = claim_token(), claim_lease(mail)
    for row in due:
        claimed = cat.claim_report(row.id, token, lease, due_at)
        if claimed is None:
            log.info("report %d: taken by another sender (or sent meanwhile)", row.id)
            done.elsewhere.append(row.id)
            continue
        _deliver_claimed(ctx, mail, claimed, token, done)
    return done


def _deliver_claimed(
    ctx: Context, mail: MailConfig, row: Report, token: str, done: Delivery
) -> None:
    parsed = message_from_string(row.message, policy=policy.default)
    assert isinstance(parsed, EmailMessage)  # policy.default builds EmailMessage
    try:
        send_message(mail, parsed, list(row.recipients))
    except MailError as e:
        later = ctx.catalogue.report_failed(row.id, token, str(e), mail.retry)
        if later is not None:
            log.info("report %d: not delivered (attempt %d, next at %s): %s", row.id,
                     later.attempts, later.next_attempt_at, e)  # fmt: skip
        done.failed.append((row.id, str(e)))
        return
    if not ctx.catalogue.report_sent(row.id, token):
        log.warning("report %d: sent, but its claim had expired and another sender took it: "
                    "it may have been mailed twice (claim lease %s)", row.id,
                    claim_lease(mail))  # fmt: skip
    log.info("report %d: sent to %s", row.id, ", ".join(row.recipients))
    done.sent.append(row.id)


def queue_new_report(ctx: Context, now: datetime | None = None) -> tuple[int, ReportData]:
    """Build the report of the period since the previous one and record it (queued, or
    unsent without [mail]); nothing is sent yet."""
    data = gather(ctx, now)
    msg = build_message(ctx, data)
    report_id = queue_report(ctx, msg, period_start=data.start, period_end=data.end,
                             verdict=data.verdict)  # fmt: skip
    return report_id, data
