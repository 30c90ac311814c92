"""The OpenAPI 3.1 document of the public API, served at ``/openapi.json``.

Written as data next to the code it describes (agent field schemas come from
``api.fields.AGENT_FIELDS``), and kept true by tests: every route is documented, every
documented operation exists, and responses are validated against these schemas by the
schemathesis fuzz test.
"""

from __future__ import annotations

from typing import Any

from nixflex_engine.api.fields import AGENT_FIELDS, VOICEMAIL_ACTIONS
from nixflex_engine.store.repositories import ACTIVE_CALL_STATUSES, FINAL_CALL_STATUSES

__all__ = ["openapi_document"]

E164_PATTERN = r"^\+[1-9][0-9]{1,14}$"
_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error_responses(*statuses: int) -> dict[str, Any]:
    names = {
        400: "Invalid request",
        401: "Missing or invalid API key",
        403: "Not permitted",
        404: "Not found",
        409: "Conflict",
        413: "Body larger than 1 MB",
        429: "Rate or concurrency limit; see Retry-After",
        500: "Server error",
        502: "Carrier error",
        503: "Not ready",
    }
    return {
        str(s): {
            "description": names[s],
            "content": {_JSON: {"schema": _ref("Error")}},
        }
        for s in statuses
    }


_COMMON = (400, 401, 413, 429, 500)


def _op(
    summary: str,
    response: dict[str, Any] | None,
    *,
    status: int = 200,
    body: dict[str, Any] | None = None,
    errors: tuple[int, ...] = (),
    params: list[dict[str, Any]] | None = None,
    idempotent: bool = False,
    secured: bool = True,
    tag: str,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "operationId": summary.lower().replace(" ", "_").replace("-", "_").replace("/", "_"),
        "responses": {
            str(status): {
                "description": "OK",
                **({"content": {_JSON: {"schema": response}}} if response else {}),
            },
            **_error_responses(*sorted(set(_COMMON + errors))),
        },
    }
    parameters = list(params or [])
    if idempotent:
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "Same key and body within 24 h returns the first response.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        )
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": True, "content": {_JSON: {"schema": body}}}
    if not secured:
        op["security"] = []
    return op


def _path_param(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


_PAGE = [
    _query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 25}),
    _query("offset", {"type": "integer", "minimum": 0, "default": 0}),
]


