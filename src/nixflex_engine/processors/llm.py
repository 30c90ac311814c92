"""The LLM processor: stream a reply for each context, retry before the first token, cancel on
barge-in. :class:`ClaudeLLM` runs it on ``anthropic`` 2.10 (``AsyncAnthropic.messages.stream``).

Consumes:
  ``LLMContextFrame(messages, system, turn)`` — start a reply (a reply still streaming is
  cancelled first: its HTTP stream is closed and, if it had started, it is ended with
  ``LLMResponseEndFrame``).
  ``InterruptionFrame`` — cancel the reply at once (HTTP stream closed, so no further tokens are
  generated or billed), then pass the frame on.
Emits (downstream):
  ``LLMResponseStartFrame(turn)`` at the first token, ``LLMTextFrame`` per text delta as it
  arrives, ``LLMResponseEndFrame(turn)``; ``MetricsFrame("llm_ttft_ms", turn)`` — from the
  ``LLMContextFrame``'s arrival to the first token on the run clock, retries included, i.e. what
  the caller waits; ``LLMUsageFrame`` (input, output, cache read/write tokens) per reply, also
  for a cancelled one (its input was billed).
  On failure before the first token that retries cannot fix: an ``ErrorFrame`` (upstream, not
  fatal) and ``TTSSpeakFrame(apology, end_call_reason="error")`` so the agent apologises and
  hangs up. On failure after the first token: ``LLMResponseEndFrame`` (the reply ends with what
  was said) and an ``ErrorFrame`` (not fatal).

Retries (the SDK's own are off: ``max_retries=0``, since only this processor knows whether a
token was already spoken): overloaded (529), rate limit (429, ``retry-after``/``retry-after-ms``
honoured), 408, 409, 500, 502, 503, 504, connection errors and timeouts, and a mid-stream SSE
``error`` event (the SDK raises a plain ``APIStatusError`` with ``status_code == 200``; its
``.type`` decides) — only while no token has been emitted. Exponential backoff with jitter
(:func:`backoff_delay_ms`), at most ``max_attempts`` attempts, and never past
``retry_deadline_ms`` after the context arrived (each attempt's wait for its first token is
bounded by what is left of it).

Tools (Claude tool use): give the processor :class:`LLMTool` s (name, description, JSON-schema
input, an async handler). When the model answers with ``tool_use`` blocks, the processor emits
``LLMToolCallFrame``, awaits the handler (bounded by ``tool_timeout_ms``; an exception or a
timeout becomes an error result the model sees), emits ``LLMToolResultFrame``, sends the
``tool_result`` back and streams the continuation of the same reply — text spoken before the
tool call ("let me check") and after it are one reply, one turn. At most ``max_tool_rounds``
rounds of tool calls per reply (the last request is made with ``tool_choice: none``). A handler
runs inside the reply: a barge-in cancels it with the stream. Once a tool has been called the
reply is never retried (that would call the tool twice): a later failure before any text ends
it with the apology. The tool exchange is not kept in the conversation: the next turn's context
has what the caller heard.

A new provider is one subclass of :class:`LLMService` implementing :meth:`LLMService.stream_reply`
(an async generator of text deltas, :class:`LLMUsage` and, with tools, :class:`ToolCall` /
:class:`ToolResult` — :meth:`LLMService.call_tool` runs a handler) and
:meth:`LLMService.retry_hint`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import anthropic
import httpx2

from nixflex_engine.config import Settings
from nixflex_engine.frames import (
    EndReason,
    Frame,
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
from nixflex_engine.log import get_logger, log_event
from nixflex_engine.pipeline import FrameDirection, FrameProcessor

__all__ = [
    "DEFAULT_APOLOGY",
    "ClaudeLLM",
    "LLMService",
    "LLMTool",
    "LLMUsage",
    "ReplyItem",
    "RetryHint",
    "ToolCall",
    "ToolHandler",
    "ToolResult",
    "anthropic_client",
    "anthropic_retry_hint",
    "backoff_delay_ms",
]

_log = get_logger(__name__)

DEFAULT_APOLOGY = (
    "I'm sorry, I'm having technical difficulties right now. Someone will get back to you. Goodbye."
)

_RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
_RETRYABLE_ERROR_TYPES = frozenset(
    {"overloaded_error", "rate_limit_error", "api_error", "timeout_error"}
)


@dataclass(frozen=True, slots=True)
class LLMUsage:
    """Token counts of one request so far (cumulative, as the API reports them)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


