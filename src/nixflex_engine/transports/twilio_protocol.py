"""Twilio Media Streams, sans I/O: parse what Twilio sends, build what we send, model playback.

Nothing here touches a socket or an event loop; the websocket shell
(:mod:`nixflex_engine.transports.twilio_media`) feeds text in and writes text out. Three
pieces, each a plain class:

- :class:`TwilioMediaProtocol` parses inbound JSON text messages
  (``wire-protocols.md`` §1.3) into typed events — :class:`ConnectedEvent`,
  :class:`StartEvent`, :class:`MediaEvent`, :class:`MarkEvent`, :class:`DtmfEvent`,
  :class:`StopEvent` — and serializes the outbound ``media``/``mark``/``clear`` messages (§1.4)
  with the stream's ``streamSid`` on each. Anything it cannot use (malformed JSON, an unknown
  event, a missing field, bad base64, a wrong media format, a message for another stream) comes
  back as a :class:`Skip` with a reason; it never raises on input.
- :class:`Reframer` cuts agent audio of any size into Twilio's 160-byte (20 ms) frames.
- :class:`PlayoutModel` models Twilio's outbound buffer: audio plays in order, in real time,
  from the moment it is sent (or when the audio already buffered ends). From it come the play
  time of every frame, whether the agent is audible, and — on a ``clear`` — how many
  milliseconds of each chunk the caller heard.

Sequence numbers
----------------
Twilio numbers its messages (``sequenceNumber``, a string counter from ``"1"``). Over one TCP
connection they arrive in order, so an anomaly means a buggy or replaying sender. We *tolerate*
them: every message is still delivered at once, in arrival order (reordering would add latency
and audio timing is carried by ``media.timestamp`` anyway). A number not above the highest seen
counts as ``out_of_order``, a jump counts the numbers skipped as ``gaps``; the highest number
seen only moves forward. ``last_sequence_anomaly`` tells the shell to log the message. The
number is diagnostic only: a missing or unparsable one is tolerated too.
"""

from __future__ import annotations

import binascii
import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "FRAME_BYTES",
    "FRAME_MS",
    "MULAW_SILENCE_BYTE",
    "ClearOutcome",
    "ConnectedEvent",
    "DtmfEvent",
    "InboundEvent",
    "MarkEcho",
    "MarkEvent",
    "MediaEvent",
    "PendingMark",
    "PlayoutModel",
    "ProtocolStats",
    "Reframer",
    "Skip",
    "StartEvent",
    "StopEvent",
    "TwilioMediaProtocol",
    "split_frames",
]

#: Bytes in one 20 ms mu-law frame at 8 kHz.
FRAME_BYTES: Final = 160
#: Milliseconds of audio in one frame.
FRAME_MS: Final = 20
#: The mu-law code of a zero sample, used to pad partial frames.
MULAW_SILENCE_BYTE: Final = 0xFF
#: Mu-law bytes per millisecond at 8 kHz.
_BYTES_PER_MS: Final = 8.0

_MULAW: Final = "audio/x-mulaw"
_b64decode: Final = binascii.a2b_base64
_b64encode: Final = binascii.b2a_base64


# --- inbound events ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectedEvent:
    """``connected``: the first message on the socket."""

    protocol: str = "Call"
    version: str = ""


@dataclass(frozen=True, slots=True)
class StartEvent:
    """``start``: the stream is up. Sent once, right after ``connected``."""

    stream_sid: str
    call_sid: str
    account_sid: str = ""
    tracks: tuple[str, ...] = ("inbound",)
    custom_parameters: Mapping[str, str] = field(default_factory=dict)
    encoding: str = _MULAW
    sample_rate: int = 8000
    channels: int = 1
    sequence_number: int | None = None


@dataclass(slots=True)
class MediaEvent:
    """``media``: 20 ms of caller audio (mu-law bytes, decoded from base64).

    Not frozen: this is made 50 times a second per call, and a frozen dataclass's
    ``__init__`` costs about a microsecond more.
    """

    payload: bytes
    timestamp_ms: int
    chunk: int
    track: str = "inbound"
    sequence_number: int | None = None