def _schemas() -> dict[str, Any]:
    e164 = {"type": "string", "pattern": E164_PATTERN}
    nullable_str = {"type": ["string", "null"]}
    agent_props = {f.name: {**f.schema, "description": f.description} for f in AGENT_FIELDS}
    statuses = [*ACTIVE_CALL_STATUSES, *FINAL_CALL_STATUSES]
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["type", "code", "message", "doc_url", "details"],
                    "properties": {
                        "type": {
                            "type": "string",
                            "enum": [
                                "invalid_request",
                                "authentication_error",
                                "permission_error",
                                "not_found",
                                "conflict",
                                "rate_limit_error",
                                "provider_error",
                                "server_error",
                            ],
                        },
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "doc_url": {"type": "string"},
                        "details": {"type": "object"},
                    },
                }
            },
        },
        "Key": {
            "type": "object",
            "required": ["key_id", "key_secret"],
            "properties": {"key_id": {"type": "string"}, "key_secret": {"type": "string"}},
        },
        "KeyCreate": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 200},
                "max_concurrent_calls": {"type": "integer", "minimum": 1, "maximum": 10000},
            },
        },
        "AgentInput": {
            "type": "object",
            "additionalProperties": False,
            "properties": agent_props,
        },
        "AgentCreate": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": agent_props,
        },
        "Agent": {
            "type": "object",
            "required": ["agent_id", "name", "phone_numbers", "created_at", "updated_at"],
            "properties": {
                "agent_id": {"type": "string", "pattern": "^agent_[0-9a-f]{16}$"},
                **agent_props,
                "phone_numbers": {"type": "array", "items": e164},
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"},
            },
        },
        "AgentList": _list_schema("agents", "Agent"),
        "PhoneNumberImport": {
            "type": "object",
            "additionalProperties": False,
            "required": ["phone_number"],
            "properties": {
                "phone_number": e164,
                "agent_id": nullable_str,
                "twilio_account_sid": {"type": "string"},
                "twilio_sid": {"type": "string", "description": "Alias of twilio_account_sid."},
                "twilio_auth_token": {"type": "string"},
                "twilio_token": {"type": "string", "description": "Alias of twilio_auth_token."},
            },
        },
        "PhoneNumberUpdate": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "agent_id": nullable_str,
                "twilio_account_sid": nullable_str,
                "twilio_sid": nullable_str,
                "twilio_auth_token": nullable_str,
                "twilio_token": nullable_str,
            },
        },
        "PhoneNumber": {
            "type": "object",
            "required": ["phone_number", "agent_id", "carrier", "has_twilio_credentials"],
            "properties": {
                "phone_number": e164,
                "agent_id": nullable_str,
                "carrier": {"type": "string"},
                "twilio_number_sid": nullable_str,
                "has_twilio_credentials": {"type": "boolean"},
                "webhook_url": nullable_str,
                "webhook2_url": nullable_str,
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"},
            },
        },
        "PhoneNumberList": _list_schema("phone_numbers", "PhoneNumber"),
        "Deleted": {
            "type": "object",
            "required": ["deleted"],
            "properties": {"deleted": {"type": "boolean", "const": True}},
        },
        "WebhookSlotInput": {
            "type": "object",
            "additionalProperties": False,
            "required": ["url"],
            "properties": {"url": {"type": "string", "maxLength": 2048}},
        },
        "WebhookSlot": {
            "type": "object",
            "required": ["phone_number", "slot", "url"],
            "properties": {
                "phone_number": e164,
                "slot": {"type": "integer", "enum": [1, 2]},
                "url": nullable_str,
                "deleted": {"type": "boolean"},
            },
        },
        "OutboundCallRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["agent_id", "to_number"],
            "properties": {
                "agent_id": {"type": "string", "description": "Agent that will handle the call"},
                "to_number": {**e164, "description": "Recipient in E.164"},
                "from_number": {**e164, "description": "Your imported Twilio number"},
                "dynamic_vars": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "Values for {placeholders} in the prompt",
                },
                "variables": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "Alias of dynamic_vars (not both)",
                },
                "voicemail_message": {"type": "string", "maxLength": 2000},
                "voicemail_action": {"type": "string", "enum": list(VOICEMAIL_ACTIONS)},
                "metadata": {"type": "object", "description": "Echoed in record and webhook"},
                "campaign_id": {"type": "string"},
                "prompt": {"type": "string", "maxLength": 16000},
            },
        },
        "OutboundCall": {
            "type": "object",
            "required": ["call_id", "status", "agent_id", "to_number", "from_number"],
            "properties": {
                "call_id": {"type": "string"},
                "status": {"type": "string", "const": "queued"},
                "agent_id": {"type": "string"},
                "to_number": e164,
                "from_number": e164,
                "campaign_id": {"type": "string"},
                "metadata": {"type": "object"},
            },
        },
        "Call": {
            "type": "object",
            "required": [
                "call_id",
                "agent_id",
                "direction",
                "status",
                "from_number",
                "to_number",
                "created_at",
                "transcript",
                "extracted_data",
            ],
            "properties": {
                "call_id": {"type": "string"},
                "agent_id": {"type": "string"},
                "campaign_id": nullable_str,
                "direction": {"type": "string", "enum": ["outbound", "inbound"]},
                "status": {"type": "string", "enum": statuses},
                "from_number": e164,
                "to_number": e164,
                "metadata": {"type": ["object", "null"]},
                "dynamic_vars": {"type": "object"},
                "prompt": nullable_str,
                "voicemail_action": {"type": "string", "enum": list(VOICEMAIL_ACTIONS)},
                "voicemail_message": nullable_str,
                "created_at": {"type": "string", "format": "date-time"},
                "answered_at": {"type": ["string", "null"], "format": "date-time"},
                "ended_at": {"type": ["string", "null"], "format": "date-time"},
                "duration_seconds": {"type": ["number", "null"]},
                "ended_reason": nullable_str,
                "voicemail_detected": {"type": ["boolean", "null"]},
                "voicemail_detection_method": nullable_str,
                "amd_result": nullable_str,
                "transcript": {"type": "array", "items": {"type": "object"}},
                "recording_url": nullable_str,
                "recording_duration_seconds": {"type": ["number", "null"]},
                "call_summary": nullable_str,
                "caller_sentiment": nullable_str,
                "call_successful": {"type": ["boolean", "null"]},
                "extracted_data": {"type": "object"},
                "latency": {"type": ["object", "null"]},
                "twilio_error": {"type": ["object", "null"]},
            },
        },
        "CallList": _list_schema("calls", "Call"),
        **_campaign_schemas(e164, nullable_str),
        "WebhookAttempt": {
            "type": "object",
            "required": ["attempt", "started_at", "duration_ms", "outcome"],
            "properties": {
                "attempt": {"type": "integer", "minimum": 1},
                "started_at": {"type": "string", "format": "date-time"},
                "duration_ms": {"type": "number"},
                "status_code": {"type": ["integer", "null"]},
                "error": nullable_str,
                "outcome": {
                    "type": "string",
                    "enum": ["delivered", "retry", "failed", "gone", "refused"],
                },
                "next_attempt_at": {"type": ["string", "null"], "format": "date-time"},
            },
        },
        "WebhookDelivery": {
            "type": "object",
            "required": ["delivery_id", "event_id", "event", "url", "status", "attempts"],
            "properties": {
                "delivery_id": {"type": "string"},
                "event_id": {"type": "string"},
                "call_id": {"type": "string"},
                "event": {
                    "type": "string",
                    "enum": ["call.ended", "call.failed", "campaign.completed"],
                },
                "target": {"type": "string", "enum": ["agent", "number", "number2"]},
                "url": {"type": "string"},
                "status": {
                    "type": "string",
                    "enum": ["pending", "delivered", "failed", "gone", "refused"],
                },
                "attempts": {"type": "integer", "minimum": 0},
                "created_at": {"type": "string", "format": "date-time"},
                "next_attempt_at": {"type": ["string", "null"], "format": "date-time"},
                "delivered_at": {"type": ["string", "null"], "format": "date-time"},
                "last_status_code": {"type": ["integer", "null"]},
                "last_error": nullable_str,
                "attempt_log": {"type": "array", "items": _ref("WebhookAttempt")},
            },
        },
        "WebhookDeliveryList": _list_schema("webhooks", "WebhookDelivery"),
        "Usage": {
            "type": "object",
            "required": ["calls", "minutes", "in_flight", "peak_concurrency"],
            "properties": {
                "calls": {"type": "integer"},
                "completed_calls": {"type": "integer"},
                "failed_calls": {"type": "integer"},
                "minutes": {"type": "number"},
                "in_flight": {"type": "integer"},
                "peak_concurrency": {"type": "integer"},
                "max_concurrent_calls": {"type": "integer"},
                "since": nullable_str,
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string"}, "database": {"type": "string"}},
        },
    }


