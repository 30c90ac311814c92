"""Fake Anthropic Messages API: ``POST /v1/messages``, streaming (SSE) and not.

It speaks the wire format of ``api.anthropic.com`` (wire-protocols §4, §5.3), so the real
``anthropic`` SDK (2.x, ``Authorization: Bearer``; and <2, ``x-api-key``) talks to it by
``base_url`` alone::

    client = AsyncAnthropic(api_key="test", base_url=url, max_retries=0)

Replies, in order of precedence:

1. ``fake.script``: a queue of scripted replies, one per request (a ``str``, or a
   :class:`ToolReply` for a ``tool_use`` block);
2. ``fake.rules``: the first :class:`Rule` whose regex matches the last user message;
3. a forced tool (``tools`` plus ``tool_choice`` ``{"type":"tool","name":…}`` or ``any``):
   a ``tool_use`` block whose ``input`` is built deterministically from the tool's
   ``input_schema`` and the conversation (see :func:`tool_input_for`);
4. the default persona (:func:`default_reply`): greets, answers, and says goodbye with
   ``[END_CALL]`` when the caller does.

Streaming follows §4.2 exactly: ``message_start`` (usage with the cache fields),
``content_block_start``, ``ping``, one ``content_block_delta`` per token (``text_delta`` or
``input_json_delta``; tokens are ≤ 5-character pieces, so a tag like ``[END_CALL]`` arrives
split), ``content_block_stop``, ``message_delta`` (``stop_reason`` and cumulative usage),
``message_stop``. The first delta leaves ``ttft_ms`` after the request arrived, the next ones
at ``tokens_per_s``. ``max_tokens`` and ``stop_sequences`` are honoured.

Prompt caching: everything up to the last block marked ``cache_control`` (tools, system blocks,
message content; a top-level ``cache_control`` marks the whole prompt) is cached. A request
reads the longest prefix, ending on a block boundary, that an earlier request cached within
5 minutes (``cache_read_input_tokens``) and writes the rest up to its breakpoint
(``cache_creation_input_tokens``); so a stable system prompt is read from turn 2 on, and a
breakpoint on the growing history reads the previous turn's prefix. Tokens are counted as
⌈characters / 4⌉.

Faults: ``fake.faults`` is a queue, one entry per request: :class:`AnthropicFault` kinds
``overloaded`` (529), ``rate_limit`` (429, ``retry-after: 0``), ``api_error`` (500),
``unavailable`` (503), ``stream_error`` (an SSE ``error`` event after ``after_tokens`` deltas)
and ``drop`` (the TCP connection aborted after ``after_tokens`` deltas);
``fake.fail_next("overloaded", times=2)`` queues two. A request that is not streamed meets a
``drop`` as an aborted connection and a ``stream_error`` as a 529. Every request is recorded in
``fake.requests`` (headers, body, what was sent, whether the client hung up).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from nixflex_engine.log import get_logger, log_event
from nixflex_engine.sandbox.serve import abort_connection

__all__ = [
    "AnthropicFault",
    "AnthropicSettings",
    "FakeAnthropic",
    "FaultKind",
    "RecordedRequest",
    "Rule",
    "ToolReply",
    "default_reply",
    "split_tokens",
    "tool_input_for",
]

_log = get_logger(__name__)

FaultKind = Literal["overloaded", "rate_limit", "api_error", "unavailable", "stream_error", "drop"]

_STATUS: Mapping[str, tuple[int, str, str]] = MappingProxyType(
    {
        "overloaded": (529, "overloaded_error", "Overloaded"),
        "rate_limit": (
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your limit.",
        ),
        "api_error": (500, "api_error", "Internal server error"),
        "unavailable": (503, "api_error", "Service unavailable"),
    }
)
_END_CALL = "[END_CALL]"
_CACHE_TTL_S = 300.0  # the default 5-minute cache, refreshed by each hit
_CACHE_ENTRIES = 4096


@dataclass(slots=True)
class AnthropicSettings:
    """Latency of the fake model and the key it expects (``None``: any non-empty key)."""

    ttft_ms: float = 350.0
    tokens_per_s: float = 60.0
    api_key: str | None = None
    cache_min_tokens: int = 0  # shortest cacheable prefix (the real API: 1024+)


@dataclass(slots=True)
class Rule:
    """Reply ``reply`` when regex ``pattern`` matches the last user message (case-insensitive);
    ``times``: how many requests it may answer (``None``: any number)."""

    pattern: str
    reply: str
    times: int | None = None


@dataclass(slots=True)
class ToolReply:
    """A scripted ``tool_use`` block."""

    name: str
    input: dict[str, Any]


@dataclass(slots=True)
class AnthropicFault:
    """One request's failure; ``after_tokens`` applies to ``stream_error`` and ``drop``."""

    kind: FaultKind
    after_tokens: int = 2
    retry_after: str = "0"


