"""Voicemail rules: AMD vote, transcript classifier, arbiter on event sequences, eval targets."""

from __future__ import annotations

import heapq
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nixflex_engine.processors.beep import BeepEvent
from nixflex_engine.processors.voicemail_rules import (
    Action,
    AllowOpener,
    ArbiterSettings,
    EndCall,
    HumanDetected,
    LateMachine,
    StartVoicemailMessage,
    StopAgentSpeech,
    TranscriptClassifier,
    Verdict,
    VoicemailAction,
    VoicemailArbiter,
    VoicemailDetected,
    amd_vote,
    find_cues,
    normalize_text,
)

# =============================================================================== helpers


@dataclass(order=True)
class _Ev:
    at_ms: float
    seq: int
    fn: Callable[[Any, float], Any] = field(compare=False)


@dataclass
class Timeline:
    """What the chain would deliver: VAD, interim/final transcripts, AMD, beeps, ticks.

    Latencies like the real chain's: VAD start +60 ms, stop +250 ms; an interim every 400 ms
    of speech (words so far) arriving 250 ms later; the final 400 ms after the speech ends.
    """

    events: list[_Ev] = field(default_factory=list)
    _seq: int = 0

    def _add(self, at_ms: float, fn: Callable[[Any, float], Any]) -> None:
        self._seq += 1
        heapq.heappush(self.events, _Ev(at_ms, self._seq, fn))

    def say(self, text: str, start_ms: float, end_ms: float) -> Timeline:
        words = text.split()
        self._add(start_ms + 60, lambda t, now: t.on_speech_started(start_ms, now_ms=now))
        at = start_ms + 400
        while at < end_ms:
            k = int(len(words) * (at - start_ms) / (end_ms - start_ms))
            if k:
                partial, heard = " ".join(words[:k]), at
                self._add(
                    at + 250,
                    lambda t, now, p=partial, h=heard: t.on_transcript(
                        p, is_final=False, start_ms=start_ms, end_ms=h, now_ms=now
                    ),
                )
            at += 400
        self._add(end_ms + 250, lambda t, now: t.on_speech_stopped(start_ms, end_ms, now_ms=now))
        self._add(
            end_ms + 400,
            lambda t, now: t.on_transcript(
                text, is_final=True, start_ms=start_ms, end_ms=end_ms, now_ms=now
            ),
        )
        return self

    def amd(self, answered_by: str, at_ms: float, duration: str | None = None) -> Timeline:
        self._add(at_ms, lambda t, now: t.on_amd(answered_by, duration, now_ms=now))
        return self

    def beep(self, start_ms: float, duration_ms: float, freq_hz: float = 1000.0) -> Timeline:
        confirmed = start_ms + 160
        end = start_ms + duration_ms
        start_ev = BeepEvent("start", start_ms, None, freq_hz, confirmed)
        end_ev = BeepEvent("end", start_ms, end, freq_hz, end + 20)
        self._add(confirmed, lambda t, now: t.on_beep(start_ev, now_ms=now))
        self._add(end + 20, lambda t, now: t.on_beep(end_ev, now_ms=now))
        return self

    def run(self, target: Any, until_ms: float) -> list[tuple[float, Any]]:
        """Play everything (and a tick every 20 ms) into ``target``; return (time, output)."""
        for t in range(0, int(until_ms) + 1, 20):
            self._add(float(t), lambda tg, now: tg.tick(now))
        out: list[tuple[float, Any]] = []
        while self.events:
            ev = heapq.heappop(self.events)
            if ev.at_ms > until_ms:
                break
            result = ev.fn(target, ev.at_ms)
            if isinstance(result, list):
                out.extend((ev.at_ms, a) for a in result)
            else:
                out.append((ev.at_ms, result))
        return out


def verdicts(text: str, start_ms: float, end_ms: float, until_ms: float) -> list[Verdict]:
    clf = TranscriptClassifier()
    return [v for _, v in Timeline().say(text, start_ms, end_ms).run(clf, until_ms)]


def first_decided(vs: list[Verdict]) -> Verdict | None:
    return next((v for v in vs if v.decided and v.confidence >= 0.75), None)


def actions_of(out: list[tuple[float, Any]], kind: type) -> list[Any]:
    return [a for _, a in out if isinstance(a, kind)]


# =============================================================================== AMD vote


@pytest.mark.parametrize(
    ("answered_by", "label", "marks_end"),
    [
        ("human", "human", False),
        ("machine_start", "machine", False),
        ("machine_end_beep", "machine", True),
        ("machine_end_silence", "machine", True),
        ("machine_end_other", "machine", True),
        ("fax", "undecided", False),
        ("unknown", "undecided", False),
        ("something_new", "undecided", False),
    ],
)
def test_amd_vote(answered_by: str, label: str, marks_end: bool) -> None:
    vote = amd_vote(answered_by, "3120", received_ms=3400.0)
    assert vote.verdict.label == label
    assert vote.marks_greeting_end is marks_end
    assert vote.verdict.method == "amd"
    assert vote.machine_detection_duration_ms == 3120.0
    assert (vote.verdict.greeting_end_ms == 3400.0) is marks_end
    assert (vote.verdict.confidence > 0) is (label != "undecided")


def test_amd_vote_tolerates_form_fields() -> None:
    assert amd_vote(" Machine_End_Beep ", None, received_ms=1).verdict.label == "machine"
    assert amd_vote("human", "not-a-number", received_ms=1).machine_detection_duration_ms is None
    assert amd_vote("human", 2500, received_ms=1).machine_detection_duration_ms == 2500.0


# ============================================================================ text cues


def test_normalize_text() -> None:
    assert normalize_text("¿Después   del TONO?") == "despues del tono ?"
    assert normalize_text("Laissez-moi un message après le bip.") == (
        "laissez moi un message apres le bip"
    )
    assert normalize_text("Grüß Gott, Straße") == "gruss gott strasse"
    assert normalize_text("you\u2019ve reached") == "you've reached"


def test_leave_a_message_only_counts_as_an_imperative() -> None:
    names = {c.name for c in find_cues("please leave a message")}
    assert "en_leave_imperative" in names
    for asked in ("do you want to leave a message?", "can you leave a message ?"):
        assert "en_leave_imperative" not in {c.name for c in find_cues(asked)}


def test_opening_cues_only_count_at_the_start() -> None:
    assert "en_open_reached" in {c.name for c in find_cues("Hi, you've reached Tom Becker")}
    late = "Thank you for calling Acme Dental, you've reached the front desk"
    assert "en_open_reached" not in {c.name for c in find_cues(late)}


# ===================================================================== classifier: people

PEOPLE = {
    "en": [
        "He's not available right now, can I take a message?",
        "She's not available at the moment. Do you want to leave a message?",
        "hello? who is this?",
        "Yeah, hello.",
        "Hi this is Sarah speaking.",
        "Sorry, he can't come to the phone right now, he's in a meeting. "
        "Can I tell him who called?",
        "Oh, you left me a voicemail yesterday, right?",
        "Hello, I'm not available for surveys, sorry, who's calling?",
        "Good morning, Harbor Insurance, this is Laura, how can I help you?",
        # The first-person phone phrases ("I can't take your call") decide alone; said of
        # someone else, or offered as a question, they do not.
        "He can't take your call right now, he's driving. Who's calling?",
        "She's not here. Do you want to leave your info?",
    ],
    "es": [
        "No está en este momento, ¿quiere dejarle un mensaje?",
        "Ahora no está disponible, ¿le puedo tomar un recado?",
        "¿Bueno?",
        "Hola, ¿quién habla?",
        "Oye, acabo de ver que me dejaste un mensaje en el buzón, ¿qué pasó?",
    ],
    "fr": [
        "Il n'est pas disponible pour le moment, vous voulez laisser un message ?",
        "Elle n'est pas là, je peux prendre un message ?",
        "Allô ?",
        "Ah, vous m'avez laissé un message sur mon répondeur hier, c'est pour quoi ?",
        "Il ne peut pas vous répondre pour l'instant, c'est de la part de qui ?",
        "Allô ? Qui est-ce ?",
    ],
    "de": [
        "Sie ist im Moment nicht erreichbar, möchten Sie eine Nachricht hinterlassen?",
        "Er ist gerade nicht da, kann ich was ausrichten?",
        "Müller.",
        "Hallo, wer ist da?",
        "Er kann gerade nicht ans Telefon, wer spricht da?",
    ],
    "pt": [
        "Ele não está no momento, quer deixar recado?",
        "Ela não pode atender agora, posso anotar o recado?",
        "Alô?",
        "Oi, vi que você deixou um recado na minha caixa postal, do que se trata?",
    ],
    "it": [
        "Non c'è in questo momento, vuole lasciare un messaggio?",
        "Adesso non è disponibile, posso prendere un messaggio?",
        "Pronto?",
        "Ho visto che mi ha lasciato un messaggio in segreteria, di cosa si tratta?",
        "Non può rispondere adesso, chi parla?",
    ],
}


