"""Sandbox callee scripts for voicemail detection, each with the AMD result a carrier reports.

Who picks up: answering machines (personal, family, business; with and without a beep; long
and short; English, Spanish, French, German, Portuguese, Italian), carrier prompts ("the
person you are calling is not available", a full mailbox, a number out of service), people
answering in different ways ("Hello?" then silence; "Yeah, hello, who is this?"; "He's not
available right now, can I take a message?"; a long live answer; the same in the other
languages) and a silent line. Each :class:`VoicemailScript` is data:

* ``steps`` — the :mod:`~nixflex_engine.sandbox.callee` script (``callee_script()`` wraps
  it): a machine plays its greeting (sandbox speech, which the fake Deepgram STT decodes back
  to the text), its beep, then records silence until the engine hangs up (or gives up after
  ``record_ms``); a person says their greeting, waits for the agent, answers once, hangs up.
* ``expected`` — ``machine`` or ``human`` (a silent line counts as a person: the agent greets
  it).
* ``amd`` — what Twilio's async AMD (``MachineDetection=DetectMessageEnd``) would report for
  this audio, and when its callback reaches the engine: :func:`twilio_amd` on the script's
  timeline with Twilio's documented default thresholds (:class:`AmdThresholds`). It errs
  where Twilio does — a live answer longer than ``MachineDetectionSpeechThreshold`` becomes
  ``machine_end_silence``, a greeting shorter than it ``human``, silence ``unknown`` — so the
  set has disagreements between AMD and the transcript by construction. The fake carrier
  posts ``amd.form()`` to the call's AMD callback ``amd.callback_ms`` after the media stream
  starts; tests inject it as ``AMDResultFrame(amd.answered_by,
  amd.machine_detection_duration_ms)``.

Timelines (:meth:`VoicemailScript.timeline`) are in line ms from the stream start, from the
steps alone: :func:`~nixflex_engine.sandbox.speech.duration_ms` per ``Say``, every step
rounded up to whole 20 ms frames as the callee sends them, up to the first step that waits
for the agent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from nixflex_engine.sandbox import speech
from nixflex_engine.sandbox.callee import (
    FRAME_MS,
    CalleeScript,
    Hangup,
    Play,
    PlayFile,
    Say,
    Silence,
    Step,
    Tone,
    UntilAgentSilent,
    UntilAgentSpeaks,
)

__all__ = [
    "RECORD_MS",
    "SCRIPTS",
    "AmdOutcome",
    "AmdThresholds",
    "Expected",
    "Segment",
    "VoicemailScript",
    "get_script",
    "machine",
    "person",
    "twilio_amd",
]

Expected = Literal["machine", "human"]


# --- AMD emulation ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AmdThresholds:
    """Twilio's AMD parameters (their documented defaults) and the callback's trip time."""

    #: ``MachineDetectionSpeechThreshold``: speech longer than this is a machine.
    speech_threshold_ms: float = 2400.0
    #: ``MachineDetectionSpeechEndThreshold``: silence that ends the speech (or the message).
    speech_end_threshold_ms: float = 1200.0
    #: ``MachineDetectionSilenceTimeout``: initial silence after which the answer is unknown.
    silence_timeout_ms: float = 5000.0
    #: ``MachineDetectionTimeout``: no answer after this long → ``machine_end_other`` /
    #: ``unknown``.
    timeout_ms: float = 30000.0
    #: From Twilio's decision to the callback reaching the engine.
    callback_latency_ms: float = 250.0


@dataclass(frozen=True, slots=True)
class AmdOutcome:
    """What the fake carrier reports: Twilio's ``AnsweredBy`` and ``MachineDetectionDuration``,
    posted ``callback_ms`` after the media stream starts."""

    answered_by: str
    machine_detection_duration_ms: int
    callback_ms: float

    def form(self) -> dict[str, str]:
        """The callback's form fields, as Twilio posts them (strings)."""
        return {
            "AnsweredBy": self.answered_by,
            "MachineDetectionDuration": str(self.machine_detection_duration_ms),
        }


@dataclass(frozen=True, slots=True)
class Segment:
    """Sound on the line: ``speech`` (with its text) or a ``tone``; line ms."""

    kind: Literal["speech", "tone", "audio"]
    start_ms: float
    end_ms: float
    text: str = ""


