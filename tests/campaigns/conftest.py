"""Campaign tests use the API tests' per-worker databases (SQLite and PostgreSQL), fake Twilio
and :class:`~api.support.Env`; the app's dispatcher is built but not started, so each test
drives its passes (``tick``) itself."""

from collections.abc import AsyncIterator
from typing import Any

import pytest

from api.support import (  # noqa: F401
    Env,
    database_url,
    fake_twilio,
    postgres_url,
    sqlite_url,
    start_env,
)
from nixflex_engine.sandbox.fake_twilio import FakeTwilio


@pytest.fixture
async def cenv(
    database_url: str,  # noqa: F811
    fake_twilio: tuple[FakeTwilio, str],  # noqa: F811
    tmp_path: Any,
) -> AsyncIterator[Env]:
    async for e in start_env(database_url, fake_twilio, tmp_path, campaign_dispatch_enabled=False):
        yield e
