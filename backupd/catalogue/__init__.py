"""The catalogue: hosts, sources, runs and archives (SQLAlchemy 2; SQLite by default)."""

from backupd.catalogue.fleet import SourceStatus
from backupd.catalogue.models import (
    AlertEvent,
    Archive,
    Base,
    Check,
    Facts,
    Host,
    KeyExport,
    MaintenanceRun,
    PendingCleanup,
    QueuedJob,
    Run,
    RunStatus,
    Source,
)
from backupd.catalogue.store import Catalogue

__all__ = [
    "AlertEvent",
    "Archive",
    "Base",
    "Catalogue",
    "Check",
    "Facts",
    "Host",
    "KeyExport",
    "MaintenanceRun",
    "PendingCleanup",
    "QueuedJob",
    "Run",
    "RunStatus",
    "Source",
    "SourceStatus",
]
