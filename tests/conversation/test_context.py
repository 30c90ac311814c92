"""The conversation context and both context aggregators, driven by frames."""

from __future__ import annotations

import asyncio
import itertools

from conversation_fakes import Edges, start
from hypothesis import given
from hypothesis import strategies as st

from nixflex_engine.frames import (
    BotStoppedSpeakingFrame,
    EndCallFrame,
    ErrorFrame,
    InterruptionFrame,
    LLMContextFrame,
    MarkPlayedFrame,
    OutputAudioFrame,
    PlaybackClearedFrame,
    PlayedAudioFrame,
    TranscriptEntryFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserTurnEndedFrame,
)
from nixflex_engine.pipeline import DOWNSTREAM, UPSTREAM, Pipeline, PipelineTask
from nixflex_engine.processors.context import (
    AssistantContextAggregator,
    ConversationContext,
    UserContextAggregator,
)

# --- ConversationContext --------------------------------------------------------------------


def test_opener_first_gets_a_user_line_and_roles_alternate() -> None:
    ctx = ConversationContext("sys")
    ctx.add_agent("Hi, this is Anna from Acme.", 100)
    ctx.add_user("Hello?", 900)
    ctx.add_user("Who is this?", 1500)
    assert ctx.messages() == (
        {"role": "user", "content": "[The call connected.]"},
        {"role": "assistant", "content": "Hi, this is Anna from Acme."},
        {"role": "user", "content": "Hello?\nWho is this?"},
    )


def test_interrupted_agent_line_is_marked_for_the_llm() -> None:
    ctx = ConversationContext("sys", interruption_note="[cut]")
    ctx.add_user("Hi.", 0)
    ctx.add_agent("Your appointment is", 1000, interrupted=True)
    ctx.add_user("Actually, cancel it.", 2000)
    assert ctx.messages()[1] == {"role": "assistant", "content": "Your appointment is [cut]"}


def test_late_agent_line_goes_before_the_barge_in_it_caused() -> None:
    ctx = ConversationContext("sys")
    ctx.add_user("Book me in.", 0)
    ctx.add_user("No wait.", 2500)  # barge-in that started after the agent's audio began
    ctx.add_agent("Sure, for which", 2000, interrupted=True)
    assert [m["role"] for m in ctx.messages()] == ["user", "assistant", "user"]
    assert ctx.messages()[-1]["content"] == "No wait."


def test_empty_agent_line_is_not_kept() -> None:
    ctx = ConversationContext("sys")
    ctx.add_agent("   ", 0, interrupted=True)
    assert ctx.messages() == ()


def test_tentative_line_confirm_and_drop() -> None:
    ctx = ConversationContext("sys")
    ctx.add_user("yes", 0, tentative=True)
    assert ctx.confirm_tentative("Yes.") and ctx.entries[0].text == "Yes."
    assert not ctx.drop_tentative() and not ctx.confirm_tentative("x")
    ctx.add_user("no", 1, tentative=True)
    assert ctx.drop_tentative() and len(ctx.entries) == 1


lines = st.lists(
    st.tuples(
        st.sampled_from(["user", "assistant"]), st.text(min_size=1, max_size=8), st.booleans()
    ),
    max_size=12,
)


@given(lines)
def test_messages_always_alternate_and_start_with_the_user(entries) -> None:
    ctx = ConversationContext("sys")
    for i, (role, text, interrupted) in enumerate(entries):
        if role == "user":
            ctx.add_user(text, i)
        else:
            ctx.add_agent(text, i, interrupted=interrupted)
    messages = ctx.messages()
    roles = [m["role"] for m in messages]
    assert all(a != b for a, b in itertools.pairwise(roles))
    if messages:
        assert roles[0] == "user"
    kept = [t.strip() if r == "assistant" else t for r, t, _ in entries if r == "user" or t.strip()]
    joined = "\n".join(m["content"] for m in messages)
    for text in kept:
        assert text in joined


# --- UserContextAggregator ------------------------------------------------------------------


