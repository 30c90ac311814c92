"""The VoicemailProcessor in a chain, on event sequences (hand-set clock, small fakes).

What reaches turn taking, what the processor emits and in which order, for: a person's
"Hello?", AMD first, transcript first, beep first, AMD and transcript disagreeing, late AMD
(overriding or not), a late machine after the opener, the three actions, no opener, and the
call ending before a verdict.
"""

from __future__ import annotations

import pytest

from nixflex_engine.frames import (
    AMDResultFrame,
    CancelFrame,
    EndCallFrame,
    InterimTranscriptFrame,
    InterruptionFrame,
    TranscriptEntryFrame,
    TranscriptFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VoicemailResultFrame,
)
from nixflex_engine.processors.voicemail import VoicemailProcessor

from .rig import Rig

WELCOME = "Hi, this is Anna from Acme."
MESSAGE = "Hi, this is Anna from Acme, please call us back."


def speaks(rig: Rig) -> list[tuple[str, str | None]]:
    return [(f.text, f.end_call_reason) for f in rig.of(TTSSpeakFrame)]


def caller_lines(rig: Rig) -> list[str]:
    return [e.text for e in rig.of(TranscriptEntryFrame) if e.role == "caller"]


async def test_hello_then_silence_gets_the_opener_and_never_reaches_turn_taking() -> None:
    async with Rig() as rig:
        await rig.say("Hello?", 300, 900)
        await rig.at(1000)
        assert rig.of(TTSSpeakFrame) == []  # 100 ms of silence: not yet
        await rig.at(1500)  # 600 ms of silence after a short greeting: a person
        assert speaks(rig) == [(WELCOME, None)]
        assert rig.caller_frames() == []  # the opener answers "Hello?", not the LLM
        assert caller_lines(rig) == ["Hello?"]  # ...which stays in the transcript
        (result,) = rig.of(VoicemailResultFrame)
        assert result.voicemail_detected is False and result.method is None
        assert result.detected_ms == pytest.approx(1500)
        kinds = rig.kinds()
        assert kinds.index("VoicemailResultFrame") < kinds.index("TTSSpeakFrame")
        assert rig.vm.mode == "conversation"

        # The reply to the opener is the conversation: it passes, and no second opener.
        await rig.say("Who is this?", 3000, 3700)
        assert [type(f) for f in rig.caller_frames()] == [
            UserStartedSpeakingFrame,
            InterimTranscriptFrame,
            UserStoppedSpeakingFrame,
            TranscriptFrame,
        ]
        assert rig.of(TranscriptFrame)[-1].text == "Who is this?"
        assert len(rig.of(TTSSpeakFrame)) == 1 and rig.of(EndCallFrame) == []

        # Ticks stop once late weak evidence no longer counts; the beep detector after the
        # late window (only a late AMD is looked at then).
        await rig.at(4400)
        assert rig.vm.timer_running
        await rig.at(1500 + 3000 + 200)
        assert not rig.vm.timer_running and rig.vm.beep_running
        await rig.at(31000)
        await rig.silence_until(100)
        assert not rig.vm.beep_running


async def test_a_late_final_of_the_greeting_is_kept_from_turn_taking() -> None:
    # The opener is allowed on the VAD's silence before the STT's final arrives.
    async with Rig() as rig:
        rig.clock.t = 460
        await rig.send(UserStartedSpeakingFrame(start_ms=300))
        rig.clock.t = 800
        await rig.send(InterimTranscriptFrame(text="Hello", start_ms=300, end_ms=700))
        rig.clock.t = 1200
        await rig.send(UserStoppedSpeakingFrame(start_ms=300, stop_ms=900))
        await rig.at(1500)
        assert speaks(rig) == [(WELCOME, None)]
        assert caller_lines(rig) == []  # the interim waits for its final
        rig.clock.t = 1700
        await rig.send(TranscriptFrame(text="Hello?", start_ms=300, end_ms=900, speech_final=True))
        rig.clock.t = 2300
        await rig.send(TranscriptFrame(text="", start_ms=900, end_ms=900, speech_final=True))
        assert rig.caller_frames() == []
        assert caller_lines(rig) == ["Hello?"]