def twilio_amd(timeline: Sequence[Segment], thresholds: AmdThresholds | None = None) -> AmdOutcome:
    """Emulate Twilio's async AMD with ``DetectMessageEnd`` on a timeline of sound.

    Sound separated by less than ``speech_end_threshold_ms`` of silence counts as one run.
    No sound within ``silence_timeout_ms``: ``unknown``. A tone before the verdict: the
    greeting ended on a beep, ``machine_end_beep`` at the tone's end. A first run shorter than
    ``speech_threshold_ms``: ``human`` once it has been followed by
    ``speech_end_threshold_ms`` of silence. Longer: a machine, and with ``DetectMessageEnd``
    Twilio then waits for the end of the message — the end of the first tone after the
    verdict (``machine_end_beep``) or the first silence of ``speech_end_threshold_ms``
    (``machine_end_silence``); neither before ``timeout_ms``: ``machine_end_other``.
    """
    th = thresholds or AmdThresholds()
    sounds = sorted(timeline, key=lambda s: s.start_ms)

    def outcome(answered_by: str, at_ms: float) -> AmdOutcome:
        return AmdOutcome(answered_by, round(at_ms), at_ms + th.callback_latency_ms)

    if not sounds or sounds[0].start_ms >= th.silence_timeout_ms:
        return outcome("unknown", th.silence_timeout_ms)
    runs: list[list[Segment]] = []
    for seg in sounds:
        if runs and seg.start_ms - runs[-1][-1].end_ms < th.speech_end_threshold_ms:
            runs[-1].append(seg)
        else:
            runs.append([seg])
    first = runs[0]
    start = first[0].start_ms
    decided_machine_ms = start + th.speech_threshold_ms
    for seg in first:
        if seg.kind == "tone" and seg.start_ms < decided_machine_ms:
            return outcome("machine_end_beep", seg.end_ms)
    first_end = first[-1].end_ms
    if first_end - start < th.speech_threshold_ms:
        return outcome("human", first_end + th.speech_end_threshold_ms)
    for run in runs:
        for seg in run:
            if seg.kind == "tone" and seg.end_ms > decided_machine_ms:
                return outcome("machine_end_beep", min(seg.end_ms, th.timeout_ms))
        end = run[-1].end_ms
        if end >= decided_machine_ms:
            silence_end = end + th.speech_end_threshold_ms
            if silence_end <= th.timeout_ms:
                return outcome("machine_end_silence", silence_end)
            break
    return outcome("machine_end_other", th.timeout_ms)


# --- scripts ---------------------------------------------------------------------------------


def _frames_ms(ms: float) -> float:
    return math.ceil(ms / FRAME_MS - 1e-9) * FRAME_MS


def _round_frames_ms(ms: float) -> float:
    return max(0, round(ms / FRAME_MS)) * FRAME_MS


@dataclass(frozen=True, slots=True)
class VoicemailScript:
    """One pickup: the callee's steps, who it is, and what AMD reports for it."""

    name: str
    expected: Expected
    language: str
    category: str
    steps: tuple[Step, ...]
    amd: AmdOutcome
    notes: str = ""

    def callee_script(self) -> CalleeScript:
        """The steps as a :class:`~nixflex_engine.sandbox.callee.CalleeScript`."""
        return CalleeScript(self.steps)

    def timeline(self) -> tuple[Segment, ...]:
        """Sound on the line (line ms) up to the first step that waits for the agent."""
        return _timeline(self.steps)

    @property
    def greeting(self) -> str:
        """Everything said before the first step that waits for the agent."""
        return " ".join(s.text for s in self.timeline() if s.kind == "speech")

    @property
    def beep_end_ms(self) -> float | None:
        """Line ms at which the (first) beep ends; ``None`` without one."""
        return next((s.end_ms for s in self.timeline() if s.kind == "tone"), None)

    @property
    def greeting_end_ms(self) -> float:
        """Line ms at which the last sound before the first wait for the agent ends."""
        segs = self.timeline()
        return segs[-1].end_ms if segs else 0.0


def _timeline(steps: Sequence[Step]) -> tuple[Segment, ...]:
    t = 0.0
    out: list[Segment] = []
    for step in steps:
        if isinstance(step, Say):
            dur = _frames_ms(speech.duration_ms(step.text))
            out.append(Segment("speech", t, t + speech.duration_ms(step.text), step.text))
        elif isinstance(step, Tone):
            dur = _frames_ms(step.ms)
            out.append(Segment("tone", t, t + step.ms))
        elif isinstance(step, Play):
            n = len(step.audio) if isinstance(step.audio, bytes) else int(step.audio.size)
            dur = _frames_ms(n / 8.0)
            out.append(Segment("audio", t, t + n / 8.0))
        elif isinstance(step, Silence):
            dur = _round_frames_ms(step.ms)
        elif isinstance(step, PlayFile):
            raise ValueError("a PlayFile step has no timeline without reading the file")
        else:  # the first step that waits for the agent (or ends the call)
            break
        t += dur
    return tuple(out)


