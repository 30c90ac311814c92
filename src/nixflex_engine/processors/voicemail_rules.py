"""Voicemail detection rules: AMD vote, transcript classifier and the arbiter (pure core).

Nothing here does I/O or touches an event loop: each piece is fed events with their times (ms
since pickup) and answers with values, so it is tested on plain event sequences and replayed
by ``benchmarks/voicemail_eval.py``. The arbiter *processor* in the chain is a thin shell that
turns frames into these calls and the returned actions into frames.

Three detectors race (``../shared/spec/calls.md``, "Voicemail detection"):

* **AMD** — :func:`amd_vote` turns Twilio's async AMD callback (``AnsweredBy``,
  ``MachineDetectionDuration``) into a :class:`Verdict`. ``machine_end_*`` also marks the end
  of the greeting. ``fax`` and ``unknown`` decide nothing.
* **Transcript** — :class:`TranscriptClassifier` reads the callee's interim and final
  transcripts and the VAD's speech/silence timing. It scores greeting phrases in English,
  Spanish, French, German, Portuguese and Italian (strong phrases only an answering machine
  says — "after the tone", "record your message", "the person you are calling" — weigh more
  than weak ones a person may also say — "not available", "leave a message"), subtracts
  person cues (a question back: "who is this?", "can I take a message?", "do you want to
  leave a message?"), adds a bonus for an unbroken monologue, and confirms a person from
  *timing*: a short greeting followed by ``human_silence_ms`` of silence ("Hello?" … and
  the person waits) is a human, so the opener can follow within a second.
* **Beep** — :mod:`nixflex_engine.processors.beep` finds the end-of-greeting tone;
  :func:`beep_verdict` turns its events into verdicts.

:class:`VoicemailArbiter` takes all of them; the first confident verdict wins, and it records
the method, the AMD result and the detection time. Where the detectors disagree it follows
what each is known to get wrong:

* Twilio calls a person who answers with a long sentence a machine, so an AMD "machine"
  waits up to ``amd_hold_ms`` when the transcript has heard speech with no machine phrase,
  and an AMD "human" waits when the transcript holds machine phrases.
* A machine verdict after a person was confirmed is reported as :class:`LateMachine`; it
  overrides (``VoicemailDetected(late=True)``, and :class:`StopAgentSpeech` if the opener
  may already be playing) only on solid evidence: a beep, a strong phrase ("after the tone")
  from a callee who never sounded like a person, any machine phrase within
  ``late_weak_window_ms`` of a person confirmed on a bare "Hi!" (a pause inside a recording),
  or a late AMD / transcript after an opener allowed on silence alone. Replies to the opener
  ("I'm not available right now, call me back") never hang up on a person.

The call's ``voicemail_action`` becomes returned actions: ``hangup`` → :class:`EndCall`;
``leave_message`` → :class:`StartVoicemailMessage` at the beep's end, at AMD's end of
greeting, or after ``greeting_silence_ms`` of silence (``beep_wait_ms`` when the greeting
promised a tone), restarted if a beep ends just after; ``ignore`` → :class:`AllowOpener`.

The processor shell maps frames one to one: ``UserStartedSpeakingFrame`` →
:meth:`VoicemailArbiter.on_speech_started`, ``UserStoppedSpeakingFrame`` →
:meth:`~VoicemailArbiter.on_speech_stopped`, ``InterimTranscriptFrame``/``TranscriptFrame`` →
:meth:`~VoicemailArbiter.on_transcript`, the AMD callback → :meth:`~VoicemailArbiter.on_amd`,
:class:`~nixflex_engine.processors.beep.BeepDetector` events on ``InputAudioFrame.pcm`` →
:meth:`~VoicemailArbiter.on_beep`, and every audio frame → :meth:`~VoicemailArbiter.tick`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from nixflex_engine.processors.beep import BeepEvent

__all__ = [
    "AMD_MACHINE_RESULTS",
    "Action",
    "AllowOpener",
    "AmdVote",
    "ArbiterSettings",
    "Cue",
    "DetectionResult",
    "EndCall",
    "HumanDetected",
    "Label",
    "LateMachine",
    "Method",
    "StartVoicemailMessage",
    "StopAgentSpeech",
    "TranscriptClassifier",
    "TranscriptSettings",
    "Verdict",
    "VoicemailAction",
    "VoicemailArbiter",
    "VoicemailDetected",
    "amd_vote",
    "beep_verdict",
    "find_cues",
    "normalize_text",
]

Label = Literal["machine", "human", "undecided"]
Method = Literal["amd", "transcript", "beep"]
VoicemailAction = Literal["hangup", "leave_message", "ignore"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one detector thinks right now.

    ``confidence`` is the detector's confidence in ``label`` (0..1; 0 for ``undecided``).
    ``greeting_end_ms`` is set when the evidence also says where the greeting (or the beep)
    ended: the moment a voicemail message may start.
    """

    label: Label
    confidence: float
    reason: str
    method: Method
    at_ms: float
    greeting_end_ms: float | None = None

    @property
    def decided(self) -> bool:
        return self.label != "undecided"


# ===================================================================================== AMD

AMD_MACHINE_RESULTS = frozenset(
    {"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other"}
)
_AMD_CONFIDENCE: dict[str, tuple[Label, float]] = {
    # Twilio states ~94% overall; a beep at the end is the surest of its answers.
    "human": ("human", 0.8),
    "machine_start": ("machine", 0.8),
    "machine_end_beep": ("machine", 0.95),
    "machine_end_silence": ("machine", 0.85),
    "machine_end_other": ("machine", 0.8),
    "fax": ("undecided", 0.0),
    "unknown": ("undecided", 0.0),
}


@dataclass(frozen=True, slots=True)
class AmdVote:
    """Twilio's async AMD result as a vote."""

    answered_by: str
    machine_detection_duration_ms: float | None
    marks_greeting_end: bool
    verdict: Verdict


def amd_vote(
    answered_by: str,
    machine_detection_duration_ms: float | str | None = None,
    *,
    received_ms: float,
) -> AmdVote:
    """Turn the AMD callback's ``AnsweredBy`` and ``MachineDetectionDuration`` into a vote.

    ``received_ms`` is when the callback reached us (ms since pickup). Form fields arrive as
    strings, so the duration may be a string; a missing or malformed one is ``None``.
    ``machine_end_*`` means Twilio waited for the end of the greeting (``DetectMessageEnd``),
    so the vote also marks the greeting's end (at ``received_ms``: the duration counts from
    Twilio's answer, which is not exactly our pickup, so we do not back-date it).
    """
    duration: float | None
    try:
        duration = (
            None if machine_detection_duration_ms is None else float(machine_detection_duration_ms)
        )
    except ValueError:
        duration = None
    key = answered_by.strip().lower()
    label, confidence = _AMD_CONFIDENCE.get(key, ("undecided", 0.0))
    marks_end = key in ("machine_end_beep", "machine_end_silence", "machine_end_other")
    reason = f"amd:{key}" if key in _AMD_CONFIDENCE else f"amd:unrecognised:{key}"
    verdict = Verdict(
        label=label,
        confidence=confidence,
        reason=reason,
        method="amd",
        at_ms=received_ms,
        greeting_end_ms=received_ms if marks_end else None,
    )
    return AmdVote(key, duration, marks_end, verdict)


# ===================================================================================== beep


def beep_verdict(event: BeepEvent) -> Verdict:
    """A confirmed beep is a machine; its end (if known) is where a message may start."""
    return Verdict(
        label="machine",
        confidence=0.97,
        reason=f"beep:{event.frequency_hz:.0f}Hz",
        method="beep",
        at_ms=event.detected_ms,
        greeting_end_ms=event.end_ms,
    )


# ============================================================================ phrase cues

