"""The Twilio transport end to end: the sandbox callee over a real websocket on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from nixflex_engine.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    DTMFFrame,
    EndCallFrame,
    Frame,
    InputAudioFrame,
    InterruptionFrame,
    MarkFrame,
    MarkPlayedFrame,
    OutputAudioFrame,
    PlaybackClearedFrame,
    PlayedAudioFrame,
    TransportStartedFrame,
    TTSStoppedFrame,
)
from nixflex_engine.pipeline import (
    DOWNSTREAM,
    UPSTREAM,
    FrameDirection,
    FrameProcessor,
    Pipeline,
    PipelineTask,
    RunResult,
)
from nixflex_engine.sandbox import speech
from nixflex_engine.sandbox.callee import (
    CalleeResult,
    Drop,
    Dtmf,
    Hangup,
    SandboxCallee,
    Say,
    Send,
    Silence,
    UntilAgentHeard,
    UntilAgentSilent,
    UntilCleared,
)
from nixflex_engine.sandbox.serve import serve_app
from nixflex_engine.transports.twilio_media import (
    StartEvent,
    TwilioMediaTransport,
    signature_authorizer,
    twilio_media_route,
)

SPEED = 10.0
SID = "MZ" + "1" * 32


# --- the engine side -----------------------------------------------------------------------


Handler = Callable[["Agent", Frame], Awaitable[None]]


class Agent(FrameProcessor):
    """A stand-in for the chain between input and output: reacts to frames with a plan."""

    def __init__(self, plan: Mapping[type[Frame], Handler]) -> None:
        super().__init__(name="agent")
        self.plan = dict(plan)
        self.sent_audio: dict[str, bytes] = {}

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(frame, direction)
        handler = self.plan.get(type(frame))
        if handler is not None and direction == DOWNSTREAM:
            await handler(self, frame)

    async def say(self, chunk_id: str, text: str, *, piece_bytes: int = 700) -> None:
        """Send ``text`` as sandbox speech in odd-sized pieces, then a mark named after it."""
        audio = speech.synthesize_mulaw(text)
        self.sent_audio[chunk_id] = audio
        for i in range(0, len(audio), piece_bytes):
            piece = audio[i : i + piece_bytes]
            await self.push_frame(OutputAudioFrame(audio=piece, chunk_id=chunk_id))
        await self.push_frame(MarkFrame(name=chunk_id))


@dataclass
class Call:
    start: StartEvent
    transport: TwilioMediaTransport
    result: RunResult
    seen: list[tuple[Frame, FrameDirection]]
    pending_tasks: int
    agent: Agent

    def frames(self, kind: type[Frame], direction: FrameDirection = DOWNSTREAM) -> list[Any]:
        return [f for f, d in self.seen if isinstance(f, kind) and d == direction]

    def both(self, kind: type[Frame]) -> list[Any]:
        down, up = self.frames(kind, DOWNSTREAM), self.frames(kind, UPSTREAM)
        assert down == up, f"{kind.__name__} not pushed both ways"
        return down

    def order(self, direction: FrameDirection = DOWNSTREAM) -> list[str]:
        return [type(f).__name__ for f, d in self.seen if d == direction]


@dataclass
class Engine:
    url: str
    calls: list[Call] = field(default_factory=list)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    async def call(self, timeout_s: float = 20.0) -> Call:
        await asyncio.wait_for(self.finished.wait(), timeout_s)
        return self.calls[-1]


@asynccontextmanager
async def engine(
    plan: Mapping[type[Frame], Handler] | None = None,
    *,
    authorize: Any = None,
    speed: float = SPEED,
    **route_options: Any,
) -> AsyncIterator[Engine]:
    state = Engine(url="")

    async def on_stream(transport: TwilioMediaTransport, start: StartEvent) -> None:
        agent = Agent(plan or {})
        seen: list[tuple[Frame, FrameDirection]] = []
        task = PipelineTask(
            Pipeline([transport.input(), agent, transport.output()]),
            call_id=start.custom_parameters.get("call_id", ""),
            observers=[lambda f, d: seen.append((f, d))],
        )
        result = await task.run()
        state.calls.append(Call(start, transport, result, seen, task.tasks.pending, agent))
        state.finished.set()

    route = twilio_media_route(
        "/media", on_stream, authorize=authorize, playout_speed=speed, **route_options
    )
    async with serve_app(Starlette(routes=[route])) as base:
        state.url = base.replace("http://", "ws://") + "/media"
        yield state


async def call_with(eng: Engine, script: list[Any], **kw: Any) -> tuple[CalleeResult, Call]:
    kw.setdefault("speed", SPEED)
    kw.setdefault("custom_parameters", {"call_id": "call-e2e"})
    callee = await asyncio.wait_for(SandboxCallee(eng.url, script, **kw).run(), 30)
    call = await eng.call()
    assert call.pending_tasks == 0, "a task was left behind"
    return callee, call


def padded_ms(audio: bytes) -> float:
    return -(-len(audio) // 160) * 160 / 8


# --- tests ---------------------------------------------------------------------------------


async def test_marks_are_echoed_in_order_and_the_caller_hears_the_agent() -> None:
    async def greet(agent: Agent, frame: Frame) -> None:
        await agent.say("c1", "Hello there. ")
        await agent.say("c2", "How are you?")
        await agent.push_frame(TTSStoppedFrame())

    speed = 5.0
    async with engine({TransportStartedFrame: greet}, speed=speed) as eng:
        callee, call = await call_with(
            eng, [UntilAgentSilent(silence_ms=1500), Hangup()], speed=speed
        )

    assert callee.protocol_violations == [] and callee.script_errors == []
    assert [(m.name, m.cleared) for m in callee.marks_echoed] == [("c1", False), ("c2", False)]
    assert callee.heard_text() == "Hello there. How are you?"
    sent = call.agent.sent_audio
    marks = call.both(MarkPlayedFrame)
    assert [(m.name, m.heard_ms, m.cleared) for m in marks] == [
        ("c1", padded_ms(sent["c1"]), False),
        ("c2", padded_ms(sent["c2"]), False),
    ]
    played = call.both(PlayedAudioFrame)
    assert b"".join(p.audio for p in played if p.chunk_id == "c1").startswith(sent["c1"])
    assert all(len(p.audio) % 160 == 0 for p in played)
    assert len(call.both(BotStartedSpeakingFrame)) == 1
    assert len(call.both(BotStoppedSpeakingFrame)) == 1
    order = call.order()
    assert order.index("BotStartedSpeakingFrame") < order.index("MarkPlayedFrame")
    assert order.index("BotStoppedSpeakingFrame") > order.index("MarkPlayedFrame")
    # The caller heard everything the agent sent, in order, padding included.
    assert callee.heard_ms == padded_ms(sent["c1"]) + padded_ms(sent["c2"])
    assert call.result.cancelled and call.result.reason == "caller_hangup"
    assert callee.ended_by == "callee_hangup"


async def test_clear_drops_the_callee_buffer_and_reports_what_was_heard() -> None:
    # Heard figures compare two clocks across a socket, so keep real time (and load) out of
    # it as far as possible: a slow speed, a tolerance of 200 ms of real time.
    speed = 2.0

    async def talk(agent: Agent, frame: Frame) -> None:
        await agent.say("long", "This is a rather long sentence that the caller cuts short.")

    async def barge_in(agent: Agent, frame: Frame) -> None:
        await agent.push_frame(InterruptionFrame())

    plan = {TransportStartedFrame: talk, DTMFFrame: barge_in}
    async with engine(plan, speed=speed) as eng:
        callee, call = await call_with(
            eng, [UntilAgentHeard(ms=800), Dtmf("5"), UntilCleared(), Hangup()], speed=speed
        )

    assert callee.protocol_violations == []
    total_ms = padded_ms(call.agent.sent_audio["long"])
    (clear,) = callee.clears
    assert 800 <= clear.heard_ms < total_ms - 1000
    assert clear.dropped_ms > 1000
    # The caller heard exactly a prefix of the audio, nothing after the clear.
    assert callee.heard_ms == clear.heard_ms
    assert call.agent.sent_audio["long"].startswith(callee.heard_audio)
    (cleared,) = call.both(PlaybackClearedFrame)
    assert set(cleared.heard) == {"long"}
    assert cleared.heard["long"] == pytest.approx(clear.heard_ms, abs=400)
    (mark,) = call.both(MarkPlayedFrame)
    assert mark.name == "long" and mark.cleared
    assert mark.heard_ms == cleared.heard["long"]
    assert [(m.name, m.cleared) for m in callee.marks_echoed] == [("long", True)]
    assert [d.digit for d in call.frames(DTMFFrame)] == ["5"]
    order = call.order()
    assert order.index("PlaybackClearedFrame") < order.index("BotStoppedSpeakingFrame")
    assert order.index("BotStoppedSpeakingFrame") < order.index("MarkPlayedFrame")


async def test_caller_audio_and_dtmf_reach_the_chain_and_stop_ends_with_caller_hangup() -> None:
    async with engine() as eng:
        callee, call = await call_with(eng, [Say("Hi"), Dtmf("12#"), Silence(100), Hangup()])

    (started,) = call.frames(TransportStartedFrame)
    assert started.stream_sid == callee.stream_sid and started.call_sid == callee.call_sid
    assert started.custom_parameters == {"call_id": "call-e2e"}
    audio = call.frames(InputAudioFrame)
    assert len(audio) == callee.frames_sent
    assert [a.timestamp_ms for a in audio] == [20 * i for i in range(len(audio))]
    said = speech.synthesize_mulaw("Hi")
    assert b"".join(a.audio for a in audio)[: len(said)] == said
    assert [d.digit for d in call.frames(DTMFFrame)] == ["1", "2", "#"]
    assert call.result.cancelled and call.result.reason == "caller_hangup"


async def test_abrupt_socket_drop_ends_the_run() -> None:
    async with engine() as eng:
        callee, call = await call_with(eng, [Silence(200), Drop()])

    assert callee.ended_by == "callee_drop"
    assert call.result.cancelled and call.result.reason == "socket_lost"
    assert call.result.error is None


async def test_malformed_binary_unknown_and_out_of_order_messages_are_skipped() -> None:
    stale = json.dumps(
        {
            "event": "media",
            "sequenceNumber": "2",  # long gone by now
            "streamSid": SID,
            "media": {
                "track": "inbound",
                "chunk": "2",
                "timestamp": "20",
                "payload": base64.b64encode(b"\x42" * 160).decode(),
            },
        }
    )
    script = [
        Silence(200),
        Send("{oops"),
        Send(b"\x00\x01\x02"),
        Send(json.dumps({"event": "party", "streamSid": SID})),
        Send(json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "%%%"}})),
        Send(stale),
        Say("still here"),
        Hangup(),
    ]
    async with engine() as eng:
        callee, call = await call_with(eng, script, stream_sid=SID)

    stats = call.transport.protocol.stats
    assert stats.skipped == {
        "malformed_json": 1,
        "binary_frame": 1,
        "unknown_event": 1,
        "bad_base64": 1,
    }
    assert stats.out_of_order == 1
    audio = call.frames(InputAudioFrame)
    assert len(audio) == callee.frames_sent + 1  # the stale frame was delivered too
    assert b"\x42" * 160 in [a.audio for a in audio]
    assert call.result.reason == "caller_hangup"


async def test_end_call_is_held_until_the_goodbye_has_been_heard() -> None:
    async def goodbye(agent: Agent, frame: Frame) -> None:
        await agent.say("bye", "Thanks for your time, goodbye!")
        await agent.push_frame(EndCallFrame(reason="agent_hangup"))

    speed = 5.0
    async with engine({TransportStartedFrame: goodbye}, speed=speed) as eng:
        # An empty script stays on the line until the engine hangs up.
        callee, call = await call_with(eng, [], speed=speed)

    assert callee.ended_by == "engine_closed"
    assert call.result.reason == "agent_hangup" and not call.result.cancelled
    assert callee.heard_ms == padded_ms(call.agent.sent_audio["bye"])
    assert callee.heard_text() == "Thanks for your time, goodbye!"
    order = call.order()
    assert order.index("MarkPlayedFrame") < order.index("EndCallFrame")
    assert callee.protocol_violations == []


async def test_stream_auth_hook_refuses_bad_tokens_with_a_policy_close() -> None:
    async def token_ok(params: Mapping[str, str]) -> bool:
        return params.get("token") == "good"

    auth = signature_authorizer("secret", check_parameters=token_ok)
    public = "wss://agent.example.com"
    async with engine(authorize=auth, public_url=public) as eng:
        refused = await SandboxCallee(
            eng.url,
            [Silence(2000)],
            speed=SPEED,
            auth_token="secret",
            signed_url=public + "/media",
            custom_parameters={"token": "bad"},
        ).run()
        wrong_url = await SandboxCallee(
            eng.url,
            [Silence(2000)],
            speed=SPEED,
            auth_token="secret",  # signed over the local URL, not the public one
            custom_parameters={"token": "good"},
        ).run()
        unsigned = await SandboxCallee(
            eng.url, [Silence(2000)], speed=SPEED, custom_parameters={"token": "good"}
        ).run()
        assert eng.calls == []
        accepted, call = await call_with(
            eng,
            [Silence(100), Hangup()],
            auth_token="secret",
            signed_url=public + "/media",
            custom_parameters={"token": "good"},
        )

    for r in (refused, unsigned, wrong_url):
        assert r.ended_by == "engine_closed" and r.close_code == 1008
    assert accepted.ended_by == "callee_hangup" and call.result.reason == "caller_hangup"


async def _raw_stream(url: str, *messages: str) -> int | None:
    """Connect like Twilio would, send ``messages``, return the engine's close code."""
    async with connect(url, ping_interval=None) as ws:
        for m in messages:
            await ws.send(m)
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        return ws.close_code


async def test_a_stream_without_a_usable_start_is_closed() -> None:
    connected = '{"event":"connected","protocol":"Call","version":"1.0.0"}'
    start = {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": SID,
        "start": {
            "streamSid": SID,
            "accountSid": "AC" + "2" * 32,
            "callSid": "CA" + "3" * 32,
            "tracks": ["inbound"],
            "customParameters": {},
            "mediaFormat": {"encoding": "audio/l16", "sampleRate": 16000, "channels": 1},
        },
    }
    async with engine(start_timeout_s=0.3) as eng:
        assert await _raw_stream(eng.url, connected, json.dumps(start)) == 1003
        assert await _raw_stream(eng.url, connected, "{junk") == 1002  # no start in time
        assert eng.calls == []