async def test_amd_first_machine_hangs_up_at_once() -> None:
    async with Rig(voicemail_action="hangup") as rig:
        await rig.at(200)
        await rig.amd("machine_end_beep", 400, 350)
        await rig.wait_for(lambda: rig.task.done)
        (result,) = rig.of(VoicemailResultFrame)
        assert (result.voicemail_detected, result.method, result.amd_result, result.late) == (
            True,
            "amd",
            "machine_end_beep",
            False,
        )
        assert result.detected_ms == pytest.approx(400)
        assert rig.kinds()[-2:] == ["VoicemailResultFrame", "EndCallFrame"]
        assert rig.of(EndCallFrame)[0].reason == "voicemail"
        assert rig.of(TTSSpeakFrame) == [] and rig.of(InterruptionFrame) == []
        assert len(rig.of(AMDResultFrame)) == 1  # passed on for whoever wants it
    assert rig.task.result is not None and rig.task.result.reason == "voicemail"
    assert not rig.vm.timer_running and not rig.vm.beep_running


GREETING = [
    ("Hi, you've reached Sarah Miller.", 300, 2400),
    ("I can't take your call right now.", 2700, 5000),
    ("Please leave a message after the beep.", 5300, 8000),
]


async def test_transcript_first_leave_message_speaks_after_the_beep() -> None:
    async with Rig(voicemail_action="leave_message") as rig:
        for text, start, end in GREETING[:2]:
            await rig.say(text, start, end)
        (result,) = rig.of(VoicemailResultFrame)
        assert result.voicemail_detected is True and result.method == "transcript"
        assert rig.vm.mode == "machine" and rig.of(TTSSpeakFrame) == []
        await rig.say(*GREETING[2])
        await rig.at(8500)
        assert rig.of(TTSSpeakFrame) == []  # the greeting promised a tone: wait for it
        await rig.silence_until(8800)
        await rig.tone(1000, 500)  # the beep: 8800-9300 on the line
        await rig.silence_until(9400)
        await rig.wait_for(lambda: rig.task.done)
        assert speaks(rig) == [(MESSAGE, "voicemail")]
        assert rig.caller_frames() == []  # nothing of the machine reached turn taking
        assert caller_lines(rig) == [" ".join(t for t, _, _ in GREETING)]
        kinds = rig.kinds()
        assert kinds.index("TranscriptEntryFrame") < kinds.index("TTSSpeakFrame")
        assert rig.of(InterruptionFrame) == []
    assert rig.task.result is not None and rig.task.result.reason == "voicemail"


async def test_beep_first_is_a_machine() -> None:
    async with Rig(voicemail_action="hangup") as rig:
        await rig.silence_until(300)
        await rig.tone(850, 400)
        await rig.wait_for(lambda: rig.task.done)
        (result,) = rig.of(VoicemailResultFrame)
        assert result.voicemail_detected is True and result.method == "beep"
        # Confirmed once the tone lasted 150 ms (less one 20 ms frame), not at its end.
        assert result.detected_ms is not None and 300 + 120 <= result.detected_ms <= 300 + 200
        assert rig.of(EndCallFrame)[0].reason == "voicemail"


async def test_amd_machine_against_a_long_live_answer_waits_and_the_person_wins() -> None:
    async with Rig(voicemail_action="hangup") as rig:
        await rig.say(
            "Hi, this is John speaking from the front desk of the hotel, how can I help you?",
            300,
            5000,
        )
        await rig.amd("machine_end_silence", 5200, 5000)
        await rig.at(5300)
        assert rig.of(VoicemailResultFrame) == [] and rig.of(EndCallFrame) == []
        await rig.at(5700)
        assert speaks(rig) == [(WELCOME, None)]
        (result,) = rig.of(VoicemailResultFrame)
        assert result.voicemail_detected is False
        assert result.amd_result == "machine_end_silence"
        assert rig.vm.arbiter.result().disagreements
        assert rig.caller_frames() == [] and rig.of(EndCallFrame) == []