# Weights: >= 3 "strong" (an answering machine or carrier says it, a person on a live call
# practically never does), 1.5-2.5 "medium", <= 1 "weak" (a person says it too). Human cues
# carry negative weights. Patterns match normalized text: lower case, no accents, no
# punctuation except "?" (kept as a separate token). Each cue counts once, and of cues that
# say the same thing (``_CUE_GROUPS``) only the strongest.
_CUE_TABLE: tuple[tuple[str, float, str], ...] = (
    # ---------------------------------------------------------------- English, machine
    ("en_after_tone", 3.0, r"\b(after|at) the (tone|beep|signal)\b"),
    ("en_record_message", 3.0, r"\brecord your (message|name)\b"),
    (
        "en_person_calling",
        3.0,
        r"\b(person|party|customer|subscriber|number|caller) (that |whom? )?(you|you're|you ve|"
        r"you are|you have) "
        r"(are |were |have |had )?(calling|called|call|dialed|dialled|reached|trying to reach|"
        r"trying)\b",
    ),
    (
        "en_voicemail_of",
        3.0,
        r"\b(voice ?mail|voice mailbox|mailbox) (of|for|service|system|box)\b|"
        r"\breached (the )?(voice ?mail|mailbox)\b",
    ),
    ("en_voice_messaging", 3.0, r"\b(automated|voice) messaging\b"),
    (
        "en_mailbox_state",
        3.0,
        r"\bmailbox (is full|that has not|has not|is not set up)\b|"
        r"\bcannot accept (any )?(new )?messages\b|"
        r"\b(voice ?mail|mailbox) (box )?(you are|you're|you have) (trying to reach|calling|"
        r"called|dialed|reached)\b",
    ),
    (
        "en_finished_recording",
        3.0,
        r"\b(finished|done) recording\b|\bhang up or press\b|\bpress (one|two|pound|star|1|2)\b",
    ),
    ("en_forwarded", 3.0, r"\bforwarded to an? (automated|voice)\b"),
    # Phone menus and queue prompts, in the five other languages as "press one" in English:
    # a digit to press is said by a recording, not by a person answering a call. "All our
    # agents are busy" is medium (a receptionist may say it before "can you hold?"): it
    # needs a second phrase or AMD.
    (
        "xx_phone_menu",
        3.0,
        r"\b(marque|pulse|oprima|presione) (el )?(uno|dos|tres|cero|[0-9])\b|"
        r"\b(tapez|appuyez sur|composez) (le )?(un|deux|trois|zero|etoile|[0-9])\b|"
        r"\b(drucken|wahlen) sie (die )?(eins|zwei|drei|null|[0-9])\b|"
        r"\b(digite|tecle|pressione) (o )?(um|dois|tres|zero|[0-9])\b|"
        r"\b(prema|premere|digiti|digitare) (il )?(uno|due|tre|zero|[0-9])\b",
    ),
    (
        "xx_queue",
        1.5,
        r"\ball (of )?our (agents|representatives|advisors|operators|lines) are "
        r"(currently )?(busy|occupied)\b|"
        r"\btodos nuestros (agentes|asesores|operadores|ejecutivos) (estan|se encuentran) "
        r"ocupados\b|"
        r"\btous nos (conseillers|agents|operateurs|collaborateurs) sont "
        r"(actuellement )?(occupes|en ligne|en communication)\b|"
        r"\balle (unsere )?(mitarbeiter\w*|leitungen|platze) (sind )?(derzeit |zurzeit )?"
        r"(belegt|besetzt|im gesprach)\b|"
        r"\btodos (os )?(nossos )?(atendentes|agentes|operadores) (estao|se encontram) "
        r"ocupados\b|"
        r"\btutti i nostri (operatori|consulenti|addetti) sono (attualmente )?occupati\b",
    ),
    (
        "xx_carrier_no_line",
        3.0,
        r"\bkein anschluss unter\b|\bmailbox has reached its (limit|capacity)\b|"
        r"\bmailbox is at (its )?capacity\b",
    ),
    (
        "en_leave_imperative",
        2.0,
        r"(?<!to )(?<!you )(?<!can )\bleave (me |us )?(a |your )?(brief |short |quick |detailed )?"
        r"(message|name|number|info|information|details|contact details)\b(?! \?)",
    ),
    ("en_drop_message", 2.0, r"\b(drop|text) me (a )?(message|line|text)\b"),
    ("en_you_reached", 1.5, r"\byou (have|ve|'ve) reached\b|\byou've reached\b"),
    ("en_missed_call", 2.0, r"\bsorry (i|we) missed your call\b"),
    # First person, about the phone itself: the callee on a live call is at the phone. (Said
    # to the opener afterwards, the arbiter's late rules keep it from hanging up.)
    (
        "en_cant_take_call",
        2.5,
        r"\b(i|we|i'm|we're) (can't|cannot|can not|am unable to|are unable to|unable to|am not "
        r"able to|not able to|'m unable to|m unable to|re unable to) (take|answer|get to|come to) "
        r"(your|the|this) (call|phone)\b",
    ),
    (
        "en_away",
        2.0,
        r"\b(i'm|i am|we're|we are) (either |probably |currently )?(away from (my|the|our) (desk|"
        r"phone)|on the other line|out of the office)\b",
    ),
    (
        "en_away_any",
        1.0,
        r"\baway from (my|the|our) (desk|phone)\b|\bon the other line\b|\bout of the office\b",
    ),
    (
        "en_call_back",
        1.0,
        r"\b(get back to you|return your call|call you back|i'll call you|we'll call you)\b",
    ),
    ("en_asap", 1.0, r"\bas soon as (i|we) (can|possibly can)\b|\bas soon as possible\b"),
    ("en_not_available", 1.0, r"\b(not|isn't|is not) available\b|\bunavailable\b"),
    (
        "en_not_available_me",
        1.5,
        r"\b(i'm|i am|we're|we are) (not|currently not|currently un) ?available\b",
    ),
    ("en_not_home", 1.0, r"\b(we're|we are|i'm|i am) not (home|here|in)\b"),
    (
        "en_business_hours",
        1.5,
        r"\b(business|office) hours\b|\boffice is (currently )?closed\b|\bnext business day\b|"
        r"\bafter hours\b|\boutside (of )?(our )?(normal |regular |usual )?(business |office |"
        r"opening )?hours\b",
    ),
    ("en_you_know", 2.0, r"\byou know what to do\b"),
    ("en_voicemail_word", 1.0, r"\bvoice ?mail\b"),
    ("en_mailbox_word", 1.0, r"\bmailbox\b"),
    ("en_emergency", 1.5, r"\bif this is an emergency\b|\bhang up and dial\b"),
    ("en_try_later", 1.0, r"\bplease try (again )?later\b"),
    # ---------------------------------------------------------------- Spanish, machine
    (
        "es_after_tone",
        3.0,
        r"\b(despues|luego) (del|de la) (tono|senal|pitido|bip)\b|"
        r"\bal (oir|escuchar) (la senal|el tono)\b",
    ),
    ("es_voicemail", 3.0, r"\bbuzon de voz\b|\bmensajes de voz\b|\bcontestador automatico\b"),
    ("es_record", 3.0, r"\bgrabe (su|tu) mensaje\b"),
    (
        "es_person_calling",
        3.0,
        r"\b(la persona|el numero|el telefono|el movil|el abonado|el cliente)( movil)? (que usted "
        r"marco|al que (usted )?llama|a la que (usted )?llama|marcado|que ha marcado)\b",
    ),
    ("es_off", 3.0, r"\b(apagado|fuera de cobertura|fuera del area)\b"),
    (
        "es_leave_imperative",
        2.0,
        r"\b(deja|deje|dejen|dejame|dejenos|dejanos) (su |tu |un |me )?(mensaje|recado|nombre)\b",
    ),
    ("es_you_reached", 1.5, r"\b(has|ha) (llamado|comunicado) (a|con)\b"),
    ("es_cant_answer", 2.0, r"\bno (puedo|podemos) (atender|contestar|responder)(te|le|les)?\b"),
    ("es_answering_machine", 1.5, r"\bcontestador\b"),
    (
        "es_call_back",
        1.0,
        r"\b(te|le|lo|la) (llamo|llamare|llamaremos|devolveremos|devolvere)\b|"
        r"\bdevolver(emos|e)? la llamada\b",
    ),
    ("es_not_available", 1.0, r"\bno esta disponible\b"),
    ("es_not_available_me", 1.5, r"\bno (estoy|estamos) disponibles?\b"),
    (
        "es_hours",
        1.5,
        r"\bhorario de (atencion|oficina)\b|\bfuera (de|del) (nuestro |su )?horario\b",
    ),
    ("es_you_know", 2.0, r"\bya sabes (que|lo que) (hacer|tienes que hacer)\b"),
    ("es_mailbox_word", 1.0, r"\bbuzon\b"),
    ("es_try_later", 1.0, r"\b(intentelo|llame) (mas tarde|de nuevo)\b"),
    # ---------------------------------------------------------------- French, machine
    ("fr_after_tone", 3.0, r"\bapres le (bip|signal|top)\b|\bau (bip|signal)( sonore)?\b"),
    ("fr_voicemail", 3.0, r"\bmessagerie\b"),
    (
        "fr_correspondent",
        3.0,
        r"\bvotre correspondant\b|\ble correspondant que vous\b|"
        r"\ble numero (que vous avez |que vous )?(compose|demande)\b",
    ),
    ("fr_not_reachable", 1.5, r"\bn'est pas joignable\b|\bpas joignable\b"),
    ("fr_you_are_on", 1.5, r"\bvous etes (bien )?(sur|chez)\b"),
    (
        "fr_not_available_me",
        1.5,
        r"\b(je ne suis|nous ne sommes) pas (disponibles?|joignables?)\b|"
        r"\b(je suis|nous sommes) (absents?|indisponibles?)\b",
    ),
    (
        "fr_leave_imperative",
        2.0,
        r"\b(laissez|laisse)( moi| nous)? (un |vos |votre )?(petit |bref )?(message|coordonnees|"
        r"nom)\b",
    ),
    ("fr_cant_answer", 2.5, r"\bne (peux|pouvons) pas (vous |te )?repondre\b"),
    (
        "fr_call_back",
        1.0,
        r"\b(je vous|je te|nous vous) (rappelle|rappellerai|rappellerons)\b|\bveuillez rappeler\b",
    ),
    ("fr_not_available", 1.0, r"\bpas disponible\b|\bindisponible\b"),
    (
        "fr_hours",
        1.5,
        r"\b(nos bureaux|le cabinet|l'agence) (sont|est) fermes?\b|\bhoraires d'ouverture\b|"
        r"\bnous sommes ouverts\b|\ben dehors (de nos|des) (heures|horaires)\b",
    ),
    ("fr_answering_machine", 1.0, r"\brepondeur\b"),
    ("fr_full", 3.0, r"\best pleine\b"),
    (
        "fr_try_later",
        1.0,
        r"\brenouveler (votre|son) appel\b|\b(rappeler|rappelez) ulterieurement\b|"
        r"\b(essayez|reessayez|reessayer) (plus tard|ulterieurement)\b",
    ),
    ("fr_off", 1.0, r"\b(est|etre) (eteint|hors service)\b"),
    # ---------------------------------------------------------------- German, machine
    ("de_after_tone", 3.0, r"\bnach dem (signalton|piepton|ton|signal|piep|pfeifton|beep)\b"),
    # "Mailbox" alone is English too: only the German forms count here. A greeting names
    # the mailbox in a construction ("die Mailbox von Anna", "ist die Mailbox", "mit der
    # Mailbox verbunden"); the bare noun is medium, because a person talks about their
    # mailbox too ("ich hab Ihre Nachricht auf der Mailbox gesehen").
    (
        "de_mailbox",
        3.0,
        r"\b(mobilbox|sprachbox|sprachnachricht(en)?dienst)\b|\bmailbox von\b|"
        r"\b(ist|sind) (die|der|ihre|meine) mailbox\b|\b(mit|auf) (der|die|meine|meiner|ihre) "
        r"mailbox (von|verbunden|gelandet)\b|\b(willkommen|herzlich willkommen) (auf|bei) (der|"
        r"meiner) mailbox\b",
    ),
    ("de_mailbox_word", 2.0, r"\b(die|der|ihre|meine|zur) mailbox\b"),
    (
        "de_party",
        3.0,
        r"\b(der|die) gewunschte (gesprachspartner|teilnehmer|person)\b|\bihr gesprachspartner\b|"
        r"\bder teilnehmer ist\b|\bdie person die sie anrufen\b|"
        r"\b(die|der) (von ihnen )?(gewahlte|angerufene) \w*nummer\b",
    ),
    ("de_speak_after", 3.0, r"\bsprechen sie nach\b"),
    (
        "de_leave_imperative",
        2.0,
        r"\bhinterlassen sie (mir |uns )?(eine|ihre|ihren|gern|gerne|bitte)\b|"
        r"\bsprich mir (was|etwas) auf\b|\bsie konnen (jetzt )?eine nachricht hinterlassen\b",
    ),
    ("de_line_of", 2.0, r"\b(anschluss|apparat) von\b"),
    (
        "de_cant_phone",
        2.5,
        r"\b(ich|wir) (kann|konnen) (gerade |leider |im moment |momentan |zurzeit )*(nicht ans "
        r"telefon|ihren anruf nicht|nicht rangehen)\b",
    ),
    ("de_not_reachable", 1.0, r"\bnicht erreichbar\b|\bnicht verfugbar\b"),
    # Carrier prompts send the caller away politely ("try again later"); a person asks for a
    # call later instead ("können Sie später anrufen?", a person cue).
    (
        "de_try_later",
        1.0,
        r"\b(bitte )?versuchen sie es (spater|noch ?einmal|erneut|nochmal)\b",
    ),
    ("de_off", 1.0, r"\b(ist|sind|wurde) (ausgeschaltet|abgeschaltet)\b"),
    (
        "de_not_reachable_me",
        1.5,
        r"\b(ich bin|wir sind) (gerade |leider |im moment |momentan |zurzeit )*nicht (erreichbar|"
        r"da|zu hause)\b",
    ),
    (
        "de_call_back",
        1.0,
        r"\b(ich|wir) (rufe|rufen) (sie |dich )?(gerne |gern )?zuruck\b|\bruckruf\b",
    ),
    ("de_you_reached", 1.5, r"\bsie haben (die|den|das)?\b.*\berreicht\b"),
    (
        "de_hours",
        1.5,
        r"\b(praxis|buro|kanzlei|geschaft) ist (derzeit |zurzeit |momentan )?geschlossen\b|"
        r"\b(sprechzeiten|offnungszeiten|geschaftszeiten)\b|\bausserhalb (unserer|der) \w*zeiten\b",
    ),
    ("de_answering_machine", 1.0, r"\banrufbeantworter\b"),
    # ---------------------------------------------------------------- Portuguese, machine
    ("pt_after_tone", 3.0, r"\b(apos|depois d)o (sinal|bipe|bip)\b"),
    ("pt_record", 3.0, r"\bgrave (seu|sua|o seu|a sua) (recado|mensagem)\b"),
    ("pt_voicemail", 3.0, r"\bcaixa de mensagens\b|\bcorreio de voz\b"),
    (
        "pt_person_called",
        3.0,
        r"\ba pessoa (para quem|com quem|que) (voce )?(ligou|chamou)\b|"
        r"\bo numero (para o qual|que|para quem) (voce )?(ligou|discou|chamou|marcou)\b|"
        r"\bo numero (discado|chamado|marcado)\b",
    ),
    ("pt_off", 3.0, r"\b(desligado|fora da area)\b"),
    (
        "pt_leave_imperative",
        2.0,
        r"\b(deixe|deixa) (seu |sua |o seu |a sua |um |uma )?(mensagem|recado|nome)\b",
    ),
    ("pt_mailbox_word", 1.5, r"\bcaixa postal\b"),
    ("pt_you_reached", 1.5, r"\b(voce )?ligou para\b"),
    ("pt_cant_answer", 2.0, r"\bnao (posso|podemos) (te |lhe )?atender\b"),
    (
        "pt_call_back",
        1.0,
        r"\bretornaremos\b|\b(te|lhe) (ligo|ligarei|retorno)\b|\bretorno a ligacao\b",
    ),
    ("pt_not_available", 1.0, r"\bnao esta disponivel\b|\bindisponivel\b"),
    ("pt_not_available_me", 1.5, r"\bnao (estou|estamos) disponive(l|is)\b"),
    (
        "pt_hours",
        1.5,
        r"\bhorario de (atendimento|funcionamento)\b|\bfora do (nosso |seu )?horario\b",
    ),
    ("pt_charge", 3.0, r"\bsujeita a cobranca\b"),
    (
        "pt_try_later",
        1.0,
        r"\btente (novamente|de novo|mais tarde)\b|\bligue (novamente|mais tarde)\b",
    ),
    # ---------------------------------------------------------------- Italian, machine
    ("it_after_tone", 3.0, r"\bdopo il (segnale|bip|beep|tono)\b|\bsegnale acustico\b"),
    (
        "it_voicemail",
        3.0,
        r"\bsegreteria telefonica\b|\bcasella vocale\b|\brisponde la segreteria\b",
    ),
    (
        "it_person_called",
        3.0,
        r"\b(la persona|il cliente|il numero|l'utente) da lei (chiamat[oa]|selezionat[oa])\b|"
        r"\b(telefono|numero|cellulare) (della persona|del cliente|dell'utente) (da lei )?"
        r"chiamat[oa]\b",
    ),
    (
        "it_not_reachable",
        2.0,
        r"\b(non e|o non|risulta non) (al momento |momentaneamente |attualmente )?raggiungibile\b",
    ),
    (
        "it_leave_imperative",
        2.0,
        r"\b(lasciate|lasciami|lasciatemi|lasci|lascia)( pure)? (un |il |nome)\b",
    ),
    ("it_cant_answer", 2.5, r"\bnon (posso|possiamo) (rispondere|risponderti|risponderle)\b"),
    ("it_not_available_me", 1.5, r"\bnon sono disponibile\b|\bnon siamo disponibili\b"),
    ("it_you_called", 1.5, r"\b(avete|hai) chiamato\b"),
    ("it_call_back", 1.0, r"\b(vi|ti|la|sarete) (richiamero|richiamo|richiameremo|richiamati)\b"),
    (
        "it_hours",
        1.5,
        r"\b(lo studio|l'ufficio|il negozio) e chiuso\b|\borari di apertura\b|"
        r"\bfuori (dall'|dal |dall )?orario\b",
    ),
    # Opening days read out as a range ("Monday to Friday"): what a closed office's recording
    # says after its hours. Weak: a person may say it when asked; it corroborates hours.
    (
        "xx_weekdays",
        1.0,
        r"\bmonday (through|to|thru) friday\b|\bde lunes a viernes\b|\bdu lundi au vendredi\b|"
        r"\bmontags? bis freitags?\b|\bde segunda a sexta\b|\bdal lunedi al venerdi\b",
    ),
    ("it_not_available", 1.0, r"\bnon e (al momento )?disponibile\b|\bnon disponibile\b"),
    ("it_segreteria_word", 1.0, r"\bsegreteria\b"),
    (
        "it_try_later",
        1.0,
        r"\b(si prega|la preghiamo|vi preghiamo) di (riprovare|richiamare|ripetere)\b|"
        r"\b(riprovare|riprovi|riprova) (piu tardi|in seguito)\b",
    ),
    ("it_off", 1.0, r"\b(e|risulta|potrebbe essere) (spento|irraggiungibile)\b"),
    # ---------------------------------------------------------------- people (negative)
    ("en_who", -2.0, r"\bwho('s| is| s)? (this|calling|speaking|that)\b|\bwho am i speaking\b"),
    (
        "en_can_i",
        -2.0,
        r"\b(can|may|could) i (take|help|ask|tell)\b|\bhow (can|may|could) (i |we )?help\b|"
        r"\bwhat can (i|we) do for you\b",
    ),
    (
        "en_want_to_leave",
        -2.0,
        r"\b(do|would) you (want|like) to leave\b|\bwant to leave a message\b",
    ),
    ("en_speaking", -1.5, r"\bspeaking\b(?! (with|to) )"),
    ("en_anyone", -2.0, r"\b(is )?(anyone|anybody|someone) there\b"),
    (
        "en_live",
        -1.5,
        r"\b(go ahead|what's up|is this about|is it urgent|can you call me|call me back in|i "
        r"can't really talk|i'm driving|right now can you)\b",
    ),
    # The callee talks about the caller's message or call ("I saw your voicemail"): a greeting
    # is recorded before any call, so it never does.
    (
        "en_you_left",
        -2.0,
        r"\byou left (me )?a\b|\bi (just )?(got|saw|heard|listened to|checked|played) your (text|"
        r"message|voicemail|email|call|missed call)\b",
    ),
    # A message left *with the speaker* for someone else: a live intermediary ("you can leave
    # a message with me", "I'll pass it on"). A greeting asks for a message for its owner.
    (
        "en_with_me",
        -2.0,
        r"\b(message|it|word|your number|your name) with me\b|\bi'll (make sure|see that) (s?he|"
        r"they|he|she) gets? (it|the message)\b|\bi('ll| will) pass (it|that|the message) "
        r"(on|along)\b",
    ),
    ("es_who", -2.0, r"\bquien (habla|es|llama|me llama)\b|\bde parte de quien\b"),
    (
        "es_can_i",
        -2.0,
        r"\b(en que|como) (le |te |les )?(puedo|podemos) (ayudar|servir)\w*\b|"
        r"\b(le|te) puedo tomar\b|"
        r"\b(quiere|quieres|desea) dejar(le)?\b",
    ),
    (
        "es_live",
        -1.5,
        r"\b(digame|dime|hay alguien|me puedes llamar|me puede llamar|que paso|le atiende|estoy "
        r"manejando)\b",
    ),
    (
        "es_you_left",
        -2.0,
        r"\bme dejaste\b|\bme dejo un\b|\b(vi|escuche|oi|recibi) (su|tu) (mensaje|llamada|"
        r"recado)\b",
    ),
    (
        "es_with_me",
        -2.0,
        r"\b(recado|mensaje|razon) (conmigo|a mi)\b|\byo (le|se lo|se la) (paso|doy|digo|dejo)\b|"
        r"\byo le (aviso|comento)\b",
    ),
    (
        "fr_who",
        -2.0,
        r"\bc'est qui\b|\bqui est a l'appareil\b|\bqui est ce\b|\bqui (me )?parle\b|"
        r"\bc'est a quel sujet\b|\bc'est pour quoi\b",
    ),
    (
        "fr_can_i",
        -2.0,
        r"\bque puis je\b|\bje peux prendre\b|\bvous voulez laisser\b|\bvoulez vous laisser\b|"
        r"\bqu'est ce que je peux\b|\b(en quoi|comment) (puis je|je peux|pouvons nous) vous "
        r"(aider|etre utile)\b",
    ),
    (
        "fr_live",
        -1.5,
        r"\b(il y a quelqu'un|j'ecoute|je vous ecoute|a l'appareil|je suis au volant|vous pouvez "
        r"rappeler)\b",
    ),
    (
        "fr_you_left",
        -2.0,
        r"\bvous m'avez laisse\b|\btu m'as laisse\b|\bvous (m')?(aviez|avez) laisse (un|une|"
        r"votre)\b|\bj'ai (bien )?(eu|vu|entendu|ecoute|recu) "
        r"(votre|ton|ta|vos|tes) (message|messages|appel)\b",
    ),
    (
        "fr_with_me",
        -2.0,
        r"\bje (lui|leur) (transmettrai|transmets|ferai (passer|la commission)|dirai|passerai le "
        r"message)\b|\bun message pour (lui|elle)\b",
    ),
    (
        "de_who",
        -2.0,
        r"\bwer (ist|spricht) (da|dran)\b|\bmit wem spreche\b|\b(worum|um was) geht (es|'s|s)\b|"
        r"\bworum geht's\b",
    ),
    (
        "de_you_left",
        -2.0,
        r"\bsie haben mir (eine |ne )?(nachricht|was|etwas) (aufgesprochen|hinterlassen)\b|"
        r"\b(ihre|deine) (nachricht|sprachnachricht|anruf)\b.*"
        r"\b(gesehen|gehort|abgehort|bekommen)\b",
    ),
    (
        "de_with_me",
        -2.0,
        r"\b(mir|bei mir) (gern |gerne |auch )?(eine nachricht|etwas|was) fur (ihn|sie)\b|"
        r"\bich (richte|sage|sag|gebe) (es |das )?(ihm|ihr) (aus|bescheid|weiter)\b",
    ),
    (
        "de_can_i",
        -2.0,
        r"\bkann ich (was|etwas|ihm|ihr) (ausrichten|helfen)\b|\bwas kann ich fur sie tun\b|"
        r"\bmochten sie (eine nachricht|etwas)\b|\bwie kann ich (ihnen )?helfen\b",
    ),
    (
        "de_live",
        -1.5,
        r"\b(ist da jemand|ja bitte|konnen sie (spater|mich)|sie sprechen mit|ich sitze gerade)\b",
    ),
    ("pt_who", -2.0, r"\bquem (fala|e|esta falando)\b|\bdo que se trata\b"),
    (
        "pt_can_i",
        -2.0,
        r"\bquer deixar\b|\bposso anotar\b|\b(em que |como )?(posso|podemos) (ajudar|servir)\b|"
        r"\bdeseja deixar\b",
    ),
    (
        "pt_live",
        -1.5,
        r"\b(pois nao|tem alguem ai|pode (ligar|falar)|estou dirigindo|falando em que|sou eu)\b",
    ),
    (
        "pt_you_left",
        -2.0,
        r"\b(voce|vc) deixou\b|\b(vi|ouvi|recebi) (sua|seu|o seu|a sua|tua|teu) (mensagem|recado|"
        r"ligacao)\b",
    ),
    (
        "pt_with_me",
        -2.0,
        r"\b(recado|mensagem) comigo\b|\beu (passo|dou) o recado\b|"
        r"\beu (aviso|falo|digo) (pra|para|a) (ele|ela)\b",
    ),
    ("it_who", -2.0, r"\bchi (parla|e)\b|\bdi cosa si tratta\b"),
    (
        "it_can_i",
        -2.0,
        r"\bvuole lasciare\b|\bposso prendere\b|"
        r"\b(come|in cosa|in che cosa) (posso|possiamo) (aiutar\w*|esser\w* utile)\b",
    ),
    ("it_live", -1.5, r"\b(c'e qualcuno|mi dica|puo richiamare|sto guidando)\b"),
    (
        "it_you_left",
        -2.0,
        r"\bmi ha lasciato\b|\bmi hai lasciato\b|\bho (sentito|visto|ascoltato|ricevuto) (il suo|"
        r"il tuo|la sua|la tua) (messaggio|chiamata)\b",
    ),
    (
        "it_with_me",
        -2.0,
        r"\b(messaggio|detto) a me\b|\b(glielo|gliela) (dico|riferisco|passo)\b|\briferisco io\b",
    ),
    # The callee says they have just checked their own voicemail ("je viens d'écouter ma
    # messagerie"): a greeting is recorded before the call and never reports that. Past tense
    # or "just" only: a greeting may say "I check my voicemail daily".
    (
        "xx_checked_my_voicemail",
        -2.0,
        r"\b(i (just |have |'ve )?(checked|listened to|went through)) my (voice ?mail|mailbox|"
        r"messages|answering machine)\b|"
        r"\b(revise|escuche|acabo de (revisar|escuchar)) (mi|el) (buzon|contestador|correo de voz|"
        r"mensajes)\b|"
        r"\b(je viens d'|j'ai )(ecouter|consulter|verifier|relever|ecoute|consulte|verifie|releve) "
        r"(ma|mes) (messagerie|messages|repondeur)\b|"
        r"\b(meine|die) (mailbox|anrufbeantworter|nachrichten) (abgehort|gecheckt|angehort)\b|"
        r"\b(ouvi|escutei|verifiquei|acabei de (ouvir|escutar|verificar)) (a |o )?(minha |meu )?"
        r"(caixa postal|correio de voz|mensagens)\b|"
        r"\bho (appena )?(ascoltato|controllato|sentito) (la mia |la |le mie |i miei )?"
        r"(segreteria|casella vocale|messaggi)\b",
    ),
)

