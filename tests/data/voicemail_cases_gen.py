# ruff: noqa: E501  (the templates are prose: one greeting per line reads best)
"""Generate the labelled voicemail evaluation set ``voicemail_cases.jsonl``.

Run from the repository root (the output is committed; re-running with the same seed
reproduces it byte for byte)::

    .venv/bin/python tests/data/voicemail_cases_gen.py

How the set is built, and why it is not tuned to the detectors:

* Every case comes from a hand-written *template*: what a person or an answering machine
  actually says when an outbound call is picked up, in English, Spanish, French, German,
  Portuguese and Italian. Templates were written before the detectors' thresholds were set.
* Each template is instantiated twice with different names, speaking rates, start delays,
  pauses, beep (present or not, its frequency and length), transcript quality and AMD outcome.
* The held-out split is chosen **by template** (a hash of its text), so held-out cases use
  wordings never seen while tuning, not just new timings of seen wordings.
* Splits: ``dev`` (tuned on), ``heldout`` (its aggregate figures were seen after the first
  tuning round, and then its errors: from that point it is no longer blind), ``heldout2``
  (``TEMPLATES_HELDOUT2``, new wordings written right then, before any further change, and
  never inspected case by case: the clean generalisation figure until then), ``heldout3``
  (``TEMPLATES_HELDOUT3``, 65 templates with new wordings, written before the work on faster
  machine verdicts, when heldout2 stopped being blind for that work; its errors were then
  looked at in the round on using all the evidence of a call, so it is no longer blind),
  ``heldout4`` (``TEMPLATES_HELDOUT4``, 63 templates with new wordings written before that
  round changed anything: its totals were seen once, then its errors were looked at in the
  round on keeping people safe on unseen wordings, so it is no longer blind),
  ``heldout5`` (``TEMPLATES_HELDOUT5``, 64 templates with new wordings written at the start of
  that round, before any change: its totals were seen once, then its errors were looked at in
  the round on the arbiter's use of AMD, so it is no longer blind), ``heldout6``
  (``TEMPLATES_HELDOUT6``, 57 templates with new wordings written at the start of that round,
  before any change: its totals were seen once, then its errors were looked at in the round
  on heldout6's errors, so it is no longer blind), ``heldout7`` (``TEMPLATES_HELDOUT7``, 58
  templates with new wordings, no text or sentence of an earlier split, written at the start
  of that round before any change: only its totals are looked at; it is the blind figure).
* Timing model: speech starts 0.2-1.4 s after pickup (people) or 0.3-1.6 s (machines and
  carrier prompts); speaking rate 2.6-4.0 words/s (machines read slower than people
  talk); "/" in a template is a short pause inside a greeting (150-550 ms, sometimes up to
  900 ms), "//" a long pause (people waiting for a reply that never comes: 1.8-3.5 s).
* Beeps: 1000 Hz most often, else one of several common voicemail tones; 150-1000 ms long;
  200-900 ms after the greeting ends. Templates marked ``beep="maybe"`` get a beep 75% of
  the time (many greetings end in silence or a prompt instead of a tone).
* Transcripts: about a third of cases have no punctuation and no capitals (Deepgram without
  ``punctuate``/``smart_format``) and about one in eight has one word mis-recognised or
  dropped. The replay derives interim results from the words' timing.
* AMD: Twilio's async AMD with ``DetectMessageEnd`` and its default thresholds (speech
  threshold 2400 ms, speech-end threshold 1200 ms, silence timeout 5000 ms) is emulated on
  the timeline — so it errs where the real one errs (long live answers become
  ``machine_end_silence``; very short greetings become ``human``; silence becomes
  ``unknown``) — and on top of that about 4% of the results are made randomly wrong or
  ``unknown`` (Twilio states ~94% accuracy). ``at_ms`` is when the callback reaches us
  (``MachineDetectionDuration`` plus 80-400 ms of network and webhook latency).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEED = 20261129
OUT = Path(__file__).with_name("voicemail_cases.jsonl")


@dataclass(frozen=True, slots=True)
class T:
    """One template: what is said, by whom, in which language."""

    lang: str
    label: str  # "human" | "machine"
    category: str
    text: str  # "/" short pause, "//" long pause; {first} {last} {company} {number}
    beep: str = "maybe"  # "always" | "maybe" | "never" (humans: always "never")
    notes: str = ""


NAMES: dict[str, list[tuple[str, str]]] = {
    "en": [
        ("Sarah", "Miller"),
        ("Tom", "Becker"),
        ("Jessica", "Nguyen"),
        ("Mike", "Johnson"),
        ("David", "Patel"),
        ("Emily", "Clark"),
        ("Chris", "Walker"),
        ("Laura", "Kim"),
    ],
    "es": [
        ("María", "García"),
        ("Javier", "López"),
        ("Lucía", "Martínez"),
        ("Carlos", "Ruiz"),
        ("Ana", "Fernández"),
        ("Diego", "Torres"),
    ],
    "fr": [
        ("Camille", "Martin"),
        ("Julien", "Bernard"),
        ("Sophie", "Dubois"),
        ("Nicolas", "Lefèvre"),
        ("Claire", "Moreau"),
        ("Antoine", "Girard"),
    ],
    "de": [
        ("Anna", "Müller"),
        ("Jonas", "Schmidt"),
        ("Lena", "Schneider"),
        ("Felix", "Weber"),
        ("Sabine", "Fischer"),
        ("Thomas", "Wagner"),
    ],
    "pt": [
        ("Ana", "Silva"),
        ("João", "Santos"),
        ("Mariana", "Oliveira"),
        ("Pedro", "Costa"),
        ("Beatriz", "Souza"),
        ("Rafael", "Pereira"),
    ],
    "it": [
        ("Giulia", "Rossi"),
        ("Marco", "Russo"),
        ("Francesca", "Ferrari"),
        ("Luca", "Esposito"),
        ("Chiara", "Bianchi"),
        ("Matteo", "Romano"),
    ],
}
COMPANIES: dict[str, list[str]] = {
    "en": ["Bright Smile Dental", "Harbor Insurance", "Miller and Partners", "Oakwood Realty"],
    "es": ["Clínica Dental Sonrisa", "Seguros Atlántico", "Inmobiliaria Sol"],
    "fr": ["Cabinet Dubois", "Assurances du Parc", "Agence Lumière"],
    "de": ["Praxis Dr. Weber", "Autohaus Schneider", "Kanzlei Fischer"],
    "pt": ["Clínica Sorriso", "Imobiliária Horizonte", "Seguros Atlântico"],
    "it": ["Studio Dentistico Rossi", "Assicurazioni Aurora", "Agenzia Sole"],
}
NUMBER_WORDS: dict[str, list[str]] = {
    "en": ["five five five, two one three, four four eight nine", "eight one eight, two zero two"],
    "es": ["seis uno dos, tres cuatro cinco, seis siete", "nueve uno, cuatro cinco cinco"],
    "fr": ["zéro six, douze, trente-quatre, cinquante-six", "zéro sept, vingt, quarante"],
    "de": ["null eins sieben zwei, drei vier fünf sechs", "null eins fünf eins, acht acht"],
    "pt": ["nove nove oito, sete seis, cinco quatro", "nove um dois, três quatro"],
    "it": ["tre tre nove, uno due tre, quattro cinque", "tre quattro sette, due due"],
}

# fmt: off
TEMPLATES: list[T] = [
    # ------------------------------------------------------------------ English, machines
    T("en", "machine", "personal", "Hi, you've reached {first} {last}. / I can't take your call right now, / please leave a message after the beep and I'll get back to you as soon as I can.", "always"),
    T("en", "machine", "personal_short", "Hi, it's {first}, leave a message.", "always", "short greeting"),
    T("en", "machine", "personal_short", "Hey, this is {first}. / Leave a message.", "always", "short greeting"),
    T("en", "machine", "personal_nocue", "{first} here, / you know what to do.", "always", "no phrase cue at all"),
    T("en", "machine", "personal", "Hello, you have reached the voicemail of {first} {last}. / Please leave your name, number and a brief message / and I will return your call."),
    T("en", "machine", "carrier", "The person you are calling is not available. / Please leave a message after the tone.", "always"),
    T("en", "machine", "carrier", "Your call has been forwarded to an automated voice messaging system. / {number} / is not available. / At the tone, please record your message. / When you have finished recording, you may hang up or press one for more options.", "always"),
    T("en", "machine", "carrier", "The Google subscriber you have called is not available. / Please leave a message after the tone.", "always"),
    T("en", "machine", "personal", "Sorry I missed your call. / Leave me a message and I'll call you back."),
    T("en", "machine", "business", "Thank you for calling {company}. / Our office is currently closed. / Our business hours are Monday through Friday, nine to five. / Please leave a message and we will return your call on the next business day."),
    T("en", "machine", "carrier_full", "The mailbox is full and cannot accept any messages at this time. / Goodbye.", "never"),
    T("en", "machine", "carrier_unset", "The subscriber you have dialed has a voice mailbox that has not been set up yet. / Goodbye.", "never"),
    T("en", "machine", "trick", "Hello? // Ha, got you, I'm not here, / leave a message.", "always", "trick greeting: fake live hello then a long pause"),
    T("en", "machine", "family", "Hi! / You've reached the {last} family. / We're not home right now, / but leave us a message and we'll call you back."),
    T("en", "machine", "personal", "Hey, it's {first}, / I'm probably on the other line or away from my phone, / drop me a message and I'll get back to you."),
    T("en", "machine", "number_only", "You have reached {number}. / Please leave a message.", "always"),
    T("en", "machine", "name_only", "{first} {last}.", "always", "carrier default greeting with only the recorded name"),
    T("en", "machine", "business", "Hi, this is {first} {last} with {company}. / I'm either on the phone or away from my desk. / Please leave your name and number and I'll return your call as soon as possible. / Thanks."),
    T("en", "machine", "carrier", "Welcome to the voice mail service. / The number you are trying to reach is not available. / Please leave a message after the tone.", "always"),
    T("en", "machine", "personal", "Hi, you've reached {first}. / I'm not available right now. / Text me or leave a message."),
    T("en", "machine", "personal_nocue", "Hey, / it's {first}, / I'll call you back.", "always", "short, almost no cue"),
    T("en", "machine", "business", "You've reached the after hours line for {company}. / If this is an emergency, please hang up and dial nine one one. / Otherwise, please leave a detailed message."),
    T("en", "machine", "personal", "This is {first}. / I'm out of the office until Monday. / For urgent matters please contact my colleague. / Otherwise leave a message and I will call you back."),
    T("en", "machine", "carrier", "I'm sorry, the person you are trying to reach is unavailable. / Please try again later.", "never", "carrier prompt with no mailbox"),
    T("en", "machine", "beep_only", "", "always", "no greeting, beep only"),
    T("en", "machine", "silent_mailbox", "", "never", "no greeting and no beep: recording starts in silence"),
    # ------------------------------------------------------------------ English, people
    T("en", "human", "hello", "Hello?"),
    T("en", "human", "hello", "Hello, who is this?"),
    T("en", "human", "hello", "Yeah, hello."),
    T("en", "human", "self_id", "Hi, this is {first} speaking."),
    T("en", "human", "take_message", "He's not available right now, / can I take a message?", notes="hard: 'not available' + 'message' said live"),
    T("en", "human", "take_message", "She's not available at the moment. / Do you want to leave a message?", notes="hard: 'leave a message' said live"),
    T("en", "human", "receptionist", "Good morning, {company}, this is {first}, how can I help you?"),
    T("en", "human", "receptionist", "Thank you for calling {company}, / you've reached the front desk, / this is {first}, how may I help you?", notes="hard: receptionist says 'you've reached'"),
    T("en", "human", "hello_repeat", "Hello? // Hello? / Is anyone there?"),
    T("en", "human", "hello_repeat", "Yeah? // Hello?"),
    T("en", "human", "long", "Hi, sorry, I'm driving right now, / can you call me back in like ten minutes?"),
    T("en", "human", "take_message", "{first}'s phone, / he's in the shower, / who's calling?"),
    T("en", "human", "self_id", "This is {first}."),
    T("en", "human", "short", "Speaking."),
    T("en", "human", "hello", "Hello, yes?"),
    T("en", "human", "long", "Hi! / Oh sorry, I thought you were my sister. / Who is this?"),
    T("en", "human", "formal", "Hello, {last} residence."),
    T("en", "human", "long", "Yes hello, I've been expecting your call about the appointment, is this about Thursday?", notes="long live answer"),
    T("en", "human", "hello", "Um, / hello?"),
    T("en", "human", "take_message", "Sorry, he can't come to the phone right now, he's in a meeting. / Can I tell him who called?", notes="hard: 'can't come to the phone right now'"),
    T("en", "human", "long", "Hello, this is {first}, I can't really talk right now, I'm at work, / is it urgent?"),
    T("en", "human", "short", "Yeah, go ahead."),
    T("en", "human", "mentions_voicemail", "Hello? / Oh, you left me a voicemail yesterday, right?", notes="hard: person says 'voicemail'"),
    T("en", "human", "mentions_voicemail", "Hi, is this about the mailbox I ordered?", notes="hard: person says 'mailbox'"),
    T("en", "human", "long", "Hello, I'm not available for surveys, sorry, / who's calling?"),
    T("en", "human", "hello", "{first}."),
    T("en", "human", "monologue", "Hey, yeah, hi, I got your text earlier and I was going to call you back but I've been running around all morning with the kids so sorry about that.", notes="long unbroken live answer"),
    T("en", "human", "silent", "", notes="picks up and says nothing, waits for the caller"),
    T("en", "human", "silent_then_hello", "// Hello?", notes="silent first, then hello"),
    # ------------------------------------------------------------------ Spanish
    T("es", "machine", "personal", "Hola, has llamado a {first}. / Ahora no puedo atenderte, / deja tu mensaje después del tono.", "always"),
    T("es", "machine", "carrier", "El número que usted marcó no está disponible. / Por favor, deje su mensaje después del tono.", "always"),
    T("es", "machine", "personal_short", "Hola, soy {first}, deja un mensaje.", "always"),
    T("es", "machine", "carrier", "Bienvenido al buzón de voz de {number}. / Deje su mensaje después de la señal.", "always"),
    T("es", "machine", "carrier", "La persona a la que llama no está disponible en este momento. / Por favor, inténtelo más tarde.", "never"),
    T("es", "machine", "carrier_off", "El teléfono móvil al que llama está apagado o fuera de cobertura en este momento.", "never"),
    T("es", "machine", "personal", "Hola, este es el contestador de {first}. / Ahora mismo no estoy, / deja tu mensaje y te llamo."),
    T("es", "machine", "business", "Gracias por llamar a {company}. / Nuestro horario de atención es de lunes a viernes de nueve a seis. / Deje su nombre y teléfono y le devolveremos la llamada."),
    T("es", "machine", "personal_nocue", "¿Qué tal? / Soy {first}. / Ya sabes qué hacer.", "always"),
    T("es", "machine", "carrier", "Su llamada ha sido transferida a un sistema de mensajes de voz. / {number} / no está disponible. / Grabe su mensaje después del tono.", "always"),
    T("es", "human", "hello", "¿Bueno?"),
    T("es", "human", "hello", "¿Diga?"),
    T("es", "human", "hello", "Hola, ¿quién habla?"),
    T("es", "human", "take_message", "No está en este momento, / ¿quiere dejarle un mensaje?", notes="hard"),
    T("es", "human", "take_message", "Ahora no está disponible, / ¿le puedo tomar un recado?", notes="hard"),
    T("es", "human", "receptionist", "Buenas tardes, {company}, / le atiende {first}, ¿en qué puedo ayudarle?"),
    T("es", "human", "hello_repeat", "¿Aló? // ¿Aló? / ¿Hay alguien?"),
    T("es", "human", "short", "Sí, dígame."),
    T("es", "human", "long", "Hola, estoy manejando, / ¿me puedes llamar más tarde?"),
    T("es", "human", "mentions_voicemail", "Oye, acabo de ver que me dejaste un mensaje en el buzón, / ¿qué pasó?", notes="hard: 'buzón' said live"),
    T("es", "human", "self_id", "Sí, soy {first}, ¿de parte de quién?"),
    # ------------------------------------------------------------------ French
    T("fr", "machine", "personal", "Bonjour, vous êtes bien sur la messagerie de {first} {last}. / Je ne suis pas disponible pour le moment, / laissez-moi un message après le bip sonore.", "always"),
    T("fr", "machine", "carrier", "Votre correspondant n'est pas disponible pour le moment. / Veuillez laisser un message après le bip.", "always"),
    T("fr", "machine", "personal_short", "Salut, c'est {first}, laisse un message.", "always"),
    T("fr", "machine", "carrier", "Bonjour, vous êtes sur la messagerie vocale du {number}. / Laissez un message après le signal sonore.", "always"),
    T("fr", "machine", "carrier_full", "La messagerie de votre correspondant est pleine. / Vous ne pouvez pas laisser de message.", "never"),
    T("fr", "machine", "business", "Bienvenue chez {company}. / Nos bureaux sont fermés. / Nous sommes ouverts du lundi au vendredi de neuf heures à dix-huit heures. / Merci de laisser vos coordonnées, nous vous rappellerons."),
    T("fr", "machine", "personal", "Bonjour, c'est {first}, / je ne peux pas répondre pour l'instant, / laissez-moi un petit message et je vous rappelle."),
    T("fr", "machine", "carrier", "Le correspondant que vous cherchez à joindre n'est pas joignable actuellement. / Veuillez rappeler ultérieurement.", "never"),
    T("fr", "machine", "personal_nocue", "Coucou, / c'est {first}, / à plus tard !", "always"),
    T("fr", "machine", "personal", "Vous êtes bien chez {first} et {last}. / Nous sommes absents pour le moment. / Après le bip, vous pouvez laisser un message.", "always"),
    T("fr", "human", "hello", "Allô ?"),
    T("fr", "human", "hello", "Allô, oui ?"),
    T("fr", "human", "hello", "Oui, allô, c'est qui ?"),
    T("fr", "human", "take_message", "Il n'est pas disponible pour le moment, / vous voulez laisser un message ?", notes="hard"),
    T("fr", "human", "take_message", "Elle n'est pas là, / je peux prendre un message ?", notes="hard"),
    T("fr", "human", "receptionist", "{company}, bonjour, / {first} à l'appareil, que puis-je faire pour vous ?"),
    T("fr", "human", "hello_repeat", "Allô ? // Allô ? / Il y a quelqu'un ?"),
    T("fr", "human", "short", "Oui, bonjour."),
    T("fr", "human", "long", "Je suis au volant, / vous pouvez rappeler plus tard ?"),
    T("fr", "human", "mentions_voicemail", "Ah, vous m'avez laissé un message sur mon répondeur hier, / c'est pour quoi ?", notes="hard: 'répondeur' said live"),
    T("fr", "human", "self_id", "Oui, {first} {last}, j'écoute."),
    # ------------------------------------------------------------------ German
    T("de", "machine", "personal", "Hallo, hier ist der Anschluss von {first} {last}. / Ich bin leider nicht erreichbar. / Bitte hinterlassen Sie eine Nachricht nach dem Signalton.", "always"),
    T("de", "machine", "carrier", "Der gewünschte Gesprächspartner ist zurzeit nicht erreichbar. / Bitte hinterlassen Sie eine Nachricht nach dem Signalton.", "always"),
    T("de", "machine", "personal_short", "Hi, hier ist {first}, sprich mir was auf.", "always"),
    T("de", "machine", "carrier", "Willkommen bei der Mobilbox von {number}. / Ihr Gesprächspartner ist im Moment nicht erreichbar. / Sie können jetzt eine Nachricht hinterlassen.", "always"),
    T("de", "machine", "carrier", "Sie sind verbunden mit der Mailbox von {first} {last}. / Bitte sprechen Sie nach dem Ton.", "always"),
    T("de", "machine", "carrier_off", "Der Teilnehmer ist zur Zeit nicht erreichbar.", "never"),
    T("de", "machine", "business", "Guten Tag, Sie haben die {company} erreicht. / Unsere Praxis ist derzeit geschlossen. / Unsere Sprechzeiten sind Montag bis Freitag von acht bis zwölf Uhr. / Bitte hinterlassen Sie Ihren Namen und Ihre Telefonnummer."),
    T("de", "machine", "personal", "Hallo, {first} hier. / Ich kann gerade nicht ans Telefon gehen. / Ich rufe zurück."),
    T("de", "machine", "personal_nocue", "Servus, / {first} {last}.", "always"),
    T("de", "machine", "carrier", "Die Person, die Sie anrufen, ist nicht verfügbar. / Bitte sprechen Sie nach dem Piepton.", "always"),
    T("de", "human", "hello", "Hallo?"),
    T("de", "human", "hello", "Ja, hallo?"),
    T("de", "human", "surname", "{last}.", notes="Germans often answer with their surname"),
    T("de", "human", "hello", "Ja, bitte?"),
    T("de", "human", "hello", "Hallo, wer ist da?"),
    T("de", "human", "take_message", "Er ist gerade nicht da, / kann ich was ausrichten?", notes="hard"),
    T("de", "human", "take_message", "Sie ist im Moment nicht erreichbar, / möchten Sie eine Nachricht hinterlassen?", notes="hard: 'nicht erreichbar' + 'Nachricht hinterlassen' said live"),
    T("de", "human", "receptionist", "{company}, / Sie sprechen mit {first} {last}, was kann ich für Sie tun?"),
    T("de", "human", "hello_repeat", "Hallo? // Hallo? / Ist da jemand?"),
    T("de", "human", "long", "Ich sitze gerade im Auto, / können Sie später nochmal anrufen?"),
    T("de", "human", "surname", "{last}, guten Tag."),
    # ------------------------------------------------------------------ Portuguese
    T("pt", "machine", "personal", "Olá, você ligou para {first}. / No momento não posso atender, / deixe sua mensagem após o sinal.", "always"),
    T("pt", "machine", "carrier", "A pessoa para quem você ligou não está disponível. / Por favor, deixe sua mensagem após o sinal.", "always"),
    T("pt", "machine", "carrier_off", "Este telefone está desligado ou fora da área de cobertura.", "never"),
    T("pt", "machine", "personal_short", "Oi, aqui é {first}, deixa recado.", "always"),
    T("pt", "machine", "carrier", "Caixa postal. / Grave seu recado após o sinal.", "always"),
    T("pt", "machine", "personal_pt", "Olá, ligou para {first} {last}. / De momento não posso atender. / Deixe a sua mensagem após o sinal.", "always", "European Portuguese"),
    T("pt", "machine", "business", "Obrigado por ligar para {company}. / Nosso horário de atendimento é de segunda a sexta, das oito às dezoito horas. / Deixe seu nome e telefone que retornaremos."),
    T("pt", "machine", "personal_nocue", "E aí, / é o {first}, / fala aí.", "always"),
    T("pt", "machine", "carrier", "Sua chamada está sendo encaminhada para a caixa de mensagens e estará sujeita a cobrança após o sinal.", "always"),
    T("pt", "machine", "personal", "Oi, aqui é {first}, / não posso atender agora, / me manda uma mensagem que eu te ligo depois."),
    T("pt", "human", "hello", "Alô?"),
    T("pt", "human", "hello", "Alô, quem fala?"),
    T("pt", "human", "hello", "Oi, pois não?"),
    T("pt", "human", "hello", "Sim?"),
    T("pt", "human", "take_message", "Ele não está no momento, / quer deixar recado?", notes="hard"),
    T("pt", "human", "take_message", "Ela não pode atender agora, / posso anotar o recado?", notes="hard"),
    T("pt", "human", "receptionist", "{company}, bom dia, / {first} falando, em que posso ajudar?"),
    T("pt", "human", "hello_repeat", "Alô? // Alô? / Tem alguém aí?"),
    T("pt", "human", "long", "Estou dirigindo agora, / pode ligar mais tarde?"),
    T("pt", "human", "mentions_voicemail", "Oi, vi que você deixou um recado na minha caixa postal, / do que se trata?", notes="hard: 'caixa postal' said live"),
    T("pt", "human", "self_id", "Sou eu, {first}, pode falar."),
    # ------------------------------------------------------------------ Italian
    T("it", "machine", "personal", "Ciao, sono {first}, / in questo momento non posso rispondere, / lasciate un messaggio dopo il segnale acustico.", "always"),
    T("it", "machine", "carrier", "La persona da lei chiamata non è al momento raggiungibile. / Lasci un messaggio dopo il segnale acustico.", "always"),
    T("it", "machine", "carrier_off", "Il cliente da lei chiamato non è al momento raggiungibile.", "never"),
    T("it", "machine", "carrier", "Segreteria telefonica del numero {number}. / Lasciate un messaggio dopo il bip.", "always"),
    T("it", "machine", "personal_short", "Ciao, è {first}, lasciami un messaggio.", "always"),
    T("it", "machine", "business", "Buongiorno, avete chiamato lo {company}. / Lo studio è chiuso. / Gli orari di apertura sono dal lunedì al venerdì dalle nove alle diciotto. / Lasciate nome e numero e sarete richiamati."),
    T("it", "machine", "personal", "Salve, risponde la segreteria di {first} {last}. / Al momento non sono disponibile. / Lasciate un messaggio, vi richiamerò."),
    T("it", "machine", "personal_nocue", "Ehi, / sono {first}, / a dopo.", "always"),
    T("it", "machine", "carrier", "Il numero da lei chiamato è momentaneamente non disponibile. / Può lasciare un messaggio dopo il segnale.", "always"),
    T("it", "machine", "carrier_full", "La casella vocale del cliente è piena.", "never"),
    T("it", "human", "hello", "Pronto?"),
    T("it", "human", "hello", "Pronto, chi parla?"),
    T("it", "human", "hello", "Sì, pronto."),
    T("it", "human", "take_message", "Non c'è in questo momento, / vuole lasciare un messaggio?", notes="hard"),
    T("it", "human", "take_message", "Adesso non è disponibile, / posso prendere un messaggio?", notes="hard"),
    T("it", "human", "receptionist", "{company}, buongiorno, / sono {first}, come posso aiutarla?"),
    T("it", "human", "hello_repeat", "Pronto? // Pronto? / C'è qualcuno?"),
    T("it", "human", "long", "Sto guidando, / può richiamare più tardi?"),
    T("it", "human", "mentions_voicemail", "Ho visto che mi ha lasciato un messaggio in segreteria, / di cosa si tratta?", notes="hard: 'segreteria' said live"),
    T("it", "human", "self_id", "Sì, sono {first}, mi dica."),
]
# fmt: on

# A second held-out set, written after the first round of tuning had looked at the first
# held-out split's errors (so that split is no longer blind). Nothing below was looked at
# case by case while tuning: its figures are the clean generalisation check.
# fmt: off
TEMPLATES_HELDOUT2: list[T] = [
    # English
    T("en", "machine", "personal", "Hey there, / you've got {first}. / Can't get to the phone, / so leave your info and I'll hit you back.", "maybe"),
    T("en", "machine", "personal", "Hello, this is {first} {last}. / I'm unable to answer your call at the moment. / Please leave a detailed message including your phone number.", "always"),
    T("en", "machine", "business", "You have reached the offices of {company}. / All of our representatives are currently assisting other customers. / Please leave your name and number after the tone.", "always"),
    T("en", "machine", "carrier", "The number you have dialed is not available. / Please leave your message after the beep.", "always"),
    T("en", "machine", "carrier", "Please leave a message for / {number}.", "always", "carrier default with the number read out"),
    T("en", "machine", "personal_short", "It's {first}. / Talk to me.", "always", "very short, no phrase cue"),
    T("en", "machine", "personal", "Hi, sorry we can't come to the phone right now. / Leave a message and we'll get back to you.", "maybe"),
    T("en", "machine", "carrier_full", "Sorry, the voice mailbox you are trying to reach is full. / Goodbye.", "never"),
    T("en", "human", "hello", "Hello, {first} speaking."),
    T("en", "human", "hello", "Hey, what's up?"),
    T("en", "human", "hello", "Yello?"),
    T("en", "human", "take_message", "Oh, she's not here right now. / Want me to have her call you back?", notes="hard: 'not here' + 'call you back' said live"),
    T("en", "human", "receptionist", "{company}, this is {first}, / how can I direct your call?"),
    T("en", "human", "long", "Hi, yeah, sorry, I was just about to leave the house, / what is this regarding?"),
    T("en", "human", "mentions_voicemail", "Hello? / Yeah, I just listened to your voicemail, / is this about the refund?", notes="hard: 'voicemail' said live"),
    T("en", "human", "hello_repeat", "Hello? // Hello? // Can you hear me?"),
    # Spanish
    T("es", "machine", "personal", "Hola, soy {first}. / En este momento no te puedo contestar. / Déjame tu mensaje y te llamo en cuanto pueda.", "maybe"),
    T("es", "machine", "carrier", "El número al que usted llama no está disponible. / Deje su mensaje al oír la señal.", "always"),
    T("es", "machine", "business", "Ha llamado a {company}. / En este momento todos nuestros agentes están ocupados. / Por favor, deje su nombre y número después del tono.", "always"),
    T("es", "human", "hello", "¿Aló, sí?"),
    T("es", "human", "take_message", "No, ahorita no se encuentra. / ¿Quién le llama?", notes="hard: 'no se encuentra'"),
    T("es", "human", "long", "Hola, sí, mira, ahora mismo estoy en una reunión, / ¿es algo urgente?"),
    # French
    T("fr", "machine", "personal", "Salut, vous êtes sur le répondeur de {first}. / Laissez un message et je vous rappelle dès que possible.", "maybe"),
    T("fr", "machine", "carrier", "Le numéro que vous avez composé n'est pas disponible. / Laissez votre message après le bip sonore.", "always"),
    T("fr", "human", "hello", "Oui, allô, j'écoute ?"),
    T("fr", "human", "take_message", "Il est absent pour le moment. / C'est de la part de qui ?", notes="hard: 'absent pour le moment'"),
    T("fr", "human", "receptionist", "{company}, bonjour, / je vous écoute."),
    # German
    T("de", "machine", "personal", "Hallo, Sie sind bei {first} {last}. / Ich bin gerade nicht zu Hause. / Bitte sprechen Sie eine Nachricht auf.", "maybe"),
    T("de", "machine", "carrier", "Die Rufnummer ist zurzeit nicht erreichbar. / Sie können nach dem Signalton eine Nachricht hinterlassen.", "always"),
    T("de", "human", "hello", "{last}, hallo?"),
    T("de", "human", "take_message", "Nein, der ist gerade nicht zu Hause. / Wer spricht denn da?", notes="hard: 'nicht zu Hause'"),
    T("de", "human", "long", "Hallo, ja, ich bin gerade unterwegs, / worum geht es denn?"),
    # Portuguese
    T("pt", "machine", "personal", "Oi, você ligou pro {first}. / Agora não dá pra atender. / Deixa teu recado depois do bipe.", "always"),
    T("pt", "machine", "carrier", "O número chamado não está disponível no momento. / Deixe sua mensagem após o sinal.", "always"),
    T("pt", "human", "hello", "Alô, pode falar."),
    T("pt", "human", "take_message", "Ele saiu agora há pouco. / Quer que eu dê algum recado?", notes="hard"),
    # Italian
    T("it", "machine", "personal", "Ciao, hai chiamato {first}. / Non posso rispondere, / lasciami un messaggio e ti richiamo.", "always"),
    T("it", "machine", "carrier", "Il numero selezionato non è al momento disponibile. / Si prega di lasciare un messaggio dopo il segnale acustico.", "always"),
    T("it", "human", "hello", "Pronto, sì?"),
    T("it", "human", "take_message", "Guardi, in questo momento è fuori. / Chi lo cerca?", notes="hard"),
]
# fmt: on

# A third held-out set, written before the work on faster machine verdicts (at which point
# heldout and heldout2 had both been looked at case by case for that work). Its wordings
# appear in no template above. Only its totals were looked at while it was the blind figure;
# the round on using all the evidence of a call looked at its errors (no longer blind).
# fmt: off
TEMPLATES_HELDOUT3: list[T] = [
    # English, machines
    T("en", "machine", "personal", "Hi, you've got the voicemail for {first}. / I'm away from the phone. / Say what you need after the tone and I'll ring you back.", "maybe"),
    T("en", "machine", "personal_nocue", "Yo, {first}. / Do your thing.", "always", "very short, no phrase cue"),
    T("en", "machine", "business", "Thanks for calling {company}, where your smile comes first. / We're with other patients right now. / Stay on the line to record a message, or call back during office hours.", "maybe"),
    T("en", "machine", "carrier", "The wireless customer you are calling is not available at this time. / Please try your call again later.", "never", "carrier prompt with no mailbox"),
    T("en", "machine", "carrier", "At the tone, please record your message. / When you are finished, simply hang up.", "always"),
    T("en", "machine", "personal_short", "{first} {last}, leave it at the beep.", "always", "short greeting"),
    T("en", "machine", "family", "You've reached the {last}s. / Nobody can pick up, / so go ahead and say your piece.", "maybe"),
    T("en", "machine", "carrier_unset", "This voicemail box has not been set up. / Please call again later.", "never"),
    T("en", "machine", "business", "Hello and thank you for calling {company}. / If you know your party's extension, you may dial it at any time. / For sales, press one. / For billing, press two.", "never", "phone menu, no mailbox cue"),
    T("en", "machine", "silent_mailbox", "", "never", "no greeting and no beep"),
    T("en", "machine", "beep_only", "", "always", "no greeting, beep only"),
    # English, people
    T("en", "human", "take_message", "Mm, he's stepped out for a bit. / Can I take a message for him?", notes="hard: 'take a message' said live"),
    T("en", "human", "take_message", "I'm sorry, Doctor {last} isn't available right now. / Can I get your name and number?", notes="hard: 'isn't available right now' + 'name and number' said live"),
    T("en", "human", "hello", "Hello? / Who's calling please?"),
    T("en", "human", "hello", "Yeah, who's this?"),
    T("en", "human", "receptionist", "{company}, {first} speaking, / are you calling to book an appointment?"),
    T("en", "human", "monologue", "Oh hi, yes, I'm just in the middle of cooking dinner so I can't talk long, but what can I do for you?", notes="long unbroken live answer"),
    T("en", "human", "long", "Hello, yes, this is {first}, I filled out the form on your website last night, / I guess that's why you're calling?", notes="long live answer"),
    T("en", "human", "silent_then_hello", "// Hi? / Who's there?"),
    T("en", "human", "short", "Yep."),
    T("en", "human", "mentions_voicemail", "Hi, sorry, I saw I missed your call, / there was no message though, / what's it about?", notes="hard: 'missed your call' + 'message' said live"),
    T("en", "human", "hello_repeat", "Hi? // Hi, can you hear me? // I can't hear you."),
    # Spanish
    T("es", "machine", "personal", "Hola, estás llamando a {first}. / No estoy disponible, / por favor deja tu recado y te regreso la llamada.", "maybe"),
    T("es", "machine", "carrier", "El usuario que usted llama no puede atenderle en este momento. / Deje su mensaje tras la señal.", "always"),
    T("es", "machine", "personal_nocue", "¡Ey! / {first} al habla.", "always", "short, no phrase cue"),
    T("es", "machine", "business", "Bienvenido a {company}. / Le informamos que nuestras oficinas se encuentran cerradas. / Si lo desea, deje su mensaje y le contactaremos.", "maybe"),
    T("es", "human", "take_message", "Ahorita no puede pasar al teléfono, / ¿le dejo algún recado?", notes="hard: 'recado' said live"),
    T("es", "human", "hello", "¿Sí? / ¿Quién es?"),
    T("es", "human", "receptionist", "{company}, buenos días, / habla {first}, ¿con quién tengo el gusto?"),
    T("es", "human", "monologue", "Hola, sí, soy yo, justo estaba esperando su llamada por lo del presupuesto que pedí la semana pasada.", notes="long unbroken live answer"),
    # French
    T("fr", "machine", "personal", "Bonjour, ici {first} {last}. / Je suis indisponible, / merci de me laisser vos coordonnées, je vous recontacterai.", "maybe"),
    T("fr", "machine", "carrier", "Le numéro demandé n'est pas joignable. / Merci de renouveler votre appel plus tard.", "never"),
    T("fr", "machine", "personal_nocue", "C'est {first}. / Bisous !", "always", "short, no phrase cue"),
    T("fr", "machine", "carrier", "Votre appel est transféré sur la messagerie du {number}. / Parlez après le bip.", "always"),
    T("fr", "human", "take_message", "Il vient de sortir. / Je peux lui dire de vous rappeler ?", notes="hard: 'rappeler' said live"),
    T("fr", "human", "hello", "Allô ? / Qui est à l'appareil ?"),
    T("fr", "human", "receptionist", "{company}, {first}, bonjour, / c'est à quel sujet ?"),
    T("fr", "human", "monologue", "Oui bonjour, écoutez je suis en pleine réunion là, je ne peux pas vous parler longtemps, c'est pour quoi exactement ?", notes="long unbroken live answer"),
    T("fr", "human", "silent", "", notes="picks up and says nothing"),
    # German
    T("de", "machine", "personal", "Guten Tag, hier ist die Mailbox von {first}. / Ich bin gerade beschäftigt. / Hinterlasst mir einfach eine Nachricht.", "maybe"),
    T("de", "machine", "carrier", "Der Anschluss ist vorübergehend nicht erreichbar. / Bitte versuchen Sie es später noch einmal.", "never"),
    T("de", "machine", "personal_short", "{first}. / Sprich nach dem Piep.", "always", "short greeting"),
    T("de", "machine", "business", "Herzlich willkommen bei {company}. / Leider rufen Sie außerhalb unserer Geschäftszeiten an. / Wir sind ab Montag wieder für Sie da.", "never", "no mailbox cue"),
    T("de", "machine", "silent_mailbox", "", "never", "no greeting and no beep"),
    T("de", "human", "take_message", "Die ist gerade nicht am Platz. / Soll ich ihr etwas ausrichten?", notes="hard: 'nicht am Platz' + 'ausrichten'"),
    T("de", "human", "hello", "Ja? / Mit wem spreche ich?"),
    T("de", "human", "receptionist", "{company}, guten Morgen, / mein Name ist {first}, wie kann ich Ihnen helfen?"),
    T("de", "human", "monologue", "Ach hallo, ja, gut dass Sie anrufen, ich wollte mich sowieso wegen der Rechnung bei Ihnen melden.", notes="long unbroken live answer"),
    # Portuguese
    T("pt", "machine", "personal", "Olá, aqui é o {first}. / Não consigo atender agora. / Fala depois do sinal que eu retorno.", "maybe"),
    T("pt", "machine", "carrier", "O telefone chamado está temporariamente indisponível. / Tente novamente mais tarde.", "never"),
    T("pt", "machine", "personal_nocue", "Oi, {first} aqui. / Valeu!", "always", "short, no phrase cue"),
    T("pt", "machine", "business", "Você ligou para {company}. / Nosso expediente já foi encerrado. / Deixe seu nome e telefone para contato.", "maybe"),
    T("pt", "human", "take_message", "Ela não se encontra, / quem gostaria?", notes="hard: 'não se encontra'"),
    T("pt", "human", "hello", "Alô? / Quem tá falando?"),
    T("pt", "human", "receptionist", "{company}, {first}, boa tarde, / com quem eu falo?"),
    T("pt", "human", "monologue", "Oi, tudo bem? Olha, agora eu tô no meio de uma consulta, dá pra você me ligar daqui a meia hora?", notes="long unbroken live answer"),
    # Italian
    T("it", "machine", "personal", "Ciao, hai raggiunto {first} {last}. / Adesso sono occupato, / lascia pure un messaggio in segreteria.", "maybe"),
    T("it", "machine", "carrier", "Il telefono della persona chiamata potrebbe essere spento o non raggiungibile. / Si prega di richiamare più tardi.", "never"),
    T("it", "machine", "personal_short", "{first}, / parla dopo il bip.", "always", "short greeting"),
    T("it", "machine", "business", "Benvenuti in {company}. / I nostri uffici sono chiusi. / Potete lasciare un messaggio con il vostro recapito.", "maybe"),
    T("it", "machine", "beep_only", "", "always", "no greeting, beep only"),
    T("it", "human", "take_message", "Al momento non è in ufficio, / vuole che le riferisca qualcosa?", notes="hard: 'non è in ufficio'"),
    T("it", "human", "hello", "Pronto? / Chi è?"),
    T("it", "human", "receptionist", "{company}, buonasera, / parla {first}, in cosa posso esserle utile?"),
    T("it", "human", "monologue", "Sì pronto, guardi, sono appena entrato in riunione, non posso parlare, mi può richiamare nel pomeriggio?", notes="long unbroken live answer"),
]
# fmt: on

# A fourth held-out set, written before the round on using all the evidence of a call (at
# which point heldout3's errors were about to be looked at: it stops being blind). Its
# wordings appear in no template above. Only its totals are looked at, once: the blind figure.
# fmt: off
TEMPLATES_HELDOUT4: list[T] = [
    # English, machines
    T("en", "machine", "personal", "Hey, you've reached {first}'s cell. / Sorry I couldn't grab it. / Leave your name and a quick note and I'll get right back to you.", "maybe"),
    T("en", "machine", "personal_nocue", "Hi, this is {first} {last}. / I'm out hiking this week with barely any signal. / I'll be back on Sunday and I'll return calls then.", "never", "long, no phrase cue, no beep"),
    T("en", "machine", "business", "Good afternoon, you've called {company}. / Our team is away for the holiday. / We reopen on Tuesday at eight. / Please record your details and we'll be in touch.", "maybe"),
    T("en", "machine", "carrier", "The cellular subscriber you are trying to call cannot be reached. / Please record a message at the tone.", "always"),
    T("en", "machine", "personal_nocue", "Hey, {first}. / You know the drill.", "always", "short, no phrase cue"),
    T("en", "machine", "beep_only", "", "always", "no greeting, beep only"),
    T("en", "machine", "carrier_full", "This subscriber's mailbox cannot take new messages right now. / Please try later.", "never"),
    # English, people
    T("en", "human", "take_message", "Oh, she just ran to the store. / Can I pass along a message?", notes="hard: 'message' said live"),
    T("en", "human", "hello", "Hello? / May I ask who's calling?"),
    T("en", "human", "receptionist", "{company}, this is {first}. / Let me put you through, please hold.", notes="hard: receptionist transferring, then silence"),
    T("en", "human", "long", "Hello, yeah, this is {first}, sorry it took me a while to pick up, I was out in the garden, / who am I speaking with?", notes="long live answer"),
    T("en", "human", "mentions_voicemail", "Hi, I was just about to check my voicemail, / did you just call me?", notes="hard: 'voicemail' said live"),
    T("en", "human", "silent_then_hello", "// Hello? / Anybody there?"),
    T("en", "human", "take_message", "He's away from his desk. / You can leave a message with me if you like.", notes="hard: 'leave a message' said live, no question"),
    T("en", "human", "monologue", "Hi yes hello, I'm so glad you called back, I was waiting all morning because the delivery never showed up and nobody at the store could tell me anything.", notes="long unbroken live answer"),
    # Spanish
    T("es", "machine", "personal", "Hola, has llamado a {first}. / Ahora mismo no puedo atenderte. / Cuéntame qué necesitas después del pitido.", "maybe"),
    T("es", "machine", "carrier", "El teléfono marcado se encuentra apagado o fuera del área de cobertura. / Por favor, inténtelo más tarde.", "never"),
    T("es", "machine", "business", "Gracias por comunicarse con {company}. / Nuestro horario de atención es de lunes a viernes de nueve a seis. / Deje sus datos y le devolveremos la llamada.", "maybe"),
    T("es", "machine", "personal_nocue", "Soy {first}. / Ya sabes qué hacer.", "always", "short, no phrase cue"),
    T("es", "machine", "silent_mailbox", "", "never", "no greeting and no beep"),
    T("es", "human", "take_message", "No está en casa ahora mismo, / ¿quiere que le diga algo?", notes="hard"),
    T("es", "human", "hello", "¿Bueno? / ¿Con quién hablo?"),
    T("es", "human", "receptionist", "{company}, le atiende {first}, / ¿en qué le puedo servir?"),
    T("es", "human", "long", "Sí, dígame, soy {first}, perdone que tardé en contestar, estaba en la cocina, / ¿de parte de quién?", notes="long live answer"),
    T("es", "human", "mentions_voicemail", "Hola, me saltó el buzón y no pude contestar, / ¿quién habla?", notes="hard: 'buzón' said live"),
    # French
    T("fr", "machine", "personal", "Coucou, c'est {first}. / Je ne suis pas dispo pour l'instant. / Laisse-moi un petit mot et je te rappelle.", "maybe"),
    T("fr", "machine", "carrier", "Bienvenue sur la messagerie vocale de votre correspondant. / Il n'est pas disponible. / Déposez votre message après le signal sonore.", "always"),
    T("fr", "machine", "business", "Vous êtes bien chez {company}. / Nos bureaux sont actuellement fermés. / Nous sommes ouverts du lundi au vendredi de neuf heures à dix-huit heures.", "never", "no mailbox cue"),
    T("fr", "machine", "personal_short", "{first} {last}, / à vous.", "always", "short greeting"),
    T("fr", "human", "take_message", "Elle n'est pas là pour l'instant, / vous voulez laisser un message ?", notes="hard: 'laisser un message' said live"),
    T("fr", "human", "hello", "Oui ? / Qui est-ce ?"),
    T("fr", "human", "receptionist", "{company}, bonjour, {first} à l'appareil, / je vous passe le service, ne quittez pas.", notes="hard: receptionist transferring"),
    T("fr", "human", "silent_then_hello", "// Allô ? / Il y a quelqu'un ?"),
    T("fr", "human", "mentions_voicemail", "Allô, oui, j'ai eu votre message sur mon répondeur, / c'est à propos de quoi ?", notes="hard: 'répondeur' said live"),
    # German
    T("de", "machine", "personal", "Hi, du hast {first} erreicht. / Ich kann gerade nicht ran. / Sag mir nach dem Ton, worum es geht.", "maybe"),
    T("de", "machine", "carrier", "Der gewünschte Gesprächspartner ist zurzeit nicht erreichbar. / Bitte hinterlassen Sie eine Nachricht.", "maybe"),
    T("de", "machine", "business", "Guten Tag und willkommen bei {company}. / Alle Mitarbeiter sind derzeit im Gespräch. / Bitte hinterlassen Sie Ihren Namen und Ihre Telefonnummer, wir rufen Sie schnellstmöglich zurück.", "maybe"),
    T("de", "machine", "personal_nocue", "Servus, {first} hier. / Bis bald!", "always", "short, no phrase cue"),
    T("de", "machine", "beep_only", "", "always", "no greeting, beep only"),
    T("de", "human", "take_message", "Der Chef ist gerade in einer Besprechung. / Kann ich etwas notieren?", notes="hard"),
    T("de", "human", "hello", "{last}? / Wer ist da bitte?"),
    T("de", "human", "receptionist", "{company}, {first} am Apparat, / ich verbinde Sie gleich, einen Moment bitte.", notes="hard: receptionist transferring"),
    T("de", "human", "long", "Ja hallo, hier ist {first}, ich bin gerade beim Einkaufen und hab die Hände voll, / was gibt's denn?", notes="long live answer"),
    T("de", "human", "mentions_voicemail", "Hallo, ich hab gerade Ihre Nachricht auf der Mailbox gesehen, / worum geht's?", notes="hard: 'Mailbox' said live"),
    # Portuguese
    T("pt", "machine", "personal", "Olá, você ligou para {first} {last}. / No momento não posso falar. / Deixe seu recado que eu ligo de volta.", "maybe"),
    T("pt", "machine", "carrier", "Este número está fora da área de cobertura ou desligado. / Por favor, ligue mais tarde.", "never"),
    T("pt", "machine", "business", "Obrigado por ligar para {company}. / Estamos fora do horário de atendimento. / Grave sua mensagem após o sinal.", "always"),
    T("pt", "machine", "personal_nocue", "{first}. / Fala aí.", "always", "very short, no phrase cue"),
    T("pt", "machine", "silent_mailbox", "", "never", "no greeting and no beep"),
    T("pt", "human", "take_message", "Ele está no banho agora, / quer deixar recado?", notes="hard: 'recado' said live"),
    T("pt", "human", "hello", "Sim? / De onde fala?"),
    T("pt", "human", "receptionist", "{company}, bom dia, / vou transferir sua ligação, um momento.", notes="hard: receptionist transferring"),
    T("pt", "human", "long", "Oi, é o {first}, desculpa a demora pra atender, tava lá fora no quintal, / quem é?", notes="long live answer"),
    T("pt", "human", "silent_then_hello", "// Alô? / Oi?"),
    # Italian
    T("it", "machine", "personal", "Ciao, sono {first} {last}. / Ora non posso rispondere. / Lasciami pure un messaggio e ti richiamo appena posso.", "maybe"),
    T("it", "machine", "carrier", "L'utente da lei chiamato non è al momento disponibile. / La preghiamo di riprovare più tardi.", "never"),
    T("it", "machine", "business", "Grazie per aver chiamato {company}. / I nostri uffici riapriranno lunedì mattina. / Registrate il vostro messaggio dopo il segnale.", "maybe"),
    T("it", "machine", "personal_nocue", "Ehilà, {first} qui. / Ci sentiamo!", "always", "short, no phrase cue"),
    T("it", "human", "take_message", "Non c'è, è uscito un attimo, / gli lascio detto qualcosa?", notes="hard"),
    T("it", "human", "hello", "Pronto? / Con chi parlo?"),
    T("it", "human", "receptionist", "{company}, buongiorno, sono {first}, / gliela passo subito, attenda in linea.", notes="hard: receptionist transferring"),
    T("it", "human", "long", "Pronto, sì, sono {first}, mi scusi se ho risposto tardi ma ero in giardino, / chi parla?", notes="long live answer"),
    T("it", "human", "mentions_voicemail", "Pronto, ho sentito il suo messaggio in segreteria, / mi dica pure.", notes="hard: 'segreteria' said live"),
]
# fmt: on

# A fifth held-out set, written at the start of the round on keeping people safe on unseen
# wordings, before any change to the detectors and before heldout4's errors were looked at:
# the blind split from then on. Hard people in all six languages (take a message, who is
# calling, receptionists and live staff who sound like a phone menu ("you've reached the front
# desk, this is ..., how can I help?"), long live answers, people who mention voicemail or say
# "leave a message" live, silent then hello) and machines of every kind.
# fmt: off
TEMPLATES_HELDOUT5: list[T] = [
    # English, people
    T("en", "human", "take_message", "No, sorry, {first}'s at work till six. / Want me to tell her you rang?", notes="hard: take a message"),
    T("en", "human", "hello", "Hi there. / Sorry, who did you say you were with?"),
    T("en", "human", "receptionist", "You've reached the front desk at {company}, this is {first}, / how can I help?", notes="hard: live staff opening like a phone menu"),
    T("en", "human", "receptionist", "Thank you for calling {company}, {first} speaking, / how may I direct your call?", notes="hard: receptionist"),
    T("en", "human", "long", "Yeah hi, sorry, I'm driving right now so you're on speaker, I can talk for a minute though, / what's this about?", notes="long live answer"),
    T("en", "human", "mentions_voicemail", "Hello, yes, sorry, my phone says I had a missed call and a voicemail from this number, / what can I do for you?", notes="hard: 'voicemail' said live"),
    T("en", "human", "take_message", "She's not in. / If you leave a message with me, I'll make sure she gets it.", notes="hard: 'leave a message' said live, no question"),
    T("en", "human", "silent_then_hello", "// Uh, hi? / Is someone on the line?"),
    # English, machines
    T("en", "machine", "personal", "Hi, it's {first}. / I'm probably on the other line. / Drop me a message and I'll call you back as soon as I'm free.", "maybe"),
    T("en", "machine", "business", "You've reached the {company} service line. / To check the status of an order, press one. / To speak with someone, stay on the line.", "never", "phone menu"),
    T("en", "machine", "carrier", "We're sorry, the number you have dialed is not in service. / Please check the number and dial again.", "never"),
    T("en", "machine", "personal_nocue", "{first} here. / Shoot.", "always", "short, no phrase cue"),
    T("en", "machine", "trick", "Hi! / Hello? // Hah, gotcha, this is just my machine. / Tell me who it is after the beep.", "always", "trick greeting"),
    T("en", "machine", "carrier_full", "Sorry, {first}'s voice mailbox has reached its limit. / Goodbye.", "never"),
    T("en", "machine", "silent_mailbox", "", "never", "no greeting and no beep"),
    # Spanish, people
    T("es", "human", "take_message", "Ahorita no se encuentra, salió a trabajar, / ¿le quiere dejar algún recado?", notes="hard: 'recado' said live"),
    T("es", "human", "hello", "¿Aló? / ¿Quién me llama?"),
    T("es", "human", "receptionist", "Ha comunicado con la recepción de {company}, le habla {first}, / ¿en qué puedo ayudarle?", notes="hard: live staff opening like a phone menu"),
    T("es", "human", "long", "Sí, hola, soy {first}, disculpe que estoy en el coche y le tengo en altavoz, / ¿qué necesita?", notes="long live answer"),
    T("es", "human", "mentions_voicemail", "Hola, vi que me dejó un mensaje en el buzón de voz, / ¿de qué se trata?", notes="hard: 'buzón de voz' said live"),
    T("es", "human", "silent_then_hello", "// ¿Hola? / ¿Me escucha?"),
    # Spanish, machines
    T("es", "machine", "personal", "Hola, soy {first} {last}. / En este momento no estoy disponible. / Deja tu nombre y número y te llamo luego.", "maybe"),
    T("es", "machine", "business", "Bienvenido a {company}. / Para ventas, marque uno. / Para soporte técnico, marque dos.", "never", "phone menu"),
    T("es", "machine", "carrier", "El número que usted marcó no existe. / Verifique el número e intente de nuevo.", "never"),
    T("es", "machine", "personal_nocue", "{first} al habla. / Nos vemos.", "always", "short, no phrase cue"),
    # French, people
    T("fr", "human", "take_message", "Il est sorti faire une course, / je peux lui dire que vous avez appelé ?", notes="hard"),
    T("fr", "human", "hello", "Allô ? / C'est de la part de qui ?"),
    T("fr", "human", "receptionist", "Vous êtes bien à l'accueil de {company}, je suis {first}, / en quoi puis-je vous aider ?", notes="hard: live staff opening like a phone menu"),
    T("fr", "human", "long", "Oui allô, c'est {first}, excusez-moi j'étais sous la douche et je n'ai pas entendu le téléphone tout de suite, / c'est pour quoi ?", notes="long live answer"),
    T("fr", "human", "take_message", "Elle est en réunion. / Vous pouvez me laisser un message, je lui transmettrai.", notes="hard: 'laisser un message' said live, no question"),
    T("fr", "human", "silent_then_hello", "// Allô ? / Vous m'entendez ?"),
    # French, machines
    T("fr", "machine", "personal", "Ici la boîte vocale de {first}. / Je suis absent pour la journée. / Dites-moi qui vous êtes après le bip.", "maybe"),
    T("fr", "machine", "business", "{company}, bonjour. / Tous nos conseillers sont occupés. / Merci de rappeler ultérieurement.", "never", "no mailbox cue"),
    T("fr", "machine", "carrier", "Le numéro que vous avez demandé n'est pas attribué. / Veuillez consulter l'annuaire.", "never"),
    T("fr", "machine", "personal_nocue", "Ici {first}. / Bonne journée !", "always", "short, no phrase cue"),
    # German, people
    T("de", "human", "take_message", "Frau {last} ist heute im Homeoffice, / darf ich ihr ausrichten, dass Sie angerufen haben?", notes="hard"),
    T("de", "human", "hello", "Ja, hallo? / Wer spricht denn da?"),
    T("de", "human", "receptionist", "Sie sind verbunden mit der Zentrale von {company}, mein Name ist {first}, / was kann ich für Sie tun?", notes="hard: live staff opening like a phone menu"),
    T("de", "human", "long", "Hallo, {first} hier, entschuldigen Sie, ich war gerade im Keller und bin schnell hochgelaufen, / wer ist denn dran?", notes="long live answer"),
    T("de", "human", "mentions_voicemail", "Hallo, ich wollte Sie gerade zurückrufen, ich hab Ihre Sprachnachricht abgehört, / geht es um den Termin?", notes="hard: 'Sprachnachricht' said live"),
    T("de", "human", "take_message", "Er ist gerade nicht da. / Sie können mir gern eine Nachricht für ihn hinterlassen.", notes="hard: 'Nachricht hinterlassen' said live, no question"),
    # German, machines
    T("de", "machine", "personal", "Hallo, hier ist der Anrufbeantworter von {first} {last}. / Leider bin ich nicht zu Hause. / Sprechen Sie nach dem Piepton.", "maybe"),
    T("de", "machine", "business", "Willkommen bei {company}. / Unsere Geschäftszeiten sind Montag bis Freitag von acht bis siebzehn Uhr. / Rufen Sie uns gerne während dieser Zeiten wieder an.", "never", "no mailbox cue"),
    T("de", "machine", "carrier", "Kein Anschluss unter dieser Nummer.", "never", "short carrier prompt"),
    T("de", "machine", "silent_mailbox", "", "never", "no greeting and no beep"),
    # Portuguese, people
    T("pt", "human", "take_message", "Minha esposa foi buscar as crianças na escola, / quer que eu anote o seu número?", notes="hard"),
    T("pt", "human", "hello", "Estou? / Quem é que está a falar?"),
    T("pt", "human", "receptionist", "Você ligou para a {company}, aqui é {first}, / como posso ajudar?", notes="hard: live staff opening like a phone menu"),
    T("pt", "human", "long", "Alô, é a {first}, desculpa, eu estava no meio de uma reunião e tive que sair da sala pra atender, / o que é que houve?", notes="long live answer"),
    T("pt", "human", "mentions_voicemail", "Oi, eu vi que caiu na caixa postal quando você ligou, / era você?", notes="hard: 'caixa postal' said live"),
    T("pt", "human", "silent_then_hello", "// Sim? / Alguém na linha?"),
    # Portuguese, machines
    T("pt", "machine", "personal", "E aí, é o {first}. / Tô sem poder falar agora. / Deixa teu recado depois do sinal.", "maybe"),
    T("pt", "machine", "carrier", "O número chamado não existe. / Verifique e disque novamente.", "never"),
    T("pt", "machine", "business", "Você ligou para {company}. / Todos os nossos atendentes estão ocupados. / Por favor, aguarde na linha ou ligue mais tarde.", "never", "queue prompt, no mailbox"),
    T("pt", "machine", "beep_only", "", "always", "no greeting, beep only"),
    # Italian, people
    T("it", "human", "take_message", "Mio marito non c'è adesso, / vuole che lo faccia richiamare?", notes="hard"),
    T("it", "human", "hello", "Pronto, sì? / Da parte di chi, scusi?"),
    T("it", "human", "receptionist", "Ha chiamato {company}, risponde {first}, / in cosa posso aiutarla?", notes="hard: live staff opening like a phone menu"),
    T("it", "human", "long", "Pronto, sono {first}, scusi ma sono in macchina e la sento un po' male, mi sono appena fermato, / chi è?", notes="long live answer"),
    T("it", "human", "take_message", "La dottoressa è in visita, / se vuole può lasciare un messaggio a me.", notes="hard: 'lasciare un messaggio' said live, no question"),
    T("it", "human", "silent_then_hello", "// Pronto? / Mi sente?"),
    # Italian, machines
    T("it", "machine", "personal", "Ciao, hai chiamato {first}. / Al momento sono occupato. / Lascia un messaggio dopo il bip.", "maybe"),
    T("it", "machine", "carrier", "Il numero selezionato è inesistente.", "never", "short carrier prompt"),
    T("it", "machine", "business", "Benvenuti in {company}. / Per l'assistenza clienti, prema uno. / Per l'amministrazione, prema due.", "never", "phone menu"),
    T("it", "machine", "personal_nocue", "Sono {first}, / dimmi tutto.", "always", "short, no phrase cue"),
]
# fmt: on

# A sixth held-out set, written at the start of the round on the arbiter's use of AMD, before
# any change to the detectors and before heldout5's errors were looked at: the blind split from
# then on. Hard people in all six languages (long live answers, take a message, receptionists
# and front desks, people who mention voicemail or messages, silent then hello, people who
# answer with their name and company) and machines of every kind, incl. short ones without
# cue words and beep-only.
# fmt: off
TEMPLATES_HELDOUT6: list[T] = [
    # English, people
    T("en", "human", "long", "Oh hey, yeah, sorry, I was just out back feeding the dogs and had to run for the phone, / who's this?", notes="long live answer"),
    T("en", "human", "take_message", "He just popped out to the shop, / should I get him to ring you when he's back?", notes="hard: take a message"),
    T("en", "human", "receptionist", "Good afternoon, {company} reception, {first} here, / who would you like to speak to?", notes="hard: receptionist"),
    T("en", "human", "mentions_voicemail", "Yeah, hi, I got your message on my voicemail this morning, sorry I didn't get back to you, / what did you need?", notes="hard: 'voicemail' and 'message' said live"),
    T("en", "human", "self_id", "{first} {last}, {company}, / how can I help you today?", notes="name and company"),
    T("en", "human", "silent_then_hello", "// Hello-o? / You there?"),
    T("en", "human", "take_message", "Mum's in the garden, / I can grab a pen and write down a message if you want.", notes="hard: 'message' said live"),
    # English, machines
    T("en", "machine", "personal", "Hey, this is {first}. / Can't pick up right now. / Say your piece and I'll get back to you.", "maybe"),
    T("en", "machine", "business", "Thanks for calling {company}. / Our office is currently closed. / Our regular hours are nine to five, Monday through Friday.", "never", "closed office, no mailbox cue"),
    T("en", "machine", "carrier", "Sorry, the mobile subscriber you have called cannot be reached right now. / Please hang up and try later.", "never"),
    T("en", "machine", "personal_short", "{first}. / Leave it at the tone.", "always", "short"),
    T("en", "machine", "personal_nocue", "Yo, {first}. / Talk.", "always", "short, no phrase cue"),
    T("en", "machine", "beep_only", "", "always", "no greeting, beep only"),
    # Spanish, people
    T("es", "human", "long", "Bueno, sí, dígame, perdone la tardanza que estaba bañando al niño y no encontraba el teléfono, / ¿quién habla?", notes="long live answer"),
    T("es", "human", "take_message", "Mi hermana está en el médico, / si quiere le apunto su teléfono y ella le llama.", notes="hard: take a message"),
    T("es", "human", "receptionist", "Clínica {company}, buenos días, le atiende {first}, / ¿con quién desea hablar?", notes="hard: receptionist"),
    T("es", "human", "mentions_voicemail", "Sí, hola, escuché el mensaje que me dejó en el contestador, / ¿qué pasó?", notes="hard: 'mensaje' and 'contestador' said live"),
    T("es", "human", "silent_then_hello", "// ¿Bueno? / ¿Hay alguien?"),
    # Spanish, machines
    T("es", "machine", "personal", "Qué tal, habla {first}. / No puedo contestar ahorita. / Mándame un mensaje y te marco después.", "maybe"),
    T("es", "machine", "carrier", "El teléfono móvil al que llama está apagado o fuera del área de cobertura.", "never"),
    T("es", "machine", "personal_nocue", "Soy {first}. / Ya sabes.", "always", "short, no phrase cue"),
    T("es", "machine", "business", "Ha llamado fuera de nuestro horario. / {company} atiende de lunes a viernes de nueve a seis.", "never", "no mailbox cue"),
    # French, people
    T("fr", "human", "long", "Oui bonjour, pardon, j'étais en train de conduire, je me suis garée sur le côté pour vous répondre, / qu'est-ce que je peux faire pour vous ?", notes="long live answer"),
    T("fr", "human", "take_message", "Mon père fait la sieste, / vous voulez que je lui fasse passer un mot ?", notes="hard: take a message"),
    T("fr", "human", "receptionist", "Cabinet {company}, {first} à l'appareil, / qui dois-je annoncer ?", notes="hard: receptionist"),
    T("fr", "human", "mentions_voicemail", "Oui bonsoir, je viens d'écouter ma messagerie et j'ai vu que vous aviez laissé un mot, / je vous écoute.", notes="hard: 'répondeur' said live"),
    T("fr", "human", "silent_then_hello", "// Oui ? / Allô, qui est là ?"),
    # French, machines
    T("fr", "machine", "personal", "Coucou, c'est {first}. / Je ne peux pas décrocher. / Laisse-moi un petit mot, je te rappelle.", "maybe"),
    T("fr", "machine", "carrier", "Votre correspondant n'est pas joignable pour le moment. / Merci de renouveler votre appel.", "never"),
    T("fr", "machine", "personal_nocue", "{first}. / À plus !", "always", "short, no phrase cue"),
    T("fr", "machine", "business", "Bienvenue chez {company}. / Pour le service commercial, tapez un. / Pour la comptabilité, tapez deux.", "never", "phone menu"),
    # German, people
    T("de", "human", "long", "Ja hallo, {first} am Apparat, Moment bitte, ich muss kurz die Tür zumachen, hier ist es so laut, / so, jetzt, wer ist da?", notes="long live answer"),
    T("de", "human", "take_message", "Mein Mann ist noch auf der Arbeit, / soll ich ihm was ausrichten?", notes="hard: take a message"),
    T("de", "human", "receptionist", "Praxis Doktor {last}, Sie sprechen mit {first}, / was kann ich für Sie tun?", notes="hard: receptionist"),
    T("de", "human", "self_id", "{company}, {last}, / guten Tag.", notes="name and company"),
    T("de", "human", "silent_then_hello", "// Hallo? / Ist da wer?"),
    # German, machines
    T("de", "machine", "personal", "Servus, hier ist {first}. / Ich bin grad nicht erreichbar. / Sprich mir einfach drauf, ich meld mich.", "maybe"),
    T("de", "machine", "carrier", "Die von Ihnen gewählte Mobilfunknummer ist derzeit nicht erreichbar. / Auf Wiederhören.", "never"),
    T("de", "machine", "personal_nocue", "{first}. / Bis dann.", "always", "short, no phrase cue"),
    T("de", "machine", "beep_only", "", "always", "no greeting, beep only"),
    # Portuguese, people
    T("pt", "human", "long", "Alô, oi, é o {first}, desculpa a demora, tava lavando a louça e o celular tava lá na sala, / quem fala?", notes="long live answer"),
    T("pt", "human", "take_message", "Ele foi no mercado, / quer deixar um recado comigo?", notes="hard: 'recado' said live"),
    T("pt", "human", "receptionist", "{company}, bom dia, {first} falando, / com quem gostaria de falar?", notes="hard: receptionist"),
    T("pt", "human", "mentions_voicemail", "Oi, eu ouvi sua mensagem de voz agora, / pode falar?", notes="hard: 'mensagem de voz' said live"),
    T("pt", "human", "silent_then_hello", "// Alô? / Tem alguém aí?"),
    # Portuguese, machines
    T("pt", "machine", "personal", "Olá, aqui é a {first}. / Não posso atender no momento. / Grave sua mensagem que eu retorno.", "maybe"),
    T("pt", "machine", "carrier", "O número para o qual ligou encontra-se indisponível neste momento.", "never"),
    T("pt", "machine", "personal_nocue", "É o {first}. / Depois a gente se fala.", "always", "short, no phrase cue"),
    # Italian, people
    T("it", "human", "long", "Pronto, sì, mi scusi, ero giù in cantina e ho sentito squillare solo adesso, ho fatto le scale di corsa, / chi parla?", notes="long live answer"),
    T("it", "human", "take_message", "Mia sorella è uscita col cane, / vuole che le dica qualcosa?", notes="hard: take a message"),
    T("it", "human", "receptionist", "Studio {company}, buongiorno, sono {first}, / con chi vuole parlare?", notes="hard: receptionist"),
    T("it", "human", "mentions_voicemail", "Sì, buonasera, ho appena ascoltato la segreteria e c'era una sua chiamata, / cosa posso fare per lei?", notes="hard: 'segreteria' said live"),
    T("it", "human", "silent_then_hello", "// Pronto? / C'è qualcuno?"),
    # Italian, machines
    T("it", "machine", "personal", "Ehi, sono {first}. / Adesso non posso rispondere. / Lasciami due parole e ti richiamo.", "maybe"),
    T("it", "machine", "carrier", "L'utente chiamato al momento non è disponibile. / La preghiamo di richiamare più tardi.", "never"),
    T("it", "machine", "personal_nocue", "{first}. / A presto.", "always", "short, no phrase cue"),
    T("it", "machine", "silent_mailbox", "", "never", "no greeting and no beep"),
]
TEMPLATES_HELDOUT7: list[T] = [
    # English, people
    T("en", "human", "long", "Yeah hello, sorry about the noise, I'm on the train and the signal keeps cutting in and out, / what's this regarding?", notes="long live answer"),
    T("en", "human", "take_message", "She's tied up in a meeting until three, / shall I let her know somebody rang for her?", notes="hard: take a message"),
    T("en", "human", "receptionist", "{company} front office, {first} speaking, / is this for sales or for billing?", notes="hard: receptionist"),
    T("en", "human", "mentions_voicemail", "Hi, yeah, my voicemail's been full for weeks so I figured I'd better actually pick up, / who am I talking to?", notes="hard: 'voicemail' said live"),
    T("en", "human", "self_id", "This is {first} from {company}, / go ahead.", notes="name and company"),
    T("en", "human", "silent_then_hello", "// Um, hi there, hello? / Is anybody actually on this call?"),
    T("en", "human", "take_message", "Dad's asleep on the couch, / do you want me to get him to phone you tomorrow?", notes="hard: take a message"),
    # English, machines
    T("en", "machine", "personal", "Hiya, {first} here. / I'm out and about at the moment. / Drop me a message after the beep and I'll ring you back.", "maybe"),
    T("en", "machine", "business", "You've called {company}. / We're away for the holidays and will reopen on Monday the fourth. / Please leave your details after the tone.", "maybe", "holiday closure"),
    T("en", "machine", "carrier", "The wireless customer you are trying to reach is unavailable. / Kindly attempt your call once more in a few minutes.", "never"),
    T("en", "machine", "carrier_full", "The voice mailbox you have dialed cannot accept any more messages at this time. / This call will now end.", "never"),
    T("en", "machine", "personal_nocue", "{first} and {last}. / Cheers then.", "always", "short, no phrase cue"),
    T("en", "machine", "beep_only", "", "always", "no greeting, beep only"),
    # Spanish, people
    T("es", "human", "long", "Sí, aló, perdone que estaba en la cocina con las manos llenas de harina y tuve que limpiarme, / ¿quién me llama, por favor?", notes="long live answer"),
    T("es", "human", "take_message", "Mi marido salió a trabajar temprano, / ¿quiere que le diga que usted llamó?", notes="hard: take a message"),
    T("es", "human", "receptionist", "Despacho {company}, buenas tardes, habla {first}, / ¿a quién le paso?", notes="hard: receptionist"),
    T("es", "human", "mentions_voicemail", "Hola, vi que tenía una llamada perdida y un mensaje de voz suyo, / ¿me decía?", notes="hard: 'mensaje de voz' said live"),
    T("es", "human", "silent_then_hello", "// ¿Aló, aló? / ¿Me escucha alguien?"),
    # Spanish, machines
    T("es", "machine", "personal", "Hola, te comunicaste con {first}. / Ahora mismo estoy ocupado. / Déjame tu recado después del tono.", "maybe"),
    T("es", "machine", "carrier", "El número marcado no existe. / Por favor revise el número y vuelva a marcar.", "never"),
    T("es", "machine", "personal_nocue", "{first} {last} al habla. / Chao, chao.", "always", "short, no phrase cue"),
    T("es", "machine", "business", "Usted se ha comunicado con el conmutador de {company}. / Para ventas, oprima uno. / Para soporte técnico, oprima dos.", "never", "phone menu"),
    # French, people
    T("fr", "human", "long", "Allô oui, excusez-moi, j'avais le bébé dans les bras et il a fallu que je le pose dans son lit, / c'est pour quoi exactement ?", notes="long live answer"),
    T("fr", "human", "take_message", "Ma femme est partie chercher les enfants, / je lui dis de vous rappeler ?", notes="hard: take a message"),
    T("fr", "human", "receptionist", "Agence {company}, {first} bonjour, / vous souhaitez parler à quel conseiller ?", notes="hard: receptionist"),
    T("fr", "human", "mentions_voicemail", "Oui, j'ai eu votre message vocal hier soir mais je n'ai pas pu rappeler, / dites-moi tout.", notes="hard: 'message vocal' said live"),
    T("fr", "human", "silent_then_hello", "// Allô allô ? / Y a quelqu'un au bout du fil ?"),
    # French, machines
    T("fr", "machine", "personal", "Salut, vous êtes bien chez {first}. / Je suis absent pour l'instant. / Laissez vos coordonnées après le signal.", "maybe"),
    T("fr", "machine", "carrier", "Le numéro que vous avez composé n'est plus attribué.", "never"),
    T("fr", "machine", "personal_nocue", "Ici {first} {last}. / Gros bisous.", "always", "short, no phrase cue"),
    T("fr", "machine", "silent_mailbox", "", "never", "no greeting and no beep"),
    # German, people
    T("de", "human", "long", "Ja, {last}, hallo, Entschuldigung, ich stand gerade unter der Dusche und bin schnell rausgesprungen, / mit wem spreche ich bitte?", notes="long live answer"),
    T("de", "human", "take_message", "Meine Frau ist beim Einkaufen, / soll sie Sie zurückrufen?", notes="hard: take a message"),
    T("de", "human", "receptionist", "Kanzlei {company}, guten Morgen, {first} hier, / mit wem darf ich Sie verbinden?", notes="hard: receptionist"),
    T("de", "human", "mentions_voicemail", "Hallo, ich hab gesehen, dass Sie mir auf den Anrufbeantworter gesprochen haben, / was kann ich denn für Sie tun?", notes="hard: 'Anrufbeantworter' said live"),
    T("de", "human", "silent_then_hello", "// Ja, bitte schön? / Hört mich jemand?"),
    # German, machines
    T("de", "machine", "personal", "Hey, hier ist die Box von {first}. / Ich kann gerade nicht rangehen. / Hinterlass mir eine Nachricht nach dem Ton.", "maybe"),
    T("de", "machine", "business", "Schön, dass Sie {company} anrufen. / Unsere Geschäftszeiten sind montags bis freitags von acht bis siebzehn Uhr. / Vielen Dank für Ihren Anruf.", "never", "closed office, no mailbox cue"),
    T("de", "machine", "carrier", "Der gewünschte Teilnehmer ist momentan leider nicht zu erreichen. / Rufen Sie bitte zu einem späteren Zeitpunkt wieder an.", "never"),
    T("de", "machine", "personal_nocue", "{first} {last} hier. / Tschüssi.", "always", "short, no phrase cue"),
    # Portuguese, people
    T("pt", "human", "long", "Alô, pois não, desculpa, eu tava no quintal estendendo roupa e deixei o telefone na mesa, / é da onde?", notes="long live answer"),
    T("pt", "human", "take_message", "A minha mãe tá no banho agora, / quer que eu peça pra ela retornar?", notes="hard: take a message"),
    T("pt", "human", "receptionist", "Escritório {company}, boa tarde, aqui é a {first}, / deseja falar com qual setor?", notes="hard: receptionist"),
    T("pt", "human", "mentions_voicemail", "Oi, eu vi que você deixou recado na minha caixa postal, / o que houve?", notes="hard: 'caixa postal' said live"),
    T("pt", "human", "silent_then_hello", "// Oi, alô? / Tem alguém falando comigo?"),
    # Portuguese, machines
    T("pt", "machine", "personal", "E aí, caiu na caixa do {first}. / Tô sem poder atender agora. / Deixa o teu recado depois do bipe.", "maybe"),
    T("pt", "machine", "carrier", "Este número de telefone não existe. / Por favor, verifique o número discado.", "never"),
    T("pt", "machine", "personal_nocue", "{first} {last} aqui. / Tchau, tchau.", "always", "short, no phrase cue"),
    T("pt", "machine", "beep_only", "", "always", "no greeting, beep only"),
    # Italian, people
    T("it", "human", "long", "Pronto, eccomi, scusi tanto, stavo scaricando la spesa dalla macchina e avevo le mani occupate, / scusi, lei chi sarebbe?", notes="long live answer"),
    T("it", "human", "take_message", "Mio figlio è a scuola adesso, / gli faccio richiamare lei più tardi?", notes="hard: take a message"),
    T("it", "human", "receptionist", "Agenzia {company}, buonasera, parla {first}, / a chi la passo?", notes="hard: receptionist"),
    T("it", "human", "mentions_voicemail", "Sì, salve, ho trovato un suo messaggio vocale sul telefono, / mi racconti.", notes="hard: 'messaggio vocale' said live"),
    T("it", "human", "silent_then_hello", "// Sì? / Pronto, mi sente?"),
    # Italian, machines
    T("it", "machine", "personal", "Ciao, questa è la segreteria di {first}. / In questo momento sono occupato. / Lascia un messaggio dopo il segnale acustico.", "maybe"),
    T("it", "machine", "business", "Questo è il centralino automatico di {company}. / Per l'ufficio vendite, digiti uno. / Per l'amministrazione, digiti due.", "never", "phone menu"),
    T("it", "machine", "carrier", "Il numero da lei composto risulta inesistente. / Si prega di controllare il numero.", "never"),
    T("it", "machine", "personal_nocue", "{first} {last} qua. / Ci si becca.", "always", "short, no phrase cue"),
]
# fmt: on

BEEP_FREQS_HZ = [1000, 1000, 1000, 1000, 850, 950, 1400, 440, 1200, 600, 1800]


def template_split(t: T) -> str:
    """Held-out by template: about one template in three, chosen by a hash of its text."""
    digest = hashlib.sha256(f"{t.lang}|{t.label}|{t.text}|{t.category}".encode()).digest()
    return "heldout" if digest[0] % 3 == 0 else "dev"


def fill(text: str, lang: str, rng: random.Random) -> str:
    first, last = rng.choice(NAMES[lang])
    return (
        text.replace("{first}", first)
        .replace("{last}", last)
        .replace("{company}", rng.choice(COMPANIES[lang]))
        .replace("{number}", rng.choice(NUMBER_WORDS[lang]))
    )


def asr_degrade(text: str, rng: random.Random, plain: bool, error: bool) -> str:
    words = text.split()
    if error and len(words) > 2:
        i = rng.randrange(len(words))
        if rng.random() < 0.5:
            del words[i]
        else:
            w = words[i]
            words[i] = w[: max(1, len(w) // 2)] + ("a" if not w.endswith("a") else "o")
    out = " ".join(words)
    if plain:
        out = re.sub(r"[^\w\s'-]", "", out).lower()
        out = re.sub(r"\s+", " ", out).strip()
    return out


def speech_ms(text: str, words_per_s: float, rng: random.Random) -> int:
    n = max(1, len(text.split()))
    return int(150 + n * 1000 / words_per_s + rng.uniform(-60, 120))


def emulate_amd(
    utterances: list[dict[str, Any]], beep: dict[str, Any] | None, rng: random.Random
) -> dict[str, Any]:
    """Twilio async AMD with DetectMessageEnd and default thresholds, on this timeline."""
    speech_threshold, end_threshold, silence_timeout = 2400, 1200, 5000
    if not utterances or utterances[0]["start_ms"] > silence_timeout:
        if beep is not None and beep["start_ms"] < silence_timeout:
            answered, dur = "machine_end_beep", beep["start_ms"] + beep["duration_ms"] + 150
        else:
            answered, dur = "unknown", silence_timeout + rng.randint(0, 300)
    else:
        # The first "speech run": utterances joined while the gap is under end_threshold.
        run_start = utterances[0]["start_ms"]
        run_end = utterances[0]["end_ms"]
        for u in utterances[1:]:
            if u["start_ms"] - run_end < end_threshold:
                run_end = u["end_ms"]
            else:
                break
        if run_end - run_start < speech_threshold:
            answered, dur = "human", run_end + end_threshold + rng.randint(0, 250)
        else:
            # Machine: wait for the end of the message (beep, or silence after speech).
            last_end = max(u["end_ms"] for u in utterances)
            if beep is not None:
                answered = "machine_end_beep"
                dur = beep["start_ms"] + beep["duration_ms"] + rng.randint(80, 300)
            elif last_end > 30000:
                answered, dur = "machine_end_other", 30000
            else:
                answered = "machine_end_silence"
                dur = last_end + end_threshold + rng.randint(100, 500)
            dur = max(dur, run_start + speech_threshold)
    # On top of the mechanism, Twilio is not perfect: ~4% random confusion.
    roll = rng.random()
    if roll < 0.02:
        answered = "unknown"
        dur = max(dur, silence_timeout) + rng.randint(0, 2000)
    elif roll < 0.04:
        answered = "human" if answered.startswith("machine") else "machine_end_other"
    return {
        "type": "amd",
        "answered_by": answered,
        "machine_detection_duration_ms": int(dur),
        "at_ms": int(dur + rng.randint(80, 400)),
    }


def make_case(t: T, variant: int, index: int, rng: random.Random) -> dict[str, Any]:
    machine = t.label == "machine"
    text = fill(t.text, t.lang, rng)
    plain = rng.random() < 0.33
    error = rng.random() < 0.12
    rate = rng.uniform(2.6, 3.4) if machine else rng.uniform(3.0, 4.0)
    t_ms = rng.randint(300, 1600) if machine else rng.randint(200, 1400)
    events: list[dict[str, Any]] = []
    utterances: list[dict[str, Any]] = []
    if text.strip():
        # Split on "//" (long pause) then "/" (short pause).
        pieces: list[tuple[str, str]] = []
        for j, block in enumerate(text.split("//")):
            for k, seg in enumerate(block.split("/")):
                gap = "long" if (j > 0 and k == 0) else ("short" if k > 0 else "none")
                pieces.append((seg.strip(), gap))
        for seg, gap in pieces:
            if gap == "long":
                t_ms += rng.randint(1800, 3500) if not machine else rng.randint(900, 1400)
            elif gap == "short":
                t_ms += rng.randint(150, 550) if rng.random() < 0.85 else rng.randint(550, 900)
            if not seg:
                continue
            dur = speech_ms(seg, rate, rng)
            utterances.append(
                {
                    "type": "utterance",
                    "text": asr_degrade(seg, rng, plain, error and rng.random() < 0.5),
                    "start_ms": t_ms,
                    "end_ms": t_ms + dur,
                }
            )
            t_ms += dur
        events.extend(utterances)
    beep: dict[str, Any] | None = None
    wants_beep = machine and (t.beep == "always" or (t.beep == "maybe" and rng.random() < 0.75))
    if wants_beep:
        beep = {
            "type": "beep",
            "start_ms": t_ms + rng.randint(200, 900),
            "duration_ms": rng.choice([150, 200, 300, 400, 450, 500, 500, 600, 800, 1000]),
            "frequency_hz": rng.choice(BEEP_FREQS_HZ),
        }
        events.append(beep)
    events.append(emulate_amd(utterances, beep, rng))
    events.sort(key=lambda e: e.get("start_ms", e.get("at_ms", 0)))
    notes = t.notes
    if plain:
        notes = (notes + "; " if notes else "") + "transcript without punctuation"
    if machine and t.beep != "never" and beep is None:
        notes = (notes + "; " if notes else "") + "greeting ends without a beep"
    return {
        "id": f"{t.lang}-{t.label[0]}-{index:03d}-{variant}",
        "label": t.label,
        "language": t.lang,
        "category": t.category,
        "split": template_split(t),
        "events": events,
        "notes": notes,
    }


def main() -> None:
    rng = random.Random(SEED)
    cases = [make_case(t, variant, i, rng) for i, t in enumerate(TEMPLATES) for variant in (1, 2)]
    # The second held-out set continues the same random stream, so adding it left every
    # case above byte-identical.
    offset = len(TEMPLATES)
    for i, t in enumerate(TEMPLATES_HELDOUT2):
        for variant in (1, 2):
            case = make_case(t, variant, offset + i, rng)
            case["split"] = "heldout2"
            cases.append(case)
    # The third held-out set continues the stream again: every case above stays identical.
    offset += len(TEMPLATES_HELDOUT2)
    for i, t in enumerate(TEMPLATES_HELDOUT3):
        for variant in (1, 2):
            case = make_case(t, variant, offset + i, rng)
            case["split"] = "heldout3"
            cases.append(case)
    # The fourth held-out set continues the stream again: every case above stays identical.
    offset += len(TEMPLATES_HELDOUT3)
    for i, t in enumerate(TEMPLATES_HELDOUT4):
        for variant in (1, 2):
            case = make_case(t, variant, offset + i, rng)
            case["split"] = "heldout4"
            cases.append(case)
    # The fifth held-out set continues the stream again: every case above stays identical.
    offset += len(TEMPLATES_HELDOUT4)
    for i, t in enumerate(TEMPLATES_HELDOUT5):
        for variant in (1, 2):
            case = make_case(t, variant, offset + i, rng)
            case["split"] = "heldout5"
            cases.append(case)
    # The sixth held-out set continues the stream again: every case above stays identical.
    offset += len(TEMPLATES_HELDOUT5)
    for i, t in enumerate(TEMPLATES_HELDOUT6):
        for variant in (1, 2):
            case = make_case(t, variant, offset + i, rng)
            case["split"] = "heldout6"
            cases.append(case)
    # The seventh held-out set continues the stream again: every case above stays identical.
    offset += len(TEMPLATES_HELDOUT6)
    for i, t in enumerate(TEMPLATES_HELDOUT7):
        for variant in (1, 2):
            case = make_case(t, variant, offset + i, rng)
            case["split"] = "heldout7"
            cases.append(case)
    with OUT.open("w", encoding="utf-8") as f:
        for c in cases:
            f.write(json.dumps(c, ensure_ascii=False) + "\n")
    n_h = sum(c["label"] == "human" for c in cases)
    n_ho = sum(c["split"] == "heldout" for c in cases)
    n_ho2 = sum(c["split"] == "heldout2" for c in cases)
    n_ho3 = sum(c["split"] == "heldout3" for c in cases)
    n_ho4 = sum(c["split"] == "heldout4" for c in cases)
    n_ho5 = sum(c["split"] == "heldout5" for c in cases)
    n_ho6 = sum(c["split"] == "heldout6" for c in cases)
    n_ho7 = sum(c["split"] == "heldout7" for c in cases)
    print(
        f"{len(cases)} cases ({n_h} human, {len(cases) - n_h} machine), "
        f"{n_ho} held out, {n_ho2} in the second held-out set, {n_ho3} in the third, "
        f"{n_ho4} in the fourth, {n_ho5} in the fifth, {n_ho6} in the sixth, "
        f"{n_ho7} in the seventh -> {OUT}"
    )


if __name__ == "__main__":
    main()
