"""Kinds of job: one module per source kind (and, later, per maintenance job)."""
