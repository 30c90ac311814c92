"""ClaudeLLM through the real anthropic 2.10 SDK against the fake Messages API over 127.0.0.1."""

from __future__ import annotations

import asyncio
import random

import anthropic
import httpx2

from nixflex_engine.frames import (
    ErrorFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    LLMUsageFrame,
    MetricsFrame,
    TTSSpeakFrame,
)
from nixflex_engine.processors.llm import (
    ClaudeLLM,
    RetryHint,
    anthropic_retry_hint,
    backoff_delay_ms,
)
from nixflex_engine.sandbox.fake_anthropic import AnthropicFault, split_tokens

from .conftest import ANTHROPIC_KEY, Harness, Sandbox

REPLY = "Sure, I can help with that. What day works best for you?"
SYSTEM = "You are Alex, a friendly agent calling from Acme."


def claude(sandbox: Sandbox, **kw: object) -> ClaudeLLM:
    args: dict[str, object] = {
        "api_key": ANTHROPIC_KEY,
        "base_url": sandbox.url,
        "backoff_base_ms": 10.0,
        "backoff_max_ms": 50.0,
        "rng": random.Random(7),
    }
    args.update(kw)
    return ClaudeLLM(**args)  # type: ignore[arg-type]


def context(turn: int = 1, text: str = "Hi, can you help me?") -> LLMContextFrame:
    return LLMContextFrame(messages=({"role": "user", "content": text},), system=SYSTEM, turn=turn)


def text_of(h: Harness) -> str:
    return "".join(f.text for f in h.down(LLMTextFrame))