def _duration_ms(text: str) -> float:
    return 200 + 300 * len(text.split())


@pytest.mark.parametrize(
    "text", [t for texts in PEOPLE.values() for t in texts], ids=lambda t: t[:40]
)
def test_people_are_never_machines_and_are_confirmed_once_they_wait(text: str) -> None:
    end = 500 + _duration_ms(text)
    vs = verdicts(text, 500, end, end + 3000)
    assert all(v.label != "machine" for v in vs), [v.reason for v in vs if v.label == "machine"]
    first = first_decided(vs)
    assert first is not None and first.label == "human"
    assert first.at_ms <= end + 1400, first


MACHINES = {
    "en": [
        "Hi, you've reached Tom Becker. I can't take your call right now, please leave a message "
        "after the beep.",
        "The person you are calling is not available. Please leave a message after the tone.",
        "Hey, this is Mike. I'm away from my desk, leave me a message and I'll call you back.",
        "Your call has been forwarded to an automated voice messaging system.",
    ],
    "es": [
        "Hola, has llamado a María. Ahora no puedo atenderte, deja tu mensaje después del tono.",
        "El número que usted marcó no está disponible. "
        "Por favor, deje su mensaje después del tono.",
    ],
    "fr": [
        "Bonjour, vous êtes bien sur la messagerie de Claire Moreau. Laissez-moi un message après "
        "le bip sonore.",
        "Votre correspondant n'est pas disponible pour le moment. Veuillez laisser un message.",
    ],
    "de": [
        "Hallo, hier ist der Anschluss von Anna Müller. Bitte hinterlassen Sie eine Nachricht nach "
        "dem Signalton.",
        "Der gewünschte Gesprächspartner ist zurzeit nicht erreichbar.",
    ],
    "pt": [
        "Olá, você ligou para João. No momento não posso atender, deixe sua mensagem após o sinal.",
        "A pessoa para quem você ligou não está disponível.",
    ],
    "it": [
        "Ciao, sono Luca, in questo momento non posso rispondere, lasciate un messaggio dopo il "
        "segnale acustico.",
        "Il cliente da lei chiamato non è al momento raggiungibile.",
    ],
}


@pytest.mark.parametrize(
    "text", [t for texts in MACHINES.values() for t in texts], ids=lambda t: t[:40]
)
def test_greetings_are_machines_before_they_end(text: str) -> None:
    end = 600 + _duration_ms(text)
    vs = verdicts(text, 600, end, end + 2000)
    first = first_decided(vs)
    assert first is not None and first.label == "machine", [v.reason for v in vs[-3:]]
    assert first.at_ms <= end + 600


#: "I can't take your call" (first person, about the phone) is a machine on its own: the
#: verdict comes with the first interim transcript that holds it (the phrase's last word is
#: given), not once more phrases or the greeting's end add up.
PHONE_PHRASE_GREETINGS = [
    (
        "Hello, this is Laura Kim. I'm unable to answer your call at the moment. Please leave "
        "a detailed message including your phone number.",
        "call",
    ),
    ("Hi, sorry we can't come to the phone right now. Leave a message, thanks.", "phone"),
    (
        "Bonjour, c'est Sophie, je ne peux pas répondre pour l'instant, laissez-moi un petit "
        "message et je vous rappelle.",
        "répondre",
    ),
    (
        "Hallo, Felix hier. Ich kann gerade nicht ans Telefon gehen. Ich rufe zurück, sobald "
        "ich kann.",
        "Telefon",
    ),
    ("Ciao, sono Marco, adesso non posso rispondere, a dopo.", "rispondere,"),
]


@pytest.mark.parametrize(("text", "last_word"), PHONE_PHRASE_GREETINGS, ids=lambda t: t[:30])
def test_a_first_person_phone_phrase_decides_as_soon_as_it_is_heard(
    text: str, last_word: str
) -> None:
    start = 600
    end = start + _duration_ms(text)
    words = text.split()
    said_ms = start + (words.index(last_word) + 1) * (end - start) / len(words)
    vs = verdicts(text, start, end, end + 2000)
    first = first_decided(vs)
    assert first is not None and first.label == "machine", [v.reason for v in vs[-3:]]
    # The next interim after the word was said (every 400 ms, arriving 250 ms later).
    assert first.at_ms <= said_ms + 400 + 250 + 20, (first.at_ms, said_ms, first.reason)


def test_phone_phrases_of_someone_else_are_not_machine_cues() -> None:
    for text in (
        "He can't take your call right now",
        "Il ne peut pas vous répondre",
        "Er kann gerade nicht ans Telefon",
        "Non può rispondere adesso",
    ):
        assert not [c for c in find_cues(text) if c.weight > 0], text
    for text in ("I'm unable to answer your call", "we're not able to take your call"):
        assert "en_cant_take_call" in {c.name for c in find_cues(text)}, text


def test_leave_your_info_is_an_imperative_and_a_question_is_not() -> None:
    assert "en_leave_imperative" in {c.name for c in find_cues("so leave your info")}
    assert "en_leave_imperative" not in {
        c.name for c in find_cues("Do you want to leave your info?")
    }


@pytest.mark.parametrize(
    "text",
    [
        "Sorry, the voice mailbox you are trying to reach is full. Goodbye.",
        "Die Rufnummer ist zurzeit nicht erreichbar.",
        "Il numero da lei chiamato non è al momento disponibile.",
    ],
    ids=lambda t: t[:40],
)
def test_carrier_prompts_are_strong_phrases(text: str) -> None:
    end = 600 + _duration_ms(text)
    first = first_decided(verdicts(text, 600, end, end + 2000))
    assert first is not None and first.label == "machine"
    assert first.confidence >= 0.9 and first.at_ms < end, first


def test_short_machine_greeting_is_a_machine_once_it_ends() -> None:
    vs = verdicts("Hi, it's Tom, leave a message.", 500, 2100, 4000)
    first = first_decided(vs)
    assert first is not None and first.label == "machine"
    assert 2100 < first.at_ms <= 2100 + 900


def test_hello_then_silence_is_human_within_a_second() -> None:
    vs = verdicts("Hello?", 400, 900, 3000)
    first = first_decided(vs)
    assert first is not None and first.label == "human"
    # Not before the person could have paused, and well within the 1 s opener target.
    assert 900 + 450 <= first.at_ms <= 900 + 800


def test_a_pause_inside_a_greeting_does_not_confirm_a_person() -> None:
    clf = TranscriptClassifier()
    out = (
        Timeline()
        .say("Hi!", 400, 750)
        .say("You've reached the Becker family, leave us a message.", 1150, 4000)
        .run(clf, 5000)
    )
    first = first_decided([v for _, v in out])
    assert first is not None and first.label == "machine"


GREETING_WORDS = ["hello", "hi", "yes", "yeah", "hallo", "allô", "hola", "pronto", "alô", "bueno"]