#: Cues only counted at the very start of the callee's speech (its first words): the
#: canonical opening of a recorded greeting ("Hi, you've reached Sarah", "Hola, has llamado
#: a...", "Vous êtes bien sur..."). Said first, they decide; said later in a live answer
#: ("Thank you for calling Acme, you've reached the front desk...") they are ordinary cues.
_OPENING_CUE_TABLE: tuple[tuple[str, float, str], ...] = (
    (
        "en_open_reached",
        2.5,
        r"^((hi|hello|hey|hiya|howdy) )*(you ve|you've|you have|you) reached\b",
    ),
    (
        "es_open_called",
        2.5,
        r"^((hola|buenas|buenos dias|buenas tardes) )*((has|ha|usted ha) (llamado|comunicado) (a|"
        r"con)|(este|esta) es el (contestador|buzon))\b",
    ),
    (
        "fr_open_you_are",
        2.5,
        r"^((bonjour|bonsoir|salut|coucou) )*(vous etes|tu es) (bien )?(sur|chez|au)\b",
    ),
    (
        "de_open_line",
        2.5,
        r"^((hallo|guten tag|hi|servus|moin) )*(hier ist (der|die) (anschluss|mailbox|sprachbox)|"
        r"sie haben (die |den |das )?\w+( \w+)? erreicht|sie sind verbunden mit)\b",
    ),
    ("pt_open_called", 2.5, r"^((ola|oi|alo|bom dia) )*(voce )?ligou para\b"),
    # Carrier prompts open with the callee in the third person: a person never does.
    (
        "en_open_carrier",
        3.0,
        r"^(the|your) (person|party|customer|subscriber|number|google subscriber|wireless "
        r"customer|cellular customer|mobile customer|call) (you|has been|you're|that you)\b",
    ),
    (
        "es_open_carrier",
        3.0,
        r"^(el numero|la persona|el telefono|el abonado|el cliente|el movil|su llamada)( movil)? "
        r"(que|al que|a la que|marcado|ha sido|no)\b",
    ),
    ("fr_open_carrier", 3.0, r"^(le correspondant|votre correspondant|le numero|votre appel)\b"),
    (
        "de_open_carrier",
        3.0,
        r"^(der|die|ihr) (gewunschte|teilnehmer|person die|gesprachspartner|anruf wird|"
        r"rufnummer ist|anschluss (ist|wird))\b",
    ),
    (
        "pt_open_carrier",
        3.0,
        r"^(a pessoa|o numero|este telefone|o telefone|sua chamada|a sua chamada) (para quem|que|"
        r"esta|chamado|discado|foi)\b",
    ),
    (
        "it_open_carrier",
        3.0,
        r"^(la persona|il cliente|il numero|l'utente|la chiamata) (da|che|selezionato|"
        r"chiamato)\b",
    ),
    # Opening self-identification ("Hi, it's Tom", "Hola, soy María"): machines and people
    # both say it, so it only tips a greeting that also has a machine phrase.
    (
        "open_self_id",
        0.5,
        r"^((hi|hello|hey|hola|bonjour|salut|coucou|hallo|servus|ola|oi|ciao|salve|e ai) )*(it's|"
        r"it s|this is|soy|c'est|hier ist|aqui e|e o|e a|sono|here)\b",
    ),
    (
        "it_open_called",
        2.5,
        r"^((ciao|salve|buongiorno|buonasera) )*((avete|hai|ha) chiamato|risponde)\b",
    ),
)
_OPENING_WORDS = 8

