"""Whole conversations through the real conversation processors and small fakes.

Chain: TurnTaking → UserContextAggregator → FakeLLM → FakeTTS → FakeOutput →
AssistantContextAggregator → TurnMetrics. The test plays the caller's side by injecting the
frames the VAD and the STT would send. Assertions are on order and content; time bounds are
generous so a loaded machine does not make them flaky.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from conversation_fakes import Edges, FakeLLM, FakeOutput, FakeTTS, start, wait_for

from nixflex_engine.frames import (
    EndCallFrame,
    ErrorFrame,
    InterimTranscriptFrame,
    InterruptionFrame,
    LLMContextFrame,
    MarkPlayedFrame,
    MetricsFrame,
    TranscriptEntryFrame,
    TranscriptFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserTurnEndedFrame,
)
from nixflex_engine.pipeline import UPSTREAM, Pipeline, PipelineTask
from nixflex_engine.processors.context import AssistantContextAggregator, UserContextAggregator
from nixflex_engine.processors.metrics import TurnMetricsProcessor
from nixflex_engine.processors.turns import TurnTakingProcessor

Reply = Callable[[tuple[dict[str, Any], ...]], str]


class Call:
    def __init__(
        self,
        reply: Reply,
        *,
        ttft_s: float = 0.02,
        ms_per_char: float = 10.0,
        mute_tts: bool = False,
        **turn_settings: Any,
    ) -> None:
        turn_settings.setdefault("max_call_duration_seconds", 60)
        self.turns = TurnTakingProcessor(**turn_settings)
        self.user = UserContextAggregator("You are Anna from Acme.")
        self.llm = FakeLLM(reply, ttft_s=ttft_s)
        self.tts = FakeTTS(ms_per_char=ms_per_char, mute=mute_tts)
        self.output = FakeOutput()
        self.assistant = AssistantContextAggregator(ms_per_char=ms_per_char)
        self.metrics = TurnMetricsProcessor()
        self.task = PipelineTask(
            Pipeline(
                [
                    self.turns,
                    self.user,
                    self.llm,
                    self.tts,
                    self.output,
                    self.assistant,
                    self.metrics,
                ]
            ),
            call_id="CA-test",
        )
        self.edges = Edges(self.task)
        self.runner: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> Call:
        self.runner = await start(self.task)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.task.done:
            await self.task.cancel("test_over")
        assert self.runner is not None
        await asyncio.wait_for(self.runner, 5)
        errors = self.edges.of(ErrorFrame, UPSTREAM) + self.edges.of(ErrorFrame)
        assert errors == [], errors

    def now(self) -> float:
        return self.task.clock.now_ms()

    async def send(self, frame: Any) -> None:
        await self.task.queue_frame(frame)

    async def say(self, text: str, *, speech_ms: float = 200, final_after_ms: float = 30) -> None:
        """The caller says ``text``: VAD start, an interim, VAD stop, then the final."""
        start_ms = self.now()
        await self.send(UserStartedSpeakingFrame(start_ms=start_ms))
        await asyncio.sleep(speech_ms / 2000)
        await self.send(InterimTranscriptFrame(text=text.split(" ")[0]))
        await asyncio.sleep(speech_ms / 2000)
        await self.send(UserStoppedSpeakingFrame(start_ms=start_ms, stop_ms=self.now()))
        await asyncio.sleep(final_after_ms / 1000)
        await self.send(TranscriptFrame(text=text, speech_final=True, received_ms=self.now()))

    def lines(self) -> list[tuple[str, str, bool]]:
        """The transcript as the session sees it: (role, text, interrupted) in time order."""
        entries = self.edges.of(TranscriptEntryFrame) + self.edges.of(
            TranscriptEntryFrame, UPSTREAM
        )
        entries.sort(key=lambda e: e.timestamp_ms)
        return [(e.role, e.text, e.interrupted) for e in entries]

    def agent_lines(self) -> list[TranscriptEntryFrame]:
        return self.edges.of(TranscriptEntryFrame, UPSTREAM)

    def mine(self) -> list[MetricsFrame]:
        return [m for m in self.edges.of(MetricsFrame) if m.processor == self.metrics.name]


def scripted(*replies: str) -> Reply:
    queue = list(replies)

    def reply(_messages: tuple[dict[str, Any], ...]) -> str:
        return queue.pop(0) if queue else "Okay."

    return reply


async def test_a_normal_turn() -> None:
    async with Call(scripted("Hello Sarah. How can I help?")) as call:
        await call.say("Hi, this is Sarah.")
        await wait_for(lambda: len(call.agent_lines()) == 1)
        [request] = call.llm.requests
        assert request.messages == ({"role": "user", "content": "Hi, this is Sarah."},)
        assert call.lines() == [
            ("caller", "Hi, this is Sarah.", False),
            ("agent", "Hello Sarah. How can I help?", False),
        ]
        await wait_for(lambda: len(call.mine()) == 5)
        figures = {m.name: m.value for m in call.mine()}
        assert figures["llm_ttft_ms"] >= 20 and figures["tts_ttfb_ms"] == 5
        assert 0 <= figures["endpointing_ms"] <= figures["total_ms"]
        assert figures["total_ms"] >= figures["llm_ttft_ms"]
        assert call.metrics.summary()["turns"][0]["turn"] == 1


async def test_barge_in_mid_sentence_cuts_the_context_to_what_was_heard() -> None:
    long_reply = (
        "Your appointment is on Tuesday at two in the afternoon. "
        "Doctor Smith will see you in room four on the second floor. "
        "Please bring your insurance card and arrive ten minutes early."
    )
    async with Call(
        scripted(long_reply, "Of course, what would you like to change?"),
        interruption_sensitivity=100,
    ) as call:
        await call.say("When is my appointment?")
        # Let the first sentence play out, then talk over the second.
        await wait_for(lambda: len(call.edges.of(MarkPlayedFrame)) >= 1)
        await asyncio.sleep(0.2)
        barge_start = call.now()
        await call.send(UserStartedSpeakingFrame(start_ms=barge_start))
        await wait_for(lambda: call.output.cleared == 1)
        cut_at = call.now()
        assert cut_at - barge_start >= 150  # not before the threshold (sensitivity 100)
        assert cut_at - barge_start < 2000
        await wait_for(lambda: len(call.agent_lines()) == 1)
        [cut] = call.agent_lines()
        assert cut.interrupted
        assert cut.text.startswith("Your appointment is on Tuesday at two in the afternoon. Doctor")
        assert long_reply.startswith(cut.text) and len(cut.text) < len(long_reply)
        assert long_reply[len(cut.text)] == " "  # cut between words
        # The caller finishes; the next request knows the agent was cut off, and where.
        await call.send(UserStoppedSpeakingFrame(start_ms=barge_start, stop_ms=call.now()))
        await call.send(TranscriptFrame(text="Can I change it?", speech_final=True))
        await wait_for(lambda: len(call.llm.requests) == 2)
        messages = call.llm.requests[1].messages
        assert messages[1] == {
            "role": "assistant",
            "content": f"{cut.text} [interrupted by the caller]",
        }
        assert messages[2] == {"role": "user", "content": "Can I change it?"}
        await wait_for(lambda: len(call.agent_lines()) == 2)
        assert [role for role, _, _ in call.lines()] == ["caller", "agent", "caller", "agent"]


async def test_backchannel_does_not_interrupt_or_start_a_turn() -> None:
    reply = "Let me read the details. It is booked for Tuesday. Anything else?"
    async with Call(scripted(reply), interruption_sensitivity=50) as call:
        await call.say("Read me the booking.")
        await wait_for(lambda: len(call.edges.of(MarkPlayedFrame)) >= 1)
        start_ms = call.now()
        await call.send(UserStartedSpeakingFrame(start_ms=start_ms))
        await call.send(InterimTranscriptFrame(text="uh-huh"))
        await asyncio.sleep(0.6)  # longer than the 400 ms threshold, but only a backchannel
        await call.send(UserStoppedSpeakingFrame(start_ms=start_ms, stop_ms=call.now()))
        await call.send(TranscriptFrame(text="Uh-huh.", speech_final=True))
        await wait_for(lambda: len(call.agent_lines()) == 1)
        await asyncio.sleep(0.1)
        assert call.output.cleared == 0
        assert call.agent_lines()[0].text == reply and not call.agent_lines()[0].interrupted
        assert len(call.llm.requests) == 1  # "uh-huh" is not a turn
        assert not [e for e in call.edges.of(InterruptionFrame)]


async def test_caller_going_on_cancels_a_reply_not_yet_heard() -> None:
    def reply(messages: tuple[dict[str, Any], ...]) -> str:
        return "Tuesday at two works." if "Tuesday" in messages[-1]["content"] else "Which day?"

    async with Call(reply, ttft_s=0.8, interruption_sensitivity=50) as call:
        await call.say("I'd like to book.")
        await wait_for(lambda: len(call.llm.requests) == 1)
        await call.say("For Tuesday at two.", speech_ms=600)
        await wait_for(lambda: len(call.llm.requests) == 2)
        assert call.llm.cancelled == 1
        assert call.llm.requests[1].messages == (
            {"role": "user", "content": "I'd like to book.\nFor Tuesday at two."},
        )
        await wait_for(lambda: len(call.agent_lines()) == 1)
        assert [line[1] for line in call.lines()] == [
            "I'd like to book.",
            "For Tuesday at two.",
            "Tuesday at two works.",
        ]


async def test_silence_reprompt_then_goodbye() -> None:
    async with Call(
        scripted(),
        reprompt_after_ms=300,
        reprompt_text="Are you still there?",
        silence_hangup_seconds=1.2,
        silence_goodbye_text="Goodbye for now.",
    ) as call:
        await call.send(TTSSpeakFrame(text="Hi, this is Anna from Acme."))
        result = await asyncio.wait_for(call.runner, 10)  # type: ignore[arg-type]
        assert result.reason == "silence_timeout"
        assert call.lines() == [
            ("agent", "Hi, this is Anna from Acme.", False),
            ("agent", "Are you still there?", False),
            ("agent", "Goodbye for now.", False),
        ]
        opener_end = call.agent_lines()[0].timestamp_ms + len("Hi, this is Anna from Acme.") * 10
        reprompt = call.agent_lines()[1].timestamp_ms
        goodbye = call.agent_lines()[2].timestamp_ms
        assert reprompt - opener_end >= 300
        assert goodbye - opener_end >= 1200
        assert call.llm.requests == []


async def test_caller_speech_resets_the_silence() -> None:
    async with Call(scripted("Sure."), reprompt_after_ms=400, silence_hangup_seconds=0.8) as call:
        await call.send(TTSSpeakFrame(text="Hi there."))
        await wait_for(lambda: len(call.agent_lines()) == 1)
        await asyncio.sleep(0.2)
        await call.say("Hello.")
        await wait_for(lambda: len(call.agent_lines()) == 2)
        result = await asyncio.wait_for(call.runner, 10)  # type: ignore[arg-type]
        assert result.reason == "silence_timeout"
        texts = [line[1] for line in call.lines()]
        assert texts[:3] == ["Hi there.", "Hello.", "Sure."]
        assert texts.count("Are you still there?") == 1  # one re-prompt after the last reply


async def test_max_duration_cuts_the_agent_and_says_goodbye() -> None:
    long_reply = "This is a very long answer that goes on and on. " * 6
    async with Call(
        scripted(long_reply),
        max_call_duration_seconds=1.0,
        max_duration_goodbye_text="Sorry, we are out of time.",
    ) as call:
        await call.say("Tell me everything.")
        result = await asyncio.wait_for(call.runner, 10)  # type: ignore[arg-type]
        assert result.reason == "max_duration"
        lines = call.lines()
        assert lines[-1] == ("agent", "Sorry, we are out of time.", False)
        assert lines[-2][0] == "agent" and lines[-2][2]  # the long answer was cut
        assert call.output.cleared == 1


async def test_preemptive_turn_confirmed_starts_the_reply_early() -> None:
    async with Call(scripted("We open at nine."), preemptive_generation=True) as call:
        start_ms = call.now()
        await call.send(UserStartedSpeakingFrame(start_ms=start_ms))
        await call.send(InterimTranscriptFrame(text="what time do you open"))
        await call.send(UserStoppedSpeakingFrame(start_ms=start_ms, stop_ms=call.now()))
        # The request left before any final transcript.
        await wait_for(lambda: len(call.llm.requests) == 1)
        await call.send(TranscriptFrame(text="What time do you open?", speech_final=True))
        await wait_for(lambda: len(call.agent_lines()) == 1)
        assert len(call.llm.requests) == 1
        turns = call.edges.of(UserTurnEndedFrame)
        assert [t.preemptive for t in turns] == [True, False]
        assert call.lines() == [
            ("caller", "What time do you open?", False),
            ("agent", "We open at nine.", False),
        ]
        await wait_for(lambda: len(call.mine()) == 5)
        assert call.metrics.summary()["turns"][0]["preemptive"] is True


async def test_preemptive_turn_discarded_when_the_caller_goes_on() -> None:
    def reply(messages: tuple[dict[str, Any], ...]) -> str:
        return "A taxi to the airport, sure." if "airport" in messages[-1]["content"] else "No."

    async with Call(reply, preemptive_generation=True, ttft_s=0.5) as call:
        start_ms = call.now()
        await call.send(UserStartedSpeakingFrame(start_ms=start_ms))
        await call.send(InterimTranscriptFrame(text="I need a taxi"))
        await call.send(UserStoppedSpeakingFrame(start_ms=start_ms, stop_ms=call.now()))
        await wait_for(lambda: len(call.llm.requests) == 1)  # tentative, before any final
        # The caller goes on before the reply is heard; the STT's final for the first part
        # arrives meanwhile.
        again = call.now()
        await call.send(UserStartedSpeakingFrame(start_ms=again))
        await call.send(TranscriptFrame(text="I need a taxi"))
        await call.send(InterimTranscriptFrame(text="to the"))
        await asyncio.sleep(0.1)
        await call.send(UserStoppedSpeakingFrame(start_ms=again, stop_ms=call.now()))
        await call.send(TranscriptFrame(text="to the airport.", speech_final=True))
        await wait_for(lambda: len(call.agent_lines()) == 1)
        assert call.llm.cancelled >= 1
        assert len(call.edges.of(InterruptionFrame)) >= 1
        last = call.llm.requests[-1]
        assert last.messages == ({"role": "user", "content": "I need a taxi to the airport."},)
        assert [line[1] for line in call.lines()] == [
            "I need a taxi to the airport.",
            "A taxi to the airport, sure.",
        ]


async def test_end_call_tag_hangs_up_after_the_last_audio() -> None:
    async with Call(scripted("Thanks, goodbye! [END_CALL]")) as call:
        await call.say("That's all, thanks.")
        result = await asyncio.wait_for(call.runner, 10)  # type: ignore[arg-type]
        assert result.reason == "agent_hangup"
        assert call.lines()[-1] == ("agent", "Thanks, goodbye!", False)


async def test_turn_metrics_over_several_turns() -> None:
    async with Call(scripted("One.", "Two.", "Three.")) as call:
        for text in ["First.", "Second.", "Third."]:
            n = len(call.agent_lines())
            await call.say(text)
            await wait_for(lambda n=n: len(call.agent_lines()) == n + 1)
        summary = call.metrics.summary()
        assert [t["turn"] for t in summary["turns"]] == [1, 2, 3]
        totals = sorted(t["total_ms"] for t in summary["turns"])
        assert summary["p50"]["total_ms"] == totals[1]
        assert all(isinstance(r, LLMContextFrame) for r in call.llm.requests)


async def test_half_sentence_then_pause_is_not_answered() -> None:
    async with Call(scripted("Yes, we have a table at eight."), unfinished_wait_ms=1500) as call:
        start_ms = call.now()
        await call.send(UserStartedSpeakingFrame(start_ms=start_ms))
        await call.send(TranscriptFrame(text="I was wondering if"))
        await call.send(UserStoppedSpeakingFrame(start_ms=start_ms, stop_ms=call.now()))
        # The STT answers the Finalize with nothing new: an empty endpoint.
        await call.send(TranscriptFrame(text="", speech_final=True))
        await asyncio.sleep(0.3)
        assert call.llm.requests == []  # a pause mid-clause is not the end of the turn
        await call.say("you have a table tonight.")
        await wait_for(lambda: len(call.llm.requests) == 1)
        assert call.llm.requests[0].messages == (
            {"role": "user", "content": "I was wondering if you have a table tonight."},
        )


async def test_barge_in_is_pushed_in_the_frame_that_crosses_the_threshold() -> None:
    reply = "Here is a long answer. It goes on for a while. And then some more."
    async with Call(scripted(reply), interruption_sensitivity=100) as call:
        await call.say("Tell me.")
        await wait_for(lambda: len(call.edges.of(MarkPlayedFrame)) >= 1)
        # The agent has been speaking for 200+ ms; the VAD reports speech that began 200 ms
        # ago (past the 150 ms threshold): the interruption must leave within this very
        # frame's handling, with no timer wait.
        await call.send(UserStartedSpeakingFrame(start_ms=call.now() - 200))
        assert call.output.cleared == 1
        assert len(call.edges.of(InterruptionFrame)) == 1


async def test_no_timer_is_left_spinning_and_nothing_is_left_behind() -> None:
    call = Call(scripted("Fine."))
    async with call:
        await call.say("How are you?")
        await wait_for(lambda: len(call.agent_lines()) == 1)
        await asyncio.sleep(0.1)
        assert call.task.tasks.pending <= 3  # the turn timer, and the fakes' idle mark tasks
    assert call.task.tasks.pending == 0


async def test_a_reply_that_never_comes_does_not_hold_the_caller_forever() -> None:
    async with Call(scripted(), ttft_s=30.0, reply_timeout_ms=400) as call:
        await call.say("Hello?")
        await wait_for(lambda: len(call.llm.requests) == 1)
        await asyncio.sleep(0.6)  # the reply is overdue: the floor is the caller's again
        await call.say("Are you there?", speech_ms=100)  # short: would be held over a reply
        await wait_for(lambda: len(call.llm.requests) == 2)
        assert call.llm.requests[1].messages == (
            {"role": "user", "content": "Hello?\nAre you there?"},
        )


async def test_goodbye_that_cannot_be_spoken_still_ends_the_call() -> None:
    async with Call(
        scripted(), mute_tts=True, max_call_duration_seconds=0.3, goodbye_grace_ms=300
    ) as call:
        result = await asyncio.wait_for(call.runner, 10)  # type: ignore[arg-type]
        assert result.reason == "max_duration"
        # The TTS swallowed the goodbye; the turn taker's own EndCallFrame ended the call.
        [end] = call.edges.of(EndCallFrame)
        assert end.reason == "max_duration" and call.tts.spoken == []
