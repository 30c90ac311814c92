"""Webhook tests: the API tests' per-worker databases (SQLite and PostgreSQL), a receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from api.support import database_url, fake_twilio, postgres_url, sqlite_url  # noqa: F401
from nixflex_engine.store.db import Database
from nixflex_engine.store.repositories import Repositories
from webhooks.support import Receiver, start_receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from start_receiver()


@pytest.fixture
async def repos(database_url: str) -> AsyncIterator[Repositories]:  # noqa: F811
    db = Database(database_url)
    try:
        yield Repositories.over(db)
    finally:
        await db.dispose()
