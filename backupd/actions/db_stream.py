"""One archive's dump streamed into a database, and the database checked against it.

``borg extract --stdout`` feeds the kind's restore tool (pg_restore, mariadb) with no
temporary dump file: the archive's bytes are hashed as they pass (they must match the
sha256 recorded at backup time), optionally filtered (one table) and rewritten (MariaDB's
definers and name), and the restored database's row counts are compared with those
recorded. Used by restores (backupd/actions/restore_db.py) and drills.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from backupd.actions.context import Context
from backupd.actions.needs import Endpoint
from backupd.actions.restore import Progress, Tally, read_back
from backupd.catalogue import Archive, Check
from backupd.errors import RestoreError, VerificationError
from backupd.local.process import FeedResult
from backupd.remote.shells import CommandShell
from jobs.base import DatabaseRestore, LoadRewrite, Peek, RewritingKind


def restore_archive(
    ctx: Context,
    ep: Endpoint,
    shell: CommandShell,
    a: Archive,
    req: DatabaseRestore,
    progress: Progress | None = None,
) -> tuple[int, list[Check]]:
    """Create the database, stream the dump into it, check it: (bytes, checks passed)."""
    ep.kind.prepare_database(ep.options, shell, req)
    with ep.kind.restore_setup(ep.options, shell, req, _peek(ctx, shell, a)) as setup:
        nbytes, notes = _stream(ctx, ep, shell, a, req, progress, setup.extra_argv)
    rewritten = [Check("rewritten", note) for note in notes]
    return nbytes, verify_database(ep, shell, a, req) + list(setup.checks) + rewritten


def _peek(ctx: Context, shell: CommandShell, a: Archive) -> Peek:
    """Feed the archive's dump to a command that may stop reading early (a listing)."""

    def peek(argv: tuple[str, ...]) -> FeedResult:
        def produce(sink: Callable[[bytes], object]) -> None:
            ctx.borg.extract_stream(Path(a.repository), a.name, a.filename, sink)

        return shell.feed(argv, produce, timeout=RESTORE_TIMEOUT)

    return peek


def _stream(
    ctx: Context,
    ep: Endpoint,
    shell: CommandShell,
    a: Archive,
    req: DatabaseRestore,
    progress: Progress | None,
    extra_argv: tuple[str, ...] = (),
) -> tuple[int, list[str]]:
    tally = Tally()
    filt = ep.kind.stream_filter(req.table)
    rewrite = _load_rewrite(ep, shell, a, req)

    def produce(sink: Callable[[bytes], object]) -> None:
        def forward(chunk: bytes) -> None:
            tally(chunk)
            data = filt.feed(chunk) if filt else chunk
            sink(rewrite.feed(data) if rewrite else data)
            if progress:
                progress(len(chunk))

        ctx.borg.extract_stream(Path(a.repository), a.name, a.filename, forward)
        rest = filt.end() if filt else b""
        if rewrite:
            rest = rewrite.feed(rest) + rewrite.end()
        if rest:
            sink(rest)

    secret = ep.kind.restore_secret(ep.options)
    with _secret_file(shell, secret) as secret_path:
        argv = ep.kind.restore_argv(ep.options, req, secret_path) + extra_argv
        result = shell.feed(argv, produce, timeout=RESTORE_TIMEOUT)
    tool = Path(_tool_name(argv, ep)).name
    if result.timed_out:
        raise RestoreError(
            f"{tool} into {req.database} on {ep.where} still running after "
            f"{RESTORE_TIMEOUT:.0f}s: stopped; the database is incomplete"
        )
    if not result.ok and not _had_its_part(req, result):
        raise RestoreError(
            f"{tool} into {req.database} on {ep.where} failed (exit {result.exit_status}); "
            "the database is incomplete: drop it, or restore again with --force",
            stderr_tail=result.output_tail(),
        )
    if not result.complete:  # the tool had its table: the rest is read for the sha256
        tally = read_back(ctx, a)
    if (wrong := tally.differs(a)) is not None:
        raise VerificationError(f"{a.name}: the archived dump does not match the catalogue {wrong}")
    if filt is not None and not filt.matched:
        raise RestoreError(f"table {req.table} was not found in {a.name}")
    return tally.nbytes, rewrite.notes() if rewrite else []


def _had_its_part(req: DatabaseRestore, result: FeedResult) -> bool:
    """A tool asked for one table may stop reading once it has it and exit 0 (pg_restore
    --use-list on a stream: the large objects after the table are never read)."""
    return req.table is not None and result.exit_status == 0 and not result.timed_out


def _load_rewrite(
    ep: Endpoint, shell: CommandShell, a: Archive, req: DatabaseRestore
) -> LoadRewrite | None:
    """The kind's rewrite that makes this dump load here under ``req.database``."""
    if not isinstance(ep.kind, RewritingKind):
        return None
    tables = list(a.facts.get("rows", {}))
    return ep.kind.load_rewrite(ep.options, shell, a.item, tables, req)


RESTORE_TIMEOUT = 24 * 3600.0


def _tool_name(argv: tuple[str, ...], ep: Endpoint) -> str:
    prefix = len(ep.options.remote_prefix())
    return argv[prefix] if len(argv) > prefix else argv[0]


@contextmanager
def _secret_file(shell: CommandShell, secret: bytes) -> Iterator[str | None]:
    if not secret:
        yield None
        return
    with shell.private_file(secret) as path:
        yield path


def verify_database(
    ep: Endpoint, shell: CommandShell, a: Archive, req: DatabaseRestore
) -> list[Check]:
    """Row counts now in the database against those recorded at backup time, then the
    kind's own checks (PostgreSQL: encoding and locale, large objects)."""
    checks = [Check("sha256", f"{a.nbytes} bytes, sha256 {a.sha256[:12]}")]
    recorded: dict[str, int] = dict(a.facts.get("rows", {}))
    if req.table is not None:
        recorded = {k: v for k, v in recorded.items() if k == req.table}
    if not recorded:
        checks.append(Check("rows", "no row counts were recorded"))
        return checks + ep.kind.extra_checks(ep.options, shell, req)
    # tables of an engine without snapshots were not dumped at the counted moment: they
    # must be there, their rows are not compared (decision 0017)
    outside = set(a.facts.get("rows_outside_snapshot", ())) & set(recorded)
    found = ep.kind.row_counts(ep.options, shell, req.database, list(recorded))
    compared = {t: n for t, n in recorded.items() if t not in outside}
    wrong = [f"{t}: {found[t]} rows, recorded {n}" for t, n in compared.items() if found[t] != n]
    if wrong:
        raise VerificationError(
            f"{req.database} on {ep.where} differs from the backup in "
            f"{len(wrong)} table(s): {'; '.join(wrong[:5])}"
        )
    detail = f"{len(compared)} table(s), {sum(compared.values())} rows as recorded"
    if outside:
        detail += (
            f"; {len(outside)} table(s) present whose engine has no snapshot "
            f"(rows not compared): {', '.join(sorted(outside)[:5])}"
        )
    checks.append(Check("rows", detail))
    return checks + ep.kind.extra_checks(ep.options, shell, req)
