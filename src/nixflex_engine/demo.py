"""``make demo``: a whole simulated call, offline, no keys.

Starts the sandbox (fake Deepgram STT/TTS and fake Anthropic, speaking the real wire
protocols, on 127.0.0.1) and an engine endpoint for Twilio's media stream, then connects the
sandbox callee — a fake Twilio media client playing a person — and runs the standard agent
chain (``calls.chain.build_standard_chain``) through the real SDKs. The person says "Hello?",
hears the opener, answers, interrupts a long reply, asks who is calling and says goodbye;
the agent ends the call with ``[END_CALL]``. Printed: each line as it happens, then the
transcript, the per-turn latency waterfall and the recording.

Sandbox speech is a data signal shaped like speech (``sandbox/speech.py``): the fake STT
decodes the callee's audio back to text and the callee decodes what it heard of the agent,
so the demo shows what was really heard after a barge-in.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from pydantic import SecretStr
from starlette.applications import Starlette

from nixflex_engine.calls.chain import AgentProfile, CallContext, build_standard_chain
from nixflex_engine.calls.run import CallOutcome, run_call
from nixflex_engine.config import Settings
from nixflex_engine.frames import (
    Frame,
    InterruptionFrame,
    TranscriptEntryFrame,
    VoicemailResultFrame,
)
from nixflex_engine.pipeline import FrameDirection
from nixflex_engine.sandbox.callee import (
    BargeIn,
    CalleeResult,
    SandboxCallee,
    Say,
    Silence,
    Step,
    UntilAgentSilent,
    UntilAgentSpeaks,
)
from nixflex_engine.sandbox.fake_anthropic import AnthropicSettings, FakeAnthropic, Rule
from nixflex_engine.sandbox.fake_deepgram import FakeDeepgram, ListenSettings, SpeakSettings
from nixflex_engine.sandbox.serve import serve_app, serve_sandbox
from nixflex_engine.transports.twilio_media import TwilioMediaTransport, twilio_media_route
from nixflex_engine.transports.twilio_protocol import StartEvent

__all__ = ["DEMO_AGENT", "main", "run_demo"]

DEEPGRAM_KEY = "sandbox-deepgram-key"
ANTHROPIC_KEY = "sandbox-anthropic-key"

DEMO_AGENT = AgentProfile(
    system_prompt=(
        "You are Anna, a friendly scheduling assistant at Riverside Clinic. You are calling "
        "{patient_name} to confirm their appointment on {appointment_time}. Keep replies short."
    ),
    welcome_message="Hi, is this {patient_name}?",
    voicemail_action="hangup",
)
DYNAMIC_VARS = {"patient_name": "Sarah", "appointment_time": "Tuesday at 2pm"}

#: The fake model's replies, matched on what the caller said last.
REPLIES = (
    Rule(
        r"what is it about",
        "I'm calling from Riverside Clinic about your appointment on Tuesday at 2pm. "
        "We wanted to confirm the time, and remind you to bring your insurance card and a "
        "list of the medicines you take.",
        times=1,
    ),
    Rule(
        r"who is this",
        "Sorry! This is Anna from Riverside Clinic. Does Tuesday at 2pm still work for you?",
        times=1,
    ),
    Rule(
        r"works",
        "Wonderful, you're all set for Tuesday at 2pm. Goodbye! [END_CALL]",
        times=1,
    ),
)

#: The person on the phone.
CALLEE_SCRIPT: list[Step] = [
    Say("Hello?"),
    UntilAgentSilent(silence_ms=600),
    Say("Yes, speaking. What is it about?"),
    BargeIn("Sorry, who is this?", after_ms=2500),
    UntilAgentSpeaks(),
    UntilAgentSilent(silence_ms=600),
    Say("Yes, that works. Thank you!"),
    UntilAgentSilent(silence_ms=600),
    Silence(ms=3000),
]


class _Live:
    """Prints each transcript line and event as it happens."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        print(f"  [{time.monotonic() - self.t0:6.2f}s] {text}", file=self.out, flush=True)

    def __call__(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TranscriptEntryFrame) and frame.text.strip():
            who = "agent " if frame.role == "agent" else "caller"
            cut = "  (interrupted: the caller heard only this)" if frame.interrupted else ""
            self.say(f"{who}: {frame.text}{cut}")
        elif isinstance(frame, VoicemailResultFrame) and frame.voicemail_detected is False:
            self.say("a person answered — the agent speaks its opener")
        elif isinstance(frame, InterruptionFrame) and direction == FrameDirection.DOWNSTREAM:
            self.say("barge-in: the caller talks over the agent — stream cancelled, Twilio clear")


