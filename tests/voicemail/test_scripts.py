"""The sandbox voicemail scripts: AMD emulation, coverage, and each script replayed through the
pure detectors (beep detector on the script's own audio, arbiter on its VAD/STT/AMD events)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from nixflex_engine.processors.beep import BeepDetector, BeepEvent
from nixflex_engine.processors.voicemail_rules import (
    Action,
    AllowOpener,
    EndCall,
    StartVoicemailMessage,
    VoicemailArbiter,
)
from nixflex_engine.sandbox import speech
from nixflex_engine.sandbox.callee import CalleeScript, Say, Silence, Tone
from nixflex_engine.sandbox.voicemail_scripts import (
    SCRIPTS,
    AmdThresholds,
    Segment,
    VoicemailScript,
    get_script,
    machine,
    person,
    twilio_amd,
)

LANGUAGES = {"en", "es", "fr", "de", "pt", "it"}


# --- AMD emulation ---------------------------------------------------------------------------


def test_twilio_amd_follows_the_documented_thresholds() -> None:
    th = AmdThresholds(callback_latency_ms=100.0)
    silent = twilio_amd([], th)
    assert (silent.answered_by, silent.machine_detection_duration_ms) == ("unknown", 5000)
    assert silent.callback_ms == 5100.0
    assert twilio_amd([Segment("speech", 6000, 7000, "late hello")], th).answered_by == "unknown"

    hello = twilio_amd([Segment("speech", 500, 950, "Hello?")], th)
    assert (hello.answered_by, hello.machine_detection_duration_ms) == ("human", 2150)
    # Two short bits with a pause shorter than the end threshold are one answer.
    two = [Segment("speech", 500, 1500, "a"), Segment("speech", 2000, 3500, "b")]
    assert twilio_amd(two, th).answered_by == "machine_end_silence"
    assert twilio_amd(two, th).machine_detection_duration_ms == 3500 + 1200

    greeting = [Segment("speech", 300, 5000, "long"), Segment("tone", 5700, 6200)]
    beep = twilio_amd(greeting, th)
    assert (beep.answered_by, beep.machine_detection_duration_ms) == ("machine_end_beep", 6200)
    # A beep after a pause long enough to end the speech still ends the message.
    late_beep = [Segment("speech", 300, 5000, "long"), Segment("tone", 7000, 7500)]
    assert twilio_amd(late_beep, th).answered_by == "machine_end_silence"
    assert twilio_amd([Segment("tone", 1500, 2000)], th).answered_by == "machine_end_beep"
    endless = [Segment("speech", 300 + 1000 * i, 1200 + 1000 * i, "x") for i in range(40)]
    assert twilio_amd(endless, th).answered_by == "machine_end_other"
    assert twilio_amd(endless, th).form() == {
        "AnsweredBy": "machine_end_other",
        "MachineDetectionDuration": "30000",
    }


def test_timeline_counts_whole_frames_like_the_callee() -> None:
    s = machine("t", "en", "test", ["Hi, leave a message."], beep=(1000.0, 410.0), record_ms=500)
    speech_seg, tone_seg = s.timeline()
    said = speech.duration_ms("Hi, leave a message.")
    assert speech_seg.start_ms == 300 and speech_seg.end_ms == 300 + said
    frames_ms = -(-said // 20) * 20
    assert tone_seg.start_ms == 300 + frames_ms + 700 and tone_seg.end_ms == tone_seg.start_ms + 410
    assert s.beep_end_ms == tone_seg.end_ms and s.greeting == "Hi, leave a message."
    assert isinstance(s.callee_script(), CalleeScript)
    p = person("p", "en", "hello", ["Hi", 300.0, "there?"], "ok")
    assert [seg.text for seg in p.timeline()] == ["Hi", "there?"]
    assert p.timeline()[1].start_ms == 500 + -(-speech.duration_ms("Hi") // 20) * 20 + 300


# --- coverage --------------------------------------------------------------------------------


def test_the_set_covers_what_the_issue_asks_for() -> None:
    names = [s.name for s in SCRIPTS]
    assert len(set(names)) == len(names)
    machines = [s for s in SCRIPTS if s.expected == "machine"]
    people = [s for s in SCRIPTS if s.expected == "human"]
    assert {s.language for s in machines} == LANGUAGES
    assert {s.language for s in people} == LANGUAGES
    with_beep = [s for s in machines if s.beep_end_ms is not None]
    assert with_beep and len(with_beep) < len(machines)
    lengths = [s.greeting_end_ms for s in machines if s.greeting]
    assert min(lengths) < 4000 < 10000 < max(lengths)
    assert any("person you are calling" in s.greeting for s in machines)
    greetings = {s.greeting for s in people}
    assert {"Hello?", "Yeah, hello, who is this?"} <= greetings
    assert any("can I take a message?" in g for g in greetings)
    assert any(s.category == "long" for s in people)
    assert get_script("silence").greeting == ""
    assert get_script("silence").amd.answered_by == "unknown"
    # Twilio's known errors are in the set: AMD disagrees with the truth somewhere each way.
    amd_says_machine = {s.name for s in SCRIPTS if s.amd.answered_by.startswith("machine")}
    assert any(s.name in amd_says_machine for s in people)
    assert any(s.amd.answered_by == "human" for s in machines)
    with pytest.raises(KeyError):
        get_script("nope")


# --- replay through the pure detectors -------------------------------------------------------


def script_audio(script: VoicemailScript, tail_ms: float = 4000.0) -> npt.NDArray[np.int16]:
    """The callee's audio up to its first wait for the agent (plus ``tail_ms`` of silence)."""
    parts: list[npt.NDArray[np.int16]] = []
    for step in script.steps:
        if isinstance(step, Say):
            a = speech.synthesize(step.text, pitch_hz=step.pitch_hz)
        elif isinstance(step, Tone):
            a = speech.tone(step.freq_hz, step.ms, level_dbfs=step.level_dbfs)
        elif isinstance(step, Silence):
            a = np.zeros(round(step.ms / 20) * 160, dtype=np.int16)
        else:
            break
        parts.append(np.concatenate([a, np.zeros(-a.size % 160, dtype=np.int16)]))
    audio = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
    return audio[: int((script.greeting_end_ms + tail_ms) * 8)]


