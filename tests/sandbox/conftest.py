"""Fixtures: the sandbox served on a free 127.0.0.1 port, with test-speed latencies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment

from nixflex_engine.sandbox.fake_anthropic import AnthropicSettings, FakeAnthropic
from nixflex_engine.sandbox.fake_deepgram import FakeDeepgram, ListenSettings, SpeakSettings
from nixflex_engine.sandbox.serve import serve_sandbox

DG_KEY = "test-key"


@dataclass(slots=True)
class Sandbox:
    url: str
    deepgram: FakeDeepgram
    anthropic: FakeAnthropic

    def deepgram_client(self, api_key: str = DG_KEY) -> AsyncDeepgramClient:
        ws = self.url.replace("http://", "ws://", 1)
        env = DeepgramClientEnvironment(base=self.url, production=ws, agent=ws, agent_rest=self.url)
        return AsyncDeepgramClient(api_key=api_key, environment=env)


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    deepgram = FakeDeepgram(
        api_key=DG_KEY,
        listen=ListenSettings(
            final_delay_ms=20, interim_delay_ms=0, finalize_delay_ms=0, idle_timeout_s=5
        ),
        speak=SpeakSettings(ttfb_ms=30, chunk_ms=100, speed=0),
    )
    anthropic = FakeAnthropic(AnthropicSettings(ttft_ms=30, tokens_per_s=2000))
    async with serve_sandbox(deepgram=deepgram, anthropic=anthropic) as url:
        yield Sandbox(url, deepgram, anthropic)
