"""A chain with a tool the LLM calls mid-call (Claude tool use).

Give ``ClaudeLLM`` :class:`~nixflex_engine.processors.LLMTool` s: a name, a description, a JSON
schema for the input, and an async handler. When Claude answers with a ``tool_use`` block the
processor emits ``LLMToolCallFrame``, awaits the handler, emits ``LLMToolResultFrame``, sends
the ``tool_result`` back and streams the rest of the reply — the caller hears one answer.
A barge-in cancels the handler with the reply; a handler that raises or times out
(``tool_timeout_ms``) gives the model an error result to talk about.

Here the agent checks a (made-up) calendar when the caller asks about a day::

    python -m examples.tool_call
"""

from __future__ import annotations

import asyncio
from typing import Any

from nixflex_engine.calls.chain import AgentProfile, CallContext
from nixflex_engine.pipeline import Pipeline
from nixflex_engine.processors import (
    AssistantContextAggregator,
    ClaudeLLM,
    DeepgramSTT,
    DeepgramTTS,
    LLMTool,
    MulawDecoder,
    TurnTakingProcessor,
    UserContextAggregator,
    VADProcessor,
    VoicemailProcessor,
)
from nixflex_engine.sandbox import (
    AnthropicSettings,
    FakeAnthropic,
    Say,
    Silence,
    Step,
    ToolReply,
    UntilAgentSilent,
)

__all__ = ["CALENDAR", "build", "check_slots", "main", "slots_tool"]

#: Free slots per day (a real handler would ask a booking system).
CALENDAR: dict[str, list[str]] = {"friday": ["10:00", "14:30"], "monday": []}


async def check_slots(args: dict[str, Any]) -> dict[str, Any]:
    """The tool's handler: the free slots on ``args["day"]``."""
    day = str(args.get("day", "")).strip().lower()
    return {"day": day, "free": CALENDAR.get(day, [])}


def slots_tool() -> LLMTool:
    """The ``check_slots`` tool as Claude sees it, with its handler."""
    return LLMTool(
        name="check_slots",
        description="Free appointment slots on a weekday. Call it before offering a time.",
        input_schema={
            "type": "object",
            "properties": {"day": {"type": "string", "description": "Weekday, e.g. Friday"}},
            "required": ["day"],
        },
        handler=check_slots,
    )


def build(ctx: CallContext) -> Pipeline:
    """The standard chain, composed by hand, with a Claude that can check the calendar."""
    settings, agent = ctx.settings, ctx.agent
    return Pipeline(
        [
            ctx.transport.input(),
            MulawDecoder(),
            VADProcessor(),
            DeepgramSTT.from_settings(settings, language=agent.language),
            VoicemailProcessor(
                voicemail_action=ctx.effective_voicemail_action,
                voicemail_message=ctx.effective_voicemail_message,
                welcome_message=ctx.welcome_message,
                amd_enabled=agent.amd_enabled,
            ),
            TurnTakingProcessor(interruption_sensitivity=agent.interruption_sensitivity),
            UserContextAggregator(ctx.system_prompt),
            ClaudeLLM.from_settings(
                settings, model=agent.llm_model, max_tokens=agent.max_tokens, tools=[slots_tool()]
            ),
            DeepgramTTS.from_settings(settings, voice=agent.voice_id),
            ctx.transport.output(),
            AssistantContextAggregator(),
        ],
        name="agent+tools",
    )


AGENT = AgentProfile(
    system_prompt="You book appointments at Riverside Clinic. Check slots before offering one.",
    welcome_message="Riverside Clinic, hello.",
    amd_enabled=False,
)
CALLEE: list[Step] = [
    Say("Hi?"),
    UntilAgentSilent(silence_ms=500),
    Say("Is Friday free?"),
    UntilAgentSilent(silence_ms=500),
    Silence(3000),  # the agent hangs up meanwhile (a slow machine must not make it the callee)
]


def fake_model() -> FakeAnthropic:
    """The sandbox model's replies, one per request: the tool call, then the answer."""
    fake = FakeAnthropic(AnthropicSettings(ttft_ms=150, tokens_per_s=200))
    fake.script.extend(
        [
            ToolReply("check_slots", {"day": "Friday"}),
            "Friday has ten or half past two. Call back to book. Bye! [END_CALL]",
        ]
    )
    return fake


async def run_example() -> Any:
    """Call the sandbox callee with :func:`build`; returns the harness's ``SandboxCall``."""
    from examples.sandbox_call import call_sandbox_callee

    return await call_sandbox_callee(build, CALLEE, agent=AGENT, anthropic=fake_model())


def main() -> None:
    """Run the example call; print the transcript and the tool calls."""
    from nixflex_engine.frames import LLMToolCallFrame, LLMToolResultFrame

    call = asyncio.run(run_example())
    print("ended:", call.outcome.ended_reason)
    for line in call.outcome.transcript:
        print(f"  {line.role:>6}: {line.text}")
    for frame in call.frames:
        if isinstance(frame, LLMToolCallFrame):
            print(f"tool call   {frame.name}({frame.input})")
        elif isinstance(frame, LLMToolResultFrame):
            print(f"tool result {frame.result}")


if __name__ == "__main__":
    main()
