"""Alembic migrations of the platform database.

They ship inside the package so that `inventory.db.migrate(url)` works from any directory.
"""
