"""The sandbox callee: a fake Twilio media-stream *client* that plays a caller from a script.

It connects to the engine's websocket the way Twilio does (``wire-protocols.md`` §1, §5.4):
optionally signed with ``X-Twilio-Signature``, it sends ``connected``, ``start`` (with
``customParameters`` and ``mediaFormat``), then one 160-byte ``media`` frame every 20 ms —
caller audio from the script, silence (0xFF) whenever the script is not speaking, like a real
line — plus ``dtmf`` and finally ``stop``. ``speed`` > 1 runs the whole line N times faster
(pacing and playback alike), for tests.

Concurrently it models Twilio's playback buffer (:class:`PlaybackBuffer`): one FIFO of agent
audio and marks, drained in real time (times ``speed``); a mark is echoed when playback reaches
it; ``clear`` drops the queued audio and echoes every pending mark at once. What was played
is exactly what the caller *heard*, kept with its times on the line clock (ms since the
``start`` was sent, in line time). A binary frame or a malformed/unknown message from the
engine is recorded as a protocol violation (tests assert there are none).

Scripts read like the call::

    script = CalleeScript([
        UntilAgentSilent(),          # let the agent greet
        Say("Hello? Who is this?"),
        UntilAgentHeard(ms=600),     # then barge in 600 ms into its reply
        Say("Sorry, not interested"),
        Dtmf("1"),
        Silence(2000),
        Hangup(),
    ])
    result = await SandboxCallee("ws://127.0.0.1:8080/media", script, speed=10).run()
    assert result.protocol_violations == []
    print(result.heard_text())

When the script runs out without hanging up, the callee stays on the line (sending silence)
until the engine closes the socket, or hangs up after ``max_call_ms``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import struct
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from nixflex_engine.processors.codec import mulaw_to_pcm16_array, pcm16_array_to_mulaw
from nixflex_engine.sandbox import speech

__all__ = [
    "BargeIn",
    "CalleeResult",
    "CalleeScript",
    "ClearReceived",
    "Drop",
    "Dtmf",
    "EchoedMark",
    "Hangup",
    "HeardSegment",
    "Noise",
    "Play",
    "PlayFile",
    "PlaybackBuffer",
    "SandboxCallee",
    "Say",
    "Send",
    "Silence",
    "Step",
    "StepRecord",
    "Tone",
    "UntilAgentHeard",
    "UntilAgentSilent",
    "UntilAgentSpeaks",
    "UntilCleared",
    "Wait",
    "load_mulaw",
    "run_callee",
]

FRAME_BYTES: Final = 160
FRAME_MS: Final = 20
SILENCE_FRAME: Final = b"\xff" * FRAME_BYTES
_BYTES_PER_MS: Final = 8.0
_VOICE_WINDOW_BYTES: Final = 80  # 10 ms


# --- script steps --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Say:
    """Speak ``text`` (sandbox speech, which the fake STT decodes back to the text)."""

    text: str
    pitch_hz: float = 125.0


@dataclass(frozen=True, slots=True)
class Play:
    """Play raw audio: mu-law bytes, or int16 samples at 8 kHz (e.g. ``speech.cough()``)."""

    audio: bytes | npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class PlayFile:
    """Play a WAV file (8 kHz mono, PCM16 or mu-law) or a headerless mu-law file."""

    path: str | Path


@dataclass(frozen=True, slots=True)
class Tone:
    """A steady sine tone, e.g. a beep: ``Tone(1000, 400)``."""

    freq_hz: float
    ms: float
    level_dbfs: float = -12.0


@dataclass(frozen=True, slots=True)
class Noise:
    """Background noise on the line for ``ms``."""

    ms: float
    level_dbfs: float = -55.0


@dataclass(frozen=True, slots=True)
class Silence:
    """Say nothing for ``ms`` (the line carries silence)."""

    ms: float


#: ``Wait(ms=800)`` reads better in some scripts; it is :class:`Silence`.
Wait = Silence


@dataclass(frozen=True, slots=True)
class UntilAgentSpeaks:
    """Stay silent until agent speech is heard (after this step began)."""

    timeout_ms: float = 15000.0


@dataclass(frozen=True, slots=True)
class UntilAgentSilent:
    """Stay silent until the agent has spoken and then been quiet for ``silence_ms``.

    "Has spoken" counts speech heard since the previous ``Until…`` step ended (or since the
    start), so ``[Say(...), UntilAgentSilent()]`` waits for the reply to the ``Say``.
    """

    silence_ms: float = 600.0
    timeout_ms: float = 30000.0


@dataclass(frozen=True, slots=True)
class UntilAgentHeard:
    """Stay silent until ``ms`` of agent audio have been heard since this step began."""

    ms: float
    timeout_ms: float = 30000.0


@dataclass(frozen=True, slots=True)
class BargeIn:
    """Talk over the agent: wait for ``after_ms`` of its audio, then say ``text``."""

    text: str
    after_ms: float = 500.0
    timeout_ms: float = 30000.0


@dataclass(frozen=True, slots=True)
class UntilCleared:
    """Stay silent until the engine sends a ``clear`` (after this step began)."""

    timeout_ms: float = 15000.0


@dataclass(frozen=True, slots=True)
class Dtmf:
    """Press keys: one Twilio ``dtmf`` message per digit."""

    digits: str


@dataclass(frozen=True, slots=True)
class Send:
    """Send one raw websocket message as is (text or binary): for protocol-abuse tests."""

    message: str | bytes


@dataclass(frozen=True, slots=True)
class Hangup:
    """Hang up: send ``stop`` and close the socket."""


@dataclass(frozen=True, slots=True)
class Drop:
    """Drop the connection abruptly (no ``stop``, no close frame)."""


#: One step of a callee script (any of the step classes above).
Step = (
    Say
    | Play
    | PlayFile
    | Tone
    | Noise
    | Silence
    | UntilAgentSpeaks
    | UntilAgentSilent
    | UntilAgentHeard
    | BargeIn
    | UntilCleared
    | Dtmf
    | Send
    | Hangup
    | Drop
)


@dataclass(frozen=True, slots=True, init=False)
class CalleeScript:
    """The caller's side of the call: steps run in order."""

    steps: tuple[Step, ...]

    def __init__(self, steps: Iterable[Step] = ()) -> None:
        object.__setattr__(self, "steps", tuple(steps))


