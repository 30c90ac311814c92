"""The sandbox callee: its playback buffer (pure), audio files, and its wire behaviour against
a hand-written server (so a misbehaving engine is caught)."""

from __future__ import annotations

import base64
import json
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from twilio.request_validator import RequestValidator

from nixflex_engine.processors.codec import mulaw_to_pcm16_array, pcm16_array_to_mulaw
from nixflex_engine.sandbox import speech
from nixflex_engine.sandbox.callee import (
    BargeIn,
    CalleeResult,
    Hangup,
    PlaybackBuffer,
    PlayFile,
    SandboxCallee,
    Silence,
    Tone,
    UntilAgentSilent,
    UntilAgentSpeaks,
    load_mulaw,
)
from nixflex_engine.sandbox.serve import serve_app

SPEED = 10.0

# --- the playback buffer -------------------------------------------------------------------


def test_audio_plays_in_real_time_and_marks_echo_when_reached() -> None:
    b = PlaybackBuffer()
    assert b.push_audio(0.0, b"\x01" * 1600) == []  # 200 ms
    assert b.push_mark(0.0, "m") == []
    assert b.next_mark_ms() == 200.0
    assert b.advance(100.0) == [] and b.heard_ms == 100.0
    assert b.advance(250.0) == [("m", 200.0)]
    assert b.heard_ms == 200.0 and b.idle
    assert [(s.start_ms, s.end_ms, len(s.audio)) for s in b.segments()] == [(0.0, 200.0, 1600)]


def test_a_mark_on_an_idle_buffer_is_echoed_at_once() -> None:
    b = PlaybackBuffer()
    assert b.push_mark(42.0, "now") == [("now", 42.0)]


def test_clear_drops_queued_audio_and_returns_pending_marks() -> None:
    b = PlaybackBuffer()
    b.push_audio(0.0, b"\x01" * 1600)
    b.push_mark(0.0, "a")
    b.push_audio(0.0, b"\x02" * 800)
    b.push_mark(0.0, "b")
    played, cleared, dropped = b.clear(50.0)
    assert played == [] and cleared == ["a", "b"] and dropped == 2000
    assert b.heard == bytearray(b"\x01" * 400) and b.idle
    assert b.push_audio(60.0, b"\x03" * 80) == []
    b.advance(100.0)
    segs = b.segments()
    assert [(s.start_ms, s.end_ms) for s in segs] == [(0.0, 50.0), (60.0, 70.0)]
    assert segs[1].audio == b"\x03" * 80


def test_marks_reached_before_a_clear_are_played_not_cleared() -> None:
    b = PlaybackBuffer()
    b.push_audio(0.0, b"\x01" * 80)  # 10 ms
    b.push_mark(0.0, "early")
    b.push_audio(0.0, b"\x01" * 800)
    b.push_mark(0.0, "late")
    played, cleared, _ = b.clear(30.0)
    assert played == [("early", 10.0)] and cleared == ["late"]


def test_agent_voice_is_told_from_silence() -> None:
    b = PlaybackBuffer()
    b.push_audio(0.0, b"\xff" * 800)  # 100 ms of silence
    b.advance(100.0)
    assert b.last_voice_end_ms == -1.0 and b.voice_ms == 0.0
    b.push_audio(100.0, speech.synthesize_mulaw("Hi"))  # 150 ms of speech
    b.push_audio(100.0, b"\xff" * 800)
    b.advance(400.0)
    assert b.last_voice_end_ms == pytest.approx(250.0, abs=10.0)
    assert b.voice_ms == pytest.approx(150.0, abs=20.0)


# --- audio files ---------------------------------------------------------------------------


