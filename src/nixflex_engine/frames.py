"""Every frame type: the only way processors talk to each other.

Frames are small immutable dataclasses (``frozen=True, slots=True``). Three kinds decide how
a frame moves, as in Pipecat:

- :class:`SystemFrame` — out of band. Overtakes any queued data (a :class:`~nixflex_engine.
  pipeline.FrameQueue` passes it straight through) and is never dropped by an interruption.
  Caller audio, VAD events, transcripts, interruptions, cancellation, errors, metrics, mark
  echoes.
- :class:`DataFrame` — in band, in order. Agent output (LLM text, TTS audio) is
  *interruptible*: an :class:`InterruptionFrame` discards it wherever it is still queued.
- :class:`ControlFrame` — in band, in order, for lifecycle: :class:`EndFrame` arrives after
  the data queued before it; :class:`EndCallFrame` is held by the output transport until the
  agent's last audio has been heard.

Whether a frame is dropped on interruption is the class attribute ``interruptible``, not a
field, so it costs nothing per frame.

Times are milliseconds on the pipeline clock (``*_ms``), the one clock every latency figure
uses. Audio is mu-law 8 kHz (Twilio's and Deepgram's format) unless ``encoding`` says
``"pcm16"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Literal

__all__ = [
    "AMDResultFrame",
    "AudioEncoding",
    "BotStartedSpeakingFrame",
    "BotStoppedSpeakingFrame",
    "CancelFrame",
    "ControlFrame",
    "DTMFFrame",
    "DataFrame",
    "EndCallFrame",
    "EndFrame",
    "EndReason",
    "ErrorFrame",
    "Frame",
    "InputAudioFrame",
    "InterimTranscriptFrame",
    "InterruptionFrame",
    "LLMContextFrame",
    "LLMResponseEndFrame",
    "LLMResponseStartFrame",
    "LLMTextFrame",
    "LLMToolCallFrame",
    "LLMToolResultFrame",
    "LLMUsageFrame",
    "MarkFrame",
    "MarkPlayedFrame",
    "MetricsFrame",
    "OutputAudioFrame",
    "PlaybackClearedFrame",
    "PlayedAudioFrame",
    "StartFrame",
    "SystemFrame",
    "TTSSpeakFrame",
    "TTSStartedFrame",
    "TTSStoppedFrame",
    "TTSTextFrame",
    "TranscriptEntryFrame",
    "TranscriptFrame",
    "TransportStartedFrame",
    "UserStartedSpeakingFrame",
    "UserStoppedSpeakingFrame",
    "UserTurnEndedFrame",
    "VoicemailResultFrame",
]

#: How an audio frame's bytes are encoded: mu-law 8 kHz (the line) or 16-bit PCM.
AudioEncoding = Literal["mulaw", "pcm16"]


class EndReason(StrEnum):
    """Why a call ended (the call record's ``ended_reason`` for connected calls)."""

    AGENT_HANGUP = "agent_hangup"
    CALLER_HANGUP = "caller_hangup"
    SILENCE_TIMEOUT = "silence_timeout"
    MAX_DURATION = "max_duration"
    VOICEMAIL = "voicemail"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Frame:
    """Base of every frame."""

    interruptible: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class SystemFrame(Frame):
    """Out-of-band frame: overtakes queued data, never dropped by an interruption."""


@dataclass(frozen=True, slots=True)
class DataFrame(Frame):
    """In-band frame, delivered in order."""


@dataclass(frozen=True, slots=True)
class ControlFrame(Frame):
    """In-band lifecycle frame, delivered in order after the data queued before it."""


# --- lifecycle ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartFrame(SystemFrame):
    """First frame of every run; carries the call id and the audio format."""

    call_id: str = ""
    sample_rate: int = 8000


@dataclass(frozen=True, slots=True)
class TransportStartedFrame(SystemFrame):
    """The media stream is up (Twilio ``start``): stream and call sids, custom parameters."""

    stream_sid: str
    call_sid: str
    account_sid: str = ""
    custom_parameters: dict[str, str] = field(default_factory=dict)
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000


@dataclass(frozen=True, slots=True)
class EndFrame(ControlFrame):
    """Graceful end: processors finish what they hold, then the run stops."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class EndCallFrame(ControlFrame):
    """The agent ends the call once its audio queued so far has been heard.

    The output transport holds this frame until Twilio has echoed the last mark, then passes
    it on; reaching the end of the pipeline, it ends the run with ``reason``.
    """

    reason: str = EndReason.AGENT_HANGUP.value


@dataclass(frozen=True, slots=True)
class CancelFrame(SystemFrame):
    """Immediate stop: nothing queued is delivered (caller hung up, socket lost)."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class InterruptionFrame(SystemFrame):
    """The caller barged in: drop queued agent output, cancel generation, clear playback."""


@dataclass(frozen=True, slots=True)
class ErrorFrame(SystemFrame):
    """A processor failed. ``fatal`` errors end the call with ``ended_reason: error``."""

    error: str
    processor: str = ""
    fatal: bool = False


@dataclass(frozen=True, slots=True)
class MetricsFrame(SystemFrame):
    """One measurement, e.g. ``name="llm_ttft_ms"``; ``turn`` numbers the agent's reply."""

    name: str
    value: float
    turn: int | None = None
    processor: str = ""


# --- caller side ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InputAudioFrame(SystemFrame):
    """Caller audio (20 ms from Twilio). ``timestamp_ms``: Twilio's media timestamp."""

    audio: bytes
    timestamp_ms: int = 0
    sample_rate: int = 8000
    encoding: AudioEncoding = "mulaw"
    pcm: bytes | None = None  # PCM16 of ``audio`` once a decoder has computed it


@dataclass(frozen=True, slots=True)
class DTMFFrame(SystemFrame):
    """A key the caller pressed."""

    digit: str


@dataclass(frozen=True, slots=True)
class UserStartedSpeakingFrame(SystemFrame):
    """The caller started speaking (VAD, after ``start_speech_ms`` of speech)."""

    start_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class UserStoppedSpeakingFrame(SystemFrame):
    """The caller stopped speaking (VAD, after ``stop_silence_ms`` of silence)."""

    start_ms: float = 0.0
    stop_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class InterimTranscriptFrame(SystemFrame):
    """A partial transcript of what the caller is saying; may still change."""

    text: str
    start_ms: float = 0.0
    end_ms: float = 0.0
    confidence: float = 1.0


@dataclass(frozen=True, slots=True)
class TranscriptFrame(SystemFrame):
    """A final transcript segment. ``speech_final``: the STT thinks the utterance ended."""

    text: str
    start_ms: float = 0.0
    end_ms: float = 0.0
    speech_final: bool = False
    confidence: float = 1.0
    language: str | None = None
    received_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class UserTurnEndedFrame(SystemFrame):
    """The caller's turn is over: ``text`` is everything they said in it."""

    text: str
    speech_end_ms: float = 0.0
    decided_ms: float = 0.0
    preemptive: bool = False


@dataclass(frozen=True, slots=True)
class TranscriptEntryFrame(SystemFrame):
    """One line of the call transcript.

    The user-side context aggregator sends caller lines downstream; the assistant-side
    aggregator (after the output transport) sends agent lines upstream, cut to what the
    caller heard and flagged ``interrupted``. Both reach the run's edges, where the call
    session keeps the transcript, and the user side adds agent lines to the LLM context.
    """

    role: Literal["agent", "caller"]
    text: str
    timestamp_ms: float = 0.0
    interrupted: bool = False


@dataclass(frozen=True, slots=True)
class AMDResultFrame(SystemFrame):
    """Twilio's async answering-machine detection result for this call.

    Injected by the call session (``task.queue_frame``) when Twilio's AMD status callback
    arrives: ``answered_by`` as Twilio sends it (``human``, ``machine_start``,
    ``machine_end_beep``, ``machine_end_silence``, ``machine_end_other``, ``fax``,
    ``unknown``) and ``machine_detection_duration_ms`` (Twilio's ``MachineDetectionDuration``;
    ``None`` when absent). The voicemail arbiter reads it.
    """

    answered_by: str
    machine_detection_duration_ms: float | None = None


@dataclass(frozen=True, slots=True)
class VoicemailResultFrame(SystemFrame):
    """The voicemail arbiter's verdict, for the call record (sent downstream).

    ``voicemail_detected``: ``True`` a machine, ``False`` a person, ``None`` undecided (the
    call ended first). ``method``: the detector that found the machine (``amd``,
    ``transcript`` or ``beep``; ``None`` for a person). ``amd_result``: Twilio's
    ``AnsweredBy`` if it arrived. ``detected_ms``: when the verdict was reached, ms since
    pickup. ``late``: a machine found after the conversation had started. Sent again when
    the result changes (a late machine, an AMD result arriving after the verdict).
    """

    voicemail_detected: bool | None
    method: str | None = None
    amd_result: str | None = None
    detected_ms: float | None = None
    late: bool = False
    reason: str = ""


# --- agent side ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LLMContextFrame(DataFrame):
    """Ask the LLM for a reply to ``messages`` (Anthropic message dicts) under ``system``."""

    messages: tuple[dict[str, Any], ...]
    system: str = ""
    turn: int = 0


@dataclass(frozen=True, slots=True)
class LLMResponseStartFrame(ControlFrame):
    """An LLM reply begins."""

    interruptible: ClassVar[bool] = True
    turn: int = 0


@dataclass(frozen=True, slots=True)
class LLMTextFrame(DataFrame):
    """A piece of the LLM's reply as it streams."""

    interruptible: ClassVar[bool] = True
    text: str


@dataclass(frozen=True, slots=True)
class LLMResponseEndFrame(ControlFrame):
    """An LLM reply is complete."""

    interruptible: ClassVar[bool] = True
    turn: int = 0


@dataclass(frozen=True, slots=True)
class LLMUsageFrame(SystemFrame):
    """Token usage of one LLM request."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    turn: int = 0


@dataclass(frozen=True, slots=True)
class LLMToolCallFrame(SystemFrame):
    """The LLM asked for a tool mid-reply (Claude ``tool_use``): the handler runs next."""

    tool_use_id: str
    name: str
    input: dict[str, Any] = field(default_factory=dict)
    turn: int = 0


@dataclass(frozen=True, slots=True)
class LLMToolResultFrame(SystemFrame):
    """What a tool handler returned (sent back to the LLM, which then continues its reply)."""

    tool_use_id: str
    name: str
    result: str
    is_error: bool = False
    turn: int = 0


@dataclass(frozen=True, slots=True)
class TTSSpeakFrame(DataFrame):
    """Say exactly this text (an opener, a goodbye, a voicemail message)."""

    interruptible: ClassVar[bool] = True
    text: str
    end_call_reason: str | None = None


@dataclass(frozen=True, slots=True)
class TTSStartedFrame(ControlFrame):
    """The TTS begins audio for a reply."""

    interruptible: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class TTSTextFrame(DataFrame):
    """The text of one TTS chunk, pushed just before that chunk's audio."""

    interruptible: ClassVar[bool] = True
    text: str
    chunk_id: str = ""


@dataclass(frozen=True, slots=True)
class TTSStoppedFrame(ControlFrame):
    """The TTS has sent all audio for a reply."""

    interruptible: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class OutputAudioFrame(DataFrame):
    """Agent audio for the caller; ``chunk_id`` names the TTS chunk it belongs to."""

    interruptible: ClassVar[bool] = True
    audio: bytes
    sample_rate: int = 8000
    encoding: AudioEncoding = "mulaw"
    chunk_id: str = ""


@dataclass(frozen=True, slots=True)
class MarkFrame(DataFrame):
    """Ask the output transport to send a Twilio ``mark`` after the audio queued so far."""

    interruptible: ClassVar[bool] = True
    name: str


# --- playback feedback (from the output transport) ----------------------------------------


@dataclass(frozen=True, slots=True)
class PlayedAudioFrame(SystemFrame):
    """Agent audio sent to the caller, scheduled to play from ``play_at_ms``.

    Emitted by the output transport for the recorder and for whoever tracks what was heard;
    a later :class:`PlaybackClearedFrame` may cut it short.
    """

    audio: bytes
    play_at_ms: float
    chunk_id: str = ""


@dataclass(frozen=True, slots=True)
class MarkPlayedFrame(SystemFrame):
    """Twilio echoed mark ``name``: all audio before it has been heard (or, after a clear,
    discarded; ``cleared`` tells which)."""

    name: str
    heard_ms: float = 0.0
    cleared: bool = False


@dataclass(frozen=True, slots=True)
class PlaybackClearedFrame(SystemFrame):
    """The caller's playback buffer was cleared at ``at_ms``.

    ``heard`` maps each chunk id that had started playing to the milliseconds of it the
    caller heard; chunks not listed were not heard at all.
    """

    at_ms: float
    heard: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BotStartedSpeakingFrame(SystemFrame):
    """Agent audio started playing to the caller."""

    at_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class BotStoppedSpeakingFrame(SystemFrame):
    """Agent audio finished playing (or was cleared)."""

    at_ms: float = 0.0