@settings(max_examples=60, deadline=None)
@given(
    words=st.lists(st.sampled_from(GREETING_WORDS), min_size=1, max_size=3),
    question=st.booleans(),
    start_ms=st.integers(min_value=100, max_value=2000),
    duration_ms=st.integers(min_value=250, max_value=1200),
)
def test_any_short_live_greeting_then_silence_gets_the_opener_fast(
    words: list[str], question: bool, start_ms: int, duration_ms: int
) -> None:
    text = " ".join(words) + ("?" if question else "")
    arb = VoicemailArbiter()
    end = start_ms + duration_ms
    out = Timeline().say(text, start_ms, end).run(arb, end + 2500)
    assert not actions_of(out, VoicemailDetected)
    (opener,) = actions_of(out, AllowOpener)
    assert opener.at_ms - end <= 800


@settings(max_examples=80, deadline=None)
@given(text=st.text(max_size=120), is_final=st.booleans(), now=st.floats(0, 60000))
def test_classifier_accepts_any_text(text: str, is_final: bool, now: float) -> None:
    clf = TranscriptClassifier()
    v = clf.on_transcript(text, is_final=is_final, start_ms=0.0, end_ms=now, now_ms=now)
    v = clf.tick(now + 5000)
    assert v.label in ("machine", "human", "undecided")
    assert 0.0 <= v.confidence <= 1.0
    assert (v.confidence == 0.0) is (v.label == "undecided")


# ============================================================================== arbiter


def run(
    tl: Timeline, until_ms: float, action: VoicemailAction = "hangup"
) -> tuple[VoicemailArbiter, list[tuple[float, Action]]]:
    arb = VoicemailArbiter(voicemail_action=action)
    return arb, tl.run(arb, until_ms)


def test_amd_first_decides_and_hangs_up() -> None:
    # A mailbox with no greeting: Twilio hears the beep and reports before our opener timer.
    arb, out = run(Timeline().amd("machine_end_beep", 2200, "2000"), 4000)
    (det,) = actions_of(out, VoicemailDetected)
    assert (det.method, det.amd_result, det.at_ms, det.late) == (
        "amd",
        "machine_end_beep",
        2200,
        False,
    )
    assert actions_of(out, EndCall) == [EndCall(2200)]
    r = arb.result()
    assert (r.voicemail_detected, r.method, r.amd_result, r.detected_ms) == (
        True,
        "amd",
        "machine_end_beep",
        2200,
    )


def test_transcript_first_wins_and_amd_is_still_recorded() -> None:
    tl = Timeline().say("The person you are calling is not available.", 500, 3000)
    tl.amd("machine_end_beep", 7000)
    arb, out = run(tl, 8000, action="ignore")
    (det,) = actions_of(out, VoicemailDetected)
    assert det.method == "transcript" and det.at_ms < 3000
    assert actions_of(out, AllowOpener)  # ignore: carry on as if a person answered
    assert not actions_of(out, EndCall)
    r = arb.result()
    assert (r.method, r.amd_result, r.detected_ms) == ("transcript", "machine_end_beep", det.at_ms)


def test_beep_first_decides() -> None:
    arb, out = run(Timeline().beep(900, 500), 3000)
    (det,) = actions_of(out, VoicemailDetected)
    assert det.method == "beep" and det.at_ms == 1060
    assert arb.result().method == "beep"


def test_human_confirmed_by_transcript_then_amd_human_changes_nothing() -> None:
    tl = Timeline().say("Hello?", 400, 900).amd("human", 2300)
    arb, out = run(tl, 4000)
    (human,) = actions_of(out, HumanDetected)
    assert human.method == "transcript" and human.at_ms <= 900 + 800
    assert len(actions_of(out, AllowOpener)) == 1
    r = arb.result()
    assert r.voicemail_detected is False and r.amd_result == "human"
    assert r.opener_allowed_ms == human.at_ms


def test_disagreement_amd_machine_on_a_long_live_answer_waits_for_the_transcript() -> None:
    text = "Yeah hi, I was just heading out the door with the kids, what is it"
    tl = Timeline().say(text, 500, 3700).amd("machine_end_silence", 4300)
    arb, out = run(tl, 8000)
    assert not actions_of(out, VoicemailDetected)
    (human,) = actions_of(out, HumanDetected)
    assert human.method == "transcript"
    r = arb.result()
    assert r.voicemail_detected is False and r.amd_result == "machine_end_silence"
    assert r.disagreements and "amd:machine_end_silence" in r.disagreements[0]


def test_amd_machine_backed_by_machine_phrases_is_taken_at_once() -> None:
    tl = Timeline().say("Sorry I missed your call", 500, 2000).amd("machine_end_silence", 3400)
    _, out = run(tl, 3400)
    (det,) = actions_of(out, VoicemailDetected)
    assert det.at_ms <= 3400


def test_amd_machine_is_taken_after_the_hold_if_the_transcript_stays_undecided() -> None:
    # A monologue with no phrase cue at all and no pause: the transcript never decides.
    text = " ".join(["la"] * 40)
    tl = Timeline().say(text, 300, 12000).amd("machine_end_other", 5000)
    _, out = run(tl, 8000)
    (det,) = actions_of(out, VoicemailDetected)
    assert det.method == "amd"
    assert det.at_ms == pytest.approx(5000 + ArbiterSettings().amd_hold_ms, abs=20)


# Twilio's AMD calls any long live answer a machine (machine_end_silence once the callee stops):
# a person who answers with their company and a question, or who mentions their voicemail and
# asks back, must stay a person whatever AMD says, in every language, whether AMD comes while
# the arbiter listens or after the person was confirmed.
_PEOPLE_AMD_SAYS_MACHINE = [
    ("You've reached the front desk at Acme Dental, this is Sam,", "how can I help?"),
    ("you've reached the front desk at acme dental this is sam", "how can help"),  # STT drop
    ("Ha llamado a Ferretería López, le atiende Marta,", "¿en qué puedo ayudarle?"),
    ("Vous êtes bien à l'accueil du Garage Martin, je suis Paul,", "en quoi puis-je vous aider ?"),
    (
        "Sie sind verbunden mit der Zentrale von Kanzlei Roth, mein Name ist Eva,",
        "was kann ich für Sie tun?",
    ),
    ("Você ligou para a Padaria Central, aqui é Ana,", "posso ajudar?"),
    ("Ha chiamato Studio Bianchi, risponde Paolo,", "in cosa posso aiutarla?"),
    ("Oi, eu vi que caiu na caixa postal quando você ligou,", "era você?"),
    ("hola vi que me dejó un mensaje en el buzón de voz", "de qué se trata"),
]


@pytest.mark.parametrize(("first", "second"), _PEOPLE_AMD_SAYS_MACHINE)
@pytest.mark.parametrize("amd_after_ms", [900, 1300, 2500, 4000])
def test_people_stay_people_when_amd_says_machine(
    first: str, second: str, amd_after_ms: float
) -> None:
    # A first sentence of ~3.5 s, a short breath, a question, then the callee waits.
    tl = Timeline().say(first, 700, 4300).say(second, 4700, 5700)
    tl.amd("machine_end_silence", 5700 + amd_after_ms)
    arb, out = run(tl, 12000)
    assert not actions_of(out, VoicemailDetected), arb.result()
    assert arb.state != "machine"


def test_a_dropped_amd_machine_vote_is_recorded_as_a_disagreement() -> None:
    # One medium phrase ("caixa postal") and a question: AMD's machine_end_silence decides
    # nothing; it is kept in the record.
    tl = Timeline().say("Oi, eu vi que caiu na caixa postal quando você ligou,", 700, 4300)
    tl.say("era você?", 4700, 5700).amd("machine_end_silence", 7000)
    arb, out = run(tl, 12000)
    assert not actions_of(out, VoicemailDetected)
    r = arb.result()
    assert r.amd_result == "machine_end_silence" and r.voicemail_detected is not True
    assert any("amd:machine_end_silence" in d for d in r.disagreements)


