"""Run a chain against the sandbox callee: no engine, no HTTP API, no database, no keys.

The sandbox fakes (Deepgram STT/TTS, Anthropic) speak the real wire protocols on 127.0.0.1;
the callee is a fake Twilio media-stream client playing a person from a script. The chain is
a plain :class:`~nixflex_engine.pipeline.Pipeline` run by
:func:`~nixflex_engine.calls.run.run_call` (a :class:`~nixflex_engine.pipeline.PipelineTask`
plus the transcript, latency figures and recording a call record needs)::

    python -m examples.sandbox_call

:func:`call_sandbox_callee` is the harness the other examples use: give it a function that
builds a chain from a :class:`~nixflex_engine.calls.chain.CallContext` (a *chain factory*,
the same shape the engine calls for each call) and the callee's script.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr
from starlette.applications import Starlette

from nixflex_engine.calls.chain import AgentProfile, CallContext
from nixflex_engine.calls.run import CallOutcome, run_call
from nixflex_engine.config import Settings
from nixflex_engine.frames import Frame, TransportStartedFrame, TTSSpeakFrame
from nixflex_engine.pipeline import DOWNSTREAM, FrameDirection, FrameProcessor, Pipeline
from nixflex_engine.processors import (
    AssistantContextAggregator,
    ClaudeLLM,
    DeepgramSTT,
    DeepgramTTS,
    MulawDecoder,
    TurnTakingProcessor,
    UserContextAggregator,
    VADProcessor,
)
from nixflex_engine.sandbox import (
    AnthropicSettings,
    CalleeResult,
    FakeAnthropic,
    FakeDeepgram,
    ListenSettings,
    SandboxCallee,
    Say,
    Silence,
    SpeakSettings,
    Step,
    UntilAgentSilent,
    serve_app,
    serve_sandbox,
)
from nixflex_engine.transports import StartEvent, TwilioMediaTransport, twilio_media_route

__all__ = ["ChainBuilder", "Greeter", "SandboxCall", "build", "call_sandbox_callee", "main"]

DEEPGRAM_KEY = "sandbox-deepgram-key"
ANTHROPIC_KEY = "sandbox-anthropic-key"

#: A chain factory: builds the agent chain for one call.
ChainBuilder = Callable[[CallContext], FrameProcessor]


@dataclass(slots=True)
class SandboxCall:
    """How a sandbox call went: the call's outcome and what the callee heard."""

    outcome: CallOutcome
    heard: CalleeResult
    anthropic: FakeAnthropic
    frames: list[Frame] = field(default_factory=list)


async def call_sandbox_callee(
    build_chain: ChainBuilder,
    steps: Sequence[Step],
    *,
    agent: AgentProfile | None = None,
    dynamic_vars: Mapping[str, str] | None = None,
    anthropic: FakeAnthropic | None = None,
    recording_path: Path | None = None,
    max_call_ms: float = 30_000,
) -> SandboxCall:
    """Serve the sandbox fakes and a media-stream endpoint, let the callee call in with
    ``steps``, run ``build_chain(ctx)`` for the call, and return what happened."""
    deepgram = FakeDeepgram(
        api_key=DEEPGRAM_KEY,
        listen=ListenSettings(final_delay_ms=100),
        speak=SpeakSettings(ttfb_ms=60),
    )
    fake_llm = anthropic or FakeAnthropic(AnthropicSettings(ttft_ms=150, tokens_per_s=200))
    seen: list[Frame] = []
    done: asyncio.Future[CallOutcome] = asyncio.get_running_loop().create_future()

    async with serve_sandbox(deepgram=deepgram, anthropic=fake_llm) as sandbox_url:
        settings = Settings(
            deepgram_api_key=SecretStr(DEEPGRAM_KEY),
            deepgram_base_url=sandbox_url,
            anthropic_api_key=SecretStr(ANTHROPIC_KEY),
            anthropic_base_url=sandbox_url,
        )

        async def on_stream(transport: TwilioMediaTransport, start: StartEvent) -> None:
            ctx = CallContext(
                call_id=start.call_sid,
                agent=agent or AgentProfile(),
                transport=transport,
                settings=settings,
                dynamic_vars=dict(dynamic_vars or {}),
            )
            try:
                outcome = await run_call(
                    build_chain(ctx),
                    call_id=start.call_sid,
                    recording_path=recording_path,
                    extra_observers=(lambda frame, direction: seen.append(frame),),
                )
            except BaseException as exc:
                done.set_exception(exc)
                raise
            done.set_result(outcome)

        engine = Starlette(routes=[twilio_media_route("/media", on_stream)])
        async with serve_app(engine) as engine_url:
            callee = SandboxCallee(
                engine_url.replace("http://", "ws://") + "/media",
                list(steps),
                max_call_ms=max_call_ms,
            )
            heard = await asyncio.wait_for(callee.run(), max_call_ms / 1000 + 30)
            outcome = await asyncio.wait_for(done, 30)
    return SandboxCall(outcome, heard, fake_llm, seen)


