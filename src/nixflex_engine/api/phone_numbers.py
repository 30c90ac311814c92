"""Phone numbers: ``POST/GET /v1/phone-numbers``, ``PATCH/DELETE /v1/phone-numbers/{e164}``,
and the per-number webhook slots ``PUT/GET/DELETE /v1/integrations/webhook[2]/number/{e164}``.

Importing a number proves ownership: the given Twilio credentials must list it among the
account's incoming numbers (through the Twilio SDK, see ``api.twilio_numbers``). The auth
token is stored encrypted and no credential is ever returned.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.routing import Route

from nixflex_engine.api.agents import iso
from nixflex_engine.api.errors import ApiError
from nixflex_engine.api.fields import (
    check_string,
    is_e164,
    parse_limit_offset,
    reject_unknown,
    validate_webhook_url,
)
from nixflex_engine.api.routing import ApiCall, Reply, endpoint
from nixflex_engine.api.twilio_numbers import verify_twilio_number
from nixflex_engine.calls.dialer import TwilioCredentials
from nixflex_engine.store.repositories import DuplicateError, PhoneNumberRecord

__all__ = ["number_json", "routes"]

_ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
_SID_ALIASES = ("twilio_account_sid", "twilio_sid")
_TOKEN_ALIASES = ("twilio_auth_token", "twilio_token")
_IMPORT_FIELDS = frozenset({"phone_number", "agent_id", *_SID_ALIASES, *_TOKEN_ALIASES})
_PATCH_FIELDS = frozenset({"agent_id", *_SID_ALIASES, *_TOKEN_ALIASES})


def number_json(number: PhoneNumberRecord) -> dict[str, Any]:
    return {
        "phone_number": number.phone_number,
        "agent_id": number.agent_id,
        "carrier": number.carrier,
        "twilio_number_sid": number.twilio_number_sid,
        "has_twilio_credentials": bool(
            number.twilio_account_sid and number.twilio_auth_token_encrypted
        ),
        "webhook_url": number.webhook_url,
        "webhook2_url": number.webhook2_url,
        "created_at": iso(number.created_at),
        "updated_at": iso(number.updated_at),
    }


def _path_number(call: ApiCall) -> str:
    number = call.path_param("e164")
    if not is_e164(number):
        raise ApiError(
            400,
            "invalid_phone_format",
            "The phone number in the path must be E.164 (URL-encode the + as %2B).",
            {"field": "phone_number"},
        )
    return number


def _not_found(number: str) -> ApiError:
    return ApiError(
        404,
        "phone_number_not_found",
        "No phone number of yours with this number.",
        {"phone_number": number},
    )


def _alias(body: dict[str, Any], names: tuple[str, ...]) -> tuple[bool, Any]:
    given = [n for n in names if n in body]
    if len(given) > 1:
        raise ApiError.invalid(given[1], f"Send '{given[0]}' or its alias '{given[1]}', not both.")
    return (True, body[given[0]]) if given else (False, None)


def _credentials(sid: Any, token: Any) -> TwilioCredentials:
    if sid is None or (isinstance(sid, str) and not sid):
        raise ApiError.missing("twilio_account_sid")
    if token is None or (isinstance(token, str) and not token):
        raise ApiError.missing("twilio_auth_token")
    sid = check_string("twilio_account_sid", sid, max_length=64)
    token = check_string("twilio_auth_token", token, max_length=256)
    assert isinstance(sid, str) and isinstance(token, str)
    if not _ACCOUNT_SID.fullmatch(sid):
        raise ApiError.invalid(
            "twilio_account_sid", "'twilio_account_sid' must be 'AC' followed by 32 hex digits."
        )
    return TwilioCredentials(account_sid=sid, auth_token=token)


async def _check_agent(call: ApiCall, agent_id: Any) -> str | None:
    if agent_id is None:
        return None
    agent_id = check_string("agent_id", agent_id, max_length=64, min_length=1)
    assert isinstance(agent_id, str)
    agent = await call.services.repos.agents.get(agent_id)
    if agent is None:
        raise ApiError(404, "agent_not_found", "No agent with this id.", {"agent_id": agent_id})
    if agent.account_id != call.account_id:
        raise ApiError(
            403,
            "agent_not_owned",
            "This agent does not belong to your API key's account.",
            {"agent_id": agent_id},
        )
    return agent_id


async def import_number(call: ApiCall) -> Reply:
    services = call.services
    body = await call.json_object()
    phone_number = body.get("phone_number")
    if phone_number is None or phone_number == "":
        raise ApiError.missing("phone_number")
    if not is_e164(phone_number):
        raise ApiError(
            400,
            "invalid_phone_format",
            "'phone_number' must be E.164, e.g. +447446466847.",
            {"field": "phone_number"},
        )
    reject_unknown(body, _IMPORT_FIELDS)
    _, sid = _alias(body, _SID_ALIASES)
    _, token = _alias(body, _TOKEN_ALIASES)
    credentials = _credentials(sid, token)
    agent_id = await _check_agent(call, body.get("agent_id"))
    if await services.repos.phone_numbers.get(phone_number) is not None:
        raise _exists(phone_number)
    number_sid = await verify_twilio_number(
        phone_number, credentials, api_base_url=services.settings.twilio_api_base_url
    )
    try:
        number = await services.repos.phone_numbers.create(
            phone_number=phone_number,
            account_id=call.account_id,
            agent_id=agent_id,
            twilio_account_sid=credentials.account_sid,
            twilio_auth_token_encrypted=services.crypto.encrypt(credentials.auth_token),
            twilio_number_sid=number_sid,
        )
    except DuplicateError as exc:
        raise _exists(phone_number) from exc
    return Reply(201, number_json(number))


def _exists(phone_number: str) -> ApiError:
    return ApiError(
        409,
        "phone_number_exists",
        "This number is already imported.",
        {"phone_number": phone_number},
    )


async def list_numbers(call: ApiCall) -> Reply:
    query = call.query
    limit, offset = parse_limit_offset(query)
    agent_id = query.get("agent_id") or None
    numbers, count = await call.services.repos.phone_numbers.list_page(
        call.account_id, agent_id=agent_id, limit=limit, offset=offset
    )
    return Reply(
        200,
        {
            "phone_numbers": [number_json(n) for n in numbers],
            "count": count,
            "limit": limit,
            "offset": offset,
        },
    )


async def update_number(call: ApiCall) -> Reply:
    services = call.services
    phone_number = _path_number(call)
    body = await call.json_object(allow_empty=True)
    reject_unknown(body, _PATCH_FIELDS)
    repo = services.repos.phone_numbers
    current = await repo.get_owned(phone_number, call.account_id)
    if current is None:
        raise _not_found(phone_number)
    changes: dict[str, Any] = {}
    if "agent_id" in body:
        changes["agent_id"] = await _check_agent(call, body["agent_id"])
    sid_given, sid = _alias(body, _SID_ALIASES)
    token_given, token = _alias(body, _TOKEN_ALIASES)
    if sid_given or token_given:
        if sid_given and token_given and sid is None and token is None:
            # Explicitly remove the stored credentials (outbound calls then fail with
            # twilio_credentials_missing until new ones are set).
            changes.update(twilio_account_sid=None, twilio_auth_token_encrypted=None)
        else:
            credentials = _credentials(sid, token)
            number_sid = await verify_twilio_number(
                phone_number, credentials, api_base_url=services.settings.twilio_api_base_url
            )
            changes.update(
                twilio_account_sid=credentials.account_sid,
                twilio_auth_token_encrypted=services.crypto.encrypt(credentials.auth_token),
                twilio_number_sid=number_sid,
            )
    updated = await repo.update(phone_number, call.account_id, changes) if changes else current
    if updated is None:
        raise _not_found(phone_number)
    return Reply(200, number_json(updated))


async def delete_number(call: ApiCall) -> Reply:
    phone_number = _path_number(call)
    if not await call.services.repos.phone_numbers.delete(phone_number, call.account_id):
        raise _not_found(phone_number)
    return Reply(200, {"phone_number": phone_number, "deleted": True})


# --------------------------------------------------------------------------------------------
# per-number webhook slots


def _slot(call: ApiCall) -> tuple[int, str]:
    slot = 2 if call.request.url.path.startswith("/v1/integrations/webhook2/") else 1
    return slot, ("webhook2_url" if slot == 2 else "webhook_url")


def _slot_json(number: str, slot: int, url: str | None) -> dict[str, Any]:
    return {"phone_number": number, "slot": slot, "url": url}


async def put_webhook(call: ApiCall) -> Reply:
    services = call.services
    phone_number = _path_number(call)
    body = await call.json_object()
    reject_unknown(body, {"url"})
    if body.get("url") in (None, ""):
        raise ApiError.missing("url")
    url = validate_webhook_url(
        "url", body["url"], allow_private=services.settings.allow_private_webhook_urls
    )
    slot, column = _slot(call)
    updated = await services.repos.phone_numbers.update(
        phone_number, call.account_id, {column: url}
    )
    if updated is None:
        raise _not_found(phone_number)
    return Reply(200, _slot_json(phone_number, slot, url))


async def get_webhook(call: ApiCall) -> Reply:
    phone_number = _path_number(call)
    number = await call.services.repos.phone_numbers.get_owned(phone_number, call.account_id)
    if number is None:
        raise _not_found(phone_number)
    slot, _ = _slot(call)
    url = number.webhook2_url if slot == 2 else number.webhook_url
    return Reply(200, _slot_json(phone_number, slot, url))


async def delete_webhook(call: ApiCall) -> Reply:
    phone_number = _path_number(call)
    slot, column = _slot(call)
    updated = await call.services.repos.phone_numbers.update(
        phone_number, call.account_id, {column: None}
    )
    if updated is None:
        raise _not_found(phone_number)
    return Reply(200, {**_slot_json(phone_number, slot, None), "deleted": True})


def routes() -> list[Route]:
    out = [
        Route("/v1/phone-numbers", endpoint(import_number), methods=["POST"]),
        Route("/v1/phone-numbers", endpoint(list_numbers), methods=["GET"]),
        Route("/v1/phone-numbers/{e164}", endpoint(update_number), methods=["PATCH"]),
        Route("/v1/phone-numbers/{e164}", endpoint(delete_number), methods=["DELETE"]),
    ]
    for base in ("webhook", "webhook2"):
        path = f"/v1/integrations/{base}/number/{{e164}}"
        out += [
            Route(path, endpoint(put_webhook), methods=["PUT"]),
            Route(path, endpoint(get_webhook), methods=["GET"]),
            Route(path, endpoint(delete_webhook), methods=["DELETE"]),
        ]
    return out
