"""Text to speech: LLM replies and fixed phrases → chunked, streamed agent audio.
:class:`DeepgramTTS` runs it on ``deepgram-sdk`` 7.16 ``speak.v1`` (Aura, mu-law 8 kHz).

Consumes:
  ``StartFrame`` — open the one warm socket of the call (reused by every reply).
  ``LLMResponseStartFrame`` / ``LLMTextFrame`` / ``LLMResponseEndFrame`` — a reply: its text is
  cut into chunks as it streams (:class:`~nixflex_engine.processors.text.SentenceChunker`;
  ``[END_CALL]`` is removed, never spoken) and each chunk is sent at once.
  ``TTSSpeakFrame(text, end_call_reason)`` — say exactly this (opener, re-prompt, goodbye).
  ``InterruptionFrame`` — ``Clear`` on the socket, drop every pending chunk, ignore the audio
  still arriving for them, then pass the frame on.
  ``EndFrame`` / ``CancelFrame`` — close the socket. Other frames pass through.
Emits (downstream), per reply: ``TTSStartedFrame``; per chunk ``TTSTextFrame(text, chunk_id)``,
its ``OutputAudioFrame(audio, chunk_id)``s (as the provider sends them; the output transport
re-frames) and ``MarkFrame(name=chunk_id)``; ``TTSStoppedFrame``; ``MetricsFrame("tts_ttfb_ms",
turn)`` (first chunk of the reply ready → its first audio byte). After the last mark of a reply
whose text held ``[END_CALL]`` → ``EndCallFrame("agent_hangup")``; of a ``TTSSpeakFrame`` with
``end_call_reason`` → ``EndCallFrame(end_call_reason)``.

Flush per chunk
---------------
Each chunk is sent as ``Speak`` followed by its own ``Flush``. Deepgram synthesises only what a
Flush releases, so flushing once per reply would hold the first audio until the LLM finished;
flushing per chunk gets the first clause speaking while the LLM still streams. It also gives
the chunk ↔ audio mapping on one socket: audio comes back in order, and each ``Flushed``
(``sequence_id`` = the n-th Flush on that socket) closes one chunk. Deepgram allows 20
Flushes a minute (then warns), so later chunks are sentence-sized, and once
``max_flushes_per_minute`` Flushes were sent in the last 60 s (:class:`FlushBudget`), a
reply's chunks after its first are merged and flushed together at the next chunk the budget
allows, or at the end of the reply (the first chunk of a reply always goes at once).

Audio that queued up on the socket while the event loop was busy is handed on in slices of
``reader_slice_ms`` (:class:`~nixflex_engine.pipeline.TimeSlice`): one call's backlog never
holds the loop while other calls wait.

Barge-in
--------
``Clear`` makes the server drop its text and audio and answer ``Cleared`` (which the SDK
parses as a ``SpeakV1Flushed`` object with ``.type == "Cleared"``: dispatch on ``.type``). Until
it arrives, audio and ``Flushed`` on the socket belong to the cleared chunks and are ignored.
An interrupted reply's ``[END_CALL]`` is dropped (the caller wanted to say something); an
interrupted ``TTSSpeakFrame`` with ``end_call_reason`` (a silence or max-duration goodbye, an
apology) still ends the call: its ``EndCallFrame`` follows the ``InterruptionFrame``.

Failures
--------
A socket that drops, or fails to open, is reopened once at once; chunks not yet answered are
sent again (a chunk whose audio had started is closed with its mark: the caller heard part of
it; repeating it would sound worse). If the new socket fails too before any chunk completes,
or the credentials are refused, the agent cannot speak, so no apology is possible:
``ErrorFrame(fatal=True)`` ends the call with ``ended_reason: error``. A socket that closes while
idle is reopened without counting as a failure.

A new provider is one subclass of :class:`TextToSpeech` implementing :meth:`TextToSpeech.connect`
(a context manager yielding a :class:`TTSConnection` that speaks in :data:`TTSEvent`).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.speak.v1.types import SpeakV1Text

from nixflex_engine.config import Settings
from nixflex_engine.frames import (
    CancelFrame,
    EndCallFrame,
    EndFrame,
    EndReason,
    Frame,
    InterruptionFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    MarkFrame,
    MetricsFrame,
    OutputAudioFrame,
    StartFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from nixflex_engine.log import get_logger, log_event
from nixflex_engine.pipeline import FrameDirection, FrameProcessor, TimeSlice
from nixflex_engine.processors.stt import deepgram_client
from nixflex_engine.processors.text import SentenceChunker

__all__ = [
    "ChunkSequencer",
    "DeepgramTTS",
    "FlushBudget",
    "TTSAudio",
    "TTSAuthError",
    "TTSCleared",
    "TTSConnection",
    "TTSEvent",
    "TTSFlushed",
    "TTSWarning",
    "TextToSpeech",
]

_log = get_logger(__name__)


# --- provider-neutral events and connection --------------------------------------------------


@dataclass(frozen=True, slots=True)
class TTSAudio:
    """Audio bytes (mu-law 8 kHz)."""

    audio: bytes


@dataclass(frozen=True, slots=True)
class TTSFlushed:
    """All audio of Flush number ``sequence_id`` (0-based, per connection) has been sent."""

    sequence_id: int


@dataclass(frozen=True, slots=True)
class TTSCleared:
    """The server dropped its pending text and audio after a Clear."""

    sequence_id: int


@dataclass(frozen=True, slots=True)
class TTSWarning:
    """A non-fatal provider warning (e.g. too many Flushes)."""

    code: str
    description: str


TTSEvent = TTSAudio | TTSFlushed | TTSCleared | TTSWarning


class TTSAuthError(Exception):
    """The provider refused the credentials: retrying cannot help."""


class TTSConnection(Protocol):
    """One open streaming-TTS connection."""

    async def send_text(self, text: str) -> None:
        """Send text to synthesize (a chunk of the reply)."""
        ...

    async def flush(self) -> None:
        """Synthesize everything sent so far now (ends a chunk: ``TTSFlushed`` follows)."""
        ...

    async def clear(self) -> None:
        """Drop text and audio not sent yet (barge-in: ``TTSCleared`` follows)."""
        ...

    async def close(self) -> None:
        """Close the connection."""
        ...

    def events(self) -> AsyncIterator[TTSEvent]:
        """Events until the connection ends (normally: the iterator stops; else it raises)."""
        ...


# --- pure core -------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Reply:
    turn: int | None
    end_call_reason: str | None = None
    survives_interruption: bool = False
    created_ms: float | None = None  # when its first chunk was ready
    started: bool = False
    chunks: int = 0  # chunks queued so far
    held: str = ""  # text waiting for Flush budget


@dataclass(slots=True, eq=False)
class _Unit:
    chunk_id: str
    text: str
    reply: _Reply
    seq: int | None = None  # the Flush number on the current connection, once sent
    audio_started: bool = False


@dataclass(slots=True, eq=False)
class _ReplyEnd:
    reply: _Reply


@dataclass(slots=True)
class ChunkSequencer:
    """Which chunk the audio on the one TTS socket belongs to, and what frames that makes.

    Chunks and reply ends queue in order; audio belongs to the oldest chunk not yet answered by
    a ``Flushed``. Pure: no I/O, times are passed in.
    """

    processor: str = ""
    _entries: deque[_Unit | _ReplyEnd] = field(default_factory=deque)
    _clears_pending: int = 0
    _clear_seq: int = 0  # the first Flush number sent after the latest Clear
    _seq: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def idle(self) -> bool:
        """Nothing queued or in flight."""
        return not self._entries

    @property
    def clearing(self) -> bool:
        """A Clear was sent and its ``Cleared`` has not arrived."""
        return self._clears_pending > 0

    def add_chunk(self, text: str, reply: _Reply, now_ms: float) -> _Unit:
        """Queue a chunk of ``reply``; returns it (send it, then :meth:`mark_sent`)."""
        if reply.created_ms is None:
            reply.created_ms = now_ms
        unit = _Unit(f"c{next(self._ids)}", text, reply)
        self._entries.append(unit)
        return unit

    def mark_sent(self, unit: _Unit) -> None:
        """``unit`` was sent with its Flush on the current connection."""
        unit.seq = self._seq
        self._seq += 1

    def queued(self, unit: _Unit) -> bool:
        """Whether ``unit`` is still queued (not answered, not dropped by an interruption)."""
        return any(e is unit for e in self._entries)

    def unsent(self) -> list[_Unit]:
        """Chunks queued but not sent on the current connection, in order."""
        return [e for e in self._entries if isinstance(e, _Unit) and e.seq is None]

    def in_flight(self) -> bool:
        """Whether the server holds text of ours (so a Clear has something to clear)."""
        return any(isinstance(e, _Unit) and e.seq is not None for e in self._entries)

    def end_reply(self, reply: _Reply) -> list[Frame]:
        """``reply`` has no more text; its end frames come after its last chunk's mark."""
        self._entries.append(_ReplyEnd(reply))
        return self._drain_ends()

    def on_audio(self, audio: bytes, now_ms: float) -> list[Frame]:
        if self._clears_pending or not audio:
            return []
        unit = next((e for e in self._entries if isinstance(e, _Unit)), None)
        if unit is None:
            return []
        out: list[Frame] = []
        if not unit.audio_started:
            unit.audio_started = True
            reply = unit.reply
            if not reply.started:
                reply.started = True
                out.append(TTSStartedFrame())
                if reply.created_ms is not None:
                    out.append(
                        MetricsFrame(
                            "tts_ttfb_ms",
                            now_ms - reply.created_ms,
                            turn=reply.turn,
                            processor=self.processor,
                        )
                    )
            out.append(TTSTextFrame(text=unit.text, chunk_id=unit.chunk_id))
        out.append(OutputAudioFrame(audio=audio, chunk_id=unit.chunk_id))
        return out

    def on_flushed(self, sequence_id: int) -> list[Frame]:
        if self._clears_pending:
            if sequence_id < self._clear_seq:
                return []  # a cleared chunk's
            # A Flush sent after the Clear is done, so the Clear is too: its Cleared was lost.
            self._clears_pending = 0
        out: list[Frame] = []
        while self._entries:
            head = self._entries[0]
            if isinstance(head, _ReplyEnd):
                out += self._drain_ends()
                continue
            if head.seq is None or head.seq > sequence_id:
                break
            self._entries.popleft()
            if head.audio_started:
                out.append(MarkFrame(name=head.chunk_id))
        return out + self._drain_ends()

    def on_cleared(self) -> None:
        self._clears_pending = max(0, self._clears_pending - 1)

    def interrupt(self, *, clearing: bool) -> list[str]:
        """Drop everything queued. ``clearing``: a Clear is being sent (ignore the socket until
        its ``Cleared``). Returns the end-call reasons that survive the interruption."""
        reasons = []
        seen: set[int] = set()
        for e in self._entries:
            reply = e.reply
            if id(reply) in seen:
                continue
            seen.add(id(reply))
            if reply.survives_interruption and reply.end_call_reason:
                reasons.append(reply.end_call_reason)
        self._entries.clear()
        if clearing:
            self._clears_pending += 1
            self._clear_seq = self._seq
        return reasons

    def connection_lost(self) -> list[Frame]:
        """The socket is gone: the chunk that was playing ends with its mark (its audio so far
        was heard); the others will be sent again on the next connection."""
        out: list[Frame] = []
        self._clears_pending = 0
        self._seq = 0
        if self._entries:
            head = self._entries[0]
            if isinstance(head, _Unit) and head.audio_started:
                self._entries.popleft()
                out.append(MarkFrame(name=head.chunk_id))
        for e in self._entries:
            if isinstance(e, _Unit):
                e.seq = None
        return out + self._drain_ends()

    def _drain_ends(self) -> list[Frame]:
        out: list[Frame] = []
        while self._entries and isinstance(self._entries[0], _ReplyEnd):
            reply = self._entries.popleft().reply
            if reply.started:
                out.append(TTSStoppedFrame())
            if reply.end_call_reason:
                out.append(EndCallFrame(reason=reply.end_call_reason))
        return out


