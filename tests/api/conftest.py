"""Fixtures live in ``support.py`` (shared with tests/store); this makes them visible here."""

from .support import (  # noqa: F401
    database_url,
    env,
    fake_twilio,
    postgres_url,
    sqlite_env,
    sqlite_url,
)
