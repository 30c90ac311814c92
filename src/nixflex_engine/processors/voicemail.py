"""The voicemail arbiter in the chain: person or machine, and what the agent does about it.

Sits after the STT and before turn taking (``docs/chain-contract.md``)::

    TwilioInput → MulawDecoder → VAD → DeepgramSTT → Voicemail → TurnTaking → ...

The decisions are made by the pure :class:`~nixflex_engine.processors.voicemail_rules.
VoicemailArbiter` and :class:`~nixflex_engine.processors.beep.BeepDetector`; this module only
turns frames into their calls and their actions into frames. Times given to the arbiter are ms
since *pickup*: the run clock at ``TransportStartedFrame`` (Twilio ``start``: the media stream
begins when the call is answered), or at ``StartFrame`` when no transport announces itself.

Consumes (downstream):
  ``StartFrame`` / ``TransportStartedFrame`` — pickup; starts the timer task.
  ``InputAudioFrame`` — always passed on first (the recorder needs it); its ``pcm`` (decoded
  here if no decoder did; 8 kHz only) feeds the beep detector while a beep may still matter.
  ``UserStartedSpeakingFrame`` / ``UserStoppedSpeakingFrame``, ``InterimTranscriptFrame`` /
  ``TranscriptFrame`` — fed to the arbiter; *held back* from turn taking until a verdict (see
  below).
  ``AMDResultFrame`` — Twilio's async AMD result, injected by the call session with
  ``task.queue_frame``; fed to the arbiter (ignored when ``amd_enabled`` is false) and passed
  on.
  ``EndFrame`` / ``CancelFrame`` / ``EndCallFrame`` — flush what is held for the transcript,
  send an undecided result if none was sent, stop the timer; passed on.
  Everything else passes through in its direction.
Emits (downstream):
  ``VoicemailResultFrame`` — the verdict for the call record (``voicemail_detected``,
  ``method``, ``amd_result``, ``detected_ms``, ``late``), again whenever it changes (a late
  machine, an AMD result arriving after the verdict), and once undecided if the call ends
  first.
  ``TTSSpeakFrame(welcome_message)`` — the opener, once, when a person is confirmed (or the
  action is ``ignore``).
  ``TTSSpeakFrame(voicemail_message, end_call_reason="voicemail")`` — the message, word for
  word, when the arbiter says it may start; the TTS ends the call after its audio.
  ``EndCallFrame(reason="voicemail")`` — ``hangup``.
  ``InterruptionFrame`` — a machine found after the agent may have started speaking (late
  AMD, a beep after the opener), before the hang-up or the message.
  ``TranscriptEntryFrame(role="caller")`` — the greeting heard, for the call transcript
  (and, through the user context aggregator, the LLM context), when it is not handed to turn
  taking.
  Held caller frames, replayed in order (see *No opener*); a ``UserStoppedSpeakingFrame``
  closing caller speech turn taking saw begin, when a late machine is found.

Holding the conversation
------------------------
Until a verdict, caller speech and transcript frames do not reach turn taking, so the LLM
never answers a voicemail greeting (nor a person's "Hello?", which the opener answers). What
happens to them next depends on the verdict:

* **Person, with an opener** (``welcome_message`` set): the opener is pushed at once — or, if
  the caller is still talking when the verdict comes (an AMD "human" mid-sentence), when their
  VAD segment ends (at the latest ``opener_max_wait_ms`` later). Speech that began before the
  verdict (including the segment still going on then, and one the VAD confirms just after)
  is the *greeting*: its frames (and its late final transcripts: those starting before the
  greeting's end) are never passed to turn taking; its text goes downstream as one
  ``TranscriptEntryFrame(role="caller")`` once the STT has finalized it (at the latest
  ``greeting_flush_ms`` after the verdict, with the last interim text). Everything after it
  passes through: the conversation is on.
* **No opener** (``welcome_message`` empty): the held frames are replayed to turn taking in
  their order, so the person's greeting is the first caller turn and the LLM speaks first in
  answer to it (the context aggregator then puts it in the transcript, as any turn). When the
  line was silent (the opener was allowed on silence alone) nothing is replayed and the agent
  waits for the caller to speak.
* **Machine, ``hangup``**: the greeting goes to the transcript, then ``EndCallFrame``.
* **Machine, ``leave_message``**: nothing reaches turn taking for the rest of the call. When the
  arbiter says the message may start (the beep ended, AMD saw the greeting end, or the greeting
  fell silent), the greeting goes to the transcript and the message is spoken. A message
  started before the beep can be restarted by a beep that ends shortly after
  (``restart_window_ms``): such a message is sent without ``end_call_reason`` and, if no
  restart came, followed by an empty ``TTSSpeakFrame(end_call_reason="voicemail")`` at the end
  of the window — the TTS ends the call after the audio queued before it, so the message is
  heard in full; a restart is an ``InterruptionFrame`` and the message again, with the reason.
  (An interrupted ``TTSSpeakFrame`` with a reason would end the call at once.)
* **Machine, ``ignore``**: as a person.

A machine found after a person was confirmed (``LateMachine`` that overrides): any caller
speech already passed to turn taking is closed with a ``UserStoppedSpeakingFrame`` (so turn
taking does not take the greeting's continuation for a barge-in on the message), the agent is
interrupted, and the action follows; from then on nothing reaches turn taking.

CPU after the verdict
---------------------
The timer task ticks the arbiter every ``tick_interval_ms`` while listening, while an opener
waits, while greeting text waits to be flushed, for ``late_weak_window_ms`` after a person is
confirmed and while speech that resumed right after it goes on (time-driven late evidence: a
recorded "Hi!" whose pause fooled the transcript; ``VoicemailArbiter.late_ticks_needed``), and
for ``leave_message`` until the message is final; then it ends. After a person is confirmed the
speech, transcript and beep events still reach the arbiter until ``late_window_ms`` after
pickup (``late_beep_detection=False`` stops the beep detector at the verdict); after that only
an ``AMDResultFrame`` is looked at (a late AMD is recorded, and the arbiter judges it). A
machine verdict with ``hangup`` or ``ignore`` stops everything at once. Per 20 ms audio frame
while the beep detector runs: an FFT on every other frame outside a tone (5.3 µs per frame on
average over the voicemail evaluation set, on this project's 2-core VM); about 1 µs after.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from nixflex_engine.frames import (
    AMDResultFrame,
    CancelFrame,
    EndCallFrame,
    EndFrame,
    EndReason,
    Frame,
    InputAudioFrame,
    InterimTranscriptFrame,
    InterruptionFrame,
    StartFrame,
    TranscriptEntryFrame,
    TranscriptFrame,
    TransportStartedFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VoicemailResultFrame,
)
from nixflex_engine.log import get_logger, log_event
from nixflex_engine.pipeline.processor import DOWNSTREAM, FrameDirection, FrameProcessor
from nixflex_engine.processors.beep import BeepDetector, BeepEvent, BeepSettings
from nixflex_engine.processors.codec import mulaw_to_pcm16
from nixflex_engine.processors.timeline import StreamClock
from nixflex_engine.processors.voicemail_rules import (
    Action,
    AllowOpener,
    ArbiterSettings,
    EndCall,
    HumanDetected,
    LateMachine,
    StartVoicemailMessage,
    StopAgentSpeech,
    VoicemailAction,
    VoicemailArbiter,
    VoicemailDetected,
)

__all__ = ["VoicemailProcessor"]

_log = get_logger(__name__)

_VOICEMAIL: Final = EndReason.VOICEMAIL.value
_CALLER_FRAMES = (
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    InterimTranscriptFrame,
    TranscriptFrame,
)
_END_FRAMES = (EndFrame, CancelFrame, EndCallFrame)

Mode = Literal["listening", "conversation", "machine"]


def _latest(a: float | None, b: float) -> float:
    return b if a is None else max(a, b)


@dataclass(slots=True)
class _Segment:
    text: str
    start_ms: float
    end_ms: float


@dataclass(slots=True)
class _GreetingText:
    """What the callee said that turn taking will not see, waiting to enter the transcript.

    Finals are kept in order; an interim is kept only while it is newer than the last final.
    A flush includes that interim, and a final starting before the end of what was flushed is
    then taken for its late duplicate and dropped.
    """

    finals: list[_Segment]
    interim: _Segment | None = None
    flushed_until_ms: float = float("-inf")

    def add(self, text: str, start_ms: float, end_ms: float, *, final: bool) -> bool:
        """Keep a transcript; False when it only repeats what was flushed already."""
        text = text.strip()
        if not text or start_ms < self.flushed_until_ms:
            return False
        seg = _Segment(text, start_ms, max(start_ms, end_ms))
        if final:
            self.finals.append(seg)
            self.interim = None
        else:
            self.interim = seg
        return True

    @property
    def pending(self) -> bool:
        return bool(self.finals) or self.interim is not None

    @property
    def settled(self) -> bool:
        """All text so far is final (no interim waiting for its final)."""
        return self.interim is None

    def take(self) -> tuple[str, float] | None:
        """(text, start_ms) of everything pending, and forget it."""
        parts = list(self.finals)
        if self.interim is not None:
            parts.append(self.interim)
        self.finals = []
        self.interim = None
        if not parts:
            return None
        self.flushed_until_ms = max(self.flushed_until_ms, max(p.end_ms for p in parts))
        return " ".join(p.text for p in parts), parts[0].start_ms

    def clear(self) -> None:
        self.finals = []
        self.interim = None


class VoicemailProcessor(FrameProcessor):
    """Holds the conversation until the voicemail arbiter decides; acts on its verdict.

    See the module docstring for the frames and the policy.
    """

    __slots__ = (
        "_agent_may_speak",
        "_amd_enabled",
        "_arbiter",
        "_audio_origin_stream_ms",
        "_beep",
        "_caller_speaking",
        "_ended",
        "_fed",
        "_feeding",
        "_flush_due_ms",
        "_greeting",
        "_greeting_end_ms",
        "_greeting_open",
        "_held",
        "_last_result",
        "_last_speech_end_ms",
        "_message_final",
        "_message_started_ms",
        "_mode",
        "_opener_due_ms",
        "_opener_state",
        "_origin_ms",
        "_passed_speech",
        "_passed_speech_start",
        "_stopped",
        "_stream_clock",
        "_timer",
        "greeting_flush_ms",
        "late_beep_detection",
        "max_held_frames",
        "opener_max_wait_ms",
        "tick_interval_ms",
        "voicemail_action",
        "voicemail_message",
        "welcome_message",
    )

    def __init__(
        self,
        *,
        voicemail_action: VoicemailAction = "hangup",
        voicemail_message: str = "",
        welcome_message: str = "",
        amd_enabled: bool = True,
        settings: ArbiterSettings | None = None,
        beep_settings: BeepSettings | None = None,
        tick_interval_ms: float = 50.0,
        opener_max_wait_ms: float = 3000.0,
        greeting_flush_ms: float = 2000.0,
        late_beep_detection: bool = True,
        max_held_frames: int = 1000,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if voicemail_action not in ("hangup", "leave_message", "ignore"):
            raise ValueError(f"unknown voicemail_action {voicemail_action!r}")
        if tick_interval_ms <= 0:
            raise ValueError("tick_interval_ms must be positive")
        self.voicemail_action: VoicemailAction = voicemail_action
        self.voicemail_message = voicemail_message.strip()
        self.welcome_message = welcome_message.strip()
        self.tick_interval_ms = tick_interval_ms
        self.opener_max_wait_ms = opener_max_wait_ms
        self.greeting_flush_ms = greeting_flush_ms
        self.late_beep_detection = late_beep_detection
        self.max_held_frames = max_held_frames
        self._amd_enabled = amd_enabled
        self._arbiter = VoicemailArbiter(
            voicemail_action=voicemail_action, settings=settings or ArbiterSettings()
        )
        self._beep: BeepDetector | None = BeepDetector(beep_settings or BeepSettings())
        self._stream_clock = StreamClock()
        self._audio_origin_stream_ms: float | None = None
        self._origin_ms: float | None = None
        self._fed = False  # the arbiter has had an event (not just ticks)
        self._feeding = True  # speech/transcript/beep events still go to the arbiter
        self._mode: Mode = "listening"
        self._held: list[Frame] = []
        self._greeting = _GreetingText([])
        self._greeting_open = False
        self._greeting_end_ms: float | None = None
        self._flush_due_ms: float | None = None
        self._caller_speaking = False
        self._last_speech_end_ms: float | None = None
        self._passed_speech_start: float | None = None  # an unclosed start passed on
        self._passed_speech = False  # caller speech went to turn taking
        self._opener_state: Literal["waiting", "pending", "spoken", "released", "cancelled"] = (
            "waiting"
        )
        self._opener_due_ms: float | None = None
        self._agent_may_speak = False
        self._message_started_ms: float | None = None
        self._message_final = False
        self._ended = False  # we hung up (EndCallFrame or the message with its reason)
        self._stopped = False  # the run is ending
        self._last_result: tuple[object, ...] | None = None
        self._timer: asyncio.Task[None] | None = None

    # --- inspection ---------------------------------------------------------------------

    @property
    def arbiter(self) -> VoicemailArbiter:
        """The pure arbiter (for inspection)."""
        return self._arbiter

    @property
    def mode(self) -> Mode:
        """``listening`` (holding), ``conversation`` (passing) or ``machine`` (holding)."""
        return self._mode

    @property
    def beep_running(self) -> bool:
        """Whether inbound audio still goes through the beep detector."""
        return self._beep is not None

    @property
    def timer_running(self) -> bool:
        """Whether the tick task is alive."""
        return self._timer is not None and not self._timer.done()

    # --- frames -------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction != DOWNSTREAM:
            await self.push_frame(frame, direction)
            return
        if isinstance(frame, InputAudioFrame):
            await self.push_frame(frame, direction)
            if self._beep is not None and not self._stopped and frame.sample_rate == 8000:
                await self._audio(frame)
            return
        if isinstance(frame, _CALLER_FRAMES):
            await self._caller_frame(frame)
            return
        if isinstance(frame, AMDResultFrame):
            await self.push_frame(frame, direction)
            await self._amd(frame)
            return
        if isinstance(frame, StartFrame | TransportStartedFrame):
            now = self.now_ms()
            if self._origin_ms is None or (
                isinstance(frame, TransportStartedFrame) and not self._fed
            ):
                self._origin_ms = now
            await self.push_frame(frame, direction)
            self._ensure_timer()
            return
        if isinstance(frame, _END_FRAMES):
            await self._run_ending()
        await self.push_frame(frame, direction)

    async def cleanup(self) -> None:
        self._stopped = True
        timer, self._timer = self._timer, None
        if timer is not None and not timer.done():
            timer.cancel()

    # --- inputs -------------------------------------------------------------------------

    def _t(self, run_ms: float) -> float:
        """Run clock → ms since pickup."""
        if self._origin_ms is None:
            self._origin_ms = self.now_ms()
        return run_ms - self._origin_ms

    async def _audio(self, frame: InputAudioFrame) -> None:
        beep = self._beep
        assert beep is not None
        now = self.now_ms()
        if not self._beep_wanted(now):
            self._beep = None
            return
        pcm = frame.pcm
        if pcm is None:
            pcm = frame.audio if frame.encoding == "pcm16" else mulaw_to_pcm16(frame.audio)
        samples = np.frombuffer(pcm, dtype="<i2")
        if self._audio_origin_stream_ms is None:
            self._audio_origin_stream_ms = float(frame.timestamp_ms)
        self._stream_clock.observe(frame.timestamp_ms + samples.size / 8.0, now)
        events = beep.process(samples.astype(np.int16, copy=False))
        for event in events:
            self._fed = True
            await self._apply(self._arbiter.on_beep(self._beep_times(event), now_ms=self._t(now)))

    def _beep_times(self, event: BeepEvent) -> BeepEvent:
        """Beep times (ms of audio since the first sample fed) → ms since pickup."""
        origin = self._audio_origin_stream_ms or 0.0

        def conv(ms: float) -> float:
            return self._t(self._stream_clock.to_run(origin + ms))

        return BeepEvent(
            event.kind,
            conv(event.start_ms),
            None if event.end_ms is None else conv(event.end_ms),
            event.frequency_hz,
            conv(event.detected_ms),
        )

    async def _amd(self, frame: AMDResultFrame) -> None:
        if not self._amd_enabled:
            log_event(
                _log,
                "voicemail.amd_ignored",
                call_id=self.call_id,
                answered_by=frame.answered_by,
            )
            return
        now = self.now_ms()
        self._fed = True
        log_event(
            _log,
            "voicemail.amd",
            call_id=self.call_id,
            answered_by=frame.answered_by,
            machine_detection_duration_ms=frame.machine_detection_duration_ms,
            at_ms=round(self._t(now), 1),
        )
        actions = self._arbiter.on_amd(
            frame.answered_by, frame.machine_detection_duration_ms, now_ms=self._t(now)
        )
        if self._ended or self._stopped:
            await self._send_result()  # only the record's amd_result can still change
            return
        await self._apply(actions)
        await self._send_result()  # a late AMD that decides nothing still fills amd_result

    async def _caller_frame(self, frame: Frame) -> None:
        now = self.now_ms()
        actions: list[Action] = []
        feed = self._feeding and not self._ended and not self._stopped
        if isinstance(frame, UserStartedSpeakingFrame):
            self._caller_speaking = True
            if feed:
                actions = self._arbiter.on_speech_started(
                    self._t(frame.start_ms), now_ms=self._t(now)
                )
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._caller_speaking = False
            self._last_speech_end_ms = _latest(self._last_speech_end_ms, frame.stop_ms)
            if feed:
                actions = self._arbiter.on_speech_stopped(
                    self._t(frame.start_ms), self._t(frame.stop_ms), now_ms=self._t(now)
                )
        elif isinstance(frame, InterimTranscriptFrame | TranscriptFrame):
            text = frame.text.strip()
            if text:
                self._last_speech_end_ms = _latest(self._last_speech_end_ms, frame.end_ms)
                if feed:
                    actions = self._arbiter.on_transcript(
                        text,
                        is_final=isinstance(frame, TranscriptFrame),
                        start_ms=self._t(frame.start_ms),
                        end_ms=self._t(frame.end_ms),
                        now_ms=self._t(now),
                    )
        if feed:
            self._fed = True
        # Which way the frame goes depends on the mode after its own verdict, if any.
        if self._mode == "listening":
            self._collect(frame)
            held = not self.welcome_message and len(self._held) < self.max_held_frames
            if held:
                self._held.append(frame)
            await self._apply(actions)
            # A verdict on this very frame: with an opener the frame belongs to the greeting
            # (it is collected already); without one it was replayed with the held frames.
            if self._opener_state == "released" and not held:
                await self._pass(frame)
            return
        await self._apply(actions)
        if self._mode == "machine":
            self._collect(frame)
            return
        if await self._greeting_frame(frame):
            return
        await self._flush_greeting()  # new speech: the greeting is over
        await self._pass(frame)

    async def _pass(self, frame: Frame) -> None:
        if isinstance(frame, UserStartedSpeakingFrame):
            self._passed_speech_start = frame.start_ms
            self._passed_speech = True
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._passed_speech_start = None
        elif isinstance(frame, InterimTranscriptFrame | TranscriptFrame) and frame.text.strip():
            self._passed_speech = True
        await self.push_frame(frame, DOWNSTREAM)

    def _collect(self, frame: Frame) -> None:
        if isinstance(frame, InterimTranscriptFrame | TranscriptFrame):
            added = self._greeting.add(
                frame.text,
                frame.start_ms,
                frame.end_ms,
                final=isinstance(frame, TranscriptFrame),
            )
            if added and self._flush_due_ms is None and self._mode == "conversation":
                self._flush_due_ms = self.now_ms() + self.greeting_flush_ms
                self._ensure_timer()

    async def _greeting_frame(self, frame: Frame) -> bool:
        """In a conversation after an opener: is this frame part of the held greeting?

        A greeting frame is swallowed: kept for the transcript, never seen by turn taking.
        """
        if self._opener_state == "released":
            return False
        greeting_end = self._greeting_end_ms
        if isinstance(frame, UserStartedSpeakingFrame):
            # Speech the VAD confirms only now but that began before the verdict.
            if greeting_end is not None and frame.start_ms < greeting_end:
                self._greeting_open = True
                return True
            return False
        if isinstance(frame, UserStoppedSpeakingFrame):
            if not self._greeting_open:
                return False
            self._greeting_open = False
            self._greeting_end_ms = _latest(self._greeting_end_ms, frame.stop_ms)
            await self._speak_pending_opener()
            if self._greeting.pending and self._greeting.settled:
                await self._flush_greeting()
            return True
        if isinstance(frame, InterimTranscriptFrame | TranscriptFrame):
            inside = self._greeting_open or (
                greeting_end is not None and frame.start_ms <= greeting_end
            )
            if not frame.text.strip() and not self._passed_speech:
                inside = True  # an endpoint with no new speech passed on: the greeting's
            if not inside:
                return False
            self._collect(frame)
            if self._greeting.pending and self._greeting.settled and not self._greeting_open:
                await self._flush_greeting()
            return True
        return False

    # --- ticks --------------------------------------------------------------------------

    def _needs_timer(self) -> bool:
        if self._stopped or self._ended:
            return False
        state = self._arbiter.state
        if state == "listening" or self._opener_state == "pending":
            return True
        if self._flush_due_ms is not None:
            return True
        if state == "human":
            return self._arbiter.late_ticks_needed(self._elapsed())
        return (
            state == "machine"
            and self.voicemail_action == "leave_message"
            and not self._message_final
        )

    def _elapsed(self) -> float:
        return self._t(self.now_ms())

    def _ensure_timer(self) -> None:
        if self._timer is not None and not self._timer.done():
            return
        if not self._needs_timer():
            return
        self._timer = self.create_task(self._tick_loop(), "ticks")

    async def _tick_loop(self) -> None:
        interval_s = self.tick_interval_ms / 1000.0
        while True:
            await asyncio.sleep(interval_s)
            if not self._needs_timer():
                self._timer = None
                return
            await self._tick()

    async def _tick(self) -> None:
        now = self.now_ms()
        if self._feeding:
            await self._apply(self._arbiter.tick(self._t(now)))
        if self._opener_state == "pending" and self._opener_due_ms is not None:
            if now >= self._opener_due_ms:
                await self._speak_opener("caller still speaking after opener_max_wait_ms")
        if self._flush_due_ms is not None and now >= self._flush_due_ms:
            await self._flush_greeting()
        await self._check_message_window(now)
        self._update_lifecycle(now)

    # --- actions ------------------------------------------------------------------------

    async def _apply(self, actions: list[Action]) -> None:
        if not actions:
            self._update_lifecycle(self.now_ms())
            return
        for action in actions:
            if self._ended or self._stopped:
                break
            if isinstance(action, HumanDetected):
                log_event(
                    _log,
                    "voicemail.human",
                    call_id=self.call_id,
                    at_ms=round(action.at_ms, 1),
                    method=action.method,
                    confidence=round(action.confidence, 2),
                    reason=action.reason,
                )
                await self._send_result()
            elif isinstance(action, AllowOpener):
                await self._allow_opener(action)
            elif isinstance(action, VoicemailDetected):
                log_event(
                    _log,
                    "voicemail.machine",
                    call_id=self.call_id,
                    at_ms=round(action.at_ms, 1),
                    method=action.method,
                    confidence=round(action.confidence, 2),
                    reason=action.reason,
                    amd_result=action.amd_result,
                    late=action.late,
                    action=self.voicemail_action,
                )
                if self.voicemail_action != "ignore":
                    await self._enter_machine()
                await self._send_result()
            elif isinstance(action, LateMachine):
                log_event(
                    _log,
                    "voicemail.late_machine",
                    level=logging.INFO if action.overrides else logging.DEBUG,
                    call_id=self.call_id,
                    at_ms=round(action.at_ms, 1),
                    method=action.method,
                    reason=action.reason,
                    overrides=action.overrides,
                )
            elif isinstance(action, StopAgentSpeech):
                await self._interrupt_agent()
            elif isinstance(action, EndCall):
                await self._hang_up()
            elif isinstance(action, StartVoicemailMessage):
                await self._start_message(action)
        await self._send_result()
        self._update_lifecycle(self.now_ms())
        self._ensure_timer()

    async def _allow_opener(self, action: AllowOpener) -> None:
        if self._opener_state != "waiting":
            return
        self._mode = "conversation"
        held, self._held = self._held, []
        if not self.welcome_message:
            # No opener: the caller's greeting is the first turn, answered by the LLM.
            self._opener_state = "released"
            self._greeting.clear()
            self._agent_may_speak = True
            log_event(
                _log,
                "voicemail.released",
                call_id=self.call_id,
                at_ms=round(action.at_ms, 1),
                frames=len(held),
                reason=action.reason,
            )
            for frame in held:
                await self._pass(frame)
            return
        # Everything that began before the verdict is the greeting the opener answers.
        self._greeting_open = self._caller_speaking
        self._greeting_end_ms = _latest(self._last_speech_end_ms, self.now_ms())
        if self._greeting.pending:
            if self._greeting.settled and not self._greeting_open:
                await self._flush_greeting()
            elif self._flush_due_ms is None:
                self._flush_due_ms = self.now_ms() + self.greeting_flush_ms
        if self._caller_speaking:
            self._opener_state = "pending"
            self._opener_due_ms = self.now_ms() + self.opener_max_wait_ms
            log_event(_log, "voicemail.opener_waits", call_id=self.call_id, reason=action.reason)
        else:
            await self._speak_opener(action.reason)

    async def _speak_pending_opener(self) -> None:
        if self._opener_state == "pending":
            await self._speak_opener("the caller stopped speaking")

    async def _speak_opener(self, reason: str) -> None:
        if self._opener_state not in ("waiting", "pending") or self._ended or self._stopped:
            return
        self._opener_state = "spoken"
        self._opener_due_ms = None
        self._agent_may_speak = True
        log_event(
            _log,
            "voicemail.opener",
            call_id=self.call_id,
            at_ms=round(self._elapsed(), 1),
            reason=reason,
        )
        await self.push_frame(TTSSpeakFrame(text=self.welcome_message))

    async def _enter_machine(self) -> None:
        if self._mode == "machine":
            return
        was_conversation = self._mode == "conversation"
        self._mode = "machine"
        self._held = []
        if self._opener_state in ("waiting", "pending"):
            self._opener_state = "cancelled"  # never greet a machine
            self._opener_due_ms = None
        self._flush_due_ms = None
        if was_conversation and self._passed_speech_start is not None:
            # Turn taking saw the caller start: close it, or the rest of the greeting would
            # read as a barge-in on the message.
            start, self._passed_speech_start = self._passed_speech_start, None
            now = self.now_ms()
            await self.push_frame(UserStoppedSpeakingFrame(start_ms=start, stop_ms=now))

    async def _interrupt_agent(self) -> None:
        if self._agent_may_speak:
            log_event(_log, "voicemail.interrupt_agent", call_id=self.call_id)
            await self.push_frame(InterruptionFrame())

    async def _hang_up(self) -> None:
        await self._flush_greeting()
        await self._interrupt_agent()
        log_event(_log, "voicemail.hangup", call_id=self.call_id, at_ms=round(self._elapsed(), 1))
        self._ended = True
        await self.push_frame(EndCallFrame(reason=_VOICEMAIL))

    async def _start_message(self, action: StartVoicemailMessage) -> None:
        await self._flush_greeting()
        if action.restart or self._agent_may_speak:
            await self.push_frame(InterruptionFrame())
        self._agent_may_speak = True
        self._message_started_ms = action.at_ms
        log_event(
            _log,
            "voicemail.message",
            call_id=self.call_id,
            at_ms=round(action.at_ms, 1),
            trigger=action.trigger,
            restart=action.restart,
        )
        if not self.voicemail_message:
            log_event(_log, "voicemail.no_message", level=logging.WARNING, call_id=self.call_id)
            self._ended = True
            await self.push_frame(EndCallFrame(reason=_VOICEMAIL))
            return
        if action.restart or action.trigger == "beep_end":
            # Nothing can restart it any more: it ends the call once heard.
            self._message_final = True
            self._ended = True
            await self.push_frame(
                TTSSpeakFrame(text=self.voicemail_message, end_call_reason=_VOICEMAIL)
            )
        else:
            await self.push_frame(TTSSpeakFrame(text=self.voicemail_message))

    async def _check_message_window(self, now: float) -> None:
        """A message started before a beep: once a restart can no longer come, end the call
        after its audio (an empty speak frame with the reason, queued behind it)."""
        started = self._message_started_ms
        if started is None or self._message_final or self._ended:
            return
        # Two frames of grace: a beep ending at the window's edge is confirmed a frame later.
        window = self._arbiter.settings.restart_window_ms + 40.0
        if self._t(now) < started + window:
            return
        self._message_final = True
        self._ended = True
        log_event(_log, "voicemail.message_final", call_id=self.call_id)
        await self.push_frame(TTSSpeakFrame(text="", end_call_reason=_VOICEMAIL))

    async def _flush_greeting(self) -> None:
        self._flush_due_ms = None
        taken = self._greeting.take()
        if taken is None:
            return
        text, start_ms = taken
        await self.push_frame(TranscriptEntryFrame(role="caller", text=text, timestamp_ms=start_ms))

    async def _send_result(self, *, force: bool = False) -> None:
        r = self._arbiter.result()
        if r.voicemail_detected is None and not force:
            return
        detected = r.detected_ms if r.voicemail_detected else r.human_confirmed_ms
        key = (r.voicemail_detected, r.method, r.amd_result, detected, r.late)
        if key == self._last_result:
            return
        self._last_result = key
        await self.push_frame(
            VoicemailResultFrame(
                voicemail_detected=r.voicemail_detected,
                method=r.method,
                amd_result=r.amd_result,
                detected_ms=detected,
                late=r.late,
                reason=r.reason,
            )
        )

    async def _run_ending(self) -> None:
        if self._stopped:
            return
        await self._flush_greeting()
        if self._last_result is None:
            await self._send_result(force=True)
        self._stopped = True
        self._beep = None
        timer, self._timer = self._timer, None
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()

    def _beep_wanted(self, now: float) -> bool:
        if self._ended or self._stopped:
            return False
        state = self._arbiter.state
        if state == "listening":
            return True
        if state == "human":
            return (
                self.late_beep_detection and self._t(now) <= self._arbiter.settings.late_window_ms
            )
        return self.voicemail_action == "leave_message" and not self._message_final

    def _update_lifecycle(self, now: float) -> None:
        """Stop what the rest of the call does not need."""
        if self._beep is not None and not self._beep_wanted(now):
            self._beep = None
        if not self._feeding:
            return
        state = self._arbiter.state
        done = self._ended or self._stopped
        if state == "human":
            done = done or self._t(now) > self._arbiter.settings.late_window_ms
        elif state == "machine":
            done = done or self.voicemail_action != "leave_message" or self._message_final
        if done:
            self._feeding = False
            log_event(
                _log,
                "voicemail.final",
                level=logging.DEBUG,
                call_id=self.call_id,
                state=state,
                at_ms=round(self._t(now), 1),
            )