@dataclass(slots=True)
class RecordedRequest:
    """One request as received, and how it was answered."""

    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float
    status: int = 200
    reply: str | ToolReply | None = None
    tokens_sent: int = 0
    first_token_at: float | None = None
    completed: bool = False
    client_disconnected: bool = False
    usage: dict[str, int] = field(default_factory=dict)

    @property
    def system_blocks(self) -> list[dict[str, Any]]:
        system = self.body.get("system")
        if isinstance(system, str):
            return [{"type": "text", "text": system}]
        return list(system or [])

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or [])

    @property
    def last_user_text(self) -> str:
        return _last_user_text(self.messages)

    @property
    def cache_marked(self) -> bool:
        """Whether any block (or the request itself) carries ``cache_control``."""
        return _cache_prefix(self.body) is not None


def _block_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content or []:
        if isinstance(block, dict):
            if block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif block.get("type") == "tool_result":
                parts.append(_block_text(block.get("content")))
    return "\n".join(parts)


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for msg in reversed(messages):
        if msg.get("role") == "user":
            return _block_text(msg.get("content"))
    return ""


def _tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _unmarked(block: Any) -> str:
    """A block serialized without its ``cache_control`` (moving a breakpoint keeps the text)."""
    if isinstance(block, dict):
        block = {k: v for k, v in block.items() if k != "cache_control"}
    return json.dumps(block, sort_keys=True)


def _marked(block: Any) -> bool:
    return isinstance(block, dict) and "cache_control" in block


def _prompt_units(body: dict[str, Any]) -> list[tuple[str, bool]]:
    """The prompt as (serialized block, has cache_control) in cache order: tools, system,
    messages. A message given as a plain string counts as one text block."""
    units: list[tuple[str, bool]] = []
    for tool in body.get("tools") or []:
        units.append((_unmarked(tool), _marked(tool)))
    system = body.get("system")
    blocks = [{"type": "text", "text": system}] if isinstance(system, str) else system or []
    for block in blocks:
        units.append((_unmarked(block), _marked(block)))
    for msg in body.get("messages") or []:
        content = msg.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        for block in content or []:
            units.append((f"{msg.get('role')}:{_unmarked(block)}", _marked(block)))
    return units


def _cache_prefix(body: dict[str, Any]) -> int | None:
    """Index (exclusive) of the end of the cached prefix in :func:`_prompt_units`, if any."""
    units = _prompt_units(body)
    if body.get("cache_control"):
        return len(units)
    marked = [i for i, (_, cached) in enumerate(units) if cached]
    return marked[-1] + 1 if marked else None


def split_tokens(text: str) -> list[str]:
    """Split ``text`` into stream deltas: leading whitespace plus at most 5 characters."""
    return re.findall(r"\s*\S{1,5}|\s+$", text)


def _persona(system: str) -> tuple[str, str]:
    """The agent's name and company, read from a system prompt ("You are Sam ... from Acme")."""
    name = re.search(r"\b[Yy]ou are ([A-Z][a-z]+)\b", system)
    company = re.search(r"\b(?:from|at|for|with) ([A-Z][\w&'-]*(?: [A-Z][\w&'-]*)*)", system)
    return (name.group(1) if name else "Alex", company.group(1) if company else "Acme")