def test_load_mulaw_reads_pcm_wav_and_raw_mulaw(tmp_path: Path) -> None:
    samples = speech.tone(440.0, 100.0)
    pcm_path = tmp_path / "tone.wav"
    with wave.open(str(pcm_path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(samples.astype("<i2").tobytes())
    assert load_mulaw(pcm_path) == pcm16_array_to_mulaw(samples)
    raw = tmp_path / "hello.ulaw"
    raw.write_bytes(b"\x12" * 320)
    assert load_mulaw(raw) == b"\x12" * 320
    wide = tmp_path / "wide.wav"
    with wave.open(str(wide), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * 100)
    with pytest.raises(ValueError, match="8000 Hz mono"):
        load_mulaw(wide)


def test_load_mulaw_reads_mulaw_wav(tmp_path: Path) -> None:
    body = bytes(range(256)) * 2
    fmt = (7).to_bytes(2, "little") + (1).to_bytes(2, "little") + (8000).to_bytes(4, "little")
    fmt += (8000).to_bytes(4, "little") + (1).to_bytes(2, "little") + (8).to_bytes(2, "little")
    chunks = b"fmt " + len(fmt).to_bytes(4, "little") + fmt
    chunks += b"data" + len(body).to_bytes(4, "little") + body
    path = tmp_path / "mulaw.wav"
    path.write_bytes(b"RIFF" + (4 + len(chunks)).to_bytes(4, "little") + b"WAVE" + chunks)
    assert load_mulaw(path) == body


# --- on the wire ---------------------------------------------------------------------------

Server = Callable[[WebSocket, list[dict[str, Any]]], Awaitable[None]]


async def recv_json(ws: WebSocket, log: list[dict[str, Any]]) -> dict[str, Any]:
    msg: dict[str, Any] = json.loads(await ws.receive_text())
    log.append(msg)
    return msg


async def recv_until(ws: WebSocket, log: list[dict[str, Any]], event: str) -> dict[str, Any]:
    while True:
        msg = await recv_json(ws, log)
        if msg["event"] == event:
            return msg


async def drain(ws: WebSocket, log: list[dict[str, Any]]) -> None:
    try:
        while True:
            await recv_json(ws, log)
    except WebSocketDisconnect:
        pass


@asynccontextmanager
async def raw_server(
    behaviour: Server,
) -> AsyncIterator[tuple[str, list[dict[str, Any]], dict[str, str]]]:
    received: list[dict[str, Any]] = []
    headers: dict[str, str] = {}

    async def endpoint(ws: WebSocket) -> None:
        headers.update(ws.headers)
        await ws.accept()
        await behaviour(ws, received)

    app = Starlette(routes=[WebSocketRoute("/media", endpoint)])
    async with serve_app(app) as base:
        yield base.replace("http://", "ws://") + "/media", received, headers


def media(sid: str, audio: bytes) -> str:
    return json.dumps(
        {"event": "media", "streamSid": sid, "media": {"payload": base64.b64encode(audio).decode()}}
    )


async def test_callee_speaks_twilio_and_records_an_engines_protocol_violations() -> None:
    async def misbehave(ws: WebSocket, log: list[dict[str, Any]]) -> None:
        await recv_json(ws, log)
        start = await recv_json(ws, log)
        sid = start["streamSid"]
        await ws.send_text(media(sid, b"\x01" * 160))
        await ws.send_text(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "m1"}}))
        await ws.send_bytes(b"\x00\x01")
        await ws.send_text("{nope")
        await ws.send_text(json.dumps({"event": "bogus", "streamSid": sid}))
        await ws.send_text(media("MZ" + "0" * 32, b"\x01" * 160))
        await ws.send_text(json.dumps({"event": "media", "streamSid": sid, "media": {}}))
        await drain(ws, log)

    script = [UntilAgentSpeaks(), Silence(300), Hangup()]
    async with raw_server(misbehave) as (url, received, _):
        result = await SandboxCallee(
            url, script, speed=SPEED, custom_parameters={"call_id": "c-1"}
        ).run()

    assert len(result.protocol_violations) == 5, result.protocol_violations
    joined = " | ".join(result.protocol_violations)
    for what in ("binary frame", "malformed JSON", "unknown event", "streamSid", "payload"):
        assert what in joined
    assert [(m.name, m.cleared) for m in result.marks_echoed] == [("m1", False)]
    assert result.heard_audio == b"\x01" * 160
    # What the callee sent is Twilio's shape, numbered without a gap.
    connected, start, *rest = received
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert start["sequenceNumber"] == "1" and start["streamSid"] == result.stream_sid
    assert start["start"]["customParameters"] == {"call_id": "c-1"}
    assert start["start"]["mediaFormat"] == {
        "encoding": "audio/x-mulaw",
        "sampleRate": 8000,
        "channels": 1,
    }
    assert start["start"]["callSid"].startswith("CA") and len(start["start"]["callSid"]) == 34
    assert [int(m["sequenceNumber"]) for m in rest] == list(range(2, 2 + len(rest)))
    assert all(m["streamSid"] == result.stream_sid for m in rest)
    frames = [m for m in rest if m["event"] == "media"]
    n = len(frames)
    assert n == result.frames_sent and n >= 15
    assert [m["media"]["chunk"] for m in frames] == [str(i) for i in range(1, n + 1)]
    assert [m["media"]["timestamp"] for m in frames] == [str(20 * i) for i in range(n)]
    assert {base64.b64decode(m["media"]["payload"]) for m in frames} == {b"\xff" * 160}
    echo = next(m for m in rest if m["event"] == "mark")
    assert echo["mark"] == {"name": "m1"}
    assert rest[-1]["event"] == "stop"
    assert rest[-1]["stop"] == {"accountSid": result.account_sid, "callSid": result.call_sid}
    assert result.ended_by == "callee_hangup"


