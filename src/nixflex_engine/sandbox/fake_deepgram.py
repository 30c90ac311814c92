"""Fake Deepgram: streaming STT (``/v1/listen``) and Aura TTS (``/v1/speak``) over websockets.

It speaks the wire protocol of ``wss://api.deepgram.com`` (wire-protocols §3, §5.2), so the
real ``deepgram-sdk`` connects to it by base URL alone::

    env = DeepgramClientEnvironment(base=url, production=url.replace("http", "ws", 1),
                                    agent=..., agent_rest=...)
    dg = AsyncDeepgramClient(api_key="test-key", environment=env)

Both endpoints are stateless: the audio is :mod:`~nixflex_engine.sandbox.speech`, so STT
*decodes* what it hears and TTS *encodes* what it is asked to say.

STT (``/v1/listen``): binary mu-law or linear16 in, at 8 kHz (or 16/24/32/48 kHz, low-passed
and decimated to 8 kHz before decoding); JSON control frames
``KeepAlive``, ``Finalize``, ``CloseStream``. Out, at the query's settings:

* ``SpeechStarted`` (``vad_events=true``) once sound has lasted ``speech_started_ms``,
  stamped with its onset;
* interim ``Results`` (``interim_results=true``, ``is_final: false``) each time a word completes;
* a final ``Results`` (``is_final`` and ``speech_final: true``) once ``endpointing`` ms of
  silence (query; Deepgram's default 10, ``false`` disables) follow the speech, plus
  ``final_delay_ms`` of processing latency;
* ``UtteranceEnd`` (``utterance_end_ms``, with interim results) after that much silence
  following the last finalized word;
* on ``Finalize``: the words so far as a final ``Results`` with ``from_finalize: true``;
* on ``Configure``: ``ConfigureSuccess`` with the keyterms now in force (``ConfigureFailure``
  for keyterms on a model other than Nova-3); ``features`` can toggle ``punctuate`` /
  ``smart_format``;
* on ``CloseStream``: a last final, ``Metadata``, and a normal close; after
  ``idle_timeout_s`` with no message, a close 1011 (NET-0001).

Times (``start``, ``duration``, word ``start``/``end``, ``timestamp``, ``last_word_end``) are in
seconds of audio received on the connection. A symbol is decoded about 40 ms after it is spoken,
and a word closes when the space after it is decoded or 20 ms of silence follow it, so a final
arrives ``max(endpointing, 20 ms) + final_delay_ms`` after the caller stops (to the 10 ms hop);
with ``Finalize`` it is ``finalize_delay_ms`` after the Finalize.

TTS over REST (``POST /v1/speak``, body ``{"text": ...}``, as older SDKs and Pipecat's HTTP
service use): the same speech, streamed after ``ttfb_ms`` at ``speed``; ``container=wav`` adds a
WAV header.

TTS (websocket ``/v1/speak``): ``Metadata`` on open; ``Speak`` text accumulates (pieces are
joined with a space when neither side has one); ``Flush`` → after ``ttfb_ms`` the speech for
the buffered text as binary frames of ``chunk_ms`` of audio, generated at ``speed`` x real
time, then ``{"type":"Flushed","sequence_id":n}`` (n counts Flushes from 0); ``Clear`` → stop
sending, drop text and queued audio, ``{"type":"Cleared","sequence_id":n}``; ``Close`` →
finish queued audio and close.

TTS audio is rendered at the requested ``sample_rate`` (linear16 at 8-48 kHz, mu-law at 8 or
16 kHz); other encodings and rates are refused with 400, like an unknown parameter.

Failures are planned per connection: append a :class:`ListenFault` / :class:`SpeakFault` to
``fake.listen_faults`` / ``fake.speak_faults``; each new connection takes the next one (FIFO),
connections find no plan when the queue is empty. Every connection is recorded in
``fake.listen_log`` / ``fake.speak_log`` for assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import struct
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from nixflex_engine.log import get_logger, log_event
from nixflex_engine.processors.codec import mulaw_to_pcm16_array, pcm16_array_to_mulaw
from nixflex_engine.sandbox import speech
from nixflex_engine.sandbox.serve import abort_connection

__all__ = [
    "FakeDeepgram",
    "ListenFault",
    "ListenRecord",
    "ListenSettings",
    "SpeakFault",
    "SpeakRecord",
    "SpeakSettings",
]

_log = get_logger(__name__)

_MODEL_INFO = MappingProxyType(
    {"name": "general-nova-3", "version": "2025-09-30.0", "arch": "nova-3"}
)
_MODEL_UUID = "1dbdfb4d-85b2-4659-9a9b-0a4b2b3e4f29"
_NET0001 = (
    "Deepgram did not receive audio data or a text message within the timeout window. "
    "See https://dpgr.am/net0001"
)
_WHITESPACE = frozenset(b" \t\r\n")
_STT_GAP_MS = 20.0
_RATES = frozenset({8000, 16000, 24000, 32000, 48000})  # multiples of 8 kHz: decimated for STT
_MULAW_TTS_RATES = frozenset({8000, 16000})
_UNSUPPORTED = "The sandbox takes mulaw or linear16 at 8, 16, 24, 32 or 48 kHz."


def _format(query: dict[str, list[str]], *, speak: bool, default: str) -> tuple[str, int] | None:
    """(encoding, sample rate) from the query, or None if the sandbox cannot serve it."""
    encoding = (query.get("encoding") or [default])[-1]
    raw_rate = (query.get("sample_rate") or ["8000"])[-1]
    try:
        rate = int(float(raw_rate))
    except ValueError:
        return None
    if encoding not in ("mulaw", "linear16") or rate not in _RATES:
        return None
    if speak and encoding == "mulaw" and rate not in _MULAW_TTS_RATES:
        return None
    return encoding, rate


class _Decimator:
    """Streaming low-pass + keep-every-k-th: audio at k x 8 kHz down to 8 kHz for decoding."""

    def __init__(self, factor: int) -> None:
        self.factor = factor
        taps = 16 * factor + 1
        n = np.arange(taps) - (taps - 1) / 2
        cutoff = 3700.0 / (speech.SAMPLE_RATE * factor)  # cycles per input sample
        h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.hamming(taps)
        self.h = h / h.sum()
        self.history = np.zeros(taps - 1)
        self.phase = 0  # offset, in this chunk, of the next sample to keep

    def __call__(self, samples: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        buf = np.concatenate([self.history, samples.astype(np.float64)])
        filtered = np.convolve(buf, self.h, mode="valid")  # one per input sample
        kept = filtered[self.phase :: self.factor]
        self.phase = (self.phase - len(samples)) % self.factor
        self.history = buf[len(buf) - len(self.history) :]
        return np.asarray(np.clip(np.round(kept), -32768, 32767), dtype=np.int16)


_STEP = 160  # samples decoded between two endpoint checks
_AUDIO_CACHE_SIZE = 256


def _wav_header(data_bytes: int, linear16: bool, rate: int) -> bytes:
    """A RIFF/WAVE header for mono PCM16 (format 1) or mu-law (format 7)."""
    fmt, width = (1, 2) if linear16 else (7, 1)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, fmt, 1, rate, rate * width, width, 8 * width)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


async def _paced(
    audio: bytes,
    started: float,
    settings: SpeakSettings,
    bytes_per_ms: float,
    record: SpeakRecord,
    fault: SpeakFault | None,
) -> AsyncIterator[bytes]:
    """``audio`` in ``chunk_ms`` pieces: the first ``ttfb_ms`` after ``started``, the rest at
    ``speed`` x real time from when the first left (a stalled loop delays, never bunches,
    them). At the fault's ``drop_after_bytes`` it stops early and marks ``record.dropped``."""
    chunk = max(1, int(settings.chunk_ms * bytes_per_ms))
    first: float | None = None
    for i, off in enumerate(range(0, len(audio), chunk)):
        due = started + settings.ttfb_ms / 1000
        if first is not None:
            due = first + (i * settings.chunk_ms / settings.speed / 1000 if settings.speed else 0)
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        piece = audio[off : off + chunk]
        if fault is not None and fault.drop_after_bytes is not None:
            left = fault.drop_after_bytes - record.audio_bytes
            if left <= 0:
                record.dropped = True
                return
            piece = piece[:left]
        if first is None:
            first = time.monotonic()
            record.first_byte_at.append(first)
        record.audio_bytes += len(piece)
        yield piece