async def test_late_amd_after_an_opener_on_silence_leaves_the_message() -> None:
    async with Rig(voicemail_action="leave_message") as rig:
        await rig.at(2600)  # 2.5 s of nothing: the agent speaks first
        assert speaks(rig) == [(WELCOME, None)]
        await rig.amd("machine_end_beep", 4000, 3900)
        await rig.at(4100)
        results = rig.of(VoicemailResultFrame)
        assert [(r.voicemail_detected, r.late) for r in results] == [(False, False), (True, True)]
        assert results[1].method == "amd" and results[1].amd_result == "machine_end_beep"
        # Interrupt the opener, then the message; not final yet: a beep may still restart it.
        assert speaks(rig) == [(WELCOME, None), (MESSAGE, None)]
        kinds = rig.kinds()
        message = len(kinds) - 1 - kinds[::-1].index("TTSSpeakFrame")
        # The opener is cut at the verdict, and any reply in flight just before the message.
        assert kinds[message - 1] == "InterruptionFrame"
        assert kinds.index("InterruptionFrame") < message
        await rig.at(4000 + 5000 + 100)  # the restart window is over: end after the audio
        await rig.wait_for(lambda: rig.task.done)
        assert speaks(rig)[-1] == ("", "voicemail")
    assert rig.task.result is not None and rig.task.result.reason == "voicemail"


async def test_late_amd_against_a_person_who_asked_who_is_calling_is_only_recorded() -> None:
    async with Rig(voicemail_action="hangup") as rig:
        await rig.say("Yeah, hello, who is this?", 300, 2000)
        await rig.at(2600)
        assert speaks(rig) == [(WELCOME, None)]
        await rig.amd("machine_end_silence", 6000, 5800)
        await rig.at(6100)
        results = rig.of(VoicemailResultFrame)
        assert [(r.voicemail_detected, r.amd_result) for r in results] == [
            (False, None),
            (False, "machine_end_silence"),
        ]
        assert rig.of(EndCallFrame) == [] and rig.of(InterruptionFrame) == []
        assert not rig.task.done


async def test_late_machine_after_the_opener_interrupts_then_hangs_up() -> None:
    # "Hi!" and a pause (a recorded greeting) got the opener; the rest of the recording
    # follows while turn taking already hears it.
    async with Rig(voicemail_action="hangup") as rig:
        await rig.say("Hi!", 300, 700)
        await rig.at(1300)
        assert speaks(rig) == [(WELCOME, None)]
        rig.clock.t = 1760
        await rig.send(UserStartedSpeakingFrame(start_ms=1600))
        rig.clock.t = 3000
        await rig.send(InterimTranscriptFrame(text="This is John", start_ms=1600, end_ms=2900))
        rig.clock.t = 4000
        await rig.send(
            InterimTranscriptFrame(
                text="This is John, please leave a message after the tone",
                start_ms=1600,
                end_ms=3900,
            )
        )
        await rig.wait_for(lambda: rig.task.done)
        # Turn taking saw the start of it, then the speech closed before the hang-up.
        seen = rig.caller_frames()
        assert isinstance(seen[0], UserStartedSpeakingFrame)
        assert isinstance(seen[-1], UserStoppedSpeakingFrame)
        assert [type(f).__name__ for f in seen] == [
            "UserStartedSpeakingFrame",
            "InterimTranscriptFrame",
            "UserStoppedSpeakingFrame",
        ]
        kinds = rig.kinds()
        assert kinds[-3:] == ["VoicemailResultFrame", "InterruptionFrame", "EndCallFrame"]
        assert rig.of(VoicemailResultFrame)[-1].late is True
        assert rig.of(VoicemailResultFrame)[-1].method == "transcript"
    assert rig.task.result is not None and rig.task.result.reason == "voicemail"


