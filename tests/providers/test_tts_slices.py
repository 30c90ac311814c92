"""TextToSpeech hands a backlog of audio on in slices (TimeSlice), not in one step."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from nixflex_engine.frames import (
    Frame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    OutputAudioFrame,
)
from nixflex_engine.pipeline import (
    DOWNSTREAM,
    FrameDirection,
    FrameProcessor,
    Pipeline,
    PipelineTask,
)
from nixflex_engine.processors.tts import (
    TextToSpeech,
    TTSAudio,
    TTSConnection,
    TTSEvent,
    TTSFlushed,
)

FRAMES = 40


class _BurstConnection:
    """Answers every Flush with FRAMES audio events at once (a backlog on the socket)."""

    def __init__(self) -> None:
        self.events_q: asyncio.Queue[TTSEvent | None] = asyncio.Queue()
        self.flushes = 0

    async def send_text(self, text: str) -> None:
        return None

    async def flush(self) -> None:
        for _ in range(FRAMES):
            self.events_q.put_nowait(TTSAudio(b"\x01" * 160))
        self.events_q.put_nowait(TTSFlushed(self.flushes))
        self.flushes += 1

    async def clear(self) -> None:
        return None

    async def close(self) -> None:
        self.events_q.put_nowait(None)

    async def events(self) -> AsyncIterator[TTSEvent]:
        while (event := await self.events_q.get()) is not None:
            yield event


class _BurstTTS(TextToSpeech):
    def connect(self) -> contextlib.AbstractAsyncContextManager[TTSConnection]:
        @contextlib.asynccontextmanager
        async def open_() -> AsyncIterator[TTSConnection]:
            conn = _BurstConnection()
            try:
                yield conn
            finally:
                await conn.close()

        return open_()


class _SlowSink(FrameProcessor):
    def __init__(self) -> None:
        super().__init__(name="slow")
        self.audio = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, OutputAudioFrame):
            time.sleep(0.001)  # noqa: ASYNC251 -- CPU work between awaits, on purpose
            self.audio += 1
        await self.push_frame(frame, direction)


async def _counts_seen(reader_slice_ms: float) -> list[int]:
    tts = _BurstTTS(reader_slice_ms=reader_slice_ms)
    sink = _SlowSink()
    task = PipelineTask(Pipeline([tts, sink]), call_id="CA-slices")
    runner = asyncio.create_task(task.run())
    seen: list[int] = []
    try:
        for _ in range(100):  # until the run has started (the processors have a context)
            if tts.connected:
                break
            await asyncio.sleep(0.01)
        await task.queue_frame(LLMResponseStartFrame(turn=1), DOWNSTREAM)
        await task.queue_frame(LLMTextFrame(text="Hello there, how are you today?"), DOWNSTREAM)
        await task.queue_frame(LLMResponseEndFrame(turn=1), DOWNSTREAM)

        async def other() -> None:
            while sink.audio < FRAMES:
                if sink.audio:
                    seen.append(sink.audio)
                await asyncio.sleep(0)

        await asyncio.wait_for(other(), 10)
    finally:
        await task.cancel("test over")
        await asyncio.wait_for(runner, 5)
    return seen


async def test_a_burst_of_audio_is_handed_on_in_slices() -> None:
    seen = await _counts_seen(2.0)
    assert len({c for c in seen if 0 < c < FRAMES}) >= 5


async def test_with_an_unbounded_slice_the_burst_goes_in_one_step() -> None:
    seen = await _counts_seen(1e9)
    assert {c for c in seen if 0 < c < FRAMES} == set()


def test_reader_slice_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="reader_slice_ms"):
        _BurstTTS(reader_slice_ms=-1)
