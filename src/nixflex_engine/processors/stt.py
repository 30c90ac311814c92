"""Streaming speech-to-text: caller audio out to the provider, transcripts back as frames.
:class:`DeepgramSTT` runs it on ``deepgram-sdk`` 7.16 ``listen.v1`` (Nova, mu-law 8 kHz).

Consumes:
  ``StartFrame`` — open the socket (in a background task; audio meanwhile is buffered).
  ``InputAudioFrame`` — its mu-law ``audio`` is sent as is, ``send_chunk_ms`` (40) to a
  binary frame (two 20 ms Twilio frames: half the sends, hence about half the CPU the STT
  socket costs per call; what is pending is sent before a ``Finalize`` or a close, so the
  end of a turn waits for nothing), and kept in a bounded backlog until a final transcript
  covers it (see *Reconnect*).
  ``UserStoppedSpeakingFrame`` (local VAD) — send ``Finalize`` so the last words come back as a
  final result at once instead of after the server's endpointing delay.
  ``EndFrame`` / ``CancelFrame`` — close the stream.
  Every frame is passed on, in its direction.
Emits (downstream):
  ``InterimTranscriptFrame(text, start_ms, end_ms, confidence)`` for each non-empty interim
  result; ``TranscriptFrame(text, start_ms, end_ms, speech_final, confidence, received_ms)``
  for each non-empty final result. ``speech_final`` is Deepgram's endpoint flag, *or* true when
  the result answers our ``Finalize`` (``from_finalize``): we sent it because the local VAD
  heard the caller stop, and Deepgram marks such results ``speech_final: false``, so without
  this a turn ended by Finalize would never see an endpoint.
  End of utterance, as ``TranscriptFrame(text="", speech_final=True)`` (the convention
  ``processors/turns.py`` reads, since ``frames.py`` has no frame for it): for Deepgram's
  ``UtteranceEnd`` (times = its ``last_word_end``), and for an empty final that is an endpoint
  (``speech_final``, or the answer to a ``Finalize`` with nothing new: all speech is in).
  :class:`STTSpeechStartedFrame` (Deepgram ``SpeechStarted``), defined here until the lead
  moves it to ``frames.py``.
  Errors: bad credentials → ``ErrorFrame(fatal=True)`` (no call can work); a provider down for
  longer than ``reconnect_deadline_ms`` → ``ErrorFrame`` and ``TTSSpeakFrame(apology,
  end_call_reason="error")``, so the agent (whose TTS still works) apologises and hangs up.

Times
-----
Deepgram stamps results in seconds from the start of the audio *it received on that socket*.
The processor counts caller audio in bytes (mu-law: 1 byte = 1 sample = 1/8 ms); a socket's
time 0 is the byte position of the first byte it was sent (after a reconnect, the first
resent byte), so ``position = origin + seconds · 8000``. A position maps onto the **stream
timeline** (Twilio's ``InputAudioFrame.timestamp_ms``: the first byte of each run of
contiguous frames is anchored at its frame's timestamp, :class:`StreamPositions`), and from
there onto the **run clock** with the same
:class:`~nixflex_engine.processors.timeline.StreamClock` rule as the VAD, so transcript times
and ``UserStoppedSpeakingFrame.stop_ms`` are directly comparable. ``received_ms`` is the run
clock when the result arrived, so ``received_ms - end_ms`` is the STT latency.

KeepAlive
---------
Deepgram closes a socket after ~10 s without audio. Twilio streams audio continuously (silence
included), so during a call this never fires; it matters before the media stream starts (the
socket is opened at ``StartFrame``, while the phone may still be ringing or AMD running), if the
media stream stalls, or if a transport stops forwarding audio. A timer sends ``KeepAlive`` when
no audio was sent for ``keepalive_interval_ms``.

Reconnect
---------
A dropped socket (error, abort, or a close we did not ask for) is reopened at once, then with
exponential backoff and jitter; the audio received since the last final result (the backlog,
at most ``max_backlog_ms``) is resent first, in order, before live audio resumes, so no caller
word is lost: words that were only interim on the old socket are transcribed again.

A new provider is one subclass of :class:`SpeechToText` implementing :meth:`SpeechToText.connect`
(a context manager yielding an :class:`STTConnection` that speaks in :data:`STTEvent`).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
from deepgram.core.api_error import ApiError

from nixflex_engine.config import Settings
from nixflex_engine.frames import (
    CancelFrame,
    EndFrame,
    EndReason,
    Frame,
    InputAudioFrame,
    InterimTranscriptFrame,
    StartFrame,
    SystemFrame,
    TranscriptFrame,
    TTSSpeakFrame,
    UserStoppedSpeakingFrame,
)
from nixflex_engine.log import get_logger, log_event
from nixflex_engine.pipeline import FrameDirection, FrameProcessor
from nixflex_engine.processors.timeline import StreamClock

__all__ = [
    "DEFAULT_STT_APOLOGY",
    "AudioBacklog",
    "DeepgramSTT",
    "STTAuthError",
    "STTConnection",
    "STTEvent",
    "STTSpeechStarted",
    "STTSpeechStartedFrame",
    "STTTranscript",
    "STTUtteranceEnd",
    "SpeechToText",
    "StreamPositions",
    "deepgram_client",
    "deepgram_environment",
]

_log = get_logger(__name__)

BYTES_PER_MS = 8  # mu-law at 8 kHz: one byte per sample
DEFAULT_STT_APOLOGY = (
    "I'm sorry, I'm having trouble hearing you right now. Someone will get back to you. Goodbye."
)


# --- frames this module needs (to move into frames.py) --------------------------------------


@dataclass(frozen=True, slots=True)
class STTSpeechStartedFrame(SystemFrame):
    """The STT service detected the start of speech at ``at_ms`` (run clock)."""

    at_ms: float = 0.0


# --- provider-neutral events and connection --------------------------------------------------


@dataclass(frozen=True, slots=True)
class STTTranscript:
    """A transcript result; times in seconds of audio sent on the connection."""

    text: str
    start_s: float
    end_s: float
    is_final: bool
    speech_final: bool = False
    from_finalize: bool = False
    confidence: float = 1.0
    window_end_s: float | None = None  # end of the audio the result covers (finals)


@dataclass(frozen=True, slots=True)
class STTSpeechStarted:
    """Speech began at ``timestamp_s`` of the connection's audio."""

    timestamp_s: float


