"""The voicemail processor in the real chain, over real sockets on 127.0.0.1.

    sandbox callee ⇄ Twilio media transport → MulawDecoder → VAD → DeepgramSTT (fake Deepgram)
      → VoicemailProcessor → DeepgramTTS (fake Deepgram) → TwilioOutput ⇄ callee

The callee plays scripts from ``sandbox/voicemail_scripts.py`` at real-time pace (the arbiter
judges silences and durations, so timing matters here) and reports what it heard; the test
plays the call session's part by injecting the script's AMD result when its callback would
arrive. Latencies are printed (``-s``) and only bounded generously.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette

from nixflex_engine.frames import (
    AMDResultFrame,
    BotStoppedSpeakingFrame,
    ErrorFrame,
    Frame,
    TranscriptEntryFrame,
    TranscriptFrame,
    TTSTextFrame,
    VoicemailResultFrame,
)
from nixflex_engine.pipeline import (
    DOWNSTREAM,
    UPSTREAM,
    FrameDirection,
    Pipeline,
    PipelineTask,
    RunResult,
)
from nixflex_engine.processors.codec import MulawDecoder
from nixflex_engine.processors.stt import DeepgramSTT
from nixflex_engine.processors.tts import DeepgramTTS
from nixflex_engine.processors.vad import VADProcessor
from nixflex_engine.processors.voicemail import VoicemailProcessor
from nixflex_engine.processors.voicemail_rules import ArbiterSettings
from nixflex_engine.sandbox.callee import CalleeResult, SandboxCallee
from nixflex_engine.sandbox.fake_deepgram import FakeDeepgram, ListenSettings, SpeakSettings
from nixflex_engine.sandbox.serve import serve_app, serve_sandbox
from nixflex_engine.sandbox.voicemail_scripts import VoicemailScript, get_script
from nixflex_engine.transports.twilio_media import (
    StartEvent,
    TwilioMediaTransport,
    twilio_media_route,
)

DG_KEY = "dg-voicemail-test"
WELCOME = "Hi, this is Anna from Acme."
MESSAGE = "Hi, this is Anna from Acme, please call us back."


@dataclass
class Call:
    result: RunResult
    seen: list[tuple[Frame, FrameDirection]]
    pending_tasks: int
    run_ms: float  # from the stream start to the end of the run

    def down(self, kind: type[Any]) -> list[Any]:
        return [f for f, d in self.seen if isinstance(f, kind) and d == DOWNSTREAM]


@dataclass
class Engine:
    url: str = ""
    calls: list[Call] = field(default_factory=list)
    finished: asyncio.Event = field(default_factory=asyncio.Event)


StopWhen = Callable[[Frame, FrameDirection], bool]


@asynccontextmanager
async def engine(
    *,
    script: VoicemailScript,
    voicemail_action: str,
    stop_when: StopWhen | None = None,
    settings: ArbiterSettings | None = None,
) -> AsyncIterator[Engine]:
    """The chain behind a Twilio media route, with the fakes on their own server."""
    deepgram = FakeDeepgram(api_key=DG_KEY, listen=ListenSettings(), speak=SpeakSettings())
    state = Engine()
    async with serve_sandbox(deepgram=deepgram) as fakes:

        async def on_stream(transport: TwilioMediaTransport, start: StartEvent) -> None:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            seen: list[tuple[Frame, FrameDirection]] = []
            vm = VoicemailProcessor(
                voicemail_action=voicemail_action,  # type: ignore[arg-type]
                voicemail_message=MESSAGE,
                welcome_message=WELCOME,
                settings=settings,
            )
            task = PipelineTask(
                Pipeline(
                    [
                        transport.input(),
                        MulawDecoder(),
                        VADProcessor(),
                        DeepgramSTT(api_key=DG_KEY, base_url=fakes),
                        vm,
                        DeepgramTTS(api_key=DG_KEY, base_url=fakes),
                        transport.output(),
                    ]
                ),
                call_id="vm-chain",
            )

            def observe(frame: Frame, direction: FrameDirection) -> None:
                seen.append((frame, direction))
                if stop_when is not None and stop_when(frame, direction):
                    asyncio.get_running_loop().create_task(task.cancel("test_over"))

            task.add_observer(observe)

            async def carrier_amd() -> None:  # the session injects Twilio's AMD callback
                await asyncio.sleep(script.amd.callback_ms / 1000.0)
                await task.queue_frame(
                    AMDResultFrame(script.amd.answered_by, script.amd.machine_detection_duration_ms)
                )

            amd = asyncio.create_task(carrier_amd())
            try:
                result = await task.run()
            finally:
                amd.cancel()
            state.calls.append(Call(result, seen, task.tasks.pending, (loop.time() - t0) * 1000.0))
            state.finished.set()

        route = twilio_media_route("/media", on_stream)
        async with serve_app(Starlette(routes=[route])) as base:
            state.url = base.replace("http://", "ws://") + "/media"
            yield state


async def place(script: VoicemailScript, action: str, **kw: Any) -> tuple[CalleeResult, Call]:
    async with engine(script=script, voicemail_action=action, **kw) as eng:
        callee = await asyncio.wait_for(
            SandboxCallee(eng.url, script.callee_script(), max_call_ms=40000).run(), 45
        )
        await asyncio.wait_for(eng.finished.wait(), 10)
        call = eng.calls[-1]
    assert callee.protocol_violations == []
    assert call.pending_tasks == 0
    errors = [f for f, _ in call.seen if isinstance(f, ErrorFrame)]
    assert errors == [], errors
    return callee, call


def words(text: str) -> list[str]:
    """Words only: TTS chunks are synthesized apart, so the space between two is not heard."""
    return re.findall(r"[\w']+", text)


def spoken(call: Call) -> list[str]:
    """The text of each TTS chunk the agent sent (the TTS consumes the speak frames)."""
    return [f.text for f in call.down(TTSTextFrame)]


def caller_lines(call: Call) -> list[str]:
    return [e.text for e in call.down(TranscriptEntryFrame) if e.role == "caller"]


async def test_a_person_saying_hello_gets_the_opener_on_the_greeting_cue() -> None:
    script = get_script("en_hello_then_silence")
    callee, call = await place(script, "hangup")

    assert callee.script_errors == []  # the agent spoke, the person answered and hung up
    assert callee.ended_by == "callee_hangup" and call.result.reason == "caller_hangup"
    heard = callee.heard_segments
    assert heard, "the caller heard nothing"
    hello_end_ms = script.timeline()[0].end_ms
    latency_ms = heard[0].start_ms - hello_end_ms
    print(f"\nopener latency: {latency_ms:.0f} ms from the end of 'Hello?' to agent audio heard")
    # The < 1 s target is a speed figure, so it is measured by benchmarks/voicemail_eval.py and
    # reported, not asserted here (a loaded CI machine would make it flaky). What the test
    # holds: the opener answers the greeting (after it, decided on the person's cue below).
    assert latency_ms > 0
    assert words(callee.heard_text()) == words(WELCOME)
    results = call.down(VoicemailResultFrame)
    assert [r.voicemail_detected for r in results] == [False] * len(results)
    assert results[0].reason.startswith("short greeting"), results[0].reason
    assert results[-1].amd_result == script.amd.answered_by == "human"  # arrived after
    assert " ".join(spoken(call)) == WELCOME
    # "Hello?" stayed behind the arbiter (in the transcript only); the reply went through.
    assert caller_lines(call) == ["Hello?"]
    passed = [f.text for f in call.down(TranscriptFrame) if f.text]
    assert passed and all("Hello?" not in t for t in passed)
    assert "Oh, hi. Sure, go ahead." in " ".join(passed)


async def test_voicemail_with_beep_gets_the_message_after_the_beep() -> None:
    script = get_script("en_personal_beep_short")
    callee, call = await place(script, "leave_message")

    assert call.result.reason == "voicemail" and not call.result.cancelled
    assert callee.ended_by == "engine_closed"
    beep_end_ms = script.beep_end_ms
    assert beep_end_ms is not None
    first = callee.heard_segments[0].start_ms
    print(f"\nmessage starts {first - beep_end_ms:.0f} ms after the beep ends")
    assert first >= beep_end_ms
    # Word for word, and all of it before the hang-up.
    assert words(callee.heard_text()) == words(MESSAGE)
    results = call.down(VoicemailResultFrame)
    assert results[0].voicemail_detected is True and results[0].method in ("transcript", "beep")
    assert caller_lines(call) == [script.greeting]
    assert " ".join(spoken(call)) == MESSAGE


async def test_a_message_after_a_greeting_without_beep_is_heard_in_full_then_hangs_up() -> None:
    # No beep: the message starts on the greeting's silence and could be restarted by a late
    # beep, so it goes without end_call_reason; when the (here shortened) restart window closes
    # while it still plays, an empty speak frame with the reason ends the call after its audio.
    script = get_script("en_personal_short_no_beep")
    callee, call = await place(
        script, "leave_message", settings=ArbiterSettings(restart_window_ms=1500.0)
    )

    assert call.result.reason == "voicemail" and callee.ended_by == "engine_closed"
    assert words(callee.heard_text()) == words(MESSAGE)  # all of it, then the hang-up
    first = callee.heard_segments[0].start_ms
    print(f"\nno beep: message starts {first - script.greeting_end_ms:.0f} ms after the greeting")
    assert first >= script.greeting_end_ms + 1500  # ArbiterSettings.greeting_silence_ms
    results = call.down(VoicemailResultFrame)
    assert results[0].voicemail_detected is True and results[0].method == "transcript"
    assert all(r.voicemail_detected for r in results)  # AMD's later "human" changes nothing
    assert caller_lines(call) == [script.greeting]


async def test_hangup_on_a_carrier_prompt_ends_the_call_quickly() -> None:
    script = get_script("en_carrier_voicemail")
    callee, call = await place(script, "hangup")

    assert call.result.reason == "voicemail" and callee.ended_by == "engine_closed"
    assert callee.heard_ms == 0  # the agent never spoke to the machine
    (result,) = call.down(VoicemailResultFrame)
    assert result.voicemail_detected is True and result.method == "transcript"
    print(f"\nhang-up: verdict {result.detected_ms:.0f} ms, run over {call.run_ms:.0f} ms")
    assert call.run_ms < script.greeting_end_ms  # before the greeting is even over
    # What was heard before the hang-up (the interim that decided it) is in the transcript.
    (line,) = caller_lines(call)
    assert line.startswith("The person you") and "The person you are calling".startswith(line)


async def test_ignore_speaks_the_opener_to_the_machine() -> None:
    script = get_script("en_carrier_voicemail")

    def opener_heard(frame: Frame, direction: FrameDirection) -> bool:
        return isinstance(frame, BotStoppedSpeakingFrame) and direction == UPSTREAM

    callee, call = await place(script, "ignore", stop_when=opener_heard)

    assert call.result.cancelled and call.result.reason == "test_over"
    results = call.down(VoicemailResultFrame)
    assert results and all(r.voicemail_detected is True for r in results)
    print(
        f"\nignore: machine at {results[0].detected_ms:.0f} ms, opener heard from "
        f"{callee.heard_segments[0].start_ms:.0f} ms (line time), after the prompt paused"
    )
    assert " ".join(spoken(call)) == WELCOME
    assert words(callee.heard_text()) == words(WELCOME)