class Greeter(FrameProcessor):
    """Says ``text`` once the media stream is up (in the standard chain the voicemail
    processor does this, after deciding a person answered)."""

    def __init__(self, text: str) -> None:
        super().__init__(name="greeter")
        self.text = text

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(frame, direction)
        if isinstance(frame, TransportStartedFrame) and direction == DOWNSTREAM:
            await self.push_frame(TTSSpeakFrame(text=self.text))


def build(ctx: CallContext) -> Pipeline:
    """A hand-composed agent chain: the standard one without voicemail detection."""
    settings, agent = ctx.settings, ctx.agent
    return Pipeline(
        [
            ctx.transport.input(),  # Twilio media → InputAudioFrame
            Greeter(ctx.welcome_message),
            MulawDecoder(),  # adds PCM for the VAD
            VADProcessor(),  # UserStarted/StoppedSpeakingFrame
            DeepgramSTT.from_settings(settings),  # transcripts
            TurnTakingProcessor(interruption_sensitivity=agent.interruption_sensitivity),
            UserContextAggregator(ctx.system_prompt),  # LLMContextFrame per caller turn
            ClaudeLLM.from_settings(settings, model=agent.llm_model),
            DeepgramTTS.from_settings(settings, voice=agent.voice_id),
            ctx.transport.output(),  # audio to Twilio, marks, barge-in clear
            AssistantContextAggregator(),  # what the caller heard → the context
        ],
        name="hand-built",
    )


AGENT = AgentProfile(
    system_prompt="You are Anna from Riverside Clinic, calling {name}. Keep replies short.",
    welcome_message="Hi {name}, this is Anna from Riverside Clinic.",
)
CALLEE: list[Step] = [
    UntilAgentSilent(silence_ms=500),
    Say("Hi Anna. Goodbye!"),
    UntilAgentSilent(silence_ms=500),
    Silence(3000),  # the agent hangs up meanwhile (a slow machine must not make it the callee)
]


async def run_example() -> SandboxCall:
    """The example call: the agent greets, the callee says goodbye, the agent hangs up."""
    fake = FakeAnthropic(AnthropicSettings(ttft_ms=150, tokens_per_s=200))
    fake.add_rule(r"goodbye", "Goodbye, Sarah! [END_CALL]")
    return await call_sandbox_callee(
        build, CALLEE, agent=AGENT, dynamic_vars={"name": "Sarah"}, anthropic=fake
    )


def main() -> None:
    """Run the example call and print its transcript and latency."""
    call = asyncio.run(run_example())
    print("ended:", call.outcome.ended_reason)
    for line in call.outcome.transcript:
        print(f"  {line.timestamp_ms / 1000:6.2f}s {line.role:>6}: {line.text}")
    print("turn latency p50 (ms):", call.outcome.latency.get("p50", {}).get("total_ms"))


if __name__ == "__main__":
    main()