@pytest.mark.parametrize(
    ("pieces", "beep"),
    [
        # An opening formula and a name, then the tone: AMD machine_end_beep and a beep.
        ([("Hi, you've reached Dana", 600, 1900)], True),
        # A long greeting with strong phrases, no tone.
        (
            [
                ("Hello, you have reached the voicemail of Dana Reyes.", 600, 3600),
                ("Please leave a message after the tone.", 3900, 6000),
            ],
            False,
        ),
        # Several sentences, a single medium phrase, no question, no tone: AMD corroborates.
        (
            [
                ("Hallo, Sie sind bei Thomas Wagner.", 500, 2400),
                ("Ich bin gerade nicht zu Hause.", 2900, 4700),
                ("Bitte sprechen Sie eine Nachricht auf.", 5400, 7400),
            ],
            False,
        ),
        # An opening formula and a company, no question, no tone: AMD corroborates.
        ([("Ha chiamato la Ferramenta Rossi.", 500, 2400)], False),
    ],
)
def test_machines_stay_machines_with_amd(
    pieces: list[tuple[str, float, float]], beep: bool
) -> None:
    tl = Timeline()
    for text, start, end in pieces:
        tl.say(text, start, end)
    last = pieces[-1][2]
    if beep:
        tl.beep(last + 400, 400).amd("machine_end_beep", last + 1000)
    else:
        tl.amd("machine_end_silence", last + 1500)
    arb, out = run(tl, last + 6000)
    assert actions_of(out, VoicemailDetected), arb.result()
    assert arb.state == "machine"


def test_late_amd_machine_after_a_confirmed_person_is_reported_not_obeyed() -> None:
    tl = Timeline().say("Hello?", 400, 900).amd("machine_end_silence", 3000)
    arb, out = run(tl, 5000)
    (late,) = actions_of(out, LateMachine)
    assert (late.method, late.overrides, late.at_ms) == ("amd", False, 3000)
    assert not actions_of(out, VoicemailDetected)
    assert arb.state == "human" and arb.result().voicemail_detected is False


def test_late_amd_machine_after_silence_overrides() -> None:
    # Nothing said: the opener is allowed on silence; AMD then finds the mailbox's beep.
    tl = Timeline().amd("machine_end_beep", 5200)
    arb, out = run(tl, 6000)
    (human,) = actions_of(out, HumanDetected)
    assert human.method == "timeout" and human.at_ms == ArbiterSettings().no_speech_opener_ms
    (late,) = actions_of(out, LateMachine)
    assert late.overrides
    (det,) = actions_of(out, VoicemailDetected)
    assert det.late and det.method == "amd"
    assert actions_of(out, EndCall) == [EndCall(5200)]
    assert arb.result().late is True


def test_late_beep_with_leave_message_stops_the_opener_and_waits_for_the_beep_end() -> None:
    # A short recorded greeting looks like a person saying their name, then the beep comes.
    tl = Timeline().say("Hi, this is Tom.", 400, 1400).beep(2200, 500)
    _, out = run(tl, 4000, action="leave_message")
    kinds = [type(a).__name__ for _, a in out if not isinstance(a, Verdict)]
    assert kinds == [
        "HumanDetected",
        "AllowOpener",
        "LateMachine",
        "VoicemailDetected",
        "StopAgentSpeech",
        "StartVoicemailMessage",
    ]
    (start,) = actions_of(out, StartVoicemailMessage)
    assert start.trigger == "beep_end" and start.at_ms == 2720 and not start.restart
    (stop,) = actions_of(out, StopAgentSpeech)
    assert stop.at_ms == 2360


@pytest.mark.parametrize("answered_by", ["unknown", "fax"])
def test_unknown_and_fax_decide_nothing(answered_by: str) -> None:
    arb = VoicemailArbiter()
    assert arb.on_amd(answered_by, "5000", now_ms=1800) == []
    assert arb.state == "listening"
    assert arb.result().amd_result == answered_by
    assert arb.result().voicemail_detected is None


def test_silence_lets_the_agent_speak_first() -> None:
    arb, out = run(Timeline(), 3000)
    (opener,) = actions_of(out, AllowOpener)
    assert opener.at_ms == ArbiterSettings().no_speech_opener_ms
    assert arb.result().voicemail_detected is False


def test_leave_message_waits_for_the_beep_to_end() -> None:
    tl = Timeline().say("The person you are calling is not available.", 500, 3000)
    tl.beep(3600, 800)
    _, out = run(tl, 6000, action="leave_message")
    assert not actions_of(out, EndCall)
    (start,) = actions_of(out, StartVoicemailMessage)
    assert start.trigger == "beep_end" and start.at_ms == 3600 + 800 + 20


def test_leave_message_without_a_beep_starts_after_the_greeting_ends() -> None:
    s = ArbiterSettings()
    tl = Timeline().say("Hi, you've reached Sarah, I'll call you back.", 500, 3200)
    _, out = run(tl, 8000, action="leave_message")
    (start,) = actions_of(out, StartVoicemailMessage)
    assert start.trigger == "greeting_end"
    assert start.at_ms == pytest.approx(3200 + s.greeting_silence_ms, abs=20)


def test_leave_message_waits_longer_when_a_tone_was_promised_then_restarts_on_it() -> None:
    s = ArbiterSettings()
    tl = Timeline().say("The person you are calling is not available after the tone", 500, 3500)
    tl.beep(3500 + s.beep_wait_ms + 600, 400)  # a very late beep
    _, out = run(tl, 10000, action="leave_message")
    first, again = actions_of(out, StartVoicemailMessage)
    assert first.trigger == "greeting_end"
    assert first.at_ms == pytest.approx(3500 + s.beep_wait_ms, abs=20)
    assert again.restart and again.trigger == "beep_end"


def test_leave_message_starts_when_amd_saw_the_greeting_end() -> None:
    tl = Timeline().say("Sorry I missed your call", 500, 2000)
    tl.amd("machine_end_silence", 2600)
    _, out = run(tl, 3000, action="leave_message")
    triggers = [a.trigger for a in actions_of(out, StartVoicemailMessage)]
    assert triggers == ["amd_end"]


def test_leave_message_gives_up_waiting() -> None:
    s = ArbiterSettings(max_message_wait_ms=4000)
    arb = VoicemailArbiter(voicemail_action="leave_message", settings=s)
    text = " ".join(["mailbox of"] + ["la"] * 60)  # a greeting that never ends
    out = Timeline().say(text, 300, 30000).run(arb, 12000)
    (det,) = actions_of(out, VoicemailDetected)
    (start,) = actions_of(out, StartVoicemailMessage)
    assert start.trigger == "max_wait" and start.at_ms == pytest.approx(det.at_ms + 4000, abs=20)


def test_machine_evidence_after_the_late_window_is_only_logged() -> None:
    arb = VoicemailArbiter()
    Timeline().say("Hello?", 400, 900).run(arb, 2000)
    assert arb.state == "human"
    out = arb.on_beep(BeepEvent("start", 40000, None, 1000, 40160), now_ms=40160)
    assert [type(a) for a in out] == [LateMachine]
    assert not out[0].overrides  # type: ignore[union-attr]
    assert arb.state == "human"


# ========================================================================= the eval set


