"""Alembic migrations of the catalogue schema, applied at start by backupd.catalogue.migrate.

One file per revision in ``versions/`` (``0001_initial.py``, ``0002_...``), numbered in order.
"""