def default_reply(messages: list[dict[str, Any]], system: str = "") -> str:
    """The deterministic demo persona's reply to the last user message.

    Its first turn is an opener (a phone agent speaks first); then it says goodbye with
    ``[END_CALL]`` when the caller does, re-prompts on a bracketed note such as ``[silence]``,
    thanks, confirms, answers questions, and otherwise asks the caller to say more, quoting
    them (so tests can see what it was told).
    """
    name, company = _persona(system)
    last = _last_user_text(messages).strip()
    low = last.lower()
    turns = sum(1 for m in messages if m.get("role") == "assistant")
    if re.search(r"\b(bye|goodbye|good bye|have to go|not interested|stop calling)\b", low):
        return f"Understood. Thank you for your time, and have a great day. Goodbye! {_END_CALL}"
    if turns == 0 or not last:
        return (
            f"Hi, this is {name} calling from {company}. I'm following up on your recent "
            "request. Do you have a minute to talk?"
        )
    if re.fullmatch(r"[\[(].*[\])]", low):
        return "Hello? Are you still there?"
    if re.search(r"\b(thanks|thank you)\b", low):
        return "You're very welcome. Is there anything else I can help you with today?"
    if re.search(r"^(yes|yeah|yep|sure|ok|okay|of course|absolutely)\b", low):
        return "Great. What day and time would work best for a short follow-up call?"
    if re.search(r"^(no|nope|not really)\b", low):
        return "No problem at all. Is there anything else I can help you with?"
    if low.endswith("?"):
        return (
            "Good question. In short, we take care of the whole setup for you, and it "
            "usually takes less than a week. Would that work for you?"
        )
    quoted = last if len(last) <= 80 else last[:77].rstrip() + "..."
    return f'I see, you said: "{quoted}". Could you tell me a little more about that?'


def _transcript(body: dict[str, Any]) -> str:
    lines = [_block_text(m.get("content")) for m in body.get("messages") or []]
    return "\n".join(lines)


# A transcript line spoken by the other party ("Caller: …", "[1:05] Customer (…): …").
_CALLER_LINE = re.compile(
    r"^\s*(?:\[[^\]]*\]\s*)?(?:caller|user|customer|callee)\b[^:\n]{0,40}:(.*)$",
    re.IGNORECASE | re.MULTILINE,
)
# Any labelled transcript line ("Agent: …", "[1:05] Agent (interrupted): …").
_SPEAKER_LINE = re.compile(
    r"\s*(?:\[[^\]]*\]\s*)?(?:agent|assistant|caller|user|customer|callee)\b[^:\n]{0,40}:",
    re.IGNORECASE,
)
# Sentiment enum spellings, by mood: the first one the schema offers is used.
_MOODS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "positive": ("positive", "happy", "satisfied"),
        "neutral": ("neutral",),
        "negative": ("negative", "frustrated", "angry", "unhappy"),
    }
)


def _caller_text(transcript: str) -> str:
    """The caller's lines when the transcript labels speakers, else the whole transcript (so
    the agent's own "Great!" or "Goodbye!" does not decide the caller's mood)."""
    said = [m.group(1) for m in _CALLER_LINE.finditer(transcript)]
    return "\n".join(said) if said else transcript