# --- audio helpers -------------------------------------------------------------------------


def _mulaw(audio: bytes | npt.NDArray[np.int16]) -> bytes:
    if isinstance(audio, bytes | bytearray | memoryview):
        return bytes(audio)
    return pcm16_array_to_mulaw(np.asarray(audio, dtype=np.int16))


def load_mulaw(path: str | Path) -> bytes:
    """Mu-law bytes from a WAV file (8 kHz mono; PCM16 or mu-law) or a raw mu-law file."""
    data = Path(path).read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return data
    fmt: tuple[int, int, int, int] | None = None
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            tag, channels, rate = struct.unpack("<HHI", body[:8])
            bits = struct.unpack("<H", body[14:16])[0]
            if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: real tag in GUID
                tag = struct.unpack("<H", body[24:26])[0]
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            if fmt is None:
                raise ValueError(f"{path}: data chunk before fmt chunk")
            tag, channels, rate, bits = fmt
            if channels != 1 or rate != 8000:
                raise ValueError(f"{path}: need 8000 Hz mono, got {rate} Hz x{channels}")
            if tag == 7 and bits == 8:
                return body
            if tag == 1 and bits == 16:
                return pcm16_array_to_mulaw(np.frombuffer(body, dtype="<i2").astype(np.int16))
            raise ValueError(f"{path}: unsupported WAV format tag {tag} ({bits} bits)")
        pos += 8 + size + (size & 1)
    raise ValueError(f"{path}: no data chunk")


