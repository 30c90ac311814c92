"""Fixtures for the HTTP API tests: one database per backend per xdist worker (SQLite and, when
NIXFLEX_TEST_PG_URL is set, PostgreSQL), the fake Twilio REST API on a real 127.0.0.1 port,
and an ``Env`` per test that builds accounts, agents and numbers through the public API.

Tests isolate by creating their own accounts (every resource is account-scoped), so the
per-worker database is migrated once and shared by that worker's tests.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url
from starlette.applications import Starlette

from nixflex_engine.api.keys import create_account_key
from nixflex_engine.calls.dialer import InstantDialer
from nixflex_engine.config import Settings
from nixflex_engine.sandbox.fake_twilio import FakeTwilio, FakeTwilioAccount, twilio_routes
from nixflex_engine.server import create_app
from nixflex_engine.store.db import Database, upgrade

PG_URL = os.environ.get("NIXFLEX_TEST_PG_URL")
ENCRYPTION_KEY = Fernet.generate_key().decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def random_e164(prefix: str = "+4477") -> str:
    return prefix + "".join(random.choice("0123456789") for _ in range(8))


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


async def _recreate_pg_database(base_url: str, name: str, *, drop_only: bool = False) -> None:
    import asyncpg

    url = make_url(base_url)
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database or "postgres",
    )
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def pg_database(name: str) -> Iterator[str]:
    """Create a fresh PostgreSQL database, migrated; yield its URL; drop it afterwards."""
    assert PG_URL is not None
    asyncio.run(_recreate_pg_database(PG_URL, name))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_migrate(url))
    try:
        yield url
    finally:
        asyncio.run(_recreate_pg_database(PG_URL, name, drop_only=True))


async def _migrate(url: str) -> None:
    db = Database(url)
    try:
        await upgrade(db)
    finally:
        await db.dispose()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("db") / "engine.db"
    url = f"sqlite+aiosqlite:///{path}"
    asyncio.run(_migrate(url))
    return url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    if PG_URL is None:
        pytest.skip("NIXFLEX_TEST_PG_URL is not set")
    yield from pg_database(f"nixflex_api_{_worker()}_{os.getpid()}")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture(scope="session")
def fake_twilio() -> Iterator[tuple[FakeTwilio, str]]:
    """The fake Twilio REST API on a real port (the twilio SDK talks HTTP via aiohttp)."""
    state = FakeTwilio()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=twilio_routes(state)),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "fake Twilio did not start"
        time.sleep(0.01)
    yield state, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)


def make_settings(database_url: str, twilio_base: str, tmp_path: Any, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "encryption_key": ENCRYPTION_KEY,
        "var_dir": tmp_path / "var",
        "recordings_dir": tmp_path / "recordings",
        "twilio_api_base_url": twilio_base,
        "rate_limit_reads_per_minute": 100_000,
        "rate_limit_writes_per_minute": 100_000,
        "public_base_url": "https://engine.example.com",
        **overrides,
    }
    return Settings(**values)


@dataclass
class Account:
    key_id: str
    key_secret: str
    account_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key_id}:{self.key_secret}"}


@dataclass
class Env:
    """One app (lifespan running) with an in-process client and helpers."""

    app: Starlette
    client: httpx.AsyncClient
    dialer: InstantDialer
    twilio: FakeTwilio
    twilio_base: str
    settings: Settings
    twilio_accounts: dict[str, FakeTwilioAccount] = field(default_factory=dict)

    @property
    def services(self) -> Any:
        return self.app.state.services

    async def account(self, max_concurrent_calls: int | None = None) -> Account:
        key = await create_account_key(
            self.services.repos,
            self.services.crypto,
            name="test",
            max_concurrent_calls=max_concurrent_calls,
        )
        return Account(key.key_id, key.key_secret, key.account_id)

    async def agent(self, account: Account, **fields: Any) -> dict[str, Any]:
        body = {"name": "Agent", "system_prompt": "You are calling {name}.", **fields}
        r = await self.client.post("/v1/agents", json=body, headers=account.headers)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def twilio_account(self, account: Account) -> FakeTwilioAccount:
        if account.account_id not in self.twilio_accounts:
            self.twilio_accounts[account.account_id] = self.twilio.add_account()
        return self.twilio_accounts[account.account_id]

    async def number(
        self, account: Account, agent_id: str | None, phone_number: str | None = None
    ) -> str:
        """Buy a number in the fake Twilio and import it through the API."""
        tw = self.twilio_account(account)
        phone_number = phone_number or random_e164()
        self.twilio.add_number(tw.sid, phone_number)
        r = await self.client.post(
            "/v1/phone-numbers",
            json={
                "phone_number": phone_number,
                "agent_id": agent_id,
                "twilio_account_sid": tw.sid,
                "twilio_auth_token": tw.auth_token,
            },
            headers=account.headers,
        )
        assert r.status_code == 201, r.text
        return phone_number

    async def ready(self, **agent_fields: Any) -> tuple[Account, dict[str, Any], str]:
        """An account with an agent that has one number attached."""
        account = await self.account()
        agent = await self.agent(account, **agent_fields)
        number = await self.number(account, agent["agent_id"])
        return account, agent, number


async def start_env(
    database_url: str,
    fake_twilio: tuple[FakeTwilio, str],
    tmp_path: Any,
    dialer: InstantDialer | None = None,
    **overrides: Any,
) -> AsyncIterator[Env]:
    state, base = fake_twilio
    settings = make_settings(database_url, base, tmp_path, **overrides)
    dialer = dialer or InstantDialer()
    app = create_app(settings, dialer=dialer, migrate=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://engine.test"
        ) as client,
    ):
        yield Env(app, client, dialer, state, base, settings)


@pytest.fixture
async def env(
    database_url: str, fake_twilio: tuple[FakeTwilio, str], tmp_path: Any
) -> AsyncIterator[Env]:
    async for e in start_env(database_url, fake_twilio, tmp_path):
        yield e


@pytest.fixture
async def sqlite_env(
    sqlite_url: str, fake_twilio: tuple[FakeTwilio, str], tmp_path: Any
) -> AsyncIterator[Env]:
    """SQLite only: for tests about HTTP behaviour that does not depend on the database."""
    async for e in start_env(sqlite_url, fake_twilio, tmp_path):
        yield e


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"type", "code", "message", "doc_url", "details"}, err
    assert err["code"] == code, err
    assert response.headers.get("x-request-id")
    return dict(err)