def _add_usage(a: LLMUsage, b: LLMUsage) -> LLMUsage:
    return LLMUsage(
        a.input_tokens + b.input_tokens,
        a.output_tokens + b.output_tokens,
        a.cache_read_input_tokens + b.cache_read_input_tokens,
        a.cache_creation_input_tokens + b.cache_creation_input_tokens,
    )


#: A tool's handler: receives the model's ``input`` (a dict matching the tool's
#: ``input_schema``) and returns the result the model reads — a string, or anything
#: JSON-serializable (sent as JSON text).
ToolHandler = Callable[[dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class LLMTool:
    """A tool the model may call mid-reply: what it is for, its input, and who answers it."""

    name: str
    description: str
    input_schema: Mapping[str, Any]
    handler: ToolHandler

    def definition(self) -> dict[str, Any]:
        """The tool as the Messages API's ``tools`` entry (handler left out)."""
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": dict(self.input_schema),
        }


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One ``tool_use`` block of a reply, as :meth:`LLMService.stream_reply` yields it."""

    tool_use_id: str
    name: str
    input: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool's handler returned for a :class:`ToolCall` (``is_error``: it failed)."""

    tool_use_id: str
    name: str
    result: str
    is_error: bool = False


#: What :meth:`LLMService.stream_reply` yields.
ReplyItem = str | LLMUsage | ToolCall | ToolResult


@dataclass(frozen=True, slots=True)
class RetryHint:
    """Whether a failed request may be retried, and after how long the server asked."""

    retryable: bool
    retry_after_ms: float | None = None


def backoff_delay_ms(attempt: int, *, base_ms: float, max_ms: float, jitter: float) -> float:
    """Delay before retry number ``attempt`` (1 = the first retry): ``base_ms · 2^(attempt-1)``
    capped at ``max_ms``, scaled by ``0.5 + 0.5·jitter`` (``jitter`` in [0, 1]) so concurrent
    calls do not retry in lockstep."""
    cap = min(max_ms, base_ms * 2.0 ** max(0, attempt - 1))
    return cap * (0.5 + 0.5 * min(1.0, max(0.0, jitter)))


def _retry_after_ms(headers: httpx2.Headers) -> float | None:
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        with contextlib.suppress(ValueError):
            return max(0.0, float(raw_ms))
    raw = headers.get("retry-after")
    if raw is not None:
        with contextlib.suppress(ValueError):
            return max(0.0, float(raw) * 1000.0)
    return None


def anthropic_retry_hint(exc: BaseException) -> RetryHint:
    """Classify an exception from ``anthropic`` 2.10 (or its transport) for retrying."""
    if isinstance(exc, anthropic.APIStatusError):
        after = _retry_after_ms(exc.response.headers)
        if exc.status_code == 200:  # an SSE ``error`` event after the 200 response
            return RetryHint(exc.type in _RETRYABLE_ERROR_TYPES, after)
        should = exc.response.headers.get("x-should-retry")
        if should in ("true", "false"):
            return RetryHint(should == "true", after)
        return RetryHint(exc.status_code in _RETRYABLE_STATUS, after)
    if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError | TimeoutError):
        return RetryHint(True)
    return RetryHint(False)