async def run_user_side(*frames_and_dirs):
    agg = UserContextAggregator("You are Anna.")
    task = PipelineTask(Pipeline([agg]))
    edges = Edges(task)
    runner = await start(task)
    for frame, direction in frames_and_dirs:
        await task.queue_frame(frame, direction)
    await task.end()
    await asyncio.wait_for(runner, 5)
    assert edges.of(ErrorFrame, UPSTREAM) == []
    return agg, edges


async def test_user_turn_sends_a_request_and_a_transcript_line() -> None:
    _, edges = await run_user_side(
        (TranscriptEntryFrame(role="agent", text="Hi, it's Anna.", timestamp_ms=10), UPSTREAM),
        (UserStartedSpeakingFrame(start_ms=500), DOWNSTREAM),
        (UserStoppedSpeakingFrame(start_ms=500, stop_ms=900), DOWNSTREAM),
        (UserTurnEndedFrame(text="Hi Anna.", speech_end_ms=900, decided_ms=1000), DOWNSTREAM),
    )
    [request] = edges.of(LLMContextFrame)
    assert request.system == "You are Anna." and request.turn == 1
    assert request.messages[-2:] == (
        {"role": "assistant", "content": "Hi, it's Anna."},
        {"role": "user", "content": "Hi Anna."},
    )
    [line] = edges.of(TranscriptEntryFrame)
    assert line == TranscriptEntryFrame(role="caller", text="Hi Anna.", timestamp_ms=500)
    assert len(edges.of(UserTurnEndedFrame)) == 1  # passed on for the metrics
    assert edges.of(TranscriptEntryFrame, UPSTREAM)[0].text == "Hi, it's Anna."  # passed on


async def test_preemptive_turn_confirmed_sends_one_request() -> None:
    agg, edges = await run_user_side(
        (
            UserTurnEndedFrame(text="what time", speech_end_ms=1, decided_ms=2, preemptive=True),
            DOWNSTREAM,
        ),
        (UserTurnEndedFrame(text="What time?", speech_end_ms=1, decided_ms=3), DOWNSTREAM),
    )
    assert [r.turn for r in edges.of(LLMContextFrame)] == [1]
    assert [e.text for e in edges.of(TranscriptEntryFrame)] == ["What time?"]
    assert agg.conversation.messages() == ({"role": "user", "content": "What time?"},)


async def test_preemptive_turn_discarded_then_new_turn() -> None:
    _, edges = await run_user_side(
        (
            UserTurnEndedFrame(text="I need", speech_end_ms=1, decided_ms=2, preemptive=True),
            DOWNSTREAM,
        ),
        (InterruptionFrame(), DOWNSTREAM),
        (UserTurnEndedFrame(text="I need a taxi.", speech_end_ms=5, decided_ms=6), DOWNSTREAM),
    )
    requests = edges.of(LLMContextFrame)
    assert [r.turn for r in requests] == [1, 2]
    assert requests[1].messages == ({"role": "user", "content": "I need a taxi."},)
    assert [e.text for e in edges.of(TranscriptEntryFrame)] == ["I need a taxi."]


async def test_changed_words_replace_the_tentative_line() -> None:
    agg, edges = await run_user_side(
        (
            UserTurnEndedFrame(text="book", speech_end_ms=1, decided_ms=2, preemptive=True),
            DOWNSTREAM,
        ),
        (UserTurnEndedFrame(text="Book it.", speech_end_ms=1, decided_ms=3), DOWNSTREAM),
    )
    assert [r.turn for r in edges.of(LLMContextFrame)] == [1, 2]
    assert agg.conversation.messages() == ({"role": "user", "content": "Book it."},)


