"""The fake Anthropic Messages API, driven through the real anthropic 2.10 SDK on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import anthropic
import httpx
import jsonschema_rs
import pytest
from anthropic import AsyncAnthropic

from nixflex_engine.sandbox.fake_anthropic import AnthropicFault, default_reply, split_tokens

from .conftest import Sandbox

MODEL = "claude-haiku-4-5"
HELLO = [{"role": "user", "content": "Hello?"}]
SYSTEM = [{"type": "text", "text": "You are Alex, calling for Acme. " * 200}]
ANALYSIS_TOOL: dict[str, Any] = {
    "name": "record_call_analysis",
    "description": "Record the analysis of the call.",
    "input_schema": {
        "type": "object",
        "properties": {
            "call_summary": {"type": "string", "minLength": 10},
            "caller_sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
            "call_successful": {"type": "boolean"},
            "extracted_data": {
                "type": "object",
                "properties": {
                    "customer_name": {"type": "string"},
                    "party_size": {"type": "integer", "minimum": 1, "maximum": 20},
                    "email": {"type": ["string", "null"]},
                    "interests": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                },
                "required": ["customer_name", "party_size"],
            },
        },
        "required": ["call_summary", "caller_sentiment", "call_successful", "extracted_data"],
    },
}
CALL = [
    {
        "role": "user",
        "content": "Agent: Hi, this is Alex.\nCaller: Hi! My customer name is Dana Reyes. "
        "A table for 4 please, write to dana@example.com. Thanks, great!",
    }
]


def client(sandbox: Sandbox, **kw: Any) -> AsyncAnthropic:
    return AsyncAnthropic(api_key="test", base_url=sandbox.url, max_retries=kw.pop("retries", 0))


async def test_stream_text_usage_and_recorded_request(sandbox: Sandbox) -> None:
    c = client(sandbox)
    started = time.monotonic()
    first: float | None = None
    pieces: list[str] = []
    async with c.messages.stream(
        model=MODEL, max_tokens=300, system=SYSTEM, messages=HELLO
    ) as stream:
        async for piece in stream.text_stream:
            first = first or time.monotonic() - started
            pieces.append(piece)
        final = await stream.get_final_message()
    assert first is not None and first >= 0.03  # ttft_ms=30
    text = "".join(pieces)
    assert text.startswith("Hi, this is Alex") and text.endswith("?")
    assert pieces == split_tokens(text) and all(len(p.strip()) <= 5 for p in pieces)
    assert final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason == "end_turn" and final.model == MODEL
    assert final.usage.output_tokens == len(pieces)
    assert final.usage.input_tokens > 1000  # ⌈chars/4⌉ of the prompt
    assert final.usage.cache_read_input_tokens == 0 and final.usage.cache_creation_input_tokens == 0
    assert stream.request_id is not None and stream.request_id.startswith("req_")
    req = sandbox.anthropic.requests[-1]
    assert req.headers["authorization"] == "Bearer test"
    assert req.headers["anthropic-version"] and req.headers["x-stainless-helper-method"] == "stream"
    assert req.body["stream"] is True and req.system_blocks == SYSTEM
    assert req.last_user_text == "Hello?" and req.completed and req.tokens_sent == len(pieces)


async def test_exact_sse_frames_with_ping(sandbox: Sandbox) -> None:
    body = {"model": MODEL, "max_tokens": 50, "stream": True, "messages": HELLO}
    async with (
        httpx.AsyncClient() as http,
        http.stream(
            "POST", f"{sandbox.url}/v1/messages", json=body, headers={"x-api-key": "old-sdk"}
        ) as resp,
    ):
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["request-id"].startswith("req_")
        raw = (await resp.aread()).decode()
    frames = [f for f in raw.split("\n\n") if f]
    events = []
    for frame in frames:
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        data = json.loads(data_line[6:])
        assert data["type"] == event_line[7:]
        events.append(data)
    kinds = [e["type"] for e in events]
    deltas = kinds.count("content_block_delta")
    assert kinds == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0]["message"]
    assert start["role"] == "assistant" and start["content"] == [] and start["stop_reason"] is None
    assert set(start["usage"]) >= {
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    }
    assert events[1]["content_block"] == {"type": "text", "text": ""}
    assert all(
        e["delta"]["type"] == "text_delta" for e in events if "delta" in e and "text" in e["delta"]
    )
    assert events[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[-2]["usage"]["output_tokens"] == deltas
    # the old SDK generation's x-api-key header is accepted too
    assert sandbox.anthropic.requests[-1].headers["x-api-key"] == "old-sdk"


async def test_raw_events_through_the_sdk(sandbox: Sandbox) -> None:
    c = client(sandbox)
    stream = await c.messages.create(model=MODEL, max_tokens=50, messages=HELLO, stream=True)
    kinds = [event.type async for event in stream]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


async def test_tokens_per_second_pacing(sandbox: Sandbox) -> None:
    sandbox.anthropic.settings.tokens_per_s = 200
    sandbox.anthropic.script.append("one two three four five six seven eight nine ten more")
    c = client(sandbox)
    started = time.monotonic()
    async with c.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
        stamps = [time.monotonic() - started async for _ in stream.text_stream]
    assert len(stamps) == 11
    assert 10 / 200 - 0.01 <= stamps[-1] - stamps[0] < 2.0  # paced, not bunched


async def test_prompt_caching_writes_then_reads(sandbox: Sandbox) -> None:
    c = client(sandbox)
    cached = [{**SYSTEM[0], "cache_control": {"type": "ephemeral"}}]
    usages = []
    for question in ("Hello?", "What is this about?"):
        msg = await c.messages.create(
            model=MODEL,
            max_tokens=100,
            system=cached,
            messages=[{"role": "user", "content": question}],
        )
        usages.append(msg.usage)
    assert usages[0].cache_creation_input_tokens > 1000 and usages[0].cache_read_input_tokens == 0
    assert usages[1].cache_read_input_tokens == usages[0].cache_creation_input_tokens
    assert usages[1].cache_creation_input_tokens == 0 and usages[1].input_tokens < 20
    assert sandbox.anthropic.requests[-1].cache_marked
    # A different system prompt is a cache miss.
    other = [{"type": "text", "text": "Other.", "cache_control": {"type": "ephemeral"}}]
    msg = await c.messages.create(model=MODEL, max_tokens=10, system=other, messages=HELLO)
    assert msg.usage.cache_read_input_tokens == 0 and msg.usage.cache_creation_input_tokens > 0


async def test_script_rules_and_default_persona(sandbox: Sandbox) -> None:
    fake = sandbox.anthropic
    fake.script.append("Scripted first.")
    fake.add_rule(r"\bprice\b", "It is ten dollars a month.", times=1)
    c = client(sandbox)

    async def ask(text: str) -> str:
        msg = await c.messages.create(
            model=MODEL, max_tokens=200, messages=[{"role": "user", "content": text}]
        )
        block = msg.content[0]
        assert block.type == "text"
        return block.text

    assert await ask("What is the price?") == "Scripted first."
    assert await ask("What is the PRICE?") == "It is ten dollars a month."
    assert "ten dollars" not in await ask("And the price again?")  # the rule is spent
    goodbye = await ask("Okay, thanks, goodbye!")
    assert goodbye.endswith("[END_CALL]")
    assert "[END_CALL]" not in split_tokens(goodbye)  # the tag arrives split across deltas
    assert "Alex" in await ask("Hello?")


async def test_max_tokens_and_stop_sequences(sandbox: Sandbox) -> None:
    c = client(sandbox)
    sandbox.anthropic.script.extend(["one two three four five", "Sure. STOP then more"])
    msg = await c.messages.create(model=MODEL, max_tokens=2, messages=HELLO)
    assert msg.stop_reason == "max_tokens" and msg.content[0].text == "one two"  # type: ignore[union-attr]
    msg = await c.messages.create(
        model=MODEL, max_tokens=50, messages=HELLO, stop_sequences=["STOP"]
    )
    assert msg.stop_reason == "stop_sequence" and msg.stop_sequence == "STOP"
    assert msg.content[0].text == "Sure. "  # type: ignore[union-attr]


def assert_conforms(value: dict[str, Any]) -> None:
    jsonschema_rs.validate(ANALYSIS_TOOL["input_schema"], value)


async def test_forced_tool_use_non_streaming(sandbox: Sandbox) -> None:
    c = client(sandbox)
    msg = await c.messages.create(
        model=MODEL,
        max_tokens=1000,
        tools=[ANALYSIS_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "record_call_analysis"},
        messages=CALL,  # type: ignore[arg-type]
    )
    assert msg.stop_reason == "tool_use"
    block = msg.content[0]
    assert block.type == "tool_use" and block.name == "record_call_analysis"
    assert block.id.startswith("toolu_")
    data = dict(block.input)
    assert_conforms(data)
    assert data["caller_sentiment"] == "positive" and data["call_successful"] is True
    extracted = data["extracted_data"]
    assert extracted["customer_name"] == "Dana Reyes" and extracted["party_size"] == 4
    assert extracted["email"] == "dana@example.com"


async def test_forced_tool_use_streaming_sends_input_json_deltas(sandbox: Sandbox) -> None:
    c = client(sandbox)
    partials: list[str] = []
    async with c.messages.stream(
        model=MODEL,
        max_tokens=1000,
        tools=[ANALYSIS_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "Caller: not interested, stop calling. Bye."}],
    ) as stream:
        async for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                partials.append(event.delta.partial_json)
        final = await stream.get_final_message()
    assert len(partials) > 3
    block = final.content[0]
    assert block.type == "tool_use" and json.loads("".join(partials)) == block.input
    data = dict(block.input)  # type: ignore[call-overload]
    assert_conforms(data)
    assert data["caller_sentiment"] == "negative" and data["call_successful"] is False
    assert final.stop_reason == "tool_use"


@pytest.mark.parametrize(
    ("kind", "error", "status"),
    [
        ("overloaded", anthropic.OverloadedError, 529),
        ("rate_limit", anthropic.RateLimitError, 429),
        ("api_error", anthropic.InternalServerError, 500),
        ("unavailable", anthropic.ServiceUnavailableError, 503),
    ],
)
async def test_status_faults_raise_the_documented_errors(
    sandbox: Sandbox, kind: Any, error: type[Exception], status: int
) -> None:
    sandbox.anthropic.fail_next(kind)
    c = client(sandbox)
    with pytest.raises(error) as err:
        async with c.messages.stream(model=MODEL, max_tokens=50, messages=HELLO) as stream:
            await stream.get_final_message()
    assert isinstance(err.value, anthropic.APIStatusError)
    assert err.value.status_code == status and err.value.request_id
    if kind == "rate_limit":
        assert err.value.response.headers["retry-after"] == "0"
    # the fault was for one request only
    msg = await c.messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    assert msg.stop_reason == "end_turn"


async def test_fault_queue_with_sdk_retries(sandbox: Sandbox) -> None:
    # retry-after "0" makes the SDK fall back to its own backoff (≥ 0.5 s); 10 ms is quicker.
    sandbox.anthropic.faults.extend([AnthropicFault("rate_limit", retry_after="0.01")] * 2)
    c = client(sandbox, retries=2)
    msg = await c.messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    assert msg.stop_reason == "end_turn"
    retries = [r.headers["x-stainless-retry-count"] for r in sandbox.anthropic.requests]
    assert retries == ["0", "1", "2"]
    assert [r.status for r in sandbox.anthropic.requests] == [429, 429, 200]


async def test_mid_stream_error_event(sandbox: Sandbox) -> None:
    sandbox.anthropic.fail_next("stream_error", after_tokens=3)
    c = client(sandbox)
    got: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as err:
        async with c.messages.stream(model=MODEL, max_tokens=50, messages=HELLO) as stream:
            async for piece in stream.text_stream:
                got.append(piece)
    assert not isinstance(err.value, anthropic.OverloadedError)
    assert err.value.status_code == 200 and err.value.type == "overloaded_error"
    assert len(got) == 3


async def test_connection_dropped_mid_stream(sandbox: Sandbox) -> None:
    sandbox.anthropic.fail_next("drop", after_tokens=2)
    c = client(sandbox)
    got: list[str] = []
    with pytest.raises(Exception) as err:
        async with c.messages.stream(model=MODEL, max_tokens=50, messages=HELLO) as stream:
            async for piece in stream.text_stream:
                got.append(piece)
    assert "peer closed connection" in str(err.value) or isinstance(
        err.value, anthropic.APIConnectionError
    )
    assert len(got) == 2 and sandbox.anthropic.requests[-1].tokens_sent == 2


async def test_closing_the_stream_stops_the_tokens(sandbox: Sandbox) -> None:
    sandbox.anthropic.settings.tokens_per_s = 50
    c = client(sandbox)
    async with c.messages.stream(model=MODEL, max_tokens=300, messages=HELLO) as stream:
        async for _ in stream.text_stream:
            break  # barge-in: leave after the first token
    req = sandbox.anthropic.requests[-1]
    for _ in range(200):
        if req.client_disconnected:
            break
        await asyncio.sleep(0.01)
    assert req.client_disconnected and not req.completed
    assert req.tokens_sent < len(split_tokens(str(req.reply)))


async def test_auth_and_validation_errors(sandbox: Sandbox) -> None:
    sandbox.anthropic.settings.api_key = "right"
    with pytest.raises(anthropic.AuthenticationError):
        await client(sandbox).messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    ok = AsyncAnthropic(api_key="right", base_url=sandbox.url, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as err:
        await ok.messages.create(model=MODEL, max_tokens=5, messages=[])
    assert err.value.type == "invalid_request_error"
    msg = await ok.messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    assert msg.content


async def test_health_lists_every_fake(sandbox: Sandbox) -> None:
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{sandbox.url}/sandbox/health")
    assert resp.json()["routes"] == ["/v1/listen", "/v1/messages", "/v1/speak"]


def test_default_persona_is_deterministic_and_conversational() -> None:
    system = "You are Sam, a scheduling assistant calling from Bright Dental. Be brief."

    def convo(*user_turns: str) -> list[dict[str, Any]]:
        msgs: list[dict[str, Any]] = []
        for i, turn in enumerate(user_turns):
            if i:
                msgs.append({"role": "assistant", "content": "..."})
            msgs.append({"role": "user", "content": turn})
        return msgs

    opener = default_reply(convo("(call connected)"), system)
    assert opener.startswith("Hi, this is Sam calling from Bright Dental.")
    assert default_reply(convo("Hi", "[silence]"), system) == "Hello? Are you still there?"
    assert default_reply(convo("Hi", "Yes, sure."), system).startswith("Great.")
    assert default_reply(convo("Hi", "No."), system).startswith("No problem")
    assert default_reply(convo("Hi", "How long does it take?"), system).startswith("Good question")
    quoted = default_reply(convo("Hi", "My dog ate the letter"), system)
    assert '"My dog ate the letter"' in quoted
    for bye in ("Okay, bye.", "I'm not interested", "Goodbye!"):
        assert default_reply(convo("Hi", bye), system).endswith("[END_CALL]")
    assert default_reply(convo("Hi", "Thanks!")) == default_reply(convo("Hi", "Thanks!"))


async def test_stream_faults_on_a_request_that_is_not_streamed(sandbox: Sandbox) -> None:
    c = client(sandbox)
    sandbox.anthropic.fail_next("drop")
    with pytest.raises(anthropic.APIConnectionError):
        await c.messages.create(model=MODEL, max_tokens=20, messages=HELLO)
    sandbox.anthropic.fail_next("stream_error")
    with pytest.raises(anthropic.OverloadedError):
        await c.messages.create(model=MODEL, max_tokens=20, messages=HELLO)
    assert (await c.messages.create(model=MODEL, max_tokens=20, messages=HELLO)).content


async def test_prompt_cache_follows_a_breakpoint_moving_down_the_history(
    sandbox: Sandbox,
) -> None:
    c = client(sandbox)
    system = [{**SYSTEM[0], "cache_control": {"type": "ephemeral"}}]
    mark = {"cache_control": {"type": "ephemeral"}}
    turn1 = [{"role": "user", "content": [{"type": "text", "text": "Hello? " * 50, **mark}]}]
    first = await c.messages.create(model=MODEL, max_tokens=20, system=system, messages=turn1)  # type: ignore[arg-type]
    assert first.usage.cache_read_input_tokens == 0
    written = first.usage.cache_creation_input_tokens
    assert written > 1000
    turn2 = [
        {"role": "user", "content": [{"type": "text", "text": "Hello? " * 50}]},
        {"role": "assistant", "content": "Hi, this is Alex."},
        {"role": "user", "content": [{"type": "text", "text": "Who? " * 50, **mark}]},
    ]
    second = await c.messages.create(model=MODEL, max_tokens=20, system=system, messages=turn2)  # type: ignore[arg-type]
    # Everything turn 1 cached (system + first message) is read; the new turns are written.
    assert second.usage.cache_read_input_tokens == written
    assert 0 < second.usage.cache_creation_input_tokens < written
    # Same system, different conversation: only the system prompt is read.
    other = [{"role": "user", "content": [{"type": "text", "text": "Other " * 50, **mark}]}]
    third = await c.messages.create(model=MODEL, max_tokens=20, system=system, messages=other)  # type: ignore[arg-type]
    assert 0 < third.usage.cache_read_input_tokens < written
