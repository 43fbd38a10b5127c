"""backupctl metrics: the Prometheus exposition the daemon serves, printed or written for
node_exporter's textfile collector."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from backupd.actions.metrics import exposition, write_textfile
from backupd.cli.common import clean_errors, context
from backupd.errors import BackupdError, UsageError


@click.command()
@click.option(
    "--textfile",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file atomically (for node_exporter's textfile collector: a name "
    "ending in .prom in its --collector.textfile.directory) instead of printing.",
)
@click.pass_obj
@clean_errors
def metrics(obj: dict[str, Any], textfile: Path | None) -> None:
    """Print backupd's Prometheus metrics (what the daemon serves on [metrics] listen):
    per source the last success, attempt and verified restore, run counts, drill RTO;
    per item bytes and archives; the store's disk; queued jobs; pending alerts.

    \b
    Examples:
      backupctl metrics | grep last_success
      backupctl metrics --textfile /var/lib/prometheus/node-exporter/backupd.prom
    """
    ctx = context(obj)
    if textfile is None:
        sys.stdout.buffer.write(exposition(ctx))
        return
    if textfile.suffix != ".prom":
        raise UsageError(f"{textfile}: node_exporter reads only files ending in .prom")
    folder = textfile.absolute().parent
    if not folder.is_dir():
        said = "not a directory" if folder.exists() else "no such directory"
        raise UsageError(f"{folder}: {said}")
    try:
        write_textfile(ctx, textfile)
    except OSError as e:  # the exporter's directory is another user's, a read-only mount
        raise BackupdError(f"cannot write {textfile}: {e.strerror or e}") from e