@dataclass(frozen=True, slots=True)
class MarkEvent:
    """``mark``: Twilio echoes a mark we sent (played, or discarded by a ``clear``)."""

    name: str
    sequence_number: int | None = None


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    """``dtmf``: the caller pressed a key."""

    digit: str
    track: str = "inbound_track"
    sequence_number: int | None = None


@dataclass(frozen=True, slots=True)
class StopEvent:
    """``stop``: the stream is over (the call hung up or the stream was stopped)."""

    call_sid: str = ""
    account_sid: str = ""
    sequence_number: int | None = None


@dataclass(frozen=True, slots=True)
class Skip:
    """A message that was not used. ``reason`` is a stable slug; ``detail`` is for the log."""

    reason: str
    detail: str = ""
    event: str | None = None


InboundEvent = ConnectedEvent | StartEvent | MediaEvent | MarkEvent | DtmfEvent | StopEvent


@dataclass(slots=True)
class ProtocolStats:
    """Counters of one stream's inbound messages."""

    messages: int = 0
    media: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    out_of_order: int = 0
    gaps: int = 0


class _Invalid(Exception):
    """Internal: a message lacks a field or has a bad one (becomes a :class:`Skip`)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _obj(msg: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise _Invalid("missing_field", f"{key} must be an object")
    return value


def _str(msg: Mapping[str, Any], key: str, where: str) -> str:
    value = msg.get(key)
    if not isinstance(value, str) or not value:
        raise _Invalid("missing_field", f"{where}.{key} must be a non-empty string")
    return value


def _int(value: Any, what: str) -> int:
    """Twilio sends counters as strings ("5"); accept ints too, nothing else."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        try:
            return int(value)
        except ValueError:
            pass
    raise _Invalid("bad_field", f"{what} must be an integer string, got {value!r}")


# --- the protocol ------------------------------------------------------------------------