class FlushBudget:
    """At most ``max_flushes`` Flushes in any ``window_ms``: a sliding window of send times."""

    __slots__ = ("_sent", "max_flushes", "window_ms")

    def __init__(self, max_flushes: int, window_ms: float = 60_000.0) -> None:
        self.max_flushes = max_flushes
        self.window_ms = window_ms
        self._sent: deque[float] = deque()

    def available(self, now_ms: float) -> bool:
        """Whether one more Flush now stays within the budget."""
        while self._sent and self._sent[0] <= now_ms - self.window_ms:
            self._sent.popleft()
        return len(self._sent) < self.max_flushes

    def spend(self, now_ms: float) -> None:
        """A Flush was sent at ``now_ms``."""
        self._sent.append(now_ms)


def _speakable(text: str) -> bool:
    return any(c.isalnum() for c in text)


# --- the processor ---------------------------------------------------------------------------


class TextToSpeech(FrameProcessor, abc.ABC):
    """Provider-neutral streaming TTS processor; subclasses implement :meth:`connect`."""

    def __init__(
        self,
        *,
        first_chunk_early: bool = True,
        first_chunk_min_chars: int = 12,
        min_clause_chars: int = 60,
        min_sentence_chars: int = 20,
        max_chunk_chars: int = 300,
        max_reconnects: int = 1,
        max_flushes_per_minute: int = 20,
        reader_slice_ms: float = 2.0,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if reader_slice_ms < 0:
            raise ValueError("reader_slice_ms must not be negative")
        #: How long the socket reader hands on queued audio before it lets other tasks run.
        self.reader_slice_ms = reader_slice_ms
        self._chunker_args: dict[str, Any] = {
            "first_chunk_early": first_chunk_early,
            "first_chunk_min_chars": first_chunk_min_chars,
            "min_clause_chars": min_clause_chars,
            "min_sentence_chars": min_sentence_chars,
            "max_chunk_chars": max_chunk_chars,
        }
        self.max_reconnects = max_reconnects
        self._budget = FlushBudget(max_flushes_per_minute)
        self._chunker = SentenceChunker(**self._chunker_args)
        self._seqr = ChunkSequencer(processor=self.name)
        self._reply: _Reply | None = None
        self._conn: TTSConnection | None = None
        self._opening: TTSConnection | None = None  # up, still sending what queued meanwhile
        self._send_lock = asyncio.Lock()  # one Speak+Flush pair at a time on the socket
        self._closing = False
        self._started = False
        self._connections = 0

    # --- provider hook ---------------------------------------------------------------------

    @abc.abstractmethod
    def connect(self) -> contextlib.AbstractAsyncContextManager[TTSConnection]:
        """Open one streaming connection (raise :class:`TTSAuthError` for bad credentials)."""

    @property
    def connections(self) -> int:
        """How many connections were opened so far (reconnects included)."""
        return self._connections

    @property
    def connected(self) -> bool:
        """Whether a connection to the service is open now."""
        return self._conn is not None

    # --- frames ----------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMTextFrame):
            await self._text(frame.text)
        elif isinstance(frame, LLMResponseStartFrame):
            await self._end_reply()
            self._reply = _Reply(turn=frame.turn)
        elif isinstance(frame, LLMResponseEndFrame):
            await self._end_reply()
        elif isinstance(frame, TTSSpeakFrame):
            await self._speak(frame)
        elif isinstance(frame, InterruptionFrame):
            reasons = await self._interrupt()
            await self.push_frame(frame, direction)
            for reason in reasons:
                await self.push_frame(EndCallFrame(reason=reason))
            return
        else:
            if isinstance(frame, StartFrame) and not self._started:
                self._started = True
                self.create_task(self._run(), "socket")
            elif isinstance(frame, EndFrame | CancelFrame):
                await self._close()
            await self.push_frame(frame, direction)

    async def cleanup(self) -> None:
        self._closing = True
        self._conn = None

    async def _text(self, text: str) -> None:
        if self._reply is None:
            self._reply = _Reply(turn=None)
        for chunk in self._chunker.push(text):
            await self._send_chunk(chunk, self._reply)

    async def _end_reply(self) -> None:
        reply, self._reply = self._reply, None
        if reply is None:
            return
        for chunk in self._chunker.flush():
            await self._send_chunk(chunk, reply)
        await self._send_held(reply)
        if self._chunker.take_end_call():
            reply.end_call_reason = EndReason.AGENT_HANGUP.value
        await self._emit(self._seqr.end_reply(reply))

    async def _speak(self, frame: TTSSpeakFrame) -> None:
        reply = _Reply(
            turn=None,
            end_call_reason=frame.end_call_reason,
            survives_interruption=frame.end_call_reason is not None,
        )
        chunker = SentenceChunker(**self._chunker_args)
        for chunk in [*chunker.push(frame.text), *chunker.flush()]:
            await self._send_chunk(chunk, reply)
        await self._send_held(reply)
        if chunker.end_call and reply.end_call_reason is None:
            reply.end_call_reason = EndReason.AGENT_HANGUP.value
        await self._emit(self._seqr.end_reply(reply))

    async def _send_chunk(self, text: str, reply: _Reply) -> None:
        if not _speakable(text):
            return
        if reply.held:
            text = f"{reply.held} {text}"
        if reply.chunks and not self._budget.available(self.now_ms()):
            reply.held = text  # over the Flush budget: merge with what follows
            return
        reply.held = ""
        await self._queue_chunk(text, reply)

    async def _send_held(self, reply: _Reply) -> None:
        text, reply.held = reply.held, ""
        if text:
            await self._queue_chunk(text, reply)

    async def _queue_chunk(self, text: str, reply: _Reply) -> None:
        reply.chunks += 1
        unit = self._seqr.add_chunk(text, reply, self.now_ms())
        conn = self._conn
        if conn is None:
            return  # sent when the connection is up
        try:
            await self._send_unit(conn, unit)
        except Exception as exc:  # the reader sees the failure too and reconnects
            self._conn = None
            log_event(
                _log,
                "tts.send_failed",
                level=logging.WARNING,
                call_id=self.call_id,
                error=repr(exc),
            )

    async def _send_unit(self, conn: TTSConnection, unit: _Unit) -> None:
        async with self._send_lock:
            if unit.seq is not None or not self._seqr.queued(unit):
                return  # sent meanwhile, or dropped by an interruption
            await conn.send_text(unit.text)
            await conn.flush()
            self._budget.spend(self.now_ms())
            self._seqr.mark_sent(unit)

    async def _interrupt(self) -> list[str]:
        """Clear and drop everything; returns the end-call reasons that survive."""
        self._chunker.reset()
        self._reply = None
        conn = self._conn or self._opening
        clearing = conn is not None and self._seqr.in_flight()
        reasons = self._seqr.interrupt(clearing=clearing)
        if clearing and conn is not None:
            try:
                await conn.clear()
            except Exception as exc:
                self._seqr.on_cleared()
                log_event(
                    _log,
                    "tts.clear_failed",
                    level=logging.WARNING,
                    call_id=self.call_id,
                    error=repr(exc),
                )
        return reasons

    async def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _emit(self, frames: list[Frame]) -> None:
        for f in frames:
            await self.push_frame(f)

    # --- the socket ------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while not self._closing:
            had_work = False
            try:
                async with self.connect() as conn:
                    self._connections += 1
                    # Send what queued up while connecting; chunks added meanwhile join in.
                    self._opening = conn
                    while pending := self._seqr.unsent():
                        for unit in pending:
                            await self._send_unit(conn, unit)
                    self._opening = None
                    if self._closing:
                        return
                    self._conn = conn
                    if self._connections > 1:
                        log_event(_log, "tts.reconnected", call_id=self.call_id)
                    # Audio that queued up while the loop was busy is handed on in slices,
                    # so one call's backlog never holds the loop (see TimeSlice).
                    slice_ = TimeSlice(self.reader_slice_ms)
                    async for event in conn.events():
                        await slice_.worked()
                        if isinstance(event, TTSFlushed):
                            failures = 0
                        await self._on_event(event)
                        slice_.waiting()
                had_work = not self._seqr.idle
                if self._closing:
                    return
                log_event(_log, "tts.closed_by_server", call_id=self.call_id, pending=had_work)
            except asyncio.CancelledError:
                raise
            except TTSAuthError as exc:
                self._conn = None
                log_event(_log, "tts.auth_failed", level=logging.ERROR, call_id=self.call_id)
                await self.push_error(exc, fatal=True)
                return
            except Exception as exc:
                if self._closing:
                    return
                had_work = True
                log_event(
                    _log,
                    "tts.disconnected",
                    level=logging.WARNING,
                    call_id=self.call_id,
                    error=repr(exc),
                )
            finally:
                self._conn = self._opening = None
            await self._emit(self._seqr.connection_lost())
            if had_work:
                failures += 1
                if failures > self.max_reconnects:
                    log_event(
                        _log,
                        "tts.gave_up",
                        level=logging.ERROR,
                        call_id=self.call_id,
                        failures=failures,
                    )
                    await self.push_error(
                        f"TTS unavailable after {failures} failed connection(s)", fatal=True
                    )
                    return
            else:
                await asyncio.sleep(0.05)  # an idle close: reopen, without spinning

    async def _on_event(self, event: TTSEvent) -> None:
        if isinstance(event, TTSAudio):
            await self._emit(self._seqr.on_audio(event.audio, self.now_ms()))
        elif isinstance(event, TTSFlushed):
            await self._emit(self._seqr.on_flushed(event.sequence_id))
        elif isinstance(event, TTSCleared):
            self._seqr.on_cleared()
        else:
            log_event(
                _log,
                "tts.warning",
                level=logging.WARNING,
                call_id=self.call_id,
                code=event.code,
                description=event.description,
            )


# --- Deepgram --------------------------------------------------------------------------------


class _DeepgramSpeak:
    """:class:`TTSConnection` over an SDK ``speak.v1`` socket."""

    __slots__ = ("_socket",)

    def __init__(self, socket: Any) -> None:
        self._socket = socket

    async def send_text(self, text: str) -> None:
        await self._socket.send_text(SpeakV1Text(text=text))

    async def flush(self) -> None:
        await self._socket.send_flush()

    async def clear(self) -> None:
        await self._socket.send_clear()

    async def close(self) -> None:
        await self._socket.send_close()

    async def events(self) -> AsyncIterator[TTSEvent]:
        async for msg in self._socket:
            if isinstance(msg, bytes | bytearray):
                yield TTSAudio(bytes(msg))
                continue
            kind = getattr(msg, "type", None)  # None: a message type the SDK does not know
            if kind == "Flushed":
                yield TTSFlushed(int(msg.sequence_id))
            elif kind == "Cleared":  # parsed as SpeakV1Flushed: dispatch on .type only
                yield TTSCleared(int(msg.sequence_id))
            elif kind == "Warning":
                yield TTSWarning(str(msg.code), str(msg.description))


class DeepgramTTS(TextToSpeech):
    """Deepgram Aura streaming TTS (``speak.v1``) in mu-law 8 kHz, one socket per call."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        voice: str = "aura-2-thalia-en",
        client: AsyncDeepgramClient | None = None,
        first_chunk_early: bool = True,
        first_chunk_min_chars: int = 12,
        min_clause_chars: int = 60,
        min_sentence_chars: int = 20,
        max_chunk_chars: int = 300,
        max_reconnects: int = 1,
        max_flushes_per_minute: int = 20,
        reader_slice_ms: float = 2.0,
        name: str | None = None,
    ) -> None:
        super().__init__(
            first_chunk_early=first_chunk_early,
            first_chunk_min_chars=first_chunk_min_chars,
            min_clause_chars=min_clause_chars,
            min_sentence_chars=min_sentence_chars,
            max_chunk_chars=max_chunk_chars,
            max_reconnects=max_reconnects,
            max_flushes_per_minute=max_flushes_per_minute,
            reader_slice_ms=reader_slice_ms,
            name=name,
        )
        self.voice = voice
        self._client = client or deepgram_client(api_key, base_url)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> DeepgramTTS:
        """A processor configured from ``settings`` (key, base URL); ``overrides`` win."""
        kwargs: dict[str, Any] = {
            "api_key": settings.deepgram_api_key.get_secret_value(),
            "base_url": settings.deepgram_base_url,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    @contextlib.asynccontextmanager
    async def _open(self) -> AsyncIterator[TTSConnection]:
        try:
            async with self._client.speak.v1.connect(
                model=self.voice, encoding="mulaw", sample_rate=8000
            ) as socket:
                yield _DeepgramSpeak(socket)
        except ApiError as exc:
            if exc.status_code in (401, 403):
                raise TTSAuthError(f"Deepgram refused the credentials ({exc.status_code})") from exc
            raise

    def connect(self) -> contextlib.AbstractAsyncContextManager[TTSConnection]:
        return self._open()
