"""The standard chain uses the process's shared SDK clients when the call context has them."""

from __future__ import annotations

from pydantic import SecretStr

from nixflex_engine.calls.chain import (
    AgentProfile,
    CallContext,
    ProviderClients,
    build_standard_chain,
)
from nixflex_engine.config import Settings
from nixflex_engine.processors.llm import ClaudeLLM
from nixflex_engine.processors.stt import DeepgramSTT
from nixflex_engine.processors.tts import DeepgramTTS
from nixflex_engine.transports.twilio_media import TwilioMediaTransport


class _Socket:
    async def receive(self) -> str | bytes | None:
        return None

    async def send_text(self, text: str) -> None:
        pass

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass


def _settings() -> Settings:
    return Settings(
        deepgram_api_key=SecretStr("dg"),
        deepgram_base_url="http://127.0.0.1:9",
        anthropic_api_key=SecretStr("an"),
        anthropic_base_url="http://127.0.0.1:9",
    )


def _clients_of(ctx: CallContext) -> tuple[object, object, object]:
    procs = build_standard_chain(ctx).processors
    stt = next(p for p in procs if isinstance(p, DeepgramSTT))
    llm = next(p for p in procs if isinstance(p, ClaudeLLM))
    tts = next(p for p in procs if isinstance(p, DeepgramTTS))
    return stt._client, llm._client, tts._client


def _ctx(call_id: str, settings: Settings, clients: ProviderClients | None) -> CallContext:
    return CallContext(
        call_id=call_id,
        agent=AgentProfile(),
        transport=TwilioMediaTransport(_Socket()),
        settings=settings,
        clients=clients,
    )


def test_calls_share_the_process_clients() -> None:
    settings = _settings()
    shared = ProviderClients.from_settings(settings)
    a = _clients_of(_ctx("CA1", settings, shared))
    b = _clients_of(_ctx("CA2", settings, shared))
    assert a == b == (shared.deepgram, shared.anthropic, shared.deepgram)


def test_without_shared_clients_each_call_builds_its_own() -> None:
    settings = _settings()
    a = _clients_of(_ctx("CA1", settings, None))
    b = _clients_of(_ctx("CA2", settings, None))
    assert all(x is not y for x, y in zip(a, b, strict=True))
    assert a[0] is not a[2]  # STT and TTS too