def _campaign_schemas(e164: dict[str, Any], nullable_str: dict[str, Any]) -> dict[str, Any]:
    """Campaign bodies (api/campaigns.py)."""
    from nixflex_engine.api.campaigns import MAX_RECIPIENTS, RETRY_OUTCOMES
    from nixflex_engine.store.campaigns import CAMPAIGN_STATUSES, RECIPIENT_STATES

    date_time = {"type": ["string", "null"], "format": "date-time"}
    day = {
        "oneOf": [
            {"type": "string", "enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
            {"type": "integer", "minimum": 0, "maximum": 6, "description": "0 = Sunday"},
        ]
    }
    string_map = {"type": "object", "additionalProperties": {"type": "string"}}
    retry = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": 10},
            "retry_delay_minutes": {"type": "number", "minimum": 0, "maximum": 10080},
            "on": {"type": "array", "items": {"type": "string", "enum": list(RETRY_OUTCOMES)}},
        },
    }
    counts = {
        "type": "object",
        "required": list(RECIPIENT_STATES),
        "properties": {state: {"type": "integer", "minimum": 0} for state in RECIPIENT_STATES},
    }
    campaign_props: dict[str, Any] = {
        "campaign_id": {"type": "string", "pattern": "^camp_[0-9a-f]{16}$"},
        "name": {"type": "string"},
        "agent_id": {"type": "string"},
        "from_number": {"type": ["string", "null"]},
        "prompt": nullable_str,
        "status": {"type": "string", "enum": list(CAMPAIGN_STATUSES)},
        "schedule_type": {"type": "string", "enum": ["now", "schedule"]},
        "scheduled_at": date_time,
        "window_start_minutes": {"type": "integer"},
        "window_end_minutes": {"type": "integer"},
        "window_days": {"type": "array", "items": {"type": "string"}},
        "timezone": {"type": "string"},
        "in_window": {"type": "boolean"},
        "next_window_at": date_time,
        "max_concurrent": {"type": "integer"},
        "retry": retry,
        "metadata": {"type": ["object", "null"]},
        "recipients_total": {"type": "integer"},
        "counts": counts,
        "invalid": {"type": "array", "items": {"type": "object"}},
        "invalid_count": {"type": "integer"},
        "last_error": {"type": ["object", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "launched_at": date_time,
        "completed_at": date_time,
        "canceled_at": date_time,
        "duplicates_collapsed": {"type": "integer"},
    }
    campaign_required = ["campaign_id", "status", "agent_id", "counts", "recipients_total"]
    campaign = {"type": "object", "required": campaign_required, "properties": campaign_props}
    recipient_out = {
        "type": "object",
        "required": ["index", "phone_number", "state", "attempts", "call_ids", "calls"],
        "properties": {
            "index": {"type": "integer"},
            "phone_number": e164,
            "state": {"type": "string", "enum": list(RECIPIENT_STATES)},
            "attempts": {"type": "integer"},
            "next_attempt_at": date_time,
            "last_outcome": nullable_str,
            "last_call_id": nullable_str,
            "last_error": {"type": ["object", "null"]},
            "call_ids": {"type": "array", "items": {"type": "string"}},
            "calls": {"type": "array", "items": {"type": "object"}},
            "dynamic_vars": {"type": "object"},
            "metadata": {"type": ["object", "null"]},
            "prompt_override": nullable_str,
        },
    }
    return {
        "CampaignRecipient": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "phone_number": {**e164, "description": "Recipient in E.164"},
                "phone": {**e164, "description": "Alias of phone_number"},
                "dynamic_vars": string_map,
                "variables": {**string_map, "description": "Alias of dynamic_vars"},
                "metadata": {"type": "object"},
                "prompt_override": {"type": "string", "maxLength": 16000},
            },
        },
        "CampaignCreate": {
            "type": "object",
            "additionalProperties": False,
            "required": ["agent_id", "recipients"],
            "properties": {
                "agent_id": {"type": "string"},
                "from_number": e164,
                "name": {"type": "string", "maxLength": 200},
                "prompt": {"type": "string", "maxLength": 16000},
                "recipients": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_RECIPIENTS,
                    "items": _ref("CampaignRecipient"),
                },
                "schedule_type": {"type": "string", "enum": ["now", "schedule"]},
                "scheduled_at": {
                    "type": "string",
                    "format": "date-time",
                    "description": "With schedule_type 'schedule'; without it the campaign "
                    "is a draft until launched.",
                },
                "window_start_minutes": {"type": "integer", "minimum": 0, "maximum": 1439},
                "window_end_minutes": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 1440,
                    "description": "Earlier than the start: an overnight window.",
                },
                "window_days": {"type": "array", "minItems": 1, "items": day},
                "timezone": {"type": "string", "description": "IANA time zone"},
                "max_concurrent": {"type": "integer", "minimum": 1, "maximum": 1000},
                "retry": retry,
                "skip_invalid": {"type": "boolean"},
                "metadata": {"type": "object"},
            },
        },
        "Campaign": campaign,
        "CampaignDetail": {
            "type": "object",
            "required": [*campaign_required, "recipients", "recipients_count"],
            "properties": {
                **campaign_props,
                "recipients": {"type": "array", "items": recipient_out},
                "recipients_count": {"type": "integer"},
                "limit": {"type": "integer"},
                "offset": {"type": "integer"},
            },
        },
        "CampaignList": _list_schema("campaigns", "Campaign"),
    }


