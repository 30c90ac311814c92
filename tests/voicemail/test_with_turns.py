"""The arbiter in front of the real turn taking and user context aggregator (run clock, real
time): a person's "Hello?" gets the opener and never an LLM reply of its own — it reaches the
context only as a line before what they say next, which is the first LLM request; a machine's
greeting never reaches the LLM at all."""

from __future__ import annotations

import asyncio
from typing import Any

from nixflex_engine.frames import (
    EndCallFrame,
    Frame,
    InterimTranscriptFrame,
    LLMContextFrame,
    TranscriptEntryFrame,
    TranscriptFrame,
    TransportStartedFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserTurnEndedFrame,
)
from nixflex_engine.pipeline import (
    DOWNSTREAM,
    FrameDirection,
    FrameProcessor,
    Pipeline,
    PipelineTask,
)
from nixflex_engine.processors.context import UserContextAggregator
from nixflex_engine.processors.turns import TurnTakingProcessor
from nixflex_engine.processors.voicemail import VoicemailProcessor

WELCOME = "Hi, this is Anna from Acme."


class LLMSide(FrameProcessor):
    """Stands where the LLM is: records what reaches it."""

    def __init__(self) -> None:
        super().__init__(name="llm_side")
        self.seen: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction == DOWNSTREAM:
            self.seen.append(frame)
        await self.push_frame(frame, direction)

    def of(self, kind: type[Any]) -> list[Any]:
        return [f for f in self.seen if isinstance(f, kind)]


async def run_call(action: str, script: list[tuple[float, str, float]]) -> LLMSide:
    """``script``: (speech start in s after pickup, text, duration s) said by the callee."""
    llm = LLMSide()
    vm = VoicemailProcessor(
        voicemail_action=action,  # type: ignore[arg-type]
        welcome_message=WELCOME,
        voicemail_message="Please call us back.",
    )
    task = PipelineTask(
        Pipeline([vm, TurnTakingProcessor(), UserContextAggregator("You are Anna."), llm]),
        call_id="CA-turns",
    )
    runner = asyncio.create_task(task.run())
    await asyncio.sleep(0)
    await task.queue_frame(TransportStartedFrame(stream_sid="MZ2", call_sid="CA2"))
    t0 = task.clock.now_ms()
    loop = asyncio.get_running_loop()
    base = loop.time()

    async def until(t_s: float) -> None:
        await asyncio.sleep(max(0.0, base + t_s - loop.time()))

    for start_s, text, dur_s in script:
        if task.done:
            break
        start = t0 + start_s * 1000
        end = start + dur_s * 1000
        await until(start_s + 0.16)
        await task.queue_frame(UserStartedSpeakingFrame(start_ms=start))
        await until(start_s + dur_s / 2)
        await task.queue_frame(
            InterimTranscriptFrame(text=text.split()[0], start_ms=start, end_ms=(start + end) / 2)
        )
        await until(start_s + dur_s + 0.3)
        await task.queue_frame(UserStoppedSpeakingFrame(start_ms=start, stop_ms=end))
        await until(start_s + dur_s + 0.35)
        await task.queue_frame(
            TranscriptFrame(text=text, start_ms=start, end_ms=end, speech_final=True)
        )
    for _ in range(30):  # the last turn, if any, ends within a second or so
        if task.done or llm.of(LLMContextFrame):
            break
        await asyncio.sleep(0.05)
    if not task.done:
        await task.cancel("test_over")
    await asyncio.wait_for(runner, 5)
    return llm


async def test_hello_gets_only_the_opener_and_the_next_words_are_the_first_turn() -> None:
    llm = await run_call("hangup", [(0.3, "Hello?", 0.45), (2.6, "Yes, who is this?", 0.9)])
    assert [f.text for f in llm.of(TTSSpeakFrame)] == [WELCOME]
    turns = llm.of(UserTurnEndedFrame)
    assert [t.text for t in turns] == ["Yes, who is this?"]
    (request,) = llm.of(LLMContextFrame)  # one request: nothing answered "Hello?" alone
    said = " ".join(str(m["content"]) for m in request.messages)
    assert said.index("Hello?") < said.index("Yes, who is this?")
    lines = [e.text for e in llm.of(TranscriptEntryFrame) if e.role == "caller"]
    assert lines == ["Hello?", "Yes, who is this?"]  # the greeting kept in the transcript
    kinds = [type(f).__name__ for f in llm.seen]
    assert kinds.index("TTSSpeakFrame") < kinds.index("UserTurnEndedFrame")


async def test_a_machine_greeting_never_reaches_the_llm() -> None:
    llm = await run_call(
        "hangup",
        [(0.3, "Hi, you've reached Sarah.", 1.2), (1.8, "Please leave a message.", 1.0)],
    )
    assert llm.of(UserTurnEndedFrame) == [] and llm.of(LLMContextFrame) == []
    assert llm.of(TTSSpeakFrame) == []
    assert [f.reason for f in llm.of(EndCallFrame)] == ["voicemail"]
