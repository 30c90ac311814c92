"""Claude tool use in ClaudeLLM, through the real SDK against the fake Messages API: the tool
call and its result as frames, the tool_result sent back, the reply continued; handler errors,
timeouts, unknown tools, the round limit, no retry once a tool ran, and barge-in."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from nixflex_engine.frames import (
    ErrorFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    LLMToolCallFrame,
    LLMToolResultFrame,
    LLMUsageFrame,
    MetricsFrame,
    TTSSpeakFrame,
)
from nixflex_engine.processors.llm import ClaudeLLM, LLMTool, ToolCall
from nixflex_engine.sandbox.fake_anthropic import ToolReply

from .conftest import ANTHROPIC_KEY, Harness, Sandbox

SCHEMA = {
    "type": "object",
    "properties": {"date": {"type": "string"}},
    "required": ["date"],
}


def claude(sandbox: Sandbox, tools: list[LLMTool], **kw: Any) -> ClaudeLLM:
    return ClaudeLLM(
        api_key=ANTHROPIC_KEY,
        base_url=sandbox.url,
        backoff_base_ms=10.0,
        backoff_max_ms=20.0,
        rng=random.Random(3),
        tools=tools,
        **kw,
    )


def context(text: str = "Is Friday free?") -> LLMContextFrame:
    return LLMContextFrame(messages=({"role": "user", "content": text},), system="S", turn=1)


async def test_a_tool_call_mid_reply(sandbox: Sandbox) -> None:
    seen: list[dict[str, Any]] = []

    async def check_slots(args: dict[str, Any]) -> dict[str, Any]:
        seen.append(args)
        return {"date": args["date"], "free": ["10:00", "14:30"]}

    tool = LLMTool("check_slots", "Free appointment slots on a date.", SCHEMA, check_slots)
    sandbox.anthropic.script.extend(
        [ToolReply("check_slots", {"date": "Friday"}), "Friday at ten or half past two."]
    )
    async with Harness(claude(sandbox, [tool])) as h:
        await h.send(context())
        await h.wait_for(lambda: h.down(LLMResponseEndFrame))
        await h.wait_for(lambda: h.down(LLMUsageFrame))
        [call] = h.down(LLMToolCallFrame)
        [result] = h.down(LLMToolResultFrame)
        assert (call.name, call.input, call.turn) == ("check_slots", {"date": "Friday"}, 1)
        assert result.tool_use_id == call.tool_use_id and not result.is_error
        assert result.result == '{"date": "Friday", "free": ["10:00", "14:30"]}'
        assert "".join(f.text for f in h.down(LLMTextFrame)) == "Friday at ten or half past two."
        kinds = h.kinds()
        assert kinds.index("LLMToolCallFrame") < kinds.index("LLMToolResultFrame")
        assert kinds.index("LLMToolResultFrame") < kinds.index("LLMResponseStartFrame")
        assert len(h.down(LLMResponseStartFrame)) == 1  # one reply, one turn
        [ttft] = [m for m in h.down(MetricsFrame) if m.name == "llm_ttft_ms"]
        assert ttft.value >= 40  # two requests of 20 ms before the first spoken token
        [usage] = h.down(LLMUsageFrame)
        first, second = sandbox.anthropic.requests
        assert usage.output_tokens == first.usage["output_tokens"] + second.usage["output_tokens"]
        assert not h.up(ErrorFrame)
    assert seen == [{"date": "Friday"}]
    assert first.body["tools"] == [tool.definition()]
    assert "tool_choice" not in first.body
    user, assistant, tool_results = second.body["messages"]
    assert user == {"role": "user", "content": "Is Friday free?"}
    [use] = assistant["content"]
    assert use == {
        "type": "tool_use",
        "id": call.tool_use_id,
        "name": "check_slots",
        "input": {"date": "Friday"},
    }
    assert tool_results == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": call.tool_use_id,
                "content": result.result,
                "is_error": False,
            }
        ],
    }


@pytest.mark.parametrize("failure", ["raises", "times_out", "unknown"])
async def test_a_failing_tool_is_an_error_result_the_model_reads(
    sandbox: Sandbox, failure: str
) -> None:
    async def handler(args: dict[str, Any]) -> str:
        if failure == "raises":
            raise LookupError("calendar offline")
        await asyncio.sleep(5)
        return "late"

    name = "other_tool" if failure == "unknown" else "check_slots"
    sandbox.anthropic.script.extend(
        [ToolReply(name, {"date": "Friday"}), "Sorry, I cannot see the calendar."]
    )
    tool = LLMTool("check_slots", "Slots.", SCHEMA, handler)
    async with Harness(claude(sandbox, [tool], tool_timeout_ms=50)) as h:
        await h.send(context())
        await h.wait_for(lambda: h.down(LLMResponseEndFrame))
        [result] = h.down(LLMToolResultFrame)
        assert result.is_error
        expected = {
            "raises": "The tool failed: calendar offline",
            "times_out": "The tool timed out.",
            "unknown": "Unknown tool 'other_tool'.",
        }[failure]
        assert result.result == expected
        assert "".join(f.text for f in h.down(LLMTextFrame)).startswith("Sorry")
    tool_result = sandbox.anthropic.requests[1].body["messages"][-1]["content"][0]
    assert tool_result["is_error"] is True and tool_result["content"] == expected


async def test_the_last_round_forbids_more_tools(sandbox: Sandbox) -> None:
    calls = 0

    async def handler(args: dict[str, Any]) -> str:
        nonlocal calls
        calls += 1
        return "nothing"

    sandbox.anthropic.script.extend(
        [ToolReply("check_slots", {"date": "Friday"})] * 2 + ["I could not find a slot."]
    )
    tool = LLMTool("check_slots", "Slots.", SCHEMA, handler)
    async with Harness(claude(sandbox, [tool], max_tool_rounds=2)) as h:
        await h.send(context())
        await h.wait_for(lambda: h.down(LLMResponseEndFrame))
    assert calls == 2
    bodies = [r.body for r in sandbox.anthropic.requests]
    assert [b.get("tool_choice") for b in bodies] == [None, None, {"type": "none"}]
    assert len(bodies[2]["messages"]) == 5


async def test_no_retry_once_a_tool_ran(sandbox: Sandbox) -> None:
    calls = 0

    async def handler(args: dict[str, Any]) -> str:
        nonlocal calls
        calls += 1
        # the request after the tool ran is overloaded: retrying would book twice
        sandbox.anthropic.fail_next("overloaded")
        return "booked"

    sandbox.anthropic.script.append(ToolReply("book", {"date": "Friday"}))
    async with Harness(claude(sandbox, [LLMTool("book", "Book a slot.", SCHEMA, handler)])) as h:
        await h.send(context())
        await h.wait_for(lambda: h.down(TTSSpeakFrame))
        [apology] = h.down(TTSSpeakFrame)
        assert apology.end_call_reason == "error"
        assert h.up(ErrorFrame)
    assert calls == 1
    assert len(sandbox.anthropic.requests) == 2


async def test_barge_in_cancels_a_running_tool(sandbox: Sandbox) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow(args: dict[str, Any]) -> str:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    sandbox.anthropic.script.append(ToolReply("check_slots", {"date": "Friday"}))
    async with Harness(claude(sandbox, [LLMTool("check_slots", "S.", SCHEMA, slow)])) as h:
        await h.send(context())
        await asyncio.wait_for(started.wait(), 5)
        await h.send(InterruptionFrame())
        await asyncio.wait_for(cancelled.wait(), 5)
        assert not h.down(LLMToolResultFrame)
    assert len(sandbox.anthropic.requests) == 1


def test_tool_definitions_and_names() -> None:
    async def handler(args: dict[str, Any]) -> str:
        return ""

    tool = LLMTool("a", "desc", SCHEMA, handler)
    assert tool.definition() == {"name": "a", "description": "desc", "input_schema": SCHEMA}
    with pytest.raises(ValueError, match="unique"):
        ClaudeLLM(api_key="k", tools=[tool, tool])
    assert ToolCall("id", "a").input == {}