#: Cues that promise a beep is coming ("after the tone"): wait longer for it before speaking.
_BEEP_PROMISE_CUES = frozenset(
    {
        "en_after_tone",
        "es_after_tone",
        "fr_after_tone",
        "de_after_tone",
        "pt_after_tone",
        "it_after_tone",
        "de_speak_after",
        "en_record_message",
        "es_record",
        "pt_record",
    }
)

_CUES: tuple[tuple[str, float, re.Pattern[str]], ...] = tuple(
    (name, weight, re.compile(pattern)) for name, weight, pattern in _CUE_TABLE
)

_SHORT_GREETING_WORDS = frozenset(
    "hello hi hey yes yeah yep hallo allo alo alloa hola bueno diga digame si oui ja pronto "
    "ola oi sim ciao salut bonjour buenas um uh hm ah oh well".split()
)


@dataclass(frozen=True, slots=True)
class Cue:
    """A phrase cue found in the transcript (positive weight: machine; negative: person)."""

    name: str
    weight: float


#: Cues that say the same thing twice (a general form and a specific one, a phrase anywhere
#: and the same phrase as the opening words): only the strongest of a group counts.
_CUE_GROUPS: dict[str, str] = {
    name: group
    for group, names in {
        "en_not_available": ("en_not_available", "en_not_available_me"),
        "en_away": ("en_away", "en_away_any"),
        "en_reached": ("en_you_reached", "en_open_reached"),
        "en_carrier": ("en_person_calling", "en_open_carrier"),
        "en_voicemail": ("en_voicemail_word", "en_voicemail_of"),
        # "Mailbox" is the same word in English and German: counted once.
        "en_mailbox": ("en_mailbox_word", "en_mailbox_state", "de_mailbox", "de_mailbox_word"),
        "es_reached": ("es_you_reached", "es_open_called", "es_answering_machine"),
        "es_carrier": ("es_person_calling", "es_open_carrier"),
        "es_not_available": ("es_not_available", "es_not_available_me"),
        "es_mailbox": ("es_mailbox_word", "es_voicemail"),
        "fr_reached": ("fr_you_are_on", "fr_open_you_are"),
        "fr_carrier": ("fr_correspondent", "fr_open_carrier"),
        "fr_not_available": ("fr_not_available", "fr_not_available_me"),
        "de_reached": ("de_open_line", "de_line_of", "de_you_reached"),
        "de_carrier": ("de_party", "de_open_carrier"),
        "de_not_reachable": ("de_not_reachable", "de_not_reachable_me"),
        "pt_reached": ("pt_you_reached", "pt_open_called"),
        "pt_carrier": ("pt_person_called", "pt_open_carrier"),
        "pt_not_available": ("pt_not_available", "pt_not_available_me"),
        "pt_mailbox": ("pt_mailbox_word", "pt_voicemail"),
        "it_reached": ("it_you_called", "it_open_called"),
        "it_carrier": ("it_person_called", "it_open_carrier"),
        "it_not_available": ("it_not_available", "it_not_available_me", "it_not_reachable"),
        "it_segreteria": ("it_segreteria_word", "it_voicemail"),
    }.items()
    for name in names
}


