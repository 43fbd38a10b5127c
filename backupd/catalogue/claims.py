"""Claims: one sender (or worker) at a time acts on a queued row (decision 0012).

Every queue here is read by several processes (the daemon's alert loop, the report job,
``backupctl report --retry`` / ``alerts --send``, every start's reconciliation). Reading a
row and acting on it is not enough: two readers would both act. Before its side effect a
process *claims* the row with one conditional UPDATE (``SET claimed_by = token WHERE id = ?
AND <still unclaimed>``); the database applies such statements one at a time per row, so
the rowcount says who won, and only the winner acts. The winner then completes the row (sent,
done) or releases it (claim cleared, error recorded) for a later attempt.

A claim names its holder: ``host:pid:random``. Mail claims expire after a lease (a holder
that died mid-send must not block the row for ever); owed cleanups are taken over when
their holder's process is gone instead (a backup may hold its snapshot for hours).
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Update, or_
from sqlalchemy.orm import Session

from backupd.catalogue.models import Claimed


def claim_token() -> str:
    """A new claim token, ``host:pid:random`` (host and pid say who holds a row; the random
    part tells two claims of one process apart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"


def token_holder(token: str | None) -> tuple[str, int] | None:
    """(host, pid) of a claim token; None for no claim or a token not made by claim_token."""
    if not token:
        return None
    host, _, rest = token.partition(":")
    pid, _, _random = rest.partition(":")
    return (host, int(pid)) if host and pid.isdigit() else None


def claimable(table: type[Claimed], stale_before: datetime) -> ColumnElement[bool]:
    """Unclaimed, or claimed before ``stale_before`` (the holder's lease is over)."""
    return or_(
        table.claimed_by.is_(None), table.claimed_at.is_(None), table.claimed_at < stale_before
    )


def held_by(table: type[Claimed], token: str | None) -> ColumnElement[bool]:
    """Claimed with ``token``; with None: claimed by nobody."""
    return table.claimed_by.is_(None) if token is None else table.claimed_by == token


def changed(s: Session, statement: Update) -> int:
    """Run a conditional UPDATE; how many rows it changed (what decides a claim)."""
    result = cast(
        CursorResult[Any], s.execute(statement, execution_options={"synchronize_session": False})
    )
    return result.rowcount


RELEASED: dict[str, None] = {"claimed_by": None, "claimed_at": None}