async def test_ignore_speaks_the_opener_to_a_machine_once_it_pauses() -> None:
    async with Rig(voicemail_action="ignore") as rig:
        rig.clock.t = 460
        await rig.send(UserStartedSpeakingFrame(start_ms=300))
        rig.clock.t = 1500
        await rig.send(
            InterimTranscriptFrame(
                text="The person you are calling is not available", start_ms=300, end_ms=1400
            )
        )
        (result,) = rig.of(VoicemailResultFrame)
        assert result.voicemail_detected is True and result.method == "transcript"
        await rig.at(1600)
        assert rig.of(TTSSpeakFrame) == []  # it is still talking: the opener waits
        rig.clock.t = 2600
        await rig.send(UserStoppedSpeakingFrame(start_ms=300, stop_ms=2300))
        assert speaks(rig) == [(WELCOME, None)]
        rig.clock.t = 2700
        await rig.send(
            TranscriptFrame(
                text="The person you are calling is not available.",
                start_ms=300,
                end_ms=2300,
                speech_final=True,
            )
        )
        assert rig.caller_frames() == []
        assert caller_lines(rig) == ["The person you are calling is not available."]
        await rig.say("Please try again later.", 3000, 4500)
        assert rig.of(TranscriptFrame)[-1].text == "Please try again later."  # as a person
        assert rig.of(EndCallFrame) == [] and not rig.task.done


async def test_no_opener_replays_the_greeting_to_turn_taking() -> None:
    async with Rig(welcome_message="") as rig:
        await rig.say("Hello?", 300, 900)
        assert rig.caller_frames() == []
        await rig.at(1500)
        assert rig.of(TTSSpeakFrame) == []
        assert [type(f).__name__ for f in rig.caller_frames()] == [
            "UserStartedSpeakingFrame",
            "InterimTranscriptFrame",
            "UserStoppedSpeakingFrame",
            "TranscriptFrame",
        ]
        assert caller_lines(rig) == []  # the turn will put it in the transcript
        await rig.say("Anyone there?", 3000, 3800)
        assert rig.of(TranscriptFrame)[-1].text == "Anyone there?"


async def test_restart_when_a_beep_ends_after_a_message_started_on_silence() -> None:
    async with Rig(voicemail_action="leave_message") as rig:
        await rig.say("Hi, this is Sarah, I can't take your call, leave me a message.", 300, 4000)
        await rig.silence_until(5400)
        assert speaks(rig) == []
        await rig.silence_until(5600)  # 1.5 s of silence after the greeting: start
        await rig.at(5600)
        assert speaks(rig) == [(MESSAGE, None)]
        await rig.silence_until(6500)
        await rig.tone(1000, 400)  # a late beep: the recording starts only now
        await rig.silence_until(7000)
        await rig.wait_for(lambda: rig.task.done)
        assert speaks(rig) == [(MESSAGE, None), (MESSAGE, "voicemail")]
        kinds = rig.kinds()
        second = len(kinds) - 1 - kinds[::-1].index("TTSSpeakFrame")
        assert kinds[second - 1] == "InterruptionFrame"
    assert rig.task.result is not None and rig.task.result.reason == "voicemail"


async def test_caller_hangs_up_before_a_verdict() -> None:
    async with Rig() as rig:
        await rig.say("Hi you've", 300, 900)
        rig.clock.t = 1000
        await rig.send(CancelFrame(reason="caller_hangup"))
        await rig.wait_for(lambda: rig.task.done)
        (result,) = rig.of(VoicemailResultFrame)
        assert result.voicemail_detected is None
        assert caller_lines(rig) == ["Hi you've"]
        assert rig.kinds()[-1] == "CancelFrame"


async def test_amd_disabled_ignores_the_callback() -> None:
    async with Rig(amd_enabled=False, voicemail_action="hangup") as rig:
        await rig.amd("machine_end_beep", 400)
        await rig.at(600)
        assert rig.of(VoicemailResultFrame) == [] and not rig.task.done
        assert rig.vm.arbiter.result().amd_result is None


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        VoicemailProcessor(voicemail_action="beep")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        VoicemailProcessor(tick_interval_ms=0)