@dataclass(frozen=True, slots=True)
class STTUtteranceEnd:
    """The utterance ended; its last word ended at ``last_word_end_s``."""

    last_word_end_s: float


STTEvent = STTTranscript | STTSpeechStarted | STTUtteranceEnd


class STTAuthError(Exception):
    """The provider refused the credentials: retrying cannot help."""


class STTConnection(Protocol):
    """One open streaming-STT connection."""

    async def send_audio(self, audio: bytes) -> None:
        """Send caller audio (mu-law 8 kHz, as it came from the line)."""
        ...

    async def keep_alive(self) -> None:
        """Keep the connection open while no audio is sent."""
        ...

    async def finalize(self) -> None:
        """Ask for the final transcript of what was sent so far (the caller stopped)."""
        ...

    async def close_stream(self) -> None:
        """Tell the service no more audio comes; events end after the last result."""
        ...

    def events(self) -> AsyncIterator[STTEvent]:
        """Events until the connection ends (normally: the iterator stops; else it raises)."""
        ...


# --- pure core -------------------------------------------------------------------------------


class AudioBacklog:
    """Caller audio not yet covered by a final transcript, in arrival order, bounded.

    Positions count bytes since the first audio (one mu-law byte per sample). No I/O.
    """

    __slots__ = ("_chunks", "_end", "_held", "_max_bytes", "_start")

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._max_bytes = max_bytes
        self._chunks: deque[bytes] = deque()
        self._start = 0  # position of the first byte held
        self._end = 0  # position after the last byte received
        self._held = 0

    @property
    def start(self) -> int:
        """Position of the oldest byte held."""
        return self._start

    @property
    def end(self) -> int:
        """Bytes received so far (position after the newest byte)."""
        return self._end

    def append(self, audio: bytes) -> None:
        """Add audio; drops the oldest audio beyond the bound."""
        if not audio:
            return
        self._chunks.append(audio)
        self._end += len(audio)
        self._held += len(audio)
        excess = self._held - self._max_bytes
        while excess > 0 and self._chunks:
            head = self._chunks[0]
            if len(head) <= excess:
                self._chunks.popleft()
                self._start += len(head)
                self._held -= len(head)
                excess -= len(head)
            else:
                self._chunks[0] = head[excess:]
                self._start += excess
                self._held -= excess
                excess = 0

    def release_before(self, position: int) -> None:
        """Forget the audio before ``position`` (a final transcript covers it)."""
        position = min(position, self._end)
        while self._chunks and self._start < position:
            head = self._chunks[0]
            cut = position - self._start
            if len(head) <= cut:
                self._chunks.popleft()
                self._start += len(head)
                self._held -= len(head)
            else:
                self._chunks[0] = head[cut:]
                self._start += cut
                self._held -= cut

    def read(self, position: int, max_bytes: int) -> tuple[int, bytes]:
        """Up to ``max_bytes`` from ``position`` (or from :attr:`start`, if that audio was
        already dropped); returns the position actually read from and the bytes."""
        position = max(position, self._start)
        out = bytearray()
        offset = self._start
        for chunk in self._chunks:
            if offset + len(chunk) <= position:
                offset += len(chunk)
                continue
            out += chunk[max(0, position - offset) :]
            offset += len(chunk)
            if len(out) >= max_bytes:
                break
        return position, bytes(out[:max_bytes])