class LLMService(FrameProcessor, abc.ABC):
    """Provider-neutral LLM processor: frames, cancellation, retries, metrics.

    Subclasses implement :meth:`stream_reply` and :meth:`retry_hint`.
    """

    def __init__(
        self,
        *,
        apology: str = DEFAULT_APOLOGY,
        max_attempts: int = 4,
        retry_deadline_ms: float = 10_000.0,
        backoff_base_ms: float = 250.0,
        backoff_max_ms: float = 2_000.0,
        rng: random.Random | None = None,
        tools: Sequence[LLMTool] = (),
        tool_timeout_ms: float = 10_000.0,
        max_tool_rounds: int = 4,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if max_tool_rounds < 1:
            raise ValueError("max_tool_rounds must be at least 1")
        names = [tool.name for tool in tools]
        if len(set(names)) != len(names):
            raise ValueError("tool names must be unique")
        self.tools: tuple[LLMTool, ...] = tuple(tools)
        self.tool_timeout_ms = tool_timeout_ms
        self.max_tool_rounds = max_tool_rounds
        self.apology = apology
        self.max_attempts = max_attempts
        self.retry_deadline_ms = retry_deadline_ms
        self.backoff_base_ms = backoff_base_ms
        self.backoff_max_ms = backoff_max_ms
        self._rng = rng or random.Random()
        self._reply: asyncio.Task[Any] | None = None
        self._superseded = False

    # --- provider hooks --------------------------------------------------------------------

    @abc.abstractmethod
    def stream_reply(self, frame: LLMContextFrame) -> AsyncGenerator[ReplyItem, None]:
        """Open one request for ``frame``; yield text deltas as they arrive and
        :class:`LLMUsage` whenever the counts change (cumulative over the reply). With tools:
        yield each :class:`ToolCall`, then the :class:`ToolResult` of :meth:`call_tool`, then
        continue the reply. Closing the generator must close the request."""

    @abc.abstractmethod
    def retry_hint(self, exc: BaseException) -> RetryHint:
        """Whether ``exc`` (raised by :meth:`stream_reply`) is worth another attempt."""

    async def call_tool(self, call: ToolCall) -> ToolResult:
        """Run the handler of ``call``'s tool, bounded by ``tool_timeout_ms``. Never raises
        (but for cancellation): an unknown tool, a timeout or an exception is an error result
        the model reads, so it can tell the caller."""
        tool = next((t for t in self.tools if t.name == call.name), None)
        if tool is None:
            return ToolResult(call.tool_use_id, call.name, f"Unknown tool {call.name!r}.", True)
        try:
            async with asyncio.timeout(self.tool_timeout_ms / 1000.0):
                value = await tool.handler(dict(call.input))
        except TimeoutError:
            log_event(
                _log,
                "llm.tool_timeout",
                level=logging.WARNING,
                call_id=self.call_id,
                tool=tool.name,
            )
            return ToolResult(call.tool_use_id, call.name, "The tool timed out.", True)
        except Exception as exc:
            log_event(
                _log,
                "llm.tool_failed",
                level=logging.WARNING,
                call_id=self.call_id,
                tool=tool.name,
                error=repr(exc),
            )
            return ToolResult(call.tool_use_id, call.name, f"The tool failed: {exc}", True)
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        return ToolResult(call.tool_use_id, call.name, text)

    # --- frames ----------------------------------------------------------------------------

    @property
    def replying(self) -> bool:
        """Whether a reply is being requested or streamed."""
        return self._reply is not None and not self._reply.done()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMContextFrame):
            await self._cancel_reply(superseded=True)
            self._reply = self.create_task(self._respond(frame), f"reply-{frame.turn}")
        elif isinstance(frame, InterruptionFrame):
            await self._cancel_reply(superseded=False)
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    async def cleanup(self) -> None:
        await self._cancel_reply(superseded=False)

    async def _cancel_reply(self, *, superseded: bool) -> None:
        task, self._reply = self._reply, None
        if task is None or task.done():
            return
        self._superseded = superseded
        task.cancel()
        await asyncio.wait([task])

    # --- one reply -------------------------------------------------------------------------

    async def _respond(self, frame: LLMContextFrame) -> None:
        turn = frame.turn
        started_ms = self.now_ms()
        deadline_ms = started_ms + self.retry_deadline_ms
        usage: LLMUsage | None = None
        emitted = False
        tool_called = False  # a tool ran: never retry (it would run twice)
        attempt = 0
        while True:
            attempt += 1
            usage = None
            try:
                remaining_s = max(0.001, (deadline_ms - self.now_ms()) / 1000.0)
                async with asyncio.timeout(remaining_s) as first_token_deadline:
                    gen = self.stream_reply(frame)
                    async with contextlib.aclosing(gen):
                        async for item in gen:
                            if isinstance(item, LLMUsage):
                                usage = item
                                continue
                            if isinstance(item, ToolCall):
                                tool_called = True
                                first_token_deadline.reschedule(None)
                                await self.push_frame(
                                    LLMToolCallFrame(
                                        tool_use_id=item.tool_use_id,
                                        name=item.name,
                                        input=dict(item.input),
                                        turn=turn,
                                    )
                                )
                                continue
                            if isinstance(item, ToolResult):
                                await self.push_frame(
                                    LLMToolResultFrame(
                                        tool_use_id=item.tool_use_id,
                                        name=item.name,
                                        result=item.result,
                                        is_error=item.is_error,
                                        turn=turn,
                                    )
                                )
                                continue
                            if not item:
                                continue
                            if not emitted:
                                emitted = True
                                first_token_deadline.reschedule(None)
                                await self.push_frame(LLMResponseStartFrame(turn=turn))
                                await self.push_frame(
                                    MetricsFrame(
                                        "llm_ttft_ms",
                                        self.now_ms() - started_ms,
                                        turn=turn,
                                        processor=self.name,
                                    )
                                )
                            await self.push_frame(LLMTextFrame(text=item))
            except asyncio.CancelledError:
                if emitted and self._superseded:
                    await self.push_frame(LLMResponseEndFrame(turn=turn))
                await self._push_usage(usage, turn)
                log_event(_log, "llm.cancelled", call_id=self.call_id, turn=turn)
                raise
            except Exception as exc:
                if emitted:
                    await self.push_frame(LLMResponseEndFrame(turn=turn))
                    await self._push_usage(usage, turn)
                    log_event(
                        _log,
                        "llm.failed_mid_reply",
                        level=logging.WARNING,
                        call_id=self.call_id,
                        turn=turn,
                        error=repr(exc),
                    )
                    await self.push_error(exc)
                    return
                await self._push_usage(usage, turn)
                hint = self.retry_hint(exc)
                delay_ms = (
                    hint.retry_after_ms
                    if hint.retry_after_ms is not None
                    else backoff_delay_ms(
                        attempt,
                        base_ms=self.backoff_base_ms,
                        max_ms=self.backoff_max_ms,
                        jitter=self._rng.random(),
                    )
                )
                give_up = (
                    tool_called
                    or not hint.retryable
                    or attempt >= self.max_attempts
                    or self.now_ms() + delay_ms >= deadline_ms
                )
                log_event(
                    _log,
                    "llm.gave_up" if give_up else "llm.retry",
                    level=logging.ERROR if give_up else logging.WARNING,
                    call_id=self.call_id,
                    turn=turn,
                    attempt=attempt,
                    delay_ms=round(delay_ms, 1),
                    error=repr(exc),
                )
                if give_up:
                    await self.push_error(f"LLM failed after {attempt} attempt(s): {exc!r}")
                    await self.push_frame(
                        TTSSpeakFrame(text=self.apology, end_call_reason=EndReason.ERROR.value)
                    )
                    return
                await asyncio.sleep(delay_ms / 1000.0)
                continue
            if not emitted:
                await self.push_frame(LLMResponseStartFrame(turn=turn))
            await self.push_frame(LLMResponseEndFrame(turn=turn))
            await self._push_usage(usage, turn)
            return

    async def _push_usage(self, usage: LLMUsage | None, turn: int) -> None:
        if usage is None:
            return
        await self.push_frame(
            LLMUsageFrame(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_input_tokens=usage.cache_read_input_tokens,
                cache_creation_input_tokens=usage.cache_creation_input_tokens,
                turn=turn,
            )
        )