def _render(text: str, pitch_hz: float, linear16: bool, sample_rate: int) -> bytes:
    pcm = speech.synthesize(text, pitch_hz=pitch_hz, sample_rate=sample_rate)
    return pcm.astype("<i2").tobytes() if linear16 else pcm16_array_to_mulaw(pcm)


@dataclass(slots=True)
class ListenSettings:
    """Latencies of the fake STT (wall-clock ms added on top of the audio itself)."""

    final_delay_ms: float = 150.0  # an endpoint (speech_final) result
    interim_delay_ms: float = 30.0  # an interim result
    finalize_delay_ms: float = 50.0  # the answer to a Finalize
    speech_started_ms: float = 40.0  # sound needed before SpeechStarted
    idle_timeout_s: float = 10.0  # no audio nor message → close 1011 (NET-0001)


@dataclass(slots=True)
class SpeakSettings:
    """Timing of the fake TTS."""

    ttfb_ms: float = 120.0  # Flush → first audio byte
    chunk_ms: float = 100.0  # audio per binary frame
    speed: float = 4.0  # audio produced at this x real time after the first byte; 0 = at once
    pitch_hz: float = 210.0  # the agent's voice


@dataclass(slots=True)
class ListenFault:
    """How one STT connection fails. Triggers are checked in order; the first one fires.

    ``reject_status``: answer the upgrade with this HTTP status (401, 429, 503, ...).
    ``drop_after_ms``: wall clock since the upgrade. ``drop_after_audio_ms``: audio received.
    ``drop_after_words``: words decoded on this connection (mid-utterance when the speech goes
    on). The drop aborts the TCP connection (no close frame, as a network failure) unless
    ``close_code`` is set, then it is a close frame with that code and ``close_reason``.
    """

    reject_status: int | None = None
    drop_after_ms: float | None = None
    drop_after_audio_ms: float | None = None
    drop_after_words: int | None = None
    close_code: int | None = None
    close_reason: str = ""


