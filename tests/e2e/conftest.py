"""Whole calls through the API: a real engine app under uvicorn on 127.0.0.1, dialing the sandbox
carrier (fake Twilio REST that plays each call, fake Deepgram and Anthropic on one port).

``await make_stack()`` → :class:`Stack`: the engine's URL is its ``public_base_url`` (so the
carrier reaches it), SQLite in ``tmp_path``, dev mode, every provider pointed at the sandbox. A
:class:`Tenant` is an account (key), an agent and an imported number, made through the API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.types import Receive, Scope, Send

from nixflex_engine.api.keys import create_account_key
from nixflex_engine.calls.twilio_dialer import TwilioDialer
from nixflex_engine.config import Settings
from nixflex_engine.sandbox.app import build_sandbox_app
from nixflex_engine.sandbox.carrier import SandboxCarrier, carrier_routes
from nixflex_engine.sandbox.fake_anthropic import AnthropicSettings, FakeAnthropic
from nixflex_engine.sandbox.fake_deepgram import FakeDeepgram, ListenSettings, SpeakSettings
from nixflex_engine.sandbox.fake_twilio import FakeTwilioAccount
from nixflex_engine.sandbox.serve import serve_app
from nixflex_engine.server import create_app

FINAL = ("completed", "busy", "no-answer", "failed", "canceled")
DG_KEY = "sandbox-dg"
ANTHROPIC_KEY = "sandbox-anthropic"
FROM = "+15550100000"
OPENER = "Hi, this is Anna from Riverside Clinic."


@dataclass(slots=True)
class Tenant:
    key_id: str
    key_secret: str
    account_id: str
    agent_id: str
    from_number: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key_id}:{self.key_secret}"}


@dataclass(slots=True)
class Stack:
    carrier: SandboxCarrier
    sandbox_url: str
    engine_url: str
    settings: Settings
    app: Any
    client: httpx.AsyncClient
    twilio_account: FakeTwilioAccount
    anthropic: FakeAnthropic

    async def tenant(self, max_concurrent_calls: int | None = None, **agent: Any) -> Tenant:
        services = self.app.state.services
        key = await create_account_key(
            services.repos,
            services.crypto,
            name="e2e",
            max_concurrent_calls=max_concurrent_calls,
        )
        headers = {"Authorization": f"Bearer {key.key_id}:{key.key_secret}"}
        body = {
            "name": "Anna",
            "system_prompt": "You are Anna from Riverside Clinic, calling {patient_name}.",
            "welcome_message": OPENER,
            **agent,
        }
        r = await self.client.post("/v1/agents", json=body, headers=headers)
        assert r.status_code == 201, r.text
        agent_id = r.json()["agent_id"]
        r = await self.client.post(
            "/v1/phone-numbers",
            json={
                "phone_number": FROM,
                "agent_id": agent_id,
                "twilio_account_sid": self.twilio_account.sid,
                "twilio_auth_token": self.twilio_account.auth_token,
            },
            headers=headers,
        )
        assert r.status_code == 201, r.text
        return Tenant(key.key_id, key.key_secret, key.account_id, agent_id, FROM)

    async def dial(self, tenant: Tenant, to: str, **body: Any) -> httpx.Response:
        payload = {"agent_id": tenant.agent_id, "to_number": to, **body}
        return await self.client.post("/v1/calls/outbound", json=payload, headers=tenant.headers)

    async def get(self, tenant: Tenant, call_id: str) -> dict[str, Any]:
        r = await self.client.get(f"/v1/calls/{call_id}", headers=tenant.headers)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def wait_final(
        self, tenant: Tenant, call_id: str, timeout_s: float = 40.0
    ) -> dict[str, Any]:
        """The call's record once final (and its carrier leg over, callbacks delivered)."""
        deadline = time.monotonic() + timeout_s
        while True:
            record = await self.get(tenant, call_id)
            if record["status"] in FINAL:
                if call_id in self.carrier.calls:
                    await self.carrier.wait_ended(call_id, max(1.0, deadline - time.monotonic()))
                return record
            assert time.monotonic() < deadline, f"call {call_id} still {record['status']}"
            await asyncio.sleep(0.1)


def engine_settings(tmp: Path, public: str, sandbox_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "dev_mode": True,
        "var_dir": tmp / "var",
        "database_url": f"sqlite+aiosqlite:///{tmp / 'engine.db'}",
        "recordings_dir": tmp / "recordings",
        "public_base_url": public,
        "twilio_api_base_url": sandbox_url,
        "deepgram_base_url": sandbox_url,
        "deepgram_api_key": SecretStr(DG_KEY),
        "anthropic_base_url": sandbox_url,
        "anthropic_api_key": SecretStr(ANTHROPIC_KEY),
        "rate_limit_reads_per_minute": 100_000,
        "rate_limit_writes_per_minute": 100_000,
        **overrides,
    }
    return Settings(**values)


@dataclass(slots=True)
class Sandbox:
    carrier: SandboxCarrier
    url: str
    account: FakeTwilioAccount
    anthropic: FakeAnthropic


async def start_sandbox(stack: AsyncExitStack, *, speed: float) -> Sandbox:
    carrier = SandboxCarrier(speed=speed)
    account = carrier.twilio.add_account()
    carrier.twilio.add_number(account.sid, FROM)
    deepgram = FakeDeepgram(
        api_key=DG_KEY,
        listen=ListenSettings(final_delay_ms=100),
        speak=SpeakSettings(ttfb_ms=60),
    )
    anthropic = FakeAnthropic(AnthropicSettings(ttft_ms=120, tokens_per_s=200))
    app = build_sandbox_app(
        deepgram=deepgram, anthropic=anthropic, extra_routes=carrier_routes(carrier)
    )
    url = await stack.enter_async_context(serve_app(app))
    stack.push_async_callback(carrier.aclose)  # before the servers stop
    return Sandbox(carrier, url, account, anthropic)


class _Holder:
    """An ASGI app whose real app is set once the server's URL is known."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def start_engine(
    stack: AsyncExitStack, tmp: Path, sandbox: Sandbox, **create: Any
) -> tuple[str, Settings, Any]:
    """An engine app (lifespan running) served on 127.0.0.1; returns (url, settings, app)."""
    holder = _Holder()
    url = await stack.enter_async_context(serve_app(holder))
    settings = engine_settings(tmp, url, sandbox.url)
    dialer = TwilioDialer(settings)
    stack.push_async_callback(dialer.aclose)
    app = create_app(settings, dialer=dialer, **create)
    await stack.enter_async_context(app.router.lifespan_context(app))
    holder.app = app
    return url, settings, app


StackFactory = Callable[..., Any]


@pytest.fixture
async def make_stack(tmp_path: Path) -> AsyncIterator[StackFactory]:
    """``await make_stack(speed=10.0)`` → :class:`Stack`."""
    async with AsyncExitStack() as stack:

        async def build(*, speed: float = 10.0, **create: Any) -> Stack:
            sandbox = await start_sandbox(stack, speed=speed)
            url, settings, app = await start_engine(stack, tmp_path, sandbox, **create)
            client = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=20))
            return Stack(
                sandbox.carrier,
                sandbox.url,
                url,
                settings,
                app,
                client,
                sandbox.account,
                sandbox.anthropic,
            )

        yield build