def _nullable(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    return any(o.get("type") == "null" for k in ("anyOf", "oneOf") for o in schema.get(k) or [])


def _value_for(name: str, schema: dict[str, Any], transcript: str, depth: int = 0) -> Any:
    """A value conforming to ``schema`` (a JSON Schema subset), derived from ``transcript``.

    A nullable string or number the conversation does not give (no email, no ``name is X``,
    no number) is ``None``: like the prompt asks of the real model, nothing is invented."""
    for key in ("anyOf", "oneOf"):
        options = [o for o in schema.get(key) or [] if o.get("type") != "null"]
        if options:
            option = dict(options[0])
            kind = option.get("type")
            if kind is not None and _nullable(schema) and not _nullable(option):
                option["type"] = [*(kind if isinstance(kind, list) else [kind]), "null"]
            return _value_for(name, option, transcript, depth)
    if "const" in schema:
        return schema["const"]
    low = _caller_text(transcript).lower()
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if "enum" in schema:
        options = list(schema["enum"])
        if "sentiment" in name.lower():
            mood = "neutral"
            if re.search(r"\b(great|thanks|thank you|perfect|love|happy|sure)\b", low):
                mood = "positive"
            if re.search(r"\b(angry|annoyed|terrible|stop calling|not interested|awful)\b", low):
                mood = "negative"
            for spelling in _MOODS[mood]:
                if spelling in options:
                    return spelling
        return options[0]
    if kind == "object" or "properties" in schema:
        props: dict[str, Any] = schema.get("properties") or {}
        if depth > 6:
            return {}
        return {k: _value_for(k, v, transcript, depth + 1) for k, v in props.items()}
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1)))
        item = schema.get("items") or {"type": "string"}
        return [_value_for(name, item, transcript, depth + 1) for _ in range(count)]
    if kind == "boolean":
        if re.search(r"\b(no|not interested|goodbye|bye|stop)\b", low) and not re.search(
            r"\b(yes|sure|great|ok|okay)\b", low
        ):
            return False
        return True
    if kind in ("integer", "number") and _nullable(schema):
        # Only a number the call ties to the field ("budget is 500"), else null.
        said = _string_for(name, {}, transcript, nullable=True) or ""
        if not re.fullmatch(r"\d+(\.\d+)?", said):
            return None
        return int(float(said)) if kind == "integer" else float(said)
    if kind in ("integer", "number"):
        found = re.search(r"\b\d+(\.\d+)?\b", transcript)
        value: float = float(found.group(0)) if found else float(schema.get("minimum", 0))
        if "minimum" in schema:
            value = max(value, float(schema["minimum"]))
        if "maximum" in schema:
            value = min(value, float(schema["maximum"]))
        return int(value) if kind == "integer" else value
    if kind == "null":
        return None
    text = _string_for(name, schema, transcript, nullable=_nullable(schema))
    if text is not None and ("number" in kinds or "integer" in kinds):
        # A field that may be a number: "party size is 4" gives 4, not "4".
        if re.fullmatch(r"\d+", text) or ("number" in kinds and re.fullmatch(r"\d+\.\d+", text)):
            return int(text) if re.fullmatch(r"\d+", text) else float(text)
    return text