async def test_amd_human_mid_sentence_holds_the_opener_until_the_caller_pauses() -> None:
    async with Rig(voicemail_action="hangup") as rig:
        rig.clock.t = 460
        await rig.send(UserStartedSpeakingFrame(start_ms=300))
        rig.clock.t = 900
        await rig.send(InterimTranscriptFrame(text="Hi there", start_ms=300, end_ms=800))
        await rig.amd("human", 1000, 900)
        (result,) = rig.of(VoicemailResultFrame)
        assert result.voicemail_detected is False and result.amd_result == "human"
        await rig.at(1100)
        assert rig.of(TTSSpeakFrame) == []  # not over the caller
        rig.clock.t = 1500
        await rig.send(InterimTranscriptFrame(text="Hi there, yes", start_ms=300, end_ms=1200))
        rig.clock.t = 1600
        await rig.send(UserStoppedSpeakingFrame(start_ms=300, stop_ms=1250))
        assert speaks(rig) == [(WELCOME, None)]
        rig.clock.t = 1700
        await rig.send(
            TranscriptFrame(text="Hi there, yes.", start_ms=300, end_ms=1250, speech_final=True)
        )
        # The whole segment was the greeting: turn taking saw none of it.
        assert rig.caller_frames() == []
        assert caller_lines(rig) == ["Hi there, yes."]


async def test_a_caller_who_talks_on_gets_the_opener_after_opener_max_wait_ms() -> None:
    async with Rig(voicemail_action="hangup", opener_max_wait_ms=1000) as rig:
        rig.clock.t = 460
        await rig.send(UserStartedSpeakingFrame(start_ms=300))
        await rig.amd("human", 800, 700)
        await rig.at(1700)
        assert rig.of(TTSSpeakFrame) == []
        await rig.at(1850)
        assert speaks(rig) == [(WELCOME, None)]
        # The interim of the speech still going on is the greeting's, for the transcript.
        rig.clock.t = 1900
        await rig.send(InterimTranscriptFrame(text="so anyway", start_ms=300, end_ms=1800))
        await rig.at(1900 + 2100)  # no final came: flushed with the interim
        assert caller_lines(rig) == ["so anyway"] and rig.caller_frames() == []


async def test_speech_begun_before_an_opener_on_silence_belongs_to_the_greeting() -> None:
    async with Rig() as rig:
        await rig.at(2550)  # 2.5 s of nothing: the opener
        assert speaks(rig) == [(WELCOME, None)]
        # The caller had started at 2450; the VAD confirms it 160 ms later.
        await rig.say("Hello?", 2450, 2900)
        assert rig.caller_frames() == []
        assert caller_lines(rig) == ["Hello?"]
        await rig.say("Who's calling?", 4500, 5400)
        assert [f.text for f in rig.of(TranscriptFrame)] == ["Who's calling?"]
        assert isinstance(rig.caller_frames()[0], UserStartedSpeakingFrame)


async def test_a_beep_after_the_opener_overrides_a_bare_hi() -> None:
    async with Rig(voicemail_action="hangup") as rig:
        await rig.say("Hi!", 300, 700)
        await rig.at(1300)
        assert speaks(rig) == [(WELCOME, None)]
        assert rig.vm.beep_running  # within the late window
        await rig.silence_until(2500)
        await rig.tone(1000, 400)
        await rig.wait_for(lambda: rig.task.done)
        last = rig.of(VoicemailResultFrame)[-1]
        assert (last.voicemail_detected, last.method, last.late) == (True, "beep", True)
        assert rig.kinds()[-2:] == ["InterruptionFrame", "EndCallFrame"]


async def test_without_late_beep_detection_the_detector_stops_at_the_verdict() -> None:
    async with Rig(voicemail_action="hangup", late_beep_detection=False) as rig:
        await rig.say("Hi!", 300, 700)
        await rig.at(1300)
        assert speaks(rig) == [(WELCOME, None)]
        await rig.silence_until(2500)
        assert not rig.vm.beep_running
        await rig.tone(1000, 400)
        await rig.at(3200)
        assert [r.voicemail_detected for r in rig.of(VoicemailResultFrame)] == [False]
        assert not rig.task.done