#: A machine records for at most this long after its greeting, then hangs up.
RECORD_MS = 30000.0
_SENTENCE_PAUSE_MS = 450.0
_PICKUP_MS = 300.0


def machine(
    name: str,
    language: str,
    category: str,
    sentences: Sequence[str],
    *,
    beep: tuple[float, float] | None = (1000.0, 500.0),
    pause_ms: float = _SENTENCE_PAUSE_MS,
    beep_gap_ms: float = 700.0,
    lead_ms: float = _PICKUP_MS,
    then_hang_up_ms: float | None = None,
    record_ms: float = RECORD_MS,
    notes: str = "",
) -> VoicemailScript:
    """A machine: a recorded greeting (sentences with short pauses), an optional beep
    (``(hz, ms)``), then silence while it records, for at most ``record_ms``; or, for a
    carrier prompt with no mailbox, a hang-up ``then_hang_up_ms`` after the prompt."""
    steps: list[Step] = [Silence(lead_ms)]
    for i, sentence in enumerate(sentences):
        if i:
            steps.append(Silence(pause_ms))
        steps.append(Say(sentence, pitch_hz=165.0))
    if beep is not None:
        steps += [Silence(beep_gap_ms), Tone(beep[0], beep[1])]
    if then_hang_up_ms is not None:
        steps += [Silence(then_hang_up_ms), Hangup()]
    else:
        steps += [Silence(record_ms), Hangup()]
    return VoicemailScript(
        name, "machine", language, category, tuple(steps), twilio_amd(_timeline(steps)), notes
    )


def person(
    name: str,
    language: str,
    category: str,
    greeting: Sequence[str | float],
    reply: str,
    *,
    lead_ms: float = 500.0,
    wait_for_agent_ms: float = 10000.0,
    notes: str = "",
) -> VoicemailScript:
    """A person: the greeting (strings are said, numbers are pauses in ms), then they wait for
    the agent (up to ``wait_for_agent_ms``), answer once when it stops, and hang up."""
    steps: list[Step] = [Silence(lead_ms)]
    for part in greeting:
        steps.append(Silence(part) if isinstance(part, float | int) else Say(part))
    steps += [
        UntilAgentSpeaks(timeout_ms=wait_for_agent_ms),
        UntilAgentSilent(silence_ms=700.0, timeout_ms=30000.0),
        Say(reply),
        Silence(1500.0),
        Hangup(),
    ]
    return VoicemailScript(
        name, "human", language, category, tuple(steps), twilio_amd(_timeline(steps)), notes
    )