#: The opening formulas a business's live staff use too ("You've reached Acme, this is...").
_OPENING_FORMULA_GROUPS = frozenset(
    {"en_reached", "es_reached", "fr_reached", "de_reached", "pt_reached", "it_reached"}
)


def _grouped_score(cues: Iterable[Cue]) -> float:
    best: dict[str, float] = {}
    for c in cues:
        group = _CUE_GROUPS.get(c.name, c.name)
        if abs(c.weight) > abs(best.get(group, 0.0)):
            best[group] = c.weight
    return sum(best.values())


def normalize_text(text: str) -> str:
    """Lower case, accents removed, punctuation dropped except "?" (its own token)."""
    decomposed = unicodedata.normalize("NFKD", text.replace("\u2019", "'").replace("ß", "ss"))
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()
    plain = plain.replace("?", " ? ").replace("-", " ")
    plain = re.sub(r"[^a-z0-9' ?]+", " ", plain)
    return " ".join(plain.split())


_OPENING_CUES: tuple[tuple[str, float, re.Pattern[str]], ...] = tuple(
    (name, weight, re.compile(pattern)) for name, weight, pattern in _OPENING_CUE_TABLE
)


def find_cues(text: str) -> list[Cue]:
    """All phrase cues in ``text`` (normalized first), each at most once.

    ``text`` is everything the callee said since pickup, in order: opening cues are looked
    for in its first words only.
    """
    norm = normalize_text(text)
    cues = [Cue(name, weight) for name, weight, rx in _CUES if rx.search(norm)]
    opening = " ".join(norm.split()[:_OPENING_WORDS])
    cues.extend(Cue(name, weight) for name, weight, rx in _OPENING_CUES if rx.search(opening))
    return cues


# =================================================================== transcript classifier


@dataclass(frozen=True, slots=True)
class TranscriptSettings:
    """Tuning of :class:`TranscriptClassifier`. Units are in the names."""

    #: Machine when the score (phrases + monologue - person cues) reaches this while talking.
    machine_score: float = 2.5
    #: ...or this once the speaker has paused for ``ended_silence_ms`` (greeting finished).
    ended_machine_score: float = 2.0
    ended_silence_ms: float = 450.0
    #: ...but when the machine phrases are a single medium cue ("leave a message", "you've
    #: reached"), only after a pause this long: a person says one such phrase too, and a
    #: breath inside a live sentence ("You've reached the front desk, this is Maria, / how
    #: can I help?") is shorter than the end of a turn.
    ended_single_cue_silence_ms: float = 1000.0
    #: A single strong phrase decides unless person cues reach this much.
    strong_cue_weight: float = 3.0
    strong_human_veto: float = 2.0
    #: Person: a short greeting ("Hello?") then this much silence.
    human_silence_ms: float = 550.0
    short_greeting_max_ms: float = 1600.0
    short_greeting_max_words: int = 4
    #: Person: a person cue (a question back) then this much silence.
    human_cue_silence_ms: float = 550.0
    #: Person: any speech without machine phrases, then this much silence (waiting for us).
    reply_silence_ms: float = 1300.0
    reply_max_machine_score: float = 1.0
    #: Unbroken monologue: pauses shorter than ``monologue_gap_ms`` keep it going.
    monologue_gap_ms: float = 700.0
    monologue_ms: float = 7500.0
    monologue_bonus: float = 1.0
    long_monologue_ms: float = 10000.0
    long_monologue_bonus: float = 1.5


@dataclass(slots=True)
class _Segment:
    text: str
    start_ms: float
    end_ms: float


