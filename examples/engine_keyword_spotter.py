"""The keyword spotter running ON THE ENGINE, as an agent's ``chain_factory``, in the sandbox.

Everything a real deployment has, on 127.0.0.1 and offline: the engine (HTTP API, SQLite,
call sessions, the Twilio dialer) and the sandbox (a fake Twilio that places and *plays* each
call with a scripted callee, fake Deepgram and Anthropic). Through the HTTP API only, the
script creates an API key, imports a phone number, creates an agent whose ``chain_factory``
is ``examples.keyword_spotter:build`` (allowed by the engine's ``allowed_chain_factories``
setting), places a call, and waits for its final record: transcript, latency, recording.

Run it from the repository root (so ``examples`` is importable)::

    python -m examples.engine_keyword_spotter

The same steps by hand, with two servers and ``curl``, are in ``docs/running-on-the-engine.md``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from starlette.types import Receive, Scope, Send

from examples.keyword_spotter import fake_model
from nixflex_engine.calls.twilio_dialer import TwilioDialer
from nixflex_engine.config import Settings
from nixflex_engine.sandbox import (
    CarrierScript,
    FakeDeepgram,
    ListenSettings,
    SandboxCarrier,
    Say,
    Silence,
    SpeakSettings,
    Step,
    UntilAgentSilent,
    build_sandbox_app,
    carrier_routes,
    serve_app,
)
from nixflex_engine.server import create_app

__all__ = ["EngineCall", "main", "run_on_engine"]

FACTORY = "examples.keyword_spotter:build"
FROM = "+15550100000"
TO = "+15550123456"
FINAL = ("completed", "busy", "no-answer", "failed", "canceled")

AGENT: dict[str, Any] = {
    "name": "Anna (keyword spotter)",
    "system_prompt": "You are Anna from Riverside Clinic, confirming {name}'s appointment.",
    "welcome_message": "Hi {name}, it's Anna.",
    "chain_factory": FACTORY,
}
CALLEE: list[Step] = [
    Silence(200),
    Say("Hello?"),
    UntilAgentSilent(silence_ms=500),
    Say("Please cancel it."),
    UntilAgentSilent(silence_ms=500, timeout_ms=10_000),
    Silence(3000),  # the agent hangs up meanwhile (a slow machine must not make it the callee)
]


@dataclass(slots=True)
class EngineCall:
    """A call placed through the engine's API: its final record and the carrier's log."""

    record: dict[str, Any]
    carrier_log: Any


class _Later:
    """An ASGI app set once its server's URL (the engine's public URL) is known."""

    app: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


@asynccontextmanager
async def _servers(
    var_dir: Path, allowed: Sequence[str], overrides: Mapping[str, Any]
) -> AsyncIterator[tuple[httpx.AsyncClient, SandboxCarrier]]:
    async with AsyncExitStack() as stack:
        # The sandbox: the carrier (fake Twilio REST playing each call) and the fake providers.
        carrier = SandboxCarrier()
        app = build_sandbox_app(
            deepgram=FakeDeepgram(
                listen=ListenSettings(final_delay_ms=100), speak=SpeakSettings(ttfb_ms=60)
            ),
            anthropic=fake_model(),
            extra_routes=carrier_routes(carrier),
        )
        sandbox_url = await stack.enter_async_context(serve_app(app))
        stack.push_async_callback(carrier.aclose)
        # The engine, every provider pointed at the sandbox by settings alone.
        later = _Later()
        engine_url = await stack.enter_async_context(serve_app(later))
        settings = Settings(
            dev_mode=True,  # generates the encryption key under var_dir
            var_dir=var_dir,
            database_url=f"sqlite+aiosqlite:///{var_dir / 'engine.db'}",
            recordings_dir=var_dir / "recordings",
            public_base_url=engine_url,  # where the carrier reaches this engine
            signup_enabled=True,  # POST /v1/keys without a key
            twilio_api_base_url=sandbox_url,
            deepgram_base_url=sandbox_url,
            deepgram_api_key=SecretStr("sandbox"),
            anthropic_base_url=sandbox_url,
            anthropic_api_key=SecretStr("sandbox"),
            allowed_chain_factories=list(allowed),
            **overrides,
        )
        dialer = TwilioDialer(settings)
        stack.push_async_callback(dialer.aclose)
        later.app = create_app(settings, dialer=dialer)
        await stack.enter_async_context(later.app.router.lifespan_context(later.app))
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=engine_url))
        yield client, carrier


async def run_on_engine(
    *,
    agent: dict[str, Any] | None = None,
    callee: Sequence[Step] = CALLEE,
    allowed: Sequence[str] = (FACTORY,),
    calls: int = 1,
    max_concurrent_calls: int | None = None,
    settings: Mapping[str, Any] | None = None,
    var_dir: Path | None = None,
    timeout_s: float = 60.0,
) -> list[EngineCall]:
    """Start the sandbox and the engine (``settings``: more engine settings), then through the
    API create a key, an agent and a number, and place ``calls`` calls one after the other;
    return their final records."""
    with tempfile.TemporaryDirectory() as tmp:
        async with _servers(var_dir or Path(tmp), allowed, settings or {}) as (http, carrier):
            twilio = carrier.twilio.add_account()  # the sandbox's Twilio account
            carrier.twilio.add_number(twilio.sid, FROM)
            carrier.set_script(TO, CarrierScript.answer(list(callee), ring_s=0.5))

            body: dict[str, Any] = {"name": "example"}
            if max_concurrent_calls is not None:
                body["max_concurrent_calls"] = max_concurrent_calls
            r = await http.post("/v1/keys", json=body)
            r.raise_for_status()
            key = r.json()
            auth = {"Authorization": f"Bearer {key['key_id']}:{key['key_secret']}"}
            r = await http.post("/v1/agents", json=agent or AGENT, headers=auth)
            r.raise_for_status()
            agent_id = r.json()["agent_id"]
            number = {
                "phone_number": FROM,
                "agent_id": agent_id,
                "twilio_account_sid": twilio.sid,
                "twilio_auth_token": twilio.auth_token,
            }
            (await http.post("/v1/phone-numbers", json=number, headers=auth)).raise_for_status()

            done: list[EngineCall] = []
            for _ in range(calls):
                call = {"agent_id": agent_id, "to_number": TO, "dynamic_vars": {"name": "Sarah"}}
                r = await http.post("/v1/calls/outbound", json=call, headers=auth)
                r.raise_for_status()
                call_id = r.json()["call_id"]
                deadline = time.monotonic() + timeout_s
                while True:
                    record: dict[str, Any] = (
                        await http.get(f"/v1/calls/{call_id}", headers=auth)
                    ).json()
                    if record["status"] in FINAL:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"call {call_id} still {record['status']}")
                    await asyncio.sleep(0.1)
                done.append(EngineCall(record, await carrier.wait_ended(call_id, timeout_s)))
            return done


def main() -> None:
    """Place the example call and print its final record."""
    [call] = asyncio.run(run_on_engine())
    record = call.record
    print(f"call {record['call_id']}: {record['status']}, ended_reason {record['ended_reason']}")
    for line in record["transcript"]:
        print(f"  {line['timestamp_ms'] / 1000:6.2f}s {line['role']:>6}: {line['text']}")
    print("latency p50 total (ms):", record["latency"].get("p50", {}).get("total_ms"))


if __name__ == "__main__":
    main()
