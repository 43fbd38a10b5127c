"""status: per configured source, the last success and the last outcome."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from backupd.actions.context import Context


def status_rows(ctx: Context) -> list[dict[str, Any]]:
    recorded = {(s.host, s.source): s for s in ctx.catalogue.status()}
    rows = []
    for source in ctx.config.all_sources():
        st = recorded.get((source.host, source.name))
        rows.append(
            {
                "host": source.host,
                "source": source.name,
                "kind": source.kind,
                "last_success": _iso(st.last_success if st else None),
                "last_status": st.last_status if st else None,
                "last_run": _iso(st.last_run if st else None),
                "last_error": st.last_error if st else None,
            }
        )
    return rows


def _iso(when: datetime | None) -> str | None:
    return when.isoformat(timespec="seconds") if when else None