@dataclass(slots=True)
class TranscriptClassifier:
    """Incremental transcript + timing classifier. Feed events, read :meth:`verdict`.

    Inputs (all times in ms since pickup; ``now_ms`` is when the event reached us):

    * :meth:`on_transcript` — an interim or final transcript; an interim replaces the
      previous interim, a final commits the segment.
    * :meth:`on_speech_started` / :meth:`on_speech_stopped` — the VAD's view.
    * :meth:`tick` — time passes (silence rules are driven by time, not by events).

    Each returns the current :class:`Verdict` (``method="transcript"``). It does not latch:
    more speech can turn "human" back into "undecided" or "machine"; the arbiter decides
    what a change means.
    """

    settings: TranscriptSettings = field(default_factory=TranscriptSettings)
    _finals: list[_Segment] = field(default_factory=list)
    _interim: _Segment | None = None
    _speech: list[list[float]] = field(default_factory=list)  # merged [start, end] spans
    _vad_speaking: bool = False
    _text_cache: str = ""
    _cues: list[Cue] = field(default_factory=list)
    _machine_score: float = 0.0
    _human_score: float = 0.0
    _greeting_words: int = 0
    _verdict: Verdict = field(
        default_factory=lambda: Verdict("undecided", 0.0, "no speech yet", "transcript", 0.0)
    )

    # ------------------------------------------------------------------------- inputs
    def on_transcript(
        self, text: str, *, is_final: bool, start_ms: float, end_ms: float, now_ms: float
    ) -> Verdict:
        seg = _Segment(text.strip(), start_ms, max(end_ms, start_ms))
        if is_final:
            self._interim = None
            if seg.text:
                self._finals.append(seg)
        else:
            self._interim = seg if seg.text else None
        if seg.text:
            self._add_speech(seg.start_ms, seg.end_ms)
        self._refresh_cues()
        return self.tick(now_ms)

    def on_speech_started(self, start_ms: float, *, now_ms: float) -> Verdict:
        self._vad_speaking = True
        self._add_speech(start_ms, start_ms)
        return self.tick(now_ms)

    def on_speech_stopped(self, start_ms: float, stop_ms: float, *, now_ms: float) -> Verdict:
        self._vad_speaking = False
        self._add_speech(min(start_ms, stop_ms), stop_ms)
        return self.tick(now_ms)

    def tick(self, now_ms: float) -> Verdict:
        self._verdict = self._decide(now_ms)
        return self._verdict

    # ------------------------------------------------------------------------- state
    @property
    def verdict(self) -> Verdict:
        return self._verdict

    @property
    def text(self) -> str:
        return self._text_cache

    @property
    def cues(self) -> tuple[Cue, ...]:
        return tuple(self._cues)

    @property
    def heard_speech(self) -> bool:
        return bool(self._speech)

    @property
    def speaking(self) -> bool:
        return self._vad_speaking

    @property
    def last_speech_end_ms(self) -> float | None:
        return self._speech[-1][1] if self._speech else None

    @property
    def beep_promised(self) -> bool:
        """The greeting said a tone is coming ("after the tone")."""
        return any(c.name in _BEEP_PROMISE_CUES for c in self._cues)

    def machine_score(self) -> float:
        """Sum of machine cue weights (the strongest of each group of overlapping cues)."""
        return self._machine_score

    def human_score(self) -> float:
        """Sum of person cue weights, as a positive number."""
        return self._human_score

    def silence_ms(self, now_ms: float) -> float:
        """How long the line has been quiet (0 while the callee speaks)."""
        if self._vad_speaking or not self._speech:
            return 0.0
        return max(0.0, now_ms - self._speech[-1][1])

    # ------------------------------------------------------------------------- internals
    @property
    def last_speech_start_ms(self) -> float | None:
        """Start of the latest run of speech (pauses merged only where speech overlaps)."""
        return self._speech[-1][0] if self._speech else None

    def _add_speech(self, start_ms: float, end_ms: float) -> None:
        spans = self._speech
        for span in spans:
            if start_ms <= span[1] and end_ms >= span[0]:
                span[0] = min(span[0], start_ms)
                span[1] = max(span[1], end_ms)
                break
        else:
            spans.append([start_ms, end_ms])
        spans.sort()
        merged: list[list[float]] = []
        for span in spans:
            if merged and span[0] <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], span[1])
            else:
                merged.append(span)
        self._speech = merged

    def _refresh_cues(self) -> None:
        parts = [s.text for s in self._finals]
        if self._interim is not None:
            parts.append(self._interim.text)
        text = " ".join(parts)
        if text != self._text_cache:
            self._text_cache = text
            self._cues = find_cues(text)
            self._machine_score = _grouped_score(c for c in self._cues if c.weight > 0)
            self._human_score = -_grouped_score(c for c in self._cues if c.weight < 0)
            norm_words = [w.strip("?") for w in normalize_text(text).split()]
            self._greeting_words = sum(w in _SHORT_GREETING_WORDS for w in norm_words)

    def speech_total_ms(self, now_ms: float) -> float:
        """Speech heard since pickup (ms), counting speech still going on."""
        return self._runs(now_ms)[0]

    @property
    def ends_on_question(self) -> bool:
        """The callee's last words were a question ("?" in the transcript)."""
        return self._text_cache.rstrip().endswith("?")

    def _runs(self, now_ms: float) -> tuple[float, float]:
        """(total speech ms, longest unbroken run ms), counting speech still going on.

        A run is speech whose pauses are all shorter than ``monologue_gap_ms``: the pause a
        person leaves for a reply is longer than that.
        """
        spans = [list(s) for s in self._speech]
        if self._vad_speaking and spans:
            spans[-1][1] = max(spans[-1][1], now_ms)
        gap = self.settings.monologue_gap_ms
        total = sum(e - s for s, e in spans)
        longest = 0.0
        run_start: float | None = None
        run_end = 0.0
        for s, e in spans:
            if run_start is None or s - run_end >= gap:
                run_start = s
            run_end = max(run_end, e)
            longest = max(longest, run_end - run_start)
        return total, longest

    def _decide(self, now_ms: float) -> Verdict:
        s = self.settings
        if not self._speech:
            return Verdict("undecided", 0.0, "no speech yet", "transcript", now_ms)
        m = self.machine_score()
        h = self.human_score()
        total_ms, longest_ms = self._runs(now_ms)
        bonus = 0.0
        if longest_ms >= s.long_monologue_ms:
            bonus = s.long_monologue_bonus
        elif longest_ms >= s.monologue_ms:
            bonus = s.monologue_bonus
        net = m + bonus - h
        silence = self.silence_ms(now_ms)
        names = ",".join(c.name for c in self._cues) or "none"
        strongest = max((c.weight for c in self._cues), default=0.0)
        end = self.last_speech_end_ms if silence > 0 else None

        if strongest >= s.strong_cue_weight and h < s.strong_human_veto:
            conf = min(0.99, 0.9 + 0.02 * (m - strongest))
            return Verdict("machine", conf, f"strong phrase ({names})", "transcript", now_ms, end)
        # A single machine phrase is uncorroborated. An opening formula alone ("you've
        # reached...", "ha chiamato...") does not decide while the callee is still talking:
        # live staff answer with it too ("You've reached the front desk, this is Maria, how
        # can I help?"). It takes a second phrase, a monologue, or the end of the greeting
        # (below, after a pause longer than a breath, as for any single medium phrase).
        machine_groups = {_CUE_GROUPS.get(c.name, c.name) for c in self._cues if c.weight > 0}
        corroborated = len(machine_groups) > 1 or bonus > 0
        opening_only = not corroborated and machine_groups <= _OPENING_FORMULA_GROUPS
        if net >= s.machine_score and not opening_only:
            # Capped below a strong phrase's confidence: the arbiter lets only strong phrases
            # overturn a person it already confirmed.
            conf = min(0.89, 0.8 + 0.05 * (net - s.machine_score))
            return Verdict(
                "machine",
                conf,
                f"phrases {m:.1f} + monologue {bonus:.1f} - person {h:.1f} ({names})",
                "transcript",
                now_ms,
                end,
            )
        # An opening formula alone does not decide even once the callee stops: a receptionist
        # who opens with it stops to hear the caller ("...this is Sam, / how can I help?"). It
        # takes corroboration: a second phrase, a monologue, a beep, or an AMD "machine".
        ended_after = s.ended_silence_ms if corroborated else s.ended_single_cue_silence_ms
        if silence >= ended_after and net >= s.ended_machine_score and m > 0 and not opening_only:
            return Verdict(
                "machine",
                0.8,
                f"greeting ended on machine phrases ({names})",
                "transcript",
                now_ms,
                end,
            )
        words = len(self._text_cache.split())
        if h > 0 and m - h < 1.0 and silence >= s.human_cue_silence_ms:
            conf = min(0.95, 0.8 + 0.05 * h)
            return Verdict(
                "human", conf, f"person cue then a pause ({names})", "transcript", now_ms
            )
        if (
            m < 1.0
            and total_ms <= s.short_greeting_max_ms
            and words <= s.short_greeting_max_words
            and silence >= s.human_silence_ms
        ):
            conf = 0.85 if self._greeting_words else 0.8
            return Verdict(
                "human",
                conf,
                f"short greeting ({total_ms:.0f} ms, {words} words) then "
                f"{silence:.0f} ms of silence",
                "transcript",
                now_ms,
            )
        if (
            m <= s.reply_max_machine_score
            and net < s.ended_machine_score
            and (silence >= s.reply_silence_ms)
        ):
            return Verdict(
                "human",
                0.75,
                f"spoke then waited {silence:.0f} ms ({names})",
                "transcript",
                now_ms,
            )
        lean = f"phrases {m:.1f}, monologue {bonus:.1f}, person {h:.1f}, silence {silence:.0f}"
        return Verdict("undecided", 0.0, lean, "transcript", now_ms)


# ================================================================================ arbiter


@dataclass(frozen=True, slots=True)
class HumanDetected:
    """A person answered (recorded; :class:`AllowOpener` follows)."""

    at_ms: float
    method: Literal["amd", "transcript", "timeout"]
    confidence: float
    reason: str


@dataclass(frozen=True, slots=True)
class AllowOpener:
    """The agent may speak its opener now."""

    at_ms: float
    reason: str


@dataclass(frozen=True, slots=True)
class VoicemailDetected:
    """A machine answered: record ``voicemail_detected``, the method and the time."""

    at_ms: float
    method: Method
    confidence: float
    reason: str
    amd_result: str | None
    late: bool


@dataclass(frozen=True, slots=True)
class LateMachine:
    """A machine verdict after a person was already confirmed (late AMD, a late beep...).

    ``overrides``: the arbiter switched to "machine" (a :class:`VoicemailDetected` with
    ``late=True`` and the action's follow-ups come with it). Otherwise the person's evidence
    was stronger and the call carries on; the event is there to be logged.
    """

    at_ms: float
    method: Method
    confidence: float
    reason: str
    overrides: bool


@dataclass(frozen=True, slots=True)
class StopAgentSpeech:
    """Cancel whatever the agent is saying (a machine was found after the opener began)."""

    at_ms: float


@dataclass(frozen=True, slots=True)
class EndCall:
    """Hang up now."""

    at_ms: float
    ended_reason: Literal["voicemail"] = "voicemail"