def _usage_of(raw: Any) -> LLMUsage:
    return LLMUsage(
        input_tokens=int(getattr(raw, "input_tokens", 0) or 0),
        output_tokens=int(getattr(raw, "output_tokens", 0) or 0),
        cache_read_input_tokens=int(getattr(raw, "cache_read_input_tokens", 0) or 0),
        cache_creation_input_tokens=int(getattr(raw, "cache_creation_input_tokens", 0) or 0),
    )


def _block_param(block: Any) -> dict[str, Any]:
    """A content block of a reply as a request's content block (the assistant turn resent)."""
    if block.type == "tool_use":
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    if block.type == "text":
        return {"type": "text", "text": block.text}
    dumped: dict[str, Any] = block.model_dump(exclude_none=True)
    return dumped


def anthropic_client(
    api_key: str,
    base_url: str | None = None,
    *,
    connect_timeout_s: float = 5.0,
    read_timeout_s: float = 30.0,
) -> anthropic.AsyncAnthropic:
    """The SDK client :class:`ClaudeLLM` uses (no SDK retries: the processor retries itself).

    Building one costs ~25-40 ms of CPU (its SSL context loads the CA bundle, even for an
    ``http://`` base URL), which blocks the event loop of every call in the process: a process
    serving many calls builds one and passes it to each ``ClaudeLLM(client=...)`` (see
    ``calls.chain.ProviderClients``). A client passed in is not closed by the processor.
    """
    return anthropic.AsyncAnthropic(
        api_key=api_key,
        base_url=base_url,
        max_retries=0,
        timeout=httpx2.Timeout(read_timeout_s, connect=connect_timeout_s),
    )