def _frames(audio: bytes) -> list[bytes]:
    rest = len(audio) % FRAME_BYTES
    if rest:
        audio = audio + b"\xff" * (FRAME_BYTES - rest)
    return [audio[i : i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]


def _voiced_windows(audio: bytes, threshold_rms: float) -> npt.NDArray[np.bool_]:
    """Per 10 ms window of ``audio``: is it louder than ``threshold_rms``?"""
    pcm = mulaw_to_pcm16_array(audio).astype(np.float64)
    n = len(pcm)
    whole = n - n % _VOICE_WINDOW_BYTES
    out = np.empty(whole // _VOICE_WINDOW_BYTES + (1 if n > whole else 0), dtype=np.bool_)
    if whole:
        w = pcm[:whole].reshape(-1, _VOICE_WINDOW_BYTES)
        out[: whole // _VOICE_WINDOW_BYTES] = np.sqrt(np.mean(w * w, axis=1)) > threshold_rms
    if n > whole:
        tail = pcm[whole:]
        out[-1] = float(np.sqrt(np.mean(tail * tail))) > threshold_rms
    return out


# --- the playback buffer (pure) ------------------------------------------------------------


@dataclass(slots=True)
class HeardSegment:
    """A stretch of agent audio heard without a break, on the line clock (ms)."""

    start_ms: float
    end_ms: float
    audio: bytes = b""


@dataclass(frozen=True, slots=True)
class _QueuedMark:
    name: str


class PlaybackBuffer:
    """Twilio's outbound buffer on the callee's side, on the line clock (ms).

    One FIFO of audio and marks. Audio plays from when it arrives (or when the audio before
    it ends) at 8 bytes per ms; a mark is echoed when playback reaches it (at once if nothing
    is queued); :meth:`clear` drops what is queued and echoes the pending marks. Every method
    takes the current line time; :meth:`advance` plays up to it. Heard audio is kept in
    order with its segments, and each 10 ms window louder than ``voice_threshold_dbfs`` counts
    as agent voice.
    """

    __slots__ = (
        "_items",
        "_offset",
        "_play_ms",
        "_queued_bytes",
        "_segments",
        "_threshold_rms",
        "heard",
        "last_voice_end_ms",
        "voice_ms",
    )

    def __init__(self, *, voice_threshold_dbfs: float = -45.0) -> None:
        self._items: deque[bytes | _QueuedMark] = deque()
        self._offset = 0
        self._play_ms = 0.0
        self._queued_bytes = 0
        self._segments: list[list[float]] = []  # [start_ms, end_ms, offset into heard]
        self._threshold_rms = 32768.0 * 10 ** (voice_threshold_dbfs / 20)
        self.heard = bytearray()
        #: Line time at which the last voiced 10 ms window heard ended (-1: none yet).
        self.last_voice_end_ms = -1.0
        #: Total ms of voiced agent audio heard.
        self.voice_ms = 0.0

    @property
    def heard_ms(self) -> float:
        """Total ms of agent audio heard."""
        return len(self.heard) / _BYTES_PER_MS

    @property
    def queued_ms(self) -> float:
        """Ms of agent audio waiting to play."""
        return (self._queued_bytes - self._offset) / _BYTES_PER_MS

    @property
    def idle(self) -> bool:
        """Nothing queued."""
        return not self._items

    def segments(self) -> list[HeardSegment]:
        """The heard segments with their audio."""
        out: list[HeardSegment] = []
        for i, (start, end, off) in enumerate(self._segments):
            nxt = self._segments[i + 1][2] if i + 1 < len(self._segments) else len(self.heard)
            out.append(HeardSegment(start, end, bytes(self.heard[int(off) : int(nxt)])))
        return out

    def push_audio(self, now_ms: float, audio: bytes) -> list[tuple[str, float]]:
        """Agent audio arrives; returns marks echoed while catching up to ``now_ms``."""
        echoes = self.advance(now_ms)
        if not audio:
            return echoes
        if not self._items:
            self._play_ms = max(self._play_ms, now_ms)
        self._items.append(audio)
        self._queued_bytes += len(audio)
        return echoes

    def push_mark(self, now_ms: float, name: str) -> list[tuple[str, float]]:
        """A mark arrives; echoed at once if nothing is queued."""
        echoes = self.advance(now_ms)
        if not self._items:
            echoes.append((name, now_ms))
        else:
            self._items.append(_QueuedMark(name))
        return echoes

    def clear(self, now_ms: float) -> tuple[list[tuple[str, float]], list[str], int]:
        """``clear`` arrives: play up to now, then drop the rest.

        Returns (marks echoed by playback, marks echoed by the clear, bytes dropped).
        """
        played = self.advance(now_ms)
        cleared: list[str] = []
        dropped = -self._offset
        for item in self._items:
            if isinstance(item, _QueuedMark):
                cleared.append(item.name)
            else:
                dropped += len(item)
        self._items.clear()
        self._offset = 0
        self._queued_bytes = 0
        self._play_ms = max(self._play_ms, now_ms)
        return played, cleared, max(dropped, 0)

    def next_mark_ms(self) -> float | None:
        """Line time at which playback reaches the first queued mark (None: no mark)."""
        pending = -self._offset
        for item in self._items:
            if isinstance(item, _QueuedMark):
                return self._play_ms + pending / _BYTES_PER_MS
            pending += len(item)
        return None

    def advance(self, now_ms: float) -> list[tuple[str, float]]:
        """Play up to ``now_ms``; return the marks reached, with the time each was reached."""
        echoes: list[tuple[str, float]] = []
        items = self._items
        while items:
            head = items[0]
            if isinstance(head, _QueuedMark):
                items.popleft()
                echoes.append((head.name, self._play_ms))
                continue
            can = int((now_ms - self._play_ms) * _BYTES_PER_MS + 1e-6)
            if can <= 0:
                break
            left = len(head) - self._offset
            n = left if left < can else can
            self._hear(head[self._offset : self._offset + n])
            self._offset += n
            if self._offset == len(head):
                items.popleft()
                self._queued_bytes -= len(head)
                self._offset = 0
        if not items and self._play_ms < now_ms:
            self._play_ms = now_ms
        return echoes

    def _hear(self, audio: bytes) -> None:
        start = self._play_ms
        end = start + len(audio) / _BYTES_PER_MS
        segs = self._segments
        if segs and abs(segs[-1][1] - start) < 1e-6:
            segs[-1][1] = end
        else:
            segs.append([start, end, float(len(self.heard))])
        self.heard += audio
        voiced = _voiced_windows(audio, self._threshold_rms)
        if voiced.any():
            self.voice_ms += float(np.count_nonzero(voiced)) * 10.0
            last = int(np.flatnonzero(voiced)[-1])
            self.last_voice_end_ms = min(end, start + (last + 1) * 10.0)
        self._play_ms = end


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EchoedMark:
    """A mark echoed to the engine at line time ``at_ms``; ``cleared``: because of a clear.
    ``heard_ms``: total agent audio heard when it was echoed."""

    name: str
    at_ms: float
    cleared: bool
    heard_ms: float


@dataclass(frozen=True, slots=True)
class ClearReceived:
    """A ``clear`` at line time ``at_ms``: ``heard_ms`` heard in all by then, ``dropped_ms``
    of queued audio discarded."""

    at_ms: float
    heard_ms: float
    dropped_ms: float


@dataclass(slots=True)
class StepRecord:
    """When a script step ran: line ms, the media frames it covers (``first_frame`` is the
    ``chunk`` number of the first frame sent during it), and the agent audio heard by its
    end. A :class:`BargeIn` is recorded as its wait and its ``Say``."""

    step: str
    started_ms: float
    first_frame: int
    ended_ms: float = 0.0
    frames: int = 0
    heard_ms: float = 0.0


@dataclass(slots=True)
class CalleeResult:
    """Everything the callee saw and did.

    ``ended_by``: ``callee_hangup`` (a ``Hangup``, a timed-out wait, or ``max_call_ms``),
    ``callee_drop``, ``engine_closed`` (``close_code`` says how) or ``rejected`` (the
    upgrade was refused with HTTP ``handshake_status``).
    """

    stream_sid: str
    call_sid: str
    account_sid: str
    heard_audio: bytes = b""
    heard_segments: list[HeardSegment] = field(default_factory=list)
    marks_echoed: list[EchoedMark] = field(default_factory=list)
    clears: list[ClearReceived] = field(default_factory=list)
    protocol_violations: list[str] = field(default_factory=list)
    media_received: int = 0
    frames_sent: int = 0
    dtmf_sent: str = ""
    ended_by: str = ""
    close_code: int | None = None
    handshake_status: int | None = None
    script_errors: list[str] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    duration_ms: float = 0.0

    @property
    def heard_ms(self) -> float:
        """Total ms of agent audio heard."""
        return len(self.heard_audio) / _BYTES_PER_MS

    def heard_on_line(self) -> bytes:
        """The heard audio placed on the line clock: byte ``8·t`` is what played at line ms
        ``t``, with mu-law silence where nothing did (up to the end of the last segment)."""
        if not self.heard_segments:
            return b""
        end = round(self.heard_segments[-1].end_ms * _BYTES_PER_MS)
        line = bytearray(b"\xff" * end)
        for seg in self.heard_segments:
            at = round(seg.start_ms * _BYTES_PER_MS)
            line[at : at + len(seg.audio)] = seg.audio
        return bytes(line[:end])

    def heard_utterances(self) -> list[tuple[float, float, str]]:
        """``(start_ms, end_ms, text)`` on the line clock for each agent utterance heard."""
        return [
            (u.start_s * 1000.0, u.end_s * 1000.0, u.text)
            for u in speech.decode(self.heard_on_line())
        ]

    def heard_text(self, *, splice_gap_ms: float = 250.0) -> str:
        """The agent's words as heard, decoded from the sandbox speech.

        Segments less than ``splice_gap_ms`` apart (playback underruns: the agent's audio
        arrived late) are joined end to end before decoding; longer gaps separate utterances.
        """
        texts: list[str] = []
        run: list[bytes] = []
        last_end: float | None = None
        for seg in self.heard_segments:
            if last_end is not None and seg.start_ms - last_end >= splice_gap_ms and run:
                texts.append(speech.decode_text(b"".join(run)))
                run = []
            run.append(seg.audio)
            last_end = seg.end_ms
        if run:
            texts.append(speech.decode_text(b"".join(run)))
        return " ".join(t for t in texts if t)


# --- the callee ----------------------------------------------------------------------------


class _ScriptEnded(Exception):
    """Internal: the script hung up, dropped the line, or the engine closed it."""


def _sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


class SandboxCallee:
    """A fake Twilio media stream connecting to ``url`` and playing ``script``.

    ``auth_token`` signs the upgrade with ``X-Twilio-Signature`` over ``signed_url`` (default
    ``url``: pass the public ``wss://`` URL the engine validates against). ``speed`` scales
    pacing and playback; ``max_call_ms`` (line time) bounds how long the callee stays on the
    line after its script ends. Use :meth:`run` once.
    """

    def __init__(
        self,
        url: str,
        script: CalleeScript | Sequence[Step],
        *,
        speed: float = 1.0,
        custom_parameters: Mapping[str, str] | None = None,
        auth_token: str | None = None,
        signed_url: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        stream_sid: str | None = None,
        call_sid: str | None = None,
        account_sid: str | None = None,
        max_call_ms: float = 120_000.0,
        connect_timeout_s: float = 10.0,
        voice_threshold_dbfs: float = -45.0,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.url = url
        self.script = script if isinstance(script, CalleeScript) else CalleeScript(script)
        self.speed = speed
        self.custom_parameters = dict(custom_parameters or {})
        self.auth_token = auth_token
        self.signed_url = signed_url or url
        self.extra_headers = dict(extra_headers or {})
        self.max_call_ms = max_call_ms
        self.connect_timeout_s = connect_timeout_s
        self.result = CalleeResult(
            stream_sid=stream_sid or _sid("MZ"),
            call_sid=call_sid or _sid("CA"),
            account_sid=account_sid or _sid("AC"),
        )
        self.buffer = PlaybackBuffer(voice_threshold_dbfs=voice_threshold_dbfs)
        self._ws: ClientConnection | None = None
        self._t0 = 0.0
        self._frames = 0
        self._seq = 0
        self._closed = False
        self._changed = asyncio.Event()
        self._until_ref_ms = 0.0
        self._ran = False

    # --- clock and sending -----------------------------------------------------------------

    def line_ms(self) -> float:
        """Line time: ms since ``start`` was sent, scaled by ``speed``."""
        return (asyncio.get_running_loop().time() - self._t0) * 1000.0 * self.speed

    def _next_seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    async def _send(self, message: str | bytes) -> None:
        ws = self._ws
        if ws is None or self._closed:
            raise _ScriptEnded
        try:
            await ws.send(message)
        except ConnectionClosed:
            self._engine_closed()
            raise _ScriptEnded from None

    async def _send_json(self, obj: dict[str, Any]) -> None:
        await self._send(json.dumps(obj, separators=(",", ":")))

    def _engine_closed(self) -> None:
        if not self._closed:
            self._closed = True
            if not self.result.ended_by:
                self.result.ended_by = "engine_closed"
            if self._ws is not None:
                self.result.close_code = self._ws.close_code
        self._changed.set()

    async def _send_frame(self, frame: bytes) -> None:
        """Send one media frame at its time on the 20 ms grid (÷ speed)."""
        loop = asyncio.get_running_loop()
        due = self._t0 + self._frames * FRAME_MS / 1000.0 / self.speed
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if self._closed:
            raise _ScriptEnded
        await self._advance()
        self._frames += 1
        await self._send_json(
            {
                "event": "media",
                "sequenceNumber": self._next_seq(),
                "streamSid": self.result.stream_sid,
                "media": {
                    "track": "inbound",
                    "chunk": str(self._frames),
                    "timestamp": str((self._frames - 1) * FRAME_MS),
                    "payload": base64.b64encode(frame).decode("ascii"),
                },
            }
        )
        self.result.frames_sent = self._frames

    async def _echo(self, marks: list[tuple[str, float]], *, cleared: bool) -> None:
        for name, at_ms in marks:
            try:
                await self._send_json(
                    {
                        "event": "mark",
                        "sequenceNumber": self._next_seq(),
                        "streamSid": self.result.stream_sid,
                        "mark": {"name": name},
                    }
                )
            except _ScriptEnded:
                return  # the line is down: nothing more is echoed
            self.result.marks_echoed.append(EchoedMark(name, at_ms, cleared, self.buffer.heard_ms))

    async def _advance(self) -> None:
        echoes = self.buffer.advance(self.line_ms())
        if echoes:
            await self._echo(echoes, cleared=False)

    # --- running ---------------------------------------------------------------------------

    async def run(self) -> CalleeResult:
        """Connect, play the script, and return what happened once the line is down."""
        if self._ran:
            raise RuntimeError("a SandboxCallee runs once")
        self._ran = True
        headers = dict(self.extra_headers)
        if self.auth_token is not None:
            from twilio.request_validator import RequestValidator

            signature = RequestValidator(self.auth_token).compute_signature(self.signed_url, {})
            headers["X-Twilio-Signature"] = str(signature)
        try:
            connection = await connect(
                self.url,
                additional_headers=headers,
                open_timeout=self.connect_timeout_s,
                ping_interval=None,
                compression=None,
                max_size=None,
                # Read everything as it arrives: a bounded queue would pause reading and make
                # the modelled playback run dry while the agent's audio sits in the socket.
                max_queue=None,
                close_timeout=2,
            )
        except InvalidStatus as exc:  # the engine refused the upgrade itself (e.g. 403)
            self.result.ended_by = "rejected"
            self.result.handshake_status = exc.response.status_code
            return self.result
        async with connection as ws:
            self._ws = ws
            reader = asyncio.create_task(self._read(), name="callee:reader")
            player = asyncio.create_task(self._play(), name="callee:player")
            try:
                await self._open()
                await self._run_script()
            except _ScriptEnded:
                pass
            finally:
                with contextlib.suppress(Exception):
                    await self._advance_quietly()
                self.result.duration_ms = self.line_ms()
                player.cancel()
                if self.result.ended_by != "callee_drop":
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(ws.close(), 2.0)
                reader.cancel()
                await asyncio.wait({reader, player}, timeout=2.0)
                if self.result.close_code is None:
                    self.result.close_code = ws.close_code
        res = self.result
        res.heard_audio = bytes(self.buffer.heard)
        res.heard_segments = self.buffer.segments()
        return res

    async def _advance_quietly(self) -> None:
        if not self._closed:
            await self._advance()

    async def _open(self) -> None:
        await self._send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        self._t0 = asyncio.get_running_loop().time()
        r = self.result
        await self._send_json(
            {
                "event": "start",
                "sequenceNumber": self._next_seq(),
                "streamSid": r.stream_sid,
                "start": {
                    "streamSid": r.stream_sid,
                    "accountSid": r.account_sid,
                    "callSid": r.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": self.custom_parameters,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )

    async def _run_script(self) -> None:
        for step in self.script.steps:
            await self._run_step(step)
        while self.line_ms() < self.max_call_ms:
            await self._send_frame(SILENCE_FRAME)
        await self._hangup("callee_hangup")

    async def _audio(self, audio: bytes) -> None:
        for frame in _frames(audio):
            await self._send_frame(frame)

    async def _silence(self, ms: float) -> None:
        end_frame = self._frames + max(0, round(ms / FRAME_MS))
        while self._frames < end_frame:
            await self._send_frame(SILENCE_FRAME)

    async def _wait_until(self, step: Step, timeout_ms: float, done: Any) -> None:
        deadline = self.line_ms() + timeout_ms
        while not done():
            if self.line_ms() >= deadline:
                self.result.script_errors.append(f"{step!r} timed out")
                await self._hangup("callee_hangup")
            await self._send_frame(SILENCE_FRAME)
        self._until_ref_ms = self.line_ms()

    async def _run_step(self, step: Step) -> None:
        if isinstance(step, BargeIn):
            await self._run_step(UntilAgentHeard(step.after_ms, step.timeout_ms))
            await self._run_step(Say(step.text))
            return
        record = StepRecord(repr(step), self.line_ms(), self._frames + 1)
        self.result.steps.append(record)
        try:
            await self._step(step)
        finally:
            record.ended_ms = self.line_ms()
            record.frames = self._frames + 1 - record.first_frame
            record.heard_ms = self.buffer.heard_ms

    async def _step(self, step: Step) -> None:
        buf = self.buffer
        if isinstance(step, Say):
            await self._audio(speech.synthesize_mulaw(step.text, pitch_hz=step.pitch_hz))
        elif isinstance(step, Play):
            await self._audio(_mulaw(step.audio))
        elif isinstance(step, PlayFile):
            await self._audio(load_mulaw(step.path))
        elif isinstance(step, Tone):
            tone = speech.tone(step.freq_hz, step.ms, level_dbfs=step.level_dbfs)
            await self._audio(pcm16_array_to_mulaw(tone))
        elif isinstance(step, Noise):
            await self._audio(
                pcm16_array_to_mulaw(speech.noise(step.ms, level_dbfs=step.level_dbfs))
            )
        elif isinstance(step, Silence):
            await self._silence(step.ms)
        elif isinstance(step, UntilAgentSpeaks):
            since = self.line_ms()
            await self._wait_until(step, step.timeout_ms, lambda: buf.last_voice_end_ms > since)
        elif isinstance(step, UntilAgentSilent):
            ref, quiet = self._until_ref_ms, step.silence_ms
            await self._wait_until(
                step,
                step.timeout_ms,
                lambda: (
                    buf.last_voice_end_ms > ref and self.line_ms() - buf.last_voice_end_ms >= quiet
                ),
            )
        elif isinstance(step, UntilAgentHeard):
            need, base = step.ms, buf.heard_ms
            await self._wait_until(step, step.timeout_ms, lambda: buf.heard_ms - base >= need)
        elif isinstance(step, UntilCleared):
            clears = len(self.result.clears)
            await self._wait_until(step, step.timeout_ms, lambda: len(self.result.clears) > clears)
        elif isinstance(step, Dtmf):
            for digit in step.digits:
                await self._send_json(
                    {
                        "event": "dtmf",
                        "streamSid": self.result.stream_sid,
                        "sequenceNumber": self._next_seq(),
                        "dtmf": {"track": "inbound_track", "digit": digit},
                    }
                )
                self.result.dtmf_sent += digit
        elif isinstance(step, Send):
            await self._send(step.message)
        elif isinstance(step, Hangup):
            await self._hangup("callee_hangup")
        elif isinstance(step, Drop):
            await self._advance()
            self.result.ended_by = "callee_drop"
            self._closed = True
            ws = self._ws
            if ws is not None and ws.transport is not None:
                ws.transport.abort()
            raise _ScriptEnded
        else:  # pragma: no cover - exhaustive over Step
            raise TypeError(f"unknown script step {step!r}")

    async def _hangup(self, ended_by: str) -> None:
        await self._advance()
        r = self.result
        await self._send_json(
            {
                "event": "stop",
                "sequenceNumber": self._next_seq(),
                "streamSid": r.stream_sid,
                "stop": {"accountSid": r.account_sid, "callSid": r.call_sid},
            }
        )
        r.ended_by = ended_by
        self._closed = True
        raise _ScriptEnded

    # --- the engine's side -----------------------------------------------------------------

    def _violation(self, what: str) -> None:
        self.result.protocol_violations.append(f"{self.line_ms():.0f} ms: {what}")

    async def _read(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    self._violation(f"binary frame of {len(message)} bytes")
                    continue
                await self._on_text(message)
        except (ConnectionClosed, WebSocketException, OSError):
            pass
        finally:
            self._engine_closed()

    async def _on_text(self, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            self._violation(f"malformed JSON: {text[:60]!r}")
            return
        if not isinstance(msg, dict):
            self._violation(f"not a JSON object: {text[:60]!r}")
            return
        event = msg.get("event")
        if msg.get("streamSid") != self.result.stream_sid:
            self._violation(f"{event} with streamSid {msg.get('streamSid')!r}")
            return
        now = self.line_ms()
        if event == "media":
            media = msg.get("media")
            payload = media.get("payload") if isinstance(media, dict) else None
            if not isinstance(payload, str):
                self._violation("media without media.payload")
                return
            try:
                audio = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                self._violation("media payload is not base64")
                return
            if not audio:
                self._violation("empty media payload")
                return
            self.result.media_received += 1
            echoes = self.buffer.push_audio(now, audio)
            self._changed.set()
            if echoes:
                await self._echo(echoes, cleared=False)
        elif event == "mark":
            mark = msg.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str):
                self._violation("mark without mark.name")
                return
            echoes = self.buffer.push_mark(now, name)
            self._changed.set()
            if echoes:
                await self._echo(echoes, cleared=False)
        elif event == "clear":
            played, cleared, dropped = self.buffer.clear(now)
            self.result.clears.append(
                ClearReceived(now, self.buffer.heard_ms, dropped / _BYTES_PER_MS)
            )
            self._changed.set()
            await self._echo(played, cleared=False)
            await self._echo([(name, now) for name in cleared], cleared=True)
        else:
            self._violation(f"unknown event {str(event)[:40]!r}")

    async def _play(self) -> None:
        """Echo each mark when playback reaches it (the sender's ticks advance the rest)."""
        changed = self._changed
        while not self._closed:
            due = self.buffer.next_mark_ms()
            if due is None:
                await changed.wait()
            else:
                delay_s = (due - self.line_ms()) / 1000.0 / self.speed
                if delay_s > 0:
                    try:
                        async with asyncio.timeout(delay_s):
                            await changed.wait()
                    except TimeoutError:
                        pass
            changed.clear()
            if not self._closed:
                await self._advance()


async def run_callee(
    url: str, script: CalleeScript | Sequence[Step], **options: Any
) -> CalleeResult:
    """``SandboxCallee(url, script, **options).run()``."""
    return await SandboxCallee(url, script, **options).run()