@dataclass(frozen=True, slots=True)
class StartVoicemailMessage:
    """Speak ``voicemail_message`` word for word now, then hang up (``ended_reason: voicemail``).

    ``trigger``: ``beep_end`` (the tone just ended), ``amd_end`` (Twilio saw the greeting
    end), ``greeting_end`` (silence after the greeting), ``max_wait`` (gave up waiting).
    ``restart``: a beep ended shortly after a message started on silence — the recording
    began only now, so clear the audio and say the message again from the start.
    """

    at_ms: float
    trigger: Literal["beep_end", "amd_end", "greeting_end", "max_wait"]
    restart: bool = False


Action = (
    HumanDetected
    | AllowOpener
    | VoicemailDetected
    | LateMachine
    | StopAgentSpeech
    | EndCall
    | StartVoicemailMessage
)


@dataclass(frozen=True, slots=True)
class ArbiterSettings:
    """Tuning of :class:`VoicemailArbiter`. Units are in the names."""

    #: A verdict below this confidence does not decide.
    min_confidence: float = 0.75
    #: Nothing heard since pickup for this long: let the agent speak first.
    no_speech_opener_ms: float = 2500.0
    #: An AMD vote the transcript does not back waits this long for the transcript to decide.
    amd_hold_ms: float = 1500.0
    #: Twilio calls long live answers machines: an AMD "machine" is only taken at once when
    #: nothing was transcribed yet or the transcript has machine phrases worth this much.
    amd_machine_min_phrase_score: float = 1.0
    #: An AMD "machine" other than ``machine_end_beep`` after speech was heard is weak
    #: evidence: Twilio sends ``machine_end_silence`` for any long live answer. It is backed
    #: only by machine phrases worth this much, net of person cues, and no person cue at all;
    #: otherwise it never decides (it is logged as a disagreement).
    amd_weak_min_net_phrase_score: float = 2.0
    #: ...or by a single phrase worth this much in a greeting that went on for this long and
    #: did not end on a question (a recorded greeting reads several sentences; a person who
    #: mentions their voicemail asks what the call is about).
    amd_weak_long_phrase_score: float = 1.5
    amd_weak_long_speech_ms: float = 5000.0
    #: An AMD "human" waits when the transcript has machine phrases worth this much.
    amd_human_max_phrase_score: float = 1.5
    #: A late AMD "machine" overrides a person only when nothing had been heard (the opener
    #: was allowed on silence) or the transcript now has machine phrases worth this much
    #: (more than its person cues).
    late_amd_min_phrase_score: float = 1.5
    #: A late beep or strong transcript overrides a person confirmed with less than this.
    late_max_human_confidence: float = 0.9
    #: A late transcript verdict must be this sure (a strong phrase) to override...
    late_transcript_min_confidence: float = 0.9
    #: ...except this soon after a person was confirmed on a short greeting with no person
    #: cue (before the opener could have been answered).
    late_weak_window_ms: float = 3000.0
    #: ...or when the speech carrying the machine phrases started this soon after the person
    #: was confirmed (the callee went on talking over the opener's first words).
    late_weak_resume_ms: float = 1000.0
    #: Ticks continue this long past the silence that would end such a greeting.
    late_tick_margin_ms: float = 500.0
    #: Machine evidence later than this after pickup is only logged.
    late_window_ms: float = 30000.0
    #: leave_message: silence after the greeting that counts as its end.
    greeting_silence_ms: float = 1500.0
    #: leave_message: when the greeting promised a tone, wait this long for it.
    beep_wait_ms: float = 3500.0
    #: leave_message: never wait longer than this after detection.
    max_message_wait_ms: float = 20000.0
    #: leave_message: a beep ending this soon after a message started restarts it.
    restart_window_ms: float = 5000.0
    transcript: TranscriptSettings = field(default_factory=TranscriptSettings)


@dataclass(frozen=True, slots=True)
class DetectionResult:
    """What the call record keeps."""

    voicemail_detected: bool | None
    method: Method | None
    amd_result: str | None
    detected_ms: float | None
    human_confirmed_ms: float | None
    opener_allowed_ms: float | None
    late: bool
    reason: str
    disagreements: tuple[str, ...]


@dataclass(slots=True)
class _PendingAmd:
    verdict: Verdict
    until_ms: float