def _list_schema(key: str, item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [key, "count", "limit", "offset"],
        "properties": {
            key: {"type": "array", "items": _ref(item)},
            "count": {"type": "integer", "minimum": 0},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
        },
    }


def _carrier_callback(summary: str, operation_id: str) -> dict[str, Any]:
    """A carrier-facing callback: Twilio's form post, authenticated by X-Twilio-Signature."""
    return {
        "post": {
            "summary": summary,
            "description": "Called by Twilio, not by API clients. Authenticated by "
            "`X-Twilio-Signature` over the public URL with the number's auth token; anything "
            "else is refused with 403 and changes nothing.",
            "tags": ["Carrier"],
            "operationId": operation_id,
            "security": [],
            "parameters": [
                _query("ref", {"type": "string"}),
                {
                    "name": "X-Twilio-Signature",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string"},
                },
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {"type": "object", "additionalProperties": {"type": "string"}}
                    }
                },
            },
            "responses": {
                "204": {"description": "Applied (idempotent)"},
                **_error_responses(403),
            },
        }
    }


def _campaign_paths() -> dict[str, Any]:
    from nixflex_engine.store.campaigns import CAMPAIGN_STATUSES, RECIPIENT_STATES

    campaign_id = _path_param("campaign_id", {"type": "string"})
    tag = "Campaigns"
    return {
        "/v1/calls/batch": {
            "post": _op(
                "Create campaign",
                _ref("Campaign"),
                status=201,
                body=_ref("CampaignCreate"),
                errors=(403, 404, 409),
                idempotent=True,
                tag=tag,
            ),
            "get": _op(
                "List campaigns",
                _ref("CampaignList"),
                params=[
                    *_PAGE,
                    _query("status", {"type": "string", "enum": list(CAMPAIGN_STATUSES)}),
                ],
                tag=tag,
            ),
        },
        "/v1/calls/batch/{campaign_id}": {
            "parameters": [campaign_id],
            "get": _op(
                "Get campaign",
                _ref("CampaignDetail"),
                params=[
                    *_PAGE,
                    _query("state", {"type": "string", "enum": list(RECIPIENT_STATES)}),
                ],
                errors=(404,),
                tag=tag,
            ),
            "delete": _op("Cancel campaign", _ref("Campaign"), errors=(404, 409), tag=tag),
        },
        "/v1/calls/batch/{campaign_id}/launch": {
            "parameters": [campaign_id],
            "post": _op("Launch campaign", _ref("Campaign"), errors=(404, 409), tag=tag),
        },
        "/v1/calls/batch/{campaign_id}/pause": {
            "parameters": [campaign_id],
            "post": _op("Pause campaign", _ref("Campaign"), errors=(404, 409), tag=tag),
        },
    }


