"""Checking that a Twilio number really belongs to the given Twilio account, via the SDK.

``POST /v1/phone-numbers`` calls :func:`verify_twilio_number`: it lists the account's
``IncomingPhoneNumbers`` filtered by the number, with the official ``twilio`` SDK's async
client. ``Settings.twilio_api_base_url`` redirects the SDK (wire-protocols §5.1), which is how
tests and the sandbox point it at the fake Twilio. Outcomes:

* the number is listed → its ``PN…`` SID;
* Twilio refuses the credentials (401, code 20003) → 400 ``twilio_credentials_invalid``;
* the number is not in that account → 400 ``phone_number_not_in_twilio_account``;
* anything else (network, 5xx) → 502 ``twilio_unavailable``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from nixflex_engine.api.errors import ApiError
from nixflex_engine.calls.dialer import TwilioCredentials
from nixflex_engine.log import get_logger, log_event

__all__ = ["verify_twilio_number"]

_log = get_logger(__name__)


async def verify_twilio_number(
    phone_number: str,
    credentials: TwilioCredentials,
    *,
    api_base_url: str | None,
    timeout_seconds: float = 10.0,
) -> str | None:
    """The number's Twilio SID if ``credentials`` own ``phone_number``; else :class:`ApiError`."""
    http_client = AsyncTwilioHttpClient(timeout=timeout_seconds)
    client = Client(credentials.account_sid, credentials.auth_token, http_client=http_client)
    if api_base_url:
        client.api.base_url = api_base_url
    try:
        numbers = await asyncio.wait_for(
            client.incoming_phone_numbers.list_async(phone_number=phone_number, limit=20),
            timeout_seconds,
        )
    except (TwilioRestException, TwilioException) as exc:
        twilio_error = _twilio_error(exc)
        if twilio_error is None:
            log_event(_log, "twilio.verify_failed", error=type(exc).__name__)
            raise _unavailable(
                {"code": None, "message": "Twilio could not be reached.", "status": None}
            ) from exc
        if twilio_error["status"] in (401, 403):
            raise ApiError(
                400,
                "twilio_credentials_invalid",
                "Twilio refused these credentials (check the account SID and auth token).",
                {"field": "twilio_auth_token", "twilio_error": twilio_error},
            ) from exc
        if twilio_error["status"] == 404:
            raise _not_in_account(phone_number) from exc
        raise _unavailable(twilio_error) from exc
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        log_event(_log, "twilio.verify_failed", error=type(exc).__name__)
        raise _unavailable(
            {"code": None, "message": "Twilio could not be reached.", "status": None}
        ) from exc
    finally:
        await http_client.close()
    for number in numbers:
        if number.phone_number == phone_number:
            return str(number.sid) if number.sid else None
    raise _not_in_account(phone_number)


def _twilio_error(exc: TwilioException) -> dict[str, Any] | None:
    """Twilio's error (code, message, status) from an SDK exception, if it got a response.

    List calls surface a non-200 page as a bare ``TwilioException("Unable to fetch page",
    response)``; single-record calls raise ``TwilioRestException``.
    """
    if isinstance(exc, TwilioRestException):
        message = exc.msg.removeprefix("Unable to fetch record: ")
        return {"code": exc.code, "message": message, "status": exc.status}
    response = exc.args[1] if len(exc.args) > 1 else None
    status = getattr(response, "status_code", None)
    if not isinstance(status, int):
        return None
    code: Any = status
    message = "Twilio refused the request."
    try:
        body = json.loads(getattr(response, "text", "") or "{}")
    except ValueError:
        body = {}
    if isinstance(body, dict):
        code = body.get("code", status)
        message = str(body.get("message", message))
    return {"code": code, "message": message, "status": status}


def _not_in_account(phone_number: str) -> ApiError:
    return ApiError(
        400,
        "phone_number_not_in_twilio_account",
        "This number is not an incoming phone number of that Twilio account.",
        {"field": "phone_number", "phone_number": phone_number},
    )


def _unavailable(twilio_error: dict[str, object]) -> ApiError:
    return ApiError(
        502,
        "twilio_unavailable",
        "Twilio did not confirm the number; try again later.",
        {"twilio_error": twilio_error},
    )
