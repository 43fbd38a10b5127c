"""backupd: encrypted, incremental, pull-based backups of a small Linux fleet into Borg."""

__version__ = "0.1.0"