async def run_demo(
    *, out: TextIO = sys.stdout, recordings_dir: Path = Path("var/demo")
) -> tuple[CallOutcome, CalleeResult]:
    """Run the demo call; returns the call's outcome and what the callee heard."""
    deepgram = FakeDeepgram(
        api_key=DEEPGRAM_KEY,
        listen=ListenSettings(final_delay_ms=150),
        speak=SpeakSettings(ttfb_ms=120),
    )
    anthropic = FakeAnthropic(
        AnthropicSettings(ttft_ms=350, tokens_per_s=60, api_key=ANTHROPIC_KEY)
    )
    anthropic.rules.extend(REPLIES)
    live = _Live(out)
    outcome: asyncio.Future[CallOutcome] = asyncio.get_running_loop().create_future()

    async with serve_sandbox(deepgram=deepgram, anthropic=anthropic) as sandbox_url:
        settings = Settings(
            deepgram_api_key=SecretStr(DEEPGRAM_KEY),
            deepgram_base_url=sandbox_url,
            anthropic_api_key=SecretStr(ANTHROPIC_KEY),
            anthropic_base_url=sandbox_url,
            recordings_dir=recordings_dir,
        )

        async def on_stream(transport: TwilioMediaTransport, start: StartEvent) -> None:
            live.say(f"media stream started (call {start.call_sid})")
            ctx = CallContext(
                call_id=start.call_sid,
                agent=DEMO_AGENT,
                transport=transport,
                settings=settings,
                dynamic_vars=DYNAMIC_VARS,
            )
            try:
                result = await run_call(
                    build_standard_chain(ctx),
                    call_id=start.call_sid,
                    recording_path=recordings_dir / f"{start.call_sid}.wav",
                    extra_observers=(live,),
                )
            except BaseException as exc:
                outcome.set_exception(exc)
                raise
            outcome.set_result(result)

        engine = Starlette(routes=[twilio_media_route("/media", on_stream)])
        async with serve_app(engine) as engine_url:
            live.say(f"sandbox on {sandbox_url}, engine on {engine_url}; the callee dials in")
            callee = SandboxCallee(
                engine_url.replace("http://", "ws://") + "/media",
                CALLEE_SCRIPT,
                max_call_ms=60_000,
            )
            heard = await asyncio.wait_for(callee.run(), 90)
            result = await asyncio.wait_for(outcome, 30)
    return result, heard


def _waterfall(latency: dict[str, Any], out: TextIO) -> None:
    turns = latency.get("turns", [])
    if not turns:
        print("  (no agent reply was measured)", file=out)
        return
    scale = 40.0 / max(max((t.get("total_ms") or 0.0) for t in turns), 1.0)
    print(
        "  turn  endpointing   stt     llm_ttft  tts_ttfb  total   (caller stops → agent heard)",
        file=out,
    )
    for i, t in enumerate(turns, 1):

        def ms(name: str, turn: dict[str, Any] = t) -> str:
            v = turn.get(name)
            return "    -   " if v is None else f"{v:7.0f} "

        bar_parts: list[str] = []
        for name, ch in (("endpointing_ms", "e"), ("llm_ttft_ms", "L"), ("tts_ttfb_ms", "T")):
            v = t.get(name) or 0.0
            bar_parts.append(ch * max(1, round(v * scale)) if v else "")
        print(
            f"  {i:>4}  {ms('endpointing_ms')}  {ms('stt_ms')} {ms('llm_ttft_ms')}  "
            f"{ms('tts_ttfb_ms')} {ms('total_ms')}  {''.join(bar_parts)}",
            file=out,
        )
    p50, p95 = latency.get("p50", {}), latency.get("p95", {})
    print(f"  p50 total {p50.get('total_ms')} ms, p95 total {p95.get('total_ms')} ms", file=out)
    print("  bar: e = endpointing, L = LLM first token, T = TTS first byte", file=out)


def _report(outcome: CallOutcome, heard: CalleeResult, out: TextIO) -> None:
    p: Callable[..., None] = lambda *a: print(*a, file=out)  # noqa: E731
    p("\nCall ended:", outcome.ended_reason)
    p("\nTranscript (as stored on the call record):")
    for line in outcome.transcript:
        flag = " [interrupted]" if line.interrupted else ""
        p(f"  {line.timestamp_ms / 1000:6.2f}s  {line.role:>6}: {line.text}{flag}")
    p("\nWhat the callee heard, decoded from the audio it played:")
    for utterance in heard.heard_text().split("\n"):
        if utterance.strip():
            p(f"  {utterance}")
    p("\nTurn latency (ms):")
    _waterfall(outcome.latency, out)
    if outcome.recording_path is not None:
        p(
            f"\nRecording: {outcome.recording_path} "
            f"({outcome.recording_duration_seconds} s, caller left, agent right)"
        )
    if outcome.errors:
        p("\nErrors:", *outcome.errors, sep="\n  ")


def main(argv: list[str] | None = None) -> int:
    """Run the demo and print its report; exit status 0 when the call ended as scripted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recordings-dir", type=Path, default=Path("var/demo"))
    args = parser.parse_args(argv)
    print("nixflex-engine demo: one simulated call, offline\n")
    outcome, heard = asyncio.run(run_demo(recordings_dir=args.recordings_dir))
    _report(outcome, heard, sys.stdout)
    ok = outcome.ended_reason == "agent_hangup" and not heard.protocol_violations
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