def _load_eval() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "voicemail_eval.py"
    spec = importlib.util.spec_from_file_location("voicemail_eval", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["voicemail_eval"] = module
    spec.loader.exec_module(module)
    return module


def test_eval_set_is_labelled_and_varied() -> None:
    ve = _load_eval()
    cases = ve.load_cases()
    assert len(cases) >= 150
    assert {c["language"] for c in cases} >= {"en", "es", "fr", "de", "pt", "it"}
    assert {c["label"] for c in cases} == {"human", "machine"}
    assert {c["split"] for c in cases} == {
        "dev",
        "heldout",
        "heldout2",
        "heldout3",
        "heldout4",
        "heldout5",
        "heldout6",
        "heldout7",
    }
    assert len({c["id"] for c in cases}) == len(cases)
    amd = [e for c in cases for e in c["events"] if e["type"] == "amd"]
    assert len(amd) == len(cases)
    wrong = sum(
        (e["answered_by"].startswith("machine")) != (c["label"] == "machine")
        for c in cases
        for e in c["events"]
        if e["type"] == "amd"
    )
    assert wrong >= 0.05 * len(cases)  # AMD is not an oracle in this set


@pytest.mark.parametrize(
    ("split", "min_accuracy", "max_false_machine_rate", "max_machine_median_ms"),
    [
        # heldout7 is the blind split (written at the start of the round on heldout6's
        # errors, before any change; its totals seen once, after it): 97.4%, 0/64 people
        # classed as machines, 3/52 machines missed, 4.21 s. The people target (<= 1%) is met
        # on blind data and asserted as the target; accuracy and median at the level reached.
        ("heldout7", 0.97, 0.01, 4250),
        # heldout6 was the blind split until the round on heldout6's errors, which traced them
        # (91.2%, 2/64 people as machines, 8/50 missed before it; 98.2%, 0/64, 2/50 after:
        # the 2 left are a silent mailbox; median 3.88 s -> 3.85 s).
        ("heldout6", 0.98, 0.01, 3900),
        # heldout5 was the blind split until the round on the arbiter's use of AMD, which
        # looked at its errors (79.2%, 13/76 people as machines before it; 96.2%, 0/76 after,
        # 5/54 machines missed: 4 silent mailboxes, 1 "mailbox full" prompt). Its median from
        # 4.75 s to 4.86 s (phone menus now decide from the transcript, later than AMD alone).
        ("heldout5", 0.96, 0.01, 4900),
        # heldout4 was the blind split until the round on keeping people safe, which looked
        # at its errors (6/66 people as machines before it, 0/66 after; 95.2%; the 6 missed
        # machines are 4 silent mailboxes and 2 greetings without a machine phrase). Its
        # machine-verdict median went from 3.83 s to 4.46 s: an opening formula alone ("you've
        # reached...") no longer decides while the callee talks, as live staff say it too.
        ("heldout4", 0.95, 0.01, 4500),
        # heldout3 was blind until the round before (96.9%: the 4 misses are silent
        # mailboxes, which a silent person matches exactly); 3.55 s -> 3.77 s.
        ("heldout3", 0.96, 0.01, 3800),
        # heldout2 stopped being blind two rounds earlier (100%); 3.30 s -> 4.80 s (business
        # greetings opening "You have reached the offices of..." wait for a second phrase or
        # their end).
        ("heldout2", 0.98, 0.01, 4850),
    ],
)
def test_combined_detection_on_the_held_out_splits(
    split: str, min_accuracy: float, max_false_machine_rate: float, max_machine_median_ms: float
) -> None:
    """What the arbiter achieves on the held-out splits.

    Issue targets that are met are asserted as targets (no more than 1% of people classed as
    machines where that holds, the opener within 1 s of a short greeting). Those not met are
    asserted at what is achieved, so that a regression still fails: accuracy (blind heldout7:
    97.4% against 98%) and the machine-verdict median (~3.8-4.9 s against 2.5 s). The
    benchmark reports every split.
    """
    ve = _load_eval()
    cases = [c for c in ve.load_cases() if c["split"] == split]
    rep = ve.evaluate(cases, leave_message=False)
    s = rep.scores[split]["combined"].summary()
    assert s["false_machine_rate"] <= max_false_machine_rate + 1e-9, s
    opener_max = s["opener_after_short_greeting_max_ms"]
    # heldout7's people all give long answers or first stay silent (the opener then comes on
    # the silence, before they speak): no short "Hello?" opener is measured there.
    if split != "heldout7":
        assert opener_max is not None, s
    assert opener_max is None or opener_max <= 1000, s
    assert s["accuracy"] >= min_accuracy, s
    assert s["machine_verdict_median_ms"] <= max_machine_median_ms, s
    # Combined beats every detector alone.
    for alone in ("transcript", "beep", "amd"):
        assert s["accuracy"] > rep.scores[split][alone].summary()["accuracy"]


def test_a_person_replying_with_machine_like_words_after_the_opener_is_not_hung_up_on() -> None:
    tl = Timeline().say("Hello?", 400, 900)
    # The agent speaks its opener; the person answers it.
    tl.say(
        "Sorry, I'm not available right now, leave me a message and I'll call you back", 4000, 8000
    )
    arb, out = run(tl, 11000)
    assert arb.state == "human"
    assert not actions_of(out, VoicemailDetected)
    assert all(not late.overrides for late in actions_of(out, LateMachine))


def test_a_person_saying_i_cant_take_your_call_after_the_opener_is_not_hung_up_on() -> None:
    # "I can't take your call" now decides a greeting alone (weight 2.5), but said to the
    # opener by a person already confirmed it is weaker than a strong phrase: only logged.
    tl = Timeline().say("Hello?", 400, 900)
    tl.say("Oh sorry, I can't take your call right now, I'm at the doctor's", 4000, 7000)
    arb, out = run(tl, 10000)
    assert arb.state == "human"
    assert not actions_of(out, VoicemailDetected)
    assert all(not late.overrides for late in actions_of(out, LateMachine))


def test_a_strong_phrase_after_a_short_greeting_overrides() -> None:
    # "Hi, this is Tom." sounded like a person; the recording goes on with "after the tone".
    # It goes on only after the quick-correction window, so only the strong phrase counts.
    tl = Timeline().say("Hi, this is Tom.", 400, 1300)
    tl.say("Please leave a message after the tone", 4700, 6900)
    arb, out = run(tl, 8500)
    lates = actions_of(out, LateMachine)
    # Weaker evidence first ("leave a message": logged), then the strong phrase overrides.
    assert [late.overrides for late in lates] == [False] * (len(lates) - 1) + [True]
    assert lates[-1].method == "transcript" and lates[-1].confidence >= 0.9
    assert arb.result().late is True


def test_a_greeting_that_starts_after_the_silence_opener_is_still_caught() -> None:
    # A slow mailbox: nothing for 3 s (the agent already started), then the greeting.
    tl = Timeline().say("Hi, you've reached Laura, I'll call you back", 3000, 5600)
    arb, out = run(tl, 7000, action="leave_message")
    (human,) = actions_of(out, HumanDetected)
    assert human.method == "timeout"
    (late,) = [a for a in actions_of(out, LateMachine) if a.overrides]
    assert late.method == "transcript"
    assert actions_of(out, StopAgentSpeech)
    assert arb.result().voicemail_detected is True and arb.result().late


def test_a_long_pause_inside_a_greeting_is_corrected_quickly_without_a_beep() -> None:
    tl = (
        Timeline()
        .say("Hi!", 400, 750)
        .say("You've reached the Becker family, leave us a message", 1500, 4300)
    )
    arb, out = run(tl, 7000)
    (human,) = actions_of(out, HumanDetected)  # the 750 ms pause looked like a person waiting
    overriding = [a for a in actions_of(out, LateMachine) if a.overrides]
    assert len(overriding) == 1 and overriding[0].method == "transcript"
    # "You've reached..." alone no longer decides while the callee talks (live staff say it
    # too), so the verdict waits for the second phrase: it comes with the greeting's final
    # transcript, 3.4 s after the person was confirmed. It still overrides because the speech
    # carrying it resumed 200 ms after that, over the opener's first words.
    s = ArbiterSettings()
    assert overriding[0].at_ms <= 4300 + 400
    assert 1500 - human.at_ms <= s.late_weak_resume_ms
    assert arb.result().voicemail_detected is True


def test_a_tone_after_a_clear_person_is_logged_not_obeyed() -> None:
    # A person asked who is calling; some tone on their line later must not hang up on them.
    tl = Timeline().say("Hello, who is this?", 400, 1500).beep(4000, 300)
    arb, out = run(tl, 5000)
    (human,) = actions_of(out, HumanDetected)
    assert human.confidence >= 0.9
    (late,) = actions_of(out, LateMachine)
    assert late.method == "beep" and not late.overrides
    assert arb.state == "human"


_EVENT = st.one_of(
    st.tuples(
        st.just("say"),
        st.sampled_from(
            [t for ts in PEOPLE.values() for t in ts][:8]
            + [t for ts in MACHINES.values() for t in ts][:6]
        ),
    ),
    st.tuples(
        st.just("amd"),
        st.sampled_from(
            [
                "human",
                "machine_start",
                "machine_end_beep",
                "machine_end_silence",
                "machine_end_other",
                "fax",
                "unknown",
            ]
        ),
    ),
    st.tuples(st.just("beep"), st.integers(min_value=150, max_value=1200)),
)


@settings(max_examples=40, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.integers(min_value=0, max_value=20000), _EVENT), min_size=0, max_size=5
    ),
    action=st.sampled_from(["hangup", "leave_message", "ignore"]),
)
def test_arbiter_invariants_on_random_sequences(
    events: list[tuple[int, tuple[str, Any]]], action: VoicemailAction
) -> None:
    tl = Timeline()
    for at, (kind, arg) in events:
        if kind == "say":
            tl.say(arg, at, at + _duration_ms(arg))
        elif kind == "amd":
            tl.amd(arg, at)
        else:
            tl.beep(at, arg)
    arb, out = run(tl, 30000, action=action)
    acts = [a for _, a in out if not isinstance(a, Verdict)]
    detected = [a for a in acts if isinstance(a, VoicemailDetected)]
    assert len(detected) <= 1
    assert len([a for a in acts if isinstance(a, AllowOpener)]) <= 1
    assert len([a for a in acts if isinstance(a, HumanDetected)]) <= 1
    ends = [a for a in acts if isinstance(a, EndCall)]
    starts = [a for a in acts if isinstance(a, StartVoicemailMessage)]
    if action == "hangup":
        assert len(ends) == len(detected) and not starts
    else:
        assert not ends
    if action != "leave_message":
        assert not starts
    elif starts:
        assert detected and starts[0].at_ms >= detected[0].at_ms
        assert not starts[0].restart and all(s.restart for s in starts[1:])
    if detected:
        assert acts.index(detected[0]) < min(
            (acts.index(a) for a in ends + starts), default=len(acts)
        )
        r = arb.result()
        assert r.voicemail_detected is True and r.detected_ms == detected[0].at_ms
        assert r.method == detected[0].method
    for late in (a for a in acts if isinstance(a, LateMachine)):
        assert any(isinstance(a, HumanDetected) for a in acts[: acts.index(late)])
    assert all(isinstance(a, Action) for a in acts)


