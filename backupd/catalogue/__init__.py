"""The catalogue: hosts, sources, runs and archives (SQLAlchemy 2; SQLite by default)."""

from backupd.catalogue.models import Archive, Base, Host, Run, RunStatus, Source
from backupd.catalogue.store import Catalogue, SourceStatus

__all__ = ["Archive", "Base", "Catalogue", "Host", "Run", "RunStatus", "Source", "SourceStatus"]