class StreamPositions:
    """Byte positions of caller audio → stream time (Twilio ``timestamp_ms``). No I/O.

    Audio is contiguous until a frame's timestamp jumps ahead of where the previous frame ended
    (a gap in the stream); each contiguous run is one segment. Timestamps that do not advance
    (none given, or a repeat) are taken as contiguous.
    """

    __slots__ = ("_end", "_expected_ms", "_segments")

    _MAX_SEGMENTS = 256

    def __init__(self) -> None:
        self._segments: deque[tuple[int, float]] = deque(maxlen=self._MAX_SEGMENTS)
        self._end = 0
        self._expected_ms: float | None = None

    def append(self, timestamp_ms: float, nbytes: int) -> None:
        """The next ``nbytes`` of audio start at stream time ``timestamp_ms``."""
        if self._expected_ms is None or timestamp_ms > self._expected_ms + 1.0:
            self._segments.append((self._end, float(timestamp_ms)))
            self._expected_ms = float(timestamp_ms)
        self._end += nbytes
        self._expected_ms += nbytes / BYTES_PER_MS

    def stream_ms(self, position: float) -> float:
        """Stream time of byte ``position`` (extrapolated past the ends)."""
        if not self._segments:
            return position / BYTES_PER_MS
        start, ts = self._segments[0]
        for seg_start, seg_ts in self._segments:
            if seg_start > position:
                break
            start, ts = seg_start, seg_ts
        return ts + (position - start) / BYTES_PER_MS


def reconnect_delay_ms(attempt: int, *, base_ms: float, max_ms: float, jitter: float) -> float:
    """Delay before reconnect ``attempt`` (1 = the first): none for the first (a single drop is
    retried at once), then ``base_ms · 2^(attempt-2)`` capped at ``max_ms``, times
    ``0.5 + 0.5·jitter``."""
    if attempt <= 1:
        return 0.0
    cap = min(max_ms, base_ms * 2.0 ** (attempt - 2))
    return cap * (0.5 + 0.5 * min(1.0, max(0.0, jitter)))


# --- the processor ---------------------------------------------------------------------------