# ======================================= carrier prompts that send the caller away; people


@pytest.mark.parametrize(
    "text",
    [
        # "the line is not reachable, try again later": third person + a polite send-off
        "Der Anschluss ist zurzeit nicht erreichbar. Bitte versuchen Sie es später erneut.",
        "Il numero della persona chiamata risulta spento. La preghiamo di riprovare più tardi.",
        "Ce numéro est hors service. Merci de renouveler votre appel ultérieurement.",
        "O número não está disponível. Tente novamente mais tarde.",
    ],
    ids=lambda t: t[:30],
)
def test_a_carrier_prompt_with_no_mailbox_is_a_machine_even_after_a_late_amd(text: str) -> None:
    # No beep, no "leave a message": the prompt ends and the line goes quiet, as a person's
    # long answer would; AMD's machine_end_silence comes well after.
    end = 700 + _duration_ms(text)
    tl = Timeline().say(text, 700, end).amd("machine_end_silence", end + 1600)
    arb, out = run(tl, end + 3000)
    assert arb.state == "machine", arb.result()
    assert not actions_of(out, HumanDetected)


@pytest.mark.parametrize(
    "text",
    [
        # A person asking for a call later, or telling us to try later, is not a carrier.
        "Können Sie es später noch einmal versuchen? Er ist gerade beim Arzt.",
        "Non c'è, è uscita, riprovi più tardi.",
        "Il n'est pas là, essayez plus tard.",
        "Ela saiu, ligue mais tarde.",
        "Sein Handy ist ausgeschaltet, wer spricht denn da?",
    ],
    ids=lambda t: t[:30],
)
def test_a_person_sending_us_away_stays_a_person_even_with_a_late_amd_machine(text: str) -> None:
    end = 500 + _duration_ms(text)
    tl = Timeline().say(text, 500, end).amd("machine_end_silence", end + 1500)
    arb, out = run(tl, end + 4000)
    assert arb.state == "human", arb.result()
    assert not actions_of(out, VoicemailDetected)


@pytest.mark.parametrize(
    "text",
    [
        # said live, with no question back: "leave a message" after "can" is an offer
        "She's at lunch, but you can leave a message with me.",
        # a receptionist transferring, then silence while the call is put through
        "Good afternoon, Harbor Insurance, one moment please, I'll transfer you.",
        "Kanzlei Fischer, einen Moment bitte, ich verbinde Sie.",
        "Agenzia Sole, attenda in linea, gliela passo.",
    ],
    ids=lambda t: t[:30],
)
def test_people_who_offer_a_message_or_transfer_stay_people(text: str) -> None:
    # The worst case: AMD calls the long live answer a machine after they stopped.
    end = 500 + _duration_ms(text)
    tl = Timeline().say(text, 500, end).amd("machine_end_silence", end + 1400)
    arb, out = run(tl, end + 6000)
    assert arb.state == "human", arb.result()
    assert not actions_of(out, VoicemailDetected)


def test_a_long_live_answer_then_a_dtmf_key_is_not_a_beep() -> None:
    """A person answers at length, then presses a key: the tone pair must not hang up on them.

    The audio goes through the real beep detector (mu-law like Twilio's) and only what it
    reports reaches the arbiter.
    """
    import numpy as np

    from nixflex_engine.processors.beep import BeepDetector
    from nixflex_engine.processors.codec import mulaw_to_pcm16_array, pcm16_array_to_mulaw

    sr = 8000
    text = "Yes hello, I was waiting for your call about the delivery, it never came, so what now"
    end = 400 + _duration_ms(text)
    key_at, key_ms = end + 1200, 600
    t = np.arange(int(sr * key_ms / 1000)) / sr
    dtmf = 3000 * np.sin(2 * np.pi * 852 * t) + 3000 * np.sin(2 * np.pi * 1477 * t + 1.1)
    audio = np.zeros(int(sr * (key_at + key_ms + 1500) / 1000))
    start = int(sr * key_at / 1000)
    audio[start : start + dtmf.size] += dtmf
    audio += np.random.default_rng(3).normal(0, 30, audio.size)
    pcm = mulaw_to_pcm16_array(pcm16_array_to_mulaw(np.clip(audio, -32768, 32767).astype("<i2")))
    det = BeepDetector()
    beeps = [e for i in range(0, pcm.size, 160) for e in det.process(pcm[i : i + 160])]
    beeps += det.flush()
    assert beeps == []
    # And were a tone reported after a person who asked something, it would not decide either.
    tl = Timeline().say(text + ", who is this?", 400, end).amd("machine_end_silence", end + 1300)
    tl.beep(key_at, key_ms, 852.0)
    arb, out = run(tl, key_at + key_ms + 1500)
    assert arb.state == "human"
    assert all(not late.overrides for late in actions_of(out, LateMachine))


# ======================================== keeping people safe (the heldout4 false machines)
#
# Each group below is one general reason a person was classed as a machine on heldout4,
# written with wordings of its own in every language touched.

# A message left *with the speaker* for someone else is a live intermediary: "leave a message"
# there must not decide (heldout4: "You can leave a message with me if you like").
WITH_ME = [
    ("en", "He's in a meeting. You can leave your number with me and I'll pass it on."),
    ("en", "She stepped out, leave a message with me"),
    ("es", "No está, salió hace un rato. Si quiere, deje el recado conmigo."),
    ("fr", "Il n'est pas là. Laissez un message pour lui, je lui dirai."),
    ("de", "Sie ist nicht im Büro. Ich richte es ihr aus, wenn Sie mögen."),
    ("pt", "Ele não está. Pode deixar o recado comigo."),
    ("it", "Non c'è, è fuori. Se vuole lo lascia detto a me."),
]


