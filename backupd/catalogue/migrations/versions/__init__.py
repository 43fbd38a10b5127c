"""Catalogue schema revisions (Alembic skips this file)."""