class ClaudeLLM(LLMService):
    """Claude over ``anthropic`` 2.10 ``AsyncAnthropic.messages.stream``.

    The system prompt goes as one text block marked ``cache_control: ephemeral`` (it is stable
    for the whole call, so every turn after the first reads it from the prompt cache); the
    growing conversation follows it uncached. 2.10 takes no ``temperature``.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        model: str = "claude-haiku-4-5",
        max_tokens: int = 300,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        client: anthropic.AsyncAnthropic | None = None,
        apology: str = DEFAULT_APOLOGY,
        max_attempts: int = 4,
        retry_deadline_ms: float = 10_000.0,
        backoff_base_ms: float = 250.0,
        backoff_max_ms: float = 2_000.0,
        rng: random.Random | None = None,
        tools: Sequence[LLMTool] = (),
        tool_timeout_ms: float = 10_000.0,
        max_tool_rounds: int = 4,
        name: str | None = None,
    ) -> None:
        super().__init__(
            apology=apology,
            max_attempts=max_attempts,
            retry_deadline_ms=retry_deadline_ms,
            backoff_base_ms=backoff_base_ms,
            backoff_max_ms=backoff_max_ms,
            rng=rng,
            tools=tools,
            tool_timeout_ms=tool_timeout_ms,
            max_tool_rounds=max_tool_rounds,
            name=name,
        )
        self.model = model
        self.max_tokens = max_tokens
        self._owns_client = client is None
        self._client = client or anthropic_client(
            api_key,
            base_url,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
        )

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> ClaudeLLM:
        """A processor configured from ``settings`` (key, base URL, model); ``overrides`` win."""
        kwargs: dict[str, Any] = {
            "api_key": settings.anthropic_api_key.get_secret_value(),
            "base_url": settings.anthropic_base_url,
            "model": settings.llm_model,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    def retry_hint(self, exc: BaseException) -> RetryHint:
        return anthropic_retry_hint(exc)

    async def stream_reply(self, frame: LLMContextFrame) -> AsyncGenerator[ReplyItem, None]:
        """Stream Claude's reply; with tools, run each ``tool_use`` and continue the reply."""
        system: Iterable[Any] | anthropic.Omit = (
            [{"type": "text", "text": frame.system, "cache_control": {"type": "ephemeral"}}]
            if frame.system
            else anthropic.omit
        )
        messages: list[Any] = list(frame.messages)
        tools = [tool.definition() for tool in self.tools]
        spent = LLMUsage()  # usage of the finished rounds of this reply
        for round_no in range(self.max_tool_rounds + 1):
            extra: dict[str, Any] = {}
            if tools:
                extra["tools"] = tools
                if round_no == self.max_tool_rounds:  # enough tools: the model must answer
                    extra["tool_choice"] = {"type": "none"}
            async with self._client.messages.stream(
                model=self.model,
                max_tokens=self.max_tokens,
                system=cast(Any, system),
                messages=cast(Any, messages),
                **extra,
            ) as stream:
                async for event in stream:
                    if event.type == "text":
                        yield event.text
                    elif event.type == "message_start":
                        yield _add_usage(spent, _usage_of(event.message.usage))
                    elif event.type == "message_delta":
                        yield _add_usage(spent, _usage_of(stream.current_message_snapshot.usage))
                final = await stream.get_final_message()
            spent = _add_usage(spent, _usage_of(final.usage))
            uses = [block for block in final.content if block.type == "tool_use"]
            if final.stop_reason != "tool_use" or not uses:
                return
            messages.append(
                {"role": "assistant", "content": [_block_param(b) for b in final.content]}
            )
            results: list[dict[str, Any]] = []
            for block in uses:
                call = ToolCall(block.id, block.name, dict(cast(Mapping[str, Any], block.input)))
                yield call
                result = await self.call_tool(call)
                yield result
                results.append(
                    {
                        "type": "tool_result",
                        "tool_use_id": result.tool_use_id,
                        "content": result.result,
                        "is_error": result.is_error,
                    }
                )
            messages.append({"role": "user", "content": results})

    async def cleanup(self) -> None:
        await super().cleanup()
        if self._owns_client:
            with contextlib.suppress(Exception):
                await self._client.close()