@dataclass(slots=True)
class VoicemailArbiter:
    """First confident verdict wins; returns actions for the processor to carry out."""

    voicemail_action: VoicemailAction = "hangup"
    settings: ArbiterSettings = field(default_factory=ArbiterSettings)
    classifier: TranscriptClassifier = field(init=False)
    state: Literal["listening", "human", "machine"] = "listening"
    _result_method: Method | None = None
    _result_reason: str = ""
    _human_confidence: float = 0.0
    _human_method: str | None = None
    _human_ms: float | None = None
    _opener_ms: float | None = None
    _detected_ms: float | None = None
    _late: bool = False
    _amd_result: str | None = None
    _pending_amd: _PendingAmd | None = None
    _disagreements: list[str] = field(default_factory=list)
    _beep_end_ms: float | None = None
    _amd_end_ms: float | None = None
    _message_started_ms: float | None = None
    _message_trigger: str | None = None
    _late_reported: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.classifier = TranscriptClassifier(self.settings.transcript)

    # ------------------------------------------------------------------------- inputs
    def on_amd(
        self,
        answered_by: str,
        machine_detection_duration_ms: float | str | None = None,
        *,
        now_ms: float,
    ) -> list[Action]:
        vote = amd_vote(answered_by, machine_detection_duration_ms, received_ms=now_ms)
        self._amd_result = vote.answered_by
        actions: list[Action] = []
        if vote.marks_greeting_end:
            self._amd_end_ms = now_ms
        verdict = vote.verdict
        if self.state == "listening" and verdict.decided and self._contradicted(verdict):
            self._pending_amd = _PendingAmd(verdict, now_ms + self.settings.amd_hold_ms)
            self._disagreements.append(
                f"{now_ms:.0f}ms amd:{vote.answered_by} vs transcript "
                f"({self.classifier.verdict.reason})"
            )
        else:
            actions.extend(self._offer(verdict, now_ms))
        actions.extend(self._housekeeping(now_ms))
        return actions

    def on_transcript(
        self, text: str, *, is_final: bool, start_ms: float, end_ms: float, now_ms: float
    ) -> list[Action]:
        if self.state == "human" and now_ms > self.settings.late_window_ms:
            return []  # the conversation is on: nothing said now changes the verdict
        verdict = self.classifier.on_transcript(
            text, is_final=is_final, start_ms=start_ms, end_ms=end_ms, now_ms=now_ms
        )
        return self._after_transcript(verdict, now_ms)

    def on_speech_started(self, start_ms: float, *, now_ms: float) -> list[Action]:
        verdict = self.classifier.on_speech_started(start_ms, now_ms=now_ms)
        return self._after_transcript(verdict, now_ms)

    def on_speech_stopped(self, start_ms: float, stop_ms: float, *, now_ms: float) -> list[Action]:
        verdict = self.classifier.on_speech_stopped(start_ms, stop_ms, now_ms=now_ms)
        return self._after_transcript(verdict, now_ms)

    def on_beep(self, event: BeepEvent, *, now_ms: float) -> list[Action]:
        actions: list[Action] = []
        if event.kind == "end" and event.end_ms is not None:
            self._beep_end_ms = event.end_ms
        if event.kind == "start" or self.state == "listening":
            actions.extend(self._offer(beep_verdict(event), now_ms))
        actions.extend(self._housekeeping(now_ms))
        return actions

    def tick(self, now_ms: float) -> list[Action]:
        verdict = self.classifier.tick(now_ms)
        return self._after_transcript(verdict, now_ms)

    # ------------------------------------------------------------------------- state
    @property
    def opener_allowed(self) -> bool:
        return self._opener_ms is not None

    def late_ticks_needed(self, now_ms: float) -> bool:
        """After a person is confirmed: can time alone (ticks) still bring a late verdict?

        Within ``late_weak_window_ms`` of the person, and while the speech that resumed
        within ``late_weak_resume_ms`` of them lasts or has just ended (a greeting's end is
        found by silence).
        """
        s = self.settings
        if self.state != "human" or self._human_ms is None or now_ms > s.late_window_ms:
            return False
        if now_ms <= self._human_ms + s.late_weak_window_ms:
            return True
        c = self.classifier
        resumed = c.last_speech_start_ms
        if resumed is None or resumed - self._human_ms > s.late_weak_resume_ms:
            return False
        end = c.last_speech_end_ms
        if c.speaking or end is None:
            return True
        return now_ms - end <= s.transcript.ended_single_cue_silence_ms + s.late_tick_margin_ms

    def result(self) -> DetectionResult:
        return DetectionResult(
            voicemail_detected=None if self.state == "listening" else self.state == "machine",
            method=self._result_method if self.state == "machine" else None,
            amd_result=self._amd_result,
            detected_ms=self._detected_ms,
            human_confirmed_ms=self._human_ms,
            opener_allowed_ms=self._opener_ms,
            late=self._late,
            reason=self._result_reason,
            disagreements=tuple(self._disagreements),
        )

    # ------------------------------------------------------------------------- internals
    def _after_transcript(self, verdict: Verdict, now_ms: float) -> list[Action]:
        actions: list[Action] = []
        pending = self._pending_amd
        if pending is not None and self.state == "listening":
            if verdict.decided and verdict.confidence >= self.settings.min_confidence:
                self._pending_amd = None  # the transcript settles the disagreement
            elif now_ms >= pending.until_ms:
                self._pending_amd = None
                if self._amd_machine_refuted(pending.verdict, now_ms):
                    self._disagreements.append(
                        f"{now_ms:.0f}ms amd:{self._amd_result} dropped: the callee spoke like "
                        f"a person ({self.classifier.verdict.reason})"
                    )
                else:
                    actions.extend(self._offer(pending.verdict, now_ms))
        actions.extend(self._offer(verdict, now_ms))
        actions.extend(self._housekeeping(now_ms))
        return actions

    def _contradicted(self, verdict: Verdict) -> bool:
        """Should this AMD vote wait for the transcript (which does not back it)?

        AMD's known failure modes decide the rule: a person who answers with a long sentence
        is called a machine (so a "machine" vote waits while the transcript has heard speech
        with no machine phrase in it), and a short recorded greeting is called a human (so
        a "human" vote waits while the transcript holds machine phrases).
        """
        c = self.classifier
        s = self.settings
        if c.verdict.decided:
            return c.verdict.label != verdict.label
        m = c.machine_score()
        if verdict.label == "machine":
            # Person cues ("who's calling?", "can I take a message?") count against the
            # phrases: one weak phrase does not back AMD against a person.
            net = m - c.human_score()
            if not (c.heard_speech and bool(c.text)):
                return False
            return net < s.amd_machine_min_phrase_score or self._amd_machine_refuted(
                verdict, verdict.at_ms
            )
        return m >= s.amd_human_max_phrase_score and m > c.human_score()

    def _amd_machine_refuted(self, verdict: Verdict, now_ms: float) -> bool:
        """Must this AMD "machine" vote never decide, given what the callee said?

        Twilio calls any long live answer a machine (``machine_end_silence`` once the callee
        stops): after speech was heard, such a vote decides nothing against a callee with a
        person cue ("how can I help?", "who is this?"), and it needs machine phrases worth
        ``amd_weak_min_net_phrase_score`` (a single weak or medium phrase, such as a person
        mentioning their voicemail, is not enough), and none when the callee's last words were
        a question (they stopped for the answer). A callee still talking when the vote is
        weighed has not stopped for an answer: the vote stands. ``machine_end_beep`` is
        Twilio's surest answer (a tone was heard): only person cues refute it.
        """
        c = self.classifier
        if verdict.label != "machine" or not (c.heard_speech and c.text):
            return False
        h = c.human_score()
        if h > 0:
            return True
        if verdict.reason == "amd:machine_end_beep":
            return False
        if c.ends_on_question:
            return True  # the callee asked something and stopped for the answer
        if c.speaking:
            return False  # still talking on: not a callee who stopped to hear us
        s = self.settings
        m = c.machine_score()
        if m >= s.amd_weak_min_net_phrase_score:
            return False
        long_greeting = (
            m >= s.amd_weak_long_phrase_score
            and c.speech_total_ms(now_ms) >= s.amd_weak_long_speech_ms
            and not c.ends_on_question
        )
        return not long_greeting

    def _offer(self, verdict: Verdict, now_ms: float) -> list[Action]:
        s = self.settings
        if not verdict.decided or verdict.confidence < s.min_confidence:
            return []
        if self.state == "listening":
            if verdict.label == "human":
                return self._commit_human(
                    "amd" if verdict.method == "amd" else "transcript",
                    verdict.confidence,
                    verdict.reason,
                    now_ms,
                )
            return self._commit_machine(verdict, now_ms, late=False)
        if self.state == "human" and verdict.label == "machine":
            return self._late_machine(verdict, now_ms)
        if (
            self.state == "human"
            and verdict.label == "human"
            and verdict.method == "transcript"
            and self._human_method == "timeout"
        ):
            # The opener was allowed on silence; the callee has since spoken like a person
            # ("Hello? Is anybody there?"): the person rests on that now, so late machine
            # evidence is weighed as against any confirmed person (a late AMD vote no longer
            # overrides on its own).
            self._human_method = "transcript"
            self._human_confidence = verdict.confidence
            self._human_ms = now_ms
            self._result_reason = verdict.reason
        return []

    def _commit_human(
        self,
        method: Literal["amd", "transcript", "timeout"],
        confidence: float,
        reason: str,
        now_ms: float,
    ) -> list[Action]:
        self.state = "human"
        self._human_ms = now_ms
        self._human_confidence = confidence
        self._human_method = method
        self._result_reason = reason
        actions: list[Action] = [HumanDetected(now_ms, method, confidence, reason)]
        actions.extend(self._allow_opener(now_ms, f"human ({method})"))
        return actions

    def _allow_opener(self, now_ms: float, reason: str) -> list[Action]:
        if self._opener_ms is not None:
            return []
        self._opener_ms = now_ms
        return [AllowOpener(now_ms, reason)]

    def _commit_machine(self, verdict: Verdict, now_ms: float, *, late: bool) -> list[Action]:
        self.state = "machine"
        self._detected_ms = now_ms
        self._result_method = verdict.method
        self._result_reason = verdict.reason
        self._late = late
        self._pending_amd = None
        actions: list[Action] = [
            VoicemailDetected(
                now_ms, verdict.method, verdict.confidence, verdict.reason, self._amd_result, late
            )
        ]
        if self.voicemail_action == "hangup":
            actions.append(EndCall(now_ms))
        elif self.voicemail_action == "ignore":
            actions.extend(self._allow_opener(now_ms, "voicemail_action=ignore"))
        elif late and self._opener_ms is not None:
            actions.append(StopAgentSpeech(now_ms))
        return actions

    def _late_machine(self, verdict: Verdict, now_ms: float) -> list[Action]:
        s = self.settings
        person_cues = self.classifier.human_score() > 0  # "who is this?", "can I take..."
        # Report each detector's late evidence once, and again only when it gets stronger
        # (the transcript verdict is re-offered on every tick).
        if verdict.confidence <= self._late_reported.get(verdict.method, 0.0):
            return []
        self._late_reported[verdict.method] = verdict.confidence
        if now_ms > s.late_window_ms:
            overrides = False
        elif verdict.method == "amd":
            # A late AMD "machine" overrides a person confirmed on silence alone, or backed by
            # machine phrases; never against person cues (see _amd_machine_refuted).
            m = self.classifier.machine_score()
            overrides = self._human_method == "timeout" or (
                m >= s.late_amd_min_phrase_score and not self._amd_machine_refuted(verdict, now_ms)
            )
        elif verdict.method == "transcript":
            # After the opener the person answers the agent; "I'm not available right now,
            # call me back" must not hang up on them. Only a strong phrase ("after the tone")
            # from a callee who never sounded like a person overturns the verdict.
            # (When the opener was allowed on silence alone there is no person evidence to
            # weigh: any confident transcript verdict wins.)
            # A person confirmed on a short greeting alone ("Hi!" and a pause), then machine
            # phrases within ``late_weak_window_ms``, before any exchange could have happened:
            # the pause was inside a recorded greeting.
            # The window is measured to the verdict, or to the start of the speech that carries
            # the phrases: a callee who resumed while the opener was still starting did not
            # answer it (a greeting's phrases can take a while to add up).
            resumed = self.classifier.last_speech_start_ms
            weak_human = (
                self._human_method == "transcript"
                and not person_cues
                and self._human_ms is not None
                and (
                    now_ms - self._human_ms <= s.late_weak_window_ms
                    or (resumed is not None and resumed - self._human_ms <= s.late_weak_resume_ms)
                )
            )
            overrides = (
                self._human_method == "timeout"
                or weak_human
                or (
                    verdict.confidence >= s.late_transcript_min_confidence
                    and self._human_confidence < s.late_max_human_confidence
                    and not person_cues
                )
            )
        else:
            overrides = self._human_confidence < s.late_max_human_confidence or (not person_cues)
        late = LateMachine(now_ms, verdict.method, verdict.confidence, verdict.reason, overrides)
        if not overrides:
            self._disagreements.append(f"{now_ms:.0f}ms late {verdict.reason} ignored")
            return [late]
        actions: list[Action] = [late]
        actions.extend(self._commit_machine(verdict, now_ms, late=True))
        return actions

    def _housekeeping(self, now_ms: float) -> list[Action]:
        """Time-driven decisions: silent line → opener; leave_message → when to speak."""
        s = self.settings
        c = self.classifier
        if self.state == "listening":
            if not c.heard_speech and self._pending_amd is None and now_ms >= s.no_speech_opener_ms:
                return self._commit_human("timeout", 0.5, "nothing heard since pickup", now_ms)
            return []
        if self.state != "machine" or self.voicemail_action != "leave_message":
            return []
        if self._message_started_ms is not None:
            beep_end = self._beep_end_ms
            if (
                self._message_trigger != "beep_end"
                and beep_end is not None
                and beep_end > self._message_started_ms
                and beep_end - self._message_started_ms <= s.restart_window_ms
            ):
                self._message_started_ms = now_ms
                self._message_trigger = "beep_end"
                return [StartVoicemailMessage(now_ms, "beep_end", restart=True)]
            return []
        trigger: Literal["beep_end", "amd_end", "greeting_end", "max_wait"] | None = None
        if self._beep_end_ms is not None:
            trigger = "beep_end"
        elif self._amd_end_ms is not None and not c.speaking:
            trigger = "amd_end"
        elif c.heard_speech and not c.speaking:
            wait = s.beep_wait_ms if c.beep_promised else s.greeting_silence_ms
            if c.silence_ms(now_ms) >= wait:
                trigger = "greeting_end"
        if (
            trigger is None
            and self._detected_ms is not None
            and (now_ms - self._detected_ms >= s.max_message_wait_ms)
        ):
            trigger = "max_wait"
        if trigger is None:
            return []
        self._message_started_ms = now_ms
        self._message_trigger = trigger
        return [StartVoicemailMessage(now_ms, trigger)]