async def test_backchannel_over_the_agent_does_not_date_the_next_line() -> None:
    _, edges = await run_user_side(
        (UserStartedSpeakingFrame(start_ms=1500), DOWNSTREAM),  # "uh-huh" over the agent
        (UserStoppedSpeakingFrame(start_ms=1500, stop_ms=1700), DOWNSTREAM),
        (
            TranscriptEntryFrame(role="agent", text="So that's Tuesday.", timestamp_ms=1000),
            UPSTREAM,
        ),
        (UserStartedSpeakingFrame(start_ms=7000), DOWNSTREAM),
        (UserTurnEndedFrame(text="Yes.", speech_end_ms=7400, decided_ms=7500), DOWNSTREAM),
    )
    assert edges.of(TranscriptEntryFrame)[0].timestamp_ms == 7000


# --- AssistantContextAggregator -------------------------------------------------------------


def audio(ms: float) -> bytes:
    return b"\xff" * int(ms * 8)


async def run_assistant_side(*frames):
    agg = AssistantContextAggregator(ms_per_char=50)
    task = PipelineTask(Pipeline([agg]))
    edges = Edges(task)
    runner = await start(task)
    for frame in frames:
        await task.queue_frame(frame)
    await task.end()
    await asyncio.wait_for(runner, 5)
    assert edges.of(ErrorFrame, UPSTREAM) == []
    return edges.of(TranscriptEntryFrame, UPSTREAM), edges


async def test_reply_heard_in_full_after_its_last_mark() -> None:
    lines, edges = await run_assistant_side(
        TTSStartedFrame(),
        TTSTextFrame(text="Hello Sarah.", chunk_id="a"),
        PlayedAudioFrame(audio=audio(600), play_at_ms=1000, chunk_id="a"),
        TTSTextFrame(text="How are you?", chunk_id="b"),
        PlayedAudioFrame(audio=audio(600), play_at_ms=1600, chunk_id="b"),
        TTSStoppedFrame(),
        MarkPlayedFrame(name="a", heard_ms=1600),
        MarkPlayedFrame(name="b", heard_ms=2200),
    )
    assert lines == [
        TranscriptEntryFrame(role="agent", text="Hello Sarah. How are you?", timestamp_ms=1000)
    ]
    assert len(edges.of(PlayedAudioFrame)) == 2  # everything passes on


async def test_reply_cut_to_the_word_the_caller_heard() -> None:
    lines, _ = await run_assistant_side(
        TTSStartedFrame(),
        TTSTextFrame(text="Your appointment is confirmed.", chunk_id="a"),
        PlayedAudioFrame(audio=audio(1000), play_at_ms=0, chunk_id="a"),
        TTSTextFrame(text="It is on Tuesday at two in the afternoon.", chunk_id="b"),
        PlayedAudioFrame(audio=audio(2000), play_at_ms=1000, chunk_id="b"),
        TTSStoppedFrame(),
        MarkPlayedFrame(name="a", heard_ms=1000),
        InterruptionFrame(),
        PlaybackClearedFrame(at_ms=1900, heard={"b": 900}),
        MarkPlayedFrame(name="b", heard_ms=1900, cleared=True),
        BotStoppedSpeakingFrame(at_ms=1900),
    )
    # 900 of 2000 ms of "It is on Tuesday at two in the afternoon." = 18.45 of 41 characters.
    assert lines == [
        TranscriptEntryFrame(
            role="agent",
            text="Your appointment is confirmed. It is on Tuesday",
            timestamp_ms=0,
            interrupted=True,
        )
    ]


async def test_chunk_still_arriving_is_not_taken_as_short() -> None:
    # Only 200 ms of chunk "a" had been produced when the caller cut in after 200 ms: the
    # text is 34 chars at 50 ms each, so 200 ms is the first 4 characters, not all of it.
    lines, _ = await run_assistant_side(
        TTSTextFrame(text="Let me check the calendar for you.", chunk_id="a"),
        OutputAudioFrame(audio=audio(200), chunk_id="a"),
        PlayedAudioFrame(audio=audio(200), play_at_ms=0, chunk_id="a"),
        InterruptionFrame(),
        PlaybackClearedFrame(at_ms=200, heard={"a": 200}),
    )
    assert lines == [
        TranscriptEntryFrame(role="agent", text="Let", timestamp_ms=0, interrupted=True)
    ]