@pytest.mark.parametrize(("lang", "text"), WITH_ME, ids=lambda x: x[:30])
def test_a_message_left_with_the_speaker_is_a_person(lang: str, text: str) -> None:
    assert any(c.name == f"{lang}_with_me" for c in find_cues(text)), find_cues(text)
    end = 500 + _duration_ms(text)
    vs = verdicts(text, 500, end, end + 3000)
    assert all(v.label != "machine" for v in vs), [v.reason for v in vs if v.label == "machine"]
    first = first_decided(vs)
    assert first is not None and first.label == "human"


@pytest.mark.parametrize(
    "text",
    [
        "Hi, this is Dana. Leave a message and I'll call you back.",
        "Hola, soy Ana. Déjame tu mensaje y te llamo.",
        "Ciao, sono Marco. Lasciate un messaggio, vi richiamo.",
    ],
)
def test_a_message_left_for_the_greetings_owner_is_still_a_machine(text: str) -> None:
    assert not [c for c in find_cues(text) if c.name.endswith("_with_me")]
    end = 600 + _duration_ms(text)
    first = first_decided(verdicts(text, 600, end, end + 2500))
    assert first is not None and first.label == "machine"


# The callee talks about the caller's message, or names their own mailbox, in a live answer
# (heldout4: "ich hab gerade Ihre Nachricht auf der Mailbox gesehen, worum geht's?", where
# "der Mailbox" was a strong phrase on its own and "Mailbox" counted twice, in English and
# German).
YOU_LEFT = [
    ("en", "Hi, I just heard your voicemail, what can I do for you?"),
    ("es", "Sí, escuché su mensaje esta mañana, dígame."),
    ("fr", "Oui, j'ai vu votre appel tout à l'heure, c'est à quel sujet ?"),
    ("de", "Hallo, ich habe Ihre Nachricht auf meiner Mailbox abgehört, worum geht es denn?"),
    ("pt", "Alô, vi sua ligação agora, quem fala?"),
    ("it", "Pronto, ho visto la sua chiamata, chi parla?"),
]


@pytest.mark.parametrize(("lang", "text"), YOU_LEFT, ids=lambda x: x[:30])
def test_a_callee_talking_about_the_callers_message_is_a_person(lang: str, text: str) -> None:
    assert any(c.name == f"{lang}_you_left" for c in find_cues(text)), find_cues(text)
    end = 500 + _duration_ms(text)
    vs = verdicts(text, 500, end, end + 3000)
    assert all(v.label != "machine" for v in vs), [v.reason for v in vs if v.label == "machine"]
    first = first_decided(vs)
    assert first is not None and first.label == "human"


def test_a_bare_mailbox_noun_is_medium_and_counted_once() -> None:
    cues = find_cues("ich hab das auf der Mailbox gesehen")
    assert {c.name for c in cues} == {"en_mailbox_word", "de_mailbox_word"}
    assert max(c.weight for c in cues) < 3.0
    clf = TranscriptClassifier()
    clf.on_transcript(
        "ich hab das auf der Mailbox gesehen", is_final=True, start_ms=0, end_ms=2000, now_ms=2400
    )
    assert clf.machine_score() == 2.0  # one word, one cue: not English 1.0 + German 2.0


@pytest.mark.parametrize(
    "text",
    [
        "Hallo, hier ist die Mailbox von Anna Müller. Sprechen Sie nach dem Ton.",
        "Sie sind mit der Mailbox von Jonas Weber verbunden.",
        "Das ist die Mailbox von Lena, ich rufe zurück.",
    ],
)
def test_a_mailbox_named_in_a_greeting_construction_is_still_strong(text: str) -> None:
    assert any(c.name == "de_mailbox" and c.weight >= 3.0 for c in find_cues(text))
    end = 600 + _duration_ms(text)
    first = first_decided(verdicts(text, 600, end, end + 2000))
    assert first is not None and first.label == "machine" and first.at_ms < end


# A single medium phrase, then a breath inside a live sentence: not yet the end of a greeting.
def test_a_live_opening_like_a_menu_with_a_breath_before_the_offer_is_a_person() -> None:
    tl = Timeline().say("You've reached the front desk, this is Sam,", 400, 2600)
    tl.say("what can I do for you today?", 3300, 4900)  # a 700 ms breath
    arb, out = run(tl, 8000)
    assert not actions_of(out, VoicemailDetected), arb.result()
    assert arb.state == "human"


def test_a_single_medium_phrase_still_ends_a_greeting_after_a_real_pause() -> None:
    # Some greetings are one medium phrase and then silence: still a machine, a little later.
    s = TranscriptClassifier().settings
    text = "Mike here, leave a message"
    vs = verdicts(text, 500, 1800, 5000)
    first = first_decided(vs)
    assert first is not None and first.label == "machine"
    assert first.at_ms >= 1800 + s.ended_single_cue_silence_ms
    # An opening formula alone ("you've reached...") no longer ends a greeting on the
    # transcript alone (live staff open with it and stop for the caller: "You've reached
    # the front desk, this is Sam, / how can I help?"): it takes corroboration, and the
    # arbiter gets it from AMD or a beep.
    opening = "Hey, you've reached Mike"
    assert first_decided(verdicts(opening, 500, 1800, 5000)) is None
    for tl in (
        Timeline().say(opening, 500, 1800).amd("machine_end_silence", 3300),
        Timeline().say(opening, 500, 1800).beep(2300, 400),
    ):
        arb, _ = run(tl, 5000)
        assert arb.state == "machine"
    # Two machine phrases end it at the first short pause, as before.
    text2 = "Hey, you've reached Mike, leave a message"
    first2 = first_decided(verdicts(text2, 500, 2600, 5000))
    assert first2 is not None and first2.label == "machine"
    assert first2.at_ms < 2600 + s.ended_single_cue_silence_ms


# AMD calls long live answers machines; one weak phrase does not back it against a person cue.
def test_amd_machine_with_one_weak_phrase_and_a_person_cue_waits_for_the_transcript() -> None:
    text = "Oh she's not available at the moment I'm afraid, who is calling please"
    end = 500 + _duration_ms(text)
    tl = Timeline().say(text, 500, end).amd("machine_end_silence", end + 1400)
    arb, out = run(tl, end + 6000)
    assert not actions_of(out, VoicemailDetected), arb.result()
    assert arb.state == "human"
    assert arb.result().disagreements


# Silent, then a person: the opener was allowed on silence, then "Hello? Anybody there?". A
# late AMD "machine" (the person's words made one speech run) must not hang up on them.
SILENT_THEN_PERSON = [
    ("Hello? Is someone there?", "en"),
    ("¿Hola? ¿Hay alguien?", "es"),
    ("Allô ? Il y a quelqu'un ?", "fr"),
    ("Hallo? Ist da jemand?", "de"),
    ("Alô? Tem alguém aí?", "pt"),
    ("Pronto? C'è qualcuno?", "it"),
]


@pytest.mark.parametrize(("text", "lang"), SILENT_THEN_PERSON, ids=lambda x: x[:20])
def test_silent_then_a_person_is_not_hung_up_on_by_a_late_amd(text: str, lang: str) -> None:
    tl = Timeline().say(text, 3800, 6400).amd("machine_end_silence", 8000)
    arb, out = run(tl, 10000)
    (human,) = actions_of(out, HumanDetected)
    assert human.method == "timeout"
    assert not actions_of(out, VoicemailDetected), (lang, arb.result())
    assert all(not late.overrides for late in actions_of(out, LateMachine))
    assert arb.state == "human"


def test_silent_then_a_recorded_greeting_is_still_a_machine() -> None:
    # A mailbox that starts its greeting late: machine phrases after the silence-opener.
    tl = Timeline().say("Hi, you've reached Tom, leave a message after the tone", 3000, 6500)
    tl.amd("machine_end_silence", 8000)
    arb, out = run(tl, 9000)
    (det,) = actions_of(out, VoicemailDetected)
    assert det.late and det.method == "transcript"
    assert arb.state == "machine"