async def test_streams_a_reply_with_cached_system_prompt_usage_and_ttft(sandbox: Sandbox) -> None:
    sandbox.anthropic.script.extend([REPLY, "Okay."])
    async with Harness(claude(sandbox)) as h:
        await h.send(context(1))
        await h.wait_for(lambda: h.down(LLMUsageFrame))
        assert text_of(h) == REPLY
        assert len(h.down(LLMTextFrame)) == len(split_tokens(REPLY))  # one frame per delta
        kinds = h.kinds()
        assert kinds.index("LLMResponseStartFrame") < kinds.index("LLMTextFrame")
        assert kinds.index("LLMResponseEndFrame") > max(
            i for i, k in enumerate(kinds) if k == "LLMTextFrame"
        )
        [ttft] = [m for m in h.down(MetricsFrame) if m.name == "llm_ttft_ms"]
        assert ttft.turn == 1 and ttft.value > 0
        [usage] = h.down(LLMUsageFrame)
        assert usage.turn == 1 and usage.output_tokens == len(split_tokens(REPLY))
        assert usage.cache_creation_input_tokens > 0 and usage.cache_read_input_tokens == 0

        await h.send(context(2, "Thanks!"))
        await h.wait_for(lambda: len(h.down(LLMUsageFrame)) == 2)
        assert h.down(LLMUsageFrame)[1].cache_read_input_tokens > 0  # the system prompt cached
        assert [f.turn for f in h.down(LLMResponseEndFrame)] == [1, 2]

    req = sandbox.anthropic.requests[0]
    assert req.headers["authorization"] == f"Bearer {ANTHROPIC_KEY}"
    assert req.body["stream"] is True and "temperature" not in req.body
    assert req.system_blocks == [
        {"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}
    ]
    assert req.messages == [{"role": "user", "content": "Hi, can you help me?"}]
    assert req.headers["x-stainless-retry-count"] == "0"
    assert not h.up(ErrorFrame)


async def test_overloaded_then_success_is_retried(sandbox: Sandbox) -> None:
    sandbox.anthropic.script.append(REPLY)
    sandbox.anthropic.fail_next("overloaded")
    sandbox.anthropic.fail_next("rate_limit")  # retry-after: 0 is honoured
    async with Harness(claude(sandbox)) as h:
        await h.send(context())
        await h.wait_for(lambda: h.down(LLMResponseEndFrame))
        assert text_of(h) == REPLY
    assert [r.status for r in sandbox.anthropic.requests] == [529, 429, 200]
    assert not h.up(ErrorFrame) and not h.down(TTSSpeakFrame)
    assert len(h.down(LLMResponseStartFrame)) == 1


async def test_mid_stream_error_before_the_first_token_is_retried(sandbox: Sandbox) -> None:
    sandbox.anthropic.script.extend([REPLY, REPLY])
    sandbox.anthropic.faults.append(AnthropicFault("stream_error", after_tokens=0))
    async with Harness(claude(sandbox)) as h:
        await h.send(context())
        await h.wait_for(lambda: h.down(LLMResponseEndFrame))
        assert text_of(h) == REPLY
    assert len(sandbox.anthropic.requests) == 2
    assert not h.up(ErrorFrame)


async def test_dropped_connection_before_the_first_token_is_retried(sandbox: Sandbox) -> None:
    sandbox.anthropic.script.extend([REPLY, REPLY])
    sandbox.anthropic.faults.append(AnthropicFault("drop", after_tokens=0))
    async with Harness(claude(sandbox)) as h:
        await h.send(context())
        await h.wait_for(lambda: h.down(LLMResponseEndFrame))
        assert text_of(h) == REPLY
    assert len(sandbox.anthropic.requests) == 2


async def test_mid_stream_error_after_the_first_token_ends_the_reply(sandbox: Sandbox) -> None:
    sandbox.anthropic.script.append(REPLY)
    sandbox.anthropic.faults.append(AnthropicFault("stream_error", after_tokens=3))
    async with Harness(claude(sandbox)) as h:
        await h.send(context())
        await h.wait_for(lambda: h.up(ErrorFrame))
        assert text_of(h) == "".join(split_tokens(REPLY)[:3])
        assert len(h.down(LLMResponseEndFrame)) == 1
        [err] = h.up(ErrorFrame)
        assert not err.fatal and "overloaded" in err.error.lower()
        assert not h.down(TTSSpeakFrame)  # what was said stands; no apology
        assert h.kinds().index("LLMResponseEndFrame") > h.kinds().index("LLMTextFrame")
    assert len(sandbox.anthropic.requests) == 1


async def test_gives_up_with_an_apology_and_error_end(sandbox: Sandbox) -> None:
    sandbox.anthropic.fail_next("overloaded", times=5)
    llm = claude(sandbox, max_attempts=3, apology="Sorry, I have to go.")
    async with Harness(llm) as h:
        await h.send(context())
        await h.wait_for(lambda: h.down(TTSSpeakFrame))
        [apology] = h.down(TTSSpeakFrame)
        assert apology.text == "Sorry, I have to go." and apology.end_call_reason == "error"
        [err] = h.up(ErrorFrame)
        assert not err.fatal and "3 attempt" in err.error
        assert not h.down(LLMResponseStartFrame)
    assert len(sandbox.anthropic.requests) == 3


async def test_bad_key_is_not_retried(sandbox: Sandbox) -> None:
    async with Harness(claude(sandbox, api_key="wrong")) as h:
        await h.send(context())
        await h.wait_for(lambda: h.down(TTSSpeakFrame))
    assert [r.status for r in sandbox.anthropic.requests] == [401]


async def test_interruption_closes_the_http_stream(sandbox: Sandbox) -> None:
    long_reply = " ".join(["This is a rather long answer that keeps going."] * 10)
    sandbox.anthropic.script.append(long_reply)
    sandbox.anthropic.settings.tokens_per_s = 40
    llm = claude(sandbox)
    async with Harness(llm) as h:
        await h.send(context())
        await h.wait_for(lambda: len(h.down(LLMTextFrame)) >= 2)
        await h.send(InterruptionFrame())
        texts_at_interrupt = len(h.down(LLMTextFrame))
        assert not llm.replying  # cancelled before the interruption was passed on
        assert h.kinds()[-1] == "InterruptionFrame"
        req = sandbox.anthropic.requests[0]
        await h.wait_for(lambda: req.client_disconnected, timeout_s=5)
        sent = req.tokens_sent
        await asyncio.sleep(0.2)  # 8 more tokens would have been generated
        assert req.tokens_sent == sent < len(split_tokens(long_reply))
        assert not req.completed
        assert len(h.down(LLMTextFrame)) == texts_at_interrupt  # nothing after the barge-in
        assert not h.down(LLMResponseEndFrame)
        [usage] = h.down(LLMUsageFrame)  # the input was billed: still reported
        assert usage.input_tokens > 0


async def test_new_context_cancels_the_reply_in_flight(sandbox: Sandbox) -> None:
    long_reply = " ".join(["A long first answer that will be superseded."] * 10)
    sandbox.anthropic.script.extend([long_reply, "Second."])
    sandbox.anthropic.settings.tokens_per_s = 40
    async with Harness(claude(sandbox)) as h:
        await h.send(context(1))
        await h.wait_for(lambda: h.down(LLMTextFrame))
        await h.send(context(2, "Actually, never mind."))
        await h.wait_for(lambda: len(h.down(LLMResponseEndFrame)) == 2)
        assert [f.turn for f in h.down(LLMResponseEndFrame)] == [1, 2]
        assert text_of(h).endswith("Second.")
        assert len(h.down(LLMResponseStartFrame)) == 2
    first = sandbox.anthropic.requests[0]
    assert first.client_disconnected and not first.completed


def test_retry_hints_and_backoff() -> None:
    request = httpx2.Request("POST", "http://x/v1/messages")

    def status_error(status: int, headers: dict[str, str], kind: str) -> Exception:
        response = httpx2.Response(status, headers=headers, request=request)
        body = {"type": "error", "error": {"type": kind, "message": "m"}}
        return anthropic.APIStatusError("m", response=response, body=body)

    assert anthropic_retry_hint(status_error(529, {}, "overloaded_error")) == RetryHint(True)
    assert anthropic_retry_hint(
        status_error(429, {"retry-after": "1.5"}, "rate_limit_error")
    ) == RetryHint(True, 1500.0)
    assert anthropic_retry_hint(
        status_error(429, {"retry-after-ms": "20", "retry-after": "1"}, "rate_limit_error")
    ) == RetryHint(True, 20.0)
    assert anthropic_retry_hint(status_error(400, {}, "invalid_request_error")).retryable is False
    assert anthropic_retry_hint(status_error(401, {}, "authentication_error")).retryable is False
    assert anthropic_retry_hint(status_error(200, {}, "overloaded_error")).retryable is True
    assert anthropic_retry_hint(status_error(200, {}, "invalid_request_error")).retryable is False
    assert anthropic_retry_hint(status_error(503, {"x-should-retry": "false"}, "api_error")) == (
        RetryHint(False)
    )
    assert anthropic_retry_hint(anthropic.APIConnectionError(request=request)).retryable
    assert not anthropic_retry_hint(ValueError("bug")).retryable

    assert backoff_delay_ms(1, base_ms=100, max_ms=1000, jitter=1.0) == 100
    assert backoff_delay_ms(3, base_ms=100, max_ms=1000, jitter=1.0) == 400
    assert backoff_delay_ms(9, base_ms=100, max_ms=1000, jitter=0.0) == 500


async def test_no_first_token_before_the_deadline_gives_up(sandbox: Sandbox) -> None:
    sandbox.anthropic.script.append(REPLY)
    sandbox.anthropic.settings.ttft_ms = 5_000
    async with Harness(claude(sandbox, retry_deadline_ms=300)) as h:
        await h.send(context())
        await h.wait_for(lambda: h.down(TTSSpeakFrame), timeout_s=3)
        assert h.down(TTSSpeakFrame)[0].end_call_reason == "error"
        assert not h.down(LLMTextFrame)
        req = sandbox.anthropic.requests[0]
        await h.wait_for(lambda: req.client_disconnected, timeout_s=5)
    assert len(sandbox.anthropic.requests) == 1 and req.tokens_sent == 0
