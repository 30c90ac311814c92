"""Field validation shared by the routes: E.164, agent fields, webhook URLs, pagination.

Everything here is a pure function that returns the clean value or raises
:class:`~nixflex_engine.api.errors.ApiError` naming the offending field. Agents are validated
as a whole before anything is written, so a bad value fails the update without a partial
write.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from nixflex_engine.api.errors import ApiError
from nixflex_engine.calls.factories import CHAIN_FACTORY_PATTERN, factory_allowed, is_factory_path

__all__ = [
    "AGENT_FIELDS",
    "E164",
    "VOICEMAIL_ACTIONS",
    "agent_defaults",
    "is_e164",
    "parse_limit_offset",
    "parse_timestamp",
    "validate_agent_fields",
    "validate_webhook_url",
]

E164 = re.compile(r"\+[1-9][0-9]{1,14}")
VOICEMAIL_ACTIONS = ("hangup", "leave_message", "ignore")
SYSTEM_PROMPT_MAX = 16_000
DEFAULT_LIMIT = 25
MAX_LIMIT = 100


def is_e164(value: object) -> bool:
    return isinstance(value, str) and E164.fullmatch(value) is not None


# --------------------------------------------------------------------------------------------
# primitive checks


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def check_string(
    field: str, value: object, *, max_length: int, nullable: bool = False, min_length: int = 0
) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise ApiError.invalid(
            field, f"'{field}' must be a string, not {_type_name(value)}.", expected="string"
        )
    if len(value) > max_length:
        raise ApiError.invalid(
            field,
            f"'{field}' is longer than {max_length} characters.",
            max_length=max_length,
        )
    if len(value.strip()) < min_length:
        raise ApiError.invalid(field, f"'{field}' must not be empty.", min_length=min_length)
    return value


def check_int(field: str, value: object, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError.invalid(
            field, f"'{field}' must be an integer, not {_type_name(value)}.", expected="integer"
        )
    if not minimum <= value <= maximum:
        raise ApiError.invalid(
            field,
            f"'{field}' must be between {minimum} and {maximum}.",
            minimum=minimum,
            maximum=maximum,
        )
    return value


def check_bool(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ApiError.invalid(
            field, f"'{field}' must be true or false, not {_type_name(value)}.", expected="boolean"
        )
    return value


def check_enum(field: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ApiError.invalid(
            field, f"'{field}' must be one of: {', '.join(allowed)}.", allowed=list(allowed)
        )
    return value


def check_string_map(
    field: str, value: object, *, max_items: int, max_key: int, max_value: int
) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ApiError.invalid(
            field, f"'{field}' must be an object, not {_type_name(value)}.", expected="object"
        )
    if len(value) > max_items:
        raise ApiError.invalid(
            field, f"'{field}' has more than {max_items} entries.", max_items=max_items
        )
    for key, item in value.items():
        if not key or len(key) > max_key:
            raise ApiError.invalid(
                field, f"'{field}' keys must be 1 to {max_key} characters.", key=key[:100]
            )
        if not isinstance(item, str):
            raise ApiError.invalid(
                field,
                f"'{field}.{key[:100]}' must be a string, not {_type_name(item)}.",
                key=key[:100],
                expected="string",
            )
        if len(item) > max_value:
            raise ApiError.invalid(
                field,
                f"'{field}.{key[:100]}' is longer than {max_value} characters.",
                key=key[:100],
                max_length=max_value,
            )
    return dict(value)


def reject_unknown(body: Mapping[str, Any], allowed: frozenset[str] | set[str]) -> None:
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        shown = ", ".join(f"'{k[:100]}'" for k in unknown[:20])
        raise ApiError(
            400,
            "invalid_request",
            f"Unknown field(s): {shown}.",
            {"field": unknown[0][:100], "unknown_fields": [k[:100] for k in unknown[:20]]},
        )


# --------------------------------------------------------------------------------------------
# webhook URLs (SSRF guard)


def validate_webhook_url(field: str, value: object, *, allow_private: bool) -> str | None:
    """An http(s) URL; literal private/loopback/link-local hosts are refused unless allowed.

    Host names are resolved again at delivery time (where the final SSRF check belongs);
    here we refuse what is refusable without DNS.
    """
    url = check_string(field, value, max_length=2048, nullable=True)
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port
    except ValueError as exc:
        raise ApiError.invalid(field, f"'{field}' is not a valid URL.") from exc
    if parts.scheme not in ("http", "https") or not host:
        raise ApiError.invalid(field, f"'{field}' must be an http:// or https:// URL.")
    if any(ch.isspace() for ch in url):
        raise ApiError.invalid(field, f"'{field}' must not contain spaces.")
    if not allow_private and _is_private_host(host):
        raise ApiError(
            400,
            "invalid_request",
            f"'{field}' points to a private or loopback address, which this server refuses.",
            {"field": field, "reason": "private_address"},
        )
    return url


def _is_private_host(host: str) -> bool:
    lowered = host.lower().rstrip(".")
    if lowered == "localhost" or lowered.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(lowered)
    except ValueError:
        return False
    return not address.is_global


# --------------------------------------------------------------------------------------------
# agents


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) | {"UTC"}


_LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}")


def _language(field: str, value: object) -> str:
    text = check_string(field, value, max_length=35)
    assert text is not None
    if not _LANGUAGE.fullmatch(text):
        raise ApiError.invalid(field, f"'{field}' must be a language tag such as 'en' or 'en-GB'.")
    return text


def _timezone(field: str, value: object) -> str:
    text = check_string(field, value, max_length=64)
    assert text is not None
    if text not in _time_zones():
        raise ApiError.invalid(
            field, f"'{field}' must be an IANA time zone such as 'Europe/London'."
        )
    return text


def _system_prompt(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise ApiError.invalid(
            field, f"'{field}' must be a string, not {_type_name(value)}.", expected="string"
        )
    if len(value) > SYSTEM_PROMPT_MAX:
        raise ApiError(
            400,
            "prompt_too_long",
            f"'{field}' is longer than {SYSTEM_PROMPT_MAX} characters.",
            {"field": field, "max_length": SYSTEM_PROMPT_MAX, "length": len(value)},
        )
    return value


def _extraction_schema(field: str, value: object) -> dict[str, str]:
    return check_string_map(field, value, max_items=50, max_key=64, max_value=500)


def _chain_factory(field: str, value: object) -> str | None:
    text = check_string(field, value, max_length=200, nullable=True)
    if text is None or text == "":
        return None
    if not is_factory_path(text):
        raise ApiError.invalid(
            field, f"'{field}' must be an import path 'module:attribute', e.g. myapp.chains:build."
        )
    return text


@dataclass(slots=True, frozen=True)
class AgentField:
    """One agent field: its validator, its default, and its OpenAPI schema."""

    name: str
    check: Callable[[str, object], object]
    default: object
    schema: dict[str, Any]
    description: str


def _s(max_length: int, *, nullable: bool = False, min_length: int = 0) -> Callable[..., object]:
    return lambda f, v: check_string(
        f, v, max_length=max_length, nullable=nullable, min_length=min_length
    )


def _i(minimum: int, maximum: int) -> Callable[..., object]:
    return lambda f, v: check_int(f, v, minimum=minimum, maximum=maximum)


def _str_schema(max_length: int, *, nullable: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": ["string", "null"] if nullable else "string"}
    schema["maxLength"] = max_length
    return schema


def _build_fields(default_llm_model: str) -> tuple[AgentField, ...]:
    return (
        AgentField(
            "name",
            _s(100, min_length=1),
            None,
            {"type": "string", "minLength": 1, "maxLength": 100},
            "Display name (required on create).",
        ),
        AgentField(
            "system_prompt",
            _system_prompt,
            "",
            {"type": "string", "maxLength": SYSTEM_PROMPT_MAX},
            "The agent's instructions; {placeholders} are filled from dynamic_vars.",
        ),
        AgentField(
            "welcome_message",
            _s(2000),
            "",
            _str_schema(2000),
            "The opener the agent says when a person answers.",
        ),
        AgentField(
            "voice_id",
            _s(100, min_length=1),
            "aura-2-thalia-en",
            {"type": "string", "minLength": 1, "maxLength": 100},
            "TTS voice, e.g. aura-2-thalia-en.",
        ),
        AgentField(
            "language",
            _language,
            "en",
            {"type": "string", "maxLength": 35},
            "Language tag (en, en-GB, es ...).",
        ),
        AgentField(
            "llm_model",
            _s(100, min_length=1),
            default_llm_model,
            {"type": "string", "minLength": 1, "maxLength": 100},
            "Claude model id.",
        ),
        AgentField(
            "max_tokens",
            _i(1, 8192),
            300,
            {"type": "integer", "minimum": 1, "maximum": 8192},
            "Maximum tokens per agent reply.",
        ),
        AgentField(
            "interruption_sensitivity",
            _i(0, 100),
            50,
            {"type": "integer", "minimum": 0, "maximum": 100},
            "Barge-in sensitivity, 0 (never interrupted) to 100 (most sensitive).",
        ),
        AgentField(
            "silence_hangup_seconds",
            _i(5, 120),
            30,
            {"type": "integer", "minimum": 5, "maximum": 120},
            "Caller silence, in seconds, before the agent says goodbye and hangs up.",
        ),
        AgentField(
            "max_call_duration_seconds",
            _i(60, 3600),
            300,
            {"type": "integer", "minimum": 60, "maximum": 3600},
            "Longest call, in seconds.",
        ),
        AgentField(
            "voicemail_action",
            lambda f, v: check_enum(f, v, VOICEMAIL_ACTIONS),
            "hangup",
            {"type": "string", "enum": list(VOICEMAIL_ACTIONS)},
            "What to do on voicemail.",
        ),
        AgentField(
            "voicemail_message",
            _s(2000, nullable=True),
            None,
            _str_schema(2000, nullable=True),
            "Message left when voicemail_action is leave_message.",
        ),
        AgentField(
            "amd_enabled",
            check_bool,
            True,
            {"type": "boolean"},
            "Use the carrier's answering-machine detection.",
        ),
        AgentField(
            "webhook_url",
            # validate_agent_fields applies the operator's SSRF setting instead
            lambda f, v: validate_webhook_url(f, v, allow_private=False),
            None,
            {"type": ["string", "null"], "maxLength": 2048, "format": "uri"},
            "Where call.ended / call.failed webhooks are sent (http/https).",
        ),
        AgentField(
            "extraction_schema",
            _extraction_schema,
            {},
            {
                "type": "object",
                "maxProperties": 50,
                "additionalProperties": {"type": "string", "maxLength": 500},
            },
            "Fields to extract after the call: {field: description}.",
        ),
        AgentField(
            "record_call", check_bool, True, {"type": "boolean"}, "Record both sides of the call."
        ),
        AgentField(
            "history_calls",
            _i(0, 20),
            3,
            {"type": "integer", "minimum": 0, "maximum": 20},
            "Past call summaries with the same number injected into the prompt (0 = off).",
        ),
        AgentField(
            "is_active", check_bool, True, {"type": "boolean"}, "Inactive agents refuse calls."
        ),
        AgentField(
            "timezone",
            _timezone,
            "UTC",
            {"type": "string", "maxLength": 64},
            "IANA time zone of the agent.",
        ),
        AgentField(
            "chain_factory",
            _chain_factory,
            None,
            {"type": ["string", "null"], "maxLength": 200, "pattern": CHAIN_FACTORY_PATTERN},
            "Import path (module:attribute) of a function building this agent's processor "
            "chain for each call; it must be allowed by the operator's allowed_chain_factories "
            "setting. null: the standard chain.",
        ),
    )


AGENT_FIELDS: tuple[AgentField, ...] = _build_fields("claude-haiku-4-5")
AGENT_FIELD_NAMES = frozenset(f.name for f in AGENT_FIELDS)


def agent_defaults(default_llm_model: str) -> dict[str, Any]:
    defaults = {f.name: f.default for f in AGENT_FIELDS}
    defaults["llm_model"] = default_llm_model
    return defaults


def validate_agent_fields(
    body: Mapping[str, Any],
    *,
    creating: bool,
    allow_private_webhooks: bool,
    allowed_chain_factories: Iterable[str] = (),
) -> dict[str, Any]:
    """The validated subset of agent fields in ``body`` (all-or-nothing).

    A ``chain_factory`` not in ``allowed_chain_factories`` (the operator's setting) is refused
    with ``400 chain_factory_not_allowed``.
    """
    reject_unknown(body, AGENT_FIELD_NAMES)
    if creating and (body.get("name") is None):
        raise ApiError.missing("name")
    clean: dict[str, Any] = {}
    for spec in AGENT_FIELDS:
        if spec.name not in body:
            continue
        value = body[spec.name]
        if spec.name == "webhook_url":
            clean[spec.name] = validate_webhook_url(
                spec.name, value, allow_private=allow_private_webhooks
            )
        else:
            clean[spec.name] = spec.check(spec.name, value)
    factory = clean.get("chain_factory")
    if factory is not None and not factory_allowed(factory, allowed_chain_factories):
        raise ApiError(
            400,
            "chain_factory_not_allowed",
            "This chain factory is not allowed on this engine: the operator lists the allowed "
            "ones in the allowed_chain_factories setting.",
            {"field": "chain_factory", "chain_factory": factory[:200]},
        )
    return clean


# --------------------------------------------------------------------------------------------
# query parameters


def parse_limit_offset(query: Mapping[str, str]) -> tuple[int, int]:
    limit = _query_int(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _query_int(query, "offset", 0, 0, 1_000_000_000)
    return limit, offset


def _query_int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"[0-9]{1,10}", raw):
        raise ApiError.invalid(name, f"'{name}' must be an integer between {low} and {high}.")
    return check_int(name, int(raw), minimum=low, maximum=high)


def parse_timestamp(name: str, raw: str) -> datetime:
    """An ISO-8601 timestamp; without a zone it is taken as UTC. A ``+hh:mm`` offset whose
    ``+`` arrived unencoded in a query string (decoded as a space) is accepted too."""
    text = raw.strip().replace("Z", "+00:00").replace("z", "+00:00")
    if " " in text and len(text) > 6 and text[-6] == " " and text[-3] == ":":
        text = text[:-6] + "+" + text[-5:]
    try:
        value = datetime.fromisoformat(text)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ApiError.invalid(
            name, f"'{name}' must be an ISO-8601 timestamp, e.g. 2026-01-31T12:00:00Z."
        ) from exc