class TwilioMediaProtocol:
    """One media stream's protocol state: parse inbound text, serialize outbound messages.

    ``receive(text)`` returns an :data:`InboundEvent` or a :class:`Skip`; it never raises.
    After a valid ``start``, :attr:`stream_sid` is set, messages for any other stream are
    skipped, and the ``*_message`` serializers can be used. Outbound messages are exactly
    ``json.dumps(obj, separators=(",", ":"))`` of the shapes in ``wire-protocols.md`` §1.4.
    """

    __slots__ = (
        "_clear_msg",
        "_highest_seq",
        "_prefix_mark",
        "_prefix_media",
        "last_sequence_anomaly",
        "start",
        "stats",
        "stream_sid",
    )

    def __init__(self) -> None:
        self.stream_sid: str | None = None
        self.start: StartEvent | None = None
        self.stats = ProtocolStats()
        #: ``"out_of_order"``/``"gap"`` when the last message broke the sequence, else None.
        self.last_sequence_anomaly: str | None = None
        self._highest_seq = 0
        self._prefix_media = ""
        self._prefix_mark = ""
        self._clear_msg = ""

    # --- inbound -------------------------------------------------------------------------

    def receive(self, text: str | bytes) -> InboundEvent | Skip:
        """Parse one text message from Twilio."""
        self.stats.messages += 1
        self.last_sequence_anomaly = None
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError) as exc:
            return self._skip("malformed_json", str(exc)[:120])
        if not isinstance(msg, dict):
            return self._skip("malformed_json", f"expected an object, got {type(msg).__name__}")
        event = msg.get("event")
        try:
            if event == "media":  # the hot path: 50 per second per call
                return self._media(msg)
            if event == "mark":
                return self._mark(msg)
            if event == "dtmf":
                return self._dtmf(msg)
            if event == "start":
                return self._start(msg)
            if event == "stop":
                return self._stop(msg)
            if event == "connected":
                return ConnectedEvent(
                    protocol=str(msg.get("protocol", "")), version=str(msg.get("version", ""))
                )
        except _Invalid as exc:
            return self._skip(exc.reason, exc.detail, event if isinstance(event, str) else None)
        if not isinstance(event, str):
            return self._skip("missing_field", "event must be a string")
        return self._skip("unknown_event", event[:40], event[:40])

    def receive_binary(self, data: bytes) -> Skip:
        """Twilio never sends binary frames: refuse one."""
        self.stats.messages += 1
        return self._skip("binary_frame", f"{len(data)} bytes")

    def _skip(self, reason: str, detail: str = "", event: str | None = None) -> Skip:
        skipped = self.stats.skipped
        skipped[reason] = skipped.get(reason, 0) + 1
        return Skip(reason, detail, event)

    def _sequence(self, msg: Mapping[str, Any]) -> int | None:
        raw = msg.get("sequenceNumber")
        if raw is None:
            return None
        try:
            seq = int(raw) if type(raw) is str else _int(raw, "sequenceNumber")
        except (ValueError, _Invalid):
            return None
        highest = self._highest_seq
        if seq <= highest:
            self.stats.out_of_order += 1
            self.last_sequence_anomaly = "out_of_order"
        else:
            if seq > highest + 1 and highest:
                self.stats.gaps += seq - highest - 1
                self.last_sequence_anomaly = "gap"
            self._highest_seq = seq
        return seq

    def _check_stream(self, msg: Mapping[str, Any]) -> None:
        sid = self.stream_sid
        if sid is None:
            raise _Invalid("before_start", "no start message yet")
        if msg.get("streamSid") != sid:
            raise _Invalid("stream_sid_mismatch", f"streamSid {str(msg.get('streamSid'))[:40]!r}")

    def _media(self, msg: Mapping[str, Any]) -> MediaEvent:
        if msg.get("streamSid") != self.stream_sid or self.stream_sid is None:
            self._check_stream(msg)  # raises the precise reason
        media = msg.get("media")
        if type(media) is not dict:
            raise _Invalid("missing_field", "media must be an object")
        payload = media.get("payload")
        if type(payload) is not str:
            raise _Invalid("missing_field", "media.payload must be a string")
        try:
            audio = _b64decode(payload, strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise _Invalid("bad_base64", str(exc)[:80]) from None
        if not audio:
            raise _Invalid("empty_payload", "media.payload is empty")
        track = media.get("track", "inbound")
        if track != "inbound":
            raise _Invalid("unexpected_track", f"media.track {str(track)[:20]!r}")
        timestamp = media.get("timestamp")
        chunk = media.get("chunk")
        # Twilio sends both as decimal strings; the fast path skips _int's type checks.
        if type(timestamp) is str and type(chunk) is str:
            try:
                ts, ch = int(timestamp), int(chunk)
            except ValueError:
                raise _Invalid("bad_field", "media.timestamp/chunk must be integers") from None
        else:
            ts = _int(timestamp, "media.timestamp")
            ch = _int(chunk, "media.chunk")
        seq = self._sequence(msg)
        self.stats.media += 1
        return MediaEvent(audio, ts, ch, "inbound", seq)

    def _mark(self, msg: Mapping[str, Any]) -> MarkEvent:
        self._check_stream(msg)
        name = _str(_obj(msg, "mark"), "name", "mark")
        return MarkEvent(name, self._sequence(msg))

    def _dtmf(self, msg: Mapping[str, Any]) -> DtmfEvent:
        self._check_stream(msg)
        dtmf = _obj(msg, "dtmf")
        digit = _str(dtmf, "digit", "dtmf")
        return DtmfEvent(digit, str(dtmf.get("track", "inbound_track")), self._sequence(msg))

    def _stop(self, msg: Mapping[str, Any]) -> StopEvent:
        self._check_stream(msg)
        stop = msg.get("stop")
        info: Mapping[str, Any] = stop if isinstance(stop, dict) else {}
        return StopEvent(
            call_sid=str(info.get("callSid", "")),
            account_sid=str(info.get("accountSid", "")),
            sequence_number=self._sequence(msg),
        )

    def _start(self, msg: Mapping[str, Any]) -> StartEvent:
        if self.stream_sid is not None:
            raise _Invalid("duplicate_start", "the stream has already started")
        start = _obj(msg, "start")
        stream_sid = start.get("streamSid") or msg.get("streamSid")
        if not isinstance(stream_sid, str) or not stream_sid:
            raise _Invalid("missing_field", "start.streamSid must be a non-empty string")
        call_sid = _str(start, "callSid", "start")
        account_sid = start.get("accountSid", "")
        params = start.get("customParameters", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise _Invalid("bad_field", "start.customParameters must be an object")
        tracks = start.get("tracks", ["inbound"])
        if not isinstance(tracks, list):
            raise _Invalid("bad_field", "start.tracks must be a list")
        fmt = start.get("mediaFormat")
        encoding, rate, channels = _MULAW, 8000, 1
        if fmt is not None:
            if not isinstance(fmt, dict):
                raise _Invalid("bad_field", "start.mediaFormat must be an object")
            encoding = fmt.get("encoding", _MULAW)
            rate = _int(fmt.get("sampleRate", 8000), "mediaFormat.sampleRate")
            channels = _int(fmt.get("channels", 1), "mediaFormat.channels")
        if encoding != _MULAW or rate != 8000 or channels != 1:
            raise _Invalid(
                "unsupported_media_format",
                f"{str(encoding)[:30]} {rate} Hz x{channels}; only audio/x-mulaw 8000 Hz mono",
            )
        event = StartEvent(
            stream_sid=stream_sid,
            call_sid=call_sid,
            account_sid=str(account_sid),
            tracks=tuple(str(t) for t in tracks),
            custom_parameters={str(k): str(v) for k, v in params.items()},
            encoding=encoding,
            sample_rate=rate,
            channels=channels,
            sequence_number=self._sequence(msg),
        )
        self.started(event)
        return event

    def started(self, event: StartEvent) -> None:
        """Adopt ``event`` as this stream's start (done by :meth:`receive`; public so a stream
        whose ``start`` was read elsewhere can be handed on)."""
        self.start = event
        self.stream_sid = event.stream_sid
        sid = json.dumps(event.stream_sid)
        self._prefix_media = '{"event":"media","streamSid":' + sid + ',"media":{"payload":"'
        self._prefix_mark = '{"event":"mark","streamSid":' + sid + ',"mark":{"name":'
        self._clear_msg = '{"event":"clear","streamSid":' + sid + "}"
        if event.sequence_number is not None:
            self._highest_seq = max(self._highest_seq, event.sequence_number)

    # --- outbound ------------------------------------------------------------------------

    def _require_start(self) -> None:
        if self.stream_sid is None:
            raise RuntimeError("no streamSid yet: outbound messages need a started stream")

    def media_message(self, audio: bytes) -> str:
        """A ``media`` message carrying ``audio`` (raw mu-law, base64-encoded)."""
        if not self._prefix_media:
            self._require_start()
        return self._prefix_media + _b64encode(audio, newline=False).decode("ascii") + '"}}'

    def mark_message(self, name: str) -> str:
        """A ``mark`` message: Twilio echoes it once the audio sent before it has played."""
        if not self._prefix_mark:
            self._require_start()
        return self._prefix_mark + json.dumps(name) + "}}"

    def clear_message(self) -> str:
        """A ``clear`` message: Twilio drops its buffered audio and echoes pending marks."""
        if not self._clear_msg:
            self._require_start()
        return self._clear_msg


# --- reframing ---------------------------------------------------------------------------


class Reframer:
    """Cuts audio of any size into whole 160-byte frames, keeping the remainder."""

    __slots__ = ("_rest",)

    def __init__(self) -> None:
        self._rest = b""

    @property
    def pending(self) -> int:
        """Bytes held back (fewer than one frame)."""
        return len(self._rest)

    def push(self, audio: bytes) -> bytes:
        """Add ``audio``; return the whole frames now complete (a multiple of 160 bytes)."""
        data = self._rest + audio if self._rest else audio
        whole = len(data) - len(data) % FRAME_BYTES
        self._rest = data[whole:]
        return data[:whole]

    def flush(self) -> bytes:
        """The remainder padded with mu-law silence to one frame (``b""`` if none)."""
        rest = self._rest
        if not rest:
            return b""
        self._rest = b""
        return rest + bytes([MULAW_SILENCE_BYTE]) * (FRAME_BYTES - len(rest))

    def drop(self) -> int:
        """Discard the remainder; return how many bytes were dropped."""
        n = len(self._rest)
        self._rest = b""
        return n


def split_frames(audio: bytes) -> list[bytes]:
    """``audio`` (a multiple of 160 bytes) as a list of 160-byte frames."""
    return [audio[i : i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]


# --- the playout model -------------------------------------------------------------------

# A stretch of audio scheduled contiguously: (clock ms it starts playing, audio ms).
_Segment = list[float]


def _add_segment(segments: list[_Segment], start_ms: float, audio_ms: float, speed: float) -> None:
    if segments:
        last = segments[-1]
        if abs(last[0] + last[1] / speed - start_ms) < 1e-6:
            last[1] += audio_ms
            return
    segments.append([start_ms, audio_ms])


def _heard(segments: list[_Segment], now_ms: float, speed: float) -> float:
    total = 0.0
    for start, audio_ms in segments:
        played = (now_ms - start) * speed
        if played > 0:
            total += audio_ms if played > audio_ms else played
    return total


@dataclass(slots=True)
class PendingMark:
    """A mark sent to Twilio and not yet echoed."""

    name: str
    due_ms: float
    internal: bool = False
    segments: list[_Segment] = field(default_factory=list)
    cleared_at_ms: float | None = None
    heard_at_clear_ms: float = 0.0
    echoed: bool = False

    @property
    def audio_ms(self) -> float:
        """Milliseconds of audio this mark covers (sent after the previous mark)."""
        return sum(s[1] for s in self.segments)


@dataclass(frozen=True, slots=True)
class MarkEcho:
    """What a mark echo means: ``heard_ms`` of its audio heard; ``cleared`` if cut by a clear."""

    name: str
    heard_ms: float
    cleared: bool
    internal: bool
    mark: PendingMark


@dataclass(frozen=True, slots=True)
class ClearOutcome:
    """A ``clear`` at ``at_ms``: ``heard`` maps chunk ids to audio ms heard."""

    at_ms: float
    heard: dict[str, float]
    was_speaking: bool


class PlayoutModel:
    """Twilio's outbound buffer, modelled: audio plays in order, in real time times ``speed``.

    Times are on the pipeline clock (ms); audio lengths are audio ms (bytes / 8). A frame sent
    at ``now`` is scheduled to play at ``max(now, end of buffered audio)``; so the buffer
    drains at ``buffer_end_ms``. ``speed`` > 1 models a test callee that plays faster.

    Network latency needs no correction for the heard figures: the audio reaches Twilio (and
    starts playing) one transit later than modelled, and a ``clear`` takes effect one transit
    later too, so the difference is what the caller heard.

    The model knows the chunks of the current *speaking run* — from the moment audio starts
    playing on an idle line until it drains or is cleared (a chunk still being sent when the
    buffer ran dry carries over) — and the marks still pending.
    A mark covers the audio sent since the previous mark; its echo is the truth that all that
    audio has played, so the agent counts as speaking until the last pending mark is echoed
    (or ``mark_timeout_ms`` after the modelled drain, if an echo never comes).
    """

    __slots__ = (
        "_buffer_end_ms",
        "_chunks",
        "_marks",
        "_speaking",
        "_unmarked",
        "mark_timeout_ms",
        "speed",
    )

    def __init__(self, *, speed: float = 1.0, mark_timeout_ms: float = 5000.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self.mark_timeout_ms = mark_timeout_ms
        self._buffer_end_ms = 0.0
        self._speaking = False
        self._chunks: dict[str, list[_Segment]] = {}
        self._marks: deque[PendingMark] = deque()
        self._unmarked: list[_Segment] = []

    @property
    def speaking(self) -> bool:
        """Whether agent audio is (modelled as) playing or not yet confirmed played."""
        return self._speaking

    @property
    def buffer_end_ms(self) -> float:
        """Clock time at which the buffered audio finishes playing."""
        return self._buffer_end_ms

    @property
    def pending_marks(self) -> int:
        """Marks sent and not yet echoed."""
        return len(self._marks)

    @property
    def last_mark(self) -> PendingMark | None:
        """The most recently sent mark still pending."""
        return self._marks[-1] if self._marks else None

    @property
    def has_unmarked_audio(self) -> bool:
        """Whether audio was sent after the last mark (so no echo will confirm it)."""
        return bool(self._unmarked)

    def buffered_ms(self, now_ms: float) -> float:
        """Audio ms still to play at ``now_ms``."""
        return max(0.0, self._buffer_end_ms - now_ms) * self.speed

    def schedule(self, now_ms: float, nbytes: int, chunk_id: str = "") -> float:
        """``nbytes`` of audio sent at ``now_ms``: return the clock time it starts playing."""
        play_at = self._buffer_end_ms if self._buffer_end_ms > now_ms else now_ms
        audio_ms = nbytes / _BYTES_PER_MS
        self._buffer_end_ms = play_at + audio_ms / self.speed
        if not self._speaking:
            # A new speaking run: forget chunks of earlier runs, except the one continuing
            # (a TTS that fell behind mid-chunk lets the buffer drain for a moment).
            kept = self._chunks.get(chunk_id)
            self._chunks = {chunk_id: kept} if kept is not None else {}
        segs = self._chunks.get(chunk_id)
        if segs is None:
            self._chunks[chunk_id] = [[play_at, audio_ms]]
        else:
            _add_segment(segs, play_at, audio_ms, self.speed)
        _add_segment(self._unmarked, play_at, audio_ms, self.speed)
        self._speaking = True
        return play_at

    def add_mark(self, now_ms: float, name: str, *, internal: bool = False) -> PendingMark:
        """A mark sent at ``now_ms``, after the audio sent so far."""
        due = self._buffer_end_ms if self._buffer_end_ms > now_ms else now_ms
        mark = PendingMark(name, due, internal, self._unmarked)
        self._unmarked = []
        self._marks.append(mark)
        return mark

    def echo(self, now_ms: float, name: str) -> MarkEcho | None:
        """Twilio echoed mark ``name`` at ``now_ms``; ``None`` if no such mark is pending.

        Echoes come in the order marks were sent; the first pending mark of that name is
        taken. If it was the last pending mark and no audio was sent after it, the buffer is
        known to be empty: the model re-anchors its drain time to ``now_ms`` if it had
        expected a later one.
        """
        marks = self._marks
        mark: PendingMark | None = None
        if marks and marks[0].name == name:
            mark = marks.popleft()
        else:
            for m in marks:
                if m.name == name:
                    mark = m
                    break
            if mark is None:
                return None
            marks.remove(mark)
        mark.echoed = True
        cut = mark.cleared_at_ms is not None and mark.due_ms > mark.cleared_at_ms + 1e-6
        heard = mark.heard_at_clear_ms if cut else mark.audio_ms
        if not marks and not self._unmarked and self._buffer_end_ms > now_ms:
            self._buffer_end_ms = now_ms
        return MarkEcho(name, heard, cut, mark.internal, mark)

    def clear(self, now_ms: float) -> ClearOutcome:
        """Twilio's buffer is cleared at ``now_ms``: what of each chunk was heard."""
        speed = self.speed
        heard: dict[str, float] = {}
        for chunk_id, segs in self._chunks.items():
            ms = _heard(segs, now_ms, speed)
            if ms > 0:
                heard[chunk_id] = ms
        for mark in self._marks:
            if mark.cleared_at_ms is None:
                mark.cleared_at_ms = now_ms
                mark.heard_at_clear_ms = _heard(mark.segments, now_ms, speed)
        was_speaking = self._speaking
        if self._buffer_end_ms > now_ms:
            self._buffer_end_ms = now_ms
        self._unmarked = []
        self._chunks = {}
        self._speaking = False
        return ClearOutcome(now_ms, heard, was_speaking)

    def next_deadline(self) -> float | None:
        """When :meth:`poll_stopped` may next change its answer (None: nothing to watch)."""
        if not self._speaking:
            return None
        if self._marks:
            return self._buffer_end_ms + self.mark_timeout_ms
        return self._buffer_end_ms

    def poll_stopped(self, now_ms: float) -> float | None:
        """If the agent's audio has now finished, mark the run over and return when it ended.

        Finished means drained per the model, with no mark pending (or pending marks overdue
        by ``mark_timeout_ms``). Returns the drain time (≤ ``now_ms``), else ``None``.
        """
        if not self._speaking or now_ms < self._buffer_end_ms:
            return None
        if self._marks and now_ms < self._buffer_end_ms + self.mark_timeout_ms:
            return None
        self._speaking = False
        return self._buffer_end_ms

    def overdue_marks(self, now_ms: float) -> list[PendingMark]:
        """Pending marks whose echo is more than ``mark_timeout_ms`` late."""
        return [m for m in self._marks if now_ms >= m.due_ms + self.mark_timeout_ms]