async def test_interruption_before_any_audio_leaves_no_line() -> None:
    lines, _ = await run_assistant_side(
        TTSStartedFrame(),
        TTSTextFrame(text="Sure.", chunk_id="a"),
        OutputAudioFrame(audio=audio(300), chunk_id="a"),
        InterruptionFrame(),
        TTSStartedFrame(),
        TTSTextFrame(text="Okay, what then?", chunk_id="b"),
        PlayedAudioFrame(audio=audio(500), play_at_ms=3000, chunk_id="b"),
        TTSStoppedFrame(),
        BotStoppedSpeakingFrame(at_ms=3500),
    )
    assert lines == [TranscriptEntryFrame(role="agent", text="Okay, what then?", timestamp_ms=3000)]


async def test_without_a_clear_report_the_cut_is_estimated_from_the_clock() -> None:
    lines, _ = await run_assistant_side(
        TTSTextFrame(text="One two three four.", chunk_id="a"),
        PlayedAudioFrame(audio=audio(1900), play_at_ms=0, chunk_id="a"),
        TTSStoppedFrame(),
        InterruptionFrame(),
        BotStoppedSpeakingFrame(at_ms=1000),
    )
    assert lines == [
        TranscriptEntryFrame(role="agent", text="One two", timestamp_ms=0, interrupted=True)
    ]


async def test_caller_hanging_up_mid_reply_keeps_what_was_heard() -> None:
    agg = AssistantContextAggregator()
    task = PipelineTask(Pipeline([agg]))
    edges = Edges(task)
    runner = await start(task)
    # The reply's 10 s of audio began 5 s before the hang-up (the run clock starts near 0).
    await task.queue_frame(TTSTextFrame(text="One two three four.", chunk_id="a"))
    await task.queue_frame(PlayedAudioFrame(audio=audio(10_000), play_at_ms=-5000, chunk_id="a"))
    await task.queue_frame(TTSStoppedFrame())
    await task.cancel("caller_hangup")
    await asyncio.wait_for(runner, 5)
    assert edges.of(TranscriptEntryFrame, UPSTREAM) == [
        TranscriptEntryFrame(role="agent", text="One two", timestamp_ms=-5000, interrupted=True)
    ]


async def test_goodbye_heard_in_full_before_the_end_of_call() -> None:
    lines, edges = await run_assistant_side(
        TTSStartedFrame(),
        TTSTextFrame(text="Goodbye!", chunk_id="g"),
        PlayedAudioFrame(audio=audio(400), play_at_ms=50, chunk_id="g"),
        TTSStoppedFrame(),
        MarkPlayedFrame(name="g", heard_ms=450),
        EndCallFrame(reason="silence_timeout"),
    )
    assert lines == [TranscriptEntryFrame(role="agent", text="Goodbye!", timestamp_ms=50)]
    assert edges.of(EndCallFrame)[0].reason == "silence_timeout"


async def test_greeting_kept_from_turn_taking_joins_the_context_in_order() -> None:
    _, edges = await run_user_side(
        # The opener was heard before the arbiter flushed the greeting it answered.
        (TranscriptEntryFrame(role="agent", text="Hi, it's Anna.", timestamp_ms=900), UPSTREAM),
        (
            TranscriptEntryFrame(role="caller", text="Hello? Who's this?", timestamp_ms=100),
            DOWNSTREAM,
        ),
        (UserTurnEndedFrame(text="Oh hi Anna.", speech_end_ms=2500, decided_ms=2600), DOWNSTREAM),
    )
    [request] = edges.of(LLMContextFrame)
    assert request.messages == (
        {"role": "user", "content": "Hello? Who's this?"},
        {"role": "assistant", "content": "Hi, it's Anna."},
        {"role": "user", "content": "Oh hi Anna."},
    )
    # The greeting line is passed on for the session; ours follows it.
    assert [e.text for e in edges.of(TranscriptEntryFrame)] == ["Hello? Who's this?", "Oh hi Anna."]