def _string_for(
    name: str, schema: dict[str, Any], transcript: str, *, nullable: bool = False
) -> str | None:
    low_name = name.lower()
    fmt = schema.get("format")
    if fmt == "email" or "email" in low_name:
        found = re.search(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", transcript)
        if found is None and nullable:
            return None
        return found.group(0) if found else "unknown@example.com"
    if fmt == "date":
        found = re.search(r"\b\d{4}-\d{2}-\d{2}\b", transcript)
        if found is None and nullable:
            return None
        return found.group(0) if found else "1970-01-01"
    if "summary" in low_name:
        lines = [ln.strip() for ln in transcript.strip().splitlines() if ln.strip()]
        # Speaker lines ("[0:05] Caller: …") when there are any, not a prompt's own wrapping.
        lines = [ln for ln in lines if _SPEAKER_LINE.match(ln)] or lines
        last = lines[-1] if lines else ""
        return (
            f"A call of {len(lines)} transcript line{'s' if len(lines) != 1 else ''}. "
            f'It ended with: "{last[:120]}".'
        )
    words = [w for w in re.split(r"[_\W]+", low_name) if w]
    if words:
        label = r"\b" + r"\s+".join(map(re.escape, words))
        # "<name words> is X Y": the first word, then any Capitalised ones ("Bob Smith"; a word
        # starting with a non-ASCII letter counts, for "Zoë Ångström").
        pattern = (
            f"(?i:{label}\\s+(?:is|was|are|:)\\s+)" + r"([\w'@.+-]+(?:\s+[^\W\d_a-z][\w'-]*)*)"
        )
        found = re.search(pattern, transcript)
        if found:
            return found.group(1).strip().rstrip(".")
    if nullable:
        return None
    value = "unknown"
    min_len = int(schema.get("minLength", 0))
    return value + "." * max(0, min_len - len(value))


def tool_input_for(tool: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The deterministic input of a forced ``tool``: every property of its ``input_schema``
    filled from the conversation (sentiment enums, booleans, numbers, ``name is X`` phrases,
    a summary), always conforming to the schema's types, enums and bounds. Mood and success
    follow the caller's lines when speakers are labelled (``Caller: …``); a nullable field the
    conversation does not give is ``None``."""
    schema = tool.get("input_schema") or {"type": "object", "properties": {}}
    value = _value_for(str(tool.get("name", "")), schema, _transcript(body))
    return value if isinstance(value, dict) else {}


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _error_body(kind: str, message: str, request_id: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}


class FakeAnthropic:
    """The Messages API; mount :meth:`routes` in a Starlette app."""

    def __init__(self, settings: AnthropicSettings | None = None) -> None:
        self.settings = settings or AnthropicSettings()
        self.script: deque[str | ToolReply] = deque()
        self.rules: list[Rule] = []
        self.faults: deque[AnthropicFault] = deque()
        self.requests: list[RecordedRequest] = []
        self._cache: OrderedDict[str, float] = OrderedDict()  # prefix digest → expiry

    def routes(self) -> list[BaseRoute]:
        """The Starlette routes (``POST /v1/messages``)."""
        return [Route("/v1/messages", self._messages, methods=["POST"])]

    def fail_next(self, kind: FaultKind, *, times: int = 1, after_tokens: int = 2) -> None:
        """Make the next ``times`` requests fail with ``kind``."""
        for _ in range(times):
            self.faults.append(AnthropicFault(kind, after_tokens=after_tokens))

    def add_rule(self, pattern: str, reply: str, *, times: int | None = None) -> None:
        """Reply ``reply`` to requests whose last user message matches ``pattern``."""
        self.rules.append(Rule(pattern, reply, times))

    # -- reply selection

    def _choose(self, body: dict[str, Any]) -> str | ToolReply:
        if self.script:
            return self.script.popleft()
        last = _last_user_text(list(body.get("messages") or []))
        for rule in self.rules:
            if rule.times is not None and rule.times <= 0:
                continue
            if re.search(rule.pattern, last, flags=re.IGNORECASE):
                if rule.times is not None:
                    rule.times -= 1
                return rule.reply
        tools: list[dict[str, Any]] = list(body.get("tools") or [])
        choice = body.get("tool_choice") or {}
        if tools and isinstance(choice, dict) and choice.get("type") in ("tool", "any"):
            name = choice.get("name") if choice.get("type") == "tool" else tools[0].get("name")
            tool = next((t for t in tools if t.get("name") == name), tools[0])
            return ToolReply(str(tool.get("name")), tool_input_for(tool, body))
        system = body.get("system")
        system_text = system if isinstance(system, str) else _block_text(system)
        return default_reply(list(body.get("messages") or []), system_text)

    def _usage(self, body: dict[str, Any]) -> dict[str, int]:
        units = _prompt_units(body)
        total = sum(_tokens(u) for u, _ in units) + 3
        prefix_end = _cache_prefix(body)
        created = read = 0
        if prefix_end is not None:
            tokens = [_tokens(u) for u, _ in units[:prefix_end]]
            if sum(tokens) >= self.settings.cache_min_tokens and sum(tokens) > 0:
                # Like the API: the longest cached prefix ending on a block boundary is read,
                # the rest up to the breakpoint is written (and every marked boundary kept).
                now = time.monotonic()
                running = hashlib.sha256(str(body.get("model")).encode())
                digests: list[str] = []
                for unit, _ in units[:prefix_end]:
                    running.update(b"\x00" + unit.encode())
                    digests.append(running.hexdigest())
                hit = 0
                for i in range(prefix_end, 0, -1):
                    expiry = self._cache.get(digests[i - 1])
                    if expiry is not None and expiry > now:
                        hit = i
                        break
                read = sum(tokens[:hit])
                created = sum(tokens[hit:])
                for i, (_, marked) in enumerate(units[:prefix_end], start=1):
                    if marked or i == prefix_end or i == hit:
                        self._cache[digests[i - 1]] = now + _CACHE_TTL_S
                        self._cache.move_to_end(digests[i - 1])
                while len(self._cache) > _CACHE_ENTRIES:
                    self._cache.popitem(last=False)
        return {
            "input_tokens": max(total - created - read, 1),
            "cache_creation_input_tokens": created,
            "cache_read_input_tokens": read,
        }

    # -- HTTP

    def _authorized(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else ""
        key = key or request.headers.get("x-api-key", "").strip()
        if not key:
            return False
        return self.settings.api_key is None or key == self.settings.api_key

    async def _messages(self, request: Request) -> Response:
        received = time.monotonic()
        request_id = f"req_{uuid.uuid4().hex[:24]}"
        headers = {"request-id": request_id}
        try:
            body = await request.json()
        except ValueError:
            body = None
        record = RecordedRequest(
            dict(request.headers), body if isinstance(body, dict) else {}, received
        )
        self.requests.append(record)

        def error(
            status: int, kind: str, message: str, extra: dict[str, str] | None = None
        ) -> Response:
            record.status = status
            return JSONResponse(
                _error_body(kind, message, request_id),
                status_code=status,
                headers={**headers, **(extra or {})},
            )

        if not self._authorized(request):
            return error(401, "authentication_error", "invalid x-api-key")
        problem = _validate(body)
        if problem:
            return error(400, "invalid_request_error", problem)
        assert isinstance(body, dict)
        fault = self.faults.popleft() if self.faults else None
        if fault is not None and fault.kind in _STATUS:
            status, kind, message = _STATUS[fault.kind]
            extra = {"retry-after": fault.retry_after} if fault.kind == "rate_limit" else None
            log_event(_log, "fake_anthropic.fault", kind=fault.kind, request_id=request_id)
            return error(status, kind, message, extra)

        reply = self._choose(body)
        record.reply = reply
        usage = self._usage(body)
        message_id = f"msg_01{uuid.uuid4().hex[:22]}"
        if body.get("stream"):
            return StreamingResponse(
                self._stream(request, record, body, reply, usage, message_id, fault),
                media_type="text/event-stream",
                headers={**headers, "cache-control": "no-cache"},
            )
        if fault is not None:  # mid-stream faults, on a request that is not streamed
            if fault.kind == "drop" and abort_connection(request.scope):
                return Response(status_code=500)  # never delivered: the socket is gone
            status, kind, message = _STATUS["overloaded"]
            return error(status, kind, message)
        plan = _plan(reply, body)
        await self._sleep_until(received + self.settings.ttft_ms / 1000)
        delay = len(plan.pieces) / max(self.settings.tokens_per_s, 1e-9)
        await asyncio.sleep(max(0.0, delay - 1 / max(self.settings.tokens_per_s, 1e-9)))
        record.tokens_sent = len(plan.pieces)
        record.completed = True
        usage = {**usage, "output_tokens": max(len(plan.pieces), 1)}
        record.usage = usage
        return JSONResponse(
            {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": body.get("model"),
                "content": [plan.final_block],
                "stop_reason": plan.stop_reason,
                "stop_sequence": plan.stop_sequence,
                "usage": usage,
            },
            headers=headers,
        )

    @staticmethod
    async def _sleep_until(when: float) -> None:
        wait = when - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _stream(
        self,
        request: Request,
        record: RecordedRequest,
        body: dict[str, Any],
        reply: str | ToolReply,
        usage: dict[str, int],
        message_id: str,
        fault: AnthropicFault | None,
    ) -> AsyncIterator[bytes]:
        plan = _plan(reply, body)
        try:
            yield _sse(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": message_id,
                        "type": "message",
                        "role": "assistant",
                        "model": body.get("model"),
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {**usage, "output_tokens": 1},
                    },
                },
            )
            yield _sse(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": plan.start_block},
            )
            yield _sse("ping", {"type": "ping"})
            first_at = record.received_at + self.settings.ttft_ms / 1000
            gap = 1 / max(self.settings.tokens_per_s, 1e-9)
            for i, piece in enumerate(plan.pieces):
                if fault is not None and i == fault.after_tokens:
                    if fault.kind == "stream_error":
                        yield _sse(
                            "error",
                            {
                                "type": "error",
                                "error": {"type": "overloaded_error", "message": "Overloaded"},
                            },
                        )
                        return
                    if fault.kind == "drop":
                        log_event(_log, "fake_anthropic.dropped", tokens=i)
                        if not abort_connection(request.scope):
                            raise ConnectionAbortedError("injected drop")
                        return
                # The first token at ttft after the request, the next ones every 1/tokens_per_s
                # after the first actually left (a stalled loop delays, never bunches, them).
                await self._sleep_until(
                    first_at if record.first_token_at is None else record.first_token_at + i * gap
                )
                if i == 0:
                    record.first_token_at = time.monotonic()
                yield _sse(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": plan.delta(piece)},
                )
                record.tokens_sent = i + 1
            yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
            final_usage = {**usage, "output_tokens": max(len(plan.pieces), 1)}
            record.usage = final_usage
            yield _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": plan.stop_reason, "stop_sequence": plan.stop_sequence},
                    "usage": final_usage,
                },
            )
            yield _sse("message_stop", {"type": "message_stop"})
            record.completed = True
        finally:
            injected = fault is not None and fault.kind in ("stream_error", "drop")
            if not record.completed and not injected:
                record.client_disconnected = True


@dataclass(slots=True)
class _Plan:
    pieces: list[str]
    start_block: dict[str, Any]
    final_block: dict[str, Any]
    stop_reason: str
    stop_sequence: str | None
    tool: bool

    def delta(self, piece: str) -> dict[str, Any]:
        if self.tool:
            return {"type": "input_json_delta", "partial_json": piece}
        return {"type": "text_delta", "text": piece}


def _plan(reply: str | ToolReply, body: dict[str, Any]) -> _Plan:
    max_tokens = int(body.get("max_tokens") or 1)
    if isinstance(reply, ToolReply):
        tool_id = f"toolu_01{uuid.uuid4().hex[:22]}"
        raw = json.dumps(reply.input)
        pieces = [raw[i : i + 12] for i in range(0, len(raw), 12)]
        stop = "tool_use"
        if len(pieces) > max_tokens:
            pieces, stop = pieces[:max_tokens], "max_tokens"
        return _Plan(
            pieces,
            {"type": "tool_use", "id": tool_id, "name": reply.name, "input": {}},
            {"type": "tool_use", "id": tool_id, "name": reply.name, "input": reply.input},
            stop,
            None,
            tool=True,
        )
    text = reply
    stop_reason, stop_sequence = "end_turn", None
    for seq in body.get("stop_sequences") or []:
        at = text.find(seq)
        if seq and at >= 0:
            text, stop_reason, stop_sequence = text[:at], "stop_sequence", seq
    pieces = split_tokens(text)
    if len(pieces) > max_tokens:
        pieces, stop_reason, stop_sequence = pieces[:max_tokens], "max_tokens", None
    return _Plan(
        pieces,
        {"type": "text", "text": ""},
        {"type": "text", "text": "".join(pieces)},
        stop_reason,
        stop_sequence,
        tool=False,
    )


def _validate(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "The request body is not valid JSON."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
    return None
