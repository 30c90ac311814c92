"""DeepgramSTT through the real deepgram-sdk 7.16 against the fake /v1/listen over 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import random

import numpy as np

from nixflex_engine.frames import (
    ErrorFrame,
    InputAudioFrame,
    InterimTranscriptFrame,
    TranscriptFrame,
    TTSSpeakFrame,
    UserStoppedSpeakingFrame,
)
from nixflex_engine.processors.codec import pcm16_array_to_mulaw
from nixflex_engine.processors.stt import (
    AudioBacklog,
    DeepgramSTT,
    StreamPositions,
    STTSpeechStarted,
    STTSpeechStartedFrame,
    STTTranscript,
    _deepgram_event,
    deepgram_environment,
    reconnect_delay_ms,
)
from nixflex_engine.sandbox import speech
from nixflex_engine.sandbox.fake_deepgram import ListenFault

from .conftest import DG_KEY, Harness, ManualClock, Sandbox


def stt(sandbox: Sandbox, **kw: object) -> DeepgramSTT:
    args: dict[str, object] = {
        "api_key": DG_KEY,
        "base_url": sandbox.url,
        "endpointing_ms": 100,
        "rng": random.Random(3),
    }
    args.update(kw)
    return DeepgramSTT(**args)  # type: ignore[arg-type]


def utterance(text: str, silence_ms: float = 600) -> bytes:
    pcm = np.concatenate([speech.silence(100), speech.synthesize(text), speech.silence(silence_ms)])
    return pcm16_array_to_mulaw(pcm)


async def stream(h: Harness, audio: bytes, *, every: int = 5) -> None:
    """Send ``audio`` as 20 ms frames, faster than real time (the fake keys on audio time)."""
    for n, i in enumerate(range(0, len(audio), 160)):
        await h.send(InputAudioFrame(audio=audio[i : i + 160], timestamp_ms=n * 20))
        if n % every == 0:
            await asyncio.sleep(0.001)


def finals(h: Harness) -> str:
    return " ".join(f.text for f in h.down(TranscriptFrame) if f.text)


def utterance_ends(h: Harness) -> list[TranscriptFrame]:
    """End-of-utterance markers: empty final transcripts flagged speech_final."""
    return [f for f in h.down(TranscriptFrame) if not f.text and f.speech_final]


async def test_transcribes_with_interims_finals_vad_events_and_utterance_end(
    sandbox: Sandbox,
) -> None:
    proc = stt(sandbox, keyterms=["Acme", "customer service"], model="nova-3")
    async with Harness(proc) as h:
        await stream(h, utterance("hello there how are you", silence_ms=1500))
        await h.wait_for(lambda: utterance_ends(h))
        assert finals(h) == "hello there how are you"
        final, end = h.down(TranscriptFrame)
        assert final.speech_final and final.confidence > 0.5
        assert final.start_ms < final.end_ms <= final.received_ms
        interims = [f.text for f in h.down(InterimTranscriptFrame)]
        assert interims and interims[-1] == "hello there how are you"
        assert all(b.startswith(a) for a, b in itertools.pairwise(interims))
        kinds = h.kinds()
        assert kinds.index("STTSpeechStartedFrame") < kinds.index("InterimTranscriptFrame")
        assert end == utterance_ends(h)[0] and end.end_ms <= end.received_ms
        assert len(h.down(STTSpeechStartedFrame)) == 1
        # every caller frame travels on down the chain
        sent = utterance("hello there how are you", 1500)
        assert len(h.down(InputAudioFrame)) == -(-len(sent) // 160)
    [conn] = sandbox.deepgram.listen_log
    q = conn.query
    assert q["model"] == ["nova-3"] and q["encoding"] == ["mulaw"] and q["sample_rate"] == ["8000"]
    assert q["interim_results"] == ["true"] and q["vad_events"] == ["true"]
    assert q["smart_format"] == ["true"] and q["endpointing"] == ["100"]
    assert q["utterance_end_ms"] == ["1000"]
    assert q["keyterm"] == ["Acme", "customer service"]
    assert conn.headers["authorization"] == f"Token {DG_KEY}"


async def test_transcript_times_are_on_the_run_clock_like_the_vad(sandbox: Sandbox) -> None:
    clock = ManualClock()
    text = "see you at noon"
    audio = utterance(text, silence_ms=500)  # 100 ms of silence, the words, 500 ms of silence
    async with Harness(stt(sandbox), clock) as h:
        for n, i in enumerate(range(0, len(audio), 160)):
            clock.t = 5_000.0 + (n + 1) * 20 + 7  # each frame arrives 7 ms after it ends
            await h.send(InputAudioFrame(audio=audio[i : i + 160], timestamp_ms=n * 20))
            await asyncio.sleep(0)
        await h.wait_for(lambda: finals(h) == text)
    [final] = [f for f in h.down(TranscriptFrame) if f.text]
    offset = 5_000.0 + 7  # run = stream + offset, as the VAD's StreamClock maps it
    assert abs(final.start_ms - (offset + 100)) <= 40
    assert abs(final.end_ms - (offset + 100 + speech.duration_ms(text))) <= 40
    assert final.received_ms == clock.t


async def test_finalize_when_the_local_vad_hears_the_caller_stop(sandbox: Sandbox) -> None:
    proc = stt(sandbox, endpointing_ms=5000)  # the server alone would wait 5 s
    async with Harness(proc) as h:
        await stream(h, utterance("book me for tuesday", silence_ms=200))
        await h.wait_for(lambda: h.down(InterimTranscriptFrame))
        await h.wait_for(lambda: h.down(InterimTranscriptFrame)[-1].text.endswith("tuesday"))
        assert not h.down(TranscriptFrame)
        await h.send(UserStoppedSpeakingFrame(start_ms=0.0, stop_ms=1.0))
        await h.wait_for(lambda: h.down(TranscriptFrame), timeout_s=3)
        [final] = h.down(TranscriptFrame)
        assert final.text == "book me for tuesday" and final.speech_final
    assert "Finalize" in sandbox.deepgram.listen_log[0].controls


async def test_dropped_socket_mid_utterance_reconnects_and_loses_no_word(
    sandbox: Sandbox,
) -> None:
    sandbox.deepgram.listen_faults.append(ListenFault(drop_after_words=2))
    proc = stt(sandbox)
    first = "hello there how are you"
    second = "fine thanks"
    async with Harness(proc) as h:
        await stream(h, utterance(first) + utterance(second))
        await h.wait_for(lambda: finals(h) == f"{first} {second}", timeout_s=15)
        assert proc.connections == 2
        assert not h.up(ErrorFrame)
    dropped, resumed = sandbox.deepgram.listen_log
    assert dropped.dropped and not resumed.dropped
    # only the audio since the last final was resent: nothing was final before the drop
    assert resumed.audio_bytes == len(utterance(first) + utterance(second))
    assert resumed.finals() == [first, second]


async def test_reconnect_resends_only_audio_after_the_last_final(sandbox: Sandbox) -> None:
    sandbox.deepgram.listen_faults.append(ListenFault(drop_after_words=4))
    proc = stt(sandbox)
    first, second = "good morning", "see you tomorrow"
    async with Harness(proc) as h:
        await stream(h, utterance(first))
        await h.wait_for(lambda: finals(h) == first)
        await stream(h, utterance(second))
        await h.wait_for(lambda: finals(h) == f"{first} {second}", timeout_s=15)
    dropped, resumed = sandbox.deepgram.listen_log
    assert dropped.dropped
    assert resumed.finals() == [second]
    assert resumed.audio_bytes < len(utterance(first) + utterance(second))


async def test_keepalive_while_no_audio_flows(sandbox: Sandbox) -> None:
    proc = stt(sandbox, keepalive_interval_ms=100)
    async with Harness(proc) as h:
        await h.wait_for(lambda: proc.connected)
        await h.wait_for(
            lambda: sandbox.deepgram.listen_log[0].controls.count("KeepAlive") >= 2, timeout_s=5
        )
        await stream(h, utterance("still here", silence_ms=300))
        await h.wait_for(lambda: finals(h) == "still here")


async def test_bad_credentials_are_fatal(sandbox: Sandbox) -> None:
    async with Harness(stt(sandbox, api_key="wrong")) as h:
        await h.wait_for(lambda: h.up(ErrorFrame))
        [err] = h.up(ErrorFrame)
        assert err.fatal and "401" in err.error
        await h.wait_for(lambda: h.task.done)
    assert h.task.result is not None and h.task.result.reason == "error"


async def test_provider_down_apologises_and_ends_with_error(sandbox: Sandbox) -> None:
    for _ in range(100):
        sandbox.deepgram.listen_faults.append(ListenFault(reject_status=503))
    proc = stt(sandbox, reconnect_deadline_ms=300, reconnect_base_ms=20, reconnect_max_ms=50)
    async with Harness(proc) as h:
        await h.wait_for(lambda: h.down(TTSSpeakFrame))
        [apology] = h.down(TTSSpeakFrame)
        assert apology.end_call_reason == "error"
        [err] = h.up(ErrorFrame)
        assert not err.fatal
    assert len(sandbox.deepgram.listen_faults) < 99  # it did retry


# --- pure parts ------------------------------------------------------------------------------


def test_backlog_bounds_releases_and_reads() -> None:
    b = AudioBacklog(max_bytes=1000)
    for i in range(8):
        b.append(bytes([i]) * 160)
    assert (b.start, b.end) == (280, 1280)  # the oldest 280 bytes dropped
    pos, data = b.read(0, 100)
    assert pos == 280 and data == bytes([1]) * 40 + bytes([2]) * 60
    b.release_before(700)
    assert b.start == 700
    pos, data = b.read(700, 10_000)
    assert pos == 700 and len(data) == 580 and data[:20] == bytes([4]) * 20
    b.release_before(5_000)
    assert b.start == b.end == 1280 and b.read(0, 10) == (1280, b"")


def test_byte_positions_map_onto_the_stream_timeline() -> None:
    p = StreamPositions()
    for n in range(50):  # 1 s of contiguous 20 ms frames from stream time 1000
        p.append(1000 + 20 * n, 160)
    p.append(3000, 160)  # a 1 s gap in the stream
    p.append(3020, 160)
    p.append(3020, 160)  # a repeated timestamp: taken as contiguous
    assert p.stream_ms(0) == 1000 and p.stream_ms(4000) == 1500 and p.stream_ms(8000) == 3000
    assert p.stream_ms(8000 + 80) == 3010 and p.stream_ms(8000 + 480) == 3060
    untimed = StreamPositions()
    for _ in range(3):
        untimed.append(0, 160)  # no timestamps at all: bytes are the timeline
    assert untimed.stream_ms(400) == 50
    assert reconnect_delay_ms(1, base_ms=100, max_ms=1000, jitter=1.0) == 0.0
    assert reconnect_delay_ms(2, base_ms=100, max_ms=1000, jitter=1.0) == 100.0
    assert reconnect_delay_ms(10, base_ms=100, max_ms=1000, jitter=0.0) == 500.0


def test_sdk_messages_translate_and_unknown_ones_are_ignored() -> None:
    from deepgram.listen.v1.types import ListenV1Results, ListenV1SpeechStarted

    assert _deepgram_event(None) is None
    started = ListenV1SpeechStarted(type="SpeechStarted", channel=[0], timestamp=1.25)
    assert _deepgram_event(started) == STTSpeechStarted(1.25)
    results = ListenV1Results.model_validate(
        {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": 1.0,
            "start": 2.0,
            "is_final": True,
            "speech_final": False,
            "from_finalize": True,
            "channel": {
                "alternatives": [
                    {
                        "transcript": "Hi there.",
                        "confidence": 0.9,
                        "words": [
                            {"word": "hi", "start": 2.1, "end": 2.3, "confidence": 0.9},
                            {"word": "there", "start": 2.4, "end": 2.8, "confidence": 0.9},
                        ],
                    }
                ]
            },
            "metadata": {
                "request_id": "r",
                "model_info": {"name": "n", "version": "v", "arch": "a"},
                "model_uuid": "u",
            },
        }
    )
    assert _deepgram_event(results) == STTTranscript(
        text="Hi there.",
        start_s=2.1,
        end_s=2.8,
        is_final=True,
        speech_final=False,
        from_finalize=True,
        confidence=0.9,
        window_end_s=3.0,
    )


def test_environment_from_a_base_url() -> None:
    env = deepgram_environment("https://dg.example:8443/")
    assert (env.base, env.production) == ("https://dg.example:8443", "wss://dg.example:8443")
    assert env.agent == "wss://dg.example:8443" and env.agent_rest == "https://dg.example:8443"
    local = deepgram_environment("http://127.0.0.1:9")
    assert local.production == "ws://127.0.0.1:9"
    assert deepgram_environment(None).production == "wss://api.deepgram.com"
