"""The daemon's /metrics endpoint (issue 17, decision 0025): prometheus-client's own HTTP
server, in a thread of its own, on ``[metrics] listen`` (loopback by default). Each scrape
reads the catalogue afresh (backupd/actions/metrics.py). A port that cannot be had is one
alert, not a daemon that will not start: backups matter more than their metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from backupd.actions.context import Context
from backupd.actions.metrics import registry_for

log = logging.getLogger(__name__)


def serve_metrics(context_of: Callable[[], Context]) -> WSGIServer | None:
    """Start serving; the server (``shutdown()`` stops it), or None when ``[metrics]
    listen`` is "" or the address cannot be had (logged, and alerted as metrics_failed)."""
    ctx = context_of()
    config = ctx.config.metrics
    if config.address is None:
        log.info("metrics: not served ([metrics] listen is empty)")
        return None
    host, port = config.address
    try:
        server, _thread = start_http_server(port, host, registry=registry_for(context_of))
    except OSError as e:
        message = f"metrics: cannot listen on {config.listen}: {e.strerror or e}"
        log.error("%s (backups go on; fix [metrics] listen and restart)", message)
        ctx.catalogue.record_alert("metrics_failed", message, dedup_key="metrics_failed")
        return None
    shown = f"[{host}]" if ":" in host else host  # a URL's form of an IPv6 address
    log.info("metrics on http://%s:%d/metrics", shown, server.server_port)
    return server
