"""Fixtures: the sandbox fakes on a free 127.0.0.1 port, and a harness running one processor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from nixflex_engine.frames import Frame
from nixflex_engine.pipeline import (
    DOWNSTREAM,
    UPSTREAM,
    Clock,
    FrameDirection,
    FrameProcessor,
    Pipeline,
    PipelineTask,
)
from nixflex_engine.sandbox.fake_anthropic import AnthropicSettings, FakeAnthropic
from nixflex_engine.sandbox.fake_deepgram import FakeDeepgram, ListenSettings, SpeakSettings
from nixflex_engine.sandbox.serve import serve_sandbox

DG_KEY = "dg-test-key"
ANTHROPIC_KEY = "sk-ant-test"

F = TypeVar("F", bound=Frame)


@dataclass
class Sandbox:
    url: str
    deepgram: FakeDeepgram
    anthropic: FakeAnthropic


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    deepgram = FakeDeepgram(
        api_key=DG_KEY,
        listen=ListenSettings(
            final_delay_ms=20, interim_delay_ms=0, finalize_delay_ms=0, idle_timeout_s=10
        ),
        speak=SpeakSettings(ttfb_ms=20, chunk_ms=100, speed=0),
    )
    anthropic = FakeAnthropic(
        AnthropicSettings(ttft_ms=20, tokens_per_s=2000, api_key=ANTHROPIC_KEY)
    )
    async with serve_sandbox(deepgram=deepgram, anthropic=anthropic) as url:
        yield Sandbox(url, deepgram, anthropic)


class ManualClock:
    """A run clock the test sets by hand."""

    def __init__(self) -> None:
        self.t = 0.0

    def now_ms(self) -> float:
        return self.t


class Harness:
    """Runs ``processor`` alone in a pipeline task and records every frame leaving it."""

    def __init__(self, processor: FrameProcessor, clock: Clock | None = None) -> None:
        self.processor = processor
        self.frames: list[tuple[Frame, FrameDirection]] = []
        self.task = PipelineTask(Pipeline([processor]), call_id="CA-providers", clock=clock)
        self.task.add_observer(self._seen)
        self._changed = asyncio.Event()
        self._runner: asyncio.Task[Any] | None = None

    def _seen(self, frame: Frame, direction: FrameDirection) -> None:
        self.frames.append((frame, direction))
        self._changed.set()

    async def __aenter__(self) -> Harness:
        self._runner = asyncio.create_task(self.task.run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.task.done:
            await self.task.cancel("test over")
        assert self._runner is not None
        await asyncio.wait_for(self._runner, 10)

    async def send(self, frame: Frame) -> None:
        await self.task.queue_frame(frame, DOWNSTREAM)

    def down(self, kind: type[F]) -> list[F]:
        return [f for f, d in self.frames if isinstance(f, kind) and d == DOWNSTREAM]

    def up(self, kind: type[F]) -> list[F]:
        return [f for f, d in self.frames if isinstance(f, kind) and d == UPSTREAM]

    def kinds(self) -> list[str]:
        return [type(f).__name__ for f, d in self.frames if d == DOWNSTREAM]

    async def wait_for(self, predicate: Callable[[], object], timeout_s: float = 15.0) -> None:
        async def loop() -> None:
            while not predicate():
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), 0.05)
                except TimeoutError:
                    pass

        await asyncio.wait_for(loop(), timeout_s)