SCRIPTS: tuple[VoicemailScript, ...] = (
    # ------------------------------------------------------------------------ machines
    machine(
        "en_personal_beep_long",
        "en",
        "personal",
        [
            "Hi, you've reached Sarah Miller.",
            "I can't take your call right now.",
            "Please leave a message after the beep and I'll get back to you as soon as I can.",
        ],
    ),
    machine(
        "en_personal_beep_short",
        "en",
        "personal_short",
        ["Hi, it's Tom. Leave a message."],
        beep=(850.0, 400.0),
    ),
    machine(
        "en_personal_short_no_beep",
        "en",
        "personal_short",
        ["Hey, it's Jen. Leave a message."],
        beep=None,
        notes="shorter than AMD's speech threshold: AMD says human, the transcript machine",
    ),
    machine(
        "en_family_no_beep",
        "en",
        "family",
        [
            "You've reached the Johnsons.",
            "We're not home right now, so leave us a message and we'll call you back.",
        ],
        beep=None,
    ),
    machine(
        "en_business_long",
        "en",
        "business",
        [
            "Thank you for calling Riverside Dental.",
            "Our office is currently closed.",
            "Our business hours are Monday through Friday, eight to five.",
            "If this is an emergency, please hang up and dial nine one one.",
            "Otherwise, please leave your name and number after the tone.",
        ],
        beep=(1400.0, 300.0),
    ),
    machine(
        "en_carrier_voicemail",
        "en",
        "carrier",
        [
            "The person you are calling is not available.",
            "Please leave a message after the tone.",
        ],
        beep=(1000.0, 600.0),
        pause_ms=300.0,
    ),
    machine(
        "en_carrier_unavailable",
        "en",
        "carrier_off",
        ["The number you have dialed is not available. Please try again later."],
        beep=None,
        then_hang_up_ms=1500.0,
        notes="no mailbox: the carrier hangs up after its prompt",
    ),
    machine(
        "en_mailbox_full",
        "en",
        "carrier_full",
        ["The mailbox is full and cannot accept any new messages. Goodbye."],
        beep=None,
        then_hang_up_ms=800.0,
    ),
    machine(
        "en_beep_only",
        "en",
        "beep_only",
        [],
        beep=(1000.0, 600.0),
        beep_gap_ms=1200.0,
        notes="a silent mailbox: only the beep",
    ),
    machine(
        "es_personal_beep",
        "es",
        "personal",
        [
            "Hola, has llamado a María García.",
            "No puedo atenderte en este momento.",
            "Deja tu mensaje después del tono.",
        ],
    ),
    machine(
        "es_carrier_voicemail",
        "es",
        "carrier",
        [
            "El número que usted marcó no está disponible.",
            "Por favor, deje su mensaje después del tono.",
        ],
        beep=(950.0, 500.0),
    ),
    machine(
        "fr_personal_beep",
        "fr",
        "personal",
        [
            "Bonjour, vous êtes bien sur la messagerie de Pierre Dubois.",
            "Je ne suis pas disponible pour le moment.",
            "Laissez-moi un message après le bip.",
        ],
        beep=(1200.0, 400.0),
    ),
    machine(
        "fr_short_no_beep",
        "fr",
        "personal_short",
        ["Vous êtes sur le répondeur de Claire, laissez un message."],
        beep=None,
    ),
    machine(
        "de_personal_beep",
        "de",
        "personal",
        [
            "Hallo, hier ist die Mailbox von Thomas Müller.",
            "Ich bin gerade nicht erreichbar.",
            "Bitte sprechen Sie nach dem Signalton.",
        ],
        beep=(1000.0, 400.0),
    ),
    machine(
        "de_carrier_no_beep",
        "de",
        "carrier",
        ["Der gewünschte Gesprächspartner ist zur Zeit nicht erreichbar."],
        beep=None,
    ),
    machine(
        "pt_personal_beep",
        "pt",
        "personal",
        [
            "Olá, você ligou para Ana Souza.",
            "No momento não posso atender.",
            "Deixe sua mensagem após o sinal.",
        ],
        beep=(900.0, 500.0),
    ),
    machine(
        "it_personal_beep",
        "it",
        "personal",
        [
            "Ciao, hai chiamato Marco Rossi.",
            "Al momento non posso rispondere.",
            "Lasciate un messaggio dopo il segnale acustico.",
        ],
        beep=(1000.0, 500.0),
    ),
    machine(
        "it_short_no_beep",
        "it",
        "personal_short",
        ["Risponde la segreteria di Giulia. Lasciate un messaggio."],
        beep=None,
    ),
    # ------------------------------------------------------------------------ people
    person(
        "en_hello_then_silence",
        "en",
        "hello",
        ["Hello?"],
        "Oh, hi. Sure, go ahead.",
        notes="the opener must follow within a second of 'Hello?'",
    ),
    person(
        "en_yeah_who_is_this",
        "en",
        "short",
        ["Yeah, hello, who is this?"],
        "Okay. What is this about?",
    ),
    person(
        "en_take_message",
        "en",
        "take_message",
        ["He's not available right now,", 350.0, "can I take a message?"],
        "Sure, I'll let him know.",
        notes="'not available' and 'message' said live; AMD calls the long answer a machine",
    ),
    person(
        "en_long_live_answer",
        "en",
        "long",
        [
            "Good afternoon, Riverside Dental, this is Jessica speaking.",
            300.0,
            "How can I help you today?",
        ],
        "Of course, one moment please.",
        notes="a receptionist's long answer: AMD says machine_end_silence",
    ),
    person("es_hello_who", "es", "short", ["¿Bueno? ¿Quién habla?"], "Ah, sí, dígame."),
    person("fr_allo", "fr", "short", ["Allô, oui ? C'est qui ?"], "D'accord, je vous écoute."),
    person("de_hallo_wer", "de", "short", ["Ja, hallo? Wer ist da?"], "Ach so, worum geht es?"),
    person("pt_alo_quem", "pt", "short", ["Alô? Quem fala?"], "Sim, pode falar."),
    person("it_pronto", "it", "short", ["Pronto? Chi parla?"], "Sì, mi dica."),
    person(
        "silence",
        "en",
        "silent",
        [],
        "Hello? Sorry, I couldn't hear you at first.",
        notes="nobody speaks: AMD reports unknown, the agent greets after the silence",
    ),
)

_BY_NAME: Mapping[str, VoicemailScript] = MappingProxyType({s.name: s for s in SCRIPTS})


def get_script(name: str) -> VoicemailScript:
    """The script called ``name`` (``KeyError`` if there is none)."""
    return _BY_NAME[name]
