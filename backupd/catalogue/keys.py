"""Catalogue records of repository key exports: without its key a repository cannot be
read, so `backupctl status` warns about every repository whose key was never exported."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select

from backupd.catalogue.jobs import HasSession
from backupd.catalogue.models import KeyExport, utcnow


class KeyRecords:
    """Mixed into Catalogue."""

    def record_key_export(
        self: HasSession,
        host: str,
        repository: str,
        directory: str,
        files: Sequence[str],
        key_sha256: str,
    ) -> int:
        with self.session() as s:
            row = KeyExport(
                host=host,
                repository=repository,
                exported_at=utcnow(),
                directory=directory,
                files=list(files),
                key_sha256=key_sha256,
            )
            s.add(row)
            s.flush()
            return row.id

    def key_exports(self: HasSession, host: str | None = None) -> list[KeyExport]:
        """Every export (of one host's repository), newest first."""
        with self.session() as s:
            query = select(KeyExport).order_by(KeyExport.exported_at.desc(), KeyExport.id.desc())
            if host is not None:
                query = query.where(KeyExport.host == host)
            return list(s.scalars(query))

    def never_exported(self: HasSession, repositories: Iterable[tuple[str, str]]) -> list[str]:
        """The hosts among ``(host, repository)`` whose repository (at that path) has no
        recorded key export. Keyed by path too: a store that moved is a new repository."""
        wanted = list(repositories)
        with self.session() as s:
            done = {(h, r) for h, r in s.execute(select(KeyExport.host, KeyExport.repository))}
        return [host for host, repo in wanted if (host, repo) not in done]