def beeps(script: VoicemailScript) -> list[BeepEvent]:
    det = BeepDetector()
    audio = script_audio(script)
    out: list[BeepEvent] = []
    for i in range(0, audio.size - 159, 160):
        out += det.process(audio[i : i + 160])
    return out


def replay(script: VoicemailScript, action: str = "hangup") -> tuple[VoicemailArbiter, list[Any]]:
    """VAD (start 160 ms in, stop 400 ms after, short pauses bridged), STT (an interim every
    300 ms arriving 100 ms later, the final 300 ms after each sentence), the script's AMD at its
    callback time, beeps from the script's audio, and a tick every 20 ms."""
    evs: list[tuple[float, int, str, Any]] = []
    said = [s for s in script.timeline() if s.kind == "speech"]
    regions: list[list[float]] = []
    for s in said:
        if regions and s.start_ms - regions[-1][1] < 400:
            regions[-1][1] = s.end_ms
        else:
            regions.append([s.start_ms, s.end_ms])
    for a, b in regions:
        evs += [(a + 160, 1, "start", a), (b + 400, 1, "stop", (a, b))]
    for s in said:
        words = s.text.split()
        t = s.start_ms + 300
        while t < s.end_ms:
            k = int(len(words) * (t - s.start_ms) / (s.end_ms - s.start_ms))
            if k:
                evs.append((t + 100, 2, "text", (" ".join(words[:k]), False, s.start_ms, t)))
            t += 300
        evs.append((s.end_ms + 300, 2, "text", (s.text, True, s.start_ms, s.end_ms)))
    amd = script.amd
    evs.append((amd.callback_ms, 3, "amd", (amd.answered_by, amd.machine_detection_duration_ms)))
    evs += [(b.detected_ms, 0, "beep", b) for b in beeps(script)]
    horizon = int(max(script.greeting_end_ms, amd.callback_ms) + 4000)
    evs += [(float(t), 9, "tick", None) for t in range(0, horizon, 20)]
    arb = VoicemailArbiter(voicemail_action=action)  # type: ignore[arg-type]
    log: list[Action] = []
    for t, _, kind, d in sorted(evs, key=lambda e: (e[0], e[1])):
        if kind == "tick":
            acts = arb.tick(t)
        elif kind == "start":
            acts = arb.on_speech_started(d, now_ms=t)
        elif kind == "stop":
            acts = arb.on_speech_stopped(*d, now_ms=t)
        elif kind == "text":
            acts = arb.on_transcript(d[0], is_final=d[1], start_ms=d[2], end_ms=d[3], now_ms=t)
        elif kind == "amd":
            acts = arb.on_amd(*d, now_ms=t)
        else:
            acts = arb.on_beep(d, now_ms=t)
        log += acts
        if any(isinstance(a, EndCall) for a in acts):
            break
    return arb, log


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.name)
def test_each_script_is_classed_as_labelled(script: VoicemailScript) -> None:
    found = beeps(script)
    if script.beep_end_ms is None:
        assert found == []  # sandbox speech never looks like a beep
    else:
        start, end = found[0], found[1]
        assert start.kind == "start" and end.kind == "end"
        assert end.end_ms == pytest.approx(script.beep_end_ms, abs=25)

    arb, log = replay(script)
    result = arb.result()
    assert result.voicemail_detected is (script.expected == "machine"), result.reason
    if script.category in ("hello", "short"):
        # A person's short answer gets the opener within a second of its end.
        (allow,) = [a for a in log if isinstance(a, AllowOpener)]
        assert allow.at_ms - script.greeting_end_ms < 1000


@pytest.mark.parametrize(
    "script", [s for s in SCRIPTS if s.expected == "machine"], ids=lambda s: s.name
)
def test_leave_message_starts_after_the_beep(script: VoicemailScript) -> None:
    _, log = replay(script, "leave_message")
    starts = [a for a in log if isinstance(a, StartVoicemailMessage)]
    assert starts, f"no message for {script.name}"
    first = starts[0]
    beep_end = script.beep_end_ms
    if beep_end is not None:
        assert first.at_ms >= beep_end and first.trigger == "beep_end"
    else:
        assert first.at_ms >= script.greeting_end_ms