async def test_script_waits_for_the_agent_then_plays_tones_and_files(tmp_path: Path) -> None:
    clip = tmp_path / "clip.ulaw"
    clip.write_bytes(b"\x33" * 400)
    agent_audio = speech.synthesize_mulaw("Hello")

    async def greet_late(ws: WebSocket, log: list[dict[str, Any]]) -> None:
        await recv_json(ws, log)
        sid = (await recv_json(ws, log))["streamSid"]
        for _ in range(10):  # 200 ms of line time before the agent speaks
            await recv_until(ws, log, "media")
        await ws.send_text(media(sid, agent_audio))
        await drain(ws, log)

    script = [UntilAgentSpeaks(), Tone(1000.0, 100.0), PlayFile(clip), Hangup()]
    async with raw_server(greet_late) as (url, received, _):
        result = await SandboxCallee(url, script, speed=SPEED).run()

    assert result.script_errors == [] and result.protocol_violations == []
    payloads = [base64.b64decode(m["media"]["payload"]) for m in received if m["event"] == "media"]
    sent = b"".join(payloads)
    tone = pcm16_array_to_mulaw(speech.tone(1000.0, 100.0))
    at = sent.index(tone)
    assert at >= 10 * 160  # only after the agent spoke
    assert sent[at + len(tone) : at + len(tone) + 400] == b"\x33" * 400
    assert sent[at + len(tone) + 400 : at + len(tone) + 480] == b"\xff" * 80  # padded frame
    heard_pcm = mulaw_to_pcm16_array(result.heard_audio)
    assert np.abs(heard_pcm).max() > 1000


async def test_a_wait_that_times_out_is_reported_and_hangs_up() -> None:
    async def silent(ws: WebSocket, log: list[dict[str, Any]]) -> None:
        await drain(ws, log)

    async with raw_server(silent) as (url, received, _):
        result = await SandboxCallee(url, [UntilAgentSilent(timeout_ms=500)], speed=SPEED).run()
    assert len(result.script_errors) == 1 and "UntilAgentSilent" in result.script_errors[0]
    assert result.ended_by == "callee_hangup" and received[-1]["event"] == "stop"
    (wait,) = result.steps
    assert 500 <= wait.ended_ms - wait.started_ms < 5000 and wait.frames == result.frames_sent


async def test_barge_in_waits_for_agent_audio_and_the_upgrade_is_signed() -> None:
    agent_audio = speech.synthesize_mulaw("Let me tell you about our offer")

    async def talk(ws: WebSocket, log: list[dict[str, Any]]) -> None:
        await recv_json(ws, log)
        sid = (await recv_json(ws, log))["streamSid"]
        await ws.send_text(media(sid, agent_audio))
        await drain(ws, log)

    public = "wss://agent.example.com/media"
    async with raw_server(talk) as (url, received, headers):
        result = await SandboxCallee(
            url,
            [BargeIn("No thanks", after_ms=500), Hangup()],
            speed=SPEED,
            auth_token="tok",
            signed_url=public,
        ).run()

    assert RequestValidator("tok").validate(public, {}, headers["x-twilio-signature"])
    said = speech.synthesize_mulaw("No thanks")
    payloads = {
        int(m["media"]["chunk"]): base64.b64decode(m["media"]["payload"])
        for m in received
        if m["event"] == "media"
    }
    wait, say, _hangup = result.steps
    assert wait.step.startswith("UntilAgentHeard(ms=500") and say.step.startswith("Say(")
    assert wait.heard_ms >= 500  # the caller had heard 500 ms of the agent...
    assert payloads[say.first_frame] == said[:160]  # ...when it started to talk over it
    assert all(payloads[c] == b"\xff" * 160 for c in range(1, say.first_frame))
    assert say.frames == -(-len(said) // 160)


async def test_an_upgrade_refused_before_accept_is_reported() -> None:
    async def refuse(ws: WebSocket) -> None:
        await ws.close(code=1008)  # before accept: Starlette answers the upgrade with 403

    app = Starlette(routes=[WebSocketRoute("/media", refuse)])
    async with serve_app(app) as base:
        result = await SandboxCallee(
            base.replace("http://", "ws://") + "/media", [Hangup()], speed=SPEED
        ).run()
    assert result.ended_by == "rejected" and result.handshake_status == 403
    assert result.frames_sent == 0 and result.steps == []


def test_heard_audio_on_the_line_clock_and_its_utterances() -> None:
    b = PlaybackBuffer()
    hello, bye = speech.synthesize_mulaw("Hello"), speech.synthesize_mulaw("Bye")
    b.push_audio(100.0, hello)  # 375 ms
    b.push_audio(1000.0, bye)  # after a pause
    b.advance(2000.0)
    result = CalleeResult("MZ", "CA", "AC", bytes(b.heard), b.segments())
    line = result.heard_on_line()
    assert len(line) == round((1000.0 + len(bye) / 8) * 8)
    assert line[:800] == b"\xff" * 800 and line[800 : 800 + len(hello)] == hello
    assert line[8000:] == bye
    (s1, e1, t1), (s2, e2, t2) = result.heard_utterances()
    assert (t1, t2) == ("Hello", "Bye")
    assert s1 == pytest.approx(100.0, abs=20) and s2 == pytest.approx(1000.0, abs=20)
    assert e1 == pytest.approx(475.0, abs=40) and e2 == pytest.approx(1225.0, abs=40)
    assert result.heard_text() == "Hello Bye"
