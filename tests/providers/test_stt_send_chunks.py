"""The STT sends live audio ``send_chunk_ms`` at a time, and everything before a Finalize."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from nixflex_engine.frames import InputAudioFrame, UserStoppedSpeakingFrame
from nixflex_engine.processors.stt import SpeechToText, STTConnection, STTEvent

from .conftest import Harness


class _Recorder:
    """An STT connection that records what it is sent and never answers."""

    def __init__(self) -> None:
        self.sent: list[bytes | str] = []
        self._closed = asyncio.Event()

    async def send_audio(self, audio: bytes) -> None:
        self.sent.append(audio)

    async def keep_alive(self) -> None:
        self.sent.append("KeepAlive")

    async def finalize(self) -> None:
        self.sent.append("Finalize")

    async def close_stream(self) -> None:
        self.sent.append("CloseStream")
        self._closed.set()

    async def events(self) -> AsyncIterator[STTEvent]:
        await self._closed.wait()
        return
        yield  # an async generator with no event


class _STT(SpeechToText):
    def __init__(self, conn: _Recorder, *, send_chunk_ms: float) -> None:
        super().__init__(send_chunk_ms=send_chunk_ms)
        self.conn = conn

    @contextlib.asynccontextmanager
    async def _open(self) -> AsyncIterator[STTConnection]:
        yield self.conn

    def connect(self) -> contextlib.AbstractAsyncContextManager[STTConnection]:
        return self._open()


async def test_audio_goes_out_in_send_chunks_and_all_of_it_before_finalize() -> None:
    conn = _Recorder()
    proc = _STT(conn, send_chunk_ms=60)
    async with Harness(proc) as h:
        await h.wait_for(lambda: proc.connected)
        for n in range(7):  # 140 ms: two 60 ms chunks, 20 ms left over
            await h.send(InputAudioFrame(audio=bytes([n]) * 160, timestamp_ms=n * 20))
        frames = [bytes([i]) * 160 for i in range(7)]
        assert conn.sent == [b"".join(frames[0:3]), b"".join(frames[3:6])]
        await h.send(UserStoppedSpeakingFrame(start_ms=0.0, stop_ms=140.0))
        assert conn.sent[2:] == [frames[6], "Finalize"]  # the rest, then Finalize


async def test_20_ms_chunks_send_every_frame() -> None:
    conn = _Recorder()
    proc = _STT(conn, send_chunk_ms=20)
    async with Harness(proc) as h:
        await h.wait_for(lambda: proc.connected)
        for n in range(3):
            await h.send(InputAudioFrame(audio=bytes([n]) * 160, timestamp_ms=n * 20))
        assert conn.sent == [bytes([n]) * 160 for n in range(3)]
