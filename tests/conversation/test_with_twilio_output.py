"""The assistant context aggregator behind the real Twilio output (in-memory socket).

Checks the contract between TwilioOutput's playback reports (played audio, mark echoes,
clears with heard milliseconds) and what the aggregator says the caller heard.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from conversation_fakes import Edges

from nixflex_engine.frames import (
    ErrorFrame,
    InterruptionFrame,
    MarkFrame,
    OutputAudioFrame,
    TranscriptEntryFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from nixflex_engine.pipeline import UPSTREAM, Pipeline, PipelineTask
from nixflex_engine.processors.context import AssistantContextAggregator
from nixflex_engine.transports.twilio_media import TwilioMediaTransport
from nixflex_engine.transports.twilio_protocol import StartEvent

SID = "MZ00000000000000000000000000000000"


class MemorySocket:
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> str | bytes | None:
        return await self.inbox.get()

    async def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.inbox.put(None)


class ManualClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now_ms(self) -> float:
        return self.t


async def settle() -> None:
    for _ in range(30):
        await asyncio.sleep(0)


def echo(name: str, seq: int) -> str:
    return json.dumps(
        {"event": "mark", "sequenceNumber": str(seq), "streamSid": SID, "mark": {"name": name}}
    )


class Rig:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.socket = MemorySocket()
        transport = TwilioMediaTransport(
            self.socket, start=StartEvent(stream_sid=SID, call_sid="CA1")
        )
        self.task = PipelineTask(
            Pipeline([transport.input(), transport.output(), AssistantContextAggregator()]),
            clock=self.clock,
        )
        self.edges = Edges(self.task)

    async def __aenter__(self) -> Rig:
        self.runner = asyncio.create_task(self.task.run())
        await settle()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.task.done:
            await self.task.cancel()
        await asyncio.wait_for(self.runner, 5)
        assert self.edges.of(ErrorFrame, UPSTREAM) == []

    async def send(self, *frames: Any) -> None:
        for frame in frames:
            await self.task.queue_frame(frame)

    def lines(self) -> list[TranscriptEntryFrame]:
        return self.edges.of(TranscriptEntryFrame, UPSTREAM)


def chunk(cid: str, text: str, ms: int) -> list[Any]:
    return [
        TTSTextFrame(text=text, chunk_id=cid),
        OutputAudioFrame(audio=b"\x01" * (ms * 8), chunk_id=cid),
        MarkFrame(name=cid),
    ]


async def test_reply_heard_in_full() -> None:
    async with Rig() as rig:
        rig.clock.t = 1000
        await rig.send(
            TTSStartedFrame(),
            *chunk("a", "Hi, this is Anna.", 400),
            *chunk("b", "Do you have a minute?", 600),
            TTSStoppedFrame(),
        )
        rig.clock.t = 1400
        await rig.socket.inbox.put(echo("a", 10))
        await settle()
        assert rig.lines() == []  # half the reply played so far
        rig.clock.t = 2000
        await rig.socket.inbox.put(echo("b", 11))
        await settle()
        assert rig.lines() == [
            TranscriptEntryFrame(
                role="agent", text="Hi, this is Anna. Do you have a minute?", timestamp_ms=1000
            )
        ]


async def test_barge_in_cut_to_the_heard_words() -> None:
    async with Rig() as rig:
        await rig.send(
            TTSStartedFrame(),
            *chunk("a", "Your order has shipped.", 500),
            *chunk("b", "It should arrive on Friday morning.", 1000),
            TTSStoppedFrame(),
        )
        rig.clock.t = 1000  # 500 ms into "b": the first half of its characters
        await rig.send(InterruptionFrame())
        await settle()
        assert {"event": "clear", "streamSid": SID} in rig.socket.sent
        # Twilio echoes the pending marks after a clear.
        await rig.socket.inbox.put(echo("a", 10))
        await rig.socket.inbox.put(echo("b", 11))
        await settle()
        [line] = rig.lines()
        assert line.interrupted and line.timestamp_ms == 0
        # 500/1000 ms of 35 characters: 17.5 characters, "It should arrive" ends at 16.
        assert line.text == "Your order has shipped. It should arrive"