@dataclass(slots=True)
class SpeakFault:
    """How one TTS connection fails: ``reject_status`` at the upgrade; or, after
    ``drop_after_bytes`` audio bytes sent or ``drop_after_ms`` since the upgrade, an abort (or a
    close frame with ``close_code``); ``warning_on_flush`` sends a ``Warning`` instead of the
    audio of that Flush (0-based)."""

    reject_status: int | None = None
    drop_after_bytes: int | None = None
    drop_after_ms: float | None = None
    close_code: int | None = None
    close_reason: str = ""
    warning_on_flush: int | None = None


@dataclass(slots=True)
class ListenRecord:
    """What one STT connection saw and said."""

    request_id: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    audio_bytes: int = 0
    controls: list[str] = field(default_factory=list)
    sent: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (monotonic, msg)
    dropped: bool = False
    closed: bool = False
    keyterms: list[str] = field(default_factory=list)  # from the query, then Configure

    def finals(self) -> list[str]:
        """Transcripts of the non-empty final results, in order."""
        return [
            m["channel"]["alternatives"][0]["transcript"]
            for _, m in self.sent
            if m.get("type") == "Results"
            and m["is_final"]
            and m["channel"]["alternatives"][0]["transcript"]
        ]


@dataclass(slots=True)
class SpeakRecord:
    """What one TTS connection was asked and sent."""

    request_id: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    texts: list[str] = field(default_factory=list)  # the text of each Flush
    controls: list[str] = field(default_factory=list)
    audio_bytes: int = 0
    first_byte_at: list[float] = field(default_factory=list)  # monotonic, per Flush with audio
    dropped: bool = False


@dataclass(slots=True)
class _Word:
    word: str
    punctuated: str
    start: float
    end: float


def _query(ws: WebSocket) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in ws.query_params.multi_items():
        out.setdefault(k, []).append(v)
    return out


def _flag(query: dict[str, list[str]], name: str, default: bool = False) -> bool:
    values = query.get(name)
    return default if not values else values[-1].lower() == "true"


