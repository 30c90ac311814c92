"""Alembic migrations for the engine's database (see ``store.db.upgrade``)."""