def test_a_person_who_answers_the_opener_later_is_not_overridden_by_the_resume_rule() -> None:
    # "Hi!" confirmed a person; they reply to the opener 2 s later with phone-ish words (no
    # person cue). That speech started long after the opener began: only logged.
    tl = Timeline().say("Hi!", 400, 750)
    tl.say("Oh you've reached my cell, just leave me a message then", 3300, 6300)
    arb, out = run(tl, 9000)
    assert arb.state == "human", arb.result()
    assert all(not late.overrides for late in actions_of(out, LateMachine))


def test_late_ticks_are_needed_while_a_greeting_that_resumed_right_after_a_person_goes_on() -> None:
    s = ArbiterSettings()
    arb = VoicemailArbiter()
    assert not arb.late_ticks_needed(0.0)  # listening: not a question of late ticks
    tl = Timeline().say("Hi!", 400, 750).say("You've reached the Becker family", 1500, 6000)
    tl.run(arb, 5000)
    assert arb.state == "human"
    human_ms = arb.result().human_confirmed_ms
    assert human_ms is not None and 5000 > human_ms + s.late_weak_window_ms
    assert arb.late_ticks_needed(5000.0)  # still talking, resumed 200 ms after the person
    # A person who spoke again only after the opener: no ticks once the window is over.
    other = VoicemailArbiter()
    Timeline().say("Hi!", 400, 750).say("Yes, I can talk now", 3000, 4500).run(other, 6000)
    assert other.state == "human"
    assert not other.late_ticks_needed(6000.0)


@pytest.mark.parametrize(
    "text",
    [
        "Para facturación, marque dos.",
        "Pour le service client, tapez un.",
        "Für den Kundendienst drücken Sie die Eins.",
        "Para suporte, digite um.",
        "Per le prenotazioni, prema tre.",
        "Kein Anschluss unter dieser Nummer.",
        "Sorry, the voice mailbox has reached its limit.",
    ],
)
def test_phone_menus_and_carrier_prompts_decide_in_every_language(text: str) -> None:
    first = first_decided(verdicts(text, 500, 2500, 6000))
    assert first is not None and first.label == "machine"


def test_a_queue_prompt_alone_needs_corroboration_a_receptionist_may_say_it() -> None:
    # "All our lines are busy" is medium: a live receptionist says it before "can you hold?".
    tl = Timeline().say("Hi, all our lines are busy right now,", 500, 2600)
    tl.say("can you hold?", 2900, 3600).amd("machine_end_silence", 5000)
    _, out = run(tl, 9000)
    assert not actions_of(out, VoicemailDetected)
    # A queue prompt with a second phrase is a machine.
    tl2 = Timeline().say("Tutti i nostri operatori sono occupati.", 500, 3000)
    tl2.say("La preghiamo di richiamare più tardi.", 3400, 5600)
    first = first_decided([v for _, v in tl2.run(TranscriptClassifier(), 9000)])
    assert first is not None and first.label == "machine"


# heldout6 (a development split from this round): a person who has just checked their own
# voicemail ("je viens d'écouter ma messagerie", where "messagerie" is a strong phrase) and
# says so live, in every language. A greeting is recorded before the call: it never reports
# that it checked its own messages.
CHECKED_MY_VOICEMAIL = [
    "Hi, I just checked my voicemail and saw a missed call from this number, who is this?",
    "Hola, acabo de revisar el buzón y vi una llamada de este número, ¿quién habla?",
    "Oui bonjour, je viens d'écouter ma messagerie, je vous écoute.",
    "Oui, j'ai consulté mes messages ce matin, c'est pour quoi ?",
    "Hallo, ich habe gerade meine Mailbox abgehört, wer ist da?",
    "Alô, acabei de ouvir a minha caixa postal, quem fala?",
    "Pronto, ho appena ascoltato la segreteria, chi parla?",
]


@pytest.mark.parametrize("text", CHECKED_MY_VOICEMAIL, ids=lambda t: t[:30])
def test_a_callee_who_just_checked_their_voicemail_is_a_person(text: str) -> None:
    assert any(c.name == "xx_checked_my_voicemail" for c in find_cues(text)), find_cues(text)
    end = 500 + _duration_ms(text)
    vs = verdicts(text, 500, end, end + 3000)
    assert all(v.label != "machine" for v in vs), [v.reason for v in vs if v.label == "machine"]
    first = first_decided(vs)
    assert first is not None and first.label == "human"
    # Twilio hears one long run and says "machine": still a person.
    tl = Timeline().say(text, 500, end).amd("machine_end_silence", end + 1500)
    arb, _ = run(tl, end + 4000)
    assert arb.state == "human", arb.result()


@pytest.mark.parametrize(
    "text",
    [
        # A greeting that names its own messagerie, or says it checks messages (present tense),
        # is still a machine: only a report of having just checked them is a person cue.
        "Vous êtes bien sur ma messagerie, laissez-moi un message après le bip.",
        "Hi, this is Sam, I check my voicemail every day, leave a message after the tone.",
        "Hai chiamato la segreteria di Paolo, lascia un messaggio dopo il segnale acustico.",
    ],
    ids=lambda t: t[:30],
)
def test_a_greeting_naming_its_own_voicemail_is_still_a_machine(text: str) -> None:
    assert not any(c.name == "xx_checked_my_voicemail" for c in find_cues(text))
    end = 600 + _duration_ms(text)
    first = first_decided(verdicts(text, 600, end, end + 2000))
    assert first is not None and first.label == "machine"


@pytest.mark.parametrize(
    "text",
    [
        # "the number you have dialled" in the languages that lacked it (en, es, it had it)
        "Die von Ihnen gewählte Rufnummer ist derzeit nicht erreichbar.",
        "Die angerufene Mobilfunknummer ist nicht vergeben.",
        "O número para o qual você ligou está indisponível.",
        "O número discado não existe.",
        "Le numéro que vous avez composé n'est pas disponible.",
    ],
    ids=lambda t: t[:30],
)
def test_the_number_you_dialled_is_a_carrier_phrase(text: str) -> None:
    assert max(c.weight for c in find_cues(text)) >= 3.0, find_cues(text)
    end = 700 + _duration_ms(text)
    tl = Timeline().say(text, 700, end).amd("machine_end_silence", end + 1600)
    arb, _ = run(tl, end + 3000)
    assert arb.state == "machine", arb.result()


@pytest.mark.parametrize(
    "text",
    [
        "You've called outside our business hours. We're open Monday to Friday, nine to five.",
        "Ha llamado fuera de nuestro horario. Atendemos de lunes a viernes de nueve a seis.",
        "Vous appelez en dehors de nos horaires. Nous sommes ouverts du lundi au vendredi.",
        "Sie rufen außerhalb unserer Geschäftszeiten an, montags bis freitags ab acht Uhr.",
        "Você ligou fora do nosso horário. Atendemos de segunda a sexta.",
        "Ha chiamato fuori orario. Siamo aperti dal lunedì al venerdì.",
    ],
    ids=lambda t: t[:30],
)
def test_a_closed_office_recording_with_its_hours_and_days_is_a_machine(text: str) -> None:
    end = 700 + _duration_ms(text)
    first = first_decided(verdicts(text, 700, end, end + 3000))
    assert first is not None and first.label == "machine"


@pytest.mark.parametrize(
    "text",
    [
        # Opening days alone are weak: a person may say them when asked.
        "Yes, we're open Monday to Friday, what do you need?",
        "Sí, abrimos de lunes a viernes, ¿en qué le puedo ayudar?",
        "Oui, on est là du lundi au vendredi, c'est pour quoi ?",
        "Ja, wir haben montags bis freitags auf, worum geht es?",
        "Sim, a gente abre de segunda a sexta, quem fala?",
        "Sì, siamo aperti dal lunedì al venerdì, chi parla?",
    ],
    ids=lambda t: t[:30],
)
def test_a_person_telling_the_opening_days_stays_a_person(text: str) -> None:
    end = 500 + _duration_ms(text)
    vs = verdicts(text, 500, end, end + 3000)
    assert all(v.label != "machine" for v in vs), [v.reason for v in vs if v.label == "machine"]
