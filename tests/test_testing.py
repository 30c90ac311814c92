"""nixflex_engine.testing.run_frames: frames in, in order and direction; what came out; until."""

from __future__ import annotations

import asyncio

import pytest

from nixflex_engine.frames import ErrorFrame, Frame, LLMTextFrame, TranscriptFrame
from nixflex_engine.pipeline import UPSTREAM, FrameDirection, FrameProcessor
from nixflex_engine.testing import run_frames


class Later(FrameProcessor):
    """Answers each transcript from a background task, 20 ms later."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TranscriptFrame):
            self.create_task(self._answer(frame.text))
        await self.push_frame(frame, direction)

    async def _answer(self, text: str) -> None:
        await asyncio.sleep(0.02)
        await self.push_frame(LLMTextFrame(text=text.upper()))


async def test_frames_in_order_both_directions() -> None:
    error = ErrorFrame(error="x", processor="p")
    log = await run_frames(FrameProcessor(), [TranscriptFrame(text="a"), (error, UPSTREAM)])
    assert log.kinds() == ["StartFrame", "TranscriptFrame", "EndFrame"]
    assert log.up(ErrorFrame) == [error] and log.down(ErrorFrame) == []
    assert log.result is not None and log.result.reason == "test_done"


async def test_until_waits_for_background_output() -> None:
    quick = await run_frames(Later(), [TranscriptFrame(text="hi")])
    assert quick.down(LLMTextFrame) == []  # ended before the answer: cancelled with the run
    log = await run_frames(
        Later(), [TranscriptFrame(text="hi")], until=lambda log: bool(log.down(LLMTextFrame))
    )
    assert [f.text for f in log.down(LLMTextFrame)] == ["HI"]
    settled = await run_frames(Later(), [TranscriptFrame(text="yo")], settle_s=0.1)
    assert [f.text for f in settled.down(LLMTextFrame)] == ["YO"]


async def test_until_that_never_holds_times_out() -> None:
    with pytest.raises(TimeoutError):
        await run_frames(FrameProcessor(), [], until=lambda log: False, timeout_s=0.1)
