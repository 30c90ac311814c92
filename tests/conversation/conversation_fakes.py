"""Small stand-ins for the LLM, TTS and output transport, speaking the documented frames.

They follow docs/chain-contract.md so the conversation processors can be tested in a real
chain without network: the LLM answers each ``LLMContextFrame`` with a scripted reply, the TTS
cuts it into sentences with audio whose length follows the text, and the output "plays"
audio in real time, echoing marks and reporting what was heard when cleared.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from nixflex_engine.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndCallFrame,
    Frame,
    InterruptionFrame,
    LLMContextFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    MarkFrame,
    MarkPlayedFrame,
    MetricsFrame,
    OutputAudioFrame,
    PlaybackClearedFrame,
    PlayedAudioFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from nixflex_engine.pipeline import (
    DOWNSTREAM,
    UPSTREAM,
    FrameDirection,
    FrameProcessor,
    PipelineTask,
)

END_CALL = "[END_CALL]"


class FakeLLM(FrameProcessor):
    """Replies to each request with ``reply(messages)``, word by word, after ``ttft_s``."""

    def __init__(
        self,
        reply: Callable[[tuple[dict[str, Any], ...]], str],
        *,
        ttft_s: float = 0.02,
        word_s: float = 0.0,
    ) -> None:
        super().__init__(name="FakeLLM")
        self.reply = reply
        self.ttft_s = ttft_s
        self.word_s = word_s
        self.requests: list[LLMContextFrame] = []
        self.cancelled = 0
        self._generation = 0  # a stream stops at its next step once this moves on
        self._streaming = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMContextFrame):
            self.requests.append(frame)
            self._cancel()
            self._streaming = True
            self.create_task(self._stream(frame, self._generation), "stream")
            return
        if isinstance(frame, InterruptionFrame):
            self._cancel()
        await self.push_frame(frame, direction)

    def _cancel(self) -> None:
        if self._streaming:
            self.cancelled += 1
        self._streaming = False
        self._generation += 1

    async def _stream(self, request: LLMContextFrame, generation: int) -> None:
        started = self.now_ms()
        await asyncio.sleep(self.ttft_s)
        if generation != self._generation:
            return
        text = self.reply(request.messages)
        await self.push_frame(
            MetricsFrame(name="llm_ttft_ms", value=self.now_ms() - started, turn=request.turn)
        )
        await self.push_frame(LLMResponseStartFrame(turn=request.turn))
        for i, word in enumerate(text.split(" ")):
            if i and self.word_s:
                await asyncio.sleep(self.word_s)
            if generation != self._generation:
                return
            await self.push_frame(LLMTextFrame(text=word if i == 0 else " " + word))
        self._streaming = False
        await self.push_frame(LLMResponseEndFrame(turn=request.turn))


class FakeTTS(FrameProcessor):
    """Sentences → ``TTSTextFrame`` + mu-law audio (``ms_per_char`` per character) + mark."""

    def __init__(
        self, *, ms_per_char: float = 10.0, ttfb_ms: float = 5.0, mute: bool = False
    ) -> None:
        super().__init__(name="FakeTTS")
        self.mute = mute  # a broken TTS: swallows everything it should say
        self.ms_per_char = ms_per_char
        self.ttfb_ms = ttfb_ms
        self.spoken: list[str] = []
        self._buffer = ""
        self._chunks = 0
        self._in_reply = False
        self._end_call: str | None = None
        self._turn: int | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction == UPSTREAM:
            await self.push_frame(frame, direction)
            return
        if isinstance(frame, LLMResponseStartFrame):
            self._buffer, self._in_reply, self._turn = "", False, frame.turn
        elif isinstance(frame, LLMTextFrame):
            self._buffer += frame.text
            if END_CALL in self._buffer:
                self._buffer = self._buffer.replace(END_CALL, "")
                self._end_call = "agent_hangup"
            while True:
                cut = min((i for i in (self._buffer.find(c) for c in ".?!") if i >= 0), default=-1)
                if cut < 0:
                    break
                await self._speak(self._buffer[: cut + 1])
                self._buffer = self._buffer[cut + 1 :]
        elif isinstance(frame, LLMResponseEndFrame):
            await self._finish()
        elif isinstance(frame, TTSSpeakFrame):
            self._in_reply, self._turn = False, None
            await self._speak(frame.text)
            self._end_call = frame.end_call_reason
            await self._finish()
        elif isinstance(frame, InterruptionFrame):
            self._buffer, self._in_reply, self._end_call = "", False, None
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    async def _speak(self, text: str) -> None:
        text = text.strip()
        if not text or self.mute:
            return
        if not self._in_reply:
            self._in_reply = True
            await self.push_frame(TTSStartedFrame())
            await self.push_frame(
                MetricsFrame(name="tts_ttfb_ms", value=self.ttfb_ms, turn=self._turn)
            )
        self._chunks += 1
        chunk_id = f"c{self._chunks}"
        self.spoken.append(text)
        await self.push_frame(TTSTextFrame(text=text, chunk_id=chunk_id))
        audio = b"\xff" * int(len(text) * self.ms_per_char * 8)
        for i in range(0, len(audio), 160):
            await self.push_frame(OutputAudioFrame(audio=audio[i : i + 160], chunk_id=chunk_id))
        await self.push_frame(MarkFrame(name=chunk_id))

    async def _finish(self) -> None:
        await self._speak(self._buffer)
        self._buffer = ""
        if self._in_reply:
            await self.push_frame(TTSStoppedFrame())
        self._in_reply = False
        if self._end_call and not self.mute:
            reason, self._end_call = self._end_call, None
            await self.push_frame(EndCallFrame(reason=reason))


class FakeOutput(FrameProcessor):
    """Plays agent audio in real time, like Twilio: marks echo when played, clear cuts."""

    def __init__(self) -> None:
        super().__init__(name="FakeOutput")
        self.cleared = 0
        self._buffer_end = 0.0  # run-clock time the queued audio finishes
        self._chunk_start: dict[str, float] = {}
        self._chunk_ms: dict[str, float] = {}
        self._marks: dict[str, float] = {}  # pending mark → when its audio has played
        self._speaking = False
        self._held_end: EndCallFrame | None = None

    async def _both(self, frame: Frame) -> None:
        await self.push_frame(frame, UPSTREAM)
        await self.push_frame(frame, DOWNSTREAM)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction == UPSTREAM:
            await self.push_frame(frame, direction)
            return
        if isinstance(frame, OutputAudioFrame):
            now = self.now_ms()
            play_at = max(now, self._buffer_end)
            self._chunk_start.setdefault(frame.chunk_id, play_at)
            ms = len(frame.audio) / 8
            self._chunk_ms[frame.chunk_id] = self._chunk_ms.get(frame.chunk_id, 0.0) + ms
            self._buffer_end = play_at + ms
            if not self._speaking:
                self._speaking = True
                await self._both(BotStartedSpeakingFrame(at_ms=play_at))
            await self._both(
                PlayedAudioFrame(audio=frame.audio, play_at_ms=play_at, chunk_id=frame.chunk_id)
            )
            await self.push_frame(frame, direction)  # passed on, as TwilioOutput does
        elif isinstance(frame, MarkFrame):
            due = max(self.now_ms(), self._buffer_end)
            self._marks[frame.name] = due
            self.create_task(self._echo(frame.name, due), "mark")
            await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            await self._clear()
            await self.push_frame(frame, direction)
        elif isinstance(frame, EndCallFrame):
            if self._marks:
                self._held_end = frame
            else:
                await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    async def _echo(self, name: str, due: float) -> None:
        await asyncio.sleep(max(0.0, due - self.now_ms()) / 1000)
        if self._marks.get(name) != due:
            return  # cleared meanwhile: already echoed as cleared
        del self._marks[name]
        await self._both(MarkPlayedFrame(name=name, heard_ms=self.now_ms()))
        if not self._marks and self._speaking and self._buffer_end <= self.now_ms() + 1:
            self._speaking = False
            await self._both(BotStoppedSpeakingFrame(at_ms=self._buffer_end))
        if not self._marks and self._held_end is not None:
            end, self._held_end = self._held_end, None
            await self.push_frame(end)

    async def _clear(self) -> None:
        now = self.now_ms()
        heard = {
            cid: min(max(now - start, 0.0), self._chunk_ms.get(cid, 0.0))
            for cid, start in self._chunk_start.items()
            if start < now and cid in self._marks
        }
        if self._marks or self._speaking:
            self.cleared += 1
            await self._both(PlaybackClearedFrame(at_ms=now, heard=heard))
        for name in list(self._marks):
            await self._both(MarkPlayedFrame(name=name, heard_ms=now, cleared=True))
        self._marks.clear()
        self._buffer_end = now
        if self._speaking:
            self._speaking = False
            await self._both(BotStoppedSpeakingFrame(at_ms=now))


class Edges:
    """Collects what leaves the chain at either end."""

    def __init__(self, task: PipelineTask) -> None:
        self.down: list[Frame] = []
        self.up: list[Frame] = []
        task.add_observer(self._see)

    def _see(self, frame: Frame, direction: FrameDirection) -> None:
        (self.down if direction == DOWNSTREAM else self.up).append(frame)

    def of(self, kind: type, direction: FrameDirection = DOWNSTREAM) -> list[Any]:
        frames = self.down if direction == DOWNSTREAM else self.up
        return [f for f in frames if isinstance(f, kind)]


async def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll ``condition`` until true (generous timeout: tests assert order, not speed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)


async def start(task: PipelineTask) -> asyncio.Task[Any]:
    runner = asyncio.create_task(task.run())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return runner


Step = Callable[[], Awaitable[None]]
