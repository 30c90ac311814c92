"""Twilio media-stream transport (server side): the websocket shell around the sans-I/O core.

One :class:`TwilioMediaTransport` per call wraps the socket Twilio opened; it builds the two
processors that sit at the ends of the call's chain, like Pipecat's ``transport.input()`` and
``transport.output()``::

    transport = TwilioMediaTransport(socket, start=start)
    Pipeline([transport.input(), MulawDecoder(), ..., DeepgramTTS(), transport.output(), ...])

:class:`TwilioInput` — consumes: ``StartFrame`` (starts the socket reader). Emits
downstream: ``TransportStartedFrame`` (Twilio ``start``), ``InputAudioFrame`` per ``media``,
``DTMFFrame``, and ``CancelFrame(reason="caller_hangup")`` on ``stop`` or
``CancelFrame(reason="socket_lost")`` when the socket closes without one. Mark echoes go to
the output side. Bad messages (and binary frames) are logged and skipped.

:class:`TwilioOutput` — consumes (downstream): ``OutputAudioFrame`` (sent as 160-byte
``media`` messages), ``MarkFrame`` (a Twilio ``mark``), ``TTSStoppedFrame`` (flushes),
``InterruptionFrame`` (sends ``clear``) and ``EndCallFrame`` (held until its audio is heard);
all are passed on downstream. Emits, BOTH upstream and downstream: ``BotStartedSpeakingFrame``,
``PlayedAudioFrame``, ``MarkPlayedFrame``, ``PlaybackClearedFrame``,
``BotStoppedSpeakingFrame``.

Audio is not paced: Twilio buffers it and plays it in real time, so every frame is sent at
once and :class:`~nixflex_engine.transports.twilio_protocol.PlayoutModel` works out when it
plays. Reframing: whole frames go out as soon as they are complete; a remainder under 160
bytes waits for the next audio of the same chunk, and is padded with mu-law silence (0xFF)
and sent at a chunk boundary — a ``MarkFrame``, ``TTSStoppedFrame``, ``EndCallFrame``,
``EndFrame``, a new ``chunk_id`` — or when the buffer is about to run dry (so a producer
that never marks its audio does not lose its tail). An interruption drops it.

The reader shares the event loop fairly (:class:`~nixflex_engine.pipeline.TimeSlice`): when
the socket has a backlog (the loop fell behind, so ``receive`` returns at once message after
message), it runs the chain for at most ``reader_slice_ms`` in one go and then lets every
other ready task run before it goes on, instead of draining the whole backlog in one step
while other calls' tokens, audio and marks wait.

``EndCallFrame``: if audio was sent after the last mark, the output sends a mark of its own
(no ``MarkPlayedFrame`` for it), then holds the frame until that mark is echoed — all audio
heard — and passes it downstream. It passes at once when nothing is pending or the socket is
gone, and after ``end_call_timeout_ms`` past the modelled drain if the echo never comes. If
the caller hangs up while it is held, the held frame is released first (the agent had
decided to end the call) and the input's ``CancelFrame`` follows.

:func:`serve_twilio_stream` / :func:`twilio_media_route` are the Starlette endpoint: accept,
read ``connected`` and ``start``, run the ``authorize`` hook (``X-Twilio-Signature`` and a
per-call token), build the transport and hand it to ``on_stream``, which runs the pipeline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketState

from nixflex_engine.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    DTMFFrame,
    EndCallFrame,
    EndFrame,
    EndReason,
    Frame,
    InputAudioFrame,
    InterruptionFrame,
    MarkFrame,
    MarkPlayedFrame,
    OutputAudioFrame,
    PlaybackClearedFrame,
    PlayedAudioFrame,
    StartFrame,
    TransportStartedFrame,
    TTSStoppedFrame,
)
from nixflex_engine.log import get_logger, log_event
from nixflex_engine.pipeline import (
    DOWNSTREAM,
    UPSTREAM,
    FrameDirection,
    FrameProcessor,
    TimeSlice,
)
from nixflex_engine.transports.twilio_protocol import (
    FRAME_BYTES,
    FRAME_MS,
    ConnectedEvent,
    DtmfEvent,
    MarkEvent,
    MediaEvent,
    PendingMark,
    PlayoutModel,
    Reframer,
    Skip,
    StartEvent,
    StopEvent,
    TwilioMediaProtocol,
)

__all__ = [
    "REASON_SOCKET_LOST",
    "REASON_STREAM_STOPPED",
    "WS_CLOSE_POLICY_VIOLATION",
    "WS_CLOSE_PROTOCOL_ERROR",
    "WS_CLOSE_UNSUPPORTED_DATA",
    "Authorizer",
    "MediaSocket",
    "OnStream",
    "OutputStats",
    "StarletteMediaSocket",
    "StreamAuthRequest",
    "TwilioInput",
    "TwilioMediaTransport",
    "TwilioOutput",
    "serve_twilio_stream",
    "signature_authorizer",
    "twilio_media_route",
    "twilio_signature_valid",
]

_log = get_logger(__name__)

#: ``CancelFrame.reason`` when Twilio sends ``stop`` (the call is over).
REASON_STREAM_STOPPED: Final = EndReason.CALLER_HANGUP.value
#: ``CancelFrame.reason`` when the socket closes or fails without a ``stop``.
REASON_SOCKET_LOST: Final = "socket_lost"

WS_CLOSE_PROTOCOL_ERROR: Final = 1002
WS_CLOSE_UNSUPPORTED_DATA: Final = 1003
WS_CLOSE_POLICY_VIOLATION: Final = 1008

_INTERNAL_MARK_PREFIX: Final = "nixflex:end-call:"


# --- the socket ----------------------------------------------------------------------------


class MediaSocket(Protocol):
    """The little the transport needs from a websocket (Starlette's, or a test double)."""

    async def receive(self) -> str | bytes | None:
        """The next message: text, binary, or ``None`` once the socket is closed."""
        ...

    async def send_text(self, text: str) -> None:
        """Send one text message; raises if the socket is gone."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket (a no-op if it is already closed); never raises."""
        ...


class StarletteMediaSocket:
    """:class:`MediaSocket` over an accepted Starlette ``WebSocket``."""

    __slots__ = ("_closed", "_ws", "close_code")

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket
        self._closed = False
        #: The close code the peer sent (``1006``: the connection dropped without one).
        self.close_code: int | None = None

    async def receive(self) -> str | bytes | None:
        if self._closed:
            return None
        try:
            msg = await self._ws.receive()
        except Exception:
            self._closed = True
            return None
        if msg["type"] == "websocket.disconnect":
            self._closed = True
            self.close_code = msg.get("code")
            return None
        text = msg.get("text")
        if text is not None:
            return str(text)
        data = msg.get("bytes")
        return bytes(data) if data is not None else b""

    async def send_text(self, text: str) -> None:
        await self._ws.send_text(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._ws.application_state == WebSocketState.DISCONNECTED:
            return
        try:
            await self._ws.close(code, reason)
        except Exception:
            pass


# --- the transport -------------------------------------------------------------------------


@dataclass(slots=True)
class OutputStats:
    """Counters of what the output sent and heard back."""

    media_messages: int = 0
    marks_sent: int = 0
    marks_echoed: int = 0
    clears: int = 0
    dropped_bytes: int = 0
    padded_bytes: int = 0


class TwilioMediaTransport:
    """One call's Twilio media stream: the socket, the protocol state and both processors.

    ``start``: the stream's ``start`` if it was already read (by :func:`serve_twilio_stream`);
    otherwise the input reads it. ``playout_speed`` > 1 only for test callees that play
    faster than real time. ``mark_timeout_ms``: how late after the modelled drain a mark echo
    may be before the agent counts as silent anyway; ``end_call_timeout_ms``: the same for
    releasing a held ``EndCallFrame``. ``reader_slice_ms``: how long the reader may run the
    chain on a backlog before it yields to the other tasks (see the module doc).
    """

    __slots__ = (
        "_input",
        "_lost_logged",
        "_open",
        "_output",
        "_skip_counts",
        "end_call_timeout_ms",
        "mark_timeout_ms",
        "name",
        "playout_speed",
        "protocol",
        "reader_slice_ms",
        "socket",
    )

    def __init__(
        self,
        socket: MediaSocket,
        *,
        start: StartEvent | None = None,
        protocol: TwilioMediaProtocol | None = None,
        playout_speed: float = 1.0,
        mark_timeout_ms: float = 5000.0,
        end_call_timeout_ms: float = 5000.0,
        reader_slice_ms: float = 2.0,
        name: str = "twilio",
    ) -> None:
        if playout_speed <= 0:
            raise ValueError("playout_speed must be positive")
        if reader_slice_ms < 0:
            raise ValueError("reader_slice_ms must not be negative")
        self.socket = socket
        self.protocol = protocol or TwilioMediaProtocol()
        if start is not None and self.protocol.start is None:
            self.protocol.started(start)
        self.playout_speed = playout_speed
        self.mark_timeout_ms = mark_timeout_ms
        self.end_call_timeout_ms = end_call_timeout_ms
        self.reader_slice_ms = reader_slice_ms
        self.name = name
        self._open = True
        self._lost_logged = False
        self._skip_counts: dict[str, int] = {}
        self._input: TwilioInput | None = None
        self._output: TwilioOutput | None = None

    def input(self) -> TwilioInput:
        """The input processor (the same object on every call)."""
        if self._input is None:
            self._input = TwilioInput(self, name=f"{self.name}.input")
        return self._input

    def output(self) -> TwilioOutput:
        """The output processor (the same object on every call)."""
        if self._output is None:
            self._output = TwilioOutput(self, name=f"{self.name}.output")
        return self._output

    @property
    def start(self) -> StartEvent | None:
        """The stream's ``start``, once known."""
        return self.protocol.start

    @property
    def socket_open(self) -> bool:
        """False once the socket closed, failed, or the stream stopped."""
        return self._open

    @property
    def call_id(self) -> str:
        """The call id for logs: ``customParameters.call_id``, else the call sid."""
        start = self.protocol.start
        if start is None:
            return ""
        return start.custom_parameters.get("call_id") or start.call_sid

    async def send(self, text: str) -> bool:
        """Send one message; on failure mark the socket lost (once) and return False."""
        if not self._open:
            return False
        try:
            await self.socket.send_text(text)
        except Exception as exc:
            self.mark_lost(f"send failed: {type(exc).__name__}")
            return False
        return True

    def mark_lost(self, why: str) -> None:
        """The socket can no longer carry messages (closed, failed or stream stopped)."""
        self._open = False
        if not self._lost_logged:
            self._lost_logged = True
            log_event(_log, "twilio.socket_closed", call_id=self.call_id, why=why)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket (idempotent; never raises)."""
        self._open = False
        await self.socket.close(code, reason)

    def log_skip(self, skip: Skip) -> None:
        """Log a skipped message: each reason's 1st-10th, then every 100th occurrence."""
        n = self._skip_counts.get(skip.reason, 0) + 1
        self._skip_counts[skip.reason] = n
        if n <= 10 or n % 100 == 0:
            log_event(
                _log,
                "twilio.message_skipped",
                level=logging.WARNING,
                call_id=self.call_id,
                reason=skip.reason,
                detail=skip.detail,
                event_type=skip.event,
                count=n,
            )

    def log_sequence_anomaly(self, seq: int | None) -> None:
        """Log an out-of-order or gapped sequence number (tolerated; see the protocol)."""
        kind = self.protocol.last_sequence_anomaly or "sequence"
        self.log_skip(Skip(kind, f"sequenceNumber {seq}; delivered anyway"))


# --- input ---------------------------------------------------------------------------------


class TwilioInput(FrameProcessor):
    """Reads the socket: caller audio, DTMF, the stream's start and stop (see the module doc)."""

    __slots__ = ("_reader", "_transport")

    def __init__(self, transport: TwilioMediaTransport, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self._transport = transport
        self._reader: asyncio.Task[None] | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(frame, direction)
        if type(frame) is StartFrame and direction == DOWNSTREAM and self._reader is None:
            self._reader = self.create_task(self._read(), "reader")

    async def cleanup(self) -> None:
        reader = self._reader
        if reader is not None and not reader.done():
            reader.cancel()
            await asyncio.wait({reader}, timeout=2.0)
        await self._transport.close()

    async def _read(self) -> None:
        t = self._transport
        proto = t.protocol
        if proto.start is not None:
            await self._started(proto.start)
        receive = t.socket.receive
        push = self.push_frame
        slice_ = TimeSlice(t.reader_slice_ms)
        while True:
            slice_.waiting()
            msg = await receive()
            await slice_.worked()  # a backlog yields to the other tasks now and then
            if msg is None:
                await self._ended(REASON_SOCKET_LOST, "socket closed without stop")
                return
            ev = proto.receive(msg) if isinstance(msg, str) else proto.receive_binary(msg)
            if isinstance(ev, MediaEvent):
                await push(InputAudioFrame(audio=ev.payload, timestamp_ms=ev.timestamp_ms))
            elif isinstance(ev, Skip):
                t.log_skip(ev)
                continue
            elif isinstance(ev, MarkEvent):
                output = t._output
                if output is None:
                    t.log_skip(Skip("mark_without_output", ev.name[:40], "mark"))
                else:
                    await output.on_mark_echo(ev)
            elif isinstance(ev, DtmfEvent):
                await push(DTMFFrame(digit=ev.digit))
            elif isinstance(ev, StartEvent):
                await self._started(ev)
            elif isinstance(ev, StopEvent):
                await self._ended(REASON_STREAM_STOPPED, "stop")
                return
            elif isinstance(ev, ConnectedEvent):
                log_event(_log, "twilio.connected", level=logging.DEBUG, call_id=self.call_id)
            if proto.last_sequence_anomaly is not None:
                t.log_sequence_anomaly(getattr(ev, "sequence_number", None))

    async def _started(self, start: StartEvent) -> None:
        log_event(
            _log,
            "twilio.stream_started",
            call_id=self.call_id or self._transport.call_id,
            stream_sid=start.stream_sid,
            call_sid=start.call_sid,
            parameters=sorted(start.custom_parameters),
        )
        await self.push_frame(
            TransportStartedFrame(
                stream_sid=start.stream_sid,
                call_sid=start.call_sid,
                account_sid=start.account_sid,
                custom_parameters=dict(start.custom_parameters),
                encoding=start.encoding,
                sample_rate=start.sample_rate,
            )
        )

    async def _ended(self, reason: str, why: str) -> None:
        t = self._transport
        t.mark_lost(why)
        output = t._output
        if output is not None:
            await output.on_socket_lost()
        log_event(_log, "twilio.stream_ended", call_id=self.call_id, reason=reason)
        await self.push_frame(CancelFrame(reason=reason))


# --- output --------------------------------------------------------------------------------


class TwilioOutput(FrameProcessor):
    """Sends agent audio, marks and clears; reports what the caller hears (module doc)."""

    __slots__ = (
        "_held_end",
        "_held_mark",
        "_held_since_ms",
        "_internal_marks",
        "_model",
        "_partial_chunk",
        "_partial_since_ms",
        "_reframer",
        "_transport",
        "_waiting",
        "_wake",
        "_watcher",
        "stats",
    )

    def __init__(self, transport: TwilioMediaTransport, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self._transport = transport
        self._model = PlayoutModel(
            speed=transport.playout_speed, mark_timeout_ms=transport.mark_timeout_ms
        )
        self._reframer = Reframer()
        self._partial_chunk = ""
        self._partial_since_ms = 0.0
        self._held_end: EndCallFrame | None = None
        self._held_mark: PendingMark | None = None
        self._held_since_ms = 0.0
        self._internal_marks = 0
        self._waiting: list[Frame] = []
        self._wake = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self.stats = OutputStats()

    @property
    def model(self) -> PlayoutModel:
        """The playout model (read-only use: diagnostics and tests)."""
        return self._model

    @property
    def holding_end_call(self) -> bool:
        """Whether an ``EndCallFrame`` is held until its audio is heard."""
        return self._held_end is not None

    # --- frames --------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction != DOWNSTREAM:
            await self.push_frame(frame, direction)
            return
        if self._transport.protocol.stream_sid is None and isinstance(frame, _HELD_BEFORE_START):
            # No streamSid to send with yet: hold agent output until Twilio's start.
            if not isinstance(frame, EndCallFrame) or self._waiting:
                self._waiting.append(frame)
                return
        if isinstance(frame, OutputAudioFrame):
            await self._audio(frame)
        elif isinstance(frame, MarkFrame):
            await self._flush_partial()
            await self._send_mark(frame.name)
        elif isinstance(frame, TTSStoppedFrame | EndFrame):
            await self._flush_partial()
        elif isinstance(frame, InterruptionFrame):
            await self._interrupt()
        elif isinstance(frame, EndCallFrame):
            await self._end_call(frame)
            return
        elif isinstance(frame, StartFrame):
            if self._watcher is None:
                self._watcher = self.create_task(self._watch(), "playout")
        elif isinstance(frame, TransportStartedFrame):
            await self.push_frame(frame, direction)
            waiting, self._waiting = self._waiting, []
            for f in waiting:
                await self.process_frame(f, DOWNSTREAM)
            return
        await self.push_frame(frame, direction)

    async def _both(self, frame: Frame) -> None:
        await self.push_frame(frame, UPSTREAM)
        await self.push_frame(frame, DOWNSTREAM)

    async def _audio(self, frame: OutputAudioFrame) -> None:
        if frame.encoding != "mulaw" or frame.sample_rate != 8000:
            self._transport.log_skip(
                Skip("unsupported_output_audio", f"{frame.encoding} {frame.sample_rate} Hz")
            )
            return
        reframer = self._reframer
        if reframer.pending and frame.chunk_id != self._partial_chunk:
            await self._flush_partial()
        had_partial = reframer.pending
        whole = reframer.push(frame.audio)
        self._partial_chunk = frame.chunk_id
        if reframer.pending and not had_partial:
            self._partial_since_ms = self.now_ms()
            self._wake.set()
        if whole:
            await self._send_audio(whole, frame.chunk_id)

    async def _flush_partial(self) -> None:
        pending = self._reframer.pending
        if pending:
            self.stats.padded_bytes += FRAME_BYTES - pending
            await self._send_audio(self._reframer.flush(), self._partial_chunk)

    async def _send_audio(self, audio: bytes, chunk_id: str) -> None:
        t = self._transport
        if not t.socket_open:
            self.stats.dropped_bytes += len(audio)
            return
        model = self._model
        was_speaking = model.speaking
        play_at = model.schedule(self.now_ms(), len(audio), chunk_id)
        media = t.protocol.media_message
        send = t.send
        for i in range(0, len(audio), FRAME_BYTES):
            if not await send(media(audio[i : i + FRAME_BYTES])):
                break
            self.stats.media_messages += 1
        if not was_speaking:
            self._wake.set()
            await self._both(BotStartedSpeakingFrame(at_ms=play_at))
        await self._both(PlayedAudioFrame(audio=audio, play_at_ms=play_at, chunk_id=chunk_id))

    async def _send_mark(self, name: str, *, internal: bool = False) -> PendingMark | None:
        t = self._transport
        if not t.socket_open:
            return None
        mark = self._model.add_mark(self.now_ms(), name, internal=internal)
        if await t.send(t.protocol.mark_message(name)):
            self.stats.marks_sent += 1
        return mark

    async def _interrupt(self) -> None:
        self._reframer.drop()
        self._waiting = [f for f in self._waiting if not f.interruptible]
        t = self._transport
        if not t.socket_open or t.protocol.stream_sid is None:
            return
        outcome = self._model.clear(self.now_ms())
        if await t.send(t.protocol.clear_message()):
            self.stats.clears += 1
        self._wake.set()
        log_event(
            _log,
            "twilio.cleared",
            level=logging.DEBUG,
            call_id=self.call_id,
            heard=outcome.heard,
        )
        await self._both(PlaybackClearedFrame(at_ms=outcome.at_ms, heard=outcome.heard))
        if outcome.was_speaking:
            await self._both(BotStoppedSpeakingFrame(at_ms=outcome.at_ms))

    async def _end_call(self, frame: EndCallFrame) -> None:
        if self._held_end is not None:
            log_event(_log, "twilio.end_call_duplicate", call_id=self.call_id)
            return
        t = self._transport
        if t.socket_open:
            await self._flush_partial()
            model = self._model
            if model.has_unmarked_audio:
                self._internal_marks += 1
                await self._send_mark(
                    f"{_INTERNAL_MARK_PREFIX}{self._internal_marks}", internal=True
                )
            mark = model.last_mark
            if mark is not None and t.socket_open:
                self._held_end = frame
                self._held_mark = mark
                self._held_since_ms = self.now_ms()
                self._wake.set()
                log_event(
                    _log,
                    "twilio.end_call_held",
                    level=logging.DEBUG,
                    call_id=self.call_id,
                    pending_marks=model.pending_marks,
                )
                return
        await self.push_frame(frame, DOWNSTREAM)

    async def _release_end_call(self, why: str) -> None:
        frame = self._held_end
        if frame is None:
            return
        self._held_end = None
        self._held_mark = None
        log_event(_log, "twilio.end_call_released", call_id=self.call_id, why=why)
        await self.push_frame(frame, DOWNSTREAM)

    # --- feedback from the input side ----------------------------------------------------

    async def on_mark_echo(self, event: MarkEvent) -> None:
        """Twilio echoed a mark (called by the input's reader)."""
        now = self.now_ms()
        echo = self._model.echo(now, event.name)
        if echo is None:
            self._transport.log_skip(Skip("unknown_mark", event.name[:40], "mark"))
            return
        self.stats.marks_echoed += 1
        self._wake.set()
        if not echo.internal:
            await self._both(
                MarkPlayedFrame(name=echo.name, heard_ms=echo.heard_ms, cleared=echo.cleared)
            )
        await self._check_stopped(now)
        held = self._held_mark
        if held is not None and held.echoed:
            await self._release_end_call("heard")

    async def on_socket_lost(self) -> None:
        """The socket is gone: nothing more will play; release a held ``EndCallFrame``."""
        self._reframer.drop()
        await self._release_end_call("socket_lost")

    # --- the playout watcher -------------------------------------------------------------

    async def _check_stopped(self, now: float) -> None:
        stopped_at = self._model.poll_stopped(now)
        if stopped_at is not None:
            overdue = self._model.overdue_marks(now)
            if overdue:
                log_event(
                    _log,
                    "twilio.mark_echo_overdue",
                    level=logging.WARNING,
                    call_id=self.call_id,
                    marks=[m.name for m in overdue][:10],
                )
            await self._both(BotStoppedSpeakingFrame(at_ms=stopped_at))

    def _next_deadline(self) -> float | None:
        model = self._model
        frame_clock_ms = FRAME_MS / model.speed
        deadlines: list[float] = []
        d = model.next_deadline()
        if d is not None:
            deadlines.append(d)
        if self._reframer.pending:
            deadlines.append(
                max(model.buffer_end_ms - frame_clock_ms, self._partial_since_ms + frame_clock_ms)
            )
        if self._held_end is not None:
            start = max(self._held_since_ms, model.buffer_end_ms)
            deadlines.append(start + self._transport.end_call_timeout_ms)
        return min(deadlines) if deadlines else None

    async def _watch(self) -> None:
        """One task per call: fires when the playout model's state is due to change."""
        wake = self._wake
        while True:
            deadline = self._next_deadline()
            if deadline is None:
                await wake.wait()
            else:
                delay_s = (deadline - self.now_ms()) / 1000.0
                if delay_s > 0:
                    try:
                        async with asyncio.timeout(delay_s):
                            await wake.wait()
                    except TimeoutError:
                        pass
                else:
                    await asyncio.sleep(0)  # never spin without yielding
            wake.clear()
            await self._tick()

    async def _tick(self) -> None:
        now = self.now_ms()
        model = self._model
        if self._reframer.pending:
            frame_clock_ms = FRAME_MS / model.speed
            due = max(model.buffer_end_ms - frame_clock_ms, self._partial_since_ms + frame_clock_ms)
            if now >= due:
                await self._flush_partial()
        await self._check_stopped(now)
        if self._held_end is not None:
            start = max(self._held_since_ms, model.buffer_end_ms)
            if now >= start + self._transport.end_call_timeout_ms:
                log_event(
                    _log,
                    "twilio.end_call_timeout",
                    level=logging.WARNING,
                    call_id=self.call_id,
                    pending_marks=model.pending_marks,
                )
                await self._release_end_call("timeout")


_HELD_BEFORE_START: Final = (OutputAudioFrame, MarkFrame, TTSStoppedFrame, EndCallFrame)


# --- the endpoint --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamAuthRequest:
    """What the ``authorize`` hook sees: the upgrade's URL and headers, and the ``start``.

    ``url`` is the URL Twilio connected to, as Twilio signed it when ``public_url`` was given
    to the endpoint (``wss://`` + public host), else as the server saw it.
    """

    url: str
    headers: Mapping[str, str]
    start: StartEvent
    custom_parameters: Mapping[str, str] = field(default_factory=dict)


#: Decides whether a stream may proceed. Exceptions count as a refusal.
Authorizer = Callable[[StreamAuthRequest], Awaitable[bool]]
#: Runs the call on an accepted, authorized stream; returns when the call is over.
OnStream = Callable[[TwilioMediaTransport, StartEvent], Awaitable[None]]


def twilio_signature_valid(auth_token: str, url: str, signature: str | None) -> bool:
    """Whether ``signature`` (the ``X-Twilio-Signature`` header) signs ``url`` with no params.

    Twilio signs the websocket upgrade over the full ``wss://`` URL (``wire-protocols.md``
    §1.1); behind a proxy, pass the public URL.
    """
    if not signature:
        return False
    from twilio.request_validator import RequestValidator

    return bool(RequestValidator(auth_token).validate(url, {}, signature))


def signature_authorizer(
    auth_token: str,
    *,
    check_parameters: Callable[[Mapping[str, str]], Awaitable[bool]] | None = None,
) -> Authorizer:
    """An :data:`Authorizer` checking ``X-Twilio-Signature`` with ``auth_token``, then (if
    given) ``check_parameters`` on ``customParameters`` — e.g. a one-time per-call token."""

    async def authorize(request: StreamAuthRequest) -> bool:
        if not twilio_signature_valid(
            auth_token, request.url, request.headers.get("x-twilio-signature")
        ):
            return False
        if check_parameters is not None:
            return await check_parameters(request.custom_parameters)
        return True

    return authorize


async def _read_start(socket: MediaSocket, proto: TwilioMediaProtocol) -> StartEvent | Skip:
    """Read up to the ``start`` message; skip (and report) anything else."""
    while True:
        msg = await socket.receive()
        if msg is None:
            return Skip("closed_before_start")
        ev = proto.receive(msg) if isinstance(msg, str) else proto.receive_binary(msg)
        if isinstance(ev, StartEvent):
            return ev
        if isinstance(ev, Skip):
            if ev.event == "start":
                return ev
            log_event(
                _log,
                "twilio.message_skipped",
                level=logging.WARNING,
                reason=ev.reason,
                detail=ev.detail,
                event_type=ev.event,
            )


def _request_url(websocket: WebSocket, public_url: str | None) -> str:
    if public_url is None:
        return str(websocket.url)
    query = websocket.url.query
    return public_url.rstrip("/") + websocket.url.path + (f"?{query}" if query else "")


async def serve_twilio_stream(
    websocket: WebSocket,
    on_stream: OnStream,
    *,
    authorize: Authorizer | None = None,
    public_url: str | None = None,
    start_timeout_s: float = 10.0,
    playout_speed: float = 1.0,
    mark_timeout_ms: float = 5000.0,
    end_call_timeout_ms: float = 5000.0,
) -> None:
    """Serve one Twilio media stream on ``websocket`` (a Starlette websocket endpoint body).

    Accepts, reads ``connected`` and ``start`` (closing with 1002 if none comes within
    ``start_timeout_s``, 1003 for an unsupported media format), runs ``authorize`` (closing
    with 1008 on refusal), then builds a :class:`TwilioMediaTransport` and awaits
    ``on_stream(transport, start)``. The socket is closed when ``on_stream`` returns.
    ``public_url`` (``wss://host``) rebuilds the URL Twilio signed when behind a proxy.
    """
    await websocket.accept()
    socket = StarletteMediaSocket(websocket)
    proto = TwilioMediaProtocol()
    try:
        async with asyncio.timeout(start_timeout_s):
            got = await _read_start(socket, proto)
    except TimeoutError:
        got = Skip("start_timeout", f"no start within {start_timeout_s} s")
    if isinstance(got, Skip):
        log_event(
            _log,
            "twilio.stream_rejected",
            level=logging.WARNING,
            reason=got.reason,
            detail=got.detail,
        )
        code = (
            WS_CLOSE_UNSUPPORTED_DATA
            if got.reason == "unsupported_media_format"
            else WS_CLOSE_PROTOCOL_ERROR
        )
        await socket.close(code, got.reason)
        return
    start = got
    call_id = start.custom_parameters.get("call_id") or start.call_sid
    if authorize is not None:
        request = StreamAuthRequest(
            url=_request_url(websocket, public_url),
            headers=websocket.headers,
            start=start,
            custom_parameters=start.custom_parameters,
        )
        try:
            allowed = await authorize(request)
        except Exception as exc:
            log_event(
                _log,
                "twilio.authorize_failed",
                level=logging.ERROR,
                call_id=call_id,
                error=type(exc).__name__,
            )
            allowed = False
        if not allowed:
            log_event(
                _log,
                "twilio.stream_refused",
                level=logging.WARNING,
                call_id=call_id,
                call_sid=start.call_sid,
                signed="x-twilio-signature" in websocket.headers,
            )
            await socket.close(WS_CLOSE_POLICY_VIOLATION, "unauthorized")
            return
    transport = TwilioMediaTransport(
        socket,
        protocol=proto,
        playout_speed=playout_speed,
        mark_timeout_ms=mark_timeout_ms,
        end_call_timeout_ms=end_call_timeout_ms,
    )
    try:
        await on_stream(transport, start)
    except Exception as exc:
        log_event(
            _log,
            "twilio.on_stream_failed",
            level=logging.ERROR,
            call_id=call_id,
            error=repr(exc),
            exc_info=exc,
        )
    finally:
        await transport.close()


def twilio_media_route(
    path: str,
    on_stream: OnStream,
    *,
    authorize: Authorizer | None = None,
    public_url: str | None = None,
    start_timeout_s: float = 10.0,
    playout_speed: float = 1.0,
    mark_timeout_ms: float = 5000.0,
    end_call_timeout_ms: float = 5000.0,
    name: str | None = None,
) -> WebSocketRoute:
    """A Starlette ``WebSocketRoute`` at ``path`` serving Twilio media streams
    (see :func:`serve_twilio_stream` for the arguments)."""

    async def endpoint(websocket: WebSocket) -> None:
        await serve_twilio_stream(
            websocket,
            on_stream,
            authorize=authorize,
            public_url=public_url,
            start_timeout_s=start_timeout_s,
            playout_speed=playout_speed,
            mark_timeout_ms=mark_timeout_ms,
            end_call_timeout_ms=end_call_timeout_ms,
        )

    return WebSocketRoute(path, endpoint, name=name)