def openapi_document(server_url: str) -> dict[str, Any]:
    """The whole document; ``server_url`` is this node's public base URL."""
    agent_id = _path_param("agent_id", {"type": "string"})
    e164 = _path_param("e164", {"type": "string", "pattern": E164_PATTERN})
    call_id = _path_param("call_id", {"type": "string"})
    call_filters = [
        *_PAGE,
        _query("agent_id", {"type": "string"}),
        _query("campaign_id", {"type": "string"}),
        _query("status", {"type": "string", "enum": [*ACTIVE_CALL_STATUSES, *FINAL_CALL_STATUSES]}),
        _query("to_number", {"type": "string", "pattern": E164_PATTERN}),
        _query("since", {"type": "string", "format": "date-time"}),
        _query("until", {"type": "string", "format": "date-time"}),
    ]
    webhook_ops = {}
    for slot, base in ((1, "webhook"), (2, "webhook2")):
        tag = "Webhooks"
        webhook_ops[f"/v1/integrations/{base}/number/{{e164}}"] = {
            "parameters": [e164],
            "put": _op(
                f"Set webhook slot {slot}",
                _ref("WebhookSlot"),
                body=_ref("WebhookSlotInput"),
                errors=(404,),
                tag=tag,
            ),
            "get": _op(f"Get webhook slot {slot}", _ref("WebhookSlot"), errors=(404,), tag=tag),
            "delete": _op(
                f"Delete webhook slot {slot}", _ref("WebhookSlot"), errors=(404,), tag=tag
            ),
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Nixflex Engine API",
            "version": "1.0.0",
            "description": "Self-hosted Nixflex API: agents, phone numbers, outbound calls.",
        },
        "servers": [{"url": server_url}],
        "security": [{"bearerAuth": []}],
        "paths": {
            "/v1/keys": {
                "post": _op(
                    "Create key",
                    _ref("Key"),
                    status=201,
                    body=_ref("KeyCreate"),
                    errors=(403,),
                    secured=False,
                    tag="Keys",
                )
            },
            "/v1/keys/rotate": {"post": _op("Rotate key", _ref("Key"), tag="Keys")},
            "/v1/agents": {
                "post": _op(
                    "Create agent",
                    _ref("Agent"),
                    status=201,
                    body=_ref("AgentCreate"),
                    idempotent=True,
                    errors=(409,),
                    tag="Agents",
                ),
                "get": _op("List agents", _ref("AgentList"), params=_PAGE, tag="Agents"),
            },
            "/v1/agents/{agent_id}": {
                "parameters": [agent_id],
                "get": _op("Get agent", _ref("Agent"), errors=(404,), tag="Agents"),
                "put": _op(
                    "Update agent",
                    _ref("Agent"),
                    body=_ref("AgentInput"),
                    errors=(404,),
                    tag="Agents",
                ),
                "delete": _op("Delete agent", _ref("Deleted"), errors=(404,), tag="Agents"),
            },
            "/v1/phone-numbers": {
                "post": _op(
                    "Import phone number",
                    _ref("PhoneNumber"),
                    status=201,
                    body=_ref("PhoneNumberImport"),
                    errors=(403, 404, 409, 502),
                    idempotent=True,
                    tag="Phone numbers",
                ),
                "get": _op(
                    "List phone numbers",
                    _ref("PhoneNumberList"),
                    params=[*_PAGE, _query("agent_id", {"type": "string"})],
                    tag="Phone numbers",
                ),
            },
            "/v1/phone-numbers/{e164}": {
                "parameters": [e164],
                "patch": _op(
                    "Update phone number",
                    _ref("PhoneNumber"),
                    body=_ref("PhoneNumberUpdate"),
                    errors=(403, 404, 502),
                    tag="Phone numbers",
                ),
                "delete": _op(
                    "Delete phone number", _ref("Deleted"), errors=(404,), tag="Phone numbers"
                ),
            },
            **webhook_ops,
            "/v1/calls/outbound": {
                "post": _op(
                    "Create outbound call",
                    _ref("OutboundCall"),
                    status=201,
                    body=_ref("OutboundCallRequest"),
                    errors=(403, 404, 409, 502),
                    idempotent=True,
                    tag="Calls",
                )
            },
            "/v1/calls": {
                "get": _op("List calls", _ref("CallList"), params=call_filters, tag="Calls")
            },
            **_campaign_paths(),
            "/v1/calls/{call_id}": {
                "parameters": [call_id],
                "get": _op("Get call", _ref("Call"), errors=(404,), tag="Calls"),
                "delete": _op("Delete call", _ref("Deleted"), errors=(404, 409), tag="Calls"),
            },
            "/v1/calls/{call_id}/recording": {
                "parameters": [call_id],
                "get": {
                    "summary": "Get call recording",
                    "tags": ["Calls"],
                    "operationId": "get_call_recording",
                    "parameters": [
                        {
                            "name": "Range",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "example": "bytes=0-1023"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "WAV audio (two channels: caller left, agent right)",
                            "content": {"audio/wav": {"schema": {"type": "string"}}},
                        },
                        "206": {
                            "description": "The requested byte range (Content-Range)",
                            "content": {"audio/wav": {"schema": {"type": "string"}}},
                        },
                        "416": {
                            "description": "Range not satisfiable",
                            "content": {_JSON: {"schema": _ref("Error")}},
                        },
                        **_error_responses(401, 404, 429, 500),
                    },
                },
            },
            "/v1/calls/{call_id}/webhooks": {
                "parameters": [call_id],
                "get": {
                    **_op(
                        "List call webhooks",
                        _ref("WebhookDeliveryList"),
                        params=_PAGE,
                        errors=(404,),
                        tag="Calls",
                    ),
                    "description": (
                        "The call's webhook deliveries and their attempts. Finished deliveries "
                        "are kept for NIXFLEX_WEBHOOK_RETENTION_DAYS (default 30, 0 = forever) "
                        "after they became final; older ones are no longer listed."
                    ),
                },
            },
            "/v1/usage": {
                "get": _op(
                    "Get usage",
                    _ref("Usage"),
                    params=[_query("since", {"type": "string", "format": "date-time"})],
                    tag="Account",
                )
            },
            "/healthz": {
                "get": {
                    "summary": "Health",
                    "tags": ["Operations"],
                    "operationId": "healthz",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Ready",
                            "content": {_JSON: {"schema": _ref("Health")}},
                        },
                        **_error_responses(503),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "tags": ["Operations"],
                    "operationId": "metrics",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/v1/twilio/status": _carrier_callback(
                "Twilio status callback", "twilioStatusCallback"
            ),
            "/v1/twilio/amd": _carrier_callback("Twilio async AMD callback", "twilioAmdCallback"),
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "key_id:key_secret",
                }
            },
            "schemas": _schemas(),
        },
    }