class FakeDeepgram:
    """Deepgram's ``/v1/listen`` and ``/v1/speak``; mount :meth:`routes` in a Starlette app.

    ``api_key``: the key ``Authorization: Token <key>`` (or ``Bearer``) must carry; ``None``
    accepts any non-empty credential.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        listen: ListenSettings | None = None,
        speak: SpeakSettings | None = None,
    ) -> None:
        self.api_key = api_key
        self.listen_settings = listen or ListenSettings()
        self.speak_settings = speak or SpeakSettings()
        self.listen_faults: deque[ListenFault] = deque()
        self.speak_faults: deque[SpeakFault] = deque()
        self.listen_log: list[ListenRecord] = []
        self.speak_log: list[SpeakRecord] = []
        self._audio_cache: OrderedDict[tuple[str, float, bool, int], bytes] = OrderedDict()

    async def render(
        self, text: str, *, linear16: bool = False, sample_rate: int = speech.SAMPLE_RATE
    ) -> bytes:
        """The TTS audio for ``text`` (mu-law, or linear16), synthesized off the event loop
        and kept in a small per-fake LRU cache (agents repeat themselves)."""
        key = (text, self.speak_settings.pitch_hz, linear16, sample_rate)
        audio = self._audio_cache.get(key)
        if audio is None:
            audio = await asyncio.to_thread(_render, text, key[1], linear16, sample_rate)
            self._audio_cache[key] = audio
            while len(self._audio_cache) > _AUDIO_CACHE_SIZE:
                self._audio_cache.popitem(last=False)
        else:
            self._audio_cache.move_to_end(key)
        return audio

    def routes(self) -> list[BaseRoute]:
        """The Starlette routes (``/v1/listen``, ``/v1/speak``)."""
        return [
            WebSocketRoute("/v1/listen", self._listen),
            WebSocketRoute("/v1/speak", self._speak),
            Route("/v1/speak", self._speak_rest, methods=["POST"]),
        ]

    # -- handshake

    def _authorized(self, headers: Headers) -> bool:
        """``Authorization: Token|Bearer <key>``, or the ``token, <key>`` subprotocol."""
        scheme, _, credential = headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("token", "bearer") or not credential.strip():
            protocols = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
            if len(protocols) == 2 and protocols[0] in ("token", "bearer"):
                credential = protocols[1]
            else:
                return False
        return self.api_key is None or credential.strip() == self.api_key

    async def _reject(self, ws: WebSocket, status: int, code: str, message: str) -> None:
        body = {"err_code": code, "err_msg": message, "request_id": str(uuid.uuid4())}
        await ws.send_denial_response(JSONResponse(body, status_code=status))

    async def _handshake(
        self, ws: WebSocket, fault: ListenFault | SpeakFault | None, *, speak: bool
    ) -> bool:
        if not self._authorized(ws.headers):
            await self._reject(ws, 401, "INVALID_AUTH", "Invalid credentials.")
            return False
        if fault is not None and fault.reject_status is not None:
            await self._reject(ws, fault.reject_status, "INJECTED", "Injected failure.")
            return False
        query = _query(ws)
        if _format(query, speak=speak, default="linear16" if speak else "mulaw") is None:
            await self._reject(ws, 400, "UNSUPPORTED", _UNSUPPORTED)
            return False
        for name in ("endpointing", "utterance_end_ms"):
            value = (query.get(name) or ["0"])[-1]
            if not speak and not (value.isdigit() or (name == "endpointing" and value == "false")):
                await self._reject(ws, 400, "INVALID_QUERY_PARAMETER", f"Invalid {name}: {value}")
                return False
        return True

    # -- STT

    async def _listen(self, ws: WebSocket) -> None:
        fault = self.listen_faults.popleft() if self.listen_faults else None
        if not await self._handshake(ws, fault, speak=False):
            return
        request_id = str(uuid.uuid4())
        await _accept(ws, request_id)
        record = ListenRecord(request_id, _query(ws), dict(ws.headers))
        record.keyterms = list(record.query.get("keyterm", []))
        self.listen_log.append(record)
        session = _ListenSession(ws, record, self.listen_settings, fault)
        log_event(_log, "fake_deepgram.listen.open", request_id=request_id)
        await session.run()
        log_event(_log, "fake_deepgram.listen.closed", request_id=request_id)

    # -- TTS over REST (POST /v1/speak, body {"text": ...}): the same speech, streamed

    async def _speak_rest(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        fault = self.speak_faults.popleft() if self.speak_faults else None

        def refuse(status: int, code: str, message: str) -> Response:
            body = {"err_code": code, "err_msg": message, "request_id": request_id}
            return JSONResponse(body, status_code=status, headers={"dg-request-id": request_id})

        if not self._authorized(request.headers):
            return refuse(401, "INVALID_AUTH", "Invalid credentials.")
        if fault is not None and fault.reject_status is not None:
            return refuse(fault.reject_status, "INJECTED", "Injected failure.")
        query = {k: request.query_params.getlist(k) for k in request.query_params}
        container = (query.get("container") or ["none"])[-1]
        audio_format = _format(query, speak=True, default="mp3")  # Deepgram's REST default
        if audio_format is None:
            return refuse(400, "UNSUPPORTED", _UNSUPPORTED)
        encoding, rate = audio_format
        try:
            text = str((await request.json())["text"])
        except (ValueError, KeyError, TypeError):
            return refuse(400, "INVALID_BODY", "The body must be JSON with a 'text' field.")
        record = SpeakRecord(request_id, query, dict(request.headers), texts=[text])
        record.controls.append("POST")
        self.speak_log.append(record)
        linear16 = encoding == "linear16"
        audio = await self.render(text, linear16=linear16, sample_rate=rate)
        if container == "wav":
            audio = _wav_header(len(audio), linear16, rate) + audio
        started = time.monotonic()
        bytes_per_ms = rate / 1000 * (2 if linear16 else 1)

        async def body() -> AsyncIterator[bytes]:
            settings = self.speak_settings
            async for piece in _paced(audio, started, settings, bytes_per_ms, record, fault):
                yield piece
            if record.dropped and not abort_connection(request.scope):
                raise ConnectionAbortedError("injected drop")

        media = "audio/wav" if container == "wav" else ("audio/l16" if linear16 else "audio/basic")
        headers = {
            "dg-request-id": request_id,
            "dg-model-name": (query.get("model") or ["aura-2-thalia-en"])[-1],
            "dg-char-count": str(len(text)),
        }
        return StreamingResponse(body(), media_type=media, headers=headers)

    # -- TTS

    async def _speak(self, ws: WebSocket) -> None:
        fault = self.speak_faults.popleft() if self.speak_faults else None
        if not await self._handshake(ws, fault, speak=True):
            return
        request_id = str(uuid.uuid4())
        await _accept(ws, request_id)
        record = SpeakRecord(request_id, _query(ws), dict(ws.headers))
        self.speak_log.append(record)
        session = _SpeakSession(ws, record, self.speak_settings, fault, self.render)
        log_event(_log, "fake_deepgram.speak.open", request_id=request_id)
        await session.run()
        log_event(_log, "fake_deepgram.speak.closed", request_id=request_id)


async def _accept(ws: WebSocket, request_id: str) -> None:
    """Accept, echoing the ``token``/``bearer`` subprotocol when the key came that way."""
    offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",")]
    subprotocol = offered[0] if offered[0] in ("token", "bearer") else None
    await ws.accept(subprotocol=subprotocol, headers=[(b"dg-request-id", request_id.encode())])


class _Dropped(Exception):
    """The fault plan dropped the connection."""


async def _drop(ws: WebSocket, code: int | None, reason: str) -> None:
    if code is None and abort_connection(ws.scope):
        return
    await _close(ws, code or 1011, reason)


async def _close(ws: WebSocket, code: int, reason: str = "") -> None:
    """Close unless the client already has (its close frame may be in flight)."""
    if ws.client_state == WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await ws.close(code=code, reason=reason)


class _Outbox:
    """In-order sender: each message leaves at its due time, never before an earlier one."""

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws
        self._queue: asyncio.Queue[tuple[float, str | bytes | None]] = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    def put(self, payload: str | bytes | None, delay_ms: float = 0.0) -> None:
        """Queue ``payload`` (``None``: stop) to leave ``delay_ms`` from now."""
        self._queue.put_nowait((time.monotonic() + delay_ms / 1000, payload))

    async def drain(self) -> None:
        self.put(None)
        with contextlib.suppress(Exception):
            await self.task

    async def _run(self) -> None:
        while True:
            due, payload = await self._queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if payload is None:
                return
            try:
                if isinstance(payload, bytes):
                    await self._ws.send_bytes(payload)
                else:
                    await self._ws.send_text(payload)
            except Exception:  # the client went away: nothing more to say
                return


class _ListenSession:
    def __init__(
        self,
        ws: WebSocket,
        record: ListenRecord,
        settings: ListenSettings,
        fault: ListenFault | None,
    ) -> None:
        self.ws = ws
        self.record = record
        self.settings = settings
        self.fault = fault
        q = record.query
        endpointing = (q.get("endpointing") or ["10"])[-1]
        self.endpointing_ms: float | None = (
            None if endpointing.lower() == "false" else float(endpointing)
        )
        ue = (q.get("utterance_end_ms") or [""])[-1]
        self.utterance_end_ms: float | None = float(ue) if ue else None
        self.interim = _flag(q, "interim_results")
        self.vad_events = _flag(q, "vad_events")
        self.punctuate = _flag(q, "punctuate") or _flag(q, "smart_format")
        encoding, rate = _format(q, speak=False, default="mulaw") or ("mulaw", 8000)
        self.linear16 = encoding == "linear16"
        factor = rate // speech.SAMPLE_RATE
        self.decimate = _Decimator(factor) if factor > 1 else None
        self.decoder = speech.SpeechDecoder(min_gap_ms=_STT_GAP_MS)
        self.sha = hashlib.sha256()
        self.carry = b""
        self.word: list[speech.SymbolDecoded] = []
        self.pending: list[_Word] = []
        self.window_start = 0.0  # start (s) of the audio not yet covered by a final
        self.words_total = 0
        self.onset: int | None = None
        self.speech_started_sent = False
        self.last_final_word_end: float | None = None  # armed UtteranceEnd
        self.opened = time.monotonic()
        self.outbox = _Outbox(ws)

    # -- message building

    def _send(self, msg: dict[str, Any], delay_ms: float = 0.0) -> None:
        self.record.sent.append((time.monotonic() + delay_ms / 1000, msg))
        self.outbox.put(json.dumps(msg), delay_ms)

    def _results(
        self,
        words: list[_Word],
        *,
        end: float,
        is_final: bool,
        speech_final: bool,
        from_finalize: bool = False,
    ) -> dict[str, Any]:
        text = " ".join(w.punctuated if self.punctuate else w.word for w in words)
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(max(end - self.window_start, 0.0), 3),
            "start": round(self.window_start, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [
                    {
                        "transcript": text,
                        "confidence": 0.99 if words else 0.0,
                        "words": [
                            {
                                "word": w.word,
                                "start": round(w.start, 3),
                                "end": round(w.end, 3),
                                "confidence": 0.99,
                                "punctuated_word": w.punctuated,
                            }
                            for w in words
                        ],
                    }
                ]
            },
            "metadata": {
                "request_id": self.record.request_id,
                "model_info": dict(_MODEL_INFO),
                "model_uuid": _MODEL_UUID,
            },
        }

    # -- decoding

    def _close_word(self) -> bool:
        symbols, self.word = self.word, []
        if not symbols:
            return False
        punctuated = bytes(s.byte for s in symbols).decode("utf-8", errors="replace")
        plain = "".join(c for c in punctuated.lower() if c.isalnum() or c in "'-").strip("'-")
        if not plain:
            return False
        self.pending.append(
            _Word(
                plain,
                punctuated,
                symbols[0].start / speech.SAMPLE_RATE,
                symbols[-1].end / speech.SAMPLE_RATE,
            )
        )
        self.words_total += 1
        self.last_final_word_end = None  # new speech disarms UtteranceEnd
        return True

    def _events(self, events: list[speech.DecoderEvent]) -> None:
        grew = False
        for ev in events:
            if isinstance(ev, speech.ActivityStarted):
                self.onset = ev.at
                self.speech_started_sent = False
            elif isinstance(ev, speech.SymbolDecoded):
                if ev.byte in _WHITESPACE:
                    grew |= self._close_word()
                else:
                    self.word.append(ev)
            else:
                grew |= self._close_word()
                self.onset = None
        if grew and self.interim:
            now = self.decoder.position / speech.SAMPLE_RATE
            self._send(
                self._results(self.pending, end=now, is_final=False, speech_final=False),
                self.settings.interim_delay_ms,
            )

    def _final(self, *, speech_final: bool, from_finalize: bool, delay_ms: float) -> None:
        now = self.decoder.position / speech.SAMPLE_RATE
        words, self.pending = self.pending, []
        self._send(
            self._results(
                words,
                end=now,
                is_final=True,
                speech_final=speech_final,
                from_finalize=from_finalize,
            ),
            delay_ms,
        )
        self.window_start = now
        if words:
            self.last_final_word_end = words[-1].end

    def _after_audio(self) -> None:
        pos = self.decoder.position
        rate = speech.SAMPLE_RATE
        if (
            self.vad_events
            and self.onset is not None
            and not self.speech_started_sent
            and self.decoder.in_activity
            and (pos - self.onset) * 1000 / rate >= self.settings.speech_started_ms
        ):
            self.speech_started_sent = True
            self._send({"type": "SpeechStarted", "channel": [0], "timestamp": self.onset / rate})
        silent_ms = (pos - self.decoder.last_active_end) * 1000 / rate
        if self.pending and not self.word and not self.decoder.in_activity:
            if self.endpointing_ms is not None and silent_ms >= self.endpointing_ms:
                self._final(
                    speech_final=True, from_finalize=False, delay_ms=self.settings.final_delay_ms
                )
            elif self.endpointing_ms is None:
                self._final(
                    speech_final=False, from_finalize=False, delay_ms=self.settings.final_delay_ms
                )
        if (
            self.utterance_end_ms is not None
            and self.interim
            and self.last_final_word_end is not None
            and not self.decoder.in_activity
            and not self.pending
            and pos / rate - self.last_final_word_end >= self.utterance_end_ms / 1000
        ):
            self._send(
                {
                    "type": "UtteranceEnd",
                    "channel": [0, 1],
                    "last_word_end": round(self.last_final_word_end, 3),
                },
                self.settings.interim_delay_ms,
            )
            self.last_final_word_end = None

    def _audio(self, data: bytes) -> None:
        self.record.audio_bytes += len(data)
        self.sha.update(data)
        if self.linear16:
            data = self.carry + data
            usable = len(data) - len(data) % 2
            self.carry = data[usable:]
            samples = np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)
        else:
            samples = mulaw_to_pcm16_array(data)
        if self.decimate is not None:
            samples = self.decimate(samples)
        # 20 ms at a time, so a big chunk is timed as if it had been streamed.
        for i in range(0, len(samples), _STEP):
            self._events(self.decoder.feed(samples[i : i + _STEP]))
            self._after_audio()

    def _flush_words(self) -> None:
        self._events(self.decoder.flush())
        self._close_word()

    # -- fault triggers

    def _fault_due(self) -> bool:
        f = self.fault
        if f is None:
            return False
        if f.drop_after_ms is not None and (time.monotonic() - self.opened) * 1000 >= (
            f.drop_after_ms
        ):
            return True
        audio_ms = self.decoder.position * 1000 / speech.SAMPLE_RATE
        if f.drop_after_audio_ms is not None and audio_ms >= f.drop_after_audio_ms:
            return True
        return f.drop_after_words is not None and self.words_total >= f.drop_after_words

    # -- loop

    async def _receive(self) -> Message:
        timeout = self.settings.idle_timeout_s
        if self.fault is not None and self.fault.drop_after_ms is not None:
            left = self.fault.drop_after_ms / 1000 - (time.monotonic() - self.opened)
            timeout = min(timeout, max(left, 0.0))
            if left <= 0:
                raise _Dropped
        try:
            message: Message = await asyncio.wait_for(self.ws.receive(), timeout)
        except TimeoutError:
            if self._fault_due():
                raise _Dropped from None
            raise
        return message

    async def run(self) -> None:
        try:
            while True:
                try:
                    message = await self._receive()
                except TimeoutError:
                    self.outbox.put(None)
                    with contextlib.suppress(Exception):
                        await self.outbox.task
                    await _close(self.ws, 1011, _NET0001[:120])
                    return
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    self._audio(message["bytes"])
                elif message.get("text") is not None:
                    if await self._control(message["text"]):
                        return
                if self._fault_due():
                    raise _Dropped
        except _Dropped:
            self.record.dropped = True
            self.outbox.task.cancel()
            fault = self.fault
            assert fault is not None
            log_event(_log, "fake_deepgram.listen.dropped", request_id=self.record.request_id)
            await _drop(self.ws, fault.close_code, fault.close_reason)
        except WebSocketDisconnect:
            return
        finally:
            if not self.outbox.task.done():
                self.outbox.task.cancel()

    def _configure(self, msg: dict[str, Any]) -> None:
        model = (self.record.query.get("model") or [""])[-1]
        keyterms = msg.get("keyterms")
        if keyterms is not None and not model.startswith("nova-3"):
            self._send(
                {
                    "type": "ConfigureFailure",
                    "request_id": self.record.request_id,
                    "code": "CONFIGURE_KEYTERMS_NOT_SUPPORTED",
                    "description": "Only Nova-3 models support mid-stream keyterm updates.",
                }
            )
            return
        if keyterms is not None:
            self.record.keyterms = [str(k) for k in keyterms]
        features = msg.get("features") or {}
        for name in ("punctuate", "smart_format"):
            if name in features:
                self.punctuate = bool(features[name])
        self._send(
            {
                "type": "ConfigureSuccess",
                "request_id": self.record.request_id,
                "keyterms": list(self.record.keyterms),
            }
        )

    async def _control(self, text: str) -> bool:
        try:
            msg = json.loads(text)
            kind = msg["type"]
        except (ValueError, KeyError, TypeError):
            self._send(
                {
                    "type": "Error",
                    "variant": "SchemaError",
                    "description": "Could not parse the client message.",
                    "message": text[:500],
                }
            )
            return False
        self.record.controls.append(str(kind))
        if kind == "KeepAlive":
            return False
        if kind == "Configure":
            self._configure(msg)
            return False
        if kind == "Finalize":
            self._flush_words()
            self._final(
                speech_final=False,
                from_finalize=True,
                delay_ms=self.settings.finalize_delay_ms,
            )
            return False
        if kind == "CloseStream":
            self._events(self.decoder.end())
            self._close_word()
            if self.pending:
                self._final(speech_final=True, from_finalize=False, delay_ms=0.0)
            self._send(
                {
                    "type": "Metadata",
                    "transaction_key": "deprecated",
                    "request_id": self.record.request_id,
                    "sha256": self.sha.hexdigest(),
                    "created": datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
                    "duration": round(self.decoder.position / speech.SAMPLE_RATE, 3),
                    "channels": 1,
                }
            )
            await self.outbox.drain()
            self.record.closed = True
            await _close(self.ws, 1000)
            return True
        self._send(
            {
                "type": "Error",
                "variant": "SchemaError",
                "description": f"Unknown message type {kind!r}.",
                "message": text[:500],
            }
        )
        return False


class _SpeakSession:
    def __init__(
        self,
        ws: WebSocket,
        record: SpeakRecord,
        settings: SpeakSettings,
        fault: SpeakFault | None,
        render: Callable[..., Awaitable[bytes]],
    ) -> None:
        self.render = render
        self.ws = ws
        self.record = record
        self.settings = settings
        self.fault = fault
        encoding, self.rate = _format(record.query, speak=True, default="linear16") or (
            "linear16",
            8000,
        )
        self.linear16 = encoding == "linear16"
        self.text = ""
        self.flushes = 0
        self.jobs: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue()
        self.lock = asyncio.Lock()
        self.opened = time.monotonic()
        self.worker = asyncio.create_task(self._work())
        self.dropped = asyncio.Event()

    async def _send(self, payload: str | bytes) -> None:
        async with self.lock:
            if isinstance(payload, bytes):
                await self.ws.send_bytes(payload)
            else:
                await self.ws.send_text(payload)

    async def _work(self) -> None:
        try:
            await self._jobs()
        except Exception:  # the client went away mid-audio
            return

    async def _jobs(self) -> None:
        while True:
            job = await self.jobs.get()
            if job is None:
                return
            seq, text = job
            fault = self.fault
            if fault is not None and fault.warning_on_flush == seq:
                await self._send(
                    json.dumps(
                        {
                            "type": "Warning",
                            "description": "Injected failure: synthesis failed.",
                            "code": "INJECTED",
                        }
                    )
                )
                continue
            started = time.monotonic()
            audio = await self.render(text, linear16=self.linear16, sample_rate=self.rate)
            bytes_per_ms = self.rate / 1000 * (2 if self.linear16 else 1)
            record = self.record
            async for piece in _paced(audio, started, self.settings, bytes_per_ms, record, fault):
                await self._send(piece)
            if record.dropped:
                self.dropped.set()
                return
            await self._send(json.dumps({"type": "Flushed", "sequence_id": seq}))

    async def _restart_worker(self) -> None:
        self.worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.worker
        self.jobs = asyncio.Queue()
        self.worker = asyncio.create_task(self._work())

    async def run(self) -> None:
        await self._send(
            json.dumps(
                {
                    "type": "Metadata",
                    "request_id": self.record.request_id,
                    "model_name": (self.record.query.get("model") or ["aura-2-thalia-en"])[-1],
                    "model_version": "2025-04-01.0",
                    "model_uuid": "ecb76e9d-f2db-4127-8060-79b05590d22f",
                }
            )
        )
        timer: asyncio.Task[None] | None = None
        if self.fault is not None and self.fault.drop_after_ms is not None:
            timer = asyncio.create_task(asyncio.sleep(self.fault.drop_after_ms / 1000))
            timer.add_done_callback(lambda _t: self.dropped.set())
        receiver: asyncio.Task[Message] | None = None
        dropped_wait = asyncio.create_task(self.dropped.wait())
        try:
            while True:
                receiver = asyncio.create_task(self.ws.receive())
                done, _ = await asyncio.wait(
                    {receiver, dropped_wait}, return_when=asyncio.FIRST_COMPLETED
                )
                if dropped_wait in done:
                    self.record.dropped = True
                    fault = self.fault
                    assert fault is not None
                    log_event(
                        _log, "fake_deepgram.speak.dropped", request_id=self.record.request_id
                    )
                    async with self.lock:
                        await _drop(self.ws, fault.close_code, fault.close_reason)
                    return
                message = receiver.result()
                receiver = None
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is None:
                    continue
                if await self._control(message["text"]):
                    return
        except WebSocketDisconnect:
            return
        finally:
            for task in (receiver, timer, dropped_wait, self.worker):
                if task is not None and not task.done():
                    task.cancel()

    async def _control(self, text: str) -> bool:
        try:
            msg = json.loads(text)
            kind = str(msg["type"])
        except (ValueError, KeyError, TypeError):
            return False
        self.record.controls.append(kind)
        if kind == "Speak":
            piece = str(msg.get("text", ""))
            if self.text and piece and not self.text[-1].isspace() and not piece[0].isspace():
                self.text += " "
            self.text += piece
        elif kind == "Flush":
            seq, self.flushes = self.flushes, self.flushes + 1
            text, self.text = self.text.strip(), ""
            self.record.texts.append(text)
            self.jobs.put_nowait((seq, text))
        elif kind == "Clear":
            self.text = ""
            await self._restart_worker()
            await self._send(
                json.dumps({"type": "Cleared", "sequence_id": max(self.flushes - 1, 0)})
            )
        elif kind == "Close":
            self.jobs.put_nowait(None)
            with contextlib.suppress(Exception):
                await self.worker
            await _close(self.ws, 1000)
            return True
        return False
