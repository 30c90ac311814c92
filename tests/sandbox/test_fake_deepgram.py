"""The fake Deepgram, driven through the real deepgram-sdk 7.16 over 127.0.0.1 sockets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from deepgram.core.api_error import ApiError
from deepgram.speak.v1.types import SpeakV1Text

from nixflex_engine.processors.codec import pcm16_array_to_mulaw
from nixflex_engine.sandbox import speech as sp
from nixflex_engine.sandbox.fake_deepgram import ListenFault, SpeakFault

from .conftest import Sandbox

LISTEN: dict[str, Any] = {
    "model": "nova-3",
    "encoding": "mulaw",
    "sample_rate": 8000,
    "interim_results": True,
    "endpointing": 300,
    "utterance_end_ms": 1000,
    "vad_events": True,
    "smart_format": True,
}


def mulaw(*parts: npt.NDArray[np.int16]) -> bytes:
    return pcm16_array_to_mulaw(np.concatenate(parts))


async def transcribe(
    sandbox: Sandbox, audio: bytes, *, close: str = "CloseStream", **options: Any
) -> list[Any]:
    """Send ``audio`` in 20 ms frames (faster than real time), then ``close``; all messages."""
    got: list[Any] = []
    client = sandbox.deepgram_client()
    async with client.listen.v1.connect(**{**LISTEN, **options}) as stt:

        async def send() -> None:
            for i in range(0, len(audio), 160):
                await stt.send_media(audio[i : i + 160])
            if close == "Finalize":
                await stt.send_finalize()
                await asyncio.sleep(0.1)
                await stt.send_close_stream()
            elif close == "CloseStream":
                await stt.send_close_stream()

        sender = asyncio.create_task(send())
        async for msg in stt:
            got.append(msg)
        await sender
    return got


def results(msgs: list[Any]) -> list[Any]:
    return [m for m in msgs if m is not None and m.type == "Results"]


def text(msg: Any) -> str:
    return str(msg.channel.alternatives[0].transcript)


async def test_one_utterance_gives_speech_started_interims_final_utterance_end_metadata(
    sandbox: Sandbox,
) -> None:
    said = "Hello there, how are you?"
    audio = mulaw(sp.silence(200), sp.synthesize(said), sp.noise(1300))
    msgs = await transcribe(sandbox, audio)
    types = [m.type for m in msgs]
    assert types[0] == "SpeechStarted" and msgs[0].timestamp == pytest.approx(0.2, abs=0.011)
    interims = [text(m) for m in results(msgs) if not m.is_final]
    assert interims == ["Hello", "Hello there,", "Hello there, how", "Hello there, how are", said]
    finals = [m for m in results(msgs) if m.is_final]
    assert len(finals) == 1
    final = finals[0]
    assert text(final) == said and final.speech_final and not final.from_finalize
    speech_end = 0.2 + sp.duration_ms(said) / 1000
    # Deepgram finalizes after `endpointing` ms of silence: the result covers that audio.
    assert final.start + final.duration == pytest.approx(speech_end + 0.3, abs=0.021)
    words = final.channel.alternatives[0].words
    assert [w.word for w in words] == ["hello", "there", "how", "are", "you"]
    assert [w.punctuated_word for w in words] == said.split()
    assert words[0].start == pytest.approx(0.2, abs=0.03)
    assert words[-1].end == pytest.approx(speech_end, abs=0.03)
    assert all(0 < w.confidence <= 1 and w.start < w.end for w in words)
    assert final.metadata.model_info.arch == "nova-3" and final.channel_index == [0, 1]
    ends = [m for m in msgs if m.type == "UtteranceEnd"]
    assert len(ends) == 1 and ends[0].last_word_end == pytest.approx(speech_end, abs=0.03)
    assert types.index("UtteranceEnd") > types.index("Results")
    meta = msgs[-1]
    assert meta.type == "Metadata" and meta.duration == pytest.approx(len(audio) / 8000)
    record = sandbox.deepgram.listen_log[-1]
    assert record.headers["authorization"] == "Token test-key"
    assert record.query["endpointing"] == ["300"] and record.query["smart_format"] == ["true"]
    assert record.closed and record.finals() == [said]


async def test_without_smart_format_words_are_plain_and_no_interims_or_vad(
    sandbox: Sandbox,
) -> None:
    audio = mulaw(sp.synthesize("Yes, I'm Anna!"), sp.silence(400))
    msgs = await transcribe(
        sandbox, audio, smart_format=False, interim_results=False, vad_events=False
    )
    assert [m.type for m in msgs] == ["Results", "Metadata"]
    assert text(msgs[0]) == "yes i'm anna" and msgs[0].is_final


async def test_endpointing_merges_short_pauses_and_splits_long_ones(sandbox: Sandbox) -> None:
    short = mulaw(
        sp.synthesize("one two"), sp.silence(200), sp.synthesize("three"), sp.silence(400)
    )
    finals = [text(m) for m in results(await transcribe(sandbox, short)) if m.is_final]
    assert finals == ["one two three"]
    long = mulaw(sp.synthesize("one two"), sp.silence(500), sp.synthesize("three"), sp.silence(400))
    finals = [text(m) for m in results(await transcribe(sandbox, long)) if m.is_final]
    assert finals == ["one two", "three"]


async def test_finalize_flushes_the_words_so_far(sandbox: Sandbox) -> None:
    audio = mulaw(sp.synthesize("please call me back"))  # no silence after: no endpoint
    msgs = await transcribe(sandbox, audio, close="Finalize")
    finals = [m for m in results(msgs) if m.is_final]
    assert len(finals) == 1
    assert finals[0].from_finalize and text(finals[0]) == "please call me back"
    assert sandbox.deepgram.listen_log[-1].controls == ["Finalize", "CloseStream"]


async def test_noise_and_cough_give_no_words(sandbox: Sandbox) -> None:
    audio = mulaw(sp.noise(300, level_dbfs=-50), sp.cough(250), sp.silence(1200))
    msgs = await transcribe(sandbox, audio)
    assert [m.type for m in msgs] == ["SpeechStarted", "Metadata"]  # a cough is sound, not words


async def test_keepalive_is_silent_and_unknown_messages_get_an_error(sandbox: Sandbox) -> None:
    client = sandbox.deepgram_client()
    async with client.listen.v1.connect(**LISTEN) as stt:
        await stt.send_keep_alive()
        await stt._send({"type": "Bogus"})
        msg = await stt.recv()
        assert msg.type == "Error" and msg.variant == "SchemaError"
        await stt.send_close_stream()
        rest = [m async for m in stt]
    assert [m.type for m in rest] == ["Metadata"]
    assert sandbox.deepgram.listen_log[-1].controls == ["KeepAlive", "Bogus", "CloseStream"]


async def test_bad_key_is_rejected_with_401(sandbox: Sandbox) -> None:
    client = sandbox.deepgram_client(api_key="wrong")
    with pytest.raises(ApiError) as err:
        async with client.listen.v1.connect(**LISTEN):
            pass
    assert err.value.status_code == 401
    with pytest.raises(ApiError) as err:
        async with client.speak.v1.connect(model="aura-2-thalia-en", encoding="mulaw"):
            pass
    assert err.value.status_code == 401


async def test_injected_rejection_is_consumed_per_connection(sandbox: Sandbox) -> None:
    sandbox.deepgram.listen_faults.append(ListenFault(reject_status=503))
    client = sandbox.deepgram_client()
    with pytest.raises(ApiError) as err:
        async with client.listen.v1.connect(**LISTEN):
            pass
    assert err.value.status_code == 503
    msgs = await transcribe(sandbox, mulaw(sp.synthesize("ok"), sp.silence(400)))
    assert [text(m) for m in results(msgs) if m.is_final] == ["ok"]


async def test_socket_dropped_mid_utterance_then_a_reconnect_hears_the_rest(
    sandbox: Sandbox,
) -> None:
    said = "I would like to book a table for two"
    audio = mulaw(sp.synthesize(said), sp.silence(500))
    sandbox.deepgram.listen_faults.append(ListenFault(drop_after_words=3))
    got: list[Any] = []
    with pytest.raises(Exception) as err:  # the SDK surfaces the websockets error as is
        await transcribe(sandbox, audio, close="none")
    assert "ConnectionClosed" in type(err.value).__name__
    assert sandbox.deepgram.listen_log[-1].dropped
    # The reconnect (no fault left) gets the whole utterance again.
    got = await transcribe(sandbox, audio)
    assert [text(m) for m in results(got) if m.is_final] == [said]


async def test_drop_with_a_close_code(sandbox: Sandbox) -> None:
    sandbox.deepgram.listen_faults.append(
        ListenFault(drop_after_audio_ms=400, close_code=1011, close_reason="NET-0000")
    )
    with pytest.raises(Exception) as err:
        await transcribe(sandbox, mulaw(sp.synthesize("hello there friend")), close="none")
    assert "1011" in str(err.value)


async def test_idle_connection_is_closed_with_net0001(sandbox: Sandbox) -> None:
    sandbox.deepgram.listen_settings.idle_timeout_s = 0.2
    client = sandbox.deepgram_client()
    started = time.monotonic()
    with pytest.raises(Exception) as err:
        async with client.listen.v1.connect(**LISTEN) as stt:
            async for _ in stt:
                pass
    assert "1011" in str(err.value) and "net0001" in str(err.value).lower()
    assert time.monotonic() - started < 5


async def speak(
    sandbox: Sandbox, pieces: list[str], **options: Any
) -> tuple[bytes, list[Any], float]:
    client = sandbox.deepgram_client()
    audio = b""
    msgs: list[Any] = []
    first_byte = 0.0
    options = {"model": "aura-2-thalia-en", "encoding": "mulaw", "sample_rate": 8000, **options}
    async with client.speak.v1.connect(**options) as tts:
        for piece in pieces:
            await tts.send_text(SpeakV1Text(text=piece))
        flushed_at = time.monotonic()
        await tts.send_flush()
        async for msg in tts:
            if isinstance(msg, bytes):
                if not audio:
                    first_byte = time.monotonic() - flushed_at
                audio += msg
                continue
            msgs.append(msg)
            if msg is not None and msg.type == "Flushed":
                await tts.send_close()
    return audio, msgs, first_byte


async def test_speak_flush_sends_decodable_audio_then_flushed(sandbox: Sandbox) -> None:
    audio, msgs, first_byte = await speak(sandbox, ["Hello there.", "How can I help?"])
    assert sp.decode_text(audio) == "Hello there. How can I help?"
    assert len(audio) == len("Hello there. How can I help?") * 600
    assert [m.type for m in msgs] == ["Metadata", "Flushed"]
    assert msgs[0].model_name == "aura-2-thalia-en" and msgs[1].sequence_id == 0
    assert 0.025 <= first_byte < 5  # ttfb_ms=30
    record = sandbox.deepgram.speak_log[-1]
    assert record.texts == ["Hello there. How can I help?"]
    assert record.controls == ["Speak", "Speak", "Flush", "Close"]


async def test_speak_chunks_are_paced_at_speed(sandbox: Sandbox) -> None:
    sandbox.deepgram.speak_settings.speed = 10.0  # 100 ms chunks every 10 ms
    started = time.monotonic()
    audio, _, _ = await speak(sandbox, ["x" * 20])  # 1.5 s of audio → 15 chunks
    assert len(audio) == 20 * 600
    assert 0.03 + 0.14 <= time.monotonic() - started < 5


async def test_clear_stops_the_audio_and_answers_cleared(sandbox: Sandbox) -> None:
    sandbox.deepgram.speak_settings.speed = 1.0  # real time: 100 ms of audio each 100 ms
    said = "This is a long sentence that will be interrupted by the caller."
    client = sandbox.deepgram_client()
    audio = b""
    after_clear = b""
    cleared: Any = None
    async with client.speak.v1.connect(
        model="aura-2-thalia-en", encoding="mulaw", sample_rate=8000
    ) as tts:
        await tts.send_text(SpeakV1Text(text=said))
        await tts.send_flush()
        async for msg in tts:
            if isinstance(msg, bytes):
                if cleared is not None:
                    after_clear += msg
                    continue
                audio += msg
                if len(audio) >= 4000:  # 500 ms heard: barge in
                    await tts.send_clear()
                continue
            if msg is not None and msg.type == "Cleared":
                cleared = msg
                await asyncio.sleep(0.25)
                await tts.send_close()
    # Cleared arrives as a SpeakV1Flushed object whose type is "Cleared" (wire-protocols §0).
    assert cleared is not None and type(cleared).__name__ == "SpeakV1Flushed"
    assert cleared.sequence_id == 0
    assert after_clear == b""
    assert 4000 <= len(audio) < len(said) * 600
    heard = sp.heard_words(audio)  # typically "This" ("is" cut): 5 chunks of 100 ms
    assert 1 <= len(heard) < len(said.split()) and heard == said.split()[: len(heard)]


async def test_speak_sequence_ids_count_flushes(sandbox: Sandbox) -> None:
    client = sandbox.deepgram_client()
    seen: list[tuple[str, int]] = []
    audio = b""
    async with client.speak.v1.connect(model="aura-2-thalia-en", encoding="mulaw") as tts:
        for piece in ("One.", "Two."):
            await tts.send_text(SpeakV1Text(text=piece))
            await tts.send_flush()
        async for msg in tts:
            if isinstance(msg, bytes):
                audio += msg
            elif msg is not None and msg.type == "Flushed":
                seen.append((msg.type, msg.sequence_id))
                if len(seen) == 2:
                    await tts.send_close()
    assert seen == [("Flushed", 0), ("Flushed", 1)]
    assert sp.decode_text(audio) == "One.Two."  # back-to-back flushes: no gap between them


async def test_speak_faults_drop_mid_stream_and_warning(sandbox: Sandbox) -> None:
    sandbox.deepgram.speak_faults.append(SpeakFault(drop_after_bytes=1000))
    with pytest.raises(Exception) as err:
        await speak(sandbox, ["A sentence long enough to be cut."])
    assert "ConnectionClosed" in type(err.value).__name__
    assert sandbox.deepgram.speak_log[-1].audio_bytes == 1000
    assert sandbox.deepgram.speak_log[-1].dropped

    sandbox.deepgram.speak_faults.append(SpeakFault(warning_on_flush=0))
    client = sandbox.deepgram_client()
    async with client.speak.v1.connect(model="aura-2-thalia-en", encoding="mulaw") as tts:
        await tts.send_text(SpeakV1Text(text="hi"))
        await tts.send_flush()
        msgs = [await tts.recv(), await tts.recv()]
        await tts.send_close()
    assert [m.type for m in msgs] == ["Metadata", "Warning"]


async def test_linear16_audio_split_at_odd_byte_boundaries(sandbox: Sandbox) -> None:
    pcm = np.concatenate([sp.synthesize("linear sixteen"), sp.silence(400)]).astype("<i2")
    raw = pcm.tobytes()
    client = sandbox.deepgram_client()
    async with client.listen.v1.connect(
        **{**LISTEN, "encoding": "linear16", "interim_results": False}
    ) as stt:
        for i in range(0, len(raw), 333):  # odd sizes: samples split across frames
            await stt.send_media(raw[i : i + 333])
        await stt.send_close_stream()
        msgs = [m async for m in stt]
    assert [text(m) for m in results(msgs) if m.is_final] == ["linear sixteen"]


async def test_unsupported_audio_format_is_refused(sandbox: Sandbox) -> None:
    client = sandbox.deepgram_client()
    with pytest.raises(ApiError) as err:
        async with client.listen.v1.connect(**{**LISTEN, "sample_rate": 44100}):
            pass
    assert err.value.status_code == 400


async def test_default_endpointing_finalizes_20_ms_after_speech(sandbox: Sandbox) -> None:
    options = {k: v for k, v in LISTEN.items() if k != "endpointing"}  # Deepgram's default: 10
    audio = mulaw(sp.synthesize("quick"), sp.silence(300))
    client = sandbox.deepgram_client()
    async with client.listen.v1.connect(**options) as stt:
        await stt.send_media(audio)
        await stt.send_close_stream()
        finals = [m for m in results([m async for m in stt]) if m.is_final]
    assert len(finals) == 1 and finals[0].speech_final
    speech_end = sp.duration_ms("quick") / 1000
    assert finals[0].start + finals[0].duration == pytest.approx(speech_end + 0.02, abs=0.011)


async def test_timed_drops_on_listen_and_speak(sandbox: Sandbox) -> None:
    sandbox.deepgram.listen_faults.append(ListenFault(drop_after_ms=150))
    client = sandbox.deepgram_client()
    started = time.monotonic()
    with pytest.raises(Exception) as err:
        async with client.listen.v1.connect(**LISTEN) as stt:
            async for _ in stt:  # sends nothing: the timer alone drops it
                pass
    assert "ConnectionClosed" in type(err.value).__name__
    assert 0.14 <= time.monotonic() - started < 5
    assert sandbox.deepgram.listen_log[-1].dropped

    sandbox.deepgram.speak_settings.speed = 1.0
    sandbox.deepgram.speak_faults.append(SpeakFault(drop_after_ms=250, close_code=1011))
    with pytest.raises(Exception) as err:
        await speak(sandbox, ["A long enough sentence to still be speaking at 250 ms."])
    assert "1011" in str(err.value)
    record = sandbox.deepgram.speak_log[-1]
    assert record.dropped and 0 < record.audio_bytes < 53 * 600


async def test_invalid_query_parameters_are_refused(sandbox: Sandbox) -> None:
    client = sandbox.deepgram_client()
    for bad in ({"endpointing": "soon"}, {"utterance_end_ms": "-5"}):
        with pytest.raises(ApiError) as err:
            async with client.listen.v1.connect(**{**LISTEN, **bad}):
                pass
        assert err.value.status_code == 400
    async with client.listen.v1.connect(**{**LISTEN, "endpointing": False}) as stt:
        await stt.send_media(mulaw(sp.synthesize("hi there"), sp.silence(300)))
        await stt.send_close_stream()
        finals = [m for m in results([m async for m in stt]) if m.is_final]
    # No endpointing: the words are finalized when the sound stops, never as speech_final.
    assert [(text(m), m.speech_final) for m in finals] == [("hi there", False)]
    assert sandbox.deepgram.listen_log[-1].query["endpointing"] == ["false"]


async def test_key_in_the_websocket_subprotocol_is_accepted(sandbox: Sandbox) -> None:
    import websockets

    url = sandbox.url.replace("http://", "ws://", 1) + "/v1/listen?model=nova-3&encoding=mulaw"
    async with websockets.connect(url, subprotocols=["token", "test-key"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "token"
        await ws.send('{"type":"CloseStream"}')
        assert '"Metadata"' in str(await ws.recv())
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(url, subprotocols=["token", "nope"]):  # type: ignore[list-item]
            pass


@pytest.mark.parametrize("rate", [16000, 48000])
async def test_stt_decimates_higher_rates(sandbox: Sandbox, rate: int) -> None:
    said = "Higher rates work too."
    pcm = np.concatenate([sp.synthesize(said, sample_rate=rate), np.zeros(rate // 2, np.int16)])
    msgs = await transcribe(
        sandbox, pcm.astype("<i2").tobytes(), encoding="linear16", sample_rate=rate
    )
    finals = [m for m in results(msgs) if m.is_final]
    assert [text(m) for m in finals] == [said]
    words = finals[0].channel.alternatives[0].words
    assert words[-1].end == pytest.approx(sp.duration_ms(said) / 1000, abs=0.03)


async def test_tts_at_24_khz_is_heard_by_stt_at_24_khz(sandbox: Sandbox) -> None:
    said = "Rendered at twenty four kilohertz."
    audio, msgs, _ = await speak(sandbox, [said], encoding="linear16", sample_rate=24000)
    assert len(audio) == len(said) * 1800 * 2
    assert [m.type for m in msgs] == ["Metadata", "Flushed"]
    assert sandbox.deepgram.speak_log[-1].query["sample_rate"] == ["24000"]
    line = audio + bytes(24000)  # then 0.5 s of silence
    got = await transcribe(sandbox, line, encoding="linear16", sample_rate=24000)
    assert [text(m) for m in results(got) if m.is_final] == [said]


async def test_final_latency_in_real_time(sandbox: Sandbox) -> None:
    """Audio paced at real time: the final leaves endpointing + final_delay_ms after the speech."""
    sandbox.deepgram.listen_settings.final_delay_ms = 80
    speech_audio = mulaw(sp.synthesize("hi"))
    silence_audio = mulaw(sp.silence(400))
    client = sandbox.deepgram_client()
    async with client.listen.v1.connect(**{**LISTEN, "endpointing": 100}) as stt:
        start = time.monotonic()
        for i in range(0, len(speech_audio), 160):
            await stt.send_media(speech_audio[i : i + 160])
        speech_end = start + len(speech_audio) / 8000  # audio time of the speech end
        sender = asyncio.create_task(pace(stt, silence_audio, speech_end))
        async for msg in stt:
            if msg is not None and msg.type == "Results" and msg.is_final:
                final_at = time.monotonic()
                break
        await sender
        await stt.send_close_stream()
        _ = [m async for m in stt]
    # ≥ 100 ms of silence heard (its frames paced in real time), then 80 ms of processing.
    assert final_at - speech_end >= 0.1 + 0.08 - 0.02
    assert final_at - speech_end < 3.0


async def pace(stt: Any, audio: bytes, t0: float) -> None:
    for n, i in enumerate(range(0, len(audio), 160)):
        wait = t0 + n * 0.02 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        await stt.send_media(audio[i : i + 160])


async def test_configure_replaces_keyterms_and_toggles_formatting(sandbox: Sandbox) -> None:
    from deepgram.listen.v1.types import ListenV1Configure

    client = sandbox.deepgram_client()
    async with client.listen.v1.connect(**{**LISTEN, "keyterm": ["Acme", "Nixflex"]}) as stt:
        await stt.send_configure(
            ListenV1Configure(type="Configure", keyterms=["Zed"], features={"smart_format": False})
        )
        ok = await stt.recv()
        assert ok.type == "ConfigureSuccess" and ok.keyterms == ["Zed"]
        await stt.send_media(mulaw(sp.synthesize("Hello, Zed!"), sp.silence(400)))
        await stt.send_close_stream()
        finals = [text(m) for m in results([m async for m in stt]) if m.is_final]
    assert finals == ["hello zed"]
    record = sandbox.deepgram.listen_log[-1]
    assert record.query["keyterm"] == ["Acme", "Nixflex"] and record.keyterms == ["Zed"]
    async with client.listen.v1.connect(**{**LISTEN, "model": "nova-2"}) as stt:
        await stt.send_configure(ListenV1Configure(type="Configure", keyterms=["Zed"]))
        failed = await stt.recv()
        assert failed.type == "ConfigureFailure"
        assert failed.code == "CONFIGURE_KEYTERMS_NOT_SUPPORTED"
        await stt.send_close_stream()


async def test_rest_speak_drop_mid_stream(sandbox: Sandbox) -> None:
    sandbox.deepgram.speak_faults.append(SpeakFault(drop_after_bytes=1000))
    got = b""
    with pytest.raises(Exception) as err:
        async for chunk in sandbox.deepgram_client().speak.v1.audio.generate(
            text="A sentence long enough to be cut.", encoding="mulaw", sample_rate=8000
        ):
            got += chunk
    assert "peer closed connection" in str(err.value) or "incomplete" in str(err.value)
    assert len(got) == 1000 and sandbox.deepgram.speak_log[-1].dropped
