"""A small chain around the VoicemailProcessor, driven on a hand-set run clock.

``VoicemailProcessor → FakeTTS → TurnSide`` in a ``PipelineTask``: the test plays the frames
the VAD, the STT and the call session would send, sets the clock, and reads what left the
processor. ``TurnSide`` stands where turn taking sits, so the caller frames it records are the
ones the conversation would have seen. ``FakeTTS`` ends the run like the real TTS: a
``TTSSpeakFrame`` with ``end_call_reason`` is followed by an ``EndCallFrame`` with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from nixflex_engine.frames import (
    AMDResultFrame,
    EndCallFrame,
    Frame,
    InputAudioFrame,
    InterimTranscriptFrame,
    StartFrame,
    TranscriptFrame,
    TransportStartedFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from nixflex_engine.pipeline import (
    DOWNSTREAM,
    FrameDirection,
    FrameProcessor,
    Pipeline,
    PipelineTask,
)
from nixflex_engine.processors.voicemail import VoicemailProcessor
from nixflex_engine.sandbox import speech

F = TypeVar("F", bound=Frame)

CALLER_KINDS = (
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    InterimTranscriptFrame,
    TranscriptFrame,
)


class ManualClock:
    """A run clock the test sets by hand."""

    def __init__(self) -> None:
        self.t = 0.0

    def now_ms(self) -> float:
        return self.t


class FakeTTS(FrameProcessor):
    """Says nothing; ends the call after a speak frame that carries an end-call reason."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(frame, direction)
        if isinstance(frame, TTSSpeakFrame) and frame.end_call_reason:
            await self.push_frame(EndCallFrame(reason=frame.end_call_reason))


class TurnSide(FrameProcessor):
    """Where turn taking sits: records every downstream frame, in order."""

    def __init__(self) -> None:
        super().__init__(name="turn_side")
        self.seen: list[Frame] = []
        self.changed = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction == DOWNSTREAM and not isinstance(frame, InputAudioFrame):
            self.seen.append(frame)
            self.changed.set()
        await self.push_frame(frame, direction)


class Rig:
    def __init__(self, **options: Any) -> None:
        options.setdefault("welcome_message", "Hi, this is Anna from Acme.")
        options.setdefault("voicemail_message", "Hi, this is Anna from Acme, please call us back.")
        self.clock = ManualClock()
        self.vm = VoicemailProcessor(**options)
        self.turns = TurnSide()
        self.task = PipelineTask(
            Pipeline([self.vm, FakeTTS(), self.turns]), call_id="CA-vm", clock=self.clock
        )
        self.runner: asyncio.Task[Any] | None = None
        self._audio_ts = 0

    async def __aenter__(self) -> Rig:
        self.runner = asyncio.create_task(self.task.run())
        await asyncio.sleep(0)
        await self.send(TransportStartedFrame(stream_sid="MZ1", call_sid="CA1"))
        await asyncio.sleep(0.01)  # the timer task starts, as it would on a live loop
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.task.done:
            await self.task.cancel("test_over")
        assert self.runner is not None
        await asyncio.wait_for(self.runner, 5)
        assert self.task.tasks.pending == 0

    # --- driving ------------------------------------------------------------------------

    async def send(self, frame: Frame) -> None:
        await self.task.queue_frame(frame)

    async def at(self, t_ms: float) -> None:
        """Move the clock to ``t_ms`` and let the timer tick there."""
        self.clock.t = t_ms
        await asyncio.sleep(0.12)  # > 2 ticks of 50 ms

    async def say(self, text: str, start_ms: float, end_ms: float) -> None:
        """What the VAD and the STT send for one utterance, each at its own time."""
        words = text.split()
        self.clock.t = start_ms + 160
        await self.send(UserStartedSpeakingFrame(start_ms=start_ms))
        mid = start_ms + (end_ms - start_ms) / 2
        self.clock.t = mid + 100
        await self.send(
            InterimTranscriptFrame(
                text=" ".join(words[: max(1, len(words) // 2)]), start_ms=start_ms, end_ms=mid
            )
        )
        self.clock.t = end_ms + 300
        await self.send(UserStoppedSpeakingFrame(start_ms=start_ms, stop_ms=end_ms))
        self.clock.t = end_ms + 350
        await self.send(
            TranscriptFrame(text=text, start_ms=start_ms, end_ms=end_ms, speech_final=True)
        )

    async def amd(self, answered_by: str, t_ms: float, duration_ms: float | None = None) -> None:
        self.clock.t = t_ms
        await self.send(AMDResultFrame(answered_by, duration_ms))

    async def audio(self, pcm: np.ndarray, *, step_clock: bool = True) -> None:
        """Send PCM16 as 20 ms caller frames on the stream timeline (clock follows it)."""
        samples = np.asarray(pcm, dtype=np.int16)
        for i in range(0, samples.size - 159, 160):
            chunk = samples[i : i + 160]
            ts = self._audio_ts
            self._audio_ts += 20
            if step_clock:  # the clock follows the audio, never backwards
                self.clock.t = max(self.clock.t, float(ts + 20))
            await self.send(
                InputAudioFrame(
                    audio=b"\xff" * 160,
                    timestamp_ms=ts,
                    encoding="mulaw",
                    pcm=chunk.astype("<i2").tobytes(),
                )
            )

    async def silence_until(self, t_ms: float) -> None:
        """Line silence (audio frames) up to stream time ``t_ms``."""
        n = int((t_ms - self._audio_ts) / 20)
        if n > 0:
            await self.audio(np.zeros(160 * n, dtype=np.int16))

    async def tone(self, hz: float, ms: float) -> None:
        await self.audio(speech.tone(hz, ms, level_dbfs=-12.0))

    async def wait_for(self, predicate: Callable[[], object], timeout_s: float = 5.0) -> None:
        async def loop() -> None:
            while not predicate():
                self.turns.changed.clear()
                try:
                    await asyncio.wait_for(self.turns.changed.wait(), 0.05)
                except TimeoutError:
                    pass

        await asyncio.wait_for(loop(), timeout_s)

    # --- reading ------------------------------------------------------------------------

    def of(self, kind: type[F]) -> list[F]:
        return [f for f in self.turns.seen if isinstance(f, kind)]

    def caller_frames(self) -> list[Frame]:
        """The caller frames turn taking saw."""
        return [f for f in self.turns.seen if isinstance(f, CALLER_KINDS)]

    def kinds(self, skip: Sequence[type[Frame]] = (StartFrame, TransportStartedFrame)) -> list[str]:
        return [type(f).__name__ for f in self.turns.seen if not isinstance(f, tuple(skip))]
