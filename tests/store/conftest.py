"""Storage tests share the API tests' per-worker databases (SQLite and PostgreSQL)."""

from api.support import database_url, postgres_url, sqlite_url  # noqa: F401
