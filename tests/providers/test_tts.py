"""DeepgramTTS through the real deepgram-sdk 7.16 against the fake /v1/speak over 127.0.0.1."""

from __future__ import annotations

from nixflex_engine.frames import (
    EndCallFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    MarkFrame,
    MetricsFrame,
    OutputAudioFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from nixflex_engine.processors.tts import ChunkSequencer, DeepgramTTS, FlushBudget, _Reply
from nixflex_engine.sandbox import speech
from nixflex_engine.sandbox.fake_anthropic import split_tokens
from nixflex_engine.sandbox.fake_deepgram import SpeakFault

from .conftest import DG_KEY, Harness, Sandbox

REPLY = "Sure, I can help with that today. What day and time would work best for you?"


def tts(sandbox: Sandbox, **kw: object) -> DeepgramTTS:
    args: dict[str, object] = {"api_key": DG_KEY, "base_url": sandbox.url}
    args.update(kw)
    return DeepgramTTS(**args)  # type: ignore[arg-type]


async def reply(h: Harness, text: str, turn: int = 1) -> None:
    await h.send(LLMResponseStartFrame(turn=turn))
    for token in split_tokens(text):
        await h.send(LLMTextFrame(text=token))
    await h.send(LLMResponseEndFrame(turn=turn))


def audio_of(h: Harness, chunk_id: str) -> bytes:
    return b"".join(f.audio for f in h.down(OutputAudioFrame) if f.chunk_id == chunk_id)


def agent_frames(h: Harness) -> list[Frame]:
    kinds = (TTSStartedFrame, TTSTextFrame, OutputAudioFrame, MarkFrame, TTSStoppedFrame)
    kinds_all = (*kinds, EndCallFrame, InterruptionFrame)
    return [f for f, _ in h.frames if isinstance(f, kinds_all)]


def check_chunk_structure(frames: list[Frame]) -> list[str]:
    """Every chunk: its text, then only its audio, then its mark. Returns the chunk ids."""
    ids: list[str] = []
    current: str | None = None
    for f in frames:
        if isinstance(f, TTSTextFrame):
            assert current is None
            current = f.chunk_id
            ids.append(f.chunk_id)
        elif isinstance(f, OutputAudioFrame):
            assert f.chunk_id == current
        elif isinstance(f, MarkFrame):
            assert f.name == current
            current = None
    assert current is None
    return ids


async def test_streams_a_reply_chunk_by_chunk_on_one_warm_socket(sandbox: Sandbox) -> None:
    proc = tts(sandbox, voice="aura-2-thalia-en")
    async with Harness(proc) as h:
        await h.wait_for(lambda: proc.connected)  # opened at StartFrame, before any text
        await reply(h, REPLY, turn=1)
        await h.wait_for(lambda: h.down(TTSStoppedFrame))
        frames = agent_frames(h)
        assert isinstance(frames[0], TTSStartedFrame) and isinstance(frames[-1], TTSStoppedFrame)
        ids = check_chunk_structure(frames)
        texts = [f.text for f in h.down(TTSTextFrame)]
        assert texts == [
            "Sure, I can help with that today.",
            "What day and time would work best for you?",
        ]
        for chunk_id, text in zip(ids, texts, strict=True):
            assert speech.decode_text(audio_of(h, chunk_id)) == text  # audio ↔ chunk mapping
        [ttfb] = [m for m in h.down(MetricsFrame) if m.name == "tts_ttfb_ms"]
        assert ttfb.turn == 1 and ttfb.value > 0

        await reply(h, "Great. Talk soon then, goodbye for now.", turn=2)  # "Great." goes first
        await h.wait_for(lambda: len(h.down(TTSStoppedFrame)) == 2)
        assert proc.connections == 1
        assert not h.down(EndCallFrame)
    [conn] = sandbox.deepgram.speak_log
    assert conn.query["model"] == ["aura-2-thalia-en"]
    assert conn.query["encoding"] == ["mulaw"] and conn.query["sample_rate"] == ["8000"]
    assert conn.texts == [*texts, "Great.", "Talk soon then, goodbye for now."]
    assert conn.controls.count("Flush") == 4


async def test_end_call_tag_split_across_tokens(sandbox: Sandbox) -> None:
    proc = tts(sandbox)
    async with Harness(proc) as h:
        await h.send(LLMResponseStartFrame(turn=3))
        for token in ["Thank you for your time. ", "Goodbye! [END", "_CA", "LL]"]:
            await h.send(LLMTextFrame(text=token))
        await h.send(LLMResponseEndFrame(turn=3))
        await h.wait_for(lambda: h.down(EndCallFrame))
        frames = agent_frames(h)
        assert isinstance(frames[-1], EndCallFrame) and frames[-1].reason == "agent_hangup"
        assert isinstance(frames[-2], TTSStoppedFrame) and isinstance(frames[-3], MarkFrame)
        check_chunk_structure(frames)
        spoken = " ".join(f.text for f in h.down(TTSTextFrame))
        assert spoken == "Thank you for your time. Goodbye!"
    assert all("[" not in t and "END" not in t for t in sandbox.deepgram.speak_log[0].texts)


async def test_speak_frame_with_end_call_reason(sandbox: Sandbox) -> None:
    async with Harness(tts(sandbox)) as h:
        await h.send(
            TTSSpeakFrame(
                text="We seem to have lost you. Goodbye.", end_call_reason="silence_timeout"
            )
        )
        await h.wait_for(lambda: h.down(EndCallFrame))
        frames = agent_frames(h)
        assert [type(f).__name__ for f in frames[-3:]] == [
            "MarkFrame",
            "TTSStoppedFrame",
            "EndCallFrame",
        ]
        assert h.down(EndCallFrame)[0].reason == "silence_timeout"
        heard = [speech.decode_text(audio_of(h, t.chunk_id)) for t in h.down(TTSTextFrame)]
        assert heard == ["We seem to have lost you.", "Goodbye."]


async def test_interruption_clears_and_ignores_late_audio(sandbox: Sandbox) -> None:
    sandbox.deepgram.speak_settings.speed = 1.0  # real time: the reply is still arriving
    long = "This is a long explanation that goes on. " * 3 + "And it keeps on going for a while."
    proc = tts(sandbox)
    async with Harness(proc) as h:
        await reply(h, long)
        await h.wait_for(lambda: len(h.down(OutputAudioFrame)) >= 2)
        await h.send(InterruptionFrame())
        at_interrupt = len(h.frames)
        assert h.kinds()[-1] == "InterruptionFrame"
        sandbox.deepgram.speak_settings.speed = 0
        await reply(h, "Sorry, go ahead please.", turn=2)
        await h.wait_for(lambda: len(h.down(TTSStoppedFrame)) == 1)
        after = [f for f, _ in h.frames[at_interrupt:]]
        audio_after = [f for f in after if isinstance(f, OutputAudioFrame)]
        texts_after = [f for f in after if isinstance(f, TTSTextFrame)]
        assert [t.text for t in texts_after] == ["Sorry, go ahead please."]
        assert {a.chunk_id for a in audio_after} == {texts_after[0].chunk_id}
        heard = speech.decode_text(b"".join(a.audio for a in audio_after))
        assert heard == "Sorry, go ahead please."
        assert proc.connections == 1
    assert "Clear" in sandbox.deepgram.speak_log[0].controls


async def test_interrupted_goodbye_still_ends_the_call(sandbox: Sandbox) -> None:
    sandbox.deepgram.speak_settings.speed = 1.0
    async with Harness(tts(sandbox)) as h:
        await h.send(
            TTSSpeakFrame(
                text="Our time is up for today, so I will let you go now. Goodbye.",
                end_call_reason="max_duration",
            )
        )
        await h.wait_for(lambda: h.down(OutputAudioFrame))
        await h.send(InterruptionFrame())
        await h.wait_for(lambda: h.down(EndCallFrame))
        assert h.kinds()[-2:] == ["InterruptionFrame", "EndCallFrame"]
        assert h.down(EndCallFrame)[0].reason == "max_duration"


async def test_socket_failure_mid_reply_reconnects_and_finishes(sandbox: Sandbox) -> None:
    sandbox.deepgram.speak_faults.append(SpeakFault(drop_after_bytes=4000))
    proc = tts(sandbox, min_sentence_chars=1)
    text = "First sentence here. Second one follows. Third comes last."
    async with Harness(proc) as h:
        await h.wait_for(lambda: proc.connected)
        await reply(h, text)
        await h.wait_for(lambda: h.down(TTSStoppedFrame))
        assert proc.connections == 2
        ids = check_chunk_structure(agent_frames(h))
        assert [f.text for f in h.down(TTSTextFrame)] == [
            "First sentence here.",
            "Second one follows.",
            "Third comes last.",
        ]
        assert [m.name for m in h.down(MarkFrame)] == ids
        # the chunk cut by the drop ends with what was heard; the others are whole
        assert speech.decode_text(audio_of(h, ids[1])) == "Second one follows."
        assert speech.decode_text(audio_of(h, ids[2])) == "Third comes last."
        assert len(audio_of(h, ids[0])) == 4000
        assert not h.up(ErrorFrame)
    first, second = sandbox.deepgram.speak_log
    assert first.dropped and second.texts == ["Second one follows.", "Third comes last."]


async def test_over_the_flush_budget_later_chunks_are_merged(sandbox: Sandbox) -> None:
    proc = tts(sandbox, min_sentence_chars=1, max_flushes_per_minute=3)
    text = "One is here. Two is here. Three is here. Four is here. Five is here."
    async with Harness(proc) as h:
        await h.wait_for(lambda: proc.connected)
        await reply(h, text)
        await h.wait_for(lambda: h.down(TTSStoppedFrame))
        chunks = [f.text for f in h.down(TTSTextFrame)]
        ids = check_chunk_structure(agent_frames(h))
        assert [speech.decode_text(audio_of(h, i)) for i in ids] == chunks
    assert chunks == [
        "One is here.",
        "Two is here.",
        "Three is here.",
        "Four is here. Five is here.",
    ]
    assert sandbox.deepgram.speak_log[0].controls.count("Flush") == 4


def test_flush_budget_is_a_sliding_window() -> None:
    b = FlushBudget(2, window_ms=1000)
    assert b.available(0)
    b.spend(0)
    b.spend(500)
    assert not b.available(999)
    assert b.available(1000)


async def test_tts_down_after_one_retry_is_fatal(sandbox: Sandbox) -> None:
    sandbox.deepgram.speak_faults.extend([SpeakFault(reject_status=503)] * 2)
    async with Harness(tts(sandbox)) as h:
        await h.wait_for(lambda: h.task.done)
        [err] = h.up(ErrorFrame)
        assert err.fatal
    assert h.task.result is not None and h.task.result.reason == "error"
    assert not sandbox.deepgram.speak_faults  # both attempts were made


async def test_bad_credentials_are_fatal(sandbox: Sandbox) -> None:
    async with Harness(tts(sandbox, api_key="nope")) as h:
        await h.wait_for(lambda: h.task.done)
        [err] = h.up(ErrorFrame)
        assert err.fatal and "401" in err.error


# --- pure parts ------------------------------------------------------------------------------


def test_sequencer_ignores_the_socket_until_cleared() -> None:
    s = ChunkSequencer()
    r = _Reply(turn=1)
    a = s.add_chunk("One.", r, 0.0)
    s.mark_sent(a)
    out = s.on_audio(b"x" * 10, 5.0)
    assert [type(f).__name__ for f in out] == [
        "TTSStartedFrame",
        "MetricsFrame",
        "TTSTextFrame",
        "OutputAudioFrame",
    ]
    assert s.interrupt(clearing=True) == []
    r2 = _Reply(turn=2)
    b = s.add_chunk("Two.", r2, 10.0)
    s.mark_sent(b)
    assert s.on_audio(b"late", 11.0) == [] and s.on_flushed(0) == []  # the cleared chunk's
    s.on_cleared()
    out = s.on_audio(b"y" * 10, 12.0)
    assert [f.chunk_id for f in out if isinstance(f, TTSTextFrame)] == [b.chunk_id]
    assert s.end_reply(r2) == []
    out = s.on_flushed(1)
    assert [type(f).__name__ for f in out] == ["MarkFrame", "TTSStoppedFrame"]
    assert s.idle


def test_sequencer_recovers_when_a_cleared_never_comes() -> None:
    s = ChunkSequencer()
    old = s.add_chunk("Old.", _Reply(turn=1), 0.0)
    s.mark_sent(old)  # Flush 0
    s.interrupt(clearing=True)
    r = _Reply(turn=2)
    new = s.add_chunk("New.", r, 1.0)
    s.mark_sent(new)  # Flush 1
    s.end_reply(r)
    assert s.on_flushed(0) == [] and s.clearing  # the cleared chunk's Flushed: ignored
    out = s.on_flushed(1)  # Flush 1 done: the Clear was, too
    assert not s.clearing and [type(f).__name__ for f in out] == []  # no audio: no mark
    assert s.idle


def test_sequencer_skips_a_flush_that_never_came_back() -> None:
    s = ChunkSequencer()
    r = _Reply(turn=None, end_call_reason="agent_hangup")
    units = [s.add_chunk(t, r, 0.0) for t in ("A.", "B.", "C.")]
    for u in units:
        s.mark_sent(u)
    s.on_audio(b"a", 1.0)
    s.end_reply(r)
    out = s.on_flushed(1)  # Flush 0 answered with a Warning only: 1 closes both
    assert [f.name for f in out if isinstance(f, MarkFrame)] == [units[0].chunk_id]
    out = s.on_audio(b"c", 2.0) + s.on_flushed(2)
    assert [type(f).__name__ for f in out][-3:] == ["MarkFrame", "TTSStoppedFrame", "EndCallFrame"]
