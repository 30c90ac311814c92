"""Turn taking: when the caller's turn ends, when the caller barges in, and silence.

Consumes (and passes on, in their direction): ``StartFrame``, ``TransportStartedFrame``,
``UserStartedSpeakingFrame``/``UserStoppedSpeakingFrame`` (local VAD), ``InterimTranscriptFrame``
and ``TranscriptFrame`` (Deepgram), and, travelling upstream from the output transport,
``BotStartedSpeakingFrame``/``BotStoppedSpeakingFrame`` and the agent's
``TranscriptEntryFrame`` (from the assistant context aggregator).

Emits downstream: ``UserTurnEndedFrame`` (the caller's turn is over; ``preemptive=True`` for
a tentative turn started early), ``InterruptionFrame`` (barge-in, or a preemptive turn
discarded), ``TTSSpeakFrame`` (silence re-prompt; goodbye with ``end_call_reason``
``silence_timeout`` or ``max_duration``) and, as a safety net, ``EndCallFrame``.

Three pure cores, testable with no event loop (times are passed in, in run-clock ms):

* :class:`TurnDetector` decides the end of the caller's turn.
* :class:`BargeInPolicy` decides whether caller speech over the agent is an interruption.
* backchannel / unfinished-sentence word lists (:func:`is_backchannel`,
  :func:`looks_unfinished`).

:class:`TurnTakingProcessor` wraps them, owns one timer task (made with ``create_task``) for
the next deadline, and adds silence handling and the call's maximum duration.

Turn end rules (:class:`TurnDetector`)
--------------------------------------
Nothing ends while the VAD says the caller is speaking. Once it says they stopped (at
``stop_ms``), the words of the turn are the final transcripts received since the previous
turn, plus the latest interim result if it is newer than the last final (*pending*). The
finals *cover* the speech when nothing is pending and a final arrived after the VAD stop,
or a final was ``speech_final``, or ``stt_grace_ms`` passed after the stop with no new
transcript while the latest speech has been transcribed at least in part (an STT that drops
empty finals after ``Finalize``; speech with no transcript at all, such as a cough after a
sentence, waits for the STT up to ``max_turn_wait_ms``). Then the turn ends:

1. covered and the text looks finished, ``response_delay_ms`` after the VAD stop;
2. covered but the text looks unfinished ("I was wondering if", a trailing comma),
   ``unfinished_wait_ms`` after the VAD stop, unless the caller goes on;
3. on an utterance end (:meth:`TurnDetector.on_utterance_end`), with whatever was said;
4. at the latest ``max_turn_wait_ms`` after the VAD stop, with the pending interim too.

If the VAD never fired (quiet speech), the arrival of the first final stands for its stop.
When a turn had to include interim text (rule 4, or a committed preemptive turn), the late
finals for that speech are *absorbed* (dropped) until the caller speaks again, so the same
words are never answered twice.

Preemptive generation (``preemptive=True``): as soon as the VAD has stopped and the words so
far (finals + pending interim) look finished, a tentative turn is emitted
(``UserTurnEndedFrame(preemptive=True)``) so the LLM starts before the turn is confirmed.
When the turn is confirmed with the same words (:func:`same_utterance`), a
``UserTurnEndedFrame(preemptive=False)`` with the final text follows and the reply goes on;
if the caller starts speaking again before the agent's audio starts, or the confirmed words
differ, the tentative turn is *discarded*: an ``InterruptionFrame`` goes downstream (the
context aggregator rolls the tentative message back, the LLM and TTS stop), and the
confirmed turn, if any, follows as a new one. Once the agent's reply is audible, a pending
tentative turn is committed as is.

Barge-in (:class:`BargeInPolicy`)
---------------------------------
The agent is *active* from the end of a caller turn until its reply has played
(``BotStoppedSpeakingFrame``), so a caller who goes on talking also cancels a reply that is
still being generated. While it is active, caller speech interrupts when it lasts longer
than ``min_speech_ms`` (VAD timing: a timer fires at speech start + threshold, no transcript
needed) or when transcripts of it hold at least ``min_words`` words that are not
backchannels. Speech whose transcript so far is only backchannels ("uh-huh", "yeah",
"okay", "mm-hmm", "d'accord", "genau", "vale"…) never interrupts on duration. A cough is a
short burst with no words: below the duration threshold, it is ignored.

``interruption_sensitivity`` (0 to 100, the agent setting) maps to the thresholds:

====================  ======  ======  ======  ======  ======
sensitivity           0       25      50      75      100
``min_speech_ms``     never   653     400     245     150
``min_words``         never   3       2       1       1
====================  ======  ======  ======  ======  ======

``min_speech_ms = 150 * (8/3) ** ((100 - s) / 50)`` (150 ms at 100, 400 ms at the default 50,
about 1,050 ms at 1) and ``min_words = 1 + (100 - s) * 3 // 100`` (at most 3); 0
disables barge-in entirely. Caller speech that overlaps the agent without interrupting is
held: it becomes a turn after the agent stops, unless it was only backchannels (speech that
began over the agent and says only "uh-huh" is never a turn, even if it ends after the agent).
A reply that does not start playing within ``reply_timeout_ms`` of the turn (an LLM that never
answers) gives the floor back to the caller.

Silence and duration (:class:`TurnTakingProcessor`)
---------------------------------------------------
Silence is counted once the agent has spoken (after the opener) whenever neither side is
speaking and no reply is pending. After ``reprompt_after_ms`` of it the agent re-prompts
once (a ``TTSSpeakFrame`` with ``reprompt_text``: deterministic, no LLM round trip, and the
assistant aggregator records it in the context when heard); the re-prompt's own playback
does not restart the count, a caller turn does. After ``silence_hangup_seconds`` of it:
``TTSSpeakFrame(silence_goodbye_text, end_call_reason="silence_timeout")``. After
``max_call_duration_seconds`` from the stream start: any reply is interrupted and
``TTSSpeakFrame(max_duration_goodbye_text, end_call_reason="max_duration")`` is pushed.
While the goodbye plays, nothing interrupts it and no turn starts; if the run has not ended
``goodbye_grace_ms`` later (TTS failure), an ``EndCallFrame`` with the reason is pushed.

STT conventions: the frame set has no frame for Deepgram's ``UtteranceEnd``. The STT sends
``TranscriptFrame(text="", speech_final=True)`` for it and for a ``Finalize`` answered with
nothing new, which cannot be told apart, so the processor takes it as "the finals cover the
speech" (a final with nothing to add), not as :meth:`TurnDetector.on_utterance_end` (which
would end a turn that stops mid-clause at once); ``unfinished_wait_ms`` (1 s by default, like
Deepgram's ``utterance_end_ms``) then plays the utterance end's part.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

from nixflex_engine.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndCallFrame,
    EndFrame,
    EndReason,
    Frame,
    InterimTranscriptFrame,
    InterruptionFrame,
    StartFrame,
    TranscriptEntryFrame,
    TranscriptFrame,
    TransportStartedFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserTurnEndedFrame,
)
from nixflex_engine.log import get_logger, log_event
from nixflex_engine.pipeline.processor import (
    UPSTREAM,
    FrameDirection,
    FrameProcessor,
    ProcessorContext,
)

__all__ = [
    "BACKCHANNEL_WORDS",
    "BargeInPolicy",
    "TurnDetector",
    "TurnDiscard",
    "TurnEnd",
    "TurnEvent",
    "TurnTakingProcessor",
    "content_words",
    "interruption_min_words",
    "interruption_threshold_ms",
    "is_backchannel",
    "looks_unfinished",
    "same_utterance",
    "words",
]

_log = get_logger(__name__)

# --- words -----------------------------------------------------------------------------------

#: Words that, alone or together, make a backchannel or a filler: the listener signals
#: attention, not a wish to speak. Lower case; several languages.
BACKCHANNEL_WORDS: frozenset[str] = frozenset(
    (
        # English
        "yeah yes yep yup ya yea uh-huh uh-hum uhhuh mhm mm-hmm mmhmm mm-hm hmm hm mm mmm okay ok"
        " k right sure alright all gotcha got it i see true exactly totally cool great fine good"
        " nice wow oh ah aha uh um er erm huh indeed absolutely definitely really"
        # Spanish, Portuguese, Italian
        " s\u00ed si vale claro aj\u00e1 aja bueno sim certo uhum t\u00e1 beleza esatto va bene"
        " gi\u00e0"
        # French
        " oui ouais d'accord voil\u00e0 bon ben mmh euh bien entendu exact"
        # German, Dutch
        " ja genau klar stimmt jo jep richtig gut ok\u00e9 precies klopt nou"
    ).split()
)

#: Last words after which a sentence is almost never over: conjunctions, articles,
#: possessive determiners, a few prepositions, fillers. A trailing period from the STT does not
#: make it finished. Words that often end a complete sentence are left out on purpose ("I'd
#: like that", "I think so", "I'd love to", "Ich mag das", "Ik weet het"): a wrong "unfinished"
#: costs ``unfinished_wait_ms`` of silence on every such turn.
_UNFINISHED_WORDS: frozenset[str] = frozenset(
    (
        # English
        "and but or because cause 'cause if unless although though whereas than the a an my"
        " your our their of with into i'm i'd i'll we're you're they're let's um uh er erm"
        # Spanish, Portuguese, Italian
        " y pero porque que de del el los las un una para con mi tu su e mas com uma ma"
        " perch\u00e9 di il per"
        # French
        " et mais parce le les une pour avec donc euh mon ton ta des du au"
        # German, Dutch
        " und aber weil dass der ein eine maar omdat een"
    ).split()
)

_APOSTROPHES = "'\u2019"
_TRAILING_UNFINISHED = (",", ";", ":", "-", "\u2014", "\u2013", "...", "\u2026")
_WORD_RE = re.compile(rf"[\w{_APOSTROPHES}\-]+", re.UNICODE)


def words(text: str) -> list[str]:
    """The words of ``text``, lower case, without punctuation (apostrophes and hyphens kept)."""
    return [w.lower().replace(_APOSTROPHES[1], "'") for w in _WORD_RE.findall(text)]


def is_backchannel(text: str) -> bool:
    """Whether ``text`` has words and all of them are backchannels or fillers."""
    ws = words(text)
    return bool(ws) and all(w in BACKCHANNEL_WORDS for w in ws)


def content_words(text: str) -> int:
    """How many words of ``text`` are not backchannels or fillers."""
    return sum(1 for w in words(text) if w not in BACKCHANNEL_WORDS)


def looks_unfinished(text: str) -> bool:
    """Whether ``text`` ends mid-clause: a trailing comma/dash/ellipsis, or a last word such
    as "and", "if", "the" (even with a period after it, which the STT adds by habit). A
    question mark always counts as finished."""
    stripped = text.rstrip()
    if not stripped:
        return False
    if stripped.endswith("?"):
        return False
    if stripped.endswith(_TRAILING_UNFINISHED):
        return True
    ws = words(stripped)
    return bool(ws) and ws[-1] in _UNFINISHED_WORDS


def same_utterance(a: str, b: str) -> bool:
    """Whether two transcripts say the same words (case and punctuation aside)."""
    return words(a) == words(b)


def _join(parts: list[str]) -> str:
    return " ".join(p.strip() for p in parts if p.strip())


# --- turn detector ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TurnEnd:
    """The caller's turn ended (or, ``preemptive``, probably ended).

    ``reason``: ``ready``, ``unfinished_timeout``, ``utterance_end``, ``max_wait`` or
    ``committed`` (a preemptive turn whose reply became audible). ``from_interim``: the text
    includes an interim result (its late finals are then absorbed).
    """

    text: str
    speech_end_ms: float
    decided_ms: float
    preemptive: bool = False
    reason: str = "ready"
    from_interim: bool = False


@dataclass(frozen=True, slots=True)
class TurnDiscard:
    """The pending preemptive turn is void: the caller went on, or the words changed."""

    text: str
    at_ms: float


TurnEvent = TurnEnd | TurnDiscard


class TurnDetector:
    """Decides the end of the caller's turn (pure: every method takes the time ``now_ms``).

    Feed it VAD events, transcripts and timer ticks; each call returns the
    :data:`TurnEvent` s it decided. :meth:`next_deadline_ms` tells when to call
    :meth:`on_timer` next. See the module docstring for the rules.
    """

    __slots__ = (
        "_absorb",
        "_finals",
        "_heard",
        "_hold",
        "_interim",
        "_preempt",
        "_preempt_from_interim",
        "_speaking",
        "_speech_end_ms",
        "_speech_final",
        "_stop_ms",
        "_transcript_after_stop",
        "_utterance_end",
        "max_turn_wait_ms",
        "preemptive",
        "response_delay_ms",
        "stt_grace_ms",
        "unfinished_wait_ms",
    )

    def __init__(
        self,
        *,
        response_delay_ms: float = 0.0,
        unfinished_wait_ms: float = 1000.0,
        max_turn_wait_ms: float = 2000.0,
        stt_grace_ms: float = 400.0,
        preemptive: bool = False,
    ) -> None:
        if not 0 <= response_delay_ms <= max_turn_wait_ms:
            raise ValueError("need 0 <= response_delay_ms <= max_turn_wait_ms")
        self.response_delay_ms = response_delay_ms
        self.unfinished_wait_ms = min(max(unfinished_wait_ms, response_delay_ms), max_turn_wait_ms)
        self.max_turn_wait_ms = max_turn_wait_ms
        self.stt_grace_ms = stt_grace_ms
        self.preemptive = preemptive
        self._speaking = False
        self._stop_ms: float | None = None  # when the VAD said the caller stopped (arrival)
        self._speech_end_ms: float | None = None  # when the speech ended (the VAD's stop_ms)
        self._finals: list[str] = []
        self._interim = ""  # newer than the last final, else ""
        self._speech_final = False
        self._utterance_end = False
        self._transcript_after_stop = False
        self._heard = False  # a transcript arrived for the latest VAD speech
        self._hold = False
        self._absorb = False
        self._preempt: str | None = None
        self._preempt_from_interim = False

    # --- inspection ------------------------------------------------------------------------

    @property
    def speaking(self) -> bool:
        """Whether the VAD says the caller is speaking."""
        return self._speaking

    @property
    def pending_text(self) -> str:
        """The words of the turn so far (finals, then the pending interim)."""
        return _join([*self._finals, self._interim])

    @property
    def preemptive_pending(self) -> str | None:
        """The text of the tentative turn emitted and not yet confirmed or discarded."""
        return self._preempt

    def next_deadline_ms(self) -> float | None:
        """When :meth:`on_timer` could decide something, or ``None``.

        At any time at or after it, :meth:`on_timer` ends the turn (so a timer never spins).
        """
        if self._speaking or self._stop_ms is None:
            return None
        if not self._finals and not self._interim:
            return None
        if self._hold and self._preempt is None:
            return None
        stop = self._stop_ms
        due = stop + self.max_turn_wait_ms
        if self._finals and not self._interim:
            if self._transcript_after_stop or self._speech_final:
                covered_at = stop
            elif self._heard:
                covered_at = stop + self.stt_grace_ms
            else:
                covered_at = due
            wait = (
                self.unfinished_wait_ms
                if looks_unfinished(self._text())
                else self.response_delay_ms
            )
            due = min(due, max(covered_at, stop + wait))
        return due

    # --- inputs ----------------------------------------------------------------------------

    def on_user_started(self, now_ms: float) -> list[TurnEvent]:
        """The VAD says the caller started speaking."""
        out: list[TurnEvent] = []
        self._speaking = True
        self._heard = False
        self._stop_ms = None
        self._speech_end_ms = None
        self._speech_final = False
        self._utterance_end = False
        self._transcript_after_stop = False
        self._absorb = False
        if self._preempt is not None:
            out.append(TurnDiscard(self._preempt, now_ms))
            self._preempt = None
        return out

    def on_user_stopped(self, now_ms: float, speech_end_ms: float | None = None) -> list[TurnEvent]:
        """The VAD says the caller stopped; ``speech_end_ms``: when the speech ended."""
        self._speaking = False
        self._stop_ms = now_ms
        self._speech_end_ms = speech_end_ms if speech_end_ms else now_ms
        self._transcript_after_stop = False
        return self._evaluate(now_ms)

    def on_interim(self, text: str, now_ms: float) -> list[TurnEvent]:
        """An interim (non-final) transcript."""
        if self._absorb or not text.strip():
            return []
        self._interim = text
        self._heard = True
        if not self._speaking:
            # Only a final starts a turn the VAD did not hear: a stray interim must not.
            self._transcript_after_stop = True
        return self._evaluate(now_ms)

    def on_final(
        self, text: str, now_ms: float, *, speech_final: bool = False, end_ms: float = 0.0
    ) -> list[TurnEvent]:
        """A final transcript (``speech_final``: Deepgram's endpoint). Empty text is allowed:
        it tells that the STT has nothing more for the speech so far."""
        if self._absorb:
            if speech_final:
                self._absorb = False
            return []
        if text.strip():
            self._finals.append(text.strip())
            self._heard = True
        self._interim = ""
        if speech_final:
            self._speech_final = True
        if not self._speaking:
            self._transcript_after_stop = True
            if text.strip():
                self._start_without_vad(now_ms, end_ms)
        return self._evaluate(now_ms)

    def on_utterance_end(self, now_ms: float) -> list[TurnEvent]:
        """Deepgram's ``UtteranceEnd``: a long enough gap after the last word."""
        self._utterance_end = True
        if not self._speaking and self._stop_ms is None and (self._finals or self._interim):
            self._start_without_vad(now_ms)
        return self._evaluate(now_ms)

    def on_timer(self, now_ms: float) -> list[TurnEvent]:
        """Time passed: decide what is due at ``now_ms``."""
        return self._evaluate(now_ms)

    def set_hold(self, hold: bool, now_ms: float) -> list[TurnEvent]:
        """While held (the agent is speaking and was not interrupted), no new turn ends."""
        self._hold = hold
        return [] if hold else self._evaluate(now_ms)

    def commit_preemptive(self, now_ms: float) -> list[TurnEvent]:
        """The tentative turn's reply became audible: confirm it with the words it was
        started on (late finals of those words are then absorbed)."""
        if self._preempt is None:
            return []
        return [self._end(now_ms, "committed", self._preempt, self._preempt_from_interim)]

    def clear(self) -> None:
        """Forget the words of the turn so far (e.g. backchannels said over the agent)."""
        self._finals.clear()
        self._interim = ""
        self._speech_final = False
        self._utterance_end = False
        if not self._speaking:
            self._stop_ms = None
            self._speech_end_ms = None

    # --- decisions -------------------------------------------------------------------------

    def _start_without_vad(self, now_ms: float, end_ms: float = 0.0) -> None:
        # A transcript with no VAD speech since the previous turn (the VAD missed quiet
        # speech): its arrival stands for the VAD stop.
        self._heard = True
        if self._stop_ms is None:
            self._stop_ms = now_ms
            self._speech_end_ms = end_ms if 0 < end_ms <= now_ms else now_ms

    def _text(self, include_interim: bool = False) -> str:
        return _join([*self._finals, self._interim] if include_interim else self._finals)

    def _evaluate(self, now_ms: float) -> list[TurnEvent]:
        if self._speaking or self._stop_ms is None:
            return []
        if not self._finals and not self._interim:
            self._utterance_end = False
            if self._preempt is not None:  # the STT took its words back
                discard: list[TurnEvent] = [TurnDiscard(self._preempt, now_ms)]
                self._preempt = None
                return discard
            return []
        if self._hold and self._preempt is None:
            return []
        stop = self._stop_ms
        pending = bool(self._interim)
        if self._utterance_end:
            return self._finish(now_ms, "utterance_end", include_interim=pending)
        # Compare absolute times (stop + wait), exactly as next_deadline_ms computes them.
        if self._finals and not pending:
            covered = (
                self._transcript_after_stop
                or self._speech_final
                or (self._heard and now_ms >= stop + self.stt_grace_ms)
            )
            if covered:
                if not looks_unfinished(self._text()):
                    if now_ms >= stop + self.response_delay_ms:
                        return self._finish(now_ms, "ready")
                elif now_ms >= stop + self.unfinished_wait_ms:
                    return self._finish(now_ms, "unfinished_timeout")
        if now_ms >= stop + self.max_turn_wait_ms:
            return self._finish(now_ms, "max_wait", include_interim=pending)
        if self.preemptive and self._preempt is None and not self._hold and self._heard:
            candidate = self._text(include_interim=True)
            if not looks_unfinished(candidate):
                self._preempt = candidate
                self._preempt_from_interim = pending
                return [
                    TurnEnd(
                        candidate,
                        self._speech_end_ms if self._speech_end_ms is not None else stop,
                        now_ms,
                        preemptive=True,
                        reason="preemptive",
                        from_interim=pending,
                    )
                ]
        return []

    def _finish(
        self, now_ms: float, reason: str, *, include_interim: bool = False
    ) -> list[TurnEvent]:
        out: list[TurnEvent] = []
        text = self._text(include_interim)
        if self._preempt is not None and not same_utterance(self._preempt, text):
            out.append(TurnDiscard(self._preempt, now_ms))
            self._preempt = None
        out.append(self._end(now_ms, reason, text, include_interim and bool(self._interim)))
        return out

    def _end(self, now_ms: float, reason: str, text: str, from_interim: bool) -> TurnEnd:
        stop = self._stop_ms if self._stop_ms is not None else now_ms
        end = TurnEnd(
            text,
            self._speech_end_ms if self._speech_end_ms is not None else stop,
            now_ms,
            preemptive=False,
            reason=reason,
            from_interim=from_interim,
        )
        if from_interim:
            self._absorb = True
        self._preempt = None
        self._preempt_from_interim = False
        self._finals.clear()
        self._interim = ""
        self._speech_final = False
        self._utterance_end = False
        self._stop_ms = None
        self._speech_end_ms = None
        return end


# --- barge-in --------------------------------------------------------------------------------


def interruption_threshold_ms(sensitivity: float) -> float | None:
    """Caller speech over the agent longer than this interrupts; ``None`` at 0 (never).

    150 ms at 100, 400 ms at 50, about 1,050 ms at 1: ``150 * (8/3) ** ((100 - s) / 50)``.
    """
    s = min(max(float(sensitivity), 0.0), 100.0)
    if s <= 0:
        return None
    return float(150.0 * (8.0 / 3.0) ** ((100.0 - s) / 50.0))


def interruption_min_words(sensitivity: float) -> int | None:
    """This many non-backchannel words over the agent interrupt; ``None`` at 0 (never).

    1 from 67 up, 2 from 34, 3 below: ``1 + (100 - s) * 3 // 100`` (at most 3).
    """
    s = min(max(float(sensitivity), 0.0), 100.0)
    if s <= 0:
        return None
    return min(3, 1 + int((100.0 - s) * 3 // 100))


class BargeInPolicy:
    """Decides whether caller speech over the agent is an interruption (pure).

    Call :meth:`set_agent_active` when the agent starts/stops holding the floor (reply
    pending or playing), the ``on_*`` methods for VAD events and transcripts, and
    :meth:`on_timer` at :meth:`deadline_ms`. Each returns ``True`` when the caller has just
    interrupted; it says so once per stretch of caller speech.
    """

    __slots__ = (
        "_active",
        "_active_since",
        "_interrupted",
        "_overlap",
        "_speaking",
        "_speech_start",
        "_stopped_at",
        "_suspended",
        "_text",
        "late_transcript_ms",
        "min_speech_ms",
        "min_words",
    )

    def __init__(
        self,
        *,
        interruption_sensitivity: float = 50,
        min_speech_ms: float | None = None,
        min_words: int | None = None,
        late_transcript_ms: float = 1500.0,
    ) -> None:
        sensitivity_off = interruption_sensitivity <= 0
        self.min_speech_ms: float | None = (
            None
            if sensitivity_off
            else (min_speech_ms or interruption_threshold_ms(interruption_sensitivity))
        )
        self.min_words: int | None = (
            None
            if sensitivity_off
            else (min_words or interruption_min_words(interruption_sensitivity))
        )
        self.late_transcript_ms = late_transcript_ms
        self._active = False
        self._active_since = 0.0
        self._speaking = False
        self._speech_start = 0.0
        self._stopped_at: float | None = None
        self._overlap = False  # the current/last stretch of caller speech overlaps the agent
        self._interrupted = False
        self._suspended = False  # duration crossed, but the words so far are backchannels
        self._text = ""

    @property
    def agent_active(self) -> bool:
        """Whether the agent holds the floor."""
        return self._active

    def set_agent_active(self, active: bool, now_ms: float) -> bool:
        """The agent starts (``True``) or stops holding the floor."""
        if active == self._active:
            return False
        self._active = active
        if not active:
            self._overlap = False
            self._interrupted = False
            return False
        self._active_since = now_ms
        self._interrupted = False
        if self._speaking:
            self._overlap = True
            return self._check(now_ms)
        return False

    def on_user_started(self, start_ms: float, now_ms: float) -> bool:
        """The VAD says the caller started speaking (at ``start_ms``, received ``now_ms``)."""
        self._speaking = True
        self._speech_start = start_ms if 0 < start_ms <= now_ms else now_ms
        self._stopped_at = None
        self._text = ""
        self._interrupted = False
        self._suspended = False
        self._overlap = self._active
        return self._check(now_ms)

    def on_user_stopped(self, now_ms: float) -> bool:
        """The VAD says the caller stopped speaking."""
        self._speaking = False
        self._stopped_at = now_ms
        return False

    def on_transcript(self, text: str, now_ms: float) -> bool:
        """An interim or final transcript of the caller's current speech."""
        if not self._overlap:
            return False
        if not self._speaking and (
            self._stopped_at is None or now_ms - self._stopped_at > self.late_transcript_ms
        ):
            return False
        if text.strip():
            self._text = text
        return self._check(now_ms)

    def deadline_ms(self) -> float | None:
        """When the duration threshold of the current speech is crossed, if still pending."""
        if not (self._active and self._speaking and self._overlap) or self._interrupted:
            return None
        if self.min_speech_ms is None or self._suspended:
            return None
        return max(self._speech_start, self._active_since) + self.min_speech_ms

    def on_timer(self, now_ms: float) -> bool:
        """Time passed: has the speech crossed the duration threshold?"""
        return self._check(now_ms)

    def _check(self, now_ms: float) -> bool:
        if not self._active or not self._overlap or self._interrupted:
            return False
        if self.min_words is not None and content_words(self._text) >= self.min_words:
            return self._fire()
        if self._speaking and self.min_speech_ms is not None:
            start = max(self._speech_start, self._active_since)
            if now_ms >= start + self.min_speech_ms:  # the same sum as deadline_ms()
                if not is_backchannel(self._text):
                    return self._fire()
                self._suspended = True  # re-checked when the next transcript arrives
        return False

    def _fire(self) -> bool:
        self._interrupted = True
        return True


# --- the processor ---------------------------------------------------------------------------

_HANDLED = (
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    InterimTranscriptFrame,
    TranscriptFrame,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    TranscriptEntryFrame,
    StartFrame,
    TransportStartedFrame,
    EndFrame,
    CancelFrame,
    EndCallFrame,
)


class TurnTakingProcessor(FrameProcessor):
    """Turn ends, barge-in, silence re-prompt/hang-up and maximum duration (see module doc).

    Sits after the STT (and the voicemail arbiter) and before the user context aggregator.
    """

    __slots__ = (
        "_agent_spoke",
        "_bot_speaking",
        "_call_start_ms",
        "_detector",
        "_ending",
        "_ending_at",
        "_held",
        "_interrupted",
        "_overlap_speech",
        "_policy",
        "_reply_pending_since",
        "_reprompted",
        "_silence_since",
        "_swallowed_preempt",
        "_timer",
        "_timer_at",
        "_wake",
        "goodbye_grace_ms",
        "max_call_duration_ms",
        "max_duration_goodbye_text",
        "reply_timeout_ms",
        "reprompt_after_ms",
        "reprompt_text",
        "silence_goodbye_text",
        "silence_hangup_ms",
    )

    def __init__(
        self,
        *,
        interruption_sensitivity: float = 50,
        response_delay_ms: float = 0.0,
        unfinished_wait_ms: float = 1000.0,
        max_turn_wait_ms: float = 2000.0,
        stt_grace_ms: float = 400.0,
        preemptive_generation: bool = False,
        reprompt_after_ms: float = 8000.0,
        reprompt_text: str = "Are you still there?",
        silence_hangup_seconds: float = 30.0,
        silence_goodbye_text: str = "It seems you're not available right now. Goodbye!",
        max_call_duration_seconds: float = 300.0,
        max_duration_goodbye_text: str = "I'm sorry, we've run out of time for this call. Goodbye!",
        reply_timeout_ms: float = 15000.0,
        goodbye_grace_ms: float = 20000.0,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self._detector = TurnDetector(
            response_delay_ms=response_delay_ms,
            unfinished_wait_ms=unfinished_wait_ms,
            max_turn_wait_ms=max_turn_wait_ms,
            stt_grace_ms=stt_grace_ms,
            preemptive=preemptive_generation,
        )
        self._policy = BargeInPolicy(interruption_sensitivity=interruption_sensitivity)
        self.reprompt_after_ms = reprompt_after_ms
        self.reprompt_text = reprompt_text
        self.silence_hangup_ms = silence_hangup_seconds * 1000.0
        self.silence_goodbye_text = silence_goodbye_text
        self.max_call_duration_ms = max_call_duration_seconds * 1000.0
        self.max_duration_goodbye_text = max_duration_goodbye_text
        self.reply_timeout_ms = reply_timeout_ms
        self.goodbye_grace_ms = goodbye_grace_ms
        self._bot_speaking = False
        self._reply_pending_since: float | None = None
        self._interrupted = False  # the caller barged in on the current reply
        self._overlap_speech = False  # the caller's latest speech began over the agent
        self._swallowed_preempt: str | None = None
        self._held = False
        self._agent_spoke = False
        self._silence_since: float | None = None
        self._reprompted = False
        self._call_start_ms: float | None = None
        self._ending: str | None = None
        self._ending_at = 0.0
        self._timer: asyncio.Task[None] | None = None
        self._timer_at: float | None = None
        self._wake = asyncio.Event()

    @property
    def detector(self) -> TurnDetector:
        """The turn detector (for inspection)."""
        return self._detector

    @property
    def policy(self) -> BargeInPolicy:
        """The barge-in policy (for inspection)."""
        return self._policy

    # --- frames ----------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(frame, direction)
        if not isinstance(frame, _HANDLED):  # audio and the rest: nothing to do
            return
        now = self.now_ms()
        if isinstance(frame, UserStartedSpeakingFrame):
            await self._user_started(frame, now)
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._policy.on_user_stopped(now)
            await self._apply(self._detector.on_user_stopped(now, frame.stop_ms or None), now)
            if not self._agent_active():
                self._silence_since = now
        elif isinstance(frame, InterimTranscriptFrame):
            if self._policy.on_transcript(frame.text, now):
                await self._barge_in(now)
            await self._apply(self._detector.on_interim(frame.text, now), now)
        elif isinstance(frame, TranscriptFrame):
            await self._transcript(frame, now)
        elif isinstance(frame, BotStartedSpeakingFrame):
            await self._bot_started(now)
        elif isinstance(frame, BotStoppedSpeakingFrame):
            await self._bot_stopped(now)
        elif isinstance(frame, TranscriptEntryFrame) and direction == UPSTREAM:
            if frame.role == "agent" and not self._bot_speaking:
                await self._reply_done(now)
        elif isinstance(frame, StartFrame | TransportStartedFrame):
            if self._call_start_ms is None or isinstance(frame, TransportStartedFrame):
                self._call_start_ms = now
        elif isinstance(frame, EndFrame | CancelFrame | EndCallFrame):
            self._ending = self._ending or "ended"
        self._reschedule()

    async def _user_started(self, frame: UserStartedSpeakingFrame, now: float) -> None:
        self._silence_since = None
        # A tentative (preemptive) turn is discarded as soon as the caller goes on.
        await self._apply(self._detector.on_user_started(now), now)
        self._overlap_speech = self._agent_active() and not self._interrupted
        if self._policy.on_user_started(frame.start_ms, now):
            await self._barge_in(now)

    async def _transcript(self, frame: TranscriptFrame, now: float) -> None:
        if frame.text.strip() and self._policy.on_transcript(frame.text, now):
            await self._barge_in(now)
        # An empty endpoint is the STT's "all speech is in" (Deepgram's UtteranceEnd, or a
        # Finalize answered with nothing new; the two arrive alike): it covers the speech, and
        # text that ends mid-clause still gets its unfinished_wait_ms.
        events = self._detector.on_final(
            frame.text, now, speech_final=frame.speech_final, end_ms=frame.end_ms
        )
        await self._apply(events, now)

    async def _bot_started(self, now: float) -> None:
        self._bot_speaking = True
        self._agent_spoke = True
        self._reply_pending_since = None
        await self._apply(self._detector.commit_preemptive(now), now)
        self._policy.set_agent_active(True, now)
        await self._update_hold(now)

    async def _bot_stopped(self, now: float) -> None:
        self._bot_speaking = False
        if self._silence_since is None and not self._detector.speaking:
            self._silence_since = now  # a turn released below clears it again
        await self._reply_done(now)

    async def _reply_done(self, now: float) -> None:
        self._reply_pending_since = None
        if self._bot_speaking:
            return
        self._policy.set_agent_active(False, now)
        self._interrupted = False
        if self._held and is_backchannel(self._detector.pending_text):
            self._detector.clear()
        await self._update_hold(now)

    def _agent_active(self) -> bool:
        return self._bot_speaking or self._reply_pending_since is not None

    async def _update_hold(self, now: float) -> None:
        hold = self._agent_active() and not self._interrupted
        if hold != self._held:
            self._held = hold
            await self._apply(self._detector.set_hold(hold, now), now)

    async def _barge_in(self, now: float) -> None:
        if self._ending is not None:
            return
        log_event(_log, "turns.barge_in", call_id=self.call_id, at_ms=round(now, 1))
        await self.push_frame(InterruptionFrame())
        self._interrupted = True
        self._overlap_speech = False  # what the caller says now is a turn, whatever it is
        self._reply_pending_since = None
        if not self._bot_speaking:
            self._policy.set_agent_active(False, now)
        await self._update_hold(now)

    async def _apply(self, events: list[TurnEvent], now: float) -> None:
        for event in events:
            if self._ending is not None:
                return
            if isinstance(event, TurnDiscard):
                if event.text == self._swallowed_preempt:
                    self._swallowed_preempt = None
                    continue
                log_event(_log, "turns.preemptive_discarded", call_id=self.call_id)
                await self.push_frame(InterruptionFrame())
                self._reply_pending_since = None
                self._policy.set_agent_active(self._bot_speaking, now)
                continue
            if not event.text:
                continue
            if self._overlap_speech and is_backchannel(event.text):
                # "uh-huh" that began over the agent: acknowledgement, not a turn.
                log_event(_log, "turns.backchannel_ignored", call_id=self.call_id)
                self._swallowed_preempt = event.text if event.preemptive else None
                continue
            log_event(
                _log,
                "turns.turn_ended",
                level=logging.DEBUG,
                call_id=self.call_id,
                reason=event.reason,
                preemptive=event.preemptive,
                wait_ms=round(event.decided_ms - event.speech_end_ms, 1),
            )
            if not event.preemptive:
                self._silence_since = None
                self._reprompted = False
            await self.push_frame(
                UserTurnEndedFrame(
                    text=event.text,
                    speech_end_ms=event.speech_end_ms,
                    decided_ms=event.decided_ms,
                    preemptive=event.preemptive,
                )
            )
            if not self._bot_speaking:
                self._reply_pending_since = now
                self._interrupted = False
                self._policy.set_agent_active(True, now)
        await self._update_hold(now)

    # --- timers ----------------------------------------------------------------------------

    def _deadline(self) -> float | None:
        if self._ending is not None:
            if self._ending == "ended":
                return None
            return self._ending_at + self.goodbye_grace_ms
        candidates = [
            self._detector.next_deadline_ms(),
            self._policy.deadline_ms(),
        ]
        if self._call_start_ms is not None and self.max_call_duration_ms > 0:
            candidates.append(self._call_start_ms + self.max_call_duration_ms)
        if self._reply_pending_since is not None:
            candidates.append(self._reply_pending_since + self.reply_timeout_ms)
        if self._silence_since is not None and self._agent_spoke and not self._agent_active():
            if not self._reprompted and self._reprompt_enabled():
                candidates.append(self._silence_since + self.reprompt_after_ms)
            candidates.append(self._silence_since + self.silence_hangup_ms)
        due = [c for c in candidates if c is not None]
        return min(due) if due else None

    def _reschedule(self) -> None:
        deadline = self._deadline()
        if deadline != self._timer_at:
            self._timer_at = deadline
            self._wake.set()

    async def _timer_loop(self) -> None:
        """The processor's one timer: sleeps until the next deadline, re-armed by frames."""
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            deadline = self._timer_at
            handle = None
            if deadline is not None:
                delay_s = max(0.0, deadline - self.now_ms()) / 1000.0
                handle = loop.call_later(delay_s, self._wake.set)
            await self._wake.wait()
            if handle is not None:
                handle.cancel()
            if deadline is None or deadline != self._timer_at or self.now_ms() < deadline:
                continue  # re-armed, or woke a hair early against the run clock
            self._timer_at = None
            await self._on_timer(self.now_ms())
            following = self._deadline()
            if following is not None and following <= deadline:
                # Nothing moved: never spin, look again a little later.
                log_event(_log, "turns.timer_stuck", level=logging.WARNING, call_id=self.call_id)
                following = self.now_ms() + 50.0
            if self._timer_at is None:
                self._timer_at = following

    async def _on_timer(self, now: float) -> None:
        if self._ending is not None:
            if self._ending != "ended" and now >= self._ending_at + self.goodbye_grace_ms:
                reason = self._ending
                self._ending = "ended"
                log_event(_log, "turns.goodbye_timeout", call_id=self.call_id, reason=reason)
                await self.push_frame(EndCallFrame(reason=reason))
            return
        if self._call_start_ms is not None and self.max_call_duration_ms > 0:
            if now >= self._call_start_ms + self.max_call_duration_ms:
                await self._goodbye(EndReason.MAX_DURATION.value, self.max_duration_goodbye_text)
                return
        if self._policy.on_timer(now):
            await self._barge_in(now)
        await self._apply(self._detector.on_timer(now), now)
        if self._reply_pending_since is not None:
            if now >= self._reply_pending_since + self.reply_timeout_ms:
                log_event(_log, "turns.reply_timeout", call_id=self.call_id)
                await self._reply_done(now)
                self._silence_since = now
        if self._silence_since is not None and self._agent_spoke and not self._agent_active():
            silent_ms = now - self._silence_since
            if silent_ms >= self.silence_hangup_ms:
                await self._goodbye(EndReason.SILENCE_TIMEOUT.value, self.silence_goodbye_text)
            elif (
                not self._reprompted
                and self._reprompt_enabled()
                and silent_ms >= self.reprompt_after_ms
            ):
                self._reprompted = True
                log_event(_log, "turns.reprompt", call_id=self.call_id)
                await self.push_frame(TTSSpeakFrame(text=self.reprompt_text))

    def _reprompt_enabled(self) -> bool:
        # No re-prompt without text, or when the hang-up would come first.
        return bool(self.reprompt_text.strip()) and self.reprompt_after_ms < self.silence_hangup_ms

    async def _goodbye(self, reason: str, text: str) -> None:
        log_event(_log, "turns.goodbye", call_id=self.call_id, reason=reason)
        if self._agent_active():
            await self.push_frame(InterruptionFrame())
        self._ending = reason
        self._ending_at = self.now_ms()
        if text.strip():
            await self.push_frame(TTSSpeakFrame(text=text, end_call_reason=reason))
        else:
            self._ending = "ended"
            await self.push_frame(EndCallFrame(reason=reason))

    async def setup(self, ctx: ProcessorContext) -> None:
        await super().setup(ctx)
        self._wake = asyncio.Event()
        self._timer = self.create_task(self._timer_loop(), "timer")

    async def cleanup(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