class SpeechToText(FrameProcessor, abc.ABC):
    """Provider-neutral streaming STT processor; subclasses implement :meth:`connect`."""

    def __init__(
        self,
        *,
        keepalive_interval_ms: float = 4_000.0,
        max_backlog_ms: float = 15_000.0,
        resend_chunk_ms: float = 500.0,
        send_chunk_ms: float = 40.0,
        reconnect_base_ms: float = 100.0,
        reconnect_max_ms: float = 2_000.0,
        reconnect_deadline_ms: float = 15_000.0,
        apology: str = DEFAULT_STT_APOLOGY,
        rng: random.Random | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.keepalive_interval_ms = keepalive_interval_ms
        self.send_chunk_bytes = max(1, int(send_chunk_ms * BYTES_PER_MS))
        self._unsent = bytearray()  # live audio not yet sent (less than send_chunk_bytes)
        self.resend_chunk_bytes = max(1, int(resend_chunk_ms * BYTES_PER_MS))
        self.reconnect_base_ms = reconnect_base_ms
        self.reconnect_max_ms = reconnect_max_ms
        self.reconnect_deadline_ms = reconnect_deadline_ms
        self.apology = apology
        self._rng = rng or random.Random()
        self._backlog = AudioBacklog(max(1, int(max_backlog_ms * BYTES_PER_MS)))
        self._conn: STTConnection | None = None
        self._origin = 0
        self._positions = StreamPositions()
        self._clock = StreamClock()
        self._last_sent_ms = 0.0
        self._finalize_pending = False
        self._closing = False
        self._started = False
        self._connections = 0

    # --- provider hook ---------------------------------------------------------------------

    @abc.abstractmethod
    def connect(self) -> contextlib.AbstractAsyncContextManager[STTConnection]:
        """Open one streaming connection (raise :class:`STTAuthError` for bad credentials)."""

    # --- state for tests and diagnostics ---------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether live audio is being streamed on an open connection."""
        return self._conn is not None

    @property
    def connections(self) -> int:
        """How many connections were opened so far (reconnects included)."""
        return self._connections

    # --- frames ----------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InputAudioFrame):
            await self.push_frame(frame, direction)
            await self._on_audio(frame.audio, frame.timestamp_ms)
            return
        if isinstance(frame, StartFrame) and not self._started:
            self._started = True
            self._last_sent_ms = self.now_ms()
            self.create_task(self._run(), "socket")
            self.create_task(self._keepalive(), "keepalive")
        elif isinstance(frame, UserStoppedSpeakingFrame):
            await self._finalize()
        elif isinstance(frame, EndFrame | CancelFrame):
            await self._close()
        await self.push_frame(frame, direction)

    async def cleanup(self) -> None:
        self._closing = True
        self._conn = None

    async def _on_audio(self, audio: bytes, timestamp_ms: float) -> None:
        self._positions.append(timestamp_ms, len(audio))
        self._backlog.append(audio)
        now = self.now_ms()
        self._clock.observe(self._positions.stream_ms(self._backlog.end), now)
        conn = self._conn
        if conn is None:
            self._unsent.clear()  # it is in the backlog, resent on the next connection
            return
        self._unsent += audio
        if len(self._unsent) >= self.send_chunk_bytes:
            await self._send_unsent(conn)

    async def _send_unsent(self, conn: STTConnection) -> None:
        data = bytes(self._unsent)
        self._unsent.clear()
        try:
            await conn.send_audio(data)
            self._last_sent_ms = self.now_ms()
        except Exception as exc:  # the reader sees the same failure and reconnects
            self._conn = None
            log_event(
                _log,
                "stt.send_failed",
                level=logging.WARNING,
                call_id=self.call_id,
                error=repr(exc),
            )

    async def _finalize(self) -> None:
        if self._backlog.end <= self._backlog.start:
            return  # everything is final already
        conn = self._conn
        if conn is None:
            self._finalize_pending = True  # sent once the backlog is resent
            return
        if self._unsent:
            await self._send_unsent(conn)  # every word before the Finalize
        with contextlib.suppress(Exception):
            await conn.finalize()

    async def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        conn = self._conn
        if conn is not None and self._unsent:
            await self._send_unsent(conn)
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close_stream()

    async def _keepalive(self) -> None:
        period_s = self.keepalive_interval_ms / 2000.0
        while not self._closing:
            await asyncio.sleep(period_s)
            conn = self._conn
            if conn is None or self.now_ms() - self._last_sent_ms < self.keepalive_interval_ms:
                continue
            try:
                await conn.keep_alive()
                self._last_sent_ms = self.now_ms()
            except Exception as exc:
                log_event(
                    _log,
                    "stt.keepalive_failed",
                    level=logging.WARNING,
                    call_id=self.call_id,
                    error=repr(exc),
                )

    # --- the socket ------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        failing_since: float | None = None
        while not self._closing:
            try:
                async with self.connect() as conn:
                    self._connections += 1
                    await self._resend(conn)
                    if self._closing:
                        return
                    if self._finalize_pending:
                        self._finalize_pending = False
                        await conn.finalize()
                    self._unsent.clear()  # resent with the backlog
                    self._conn = conn
                    self._last_sent_ms = self.now_ms()
                    if attempt:
                        log_event(
                            _log,
                            "stt.reconnected",
                            call_id=self.call_id,
                            attempt=attempt,
                            resent_ms=(self._backlog.end - self._origin) / BYTES_PER_MS,
                        )
                    attempt = 0
                    failing_since = None
                    async for event in conn.events():
                        await self._on_event(event)
                if self._closing:
                    return
                raise ConnectionError("the STT server closed the stream")
            except asyncio.CancelledError:
                raise
            except STTAuthError as exc:
                self._conn = None
                log_event(_log, "stt.auth_failed", level=logging.ERROR, call_id=self.call_id)
                await self.push_error(exc, fatal=True)
                return
            except Exception as exc:
                self._conn = None
                if self._closing:
                    return
                attempt += 1
                now = self.now_ms()
                failing_since = now if failing_since is None else failing_since
                if now - failing_since >= self.reconnect_deadline_ms:
                    log_event(
                        _log,
                        "stt.gave_up",
                        level=logging.ERROR,
                        call_id=self.call_id,
                        attempts=attempt,
                        error=repr(exc),
                    )
                    await self.push_error(f"STT unavailable after {attempt} attempt(s): {exc!r}")
                    await self.push_frame(
                        TTSSpeakFrame(text=self.apology, end_call_reason=EndReason.ERROR.value)
                    )
                    return
                delay_ms = reconnect_delay_ms(
                    attempt,
                    base_ms=self.reconnect_base_ms,
                    max_ms=self.reconnect_max_ms,
                    jitter=self._rng.random(),
                )
                log_event(
                    _log,
                    "stt.disconnected",
                    level=logging.WARNING,
                    call_id=self.call_id,
                    attempt=attempt,
                    delay_ms=round(delay_ms, 1),
                    error=repr(exc),
                )
                if delay_ms:
                    await asyncio.sleep(delay_ms / 1000.0)
            finally:
                self._conn = None

    async def _resend(self, conn: STTConnection) -> None:
        """Send the backlog (audio since the last final) on a new connection, up to the newest
        byte; live audio arriving meanwhile joins the backlog and is sent in the same loop."""
        self._origin = self._backlog.start
        position = self._origin
        while position < self._backlog.end and not self._closing:
            start, data = self._backlog.read(position, self.resend_chunk_bytes)
            if start != position:
                self._origin += start - position  # audio dropped by the bound meanwhile
            await conn.send_audio(data)
            position = start + len(data)

    def _run_ms(self, socket_s: float) -> float:
        """Run-clock time of ``socket_s`` seconds into the current connection's audio."""
        if not self._clock.anchored:
            return self.now_ms()
        position = self._origin + socket_s * 1000.0 * BYTES_PER_MS
        return self._clock.to_run(self._positions.stream_ms(position))

    async def _on_event(self, event: STTEvent) -> None:
        if isinstance(event, STTTranscript):
            if event.is_final:
                if event.window_end_s is not None:
                    self._backlog.release_before(
                        self._origin + int(event.window_end_s * 1000 * BYTES_PER_MS)
                    )
                endpoint = event.speech_final or event.from_finalize
                if event.text or endpoint:
                    await self.push_frame(
                        TranscriptFrame(
                            text=event.text,
                            start_ms=self._run_ms(event.start_s),
                            end_ms=self._run_ms(event.end_s),
                            speech_final=endpoint,
                            confidence=event.confidence,
                            received_ms=self.now_ms(),
                        )
                    )
            elif event.text:
                await self.push_frame(
                    InterimTranscriptFrame(
                        text=event.text,
                        start_ms=self._run_ms(event.start_s),
                        end_ms=self._run_ms(event.end_s),
                        confidence=event.confidence,
                    )
                )
        elif isinstance(event, STTSpeechStarted):
            await self.push_frame(STTSpeechStartedFrame(at_ms=self._run_ms(event.timestamp_s)))
        else:
            at = self._run_ms(event.last_word_end_s)
            await self.push_frame(
                TranscriptFrame(
                    text="",
                    start_ms=at,
                    end_ms=at,
                    speech_final=True,
                    confidence=0.0,
                    received_ms=self.now_ms(),
                )
            )


# --- Deepgram --------------------------------------------------------------------------------


def deepgram_client(api_key: str, base_url: str | None = None) -> AsyncDeepgramClient:
    """The SDK client the Deepgram STT and TTS processors use (they reconnect themselves).

    Building one costs ~25-35 ms of CPU (its HTTP client's SSL context loads the CA bundle),
    which blocks the event loop of every call in the process: a process serving many calls
    builds one and passes it to each processor (``client=``; see
    ``calls.chain.ProviderClients``). Sockets opened through it are independent.
    """
    return AsyncDeepgramClient(
        api_key=api_key, environment=deepgram_environment(base_url), reconnect=False
    )


def deepgram_environment(base_url: str | None) -> DeepgramClientEnvironment:
    """The SDK environment for ``base_url`` (``http(s)://host:port``; the websocket root is the
    same with ``ws(s)://``); Deepgram's own when ``None``."""
    if not base_url:
        return DeepgramClientEnvironment.PRODUCTION
    base = base_url.rstrip("/")
    ws = "wss://" + base[len("https://") :] if base.startswith("https://") else base
    if ws.startswith("http://"):
        ws = "ws://" + ws[len("http://") :]
    return DeepgramClientEnvironment(base=base, production=ws, agent=ws, agent_rest=base)


class _DeepgramListen:
    """:class:`STTConnection` over an SDK ``listen.v1`` socket."""

    __slots__ = ("_socket",)

    def __init__(self, socket: Any) -> None:
        self._socket = socket

    async def send_audio(self, audio: bytes) -> None:
        await self._socket.send_media(audio)

    async def keep_alive(self) -> None:
        await self._socket.send_keep_alive()

    async def finalize(self) -> None:
        await self._socket.send_finalize()

    async def close_stream(self) -> None:
        await self._socket.send_close_stream()

    async def events(self) -> AsyncIterator[STTEvent]:
        async for msg in self._socket:
            event = _deepgram_event(msg)
            if event is not None:
                yield event


def _deepgram_event(msg: Any) -> STTEvent | None:
    """Translate one SDK message; ``None`` for what the processor does not use (the SDK also
    yields ``None`` itself for message types it does not know)."""
    kind = getattr(msg, "type", None)
    if kind == "Results":
        alternatives = msg.channel.alternatives
        alt = alternatives[0] if alternatives else None
        text = (alt.transcript if alt is not None else "") or ""
        words = alt.words if alt is not None and alt.words else []
        start = float(msg.start)
        end = start + float(msg.duration)
        return STTTranscript(
            text=text.strip(),
            start_s=float(words[0].start) if words else start,
            end_s=float(words[-1].end) if words else end,
            is_final=bool(msg.is_final),
            speech_final=bool(msg.speech_final),
            from_finalize=bool(msg.from_finalize),
            confidence=float(alt.confidence) if alt is not None else 0.0,
            window_end_s=end if msg.is_final else None,
        )
    if kind == "SpeechStarted":
        return STTSpeechStarted(timestamp_s=float(msg.timestamp))
    if kind == "UtteranceEnd":
        return STTUtteranceEnd(last_word_end_s=float(msg.last_word_end))
    if kind == "Error":
        log_event(
            _log,
            "stt.server_error",
            level=logging.WARNING,
            variant=getattr(msg, "variant", ""),
            description=getattr(msg, "description", ""),
        )
    return None


class DeepgramSTT(SpeechToText):
    """Deepgram streaming STT (``listen.v1``): mu-law 8 kHz, interim results, endpointing,
    utterance end, VAD events, smart format; ``model`` and ``keyterms`` configurable
    (``keyterm`` is Nova-3 only)."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        model: str = "nova-3",
        language: str | None = None,
        keyterms: Sequence[str] = (),
        endpointing_ms: int = 300,
        utterance_end_ms: int = 1000,
        smart_format: bool = True,
        client: AsyncDeepgramClient | None = None,
        keepalive_interval_ms: float = 4_000.0,
        max_backlog_ms: float = 15_000.0,
        resend_chunk_ms: float = 500.0,
        send_chunk_ms: float = 40.0,
        reconnect_base_ms: float = 100.0,
        reconnect_max_ms: float = 2_000.0,
        reconnect_deadline_ms: float = 15_000.0,
        apology: str = DEFAULT_STT_APOLOGY,
        rng: random.Random | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(
            keepalive_interval_ms=keepalive_interval_ms,
            max_backlog_ms=max_backlog_ms,
            resend_chunk_ms=resend_chunk_ms,
            send_chunk_ms=send_chunk_ms,
            reconnect_base_ms=reconnect_base_ms,
            reconnect_max_ms=reconnect_max_ms,
            reconnect_deadline_ms=reconnect_deadline_ms,
            apology=apology,
            rng=rng,
            name=name,
        )
        if utterance_end_ms < 1000:
            raise ValueError("Deepgram requires utterance_end_ms >= 1000")
        self.model = model
        self.language = language
        self.keyterms = tuple(keyterms)
        self.endpointing_ms = endpointing_ms
        self.utterance_end_ms = utterance_end_ms
        self.smart_format = smart_format
        self._client = client or deepgram_client(api_key, base_url)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> DeepgramSTT:
        """A processor configured from ``settings`` (key, base URL); ``overrides`` win."""
        kwargs: dict[str, Any] = {
            "api_key": settings.deepgram_api_key.get_secret_value(),
            "base_url": settings.deepgram_base_url,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    @contextlib.asynccontextmanager
    async def _open(self) -> AsyncIterator[STTConnection]:
        options: dict[str, Any] = {
            "model": self.model,
            "encoding": "mulaw",
            "sample_rate": 8000,
            "channels": 1,
            "interim_results": True,
            "endpointing": self.endpointing_ms,
            "utterance_end_ms": self.utterance_end_ms,
            "vad_events": True,
            "smart_format": self.smart_format,
        }
        if self.language:
            options["language"] = self.language
        if self.keyterms:
            options["keyterm"] = list(self.keyterms)
        try:
            async with self._client.listen.v1.connect(**options) as socket:
                yield _DeepgramListen(socket)
        except ApiError as exc:
            if exc.status_code in (401, 403):
                raise STTAuthError(f"Deepgram refused the credentials ({exc.status_code})") from exc
            raise

    def connect(self) -> contextlib.AbstractAsyncContextManager[STTConnection]:
        return self._open()
